//! The loaded plugins, and hot swaps by upload.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use eshost_api::{self as api, ErrorCode};
use eshost_core::host::{PluginSwap, SwapError};

use super::joined;
use crate::extract::{PathParams, RawBody};
use crate::{ApiError, AppState, wire};

pub(crate) async fn plugins(State(state): State<AppState>) -> Json<api::PluginList> {
    let inner = &state.inner;
    let mut plugins: Vec<api::Plugin> = Vec::new();
    for info in inner.host.aggregates().types() {
        plugins.push(wire::plugin(&info));
    }
    for plugin in inner.host.upcasters().plugins() {
        plugins.push(wire::plugin(plugin.info()));
    }
    for status in inner.host.projections().statuses() {
        plugins.push(wire::projection_plugin(status));
    }
    Json(api::PluginList { plugins })
}

pub(crate) async fn swap_plugin(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
    RawBody(bytes): RawBody,
) -> Result<(StatusCode, Json<api::PluginSwapped>), ApiError> {
    let inner = &state.inner;
    let host = inner.host.clone();
    let target = name.clone();
    let swapped = tokio::task::spawn_blocking(move || host.swap_plugin(&target, bytes.to_vec()))
        .await
        .map_err(joined)?
        .map_err(|error| match error {
            SwapError::Unknown(_) => ApiError::not_found(error.to_string()),
            SwapError::BadPlugin(_) => ApiError::new(ErrorCode::BadPlugin, error.to_string()),
            SwapError::NotSwappable(_) => ApiError::new(ErrorCode::NotSwappable, error.to_string()),
            SwapError::Projection(error) => error.into(),
            SwapError::Failed(message) => ApiError::internal(message),
        })?;
    inner.metrics.swaps.fetch_add(1, Ordering::Relaxed);
    match swapped {
        PluginSwap::Aggregate { old, new } => {
            tracing::info!(aggregate = %name, old = %old.content_hash, new = %new.content_hash, "swapped by upload");
            let outcome = if old.content_hash == new.content_hash {
                api::SwapOutcome::Unchanged
            } else {
                api::SwapOutcome::Swapped
            };
            Ok((
                StatusCode::OK,
                Json(api::PluginSwapped {
                    name,
                    kind: api::PluginKind::Aggregate,
                    outcome,
                    previous_hash: Some(old.content_hash),
                    content_hash: Some(new.content_hash),
                    version: Some(new.version),
                }),
            ))
        }
        PluginSwap::Projection(outcome) => {
            tracing::info!(projection = %name, ?outcome, "swapped by upload");
            Ok((
                StatusCode::ACCEPTED,
                Json(api::PluginSwapped {
                    name,
                    kind: api::PluginKind::Projection,
                    outcome: wire::swap_outcome(outcome),
                    previous_hash: None,
                    content_hash: None,
                    version: None,
                }),
            ))
        }
    }
}
