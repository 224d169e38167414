//! Reads are bounded in bytes, not only in count: with `max_response_bytes` small, a page of
//! `/all`, of a stream (either way) and of an aggregate's history ends at the budget (after at
//! least one event), and reading on from the last event gives the rest, in order, once.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use eshost_core::config::Config;
use eshost_server::Server;
use serde_json::{Value, json};

use crate::server_support::{bank_config, call, get, post};

const BUDGET: usize = 65_536;
/// Each raw event's data is about 20 KB: three fit in the budget, four do not.
const PAD: usize = 20_000;

fn budgeted_host(dir: &std::path::Path) -> (Server, axum::Router) {
    bank_config(dir, "");
    let file = dir.join("eshost.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("max_response_bytes = {BUDGET}\n{text}")).unwrap();
    let config = Config::load(&file).unwrap();
    assert_eq!(config.max_response_bytes, BUDGET);
    let host = Server::start(&config).unwrap();
    let router = host.router();
    (host, router)
}

fn positions(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect()
}

fn versions(events: &Value) -> Vec<u64> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream_version"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_all_and_of_a_stream_end_at_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = budgeted_host(dir.path());
    // The host's own records at start (its plugin activations) come first.
    let (_, health) = get(&router, "/health").await;
    let base = health["head"].as_u64().unwrap();
    for n in 0..10 {
        let body =
            json!({"events": [{"type": "Padded", "data": {"n": n, "pad": "x".repeat(PAD)}}]});
        let (status, answer) = post(&router, "/streams/big-1", body).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }

    let mut pages = Vec::new();
    let mut from = base + 1;
    while pages.len() < 10 {
        let (status, page) = get(&router, &format!("/all?from={from}&limit=100")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let got = positions(&page);
        let Some(last) = got.last() else { break };
        from = last + 1;
        pages.push(got);
    }
    let expected: Vec<Vec<u64>> = [vec![1, 2, 3], vec![4, 5, 6], vec![7, 8, 9], vec![10]]
        .into_iter()
        .map(|page| page.into_iter().map(|n| base + n).collect())
        .collect();
    assert_eq!(
        pages, expected,
        "three events of {PAD} bytes fit in {BUDGET}, four do not"
    );

    let (_, forward) = get(&router, "/streams/big-1?limit=100").await;
    assert_eq!(versions(&forward["events"]), [1, 2, 3]);
    let (_, on) = get(&router, "/streams/big-1?from=4&limit=2").await;
    assert_eq!(
        versions(&on["events"]),
        [4, 5],
        "the count still ends a page first"
    );
    let (_, backward) = get(&router, "/streams/big-1?backward=true&limit=100").await;
    assert_eq!(versions(&backward["events"]), [10, 9, 8]);
    let (_, end) = get(&router, "/streams/big-1?backward=true&from=2&limit=100").await;
    assert_eq!(
        versions(&end["events"]),
        [2, 1],
        "a backward page stops at the first event"
    );

    // One event over the budget is still served, alone.
    let huge = json!({"events": [{"type": "Padded", "data": {"pad": "y".repeat(60_000)}}]});
    assert_eq!(
        post(&router, "/streams/big-2", huge.clone()).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        post(&router, "/streams/big-2", huge).await.0,
        StatusCode::CREATED
    );
    let (_, alone) = get(&router, "/streams/big-2").await;
    assert_eq!(versions(&alone["events"]), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_end_at_the_byte_budget_and_read_on_from_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = budgeted_host(dir.path());
    let owner = "o".repeat(PAD);
    let command = |body: Value| {
        let router = router.clone();
        async move {
            let (status, answer) = call(
                &router,
                Method::POST,
                "/aggregates/bank-account/account-1",
                None,
                Some(Body::from(body.to_string())),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
    };
    command(json!({"type": "Open", "owner": owner})).await;
    for amount in 1..=5 {
        command(json!({"type": "Deposit", "amount": amount})).await;
    }

    // Every entry holds the owner in its state: a page holds a few entries, not six.
    let mut seen = Vec::new();
    let mut pages = 0;
    while seen.len() < 6 && pages < 10 {
        let from = seen.last().map_or(1, |v| v + 1);
        let (status, page) = get(
            &router,
            &format!("/aggregates/bank-account/account-1/history?from={from}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let entries = page["history"].as_array().unwrap();
        assert!(!entries.is_empty(), "a page holds at least one entry");
        assert!(
            entries.len() < 6,
            "the budget ends the page: {}",
            entries.len()
        );
        seen.extend(
            entries
                .iter()
                .map(|e| e["event"]["stream_version"].as_u64().unwrap()),
        );
        pages += 1;
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
    assert!(pages > 1);

    // From a version: the state after each entry counts what came before the page.
    let (_, page) = get(
        &router,
        "/aggregates/bank-account/account-1/history?from=3&limit=2",
    )
    .await;
    let entries = page["history"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{page}");
    assert_eq!(entries[0]["event"]["stream_version"], 3);
    assert_eq!(entries[1]["state"]["balance"], json!(1 + 2 + 3));
}
