//! Checking a candidate against the stored history before it goes live: an upcaster's counts
//! on a known history, an aggregate that traps on one old event reported at that event, and a
//! swap that requires a clean check refused before it serves anything.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server_support::{bank_host, call, get, post};
use eshost_tests::{DEPOSIT_EUR, LEDGER_TRAP, LEDGER_V1};

async fn upload(
    router: &axum::Router,
    method: Method,
    uri: &str,
    file: &str,
) -> (StatusCode, Value) {
    let bytes = std::fs::read(file).unwrap();
    call(router, method, uri, None, Some(Body::from(bytes))).await
}

async fn accepted(router: &axum::Router, uri: &str, body: Value) -> Value {
    let (status, answer) = post(router, uri, body).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {answer}");
    answer
}

fn version_of(plugins: &Value, name: &str) -> Value {
    plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| p["version"].clone())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upcaster_check_counts_unchanged_changed_and_failed_events() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), "");
    // Two v2 deposits by command, three v1 deposits of 5 and one of 13 appended as they were
    // stored before currencies.
    let open = json!({"type": "Open", "owner": "Ann"});
    accepted(&router, "/aggregates/bank-account/acct-1", open).await;
    for amount in [100, 200] {
        let deposit = json!({"type": "Deposit", "amount": amount});
        accepted(&router, "/aggregates/bank-account/acct-1", deposit).await;
    }
    let v1 = |amount: u64| json!({"type": "FundsDeposited", "data": {"amount": amount}, "schema_version": 1});
    let events = json!({"expected": "any", "events": [v1(5), v1(5), v1(13), v1(5)]});
    let (status, appended) = post(&router, "/streams/acct-2", events).await;
    assert_eq!(status, StatusCode::CREATED, "{appended}");
    let thirteen_at = appended["first_position"].as_u64().unwrap() + 2;

    let (status, report) = upload(
        &router,
        Method::POST,
        "/plugins/deposit-currency/check",
        DEPOSIT_EUR,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["kind"], "upcaster");
    assert_eq!(report["version"], "2-eur");
    assert_eq!(report["clean"], false, "{report}");
    let check = &report["upcaster"];
    assert_eq!(check["event_types"], json!(["FundsDeposited"]));
    assert_eq!(check["events"], 6, "{report}");
    assert_eq!(check["unchanged"], 2, "the v2 deposits: {report}");
    assert_eq!(check["changed"], 3, "{report}");
    assert_eq!(check["failed"], 1, "{report}");
    let failure = &check["first_failure"];
    assert_eq!(failure["position"], thirteen_at, "{report}");
    assert_eq!(failure["stream_id"], "acct-2");
    assert_eq!(failure["stream_version"], 3);
    assert!(
        failure["message"].as_str().unwrap().contains("13"),
        "{report}"
    );
    let sample = &check["samples"][0];
    assert_eq!(
        sample["before"],
        json!({"event_type": "FundsDeposited", "schema_version": 2, "data": {"amount": 5, "currency": "USD"}})
    );
    assert_eq!(
        sample["after"],
        json!({"event_type": "FundsDeposited", "schema_version": 2, "data": {"amount": 500, "currency": "EUR"}})
    );

    // Required clean: refused with the same report, and the live chain is untouched.
    let (status, refused) = upload(
        &router,
        Method::PUT,
        "/plugins/deposit-currency?require_check=true",
        DEPOSIT_EUR,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"], "check_failed");
    assert_eq!(refused["check"]["upcaster"]["failed"], 1, "{refused}");
    let (_, plugins) = get(&router, "/plugins").await;
    assert_ne!(version_of(&plugins, "deposit-currency"), "2-eur");
    let (_, history) = get(&router, "/plugins/deposit-currency/history").await;
    assert_eq!(
        history["activations"].as_array().unwrap().len(),
        1,
        "{history}"
    );
    let (_, state) = get(&router, "/aggregates/bank-account/acct-2").await;
    assert_eq!(state["error"], Value::Null, "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_that_traps_on_one_old_event_is_reported_there_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("[[aggregates]]\nname = \"ledger\"\nplugin = {LEDGER_V1:?}\n");
    let (_host, router) = bank_host(dir.path(), &extra);
    let add = |n: u64| json!({"type": "add", "n": n});
    let mut positions = std::collections::HashMap::new();
    for (id, numbers) in [
        ("ledger-1", vec![1, 13, 2]),
        ("ledger-2", vec![3, 7]),
        ("ledger-3", vec![4]),
    ] {
        for n in numbers {
            let reply = accepted(&router, &format!("/aggregates/ledger/{id}"), add(n)).await;
            positions.insert((id, n), reply["events"][0]["position"].as_u64().unwrap());
        }
    }

    let (status, report) =
        upload(&router, Method::POST, "/plugins/ledger/check", LEDGER_TRAP).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["kind"], "aggregate");
    assert_eq!(report["clean"], false, "{report}");
    let check = &report["aggregate"];
    assert_eq!(check["streams"], 3, "{report}");
    assert_eq!(check["same"], 1, "{report}");
    assert_eq!(check["failed"], 1, "{report}");
    assert_eq!(check["differing"], 1, "{report}");
    let failure = &check["failures"][0];
    assert_eq!(failure["stream_id"], "ledger-1", "{report}");
    assert_eq!(failure["stream_version"], 2, "{report}");
    assert_eq!(
        failure["position"],
        positions[&("ledger-1", 13)],
        "{report}"
    );
    assert_eq!(failure["event_type"], "Added");
    let difference = &check["differences"][0];
    assert_eq!(difference["stream_id"], "ledger-2", "{report}");
    assert_eq!(difference["stream_version"], 2, "{report}");
    assert_eq!(difference["position"], positions[&("ledger-2", 7)]);
    assert_eq!(difference["live"], json!({"total": 10, "count": 2}));
    assert_eq!(difference["candidate"], json!({"total": 3, "count": 2}));

    // A swap that requires a clean check is refused before it serves a command.
    let (status, refused) = upload(
        &router,
        Method::PUT,
        "/plugins/ledger?require_check=true",
        LEDGER_TRAP,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"], "check_failed");
    assert!(
        refused["message"].as_str().unwrap().contains("ledger-1"),
        "{refused}"
    );
    assert_eq!(
        refused["check"]["aggregate"]["failures"][0]["stream_version"],
        2
    );
    let (_, plugins) = get(&router, "/plugins").await;
    assert_eq!(version_of(&plugins, "ledger"), "1");
    let reply = accepted(&router, "/aggregates/ledger/ledger-1", add(13)).await;
    assert_eq!(reply["events"][0]["event_type"], "Added");
    let (_, state) = get(&router, "/aggregates/ledger/ledger-1").await;
    assert_eq!(state["state"], json!({"total": 29, "count": 4}));

    // A clean candidate passes the requirement; its report comes back with the swap.
    let (status, swapped) = upload(
        &router,
        Method::PUT,
        "/plugins/ledger?require_check=true",
        LEDGER_V1,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{swapped}");
    assert_eq!(swapped["check"]["clean"], true, "{swapped}");
    assert_eq!(swapped["check"]["aggregate"]["same"], 3, "{swapped}");
}
