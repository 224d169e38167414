//! The event store's contract: appends, expected versions, idempotency, reads, validation.

use std::collections::HashSet;

use eshost_store::{
    AllRead, AppendError, AppendRequest, Direction, EventStore, ExpectedVersion, Limits,
    ProposedEvent, ReadError, Store, StoreConfig, StreamRead, Until, ValidationError,
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
fn appends_get_gap_free_positions_and_contiguous_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = append(
        &store,
        "account-1",
        ExpectedVersion::NoStream,
        vec![
            event("AccountOpened", r#"{"owner":"ann"}"#),
            event("FundsDeposited", r#"{"amount":500}"#),
        ],
    )
    .unwrap();
    assert_eq!((first.first_position, first.last_position), (1, 2));
    assert_eq!((first.first_version, first.stream_version), (1, 2));
    assert!(!first.already_stored);

    let second = append(
        &store,
        "account-2",
        ExpectedVersion::Any,
        vec![event("AccountOpened", "{}")],
    )
    .unwrap();
    assert_eq!((second.first_position, second.stream_version), (3, 1));
    let third = append(
        &store,
        "account-1",
        ExpectedVersion::Exact(2),
        vec![event("FundsWithdrawn", r#"{"amount":5}"#)],
    )
    .unwrap();
    assert_eq!((third.first_position, third.stream_version), (4, 3));
    assert_eq!(store.head(), 4);

    let stream = store
        .read_stream("account-1", &StreamRead::forward())
        .unwrap();
    let versions: Vec<_> = stream
        .iter()
        .map(|e| (e.stream_version, e.position))
        .collect();
    assert_eq!(versions, vec![(1, 1), (2, 2), (3, 4)]);
    assert_eq!(stream[0].event_type, "AccountOpened");
    assert_eq!(stream[1].data, r#"{"amount":500}"#);
    assert!(
        stream
            .windows(2)
            .all(|pair| pair[0].recorded_at <= pair[1].recorded_at)
    );

    let all = store.read_all(&AllRead::from(1)).unwrap();
    let positions: Vec<_> = all.iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![1, 2, 3, 4]);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn every_expected_version_mode_accepts_and_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let one = || vec![event("Happened", "{}")];

    // On a stream that does not exist yet.
    let conflict = append(&store, "s", ExpectedVersion::StreamExists, one()).unwrap_err();
    assert_eq!(
        conflict,
        AppendError::Conflict {
            stream_id: "s".into(),
            expected: ExpectedVersion::StreamExists,
            actual: 0
        }
    );
    assert!(matches!(
        append(&store, "s", ExpectedVersion::Exact(1), one()),
        Err(AppendError::Conflict { actual: 0, .. })
    ));
    append(&store, "s", ExpectedVersion::Exact(0), one()).unwrap();

    // Now at version 1.
    let conflict = append(&store, "s", ExpectedVersion::NoStream, one()).unwrap_err();
    assert!(
        conflict.to_string().contains("stream is at version 1"),
        "{conflict}"
    );
    assert!(matches!(
        append(&store, "s", ExpectedVersion::Exact(0), one()),
        Err(AppendError::Conflict { actual: 1, .. })
    ));
    assert!(matches!(
        append(&store, "s", ExpectedVersion::Exact(2), one()),
        Err(AppendError::Conflict { actual: 1, .. })
    ));
    assert_eq!(
        append(&store, "s", ExpectedVersion::StreamExists, one())
            .unwrap()
            .stream_version,
        2
    );
    assert_eq!(
        append(&store, "s", ExpectedVersion::Exact(2), one())
            .unwrap()
            .stream_version,
        3
    );
    assert_eq!(
        append(&store, "s", ExpectedVersion::Any, one())
            .unwrap()
            .stream_version,
        4
    );
    assert_eq!(
        append(&store, "t", ExpectedVersion::NoStream, one())
            .unwrap()
            .stream_version,
        1
    );
    assert_eq!(
        append(&store, "u", ExpectedVersion::Any, one())
            .unwrap()
            .stream_version,
        1
    );

    // Refused appends left nothing behind.
    assert_eq!(store.head(), 6);
    assert_eq!(store.stream_info("s").unwrap().unwrap().version, 4);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn re_appending_stored_event_ids_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let batch = vec![event("A", r#"{"n":1}"#), event("B", r#"{"n":2}"#)];
    let original = append(&store, "s", ExpectedVersion::NoStream, batch.clone()).unwrap();
    append(
        &store,
        "other",
        ExpectedVersion::Any,
        vec![event("C", "{}")],
    )
    .unwrap();

    // A retry, even with an expected version that no longer holds, returns the first result.
    let retry = append(&store, "s", ExpectedVersion::NoStream, batch.clone()).unwrap();
    assert!(retry.already_stored);
    assert_eq!(
        (
            retry.first_position,
            retry.last_position,
            retry.first_version,
            retry.stream_version,
            retry.recorded_at
        ),
        (
            original.first_position,
            original.last_position,
            original.first_version,
            original.stream_version,
            original.recorded_at
        )
    );
    assert_eq!(store.head(), 3, "a retry writes nothing");

    // The same id with other content is refused, naming the id and where it is stored.
    let mut changed = batch[0].clone();
    changed.data = r#"{"n":99}"#.into();
    let error = append(&store, "s", ExpectedVersion::Any, vec![changed]).unwrap_err();
    assert!(
        matches!(error, AppendError::DuplicateEventId { position: 1, .. }),
        "{error}"
    );
    assert!(error.to_string().contains(&batch[0].event_id.to_string()));

    // The same id in another stream is other content too.
    let error = append(
        &store,
        "elsewhere",
        ExpectedVersion::Any,
        vec![batch[0].clone()],
    )
    .unwrap_err();
    assert!(matches!(error, AppendError::DuplicateEventId { .. }));

    // Mixing a stored id with a new one is not a retry.
    let error = append(
        &store,
        "s",
        ExpectedVersion::Any,
        vec![batch[1].clone(), event("D", "{}")],
    )
    .unwrap_err();
    assert!(
        matches!(error, AppendError::DuplicateEventId { position: 2, .. }),
        "{error}"
    );
    assert_eq!(store.head(), 3);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn bad_input_is_refused_with_the_right_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.limits = Limits {
        max_event_bytes: 1024,
        max_events_per_append: 5,
    };
    let store = Store::open(config).unwrap();
    append(&store, "s", ExpectedVersion::Any, vec![event("Ok", "{}")]).unwrap();

    let invalid = |stream: &str, events: Vec<ProposedEvent>| match append(
        &store,
        stream,
        ExpectedVersion::Any,
        events,
    ) {
        Err(AppendError::Invalid(error)) => error,
        other => panic!("expected a validation error, got {other:?}"),
    };
    assert!(matches!(
        invalid("", vec![event("A", "{}")]),
        ValidationError::StreamId { .. }
    ));
    assert!(matches!(
        invalid("$all", vec![event("A", "{}")]),
        ValidationError::StreamId { .. }
    ));
    assert!(matches!(
        invalid("bad\u{7}id", vec![event("A", "{}")]),
        ValidationError::StreamId { .. }
    ));
    assert!(matches!(
        invalid("s", vec![event("A", "{malformed")]),
        ValidationError::Json { field: "data", .. }
    ));
    assert!(matches!(
        invalid("s", vec![event("A", "{}").with_metadata("\"text\"")]),
        ValidationError::Json {
            field: "metadata",
            ..
        }
    ));
    assert!(matches!(
        invalid("s", vec![event("", "{}")]),
        ValidationError::EventType { .. }
    ));
    let big = format!("\"{}\"", "x".repeat(2000));
    let error = invalid("s", vec![event("A", &big)]);
    assert!(matches!(
        error,
        ValidationError::TooLarge { limit: 1024, .. }
    ));
    assert!(error.to_string().contains("stream \"s\""), "{error}");
    assert!(matches!(
        invalid("s", vec![]),
        ValidationError::EventCount { count: 0, .. }
    ));
    assert!(matches!(
        invalid("s", vec![event("A", "{}"); 6]),
        ValidationError::EventCount { count: 6, .. }
    ));
    // A bad event anywhere in an append refuses the whole append.
    assert!(matches!(
        invalid("s", vec![event("A", "{}"), event("B", "nope")]),
        ValidationError::Json { .. }
    ));

    assert!(matches!(
        store.read_stream("", &StreamRead::forward()),
        Err(ReadError::Invalid(_))
    ));
    assert_eq!(store.head(), 1);
    assert_eq!(store.stream_info("s").unwrap().unwrap().version, 1);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn reads_go_both_ways_with_limits_bounds_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for n in 1..=10 {
        let stream = if n % 2 == 0 { "even" } else { "odd" };
        let kind = if n % 3 == 0 { "Fizz" } else { "Plain" };
        append(
            &store,
            stream,
            ExpectedVersion::Any,
            vec![event(kind, &n.to_string())],
        )
        .unwrap();
    }
    let numbers = |events: Vec<eshost_store::RecordedEvent>| -> Vec<u64> {
        events.iter().map(|e| e.data.parse().unwrap()).collect()
    };

    assert_eq!(
        numbers(store.read_stream("even", &StreamRead::forward()).unwrap()),
        vec![2, 4, 6, 8, 10]
    );
    assert_eq!(
        numbers(store.read_stream("even", &StreamRead::backward()).unwrap()),
        vec![10, 8, 6, 4, 2]
    );
    let read = StreamRead {
        from_version: 2,
        limit: 2,
        ..StreamRead::forward()
    };
    assert_eq!(
        numbers(store.read_stream("even", &read).unwrap()),
        vec![4, 6]
    );
    let read = StreamRead {
        from_version: 4,
        limit: 2,
        ..StreamRead::backward()
    };
    assert_eq!(
        numbers(store.read_stream("even", &read).unwrap()),
        vec![8, 6]
    );
    let read = StreamRead {
        until: Some(Until::Position(7)),
        ..StreamRead::forward()
    };
    assert_eq!(
        numbers(store.read_stream("odd", &read).unwrap()),
        vec![1, 3, 5, 7]
    );
    let read = StreamRead {
        until: Some(Until::Position(7)),
        ..StreamRead::backward()
    };
    assert_eq!(
        numbers(store.read_stream("odd", &read).unwrap()),
        vec![7, 5, 3, 1]
    );
    assert!(
        store
            .read_stream("missing", &StreamRead::forward())
            .unwrap()
            .is_empty()
    );

    let read = AllRead {
        event_types: vec!["Fizz".into()],
        ..AllRead::from(1)
    };
    assert_eq!(numbers(store.read_all(&read).unwrap()), vec![3, 6, 9]);
    let read = AllRead {
        from_position: 4,
        limit: 3,
        ..AllRead::from(1)
    };
    assert_eq!(numbers(store.read_all(&read).unwrap()), vec![4, 5, 6]);
    let read = AllRead {
        from_position: u64::MAX,
        direction: Direction::Backward,
        limit: 2,
        ..AllRead::from(1)
    };
    assert_eq!(numbers(store.read_all(&read).unwrap()), vec![10, 9]);
    let read = AllRead {
        until: Some(Until::Position(3)),
        ..AllRead::from(1)
    };
    assert_eq!(numbers(store.read_all(&read).unwrap()), vec![1, 2, 3]);
    assert!(store.read_all(&AllRead::from(11)).unwrap().is_empty());

    let info = store.stream_info("odd").unwrap().unwrap();
    assert_eq!(
        (info.version, info.first_position, info.last_position),
        (5, 1, 9)
    );
    assert!(info.created_at <= info.updated_at);
    assert!(store.stream_info("missing").unwrap().is_none());
}

#[test]
fn time_bounded_reads_answer_as_of_a_moment() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(
        &store,
        "account-1",
        ExpectedVersion::Any,
        vec![event("FundsDeposited", "500")],
    )
    .unwrap();
    let before = append(
        &store,
        "account-1",
        ExpectedVersion::Any,
        vec![event("FundsDeposited", "200")],
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let later = append(
        &store,
        "account-1",
        ExpectedVersion::Any,
        vec![event("FundsDeposited", "300")],
    )
    .unwrap();
    assert!(later.recorded_at > before.recorded_at);

    let as_of = before.recorded_at;
    assert_eq!(store.position_at(as_of).unwrap(), 2);
    assert_eq!(store.position_at(0).unwrap(), 0);
    assert_eq!(store.position_at(u64::MAX).unwrap(), 3);
    let read = StreamRead {
        until: Some(Until::Time(as_of)),
        ..StreamRead::forward()
    };
    let total: u64 = store
        .read_stream("account-1", &read)
        .unwrap()
        .iter()
        .map(|e| e.data.parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 700);
}

#[test]
fn streams_are_listed_by_prefix_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for stream in [
        "account-2",
        "order-1",
        "account-10",
        "account-1",
        "accounts",
    ] {
        append(&store, stream, ExpectedVersion::Any, vec![event("E", "{}")]).unwrap();
    }
    let ids = |found: Vec<(String, eshost_store::StreamInfo)>| {
        found.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.streams("account-", None, 10).unwrap()),
        vec!["account-1", "account-10", "account-2"]
    );
    assert_eq!(
        ids(store.streams("account-", Some("account-1"), 1).unwrap()),
        vec!["account-10"]
    );
    assert_eq!(ids(store.streams("", None, 100).unwrap()).len(), 5);
    assert!(store.streams("zzz", None, 10).unwrap().is_empty());
}

#[test]
fn the_store_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<Uuid> = {
        let store = open(dir.path());
        let events = vec![event("A", "1"), event("B", "2")];
        let ids = events.iter().map(|e| e.event_id).collect();
        append(&store, "s", ExpectedVersion::Any, events).unwrap();
        ids
    };
    let store = open(dir.path());
    assert_eq!(store.head(), 2);
    let read: Vec<_> = store
        .read_all(&AllRead::from(1))
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(read, ids);
    let next = append(
        &store,
        "s",
        ExpectedVersion::Exact(2),
        vec![event("C", "3")],
    )
    .unwrap();
    assert_eq!(next.first_position, 3);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn a_second_open_of_the_same_store_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path());
    let error = Store::open(StoreConfig::new(dir.path())).unwrap_err();
    assert!(error.to_string().contains("locked"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_head_watch_wakes_on_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut head = store.watch_head();
    assert_eq!(*head.borrow_and_update(), 0);
    let waiter = tokio::spawn(async move {
        head.changed().await.unwrap();
        *head.borrow()
    });
    store
        .append(AppendRequest::new(
            "s",
            ExpectedVersion::Any,
            vec![event("A", "{}"), event("B", "{}")],
        ))
        .await
        .unwrap();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_commits_and_a_conflict_fails_only_its_own_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tasks = Vec::new();
    for n in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Half race for the first version of one stream; half append to their own.
            let (stream, expected) = if n % 2 == 0 {
                ("contested".to_owned(), ExpectedVersion::NoStream)
            } else {
                (format!("own-{n}"), ExpectedVersion::NoStream)
            };
            let result = store
                .append(AppendRequest::new(
                    stream,
                    expected,
                    vec![event("E", &n.to_string())],
                ))
                .await;
            (n, result)
        }));
    }
    let mut contested_wins = 0;
    for task in tasks {
        let (n, result) = task.await.unwrap();
        match (n % 2, result) {
            (0, Ok(_)) => contested_wins += 1,
            (0, Err(AppendError::Conflict { actual: 1, .. })) => {}
            (1, Ok(appended)) => assert_eq!(appended.stream_version, 1),
            (_, other) => panic!("append {n}: unexpected {other:?}"),
        }
    }
    assert_eq!(contested_wins, 1);
    assert_eq!(store.head(), 101);
    let stats = store.writer_stats();
    let commits = stats.commits.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        commits < 101,
        "101 appends took {commits} commits: no group commit"
    );
    assert!(store.verify().unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_with_exact_versions_win_each_version_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let streams = ["a", "b", "c"];
    let mut tasks = Vec::new();
    for writer in 0..24 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let stream = streams[writer % streams.len()];
            let mut acknowledged = Vec::new();
            let mut conflicts = 0;
            while acknowledged.len() < 10 {
                let version = store
                    .stream_info(stream)
                    .unwrap()
                    .map_or(0, |info| info.version);
                let proposed = event(
                    "Wrote",
                    &format!(r#"{{"writer":{writer},"after":{version}}}"#),
                );
                let id = proposed.event_id;
                match store
                    .append(AppendRequest::new(
                        stream,
                        ExpectedVersion::Exact(version),
                        vec![proposed],
                    ))
                    .await
                {
                    Ok(appended) => {
                        assert_eq!(appended.stream_version, version + 1);
                        acknowledged.push((stream, appended.stream_version, id));
                    }
                    Err(AppendError::Conflict { actual, .. }) => {
                        assert!(actual > version);
                        conflicts += 1;
                    }
                    Err(other) => panic!("{other}"),
                }
            }
            (acknowledged, conflicts)
        }));
    }
    let mut acknowledged = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        let (acks, lost) = task.await.unwrap();
        acknowledged.extend(acks);
        conflicts += lost;
    }
    assert_eq!(acknowledged.len(), 240);
    assert!(
        conflicts > 0,
        "24 writers on 3 streams never conflicted: the race was not exercised"
    );
    // Each (stream, version) was won exactly once, and what was acknowledged is what is stored.
    let unique: HashSet<_> = acknowledged.iter().map(|(s, v, _)| (*s, *v)).collect();
    assert_eq!(unique.len(), acknowledged.len());
    for stream in streams {
        let stored = store.read_stream(stream, &StreamRead::forward()).unwrap();
        assert_eq!(stored.len(), 80);
        for (version, event) in (1..).zip(&stored) {
            assert_eq!(event.stream_version, version);
            assert!(acknowledged.contains(&(stream, version, event.event_id)));
            let after: serde_json::Value = serde_json::from_str(&event.data).unwrap();
            assert_eq!(
                after["after"],
                version - 1,
                "each event was decided on the version before it"
            );
        }
    }
    assert!(store.verify().unwrap().is_ok());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Whatever the appends, positions are 1..=n in `$all`, each stream's versions are
        /// 1..=k, and the per-stream reads are exactly `$all` split by stream.
        #[test]
        fn all_and_stream_reads_agree(appends in proptest::collection::vec((0..4usize, 1..4usize), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path());
            for (stream, count) in &appends {
                let events = (0..*count).map(|n| event("E", &n.to_string())).collect();
                append(&store, &format!("stream-{stream}"), ExpectedVersion::Any, events).unwrap();
            }
            let total: usize = appends.iter().map(|(_, count)| count).sum();
            let all = store.read_all(&AllRead::from(1)).unwrap();
            prop_assert_eq!(all.len(), total);
            prop_assert_eq!(store.head(), total as u64);
            for (index, event) in all.iter().enumerate() {
                prop_assert_eq!(event.position, index as u64 + 1);
            }
            for stream in 0..4 {
                let id = format!("stream-{stream}");
                let read = store.read_stream(&id, &StreamRead::forward()).unwrap();
                let from_all: Vec<_> = all.iter().filter(|e| e.stream_id == id).cloned().collect();
                prop_assert_eq!(&read, &from_all);
                for (index, event) in read.iter().enumerate() {
                    prop_assert_eq!(event.stream_version, index as u64 + 1);
                }
            }
            prop_assert!(store.verify().unwrap().is_ok());
        }
    }
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

