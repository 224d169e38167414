//! Reactors over the bank, in-process: the transfer saga's three endings, causation and
//! correlation of what it sends, outcomes recorded in its stream, no action on history, a
//! failing event (stop, dead letter, resume), a swap mid-flow, and a fraud-watch timer that
//! fires across a restart; a swap by upload kept across a restart, and rolled back.

use axum::body::Body;
use axum::http::Request;
use serde_json::json;

use crate::reactor_support::{
    append, balance, command, events, eventually, fraud_watch_config, open, reactor, relay_config,
    settled, state, transfer_config, types,
};
use crate::server_support::{bank_config, bank_host, restart, send};

fn request(from: &str, to: &str, amount: u64) -> serde_json::Value {
    json!({"type": "Request", "from": from, "to": to, "amount": amount})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_is_debited_credited_and_completed_with_each_step_caused_by_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(dir.path(), &transfer_config());
    open(&router, "acc-a", 1000).await;
    open(&router, "acc-b", 0).await;
    assert_eq!(
        command(&router, "transfer", "t-1", request("acc-a", "acc-b", 300)).await,
        200
    );
    assert_eq!(settled(&router, "t-1").await, "completed");
    assert_eq!(balance(&router, "acc-a").await, 700);
    assert_eq!(balance(&router, "acc-b").await, 300);

    // The debit was caused by the request, and carries its correlation.
    let requested = &events(&router, "t-1").await[0];
    let withdrawn = events(&router, "acc-a").await.pop().unwrap();
    assert_eq!(withdrawn["event_type"], "FundsWithdrawn");
    assert_eq!(withdrawn["metadata"]["causation_id"], requested["event_id"]);
    assert_eq!(
        withdrawn["metadata"]["correlation_id"],
        requested["metadata"]["correlation_id"]
    );
    // Each outcome is recorded in the saga's stream, in order.
    // The transfer is complete once its last command is; that command's outcome follows.
    let outcomes = eventually("the third outcome", async || {
        let outcomes = events(&router, "$reactor-transfer-saga").await;
        (outcomes.len() >= 3).then_some(outcomes)
    })
    .await;
    assert_eq!(
        types(&outcomes),
        ["CommandAccepted", "CommandAccepted", "CommandAccepted"]
    );
    let steps: Vec<&str> = outcomes
        .iter()
        .map(|o| o["data"]["context"]["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps[..2], ["debit", "credit"]);
    assert_eq!(
        outcomes[0]["data"]["cause"]["event_id"],
        requested["event_id"]
    );
    let status = reactor(&router, "transfer-saga").await;
    assert_eq!(status["state"], "running");
    assert_eq!(status["stream"], "$reactor-transfer-saga");
    host.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_debit_fails_the_transfer_and_a_refused_credit_is_refunded() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(dir.path(), &transfer_config());
    open(&router, "acc-a", 1000).await;
    open(&router, "acc-b", 0).await;
    assert_eq!(
        command(&router, "transfer", "t-1", request("acc-a", "acc-b", 5000)).await,
        200
    );
    assert_eq!(settled(&router, "t-1").await, "failed");
    assert!(
        state(&router, "transfer", "t-1").await["reason"]
            .as_str()
            .unwrap()
            .contains("insufficient funds"),
    );

    let freeze = json!({"type": "Freeze", "reason": "closed for audit"});
    assert_eq!(command(&router, "bank-account", "acc-b", freeze).await, 200);
    assert_eq!(
        command(&router, "transfer", "t-2", request("acc-a", "acc-b", 400)).await,
        200
    );
    assert_eq!(settled(&router, "t-2").await, "refunded");
    assert_eq!(balance(&router, "acc-a").await, 1000, "the debit came back");
    assert_eq!(balance(&router, "acc-b").await, 0);
    let outcomes = events(&router, "$reactor-transfer-saga").await;
    let rejected: Vec<&str> = outcomes
        .iter()
        .filter(|o| o["event_type"] == "CommandRejected")
        .map(|o| o["data"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(rejected.len(), 2, "{outcomes:#?}");
    assert!(rejected[1].contains("frozen"), "{rejected:?}");
    host.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_reactor_starts_at_the_head_and_never_acts_on_history() {
    let dir = tempfile::tempdir().unwrap();
    let only_the_aggregate = format!(
        "[[aggregates]]\nname = \"transfer\"\nplugin = {:?}\n",
        eshost_tests::TRANSFER
    );
    let (host, router) = bank_host(dir.path(), &only_the_aggregate);
    open(&router, "acc-a", 1000).await;
    open(&router, "acc-b", 0).await;
    assert_eq!(
        command(&router, "transfer", "t-old", request("acc-a", "acc-b", 100)).await,
        200
    );
    drop(router);
    host.shutdown();

    let config = bank_config(dir.path(), &transfer_config());
    let host = restart(&config);
    let router = host.router();
    assert_eq!(
        command(&router, "transfer", "t-new", request("acc-a", "acc-b", 100)).await,
        200
    );
    assert_eq!(settled(&router, "t-new").await, "completed");
    assert_eq!(
        state(&router, "transfer", "t-old").await["status"],
        "requested"
    );
    assert_eq!(
        balance(&router, "acc-a").await,
        900,
        "only the new transfer moved money"
    );
    drop(router);
    tokio::task::block_in_place(|| host.shutdown());

    // A dry run from the beginning lists what the saga would do about the old request too,
    // and does none of it.
    let dry_run = || {
        eshost_tests::cli::eshost_offline(&[
            "replay",
            "--config",
            config.file.to_str().unwrap(),
            "--plugin",
            eshost_tests::TRANSFER_SAGA,
            "--json",
        ])
    };
    let output = tokio::task::block_in_place(dry_run);
    let report = eshost_tests::cli::json(&output);
    let debits: Vec<&str> = report["intents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["effect"]["send"]["command"]["type"] == "Withdraw")
        .map(|i| i["stream_id"].as_str().unwrap())
        .collect();
    assert_eq!(debits, ["t-old", "t-new"], "{report}");
    let host = tokio::task::block_in_place(|| restart(&config));
    let router = host.router();
    assert_eq!(
        state(&router, "transfer", "t-old").await["status"],
        "requested"
    );
    drop(router);
    tokio::task::block_in_place(|| host.shutdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactor_trapping_on_one_event_retries_then_stops_there_visibly() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(dir.path(), &relay_config(2, "stop"));
    open(&router, "acc-a", 0).await;
    append(
        &router,
        "pings-1",
        "Ping",
        json!({"account": "acc-a", "amount": 5}),
    )
    .await;
    let trap = append(
        &router,
        "pings-1",
        "Ping",
        json!({"account": "acc-a", "amount": 7, "trap": true}),
    )
    .await;
    append(
        &router,
        "pings-1",
        "Ping",
        json!({"account": "acc-a", "amount": 11}),
    )
    .await;
    let status = eventually("relay to stop", async || {
        let status = reactor(&router, "relay").await;
        (status["state"] == "failed").then_some(status)
    })
    .await;
    assert_eq!(status["failed_at"], trap, "{status}");
    assert!(
        status["last_error"].as_str().unwrap().contains("trap")
            || status["last_error"].as_str().unwrap().contains("panic"),
        "{status}"
    );
    assert_eq!(
        balance(&router, "acc-a").await,
        5,
        "nothing at or after the trap"
    );
    // Resuming tries the event again: it still traps, and the reactor stops there again.
    let (resumed, _) =
        crate::server_support::post(&router, "/reactors/relay/resume", json!({})).await;
    assert_eq!(resumed, 200);
    let again = eventually("relay to stop again", async || {
        let status = reactor(&router, "relay").await;
        (status["state"] == "failed" && status["failed_at"] == trap).then_some(status)
    })
    .await;
    assert!(again["checkpoint"].as_u64().unwrap() < trap, "{again}");
    assert_eq!(balance(&router, "acc-a").await, 5);
    host.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactor_configured_to_dead_letter_parks_the_trapping_event_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(dir.path(), &relay_config(2, "dead_letter"));
    open(&router, "acc-a", 0).await;
    append(
        &router,
        "pings-1",
        "Ping",
        json!({"account": "acc-a", "amount": 5}),
    )
    .await;
    append(
        &router,
        "pings-1",
        "Ping",
        json!({"account": "acc-a", "amount": 7, "trap": true}),
    )
    .await;
    append(
        &router,
        "pings-1",
        "Ping",
        json!({"account": "acc-a", "amount": 11}),
    )
    .await;
    eventually("the last ping's deposit", async || {
        (balance(&router, "acc-a").await == 16).then_some(())
    })
    .await;
    let status = reactor(&router, "relay").await;
    assert_eq!(status["state"], "running");
    assert_eq!(status["dead_letters"], 1);
    host.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_swapped_mid_flow_finishes_every_transfer_once() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(dir.path(), &transfer_config());
    let accounts = ["acc-0", "acc-1", "acc-2", "acc-3"];
    for account in accounts {
        open(&router, account, 1000).await;
    }
    let bytes = std::fs::read(eshost_tests::TRANSFER_SAGA).unwrap();
    for n in 0..30u64 {
        let (from, to) = (accounts[n as usize % 4], accounts[(n as usize + 1) % 4]);
        let id = format!("t-{n}");
        assert_eq!(
            command(&router, "transfer", &id, request(from, to, 10 + n)).await,
            200
        );
        if n == 15 {
            let upload = Request::builder()
                .method("PUT")
                .uri("/reactors/transfer-saga?from=checkpoint")
                .header("content-type", "application/wasm")
                .body(Body::from(bytes.clone()))
                .unwrap();
            let (status, body) = send(&router, upload).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["state"], "running");
        }
    }
    for n in 0..30 {
        assert_eq!(settled(&router, &format!("t-{n}")).await, "completed");
    }
    let mut total = 0;
    for account in accounts {
        total += balance(&router, account).await;
    }
    assert_eq!(total, 4000, "money is conserved");
    let withdrawals: usize = {
        let mut count = 0;
        for account in accounts {
            count += types(&events(&router, account).await)
                .iter()
                .filter(|t| **t == "FundsWithdrawn")
                .count();
        }
        count
    };
    assert_eq!(withdrawals, 30, "each transfer debited once");
    host.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fraud_watch_timer_recorded_before_a_restart_fires_once_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = bank_config(dir.path(), &fraud_watch_config());
    let host = restart(&config);
    let router = host.router();
    open(&router, "acc-f", 10_000).await;
    for _ in 0..6 {
        let withdraw = json!({"type": "Withdraw", "amount": 10});
        assert_eq!(
            command(&router, "bank-account", "acc-f", withdraw).await,
            200
        );
    }
    eventually("the watch to freeze acc-f", async || {
        (state(&router, "bank-account", "acc-f").await["frozen"] == true).then_some(())
    })
    .await;
    let pending = eventually("the cool-off timer", async || {
        let status = reactor(&router, "fraud-watch").await;
        (status["timers_pending"] == 1).then_some(status)
    })
    .await;
    assert_eq!(pending["timers_pending"], 1);
    drop(router);
    tokio::task::block_in_place(|| host.shutdown());

    let host = tokio::task::block_in_place(|| restart(&config));
    let router = host.router();
    eventually(
        "the timer to unfreeze acc-f after the restart",
        async || (state(&router, "bank-account", "acc-f").await["frozen"] == false).then_some(()),
    )
    .await;
    let recorded = events(&router, "$reactor-fraud-watch").await;
    let fired = types(&recorded)
        .iter()
        .filter(|t| **t == "TimerFired")
        .count();
    assert_eq!(fired, 1, "{recorded:#?}");
    host.shutdown();
}

/// `bytes` with a custom section appended: the same code under another content hash.
fn another_build(mut bytes: Vec<u8>) -> Vec<u8> {
    let name = b"eshost-test";
    bytes.extend_from_slice(&[0, (1 + name.len() + 2) as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(b"v2");
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_reactor_file_is_swapped_in_when_plugins_are_watched() {
    let dir = tempfile::tempdir().unwrap();
    let saga = dir.path().join("saga.wasm");
    std::fs::copy(eshost_tests::TRANSFER_SAGA, &saga).unwrap();
    let text = format!(
        "store = \"data\"\nwatch_plugins = true\n\
         [[aggregates]]\nname = \"bank-account\"\nplugin = {:?}\n\
         [[aggregates]]\nname = \"transfer\"\nplugin = {:?}\n\
         [[reactors]]\nname = \"transfer-saga\"\nplugin = \"saga.wasm\"\n",
        eshost_tests::BANK_ACCOUNT,
        eshost_tests::TRANSFER,
    );
    std::fs::write(dir.path().join("eshost.toml"), text).unwrap();
    let config = eshost_core::config::Config::load(&dir.path().join("eshost.toml")).unwrap();
    let host = tokio::task::block_in_place(|| restart(&config));
    let router = host.router();
    let before = reactor(&router, "transfer-saga").await["content_hash"].clone();

    std::fs::write(&saga, another_build(std::fs::read(&saga).unwrap())).unwrap();
    eventually("the watcher to swap the saga", async || {
        let now = reactor(&router, "transfer-saga").await["content_hash"].clone();
        (now != before).then_some(())
    })
    .await;
    open(&router, "acc-a", 100).await;
    open(&router, "acc-b", 0).await;
    assert_eq!(
        command(&router, "transfer", "t-1", request("acc-a", "acc-b", 60)).await,
        200
    );
    assert_eq!(settled(&router, "t-1").await, "completed");
    drop(router);
    tokio::task::block_in_place(|| host.shutdown());
}

/// A swap by upload is an activation in `$plugins` (with where it went on from): a restart
/// runs the uploaded version, not the config's file, and a rollback goes back to the file's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactor_swapped_by_upload_survives_a_restart_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = bank_config(dir.path(), &transfer_config());
    let host = tokio::task::block_in_place(|| restart(&config));
    let router = host.router();
    let configured = reactor(&router, "transfer-saga").await["content_hash"].clone();
    let upload = Request::builder()
        .method("PUT")
        .uri("/reactors/transfer-saga?from=head")
        .header("content-type", "application/wasm")
        .body(Body::from(another_build(
            std::fs::read(eshost_tests::TRANSFER_SAGA).unwrap(),
        )))
        .unwrap();
    let (status, body) = send(&router, upload).await;
    assert_eq!(status, 200, "{body}");
    let uploaded = body["content_hash"].clone();
    assert_ne!(uploaded, configured);
    let (status, history) =
        crate::server_support::get(&router, "/plugins/transfer-saga/history").await;
    assert_eq!(status, 200, "{history}");
    let last = history["activations"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["source"], "upload", "{history}");
    assert_eq!(last["start"], "head", "{history}");
    let (_, plugins) = crate::server_support::get(&router, "/plugins").await;
    let listed = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "transfer-saga");
    assert_eq!(
        listed.map(|p| p["kind"].clone()),
        Some(json!("reactor")),
        "{plugins}"
    );
    drop(router);
    tokio::task::block_in_place(|| host.shutdown());

    let host = tokio::task::block_in_place(|| restart(&config));
    let router = host.router();
    assert_eq!(
        reactor(&router, "transfer-saga").await["content_hash"],
        uploaded
    );
    open(&router, "acc-a", 100).await;
    open(&router, "acc-b", 0).await;
    assert_eq!(
        command(&router, "transfer", "t-1", request("acc-a", "acc-b", 60)).await,
        200
    );
    assert_eq!(settled(&router, "t-1").await, "completed");

    let rollback = Request::builder()
        .method("POST")
        .uri("/plugins/transfer-saga/rollback")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"content_hash": configured, "reason": "back"}).to_string(),
        ))
        .unwrap();
    let (status, body) = send(&router, rollback).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        reactor(&router, "transfer-saga").await["content_hash"],
        configured
    );
    assert_eq!(
        command(&router, "transfer", "t-2", request("acc-a", "acc-b", 30)).await,
        200
    );
    assert_eq!(settled(&router, "t-2").await, "completed");
    assert_eq!(balance(&router, "acc-b").await, 90);
    drop(router);
    tokio::task::block_in_place(|| host.shutdown());
}
