//! Upcasters hot-swapped: the new chain applies to commands, state reads and projections
//! at once, drops the states and snapshots built through the old one, fails no command under
//! load, is recorded in `$plugins` and is what a restarted host serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server_support::{bank_host, call, caught_up, get, post};
use eshost_tests::DEPOSIT_EUR;

/// Appends `FundsDeposited` v1 `{amount}` events (the shape before currencies) to `account`.
async fn old_deposits(router: &axum::Router, account: &str, amounts: &[u64]) {
    let events: Vec<Value> = amounts
        .iter()
        .map(|amount| json!({"type": "FundsDeposited", "data": {"amount": amount}, "schema_version": 1}))
        .collect();
    let (status, body) = post(
        router,
        &format!("/streams/{account}"),
        json!({"expected": "any", "events": events}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn command(router: &axum::Router, account: &str, command: Value) -> (StatusCode, Value) {
    post(
        router,
        &format!("/aggregates/bank-account/{account}"),
        command,
    )
    .await
}

async fn balance(router: &axum::Router, account: &str) -> u64 {
    let (status, state) = get(router, &format!("/aggregates/bank-account/{account}")).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    state["state"]["balance"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upcaster_swap_under_load_fails_no_command_and_every_read_takes_the_new_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(dir.path(), "");
    // An account whose history holds two v1 deposits of 5: 5 cents each through the live
    // upcaster (USD), 500 through the new one (whole euros), with a snapshot built through
    // the live chain.
    let open = json!({"type": "Open", "owner": "Ann", "initial_deposit": 1000});
    assert_eq!(command(&router, "acct-old", open).await.0, StatusCode::OK);
    old_deposits(&router, "acct-old", &[5, 5]).await;
    for _ in 0..3 {
        let deposit = json!({"type": "Deposit", "amount": 1});
        assert_eq!(
            command(&router, "acct-old", deposit).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(balance(&router, "acct-old").await, 1013);
    let aggregates = host.host().aggregates();
    let snapshot = aggregates
        .snapshot("bank-account", "acct-old")
        .await
        .unwrap();
    assert_eq!(snapshot.map(|s| s.version), Some(6));

    // Load: four clients depositing 1 cent at a time while the upcaster is swapped.
    const CLIENTS: usize = 4;
    const EACH: u64 = 60;
    for client in 0..CLIENTS {
        let open = json!({"type": "Open", "owner": "Load"});
        let account = format!("load-{client}");
        assert_eq!(command(&router, &account, open).await.0, StatusCode::OK);
    }
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (router, done) = (router.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            for _ in 0..EACH {
                let deposit = json!({"type": "Deposit", "amount": 1});
                let (status, body) = command(&router, &format!("load-{client}"), deposit).await;
                if status != StatusCode::OK {
                    failed.push(body);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failed
        }));
    }
    // Swap once the load is under way.
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.load(Ordering::SeqCst) < 20 {
        assert!(Instant::now() < deadline, "the load did not start");
        tokio::task::yield_now().await;
    }
    let bytes = std::fs::read(DEPOSIT_EUR).unwrap();
    let (status, swapped) = call(
        &router,
        Method::PUT,
        "/plugins/deposit-currency",
        None,
        Some(Body::from(bytes)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{swapped}");
    assert_eq!(swapped["kind"], "upcaster");
    assert_eq!(swapped["outcome"], "swapped");
    assert_eq!(swapped["version"], "2-eur");
    assert!(
        swapped["snapshots_deleted"].as_u64().unwrap() >= 1,
        "{swapped}"
    );
    let left = aggregates
        .snapshots()
        .get("bank-account", "acct-old")
        .unwrap();
    assert!(
        left.is_none(),
        "a snapshot of the old chain survived: {left:?}"
    );
    let rebuilding = swapped["projections_rebuilding"].as_array().unwrap();
    assert!(rebuilding.contains(&json!("balances")), "{swapped}");
    let swapped_while = done.load(Ordering::SeqCst);
    let mut failed = Vec::new();
    for client in clients {
        failed.extend(client.await.unwrap());
    }
    assert!(failed.is_empty(), "failed commands: {failed:?}");
    assert!(
        swapped_while < (CLIENTS as u64) * EACH,
        "the swap happened under load ({swapped_while} commands done)"
    );
    for client in 0..CLIENTS {
        assert_eq!(balance(&router, &format!("load-{client}")).await, EACH);
    }

    // The state built through the old chain (cached, snapshotted) is gone: reads and commands
    // see the new one.
    assert_eq!(balance(&router, "acct-old").await, 2003);
    let deposit = json!({"type": "Deposit", "amount": 7});
    let (status, reply) = command(&router, "acct-old", deposit).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(balance(&router, "acct-old").await, 2010);
    caught_up(&host, "balances");
    let (status, row) = get(
        &router,
        "/projections/balances/query/balance?account=acct-old",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{row}");
    assert_eq!(row["balance"], 2010, "the read model was rebuilt: {row}");

    // Recorded like any activation; listed with its new version.
    let (_, history) = get(&router, "/plugins/deposit-currency/history").await;
    let last = history["activations"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["source"], "upload", "{history}");
    assert_eq!(last["kind"], "upcaster");
    let (_, plugins) = get(&router, "/plugins").await;
    let listed = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "deposit-currency")
        .unwrap()
        .clone();
    assert_eq!(listed["version"], "2-eur", "{plugins}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upcaster_that_is_not_one_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), "");
    let open = json!({"type": "Open", "owner": "Ann"});
    assert_eq!(command(&router, "acct-1", open).await.0, StatusCode::OK);
    old_deposits(&router, "acct-1", &[5]).await;
    // The bank aggregate's component offered as the upcaster: the wrong kind.
    let bytes = std::fs::read(eshost_tests::BANK_ACCOUNT).unwrap();
    let (status, refused) = call(
        &router,
        Method::PUT,
        "/plugins/deposit-currency",
        None,
        Some(Body::from(bytes)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"], "bad_plugin");
    assert_eq!(balance(&router, "acct-1").await, 5);
    let (_, history) = get(&router, "/plugins/deposit-currency/history").await;
    assert_eq!(
        history["activations"].as_array().unwrap().len(),
        1,
        "{history}"
    );
}
