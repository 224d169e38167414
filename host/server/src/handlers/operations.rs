//! Operations: liveness, the nodes sharing the store, Prometheus metrics, and the OpenAPI
//! document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use eshost_api as api;
use serde_json::Value;

use crate::metrics;
use crate::{ApiError, AppState};

/// 200 `ok`, or 503 `degraded` with the cause while the store cannot take writes.
pub(crate) async fn health(State(state): State<AppState>) -> (StatusCode, Json<api::Health>) {
    let inner = &state.inner;
    let cause = inner.host.store().degraded();
    let (status, word) = match cause {
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "degraded"),
        None => (StatusCode::OK, "ok"),
    };
    (
        status,
        Json(api::Health {
            status: word.to_owned(),
            head: inner.host.store().head(),
            uptime_seconds: inner.host.started().elapsed().as_secs(),
            cause,
        }),
    )
}

pub(crate) async fn nodes(State(state): State<AppState>) -> Result<Json<api::NodeList>, ApiError> {
    let node = state.inner.host.node().clone();
    let nodes = tokio::task::spawn_blocking(move || node.registry())
        .await
        .map_err(super::joined)?
        .map_err(ApiError::internal)?;
    Ok(Json(api::NodeList {
        nodes: nodes
            .into_iter()
            .map(|node| api::Node {
                id: node.id,
                address: node.address,
                live: node.live,
                age_ms: node.age_ms,
                erasures_purged: node.erasures_purged,
                this_node: node.this_node,
            })
            .collect(),
    }))
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let inner = state.inner.clone();
    // Sizing the store's files touches the disk.
    let text = tokio::task::spawn_blocking(move || inner.metrics.render())
        .await
        .map_err(super::joined)?
        .map_err(|error| ApiError::internal(format!("rendering the metrics: {error}")))?;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

pub(crate) async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}
