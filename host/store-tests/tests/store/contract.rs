//! The event store's contract: appends, expected versions, idempotency, reads, validation.

use std::collections::HashSet;

use eshost_store::{
    AllRead, AppendError, AppendRequest, Direction, ExpectedVersion, Limits, ProposedEvent,
    ReadError, StreamRead, Until, ValidationError,
};
use eshost_store_tests::{Backend, Opened, Place, runtime};
use uuid::Uuid;

fn event(kind: &str, data: &str) -> ProposedEvent {
    ProposedEvent::new(kind, data)
}

fn append(
    store: &Opened,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<ProposedEvent>,
) -> Result<eshost_store::Appended, AppendError> {
    store.append_blocking(AppendRequest::new(stream, expected, events))
}

pub fn appends_get_gap_free_positions_and_contiguous_versions(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open();
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

pub fn every_expected_version_mode_accepts_and_refuses(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open();
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

pub fn re_appending_stored_event_ids_is_idempotent(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open();
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
    assert_eq!(store.event_position(batch[1].event_id).unwrap(), Some(2));
    assert_eq!(store.event_position(Uuid::new_v4()).unwrap(), None);

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

pub fn bad_input_is_refused_with_the_right_error_and_changes_nothing(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open_with(Limits {
        max_event_bytes: 1024,
        max_events_per_append: 5,
    });
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

pub fn reads_go_both_ways_with_limits_bounds_and_filters(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open();
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

pub fn time_bounded_reads_answer_as_of_a_moment(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open();
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

pub fn streams_are_listed_by_prefix_in_order(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open();
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

pub fn the_store_survives_reopening(backend: Backend) {
    let place = Place::new(backend);
    let ids: Vec<Uuid> = {
        let store = place.open();
        let events = vec![event("A", "1"), event("B", "2")];
        let ids = events.iter().map(|e| e.event_id).collect();
        append(&store, "s", ExpectedVersion::Any, events).unwrap();
        ids
    };
    let store = place.open();
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

pub fn the_head_watch_wakes_on_commit(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open();
    runtime().block_on(async {
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
    });
}

pub fn concurrent_appends_share_commits_and_a_conflict_fails_only_its_own_append(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open();
    let shared = store.shared();
    runtime().block_on(async {
        let mut tasks = Vec::new();
        for n in 0..200 {
            let store = shared.clone();
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
    });
    assert_eq!(store.head(), 101);
    let commits = store.commits();
    assert!(
        commits < 101,
        "101 appends took {commits} commits: no group commit"
    );
    assert!(store.verify().unwrap().is_ok());
}

pub fn racing_writers_with_exact_versions_win_each_version_once(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open();
    let shared = store.shared();
    let streams = ["a", "b", "c"];
    let acknowledged = runtime().block_on(async {
        let mut tasks = Vec::new();
        for writer in 0..24 {
            let store = shared.clone();
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
        acknowledged
    });
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

/// Whatever the appends, positions are 1..=n in `$all`, each stream's versions are 1..=k,
/// and the per-stream reads are exactly `$all` split by stream.
pub fn all_and_stream_reads_agree(backend: Backend) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    let appends = proptest::collection::vec((0..4usize, 1..4usize), 1..40);
    runner
        .run(&appends, |appends| {
            let place = Place::new(backend);
            let store = place.open();
            for (stream, count) in &appends {
                let events = (0..*count).map(|n| event("E", &n.to_string())).collect();
                append(
                    &store,
                    &format!("stream-{stream}"),
                    ExpectedVersion::Any,
                    events,
                )
                .unwrap();
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
            Ok(())
        })
        .unwrap();
}

pub fn verify_finds_a_tampered_byte_at_its_position(backend: Backend) {
    let place = Place::new(backend);
    {
        let store = place.open();
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
    place.tamper(b"MARKER-31", b"NARKER-31");

    let store = place.open();
    let report = store.verify().unwrap();
    let bad = report.first_bad.as_ref().expect("the tampering is found");
    assert_eq!(bad.position, 32, "{report}");
    assert_eq!(report.events_checked, 31);
    assert!(
        report.to_string().contains("corrupt at position 32"),
        "{report}"
    );
}

/// Streams longer than a read page read whole, both ways, and from the middle.
pub fn long_streams_read_whole_both_ways(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open();
    for chunk in 0..3 {
        let events = (0..500)
            .map(|n| event("E", &(chunk * 500 + n).to_string()))
            .collect();
        append(&store, "long", ExpectedVersion::Any, events).unwrap();
        append(&store, "other", ExpectedVersion::Any, vec![event("O", "0")]).unwrap();
    }
    let numbers = |read: &StreamRead| -> Vec<u64> {
        store
            .read_stream("long", read)
            .unwrap()
            .iter()
            .map(|e| e.data.parse().unwrap())
            .collect()
    };
    assert_eq!(
        numbers(&StreamRead::forward()),
        (0..1500).collect::<Vec<_>>()
    );
    assert_eq!(
        numbers(&StreamRead::backward()),
        (0..1500).rev().collect::<Vec<_>>()
    );
    let middle = StreamRead {
        from_version: 400,
        limit: 700,
        ..StreamRead::forward()
    };
    assert_eq!(numbers(&middle), (399..1099).collect::<Vec<_>>());
    let all = store.read_all(&AllRead::from(1)).unwrap();
    assert_eq!(all.len(), 1503);
    let backward = AllRead {
        from_position: 1200,
        direction: Direction::Backward,
        limit: 1000,
        ..AllRead::from(1)
    };
    let positions: Vec<u64> = store
        .read_all(&backward)
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(positions, (201..=1200).rev().collect::<Vec<_>>());
}

crate::conformance!(
    appends_get_gap_free_positions_and_contiguous_versions,
    every_expected_version_mode_accepts_and_refuses,
    re_appending_stored_event_ids_is_idempotent,
    bad_input_is_refused_with_the_right_error_and_changes_nothing,
    reads_go_both_ways_with_limits_bounds_and_filters,
    time_bounded_reads_answer_as_of_a_moment,
    streams_are_listed_by_prefix_in_order,
    the_store_survives_reopening,
    the_head_watch_wakes_on_commit,
    concurrent_appends_share_commits_and_a_conflict_fails_only_its_own_append,
    racing_writers_with_exact_versions_win_each_version_once,
    all_and_stream_reads_agree,
    verify_finds_a_tampered_byte_at_its_position,
    long_streams_read_whole_both_ways,
);
