//! Support for the server tests: a bank host over the test-built plugins, and requests sent
//! to its router in-process.

#![allow(dead_code)]

pub mod schema;

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use eshost_core::config::Config;
use eshost_server::Server as Host;
use eshost_tests::{BALANCES, BANK_ACCOUNT, DEPOSIT_CURRENCY, STATEMENT};
use serde_json::Value;
use tower::ServiceExt;

pub const WAIT: Duration = Duration::from_secs(20);

/// The bank config over the test-built plugins, with `extra` TOML appended (tokens...).
pub fn bank_config(dir: &Path, extra: &str) -> Config {
    let text = format!(
        "store = \"data\"\nlisten = \"127.0.0.1:0\"\nwatch_plugins = false\nmax_body_bytes = 65536\n\
         [[aggregates]]\nname = \"bank-account\"\nplugin = {BANK_ACCOUNT:?}\nsnapshot_every = 5\n\
         [[upcasters]]\nname = \"deposit-currency\"\nplugin = {DEPOSIT_CURRENCY:?}\n\
         [[projections]]\nname = \"balances\"\nplugin = {BALANCES:?}\n\
         [[projections]]\nname = \"statement\"\nplugin = {STATEMENT:?}\n{extra}"
    );
    let file = dir.join("eshost.toml");
    std::fs::write(&file, text).unwrap();
    Config::load(&file).unwrap()
}

/// A started bank host and its router.
pub fn bank_host(dir: &Path, extra: &str) -> (Host, Router) {
    let host = Host::start(&bank_config(dir, extra)).unwrap();
    let router = host.router();
    (host, router)
}

/// Starts a host again on the files of one that was just shut down in this process: its
/// threads may hold the store's lock a moment longer, which is waited out (bounded).
pub fn restart(config: &Config) -> Host {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match Host::start(config) {
            Ok(host) => return host,
            Err(error)
                if std::time::Instant::now() < deadline
                    && error.chain().any(|cause| {
                        matches!(
                            cause.downcast_ref::<eshost_store::OpenError>(),
                            Some(eshost_store::OpenError::Locked { .. })
                        ) || cause.to_string().contains("locked by another process")
                    }) =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("restarting the host: {error:#}"),
        }
    }
}

/// Sends one request; returns the status and the body as JSON (a string if it is not JSON).
pub async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Body>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request = request.header("content-type", "application/json");
    let request = request.body(body.unwrap_or_else(Body::empty)).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// Sends `request` as it is; returns the status and the body as JSON (a string if it is not
/// JSON).
pub async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

pub async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
    call(router, Method::GET, uri, None, None).await
}

pub async fn post(router: &Router, uri: &str, body: Value) -> (StatusCode, Value) {
    call(
        router,
        Method::POST,
        uri,
        None,
        Some(Body::from(body.to_string())),
    )
    .await
}

/// Waits (blocking this worker) until `name` has caught up.
pub fn caught_up(host: &Host, name: &str) {
    tokio::task::block_in_place(|| host.projections().wait_caught_up(name, WAIT).unwrap());
}

/// The next server-sent event of `body` (waiting at most 10 s): its id and its data as JSON.
pub async fn next_sse_event(
    body: &mut (impl futures_util::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
    buffer: &mut String,
) -> (u64, Value) {
    use futures_util::StreamExt;
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let id = frame
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .map(|v| v.parse().unwrap());
            let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(id), Some(data)) = (id, data) {
                return (id, serde_json::from_str(data).unwrap());
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("an SSE event in time")
            .unwrap()
            .unwrap();
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}
