//! Auth and the route table: with tokens configured every route but `/health` refuses a
//! missing, unknown or too-weak token; the OpenAPI document lists exactly the routes served.

use std::collections::BTreeSet;

use crate::server_support::{bank_host, call};
use axum::body::Body;
use axum::http::{Method, StatusCode};
use eshost_core::config::Role;
use eshost_server::{Access, ROUTES};

const TOKENS: &str = "[[tokens]]\ntoken = \"reader-token\"\nrole = \"read\"\n\
                      [[tokens]]\ntoken = \"writer-token\"\nrole = \"write\"\n\
                      [[tokens]]\ntoken = \"admin-token\"\nrole = \"admin\"\n";

fn concrete(path: &str) -> String {
    path.replace("{type}", "bank-account")
        .replace("{id}", "account-1")
        .replace("{name}", "balances")
        .replace("{query}", "total")
}

fn token_of(role: Role) -> &'static str {
    match role {
        Role::Read => "reader-token",
        Role::Write => "writer-token",
        Role::Admin => "admin-token",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_a_missing_or_wrong_role_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), TOKENS);
    for route in ROUTES {
        let uri = concrete(route.path);
        let send = |token: Option<&'static str>| {
            let (router, uri, method) = (router.clone(), uri.clone(), route.method.clone());
            async move { call(&router, method, &uri, token, Some(Body::from("{}"))).await }
        };
        match route.access {
            Access::Public => {
                let (status, _) = send(None).await;
                assert_eq!(status, StatusCode::OK, "{} {uri}", route.method);
            }
            Access::Role(role) => {
                let (status, body) = send(None).await;
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{} {uri}: {body}",
                    route.method
                );
                assert_eq!(body["error"], "unauthorized");
                let (status, _) = send(Some("wrong-token")).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{} {uri}", route.method);
                for weaker in [Role::Read, Role::Write].into_iter().filter(|r| *r < role) {
                    let (status, body) = send(Some(token_of(weaker))).await;
                    assert_eq!(
                        status,
                        StatusCode::FORBIDDEN,
                        "{} {uri} as {weaker:?}: {body}",
                        route.method
                    );
                    assert_eq!(body["error"], "forbidden");
                }
                if route.path == "/subscribe" {
                    continue; // an endless stream: its status was checked by the refusals
                }
                let (status, body) = send(Some(token_of(role))).await;
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{} {uri} as {role:?}: {status} {body}",
                    route.method
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), "");
    let (status, document) = call(&router, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, methods)| {
            methods
                .as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, table);
    // Every documented route is served (no route-level 404/405), and nothing else is.
    for (method, path) in &table {
        if path == "/subscribe" {
            continue;
        }
        let method: Method = method.parse().unwrap();
        let (status, body) = call(
            &router,
            method.clone(),
            &concrete(path),
            None,
            Some(Body::from("{}")),
        )
        .await;
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {body}"
        );
        assert_ne!(body["message"], "no such route", "{method} {path}");
    }
    for (method, path) in [
        (Method::GET, "/"),
        (Method::DELETE, "/streams/x"),
        (Method::GET, "/plugins/x/y"),
        (Method::PUT, "/projections/balances"),
    ] {
        let (status, _) = call(&router, method.clone(), path, None, None).await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_needs_what_the_get_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), TOKENS);
    let (status, _) = call(&router, Method::HEAD, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK, "HEAD /health is public like GET");
    let (status, _) = call(&router, Method::HEAD, "/projections", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for token in ["reader-token", "writer-token", "admin-token"] {
        let (status, _) = call(&router, Method::HEAD, "/projections", Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "HEAD /projections as {token}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), TOKENS);
    let with = |authorization: &'static str| {
        let router = router.clone();
        async move {
            let request = axum::http::Request::get("/projections")
                .header("authorization", authorization)
                .body(Body::empty())
                .unwrap();
            crate::server_support::send(&router, request).await.0
        }
    };
    for accepted in [
        "Bearer reader-token",
        "bearer reader-token",
        "BEARER reader-token",
        "Bearer   reader-token ",
    ] {
        assert_eq!(with(accepted).await, StatusCode::OK, "{accepted:?}");
    }
    for refused in [
        "Basic reader-token",
        "Bearerreader-token",
        "reader-token",
        "Bearer",
    ] {
        assert_eq!(with(refused).await, StatusCode::UNAUTHORIZED, "{refused:?}");
    }
}
