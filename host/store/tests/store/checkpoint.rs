//! Appends are durable in the write-ahead log and reach redb later, in checkpoints that run
//! beside the appends; readers must never tell: every acknowledged event is readable at once,
//! and reads racing a checkpoint see each event exactly once, in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use eshost_store::{
    AllRead, AppendRequest, Direction, EventStore, ExpectedVersion, ProposedEvent, Store,
    StoreConfig, StreamRead,
};

/// Checkpoints every few dozen events, and log files small enough to switch often.
fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        index_flush_events: 40,
        wal_bytes: 64 * 1024,
        ..StoreConfig::new(dir)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_racing_checkpoints_see_every_acknowledged_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let mut appenders = Vec::new();
    for appender in 0..8 {
        let store = store.clone();
        appenders.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..150 {
                let stream = format!("s-{}", (appender + n) % 5);
                let event = ProposedEvent::new("E", format!(r#"{{"a":{appender},"n":{n}}}"#));
                let id = event.event_id;
                let appended = store
                    .append(AppendRequest::new(
                        &stream,
                        ExpectedVersion::Any,
                        vec![event],
                    ))
                    .await
                    .unwrap();
                // Read your write, at once: by stream, by position, and in the stream's info.
                let read = StreamRead {
                    from_version: appended.stream_version,
                    limit: 1,
                    ..StreamRead::forward()
                };
                let found = store.read_stream(&stream, &read).unwrap();
                assert_eq!(found.len(), 1, "{stream} v{}", appended.stream_version);
                assert_eq!(found[0].event_id, id);
                let at = store
                    .read_all(&AllRead {
                        limit: 1,
                        ..AllRead::from(appended.first_position)
                    })
                    .unwrap();
                assert_eq!(at[0].event_id, id);
                let info = store.stream_info(&stream).unwrap().unwrap();
                assert!(info.version >= appended.stream_version);
                acknowledged.push((stream, appended.stream_version, id));
            }
            acknowledged
        }));
    }
    // Meanwhile: whole reads of `$all` (forward and backward) and of every stream must be
    // gap-free and without duplicates, whatever the checkpoints are doing.
    let reader = {
        let store = store.clone();
        let done = done.clone();
        tokio::task::spawn_blocking(move || {
            let mut rounds = 0;
            while !done.load(Ordering::Relaxed) || rounds == 0 {
                let all = store.read_all(&AllRead::from(1)).unwrap();
                for (index, event) in all.iter().enumerate() {
                    assert_eq!(event.position, index as u64 + 1, "$all is gap-free");
                }
                let backward = store
                    .read_all(&AllRead {
                        direction: Direction::Backward,
                        ..AllRead::from(u64::MAX)
                    })
                    .unwrap();
                assert!(backward.len() >= all.len());
                for pair in backward.windows(2) {
                    assert_eq!(pair[0].position, pair[1].position + 1);
                }
                for stream in 0..5 {
                    let id = format!("s-{stream}");
                    let events = store.read_stream(&id, &StreamRead::forward()).unwrap();
                    for (index, event) in events.iter().enumerate() {
                        assert_eq!(event.stream_version, index as u64 + 1, "{id}");
                    }
                    let listed = store.streams("s-", None, 10).unwrap();
                    assert!(listed.iter().all(|(_, info)| info.version > 0));
                }
                rounds += 1;
            }
            rounds
        })
    };
    let mut acknowledged = Vec::new();
    for appender in appenders {
        acknowledged.extend(appender.await.unwrap());
    }
    done.store(true, Ordering::Relaxed);
    let rounds = reader.await.unwrap();
    assert!(rounds > 0);
    let checkpoints = store.writer_stats().checkpoints.load(Ordering::Relaxed);
    assert!(
        checkpoints >= 5,
        "only {checkpoints} checkpoints: the race was not exercised"
    );
    let check = |store: &Store| {
        let mut by_stream: HashMap<&str, Vec<_>> = HashMap::new();
        for (stream, version, id) in &acknowledged {
            by_stream.entry(stream).or_default().push((*version, *id));
        }
        for (stream, mut expected) in by_stream {
            expected.sort();
            let stored = store.read_stream(stream, &StreamRead::forward()).unwrap();
            let stored: Vec<_> = stored
                .iter()
                .map(|event| (event.stream_version, event.event_id))
                .collect();
            assert_eq!(stored, expected, "{stream}");
        }
        assert_eq!(store.head(), acknowledged.len() as u64);
        assert!(store.verify().unwrap().is_ok());
    };
    check(&store);
    drop(store);
    // After a clean close everything is in redb; reopened, the same.
    let store = Store::open(config(dir.path())).unwrap();
    check(&store);
}

/// A time-bounded read must find its bound in the events still in memory too.
#[test]
fn reads_as_of_a_time_cover_events_not_yet_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig {
        index_flush_events: 1_000_000,
        ..StoreConfig::new(dir.path())
    })
    .unwrap();
    let mut times = Vec::new();
    for n in 0..30 {
        let appended = store
            .append_blocking(AppendRequest::new(
                "clock",
                ExpectedVersion::Any,
                vec![ProposedEvent::new("Tick", format!("{n}"))],
            ))
            .unwrap();
        times.push((appended.recorded_at, appended.first_position));
        if n % 10 == 9 {
            // Move past the millisecond so that times differ along the log.
            let now = eshost_store::now_ms();
            while eshost_store::now_ms() == now {
                std::thread::yield_now();
            }
        }
    }
    for (time, _) in &times {
        let last = times
            .iter()
            .filter(|(at, _)| at <= time)
            .map(|(_, position)| *position)
            .max()
            .unwrap();
        assert_eq!(store.position_at(*time).unwrap(), last);
        let read = StreamRead {
            until: Some(eshost_store::Until::Time(*time)),
            ..StreamRead::forward()
        };
        assert_eq!(
            store.read_stream("clock", &read).unwrap().len() as u64,
            last
        );
    }
}
