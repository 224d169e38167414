//! The core's subscription to `$all`: catch-up from the log, then live, filtered, and no gap
//! or duplicate where the two meet while appends go on.

use std::sync::Arc;
use std::time::Duration;

use eshost_core::subscription::{Subscription, SubscriptionOptions};
use eshost_store::{
    AppendRequest, Durability, EventStore, ExpectedVersion, ProposedEvent, RecordedEvent, Store,
    StoreConfig,
};
use futures_util::StreamExt;

const WAIT: Duration = Duration::from_secs(20);

fn open(dir: &std::path::Path) -> Arc<dyn EventStore> {
    let mut config = StoreConfig::new(dir);
    config.durability = Durability::None;
    Arc::new(Store::open(config).unwrap())
}

async fn append(store: &Arc<dyn EventStore>, stream: &str, types: &[&str]) {
    let events = types.iter().map(|t| ProposedEvent::new(*t, "{}")).collect();
    store
        .append(AppendRequest::new(stream, ExpectedVersion::Any, events))
        .await
        .unwrap();
}

async fn next(subscription: &mut Subscription) -> RecordedEvent {
    let event = tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("an event in time")
        .expect("the subscription goes on")
        .unwrap();
    assert!(subscription.buffered() <= 2, "holds at most a batch");
    event
}

fn options(from: u64, prefix: &str, types: &[&str]) -> SubscriptionOptions {
    SubscriptionOptions {
        from,
        stream_prefix: prefix.to_owned(),
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
        batch: 2,
        ..SubscriptionOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_catches_up_then_follows_with_its_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, "a-1", &["A", "B"]).await; // 1, 2
    append(&store, "b-1", &["A"]).await; // 3
    append(&store, "a-2", &["B", "A", "B"]).await; // 4, 5, 6

    let mut everything = Subscription::new(store.clone(), options(1, "", &[]));
    for position in 1..=6 {
        assert_eq!(next(&mut everything).await.position, position);
    }
    let mut a_streams_b_types = Subscription::new(store.clone(), options(1, "a-", &["B"]));
    for position in [2, 4, 6] {
        assert_eq!(next(&mut a_streams_b_types).await.position, position);
    }
    let mut from_five = Subscription::new(store.clone(), options(5, "", &[]));
    assert_eq!(next(&mut from_five).await.position, 5);
    let mut past_the_head = Subscription::new(store.clone(), options(8, "", &[]));

    // Live: each sees what it asked for and nothing else.
    append(&store, "b-1", &["B"]).await; // 7: filtered out of a-/B
    append(&store, "a-1", &["A"]).await; // 8: filtered out of a-/B
    append(&store, "a-3", &["B"]).await; // 9
    for position in 7..=9 {
        assert_eq!(next(&mut everything).await.position, position);
    }
    let live = next(&mut a_streams_b_types).await;
    assert_eq!((live.position, live.stream_id.as_str()), (9, "a-3"));
    assert_eq!(next(&mut from_five).await.position, 6);
    assert_eq!(next(&mut past_the_head).await.position, 8);

    // As a stream, the same events.
    let stream = Subscription::new(store.clone(), options(1, "b-", &[])).into_stream();
    let positions: Vec<u64> = stream
        .take(2)
        .map(|event| event.unwrap().position)
        .collect()
        .await;
    assert_eq!(positions, [3, 7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switch_from_catch_up_to_live_under_concurrent_appends_has_no_gap_or_duplicate() {
    const WRITERS: usize = 3;
    const APPENDS: usize = 150;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..APPENDS {
                let stream = format!("w{writer}-{}", n % 7);
                let count = 1 + n % 3;
                let types: Vec<&str> = ["Even", "Odd", "Even"][..count].to_vec();
                append(&store, &stream, &types).await;
            }
        }));
    }
    let total = (WRITERS * (APPENDS / 3) * (1 + 2 + 3)) as u64;
    // Subscribe once part of the log is there, so catch-up runs while appends go on.
    let deadline = tokio::time::Instant::now() + WAIT;
    while store.head() < total / 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writers stalled"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut all = Subscription::new(store.clone(), options(1, "", &[]));
    let mut filtered = Subscription::new(store.clone(), options(1, "w1-", &["Odd"]));
    let mut seen = Vec::new();
    while seen.len() < total as usize {
        seen.push(next(&mut all).await.position);
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(store.head(), total);
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "every position once, in order"
    );

    let expected: Vec<u64> = store
        .read_all(&eshost_store::AllRead::from(1))
        .unwrap()
        .into_iter()
        .filter(|e| e.stream_id.starts_with("w1-") && e.event_type == "Odd")
        .map(|e| e.position)
        .collect();
    assert_eq!(expected.len(), APPENDS / 3 * 2);
    let mut filtered_seen = Vec::new();
    while filtered_seen.len() < expected.len() {
        filtered_seen.push(next(&mut filtered).await.position);
    }
    assert_eq!(filtered_seen, expected);
    // Nothing more: the next read waits for a commit that never comes.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), filtered.next())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_holds_no_more_event_bytes_than_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Ten events of about 20 KB; a budget of 64 KiB holds three of them.
    for n in 0..10 {
        let data = serde_json::json!({"n": n, "pad": "x".repeat(20_000)}).to_string();
        store
            .append(AppendRequest::new(
                "big-1",
                ExpectedVersion::Any,
                vec![ProposedEvent::new("Padded", data)],
            ))
            .await
            .unwrap();
    }
    let options = SubscriptionOptions {
        batch: 500,
        max_bytes: 65_536,
        ..SubscriptionOptions::default()
    };
    let mut subscription = Subscription::new(store.clone(), options);
    let mut positions = Vec::new();
    while positions.len() < 10 {
        let event = tokio::time::timeout(WAIT, subscription.next())
            .await
            .expect("an event in time")
            .expect("the subscription goes on")
            .unwrap();
        // What it still holds, with the event just handed out, stays within the budget.
        assert!(
            subscription.buffered() < 3,
            "holds {} events of 20 KB beside the one delivered",
            subscription.buffered()
        );
        positions.push(event.position);
    }
    assert_eq!(positions, (1..=10).collect::<Vec<_>>(), "in order, once");
}
