//! Hardening of the HTTP edge: every refusal is the JSON error of the contract (even those
//! axum would answer in plain text), a resumed subscription cannot wrap to the start of the
//! log, a raw append cannot forge the host's own metadata, and an event the store refuses
//! is the emitting plugin's fault, not the caller's.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use eshost_api::{ErrorBody, ErrorCode};
use eshost_server::ROUTES;
use serde_json::{Value, json};

use crate::server_support::{bank_host, call, get, post, send};

/// The answer is the contract's error, with the status its code fixes.
fn assert_error(status: StatusCode, body: &Value, what: &str) -> ErrorBody {
    let error: ErrorBody = serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("{what}: {status} is not a JSON error ({e}): {body}"));
    assert_eq!(error.error.status(), status.as_u16(), "{what}: {body}");
    assert!(!error.message.is_empty(), "{what}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_of_every_route_is_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), "");
    for route in ROUTES {
        let with_params = |value: &str| {
            route
                .path
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        value
                    } else {
                        segment
                    }
                })
                .collect::<Vec<_>>()
                .join("/")
        };
        let concrete = with_params("x-1");
        let mut attempts: Vec<(String, Option<&str>)> = vec![
            (format!("{concrete}?nonsense=%FF&from=x"), None),
            (
                format!("{concrete}?from=-1&limit=x&version=x&expected_version=x"),
                None,
            ),
        ];
        if route.path.contains('{') {
            attempts.push((with_params("%FF%FE"), None));
        }
        if route.method != Method::GET {
            attempts.push((concrete.clone(), Some("{\"truncated\":")));
        }
        for (uri, body) in attempts {
            let what = format!("{} {uri}", route.method);
            let (status, answer) = call(
                &router,
                route.method.clone(),
                &uri,
                None,
                body.map(|b| Body::from(b.to_owned())),
            )
            .await;
            if status.is_success() {
                // The query route takes any parameter, `/health` and the listings none.
                continue;
            }
            assert_error(status, &answer, &what);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_axum_answers_in_plain_text_is_a_json_error_here() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), "");
    // An invalid UTF-8 path parameter.
    let (status, body) = get(&router, "/streams/%FF").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error = assert_error(status, &body, "invalid UTF-8");
    assert_eq!(error.error, ErrorCode::BadRequest);
    assert!(error.message.contains("path parameter"), "{body}");
    // A body over the limit on the forget route (which reads an optional body).
    let big = json!({"reason": "x".repeat(100_000)}).to_string();
    let (status, body) = call(
        &router,
        Method::POST,
        "/subjects/customer-1/forget",
        None,
        Some(Body::from(big)),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(
        assert_error(status, &body, "forget 413").error,
        ErrorCode::TooLarge
    );
    // Malformed JSON, unknown fields, a missing content type.
    let (status, body) = post(&router, "/subjects/customer-1/forget", json!({"why": 1})).await;
    let error = assert_error(status, &body, "unknown forget field");
    assert!(
        error.message.contains("does not fit") && error.message.contains("why"),
        "{body}"
    );
    let request = Request::post("/streams/clock-1")
        .body(Body::from("{\"events\": [{\"type\": \"Ticked\"}]}"))
        .unwrap();
    let (status, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::CREATED, "no content type: {body}");
    let (status, body) = post(
        &router,
        "/streams/clock-1",
        json!({"expected": "no-stream", "events": [{"type": "Ticked"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(status, &body, "an expected version spelled otherwise");
    let (status, body) = post(
        &router,
        "/aggregates/bank-account/account-1?expected_version=stream_exists",
        json!({"type": "Open", "owner": "Ann"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("stream_exists"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_takes_the_one_expected_version_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), "");
    let open = json!({"type": "Open", "owner": "Ann"});
    let deposit = json!({"type": "Deposit", "amount": 5});
    let uri = "/aggregates/bank-account/account-1";
    let (status, body) = post(&router, &format!("{uri}?expected_version=no_stream"), open).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post(
        &router,
        &format!("{uri}?expected_version=no_stream"),
        deposit.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["actual_version"], 1);
    let (status, body) = post(
        &router,
        &format!("{uri}?expected_version=1"),
        deposit.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post(&router, &format!("{uri}?expected_version=any"), deposit).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stream_version"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_event_id_at_the_largest_position_is_refused_not_wrapped_to_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), "");
    post(
        &router,
        "/streams/clock-1",
        json!({"events": [{"type": "Ticked"}]}),
    )
    .await;
    let request = Request::get("/subscribe")
        .header("last-event-id", u64::MAX.to_string())
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let error = assert_error(status, &body, "Last-Event-ID u64::MAX");
    assert!(error.message.contains("Last-Event-ID"), "{body}");
}

const TOKENS: &str = "[[tokens]]\ntoken = \"ingest-token\"\nrole = \"write\"\nname = \"ingest\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_append_records_its_appender_and_cannot_forge_host_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), TOKENS);
    let forged = json!({
        "user": "admin", "plugin_hash": "00", "command_id": "c", "aggregate_type": "bank-account",
        "plugin_version": "9", "correlation_id": "corr-1", "note": "kept"
    });
    let body = json!({"events": [{"type": "Ticked", "metadata": forged}, {"type": "Tocked"}]});
    let (status, answer) = call(
        &router,
        Method::POST,
        "/streams/clock-1",
        Some("ingest-token"),
        Some(Body::from(body.to_string())),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, read) = call(
        &router,
        Method::GET,
        "/streams/clock-1",
        Some("ingest-token"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(
        read["events"][0]["metadata"],
        json!({"user": "ingest", "correlation_id": "corr-1", "note": "kept"})
    );
    assert_eq!(read["events"][1]["metadata"], json!({"user": "ingest"}));

    // Without tokens (open, loopback only) nobody is named, and nobody can be forged.
    let open = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(open.path(), "");
    let body = json!({"events": [{"type": "Ticked", "metadata": {"user": "admin", "k": 1}}]});
    let (status, answer) = post(&router, "/streams/clock-1", body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (_, read) = get(&router, "/streams/clock-1").await;
    assert_eq!(read["events"][0]["metadata"], json!({"k": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_store_refuses_is_the_plugins_fault_named_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[[aggregates]]\nname = \"hostile\"\nplugin = {:?}\n",
        eshost_tests::HOSTILE
    );
    let (_host, router) = bank_host(dir.path(), &extra);
    // The hostile guest emits one 8 MiB event: within its output limit, over the store's.
    let (status, body) = post(
        &router,
        "/aggregates/hostile/victim",
        json!({"type": "huge"}),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("plugin \"hostile\" broke the plugin contract in handle")
            && message.contains("the store refuses"),
        "{message}"
    );
    let (_, metrics) = get(&router, "/metrics").await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.lines().any(|l| l == "eshost_plugin_faults_total 1"),
        "{metrics}"
    );
    // Nothing was stored, and the aggregate goes on.
    let (status, body) = post(&router, "/aggregates/hostile/victim", json!({"type": "ok"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stream_version"], 1, "{body}");

    // A bad aggregate id is still the caller's error.
    let (status, body) = post(
        &router,
        "/aggregates/hostile/%24system",
        json!({"type": "ok"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
