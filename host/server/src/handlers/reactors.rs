//! Reactors: status, queries, pause, resume and swaps.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use eshost_api as api;
use eshost_core::reactor::{ReactorState, StartAt};
use serde_json::{Map, Value};

use super::joined;
use super::projections::query_args;
use crate::extract::{Params, PathParams, RawBody};
use crate::{ApiError, AppState, wire};

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
    match from {
        None | Some("checkpoint") => Ok(StartAt::Checkpoint),
        Some("head") => Ok(StartAt::Head),
        Some("beginning") => Ok(StartAt::Beginning),
        Some(other) => other.parse().map(StartAt::After).map_err(|_| {
            ApiError::bad_request(format!(
                "?from={other:?}: expected checkpoint, head, beginning or a position"
            ))
        }),
    }
}

/// A new version of a reactor, uploaded as a component. It is not recorded: a restart runs
/// the file the config names.
pub(crate) async fn swap_reactor(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
    Params(query): Params<api::ReactorSwapQuery>,
    RawBody(bytes): RawBody,
) -> Result<Json<api::ReactorStatus>, ApiError> {
    let from = start_at(query.from.as_deref())?;
    let host = state.inner.host.clone();
    let status = tokio::task::spawn_blocking(move || {
        let label = format!("{name} (upload)");
        let plugin = match host.runtime_for(&name).load_bytes(
            &bytes,
            &label,
            eshost_runtime::PluginKind::Reactor,
        ) {
            Ok(eshost_runtime::LoadedPlugin::Reactor(plugin)) => plugin,
            Ok(_) => unreachable!("load_bytes checks the kind"),
            Err(error) => {
                return Err(ApiError::new(api::ErrorCode::BadPlugin, error.to_string()));
            }
        };
        Ok(host.reactors().swap(&name, plugin, from)?)
    })
    .await
    .map_err(joined)??;
    Ok(Json(wire::reactor_status(status)))
}
