//! Projections: status, queries, pause, resume and rebuild.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use eshost_api as api;
use eshost_core::projection::ProjectionState;
use serde_json::{Map, Value};

use super::joined;
use crate::extract::{JsonBody, Params, PathParams};
use crate::{ApiError, AppState, Caller, wire};

pub(crate) async fn projections(State(state): State<AppState>) -> Json<api::ProjectionList> {
    Json(api::ProjectionList {
        projections: state
            .inner
            .host
            .projections()
            .statuses()
            .into_iter()
            .map(wire::projection_status)
            .collect(),
    })
}

pub(crate) async fn projection(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<Json<api::ProjectionStatus>, ApiError> {
    let status = state
        .inner
        .host
        .projections()
        .status(&name)
        .ok_or_else(|| ApiError::not_found(format!("no projection named {name:?}")))?;
    Ok(Json(wire::projection_status(status)))
}

/// A query's arguments as JSON text: `?args=JSON`, or each parameter as a string argument
/// (`?book=123` is `{"book": "123"}`: an id that looks like a number stays an id; typed
/// arguments go in `?args=`), or `null` with none.
pub(super) fn query_args(params: Map<String, Value>) -> Result<String, ApiError> {
    match params.get("args") {
        Some(Value::String(args)) => {
            serde_json::from_str::<Value>(args)
                .map_err(|e| ApiError::bad_request(format!("?args= is not JSON: {e}")))?;
            Ok(args.clone())
        }
        _ if params.is_empty() => Ok("null".to_owned()),
        _ => Ok(Value::Object(params).to_string()),
    }
}

pub(crate) async fn projection_query(
    State(state): State<AppState>,
    PathParams((name, query)): PathParams<(String, String)>,
    Params(params): Params<Map<String, Value>>,
) -> Result<Json<api::QueryAnswer>, ApiError> {
    let args = query_args(params)?;
    let projections = state.inner.host.projections().clone();
    let answer = tokio::task::spawn_blocking(move || projections.query(&name, &query, &args))
        .await
        .map_err(joined)??;
    Ok(Json(api::QueryAnswer(wire::json(&answer))))
}

/// Wait (briefly, bounded) until the runner has acted on a control message, so that the
/// status in the answer is the new one rather than the one before it.
async fn settle(state: &AppState, name: &str, done: impl Fn(ProjectionState) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        match state.inner.host.projections().status(name) {
            Some(status) if !done(status.state) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ => return,
        }
    }
}

fn projection_status(state: &AppState, name: &str) -> Option<api::ProjectionStatus> {
    state
        .inner
        .host
        .projections()
        .status(name)
        .map(wire::projection_status)
}

pub(crate) async fn projection_pause(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<(StatusCode, Json<api::ProjectionPaused>), ApiError> {
    state.inner.host.projections().pause(&name)?;
    settle(&state, &name, |now| now != ProjectionState::Running).await;
    let status = projection_status(&state, &name);
    Ok((
        StatusCode::ACCEPTED,
        Json(api::ProjectionPaused {
            paused: name,
            status,
        }),
    ))
}

pub(crate) async fn projection_resume(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<(StatusCode, Json<api::ProjectionResumed>), ApiError> {
    state.inner.host.projections().resume(&name)?;
    settle(&state, &name, |now| now != ProjectionState::Paused).await;
    let status = projection_status(&state, &name);
    Ok((
        StatusCode::ACCEPTED,
        Json(api::ProjectionResumed {
            resumed: name,
            status,
        }),
    ))
}

/// An operator's skip of the event a stopped projection failed on, recorded with who and why.
pub(crate) async fn projection_skip(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
    caller: Option<Extension<Caller>>,
    JsonBody(body): JsonBody<api::SkipRequest>,
) -> Result<Json<api::ProjectionSkipped>, ApiError> {
    let control = state.inner.host.projection_control().clone();
    let target = name.clone();
    let user = caller.map(|c| c.0.name);
    tokio::task::spawn_blocking(move || control.skip(&target, body.position, &body.reason, user))
        .await
        .map_err(joined)??;
    let status = projection_status(&state, &name);
    Ok(Json(api::ProjectionSkipped {
        skipped: name,
        position: body.position,
        status,
    }))
}

/// Rebuilds on every node: the request is recorded in `$projections`, which each node follows.
pub(crate) async fn projection_rebuild(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
    caller: Option<Extension<Caller>>,
) -> Result<(StatusCode, Json<api::ProjectionRebuilding>), ApiError> {
    let control = state.inner.host.projection_control().clone();
    let target = name.clone();
    let user = caller.map(|c| c.0.name);
    let generation = tokio::task::spawn_blocking(move || control.rebuild(&target, user))
        .await
        .map_err(joined)??;
    Ok((
        StatusCode::ACCEPTED,
        Json(api::ProjectionRebuilding {
            rebuilding: name,
            generation,
        }),
    ))
}
