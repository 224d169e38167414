//! Commands to aggregates, and their state and history.

use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use eshost_api::{self as api, ErrorCode, ExpectedVersion};
use eshost_core::aggregate::{At, CommandError, CommandOptions, Decision, HistoryPage};
use eshost_store::Until;

use super::{discloses, header_string};
use crate::extract::{JsonBody, Params, PathParams};
use crate::metrics::{self, CommandResult};
use crate::{ApiError, AppState, Caller, wire};

/// The command pipeline's precondition for the contract's expected version.
fn command_expectation(expected: Option<ExpectedVersion>) -> Result<Option<u64>, ApiError> {
    match expected.unwrap_or_default() {
        ExpectedVersion::Any => Ok(None),
        ExpectedVersion::NoStream => Ok(Some(0)),
        ExpectedVersion::Exact(version) => Ok(Some(version)),
        ExpectedVersion::StreamExists => Err(ApiError::bad_request(
            "a command's expected_version is a version number, no_stream or any; \
             stream_exists is for appends",
        )),
    }
}

pub(crate) async fn command(
    State(state): State<AppState>,
    PathParams((aggregate_type, id)): PathParams<(String, String)>,
    Params(params): Params<api::CommandQuery>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    JsonBody(command): JsonBody<api::Command>,
) -> Result<Json<api::CommandAccepted>, ApiError> {
    let inner = &state.inner;
    let options = CommandOptions {
        expected_version: command_expectation(params.expected_version)?,
        idempotency_key: header_string(&headers, api::IDEMPOTENCY_KEY),
        correlation_id: header_string(&headers, api::CORRELATION_ID),
        causation_id: header_string(&headers, api::CAUSATION_ID),
        user: caller.map(|c| c.0.name),
        ..CommandOptions::default()
    };
    let started = Instant::now();
    let result = inner
        .host
        .aggregates()
        .execute(&aggregate_type, &id, &command.0.to_string(), options)
        .await;
    metrics::observe(&inner.metrics.command, started.elapsed());
    let reply = match result {
        Ok(reply) => reply,
        Err(error) => {
            inner.metrics.command_result(match &error {
                CommandError::Conflict { .. } => CommandResult::Conflict,
                _ => CommandResult::Error,
            });
            if matches!(error, CommandError::Plugin(_)) {
                inner.metrics.plugin_faults.inc();
            }
            return Err(error.into());
        }
    };
    match reply.decision {
        Decision::Accepted { events } => {
            inner.metrics.command_result(CommandResult::Accepted);
            let version = reply.stream_version as f64;
            inner.metrics.stream_version.observe(version);
            Ok(Json(api::CommandAccepted {
                command_id: reply.command_id,
                stream_id: reply.stream_id,
                stream_version: reply.stream_version,
                replayed: reply.replayed,
                events: events.iter().map(wire::emitted).collect(),
            }))
        }
        Decision::Rejected { reason } => {
            inner.metrics.command_result(CommandResult::Rejected);
            let mut error = ApiError::new(ErrorCode::Rejected, reason);
            error.0.stream_version = Some(reply.stream_version);
            error.0.command_id = Some(reply.command_id);
            Err(error)
        }
        Decision::Invalid { reason } => {
            inner.metrics.command_result(CommandResult::Invalid);
            Err(ApiError::new(ErrorCode::InvalidCommand, reason))
        }
    }
}

pub(crate) async fn state(
    State(state): State<AppState>,
    PathParams((aggregate_type, id)): PathParams<(String, String)>,
    Params(params): Params<api::StateQuery>,
) -> Result<Json<api::AggregateState>, ApiError> {
    let at = match (params.version, params.at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give ?version= or ?at=, not both"));
        }
        (Some(version), None) => At::Version(version),
        (None, Some(time)) => At::Time(time.millis()),
        (None, None) => At::Latest,
    };
    let inner = &state.inner;
    let built = inner
        .host
        .aggregates()
        .state(&aggregate_type, &id, at)
        .await?;
    if built.version == 0 && inner.host.store().stream_info(&id)?.is_none() {
        return Err(ApiError::not_found(format!(
            "aggregate {aggregate_type}/{id} has no events"
        )));
    }
    Ok(Json(wire::aggregate_state(built)))
}

/// An "as of" bound: a position wins over a time.
fn until(position: Option<u64>, time: Option<api::Timestamp>) -> Option<Until> {
    position
        .map(Until::Position)
        .or(time.map(|time| Until::Time(time.millis())))
}

/// Snapshots an aggregate's latest state now, whatever its interval.
pub(crate) async fn snapshot(
    State(state): State<AppState>,
    PathParams((aggregate_type, id)): PathParams<(String, String)>,
) -> Result<(StatusCode, Json<api::SnapshotTaken>), ApiError> {
    let aggregates = state.inner.host.aggregates();
    let stream_id = aggregates.stream_of(&aggregate_type, &id);
    let taken = aggregates.snapshot(&aggregate_type, &id).await?;
    let Some(snapshot) = taken else {
        return Err(ApiError::not_found(format!(
            "aggregate {aggregate_type}/{id} has no events"
        )));
    };
    Ok((
        StatusCode::CREATED,
        Json(api::SnapshotTaken {
            aggregate_type,
            stream_id,
            version: snapshot.version,
            position: snapshot.position,
            recorded_at: snapshot.recorded_at,
            plugin_hash: snapshot.plugin_hash,
            bytes: snapshot.state.len() as u64,
        }),
    ))
}

pub(crate) async fn history(
    State(state): State<AppState>,
    PathParams((aggregate_type, id)): PathParams<(String, String)>,
    Params(params): Params<api::HistoryQuery>,
    caller: Option<Extension<Caller>>,
) -> Result<Json<api::History>, ApiError> {
    let allowed = discloses(&caller);
    let inner = &state.inner;
    let stream_id = inner.host.aggregates().stream_of(&aggregate_type, &id);
    let history = inner
        .host
        .aggregates()
        .history(
            &aggregate_type,
            &id,
            until(params.until_position, params.until_time),
            HistoryPage {
                from_version: params.from.unwrap_or(1),
                limit: super::streams::limit(params.limit),
                max_bytes: inner.host.config().max_response_bytes,
            },
        )
        .await?;
    if history.is_empty() && inner.host.store().stream_info(&stream_id)?.is_none() {
        return Err(ApiError::not_found(format!(
            "aggregate {aggregate_type}/{id} has no events"
        )));
    }
    Ok(Json(api::History {
        history: history
            .iter()
            .map(|entry| wire::history_entry(entry, allowed))
            .collect(),
        aggregate_type,
        stream_id,
    }))
}
