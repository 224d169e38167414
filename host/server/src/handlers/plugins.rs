//! The loaded plugins, and hot swaps by upload.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use eshost_api::{self as api, ErrorCode};
use eshost_runtime::PluginKind;

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
    let label = format!("upload for {name:?}");
    if inner
        .host
        .aggregates()
        .types()
        .iter()
        .any(|t| t.name == name)
    {
        // Under the limits the config gives this aggregate, like the version it replaces.
        let runtime = inner.host.runtime_for(&name);
        let loaded = tokio::task::spawn_blocking(move || {
            runtime.load_bytes(&bytes, &label, PluginKind::Aggregate)
        })
        .await
        .map_err(joined)?
        .map_err(|e| ApiError::new(ErrorCode::BadPlugin, e.to_string()))?;
        let eshost_runtime::LoadedPlugin::Aggregate(plugin) = loaded else {
            return Err(ApiError::internal("the runtime loaded another kind"));
        };
        if plugin.info().name != name {
            return Err(ApiError::new(
                ErrorCode::BadPlugin,
                format!(
                    "the upload describes itself as {:?}, not {name:?}",
                    plugin.info().name
                ),
            ));
        }
        let new = plugin.info().clone();
        let old = inner
            .host
            .aggregates()
            .swap(plugin, None)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        inner.metrics.swaps.fetch_add(1, Ordering::Relaxed);
        tracing::info!(aggregate = %name, old = %old.content_hash, new = %new.content_hash, "swapped by upload");
        let outcome = if old.content_hash == new.content_hash {
            api::SwapOutcome::Unchanged
        } else {
            api::SwapOutcome::Swapped
        };
        return Ok((
            StatusCode::OK,
            Json(api::PluginSwapped {
                name,
                kind: api::PluginKind::Aggregate,
                outcome,
                previous_hash: Some(old.content_hash),
                content_hash: Some(new.content_hash),
                version: Some(new.version),
            }),
        ));
    }
    if inner.host.projections().status(&name).is_some() {
        let projections = inner.host.projections().clone();
        let target = name.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            projections.swap_bytes(
                &target,
                bytes.to_vec(),
                &label,
                eshost_core::projection::SwapMode::Rebuild,
            )
        })
        .await
        .map_err(joined)??;
        inner.metrics.swaps.fetch_add(1, Ordering::Relaxed);
        tracing::info!(projection = %name, ?outcome, "swapped by upload");
        return Ok((
            StatusCode::ACCEPTED,
            Json(api::PluginSwapped {
                name,
                kind: api::PluginKind::Projection,
                outcome: wire::swap_outcome(outcome),
                previous_hash: None,
                content_hash: None,
                version: None,
            }),
        ));
    }
    if inner
        .host
        .upcasters()
        .plugins()
        .iter()
        .any(|p| p.info().name == name)
    {
        return Err(ApiError::new(
            ErrorCode::NotSwappable,
            format!(
                "upcaster {name:?} cannot be swapped while the host runs; restart with the new file"
            ),
        ));
    }
    Err(ApiError::not_found(format!("no plugin named {name:?}")))
}