#[test]
fn verify_finds_a_tampered_byte_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for n in 0..50 {
            let data = if n == 31 {
                r#"{"amount":"MARKER-31"}"#.to_owned()
            } else {
                format!(r#"{{"amount":{n}}}"#)
            };
            append(
                &store,
                &format!("account-{}", n % 5),
                ExpectedVersion::Any,
                vec![event("FundsDeposited", &data)],
            )
            .unwrap();
        }
        assert!(store.verify().unwrap().is_ok());
    }
    let path = dir.path().join(eshost_store::EVENTS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    // Copy-on-write leaves stale copies of pages in the file: change every copy.
    let places: Vec<_> = bytes
        .windows(9)
        .enumerate()
        .filter(|(_, w)| *w == b"MARKER-31")
        .map(|(at, _)| at)
        .collect();
    assert!(!places.is_empty(), "the payload is in the file");
    for at in places {
        bytes[at] = b'N';
    }
    std::fs::write(&path, &bytes).unwrap();

    let store = open(dir.path());
    let report = store.verify().unwrap();
    let bad = report.first_bad.as_ref().expect("the tampering is found");
    assert_eq!(bad.position, 32, "{report}");
    assert_eq!(report.events_checked, 31);
    assert!(
        report.to_string().contains("corrupt at position 32"),
        "{report}"
    );
}
