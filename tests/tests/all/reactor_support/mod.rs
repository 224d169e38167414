//! Support for the reactor tests: the bank with the `transfer` aggregate and its reactors, and
//! waits on what the host reports.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use axum::Router;
use serde_json::{Value, json};

use crate::server_support::{get, post};
use eshost_tests::{FRAUD_WATCH, RELAY, TRANSFER, TRANSFER_SAGA};

pub const WAIT: Duration = Duration::from_secs(30);

/// The config lines for the transfer aggregate and the saga.
pub fn transfer_config() -> String {
    format!(
        "[[aggregates]]\nname = \"transfer\"\nplugin = {TRANSFER:?}\n\
         [[reactors]]\nname = \"transfer-saga\"\nplugin = {TRANSFER_SAGA:?}\n"
    )
}

/// The config lines for the fraud watch.
pub fn fraud_watch_config() -> String {
    format!("[[reactors]]\nname = \"fraud-watch\"\nplugin = {FRAUD_WATCH:?}\n")
}

/// The config lines for the `relay` test reactor, failing after `attempts` with `on_failure`.
pub fn relay_config(attempts: u32, on_failure: &str) -> String {
    format!(
        "[[reactors]]\nname = \"relay\"\nplugin = {RELAY:?}\nattempts = {attempts}\n\
         on_failure = \"{on_failure}\"\n"
    )
}

/// Polls `probe` until it gives `Some`, for at most [`WAIT`].
pub async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `command` to `ty`/`id`; returns the HTTP status.
pub async fn command(router: &Router, ty: &str, id: &str, command: Value) -> u16 {
    post(router, &format!("/aggregates/{ty}/{id}"), command)
        .await
        .0
        .as_u16()
}

/// The state of `ty`/`id`.
pub async fn state(router: &Router, ty: &str, id: &str) -> Value {
    let (status, body) = get(router, &format!("/aggregates/{ty}/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body["state"].clone()
}

/// Opens `id` with `deposit` cents.
pub async fn open(router: &Router, id: &str, deposit: u64) {
    let mut opened = json!({"type": "Open", "owner": id});
    if deposit > 0 {
        opened["initial_deposit"] = json!(deposit);
    }
    assert_eq!(command(router, "bank-account", id, opened).await, 200);
}

/// The balance of account `id`.
pub async fn balance(router: &Router, id: &str) -> u64 {
    state(router, "bank-account", id).await["balance"]
        .as_u64()
        .unwrap()
}

/// Waits until transfer `id` is no longer `requested`; returns its status.
pub async fn settled(router: &Router, id: &str) -> String {
    eventually(&format!("transfer {id} to settle"), async || {
        let status = state(router, "transfer", id).await["status"]
            .as_str()
            .unwrap()
            .to_owned();
        (status != "requested").then_some(status)
    })
    .await
}

/// The events of stream `id` (every one, in order).
pub async fn events(router: &Router, id: &str) -> Vec<Value> {
    let (status, body) = get(router, &format!("/streams/{id}?limit=10000")).await;
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}

/// The types of `events`.
pub fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect()
}

/// The status of reactor `name`.
pub async fn reactor(router: &Router, name: &str) -> Value {
    let (status, body) = get(router, &format!("/reactors/{name}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Appends one raw event to `stream`.
pub async fn append(router: &Router, stream: &str, event_type: &str, data: Value) -> u64 {
    let (status, body) = post(
        router,
        &format!("/streams/{stream}"),
        json!({"events": [{"type": event_type, "data": data}]}),
    )
    .await;
    assert!(status.is_success(), "{status}: {body}");
    body["first_position"].as_u64().unwrap()
}
