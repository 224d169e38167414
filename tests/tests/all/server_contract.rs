//! The wire contract: `GET /openapi.json` documents, for every route of the table, its
//! request body, its success answers and the error answer, all as schemas generated from
//! `eshost-api`; and real answers of every route validate against the schemas it gives.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use eshost_server::{Answer, Body as RouteBody, ROUTES, Route};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::server_support::schema::Validator;
use crate::server_support::{bank_host, call, caught_up, next_sse_event, send};

fn operation<'a>(document: &'a Value, route: &Route) -> &'a Value {
    &document["paths"][route.path][route.method.as_str().to_ascii_lowercase()]
}

fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => found.push(target),
                    _ => refs(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
        _ => {}
    }
}

#[test]
fn every_route_documents_its_body_its_answers_and_the_error() {
    let document = eshost_server::openapi();
    let validator = Validator::new(&document);
    for route in ROUTES {
        let name = format!("{} {}", route.method, route.path);
        let operation = operation(&document, route);
        assert!(operation.is_object(), "{name} is not documented");
        let body = &operation["requestBody"]["content"];
        match route.body {
            RouteBody::Json(schema) | RouteBody::OptionalJson(schema) => {
                let reference = body["application/json"]["schema"]["$ref"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: no request schema"));
                assert_eq!(
                    reference,
                    format!("#/components/schemas/{}", schema.name()),
                    "{name}"
                );
                validator.resolve(reference).unwrap();
            }
            RouteBody::Wasm => assert!(body["application/wasm"].is_object(), "{name}"),
            RouteBody::None => assert!(operation.get("requestBody").is_none(), "{name}"),
        }
        assert!(!route.statuses.is_empty(), "{name}");
        for status in route.statuses {
            let content = &operation["responses"][status.to_string()]["content"];
            let schema = match route.answer {
                Answer::Json(_) | Answer::Document => &content["application/json"]["schema"],
                Answer::EventStream(_) => &content["text/event-stream"]["x-eshost-item-schema"],
                Answer::Text => &content["text/plain"]["schema"],
            };
            assert!(schema.is_object(), "{name}: no schema for {status}");
            if let Some(reference) = schema["$ref"].as_str() {
                validator.resolve(reference).unwrap();
            }
        }
        assert_eq!(
            operation["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "{name}"
        );
        let mut parameters: Vec<&str> = operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        parameters.sort_unstable();
        match route.query {
            Some(_) => assert!(!parameters.is_empty(), "{name}: no query parameters"),
            None => assert!(parameters.is_empty(), "{name}: {parameters:?}"),
        }
    }
    let mut found = Vec::new();
    refs(&document, &mut found);
    assert!(found.len() > ROUTES.len(), "{found:?}");
    for reference in found {
        validator.resolve(reference).unwrap();
    }
    // Spot checks of what the schemas say.
    let schemas = &document["components"]["schemas"];
    let codes = &schemas["ErrorCode"]["enum"];
    for code in eshost_api::ErrorCode::ALL {
        assert!(
            codes.as_array().unwrap().contains(&json!(code.as_str())),
            "{code:?} not in {codes}"
        );
    }
    let expected = &schemas["ExpectedVersion"];
    for value in [
        json!("any"),
        json!("no_stream"),
        json!("stream_exists"),
        json!(3),
    ] {
        validator.check(expected, &value).unwrap();
    }
    for value in [
        json!("3"),
        json!("no-stream"),
        json!(-1),
        json!({"exact": 3}),
    ] {
        assert!(validator.check(expected, &value).is_err(), "{value}");
    }
}

#[test]
fn the_check_refuses_what_does_not_follow_a_schema() {
    let document = eshost_server::openapi();
    let validator = Validator::new(&document);
    let health = json!({"$ref": "#/components/schemas/Health"});
    validator
        .check(
            &health,
            &json!({"status": "ok", "head": 3, "uptime_seconds": 1}),
        )
        .unwrap();
    for wrong in [
        json!({"status": "ok", "uptime_seconds": 1}),
        json!({"status": "ok", "head": "3", "uptime_seconds": 1}),
        json!({"status": "ok", "head": 3, "uptime_seconds": 1, "extra": true}),
        json!([]),
    ] {
        assert!(validator.check(&health, &wrong).is_err(), "{wrong}");
    }
    let error = json!({"$ref": "#/components/schemas/ErrorBody"});
    validator
        .check(
            &error,
            &json!({"error": "conflict", "message": "m", "actual_version": 2}),
        )
        .unwrap();
    assert!(
        validator
            .check(&error, &json!({"error": "oops", "message": "m"}))
            .is_err()
    );
}

/// What the document says an answer of `route` with `status` is.
fn answer_schema(document: &Value, route: &Route, status: StatusCode) -> Value {
    let responses = &operation(document, route)["responses"];
    let response = if status.is_success() {
        assert!(
            route.statuses.contains(&status.as_u16()),
            "{} {} answered {status}",
            route.method,
            route.path
        );
        &responses[status.as_str()]
    } else {
        &responses["default"]
    };
    response["content"]["application/json"]["schema"].clone()
}

fn route(method: &Method, path: &str) -> &'static Route {
    ROUTES
        .iter()
        .find(|r| r.method == method && r.path == path)
        .unwrap_or_else(|| panic!("{method} {path} is not in the table"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_of_every_route_follow_their_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(dir.path(), &crate::reactor_support::transfer_config());
    let saga = std::fs::read(eshost_tests::TRANSFER_SAGA).unwrap();
    let document = eshost_server::openapi();
    let validator = Validator::new(&document);
    let account = "/aggregates/bank-account/account-1";
    let statement = std::fs::read(eshost_tests::STATEMENT).unwrap();
    let bank = std::fs::read(eshost_tests::BANK_ACCOUNT).unwrap();
    let bank_hash = blake3::hash(&bank).to_hex().to_string();
    let deposit_eur = std::fs::read(eshost_tests::DEPOSIT_EUR).unwrap();
    let command = |body: Value| Some(Body::from(body.to_string()));
    // An old deposit of 13 that the `deposit-eur` candidate refuses: its check fails.
    let old_deposit = json!({"expected": "any", "events": [
        {"type": "FundsDeposited", "data": {"amount": 13}, "schema_version": 1}
    ]});
    // (template, method, uri, body, the status it must answer)
    let calls: Vec<(&str, Method, String, Option<Body>, u16)> = vec![
        (
            "/aggregates/{type}/{id}",
            Method::POST,
            account.into(),
            command(json!({"type": "Open", "owner": "Ann"})),
            200,
        ),
        (
            "/aggregates/{type}/{id}",
            Method::POST,
            account.into(),
            command(json!({"type": "Deposit", "amount": 100})),
            200,
        ),
        (
            "/aggregates/{type}/{id}",
            Method::POST,
            account.into(),
            command(json!({"type": "Withdraw", "amount": 1000})),
            422,
        ),
        (
            "/aggregates/{type}/{id}",
            Method::POST,
            format!("{account}?expected_version=1"),
            command(json!({"type": "Deposit", "amount": 1})),
            409,
        ),
        (
            "/aggregates/{type}/{id}",
            Method::POST,
            account.into(),
            command(json!({"type": "Teleport"})),
            400,
        ),
        (
            "/aggregates/{type}/{id}",
            Method::GET,
            account.into(),
            None,
            200,
        ),
        (
            "/aggregates/{type}/{id}",
            Method::GET,
            format!("{account}?version=1"),
            None,
            200,
        ),
        (
            "/aggregates/{type}/{id}/history",
            Method::GET,
            format!("{account}/history"),
            None,
            200,
        ),
        (
            "/aggregates/{type}/{id}/snapshot",
            Method::POST,
            format!("{account}/snapshot"),
            None,
            201,
        ),
        (
            "/projections/{name}/skip",
            Method::POST,
            "/projections/balances/skip".into(),
            command(json!({"position": 1, "reason": "not stopped"})),
            409,
        ),
        (
            "/aggregates/{type}/{id}/snapshot",
            Method::POST,
            "/aggregates/bank-account/account-404/snapshot".into(),
            None,
            404,
        ),
        (
            "/aggregates/{type}/{id}",
            Method::GET,
            format!("{account}?at=2026-11-28T10:00:00Z"),
            None,
            200,
        ),
        (
            "/all",
            Method::GET,
            "/all?from_time=1970-01-01&until_time=yesterday".into(),
            None,
            400,
        ),
        (
            "/streams/{id}",
            Method::POST,
            "/streams/customer-9".into(),
            command(json!({
                "expected": "no_stream",
                "events": [{"type": "Registered", "data": {"n": 1}, "metadata": {"k": "v"},
                            "subject_id": "customer-9", "personal_data": {"email": "a@b.invalid"}}]
            })),
            201,
        ),
        (
            "/streams/{id}",
            Method::POST,
            "/streams/customer-9".into(),
            command(json!({"expected": 0, "events": [{"type": "Again"}]})),
            409,
        ),
        (
            "/streams/{id}",
            Method::GET,
            "/streams/customer-9".into(),
            None,
            200,
        ),
        (
            "/streams/{id}",
            Method::GET,
            "/streams/nobody".into(),
            None,
            404,
        ),
        (
            "/all",
            Method::GET,
            "/all?from=1&limit=10".into(),
            None,
            200,
        ),
        (
            "/subjects/{id}/forget",
            Method::POST,
            "/subjects/customer-9/forget".into(),
            command(json!({"reason": "ticket 1"})),
            200,
        ),
        (
            "/subjects/{id}/forget",
            Method::POST,
            "/subjects/customer-8/forget".into(),
            None,
            200,
        ),
        (
            "/streams/{id}",
            Method::GET,
            "/streams/customer-9".into(),
            None,
            200,
        ),
        (
            "/projections",
            Method::GET,
            "/projections".into(),
            None,
            200,
        ),
        (
            "/projections/{name}",
            Method::GET,
            "/projections/balances".into(),
            None,
            200,
        ),
        (
            "/projections/{name}",
            Method::GET,
            "/projections/nope".into(),
            None,
            404,
        ),
        (
            "/projections/{name}/query/{query}",
            Method::GET,
            "/projections/balances/query/balance?account=account-1".into(),
            None,
            200,
        ),
        (
            "/projections/{name}/query/{query}",
            Method::GET,
            "/projections/balances/query/nope".into(),
            None,
            404,
        ),
        (
            "/projections/{name}/pause",
            Method::POST,
            "/projections/balances/pause".into(),
            None,
            202,
        ),
        (
            "/projections/{name}/resume",
            Method::POST,
            "/projections/balances/resume".into(),
            None,
            202,
        ),
        (
            "/projections/{name}/rebuild",
            Method::POST,
            "/projections/statement/rebuild".into(),
            None,
            202,
        ),
        ("/reactors", Method::GET, "/reactors".into(), None, 200),
        (
            "/reactors/{name}",
            Method::GET,
            "/reactors/transfer-saga".into(),
            None,
            200,
        ),
        (
            "/reactors/{name}",
            Method::GET,
            "/reactors/nope".into(),
            None,
            404,
        ),
        (
            "/reactors/{name}/query/{query}",
            Method::GET,
            "/reactors/transfer-saga/query/nope".into(),
            None,
            404,
        ),
        (
            "/reactors/{name}/pause",
            Method::POST,
            "/reactors/transfer-saga/pause".into(),
            None,
            200,
        ),
        (
            "/reactors/{name}/resume",
            Method::POST,
            "/reactors/transfer-saga/resume".into(),
            None,
            200,
        ),
        (
            "/reactors/{name}",
            Method::PUT,
            "/reactors/transfer-saga?from=checkpoint".into(),
            Some(Body::from(saga.clone())),
            200,
        ),
        (
            "/reactors/{name}",
            Method::PUT,
            "/reactors/transfer-saga?from=yesterday".into(),
            Some(Body::from(saga.clone())),
            400,
        ),
        ("/plugins", Method::GET, "/plugins".into(), None, 200),
        (
            "/plugins/{name}",
            Method::PUT,
            "/plugins/bank-account".into(),
            Some(Body::from(bank.clone())),
            200,
        ),
        (
            "/plugins/{name}",
            Method::PUT,
            "/plugins/statement".into(),
            Some(Body::from(statement.clone())),
            202,
        ),
        (
            "/plugins/{name}",
            Method::PUT,
            "/plugins/deposit-currency".into(),
            Some(Body::from("x")),
            400,
        ),
        (
            "/plugins/{name}",
            Method::PUT,
            "/plugins/bank-account?require_check=true".into(),
            Some(Body::from(bank.clone())),
            200,
        ),
        (
            "/plugins/{name}/check",
            Method::POST,
            "/plugins/bank-account/check".into(),
            Some(Body::from(bank.clone())),
            200,
        ),
        (
            "/plugins/{name}/check",
            Method::POST,
            "/plugins/statement/check".into(),
            Some(Body::from(statement.clone())),
            200,
        ),
        (
            "/streams/{id}",
            Method::POST,
            "/streams/old-deposits".into(),
            command(old_deposit),
            201,
        ),
        (
            "/plugins/{name}/check",
            Method::POST,
            "/plugins/deposit-currency/check".into(),
            Some(Body::from(deposit_eur.clone())),
            200,
        ),
        (
            "/plugins/{name}",
            Method::PUT,
            "/plugins/deposit-currency?require_check=true".into(),
            Some(Body::from(deposit_eur)),
            422,
        ),
        (
            "/plugins/{name}/check",
            Method::POST,
            "/plugins/nope/check".into(),
            Some(Body::from("x")),
            404,
        ),
        (
            "/plugins/{name}/history",
            Method::GET,
            "/plugins/bank-account/history".into(),
            None,
            200,
        ),
        (
            "/plugins/{name}/history",
            Method::GET,
            "/plugins/nope/history".into(),
            None,
            404,
        ),
        (
            "/plugins/{name}/rollback",
            Method::POST,
            "/plugins/bank-account/rollback".into(),
            command(json!({"content_hash": bank_hash, "reason": "contract"})),
            200,
        ),
        (
            "/plugins/{name}/rollback",
            Method::POST,
            "/plugins/bank-account/rollback".into(),
            command(json!({"content_hash": "0".repeat(64)})),
            404,
        ),
        ("/nodes", Method::GET, "/nodes".into(), None, 200),
        ("/health", Method::GET, "/health".into(), None, 200),
        (
            "/openapi.json",
            Method::GET,
            "/openapi.json".into(),
            None,
            200,
        ),
    ];
    let mut covered = std::collections::BTreeSet::new();
    for (template, method, uri, body, expected) in calls {
        if template.starts_with("/projections/{name}/query") {
            caught_up(&host, "balances");
        }
        let (status, answer) = call(&router, method.clone(), &uri, None, body).await;
        assert_eq!(status.as_u16(), expected, "{method} {uri}: {answer}");
        let route = route(&method, template);
        let schema = answer_schema(&document, route, status);
        validator
            .check(&schema, &answer)
            .unwrap_or_else(|e| panic!("{method} {uri} ({status}): {e}\n{answer}"));
        covered.insert((method.to_string(), template));
    }

    // The metrics are text; the subscription's events each follow the event schema.
    let (status, text) = call(&router, Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.as_str().unwrap().contains("eshost_commands_total"));
    covered.insert(("GET".into(), "/metrics"));
    let subscribe = route(&Method::GET, "/subscribe");
    let item = &operation(&document, subscribe)["responses"]["200"]["content"]["text/event-stream"]
        ["x-eshost-item-schema"];
    let request = Request::get("/subscribe?from=1")
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let mut buffer = String::new();
    for expected in 1..=4 {
        let (id, event) = next_sse_event(&mut body, &mut buffer).await;
        assert_eq!(id, expected);
        validator
            .check(item, &event)
            .unwrap_or_else(|e| panic!("event {id}: {e}\n{event}"));
    }
    let (_, refused) = send(
        &router,
        Request::get("/subscribe?from=x")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    validator
        .check(
            &answer_schema(&document, subscribe, StatusCode::BAD_REQUEST),
            &refused,
        )
        .unwrap();
    covered.insert(("GET".into(), "/subscribe"));

    let table: std::collections::BTreeSet<(String, &str)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path))
        .collect();
    assert_eq!(covered, table, "every route's answers are checked");
}
