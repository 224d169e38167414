//! Operations: liveness, the nodes sharing the store, Prometheus metrics, and the OpenAPI
//! document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use eshost_api as api;
use eshost_core::projection::ProjectionState;
use serde_json::Value;

use crate::metrics::{counter, gauge};
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

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let inner = &state.inner;
    let mut out = String::new();
    inner.metrics.render(&mut out);
    gauge(
        &mut out,
        "eshost_http_requests_in_flight",
        "HTTP requests being served (this one included).",
        inner.drain.in_flight(),
    );
    let stats = inner.host.aggregates().stats();
    counter(
        &mut out,
        "eshost_command_decisions_total",
        "Plugin handle calls (retries count again).",
        stats.decisions,
    );
    counter(
        &mut out,
        "eshost_command_cache_hits_total",
        "Decisions from a cached state.",
        stats.cache_hits,
    );
    counter(
        &mut out,
        "eshost_aggregate_rebuilds_total",
        "States built from the store.",
        stats.rebuilds,
    );
    counter(
        &mut out,
        "eshost_command_retries_total",
        "Commands retried after a conflict.",
        stats.retries,
    );
    counter(
        &mut out,
        "eshost_snapshots_total",
        "Snapshots taken by the interval rule.",
        stats.snapshots,
    );
    gauge(
        &mut out,
        "eshost_store_head_position",
        "The last committed position.",
        inner.host.store().head(),
    );
    for (file, name) in [
        (eshost_store::EVENTS_FILE, "eshost_store_events_file_bytes"),
        (
            eshost_core::views::VIEWS_FILE,
            "eshost_store_views_file_bytes",
        ),
    ] {
        let size = std::fs::metadata(inner.host.config().store.join(file)).map_or(0, |m| m.len());
        gauge(&mut out, name, &format!("Size of {file}."), size);
    }
    let statuses = inner.host.projections().statuses();
    for (metric, help) in [
        ("eshost_projection_position", "The projection's checkpoint."),
        (
            "eshost_projection_lag",
            "Events between the checkpoint and the head.",
        ),
        (
            "eshost_projection_failed",
            "1 when the projection stopped at a failing event.",
        ),
        (
            "eshost_projection_dead_letters",
            "Events parked in the dead-letter table.",
        ),
    ] {
        use std::fmt::Write as _;
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for status in &statuses {
            let value = match metric {
                "eshost_projection_position" => status.position,
                "eshost_projection_lag" => status.lag,
                "eshost_projection_failed" => u64::from(status.state == ProjectionState::Failed),
                _ => status.dead_letters,
            };
            let _ = writeln!(out, "{metric}{{projection=\"{}\"}} {value}", status.name);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

pub(crate) async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}
