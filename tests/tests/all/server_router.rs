//! The HTTP API in-process (no socket): every route, its success and its error answers.

use std::time::Duration;

use crate::server_support::{WAIT, bank_host, call, caught_up, get, post};
use axum::body::Body;
use axum::http::{Method, StatusCode};
use eshost_core::projection::ProjectionState;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn open_and_fund(router: &axum::Router, id: &str, deposit: u64) {
    let (status, body) = post(
        router,
        &format!("/aggregates/bank-account/{id}"),
        json!({"type": "Open", "owner": "Ann"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post(
        router,
        &format!("/aggregates/bank-account/{id}"),
        json!({"type": "Deposit", "amount": deposit}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_accepted_rejected_refused_and_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), "");
    let (status, body) = post(
        &router,
        "/aggregates/bank-account/account-1",
        json!({"type": "Open", "owner": "Ann"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stream_version"], 1);
    assert_eq!(body["events"][0]["event_type"], "AccountOpened");
    let (status, body) = post(
        &router,
        "/aggregates/bank-account/account-1",
        json!({"type": "Deposit", "amount": 100}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stream_version"], 2);

    // A business rule: 422 with the plugin's message.
    let (status, body) = post(
        &router,
        "/aggregates/bank-account/account-1",
        json!({"type": "Withdraw", "amount": 500}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "rejected");
    assert!(
        body["message"].as_str().unwrap().contains("insufficient"),
        "{body}"
    );

    // Not a command the plugin knows: 400.
    let (status, body) = post(
        &router,
        "/aggregates/bank-account/account-1",
        json!({"type": "Teleport"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_command");

    // Malformed JSON: 400.
    let (status, body) = call(
        &router,
        Method::POST,
        "/aggregates/bank-account/account-1",
        None,
        Some(Body::from("{\"type\":")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("malformed JSON"),
        "{body}"
    );

    // Unknown aggregate type: 404.
    let (status, body) = post(&router, "/aggregates/nope/x-1", json!({"type": "Open"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "not_found");

    // A stale expected version: 409 with the actual version.
    let (status, body) = post(
        &router,
        "/aggregates/bank-account/account-1?expected_version=1",
        json!({"type": "Deposit", "amount": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["actual_version"], 2);

    // Too large a body: 413.
    let big = json!({"type": "Open", "owner": "x".repeat(100_000)});
    let (status, body) = post(&router, "/aggregates/bank-account/account-9", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"], "too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_as_of_a_version_or_time_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), "");
    open_and_fund(&router, "account-1", 500).await;
    let (_, body) = get(&router, "/aggregates/bank-account/account-1").await;
    let before = body["recorded_at"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    post(
        &router,
        "/aggregates/bank-account/account-1",
        json!({"type": "Withdraw", "amount": 200}),
    )
    .await;

    let (status, body) = get(&router, "/aggregates/bank-account/account-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 3);
    assert_eq!(body["state"]["balance"], 300, "{body}");
    let (_, body) = get(&router, "/aggregates/bank-account/account-1?version=2").await;
    assert_eq!(body["state"]["balance"], 500, "{body}");
    let (_, body) = get(
        &router,
        &format!("/aggregates/bank-account/account-1?at={before}"),
    )
    .await;
    assert_eq!(body["version"], 2, "{body}");

    let (status, body) = get(&router, "/aggregates/bank-account/account-1/history").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let history = body["history"].as_array().unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[2]["event"]["event_type"], "FundsWithdrawn");
    assert_eq!(history[2]["state"]["balance"], 300);

    for uri in [
        "/aggregates/bank-account/account-404",
        "/aggregates/bank-account/account-404/history",
        "/aggregates/nope/account-1",
        "/aggregates/nope/account-1/history",
    ] {
        let (status, body) = get(&router, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
    }
    let (status, body) = get(&router, "/aggregates/bank-account/account-1?version=abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = get(&router, "/aggregates/bank-account/account-1?version=1&at=5").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// The log's head once the host started: the config's plugin activations in `$plugins`.
async fn started_head(router: &axum::Router) -> u64 {
    let (status, body) = get(router, "/all?limit=1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["head"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_append_read_and_all() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), "");
    let start = started_head(&router).await;
    let events = json!({"expected": "no_stream", "events": [
        {"type": "Ticked", "data": {"n": 1}},
        {"type": "Tocked", "data": {"n": 2}, "metadata": {"user": "t"}},
    ]});
    let (status, body) = post(&router, "/streams/clock-1", events).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["stream_version"], 2);

    let (status, body) = post(
        &router,
        "/streams/clock-1",
        json!({"expected": 1, "events": [{"type": "Ticked"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["actual_version"], 2);
    let (status, body) = post(
        &router,
        "/streams/clock%01bad",
        json!({"events": [{"type": "Ticked"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = post(&router, "/streams/clock-1", json!({"events": "no"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = post(
        &router,
        "/streams/clock-1",
        json!({"expected": "sometimes", "events": []}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, body) = get(&router, "/streams/clock-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 2);
    assert_eq!(body["events"][1]["data"]["n"], 2);
    let (_, body) = get(&router, "/streams/clock-1?backward=true&limit=1").await;
    assert_eq!(body["events"][0]["event_type"], "Tocked");
    let (status, body) = get(&router, "/streams/clock-404").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = get(&router, "/streams/clock-1?limit=-1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    post(
        &router,
        "/streams/clock-2",
        json!({"events": [{"type": "Ticked"}]}),
    )
    .await;
    let (status, body) = get(&router, &format!("/all?from={}", start + 2)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["head"], start + 3);
    assert_eq!(body["events"].as_array().unwrap().len(), 2);
    let (_, body) = get(&router, "/all?types=Ticked").await;
    assert_eq!(body["events"].as_array().unwrap().len(), 2);
    let (status, _) = get(&router, "/all?from=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_status_query_and_control() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(dir.path(), "");
    open_and_fund(&router, "account-1", 700).await;
    caught_up(&host, "balances");

    let (status, body) = get(&router, "/projections").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["projections"].as_array().unwrap().len(), 2);
    let (status, body) = get(&router, "/projections/balances").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "running");
    let (status, body) = get(
        &router,
        "/projections/balances/query/balance?account=account-1",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["balance"], 700, "{body}");
    // A parameter is a string argument, even when it looks like a number.
    open_and_fund(&router, "123", 5).await;
    caught_up(&host, "balances");
    let (status, body) = get(&router, "/projections/balances/query/balance?account=123").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["balance"], 5, "{body}");
    let args = "%7B%22account%22%3A%22account-1%22%7D";
    let (_, body) = get(
        &router,
        &format!("/projections/balances/query/balance?args={args}"),
    )
    .await;
    assert_eq!(body["balance"], 700, "{body}");

    let (status, _) = get(&router, "/projections/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&router, "/projections/nope/query/total").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = get(&router, "/projections/balances/query/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = get(&router, "/projections/balances/query/balance").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    for action in ["pause", "resume", "rebuild"] {
        let (status, body) = post(
            &router,
            &format!("/projections/balances/{action}"),
            json!(null),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{action}: {body}");
        // The answer shows the state after the runner acted, not the one before.
        match action {
            "pause" => assert_eq!(body["status"]["state"], "paused", "{body}"),
            "resume" => assert_ne!(body["status"]["state"], "paused", "{body}"),
            _ => {}
        }
        let (status, body) =
            post(&router, &format!("/projections/nope/{action}"), json!(null)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{action}: {body}");
    }
    caught_up(&host, "balances");
    let (_, body) = get(
        &router,
        "/projections/balances/query/balance?account=account-1",
    )
    .await;
    assert_eq!(body["balance"], 700, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_skips_the_event_a_projection_stopped_at_and_the_log_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(dir.path(), "");
    open_and_fund(&router, "account-1", 700).await;
    let (status, body) = post(
        &router,
        "/streams/account-junk",
        json!({"events": [{"type": "FundsDeposited", "data": {"amount": "junk"}, "schema_version": 2}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let junk = body["first_position"].as_u64().unwrap();
    let stopped = tokio::task::block_in_place(|| {
        host.projections()
            .wait_for("balances", WAIT, |s| s.state == ProjectionState::Failed)
            .unwrap()
    });
    assert_eq!(stopped.state, ProjectionState::Failed, "{stopped:?}");

    let skip = |position: u64| json!({"position": position, "reason": "junk from a test"});
    let (status, body) = post(&router, "/projections/balances/skip", skip(junk + 1)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = post(&router, "/projections/balances/skip", skip(junk)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["position"], junk);
    caught_up(&host, "balances");
    let (_, body) = get(
        &router,
        "/projections/balances/query/balance?account=account-1",
    )
    .await;
    assert_eq!(body["balance"], 700, "{body}");

    // The skip is in the log: what, why, and on which node.
    let (status, body) = get(&router, "/streams/%24projections").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let record = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "ProjectionEventSkipped")
        .unwrap_or_else(|| panic!("no skip recorded: {body}"));
    assert_eq!(record["data"]["name"], "balances");
    assert_eq!(record["data"]["position"], junk);
    assert_eq!(record["data"]["reason"], "junk from a test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_list_and_swap_by_upload() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(dir.path(), "");
    let (status, body) = get(&router, "/plugins").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> = body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["bank-account", "deposit-currency", "balances", "statement"]
    );

    let put = |name: &str, bytes: Vec<u8>| {
        let uri = format!("/plugins/{name}");
        let router = router.clone();
        async move { call(&router, Method::PUT, &uri, None, Some(Body::from(bytes))).await }
    };
    let statement = std::fs::read(eshost_tests::STATEMENT).unwrap();
    let (status, body) = put("statement", statement.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["outcome"], "unchanged");
    // New bytes (a custom section appended): a new identity, rebuilt beside the old.
    let (status, body) = put("statement", with_custom_section(statement)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(body["outcome"]["rebuilding"].is_object(), "{body}");
    caught_up(&host, "statement");

    let (status, body) = put(
        "bank-account",
        std::fs::read(eshost_tests::BANK_ACCOUNT).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "unchanged");
    let (status, body) = put(
        "bank-account",
        std::fs::read(eshost_tests::BALANCES).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = put("balances", b"not wasm".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Upcasters swap like the others: junk is a bad plugin, not a refusal to swap.
    let (status, body) = put("deposit-currency", b"x".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "bad_plugin");
    let (status, body) = put("nope", b"x".to_vec()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

/// A component with one more custom section: the same code under another content hash.
pub fn with_custom_section(mut bytes: Vec<u8>) -> Vec<u8> {
    let name = b"eshost-test";
    let payload = b"v2";
    bytes.push(0);
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_openapi_and_unknown_routes() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[[aggregates]]\nname = \"hostile\"\nplugin = {:?}\n",
        eshost_tests::HOSTILE
    );
    let (host, router) = bank_host(dir.path(), &extra);
    let start = started_head(&router).await;
    open_and_fund(&router, "account-1", 5).await;
    post(
        &router,
        "/aggregates/bank-account/account-1",
        json!({"type": "Withdraw", "amount": 50}),
    )
    .await;
    let (status, body) = get(&router, "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, body) = get(&router, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    let head = format!("eshost_store_head_position {}", start + 2);
    for line in [
        "eshost_commands_total{result=\"accepted\"} 2",
        "eshost_commands_total{result=\"rejected\"} 1",
        "eshost_command_seconds_count 3",
        &head,
        "eshost_projection_lag{projection=\"balances\"}",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    more_metrics_after_traffic(&host, &router, start).await;
    let (status, body) = get(&router, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["openapi"], "3.1.0");
    let (status, body) = get(&router, "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    let (status, body) = call(&router, Method::DELETE, "/health", None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
}

/// The value of the sample `series` (name and labels, as exposed) in `/metrics` text.
fn sample(text: &str, series: &str) -> f64 {
    let prefix = format!("{series} ");
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()));
    let value = line.unwrap_or_else(|| panic!("{series} not in\n{text}"));
    value
        .parse()
        .unwrap_or_else(|_| panic!("{series} is not a number: {value}"))
}

/// After `health_metrics_openapi_and_unknown_routes`' two accepted commands and one rejected:
/// an HTTP append, a snapshot on demand, a trapping plugin call, and the projection caught up
/// show in the series of the library-backed exposition.
async fn more_metrics_after_traffic(
    host: &eshost_server::Server,
    router: &axum::Router,
    start: u64,
) {
    let body = json!({"events": [{"type": "Ticked"}]});
    let (status, answer) = post(router, "/streams/clock-1", body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let uri = "/aggregates/bank-account/account-1/snapshot";
    let (status, answer) = call(router, Method::POST, uri, None, None).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let panic = json!({"type": "panic"});
    let (status, answer) = post(router, "/aggregates/hostile/victim", panic).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
    caught_up(host, "balances");
    let (status, body) = get(router, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    let bank_handle = "eshost_plugin_call_seconds_count{plugin=\"bank-account\",call=\"handle\"}";
    assert!(sample(text, bank_handle) >= 3.0, "{text}");
    let bank_handle_sum = "eshost_plugin_call_seconds_sum{plugin=\"bank-account\",call=\"handle\"}";
    assert!(sample(text, bank_handle_sum) > 0.0, "{text}");
    let balances = "eshost_plugin_call_seconds_count{plugin=\"balances\",call=\"handle\"}";
    assert!(sample(text, balances) >= 1.0, "{text}");
    assert_eq!(
        sample(text, "eshost_plugin_traps_total{plugin=\"hostile\"}"),
        1.0
    );
    assert!(
        !text.contains("eshost_plugin_traps_total{plugin=\"bank-account\"}"),
        "{text}"
    );
    assert_eq!(sample(text, "eshost_plugin_faults_total"), 1.0);
    assert_eq!(sample(text, "eshost_commands_total{result=\"error\"}"), 1.0);
    // account-1 was built from the store once (not cached) before its first command.
    let replays = "eshost_aggregate_replay_seconds_count{aggregate=\"bank-account\"}";
    assert!(sample(text, replays) >= 1.0, "{text}");
    let snapshots = "eshost_snapshot_seconds_count{aggregate=\"bank-account\"}";
    assert_eq!(sample(text, snapshots), 1.0);
    assert_eq!(sample(text, "eshost_append_seconds_count"), 1.0);
    assert_eq!(sample(text, "eshost_appended_events_total"), 1.0);
    // Versions 1 and 2 of account-1 (the commands), version 1 of clock-1 (the append).
    assert_eq!(sample(text, "eshost_append_stream_version_count"), 3.0);
    assert_eq!(sample(text, "eshost_append_stream_version_sum"), 4.0);
    assert_eq!(
        sample(text, "eshost_append_stream_version_bucket{le=\"1\"}"),
        2.0
    );
    let head = (start + 3) as f64;
    assert_eq!(sample(text, "eshost_store_events_total"), head);
    assert_eq!(sample(text, "eshost_store_head_position"), head);
    let events_file = sample(text, "eshost_store_events_file_bytes");
    assert!(events_file > 0.0, "{text}");
    assert!(
        sample(text, "eshost_store_size_bytes") >= events_file,
        "{text}"
    );
    assert_eq!(
        sample(
            text,
            "eshost_projection_errors_total{projection=\"balances\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(text, "eshost_projection_lag{projection=\"balances\"}"),
        0.0
    );
}

async fn next_sse_event(
    body: &mut (impl futures_util::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
    buffer: &mut String,
) -> (u64, Value) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_streams_live_events_filters_and_resumes_from_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), "");
    let start = started_head(&router).await;
    post(
        &router,
        "/streams/clock-1",
        json!({"events": [{"type": "Ticked"}, {"type": "Tocked"}]}),
    )
    .await;
    post(
        &router,
        "/streams/other-1",
        json!({"events": [{"type": "Ticked"}]}),
    )
    .await;

    let request = axum::http::Request::get("/subscribe?stream_prefix=clock-")
        .header("last-event-id", (start + 1).to_string())
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let mut buffer = String::new();
    let (id, event) = next_sse_event(&mut body, &mut buffer).await;
    assert_eq!(
        (id, event["event_type"].as_str()),
        (start + 2, Some("Tocked"))
    );
    // Live: an event appended after the subscription started arrives; other streams do not.
    post(
        &router,
        "/streams/other-1",
        json!({"events": [{"type": "Ticked"}]}),
    )
    .await;
    post(
        &router,
        "/streams/clock-1",
        json!({"events": [{"type": "Ticked", "data": {"live": true}}]}),
    )
    .await;
    let (id, event) = next_sse_event(&mut body, &mut buffer).await;
    assert_eq!(id, start + 5);
    assert_eq!(event["data"]["live"], true);

    let request = axum::http::Request::get(format!("/subscribe?from={}&types=Ticked", start + 2))
        .body(Body::empty())
        .unwrap();
    let mut body = router
        .clone()
        .oneshot(request)
        .await
        .unwrap()
        .into_body()
        .into_data_stream();
    let mut buffer = String::new();
    assert_eq!(next_sse_event(&mut body, &mut buffer).await.0, start + 3);

    let request = axum::http::Request::get("/subscribe")
        .header("last-event-id", "x")
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_another_aggregate_type_wrote_answers_409_naming_that_type() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[[aggregates]]\nname = \"customer\"\nplugin = {:?}\n",
        eshost_tests::CUSTOMER
    );
    let (_host, router) = bank_host(dir.path(), &extra);
    let (status, body) = post(
        &router,
        "/aggregates/customer/shared-1",
        json!({"type": "Register", "name": "Ann Lee", "email": "ann@example.com"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post(
        &router,
        "/aggregates/bank-account/shared-1",
        json!({"type": "Open", "owner": "Ann"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "conflict", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("\"customer\""),
        "{body}"
    );
    let (status, body) = get(&router, "/aggregates/bank-account/shared-1").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_prefix_lets_two_aggregate_types_use_one_id() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[[aggregates]]\nname = \"customer\"\nplugin = {:?}\nstream_prefix = \"customer-\"\n",
        eshost_tests::CUSTOMER
    );
    let (_host, router) = bank_host(dir.path(), &extra);
    let (status, body) = post(
        &router,
        "/aggregates/customer/shared-1",
        json!({"type": "Register", "name": "Ann Lee", "email": "ann@example.com"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stream_id"], "customer-shared-1", "{body}");
    let (status, body) = post(
        &router,
        "/aggregates/bank-account/shared-1",
        json!({"type": "Open", "owner": "Ann"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stream_id"], "shared-1", "{body}");

    let (status, body) = get(&router, "/aggregates/customer/shared-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stream_id"], "customer-shared-1", "{body}");
    assert_eq!(body["version"], 1, "{body}");
    let (status, body) = get(&router, "/aggregates/customer/shared-1/history").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stream_id"], "customer-shared-1", "{body}");
    assert_eq!(body["history"].as_array().map(Vec::len), Some(1), "{body}");
    let (status, body) = get(&router, "/streams/customer-shared-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["events"][0]["event_type"], "CustomerRegistered",
        "{body}"
    );
    let (status, body) = get(&router, "/aggregates/customer/unknown-9/history").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
