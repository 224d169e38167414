//! What only the embedded store promises: one process per store directory, and an index kept
//! partly in memory that reads, retries and reopening never notice. The contract itself is
//! tested once for every backend, in `host/store-tests`.

use eshost_store::{
    AppendError, AppendRequest, EventStore, ExpectedVersion, ProposedEvent, Store, StoreConfig,
    StreamRead,
};
use uuid::Uuid;

fn open(dir: &std::path::Path) -> Store {
    Store::open(StoreConfig::new(dir)).expect("open store")
}

fn event(kind: &str, data: &str) -> ProposedEvent {
    ProposedEvent::new(kind, data)
}

fn append(
    store: &Store,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<ProposedEvent>,
) -> Result<eshost_store::Appended, AppendError> {
    store.append_blocking(AppendRequest::new(stream, expected, events))
}

#[test]
fn a_second_open_of_the_same_store_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path());
    let error = Store::open(StoreConfig::new(dir.path())).unwrap_err();
    assert!(error.to_string().contains("locked"), "{error}");
}

/// The stream and id indexes live partly in memory (recent events) and partly in redb
/// (flushed every `index_flush_events`); reads, idempotency and reopening must not tell.
#[test]
fn index_flushes_and_recovery_keep_reads_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = || StoreConfig {
        index_flush_events: 5,
        ..StoreConfig::new(dir.path())
    };
    let mut expected: std::collections::BTreeMap<String, Vec<ProposedEvent>> = Default::default();
    let check =
        |store: &Store, expected: &std::collections::BTreeMap<String, Vec<ProposedEvent>>| {
            for (stream, events) in expected {
                let read = store.read_stream(stream, &StreamRead::forward()).unwrap();
                let ids: Vec<_> = read.iter().map(|e| e.event_id).collect();
                let want: Vec<_> = events.iter().map(|e| e.event_id).collect();
                assert_eq!(ids, want, "stream {stream}");
                // Found by id whether its index entry is recent, flushed or recovered.
                for stored in &read {
                    assert_eq!(
                        store.event_position(stored.event_id).unwrap(),
                        Some(stored.position)
                    );
                }
                let backward = store.read_stream(stream, &StreamRead::backward()).unwrap();
                assert_eq!(backward.len(), events.len());
                assert_eq!(backward.first().map(|e| e.event_id), want.last().copied());
                let middle = StreamRead {
                    from_version: 2,
                    limit: 3,
                    ..StreamRead::forward()
                };
                let part: Vec<_> = store
                    .read_stream(stream, &middle)
                    .unwrap()
                    .iter()
                    .map(|e| e.stream_version)
                    .collect();
                let want_part: Vec<u64> = (2..=events.len() as u64).take(3).collect();
                assert_eq!(part, want_part);
                assert_eq!(
                    store.stream_info(stream).unwrap().unwrap().version,
                    events.len() as u64
                );
            }
            assert_eq!(store.event_position(Uuid::now_v7()).unwrap(), None);
            let listed = store.streams("s-", None, 100).unwrap();
            assert_eq!(listed.len(), expected.len());
            assert!(store.verify().unwrap().is_ok());
        };
    {
        let store = Store::open(config()).unwrap();
        for round in 0..23 {
            let stream = format!("s-{}", round % 4 + round / 10);
            let events: Vec<_> = (0..1 + round % 3)
                .map(|n| event("E", &n.to_string()))
                .collect();
            let version = expected.get(&stream).map_or(0, Vec::len) as u64;
            append(
                &store,
                &stream,
                ExpectedVersion::Exact(version),
                events.clone(),
            )
            .unwrap();
            expected.entry(stream).or_default().extend(events);
            check(&store, &expected);
        }
        // A retry of an append whose ids were flushed long ago, and of a recent one.
        let (stream, events) = expected.iter().next().unwrap();
        let replay = append(
            &store,
            stream,
            ExpectedVersion::Any,
            vec![events[0].clone()],
        )
        .unwrap();
        assert!(replay.already_stored);
    }
    // Reopen: the unflushed tail is read back from the log.
    let store = Store::open(config()).unwrap();
    check(&store, &expected);
    let (stream, events) = expected.iter().next_back().unwrap();
    let replay = append(
        &store,
        stream,
        ExpectedVersion::Any,
        vec![events.last().unwrap().clone()],
    )
    .unwrap();
    assert!(replay.already_stored);
    let version = events.len() as u64;
    let stream = stream.clone();
    append(
        &store,
        &stream,
        ExpectedVersion::Exact(version),
        vec![event("E", "1")],
    )
    .unwrap();
    append(
        &store,
        "s-new",
        ExpectedVersion::NoStream,
        vec![event("E", "1")],
    )
    .unwrap();
    assert!(matches!(
        append(
            &store,
            "s-new",
            ExpectedVersion::NoStream,
            vec![event("E", "2")]
        ),
        Err(AppendError::Conflict { actual: 1, .. })
    ));
    assert!(store.verify().unwrap().is_ok());
}
