//! The archive: the oldest events move into sealed segments and every read still covers them
//! as one log, on both backends (segment files beside `events.redb`; rows of a `segments`
//! table in PostgreSQL). A missing or altered segment is an error naming it.

use eshost_store::{
    AllRead, AppendRequest, ArchiveCut, Direction, EventStore, ExpectedVersion, ProposedEvent,
    ReadError, RecordedEvent, StreamRead,
};
use eshost_store_tests::{Backend, Opened, Place};

const STREAMS: [&str; 3] = ["order-1", "order-2", "customer-7"];

fn fill(store: &Opened, from: usize, to: usize) {
    for i in from..to {
        let event = ProposedEvent::new(
            if i % 4 == 0 { "Paid" } else { "Added" },
            format!(r#"{{"i":{i},"note":"line {i} of the order history"}}"#),
        );
        let request = AppendRequest::new(STREAMS[i % 3], ExpectedVersion::Any, vec![event]);
        store.append_blocking(request).unwrap();
    }
}

/// Every way of reading the log, owned, to compare before and after an archive.
fn everything(store: &dyn EventStore) -> Vec<Vec<RecordedEvent>> {
    let backward = |from_position| AllRead {
        direction: Direction::Backward,
        from_position,
        ..AllRead::from(0)
    };
    let mut reads = vec![
        store.read_all(&AllRead::from(0)).unwrap(),
        store.read_all(&AllRead::from(150)).unwrap(),
        store
            .read_all(&AllRead {
                limit: 7,
                ..AllRead::from(95)
            })
            .unwrap(),
        store
            .read_all(&AllRead {
                event_types: vec!["Paid".into()],
                ..AllRead::from(1)
            })
            .unwrap(),
        store.read_all(&backward(u64::MAX)).unwrap(),
        store.read_all(&backward(120)).unwrap(),
    ];
    for stream in STREAMS {
        reads.push(store.read_stream(stream, &StreamRead::forward()).unwrap());
        reads.push(store.read_stream(stream, &StreamRead::backward()).unwrap());
        let from_version = StreamRead {
            from_version: 30,
            limit: 20,
            ..StreamRead::forward()
        };
        reads.push(store.read_stream(stream, &from_version).unwrap());
    }
    reads
}

pub fn archived_events_read_as_one_log_with_the_hot_ones(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open();
    fill(&store, 0, 300);
    let before = everything(&*store);
    let times: Vec<u64> = before[0].iter().map(|e| e.recorded_at).collect();
    let positions_at: Vec<u64> = times
        .iter()
        .map(|t| store.position_at(*t).unwrap())
        .collect();
    // Only what the checkpointer copied into redb moves; opening copies everything.
    drop(store);
    let store = place.open();

    let archived = store.archive(ArchiveCut::BeforePosition(201)).unwrap();
    assert_eq!((archived.events, archived.archived_through), (200, 200));
    assert_eq!(archived.segments.len(), 1);
    assert_eq!(
        (
            archived.segments[0].first_position,
            archived.segments[0].last_position
        ),
        (1, 200)
    );
    assert!(
        archived.segments[0].bytes < archived.segments[0].raw_bytes,
        "compressed: {:?}",
        archived.segments[0]
    );
    assert_eq!(everything(&*store), before, "reads cover both tiers");
    let again: Vec<u64> = times
        .iter()
        .map(|t| store.position_at(*t).unwrap())
        .collect();
    assert_eq!(again, positions_at);
    assert!(store.verify().unwrap().is_ok());
    let nothing = store.archive(ArchiveCut::BeforePosition(150)).unwrap();
    assert_eq!((nothing.events, nothing.archived_through), (0, 200));

    // An archived event's id is still known: re-sending its append is idempotent.
    let first = &before[0][0];
    let replay = AppendRequest::new(
        first.stream_id.clone(),
        ExpectedVersion::Any,
        vec![
            ProposedEvent::new(first.event_type.clone(), first.data.clone())
                .with_id(first.event_id),
        ],
    );
    let answer = store.append_blocking(replay).unwrap();
    assert!(answer.already_stored);
    assert_eq!(answer.first_position, 1);
    assert_eq!(store.event_position(first.event_id).unwrap(), Some(1));

    // The hot log goes on from the archive's anchor, and a second archive (by time) adds a
    // segment after the first.
    fill(&store, 300, 330);
    drop(store);
    let store = place.open();
    let cut = store.read_all(&AllRead::from(251)).unwrap()[0].recorded_at;
    let second = store.archive(ArchiveCut::BeforeTime(cut)).unwrap();
    assert!(second.archived_through >= 201 && second.archived_through <= 250);
    assert_eq!(second.segments[0].first_position, 201);
    let all = store.read_all(&AllRead::from(0)).unwrap();
    assert_eq!(all.len(), 330);
    assert_eq!(&all[..300], &before[0][..]);
    assert!(store.verify().unwrap().is_ok());

    drop(store);
    let store = place.open();
    assert_eq!(
        store.read_all(&AllRead::from(0)).unwrap(),
        all,
        "after reopening"
    );
    // Over two segments and the hot log, times resolve as before (later events are later).
    let again: Vec<u64> = times
        .iter()
        .map(|t| store.position_at(*t).unwrap())
        .collect();
    assert_eq!(again, positions_at);
    let last = all.last().unwrap();
    assert_eq!(store.position_at(last.recorded_at).unwrap(), 330);
    assert_eq!(store.position_at(0).unwrap(), 0);
    assert_eq!(store.head(), 330);
    assert!(store.verify().unwrap().is_ok());
    fill(&store, 330, 331);
    assert!(store.verify().unwrap().is_ok());
}

/// A store of 100 events, the first 60 archived in one segment; and that segment's name.
fn archived_place(backend: Backend) -> (Place, std::path::PathBuf) {
    let place = Place::new(backend);
    let store = place.open();
    fill(&store, 0, 100);
    drop(store);
    let store = place.open();
    let archived = store.archive(ArchiveCut::BeforePosition(61)).unwrap();
    let segment = std::path::PathBuf::from(&archived.segments[0].file);
    match &place {
        Place::Redb(_) => assert!(segment.is_file(), "{}", segment.display()),
        Place::Postgres(pg) => assert_eq!(
            segment.to_str(),
            Some(format!("postgres:{}.segments/1-60", pg.schema).as_str())
        ),
    }
    (place, segment)
}

/// Behind the store's back: remove the segment (its file, or its row).
fn remove_segment(place: &Place, segment: &std::path::Path) {
    match place {
        Place::Redb(_) => std::fs::rename(segment, segment.with_extension("moved")).unwrap(),
        Place::Postgres(pg) => {
            pg.execute("DELETE FROM \"$schema\".segments WHERE first_position = 1")
        }
    }
}

/// Behind the store's back: flip a bit of the segment's compressed body.
fn alter_segment(place: &Place, segment: &std::path::Path) {
    match place {
        Place::Redb(_) => {
            let mut bytes = std::fs::read(segment).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x40;
            std::fs::write(segment, &bytes).unwrap();
        }
        Place::Postgres(pg) => pg.execute(
            "UPDATE \"$schema\".segments
             SET body = set_byte(body, length(body) - 1, get_byte(body, length(body) - 1) # 64)
             WHERE first_position = 1",
        ),
    }
}

fn assert_names(error: ReadError, segment: &std::path::Path, what: &str) {
    let message = error.to_string();
    assert!(
        matches!(&error, ReadError::Archive { file, .. } if file == segment),
        "{message}"
    );
    assert!(message.contains(what), "{message}");
}

pub fn a_missing_archive_segment_is_an_error_naming_it(backend: Backend) {
    let (place, segment) = archived_place(backend);
    remove_segment(&place, &segment);
    let store = place.open();
    assert_names(
        store.read_all(&AllRead::from(0)).unwrap_err(),
        &segment,
        "is missing",
    );
    assert_names(
        store
            .read_stream(STREAMS[0], &StreamRead::forward())
            .unwrap_err(),
        &segment,
        "is missing",
    );
    assert_names(store.verify().unwrap_err(), &segment, "is missing");
    // The hot part still reads.
    assert_eq!(store.read_all(&AllRead::from(61)).unwrap().len(), 40);
}

pub fn an_altered_archive_segment_is_an_error_naming_it(backend: Backend) {
    let (place, segment) = archived_place(backend);
    alter_segment(&place, &segment);
    let store = place.open();
    assert_names(
        store.read_all(&AllRead::from(1)).unwrap_err(),
        &segment,
        "fails its checksum",
    );
    assert_names(store.verify().unwrap_err(), &segment, "fails its checksum");
}

crate::conformance!(
    archived_events_read_as_one_log_with_the_hot_ones,
    a_missing_archive_segment_is_an_error_naming_it,
    an_altered_archive_segment_is_an_error_naming_it,
);

#[test]
fn archiving_beside_live_appends_and_reads_never_shows_a_hole() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = eshost_store::StoreConfig::new(dir.path());
    // Frequent checkpoints, so that each archive finds new events in redb.
    config.index_flush_events = 64;
    config.durability = eshost_store::Durability::None;
    let store = eshost_store::Store::open(config).unwrap();
    const APPENDS: usize = 3000;
    let done = std::sync::atomic::AtomicBool::new(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..APPENDS {
                let event = ProposedEvent::new("Added", format!(r#"{{"i":{i}}}"#));
                let request = AppendRequest::new(STREAMS[i % 3], ExpectedVersion::Any, vec![event]);
                store.append_blocking(request).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        // Readers see every position once, in order, whatever the archive moves meanwhile.
        let reader = scope.spawn(|| {
            let mut rounds = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the appends took too long"
                );
                let head = store.head();
                let all = store.read_all(&AllRead::from(1)).unwrap();
                assert!(all.len() as u64 >= head);
                for (index, event) in all.iter().enumerate() {
                    assert_eq!(event.position, index as u64 + 1);
                }
                let stream = store
                    .read_stream(STREAMS[1], &StreamRead::forward())
                    .unwrap();
                for (index, event) in stream.iter().enumerate() {
                    assert_eq!(event.stream_version, index as u64 + 1);
                }
                rounds += 1;
            }
            rounds
        });
        let (mut archived_through, mut archives) = (0, 0);
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the appends took too long"
            );
            let archived = store
                .archive(ArchiveCut::BeforePosition(store.head() + 1))
                .unwrap();
            assert!(archived.archived_through >= archived_through);
            if archived.events > 0 {
                archives += 1;
            } else {
                // Nothing checkpointed since the last one: let the appender run.
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            archived_through = archived.archived_through;
        }
        assert!(reader.join().unwrap() > 0);
        assert!(archives > 1, "{archives} archives ran beside the appends");
    });
    let all = store.read_all(&AllRead::from(1)).unwrap();
    assert_eq!(all.len(), APPENDS);
    assert!(store.verify().unwrap().is_ok());
    drop(store);
    let store = eshost_store::Store::open(eshost_store::StoreConfig::new(dir.path())).unwrap();
    assert_eq!(store.read_all(&AllRead::from(1)).unwrap(), all);
    assert!(store.verify().unwrap().is_ok());
}
