//! The loaded plugins, hot swaps by upload and rollbacks (each an activation recorded in
//! `$plugins`, which every node follows), the history of activations, and checks of a
//! candidate against the stored history.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use eshost_api as api;
use eshost_core::cluster::plugins::{Activated, ActivationSource};

use super::joined;
use crate::extract::{JsonBody, Params, PathParams, RawBody};
use crate::{ApiError, AppState, Caller, wire};

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
    let reactors = inner.host.reactors();
    for name in reactors.names() {
        if let Some(plugin) = reactors.plugin(&name) {
            plugins.push(wire::plugin(plugin.info()));
        }
    }
    Json(api::PluginList { plugins })
}

pub(crate) async fn swap_plugin(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
    Params(query): Params<api::SwapQuery>,
    caller: Option<Extension<Caller>>,
    RawBody(bytes): RawBody,
) -> Result<(StatusCode, Json<api::PluginSwapped>), ApiError> {
    let plugin_log = state.inner.host.plugin_log().clone();
    let user = caller.map(|c| c.0.name);
    let target = name.clone();
    let (activated, check) = tokio::task::spawn_blocking(move || {
        let (bytes, source) = (bytes.to_vec(), ActivationSource::Upload);
        if query.require_check {
            plugin_log
                .activate_checked(&target, bytes, source, user, None)
                .map(|(activated, report)| (activated, Some(report)))
        } else {
            plugin_log
                .activate(&target, bytes, source, user, None)
                .map(|activated| (activated, None))
        }
    })
    .await
    .map_err(joined)??;
    state.inner.metrics.swaps.inc();
    tracing::info!(plugin = %name, hash = %activated.info.content_hash, position = activated.position, checked = check.is_some(), "activated by upload");
    let (status, Json(mut answer)) = swapped(name, activated);
    answer.check = check
        .as_ref()
        .map(|report| Box::new(wire::check_report(report)));
    Ok((status, Json(answer)))
}

/// `POST /plugins/{name}/check`: what the uploaded candidate would do to the stored history.
pub(crate) async fn check_plugin(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
    RawBody(bytes): RawBody,
) -> Result<Json<api::CheckReport>, ApiError> {
    let plugin_log = state.inner.host.plugin_log().clone();
    let report =
        tokio::task::spawn_blocking(move || eshost_core::check::check(&plugin_log, &name, &bytes))
            .await
            .map_err(joined)??;
    Ok(Json(wire::check_report(&report)))
}

pub(crate) async fn rollback_plugin(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
    caller: Option<Extension<Caller>>,
    JsonBody(body): JsonBody<api::RollbackRequest>,
) -> Result<(StatusCode, Json<api::PluginSwapped>), ApiError> {
    let plugin_log = state.inner.host.plugin_log().clone();
    let user = caller.map(|c| c.0.name);
    let target = name.clone();
    let activated = tokio::task::spawn_blocking(move || {
        plugin_log.rollback(&target, &body.content_hash, user, body.reason)
    })
    .await
    .map_err(joined)??;
    state.inner.metrics.swaps.inc();
    tracing::info!(plugin = %name, hash = %activated.info.content_hash, position = activated.position, "rolled back");
    Ok(swapped(name, activated))
}

pub(crate) async fn plugin_history(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<Json<api::PluginHistory>, ApiError> {
    let plugin_log = state.inner.host.plugin_log().clone();
    let target = name.clone();
    let recorded = tokio::task::spawn_blocking(move || plugin_log.history(&target))
        .await
        .map_err(joined)??;
    Ok(Json(api::PluginHistory {
        name,
        activations: recorded.into_iter().map(wire::activation).collect(),
    }))
}

/// 200 for an aggregate, an upcaster or a reactor (the next command, batch or read runs the new code),
/// 202 for a projection (it rebuilds).
fn swapped(name: String, activated: Activated) -> (StatusCode, Json<api::PluginSwapped>) {
    let unchanged = activated.previous_hash.as_deref() == Some(&activated.info.content_hash);
    let kind = wire::plugin_kind(activated.kind);
    let (status, outcome) = match activated.projection {
        Some(outcome) => (StatusCode::ACCEPTED, wire::swap_outcome(outcome)),
        None if unchanged => (StatusCode::OK, api::SwapOutcome::Unchanged),
        None => (StatusCode::OK, api::SwapOutcome::Swapped),
    };
    let upcaster = activated.upcaster;
    (
        status,
        Json(api::PluginSwapped {
            name,
            kind,
            outcome,
            previous_hash: activated.previous_hash,
            content_hash: Some(activated.info.content_hash),
            version: Some(activated.info.version),
            activation_position: Some(activated.position),
            snapshots_deleted: upcaster.as_ref().map(|u| u.snapshots_deleted as u64),
            projections_rebuilding: upcaster.map(|u| u.projections_rebuilding),
            check: None,
        }),
    )
}
