//! Reactors: status, queries, pause, resume and swaps.

use std::time::Duration;

use axum::extract::State;
use axum::{Extension, Json};
use eshost_api as api;
use eshost_core::cluster::plugins::ActivationSource;
use eshost_core::reactor::{ReactorState, StartAt};
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

/// Waits (bounded) until the runner has acted on a control message, so the answer shows the
/// new state.
async fn settled(
    state: &AppState,
    name: &str,
    done: impl Fn(ReactorState) -> bool,
) -> Result<Json<api::ReactorStatus>, ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let status = state.inner.host.reactors().status(name)?;
        if done(status.state) || tokio::time::Instant::now() >= deadline {
            return Ok(Json(wire::reactor_status(status)));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(crate) async fn reactor_pause(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<Json<api::ReactorStatus>, ApiError> {
    state.inner.host.reactors().pause(&name)?;
    settled(&state, &name, |now| now == ReactorState::Paused).await
}

pub(crate) async fn reactor_resume(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<Json<api::ReactorStatus>, ApiError> {
    state.inner.host.reactors().resume(&name)?;
    settled(&state, &name, |now| now == ReactorState::Running).await
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
