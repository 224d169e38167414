//! Reactors: status, queries, pause, resume and swaps.

use axum::extract::State;
use axum::{Extension, Json};
use eshost_api as api;
use eshost_core::cluster::plugins::ActivationSource;
use eshost_core::reactor::{ReactorError, ReactorStatus, Reactors, StartAt};
use serde_json::{Map, Value};

use super::joined;
use super::projections::query_args;
use crate::extract::{Params, PathParams, RawBody};
use crate::{ApiError, AppState, Caller, wire};

pub(crate) async fn reactors(State(state): State<AppState>) -> Json<api::ReactorList> {
    Json(api::ReactorList {
        reactors: state
            .inner
            .host
            .reactors()
            .statuses()
            .into_iter()
            .map(wire::reactor_status)
            .collect(),
    })
}

pub(crate) async fn reactor(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<Json<api::ReactorStatus>, ApiError> {
    let status = state.inner.host.reactors().status(&name)?;
    Ok(Json(wire::reactor_status(status)))
}

pub(crate) async fn reactor_query(
    State(state): State<AppState>,
    PathParams((name, query)): PathParams<(String, String)>,
    Params(params): Params<Map<String, Value>>,
) -> Result<Json<api::QueryAnswer>, ApiError> {
    let args = query_args(params)?;
    let reactors = state.inner.host.reactors().clone();
    let answer = tokio::task::spawn_blocking(move || reactors.query(&name, &query, &args))
        .await
        .map_err(joined)??;
    Ok(Json(api::QueryAnswer(wire::json(&answer))))
}

/// Pauses or resumes (`control`) the reactor `name`: answers once its runner acted on it.
async fn control(
    state: &AppState,
    name: String,
    control: fn(&Reactors, &str) -> Result<ReactorStatus, ReactorError>,
) -> Result<Json<api::ReactorStatus>, ApiError> {
    let host = state.inner.host.clone();
    let status = tokio::task::spawn_blocking(move || control(host.reactors(), &name))
        .await
        .map_err(joined)??;
    Ok(Json(wire::reactor_status(status)))
}

pub(crate) async fn reactor_pause(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<Json<api::ReactorStatus>, ApiError> {
    control(&state, name, Reactors::pause).await
}

pub(crate) async fn reactor_resume(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<Json<api::ReactorStatus>, ApiError> {
    control(&state, name, Reactors::resume).await
}

/// `?from=`: `checkpoint` (default), `head`, `beginning` or a position.
fn start_at(from: Option<&str>) -> Result<StartAt, ApiError> {
    from.map_or(Ok(StartAt::Checkpoint), str::parse)
        .map_err(|message: String| ApiError::bad_request(format!("?from={message}")))
}

/// A new version of a reactor, uploaded as a component: recorded in `$plugins` like any
/// activation, so every node runs it and a restart keeps it.
pub(crate) async fn swap_reactor(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
    Params(query): Params<api::ReactorSwapQuery>,
    caller: Option<Extension<Caller>>,
    RawBody(bytes): RawBody,
) -> Result<Json<api::ReactorStatus>, ApiError> {
    let from = start_at(query.from.as_deref())?;
    let host = state.inner.host.clone();
    let user = caller.map(|c| c.0.name);
    let status = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let plugin_log = host.plugin_log();
        let activated = plugin_log.activate_reactor(
            &name,
            bytes.to_vec(),
            from,
            ActivationSource::Upload,
            user,
        )?;
        tracing::info!(reactor = %name, hash = %activated.info.content_hash, position = activated.position, "activated by upload");
        Ok(host.reactors().status(&name)?)
    })
    .await
    .map_err(joined)??;
    state.inner.metrics.swaps.inc();
    Ok(Json(wire::reactor_status(status)))
}
