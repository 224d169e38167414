//! The Python transfer saga (`examples/python/transfer_saga`, contract 0.2): it passes the
//! same fixture as the Rust one (`plugin_fixture.rs`), and in a live host it carries out every
//! ending of a transfer, and takes over from the Rust saga mid-flow without doing anything
//! twice.

use axum::body::Body;
use axum::http::Request;
use serde_json::json;

use crate::polyglot_support::component;
use crate::reactor_support::{balance, command, events, open, settled, state, types};
use crate::server_support::{bank_host, send};
use eshost_tests::{TRANSFER, TRANSFER_SAGA};

fn request(from: &str, to: &str, amount: u64) -> serde_json::Value {
    json!({"type": "Request", "from": from, "to": to, "amount": amount})
}

/// The transfer aggregate and the saga in `plugin`, with an interpreter's limits.
fn saga_config(plugin: &std::path::Path) -> String {
    format!(
        "[[aggregates]]\nname = \"transfer\"\nplugin = {TRANSFER:?}\n\
         [[reactors]]\nname = \"transfer-saga\"\nplugin = {plugin:?}\n\
         limits = {{ memory_mb = 256, time_ms = 5000 }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_saga_completes_fails_and_refunds_transfers_in_a_live_host() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(dir.path(), &saga_config(&component("transfer-saga-py")));
    open(&router, "acc-a", 1000).await;
    open(&router, "acc-b", 0).await;
    let send_transfer = async |id: &str, amount: u64| {
        let status = command(&router, "transfer", id, request("acc-a", "acc-b", amount)).await;
        assert_eq!(status, 200);
    };
    send_transfer("t-1", 300).await;
    assert_eq!(settled(&router, "t-1").await, "completed");
    send_transfer("t-2", 5000).await;
    assert_eq!(settled(&router, "t-2").await, "failed");
    let reason = state(&router, "transfer", "t-2").await["reason"].clone();
    assert!(
        reason.as_str().unwrap().contains("insufficient funds"),
        "{reason}"
    );
    let freeze = json!({"type": "Freeze", "reason": "closed for audit"});
    assert_eq!(command(&router, "bank-account", "acc-b", freeze).await, 200);
    send_transfer("t-3", 200).await;
    assert_eq!(settled(&router, "t-3").await, "refunded");
    assert_eq!(balance(&router, "acc-a").await, 700);
    assert_eq!(balance(&router, "acc-b").await, 300);
    host.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_saga_takes_over_from_the_rust_one_mid_flow_and_does_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(
        dir.path(),
        &saga_config(std::path::Path::new(TRANSFER_SAGA)),
    );
    let accounts = ["acc-0", "acc-1", "acc-2"];
    for account in accounts {
        open(&router, account, 1000).await;
    }
    let python = std::fs::read(component("transfer-saga-py")).unwrap();
    for n in 0..20u64 {
        let (from, to) = (accounts[n as usize % 3], accounts[(n as usize + 1) % 3]);
        let id = format!("t-{n}");
        assert_eq!(
            command(&router, "transfer", &id, request(from, to, 10 + n)).await,
            200
        );
        if n == 10 {
            let upload = Request::builder()
                .method("PUT")
                .uri("/reactors/transfer-saga?from=checkpoint")
                .header("content-type", "application/wasm")
                .body(Body::from(python.clone()))
                .unwrap();
            let (status, body) = send(&router, upload).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["state"], "running");
        }
    }
    for n in 0..20 {
        assert_eq!(settled(&router, &format!("t-{n}")).await, "completed");
    }
    let mut total = 0;
    let mut withdrawals = 0;
    for account in accounts {
        total += balance(&router, account).await;
        withdrawals += types(&events(&router, account).await)
            .iter()
            .filter(|t| **t == "FundsWithdrawn")
            .count();
    }
    assert_eq!(total, 3000, "money is conserved");
    assert_eq!(withdrawals, 20, "each transfer debited once");
    host.shutdown();
}
