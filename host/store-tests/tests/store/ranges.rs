//! Read ranges: a start and an end given as positions, versions or times resolve to the same
//! events on every backend (commit times never go down along the log).

use eshost_store::{AppendRequest, Appended, Bounds, ExpectedVersion, ProposedEvent};
use eshost_store_tests::{Backend, Opened, Place};

fn append(store: &Opened, stream: &str) -> Appended {
    let request = AppendRequest::new(
        stream,
        ExpectedVersion::Any,
        vec![ProposedEvent::new("E", "{}")],
    );
    store.append_blocking(request).unwrap()
}

/// Appends one event per stream named, in order; then waits (bounded) until the store's clock
/// has moved past the era's last commit, so the next era is recorded later.
fn era(store: &Opened, streams: &[&str]) -> (u64, u64) {
    let appended: Vec<Appended> = streams.iter().map(|s| append(store, s)).collect();
    let (first, last) = (
        appended[0].recorded_at,
        appended[appended.len() - 1].recorded_at,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while eshost_store::now_ms() <= last {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock stood still"
        );
        std::thread::yield_now();
    }
    (first, last)
}

pub fn ranges_resolve_positions_versions_and_times(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open();
    // Positions: a-1 v1@1, o-1 v1@2, a-1 v2@3 | a-1 v3@4, o-1 v2@5, a-1 v4@6 | a-1 v5@7, o-1 v3@8
    let (a_start, a_end) = era(&store, &["a-1", "o-1", "a-1"]);
    let (b_start, b_end) = era(&store, &["a-1", "o-1", "a-1"]);
    let (c_start, _) = era(&store, &["a-1", "o-1"]);
    assert!(a_end < b_start && b_end < c_start);

    let all = |bounds: Bounds| bounds.all_positions(&*store).unwrap();
    let stream = |bounds: Bounds| bounds.stream_versions(&*store, "a-1", 5).unwrap();

    assert_eq!(all(Bounds::default()), Some(1..=8));
    let era_b = Bounds {
        from_time: Some(b_start),
        until_time: Some(b_end),
        ..Bounds::default()
    };
    assert_eq!(all(era_b), Some(4..=6));
    assert_eq!(stream(era_b), Some(3..=4));
    let from_b = Bounds {
        from_time: Some(b_start),
        ..Bounds::default()
    };
    assert_eq!(all(from_b), Some(4..=8));
    assert_eq!(stream(from_b), Some(3..=5));
    let until_a = Bounds {
        until_time: Some(a_end),
        ..Bounds::default()
    };
    assert_eq!(all(until_a), Some(1..=3));
    assert_eq!(stream(until_a), Some(1..=2));
    let before_everything = Bounds {
        until_time: Some(a_start - 1),
        ..Bounds::default()
    };
    assert_eq!(all(before_everything), None);
    assert_eq!(stream(before_everything), None);

    // Positions bound a stream at its versions on either side of them.
    let positions = Bounds {
        from_position: Some(5),
        until_position: Some(7),
        ..Bounds::default()
    };
    assert_eq!(all(positions), Some(5..=7));
    assert_eq!(stream(positions), Some(4..=5));
    let until_five = Bounds {
        until_position: Some(5),
        ..Bounds::default()
    };
    assert_eq!(stream(until_five), Some(1..=3));

    // Every bound applies: the narrowest wins, and an empty intersection is empty.
    let mixed = Bounds {
        from_version: Some(2),
        until_version: Some(4),
        from_time: Some(b_start),
        until_position: Some(100),
        ..Bounds::default()
    };
    assert_eq!(stream(mixed), Some(3..=4));
    let crossed = Bounds {
        from_position: Some(7),
        until_time: Some(b_end),
        ..Bounds::default()
    };
    assert_eq!(all(crossed), None);
    assert_eq!(stream(crossed), None);
    let past_the_head = Bounds {
        from_position: Some(9),
        ..Bounds::default()
    };
    assert_eq!(all(past_the_head), None);
    assert_eq!(stream(past_the_head), None);
}

crate::conformance!(ranges_resolve_positions_versions_and_times);
