//! Raw appends to streams, and reads of a stream and of `$all`.

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use eshost_api as api;
use std::ops::RangeInclusive;

use eshost_store::{
    AllRead, AppendRequest, Bounds, Direction, EventStore, ProposedEvent, ReadError, RecordedEvent,
    StreamRead, Until, read_page,
};
use serde_json::{Map, Value};

use super::{disclose, discloses, joined};
use crate::extract::{JsonBody, Params, PathParams};
use crate::metrics;
use crate::{ApiError, AppState, Caller, wire};

const DEFAULT_LIMIT: usize = 1_000;
const MAX_LIMIT: usize = 10_000;

/// A page's count: the asked one, else the default, at most [`MAX_LIMIT`].
pub(super) fn limit(asked: Option<u64>) -> usize {
    asked.map_or(DEFAULT_LIMIT, |n| {
        usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT)
    })
}

/// A raw append's metadata: the host's own keys are not the client's to set (they would
/// forge who appended or which plugin decided), so they are dropped, and `user` is the
/// appending token's name. Metadata that is not an object is left for the store to refuse.
fn appender_metadata(metadata: Option<Value>, appender: Option<&str>) -> String {
    let mut metadata = metadata.unwrap_or_else(|| Value::Object(Map::new()));
    if let Value::Object(map) = &mut metadata {
        for key in api::HOST_METADATA_KEYS {
            map.remove(key);
        }
        if let Some(appender) = appender {
            map.insert("user".into(), Value::from(appender));
        }
    }
    metadata.to_string()
}

pub(crate) async fn append(
    State(state): State<AppState>,
    PathParams(stream_id): PathParams<String>,
    caller: Option<Extension<Caller>>,
    JsonBody(body): JsonBody<api::AppendRequest>,
) -> Result<(StatusCode, Json<api::Appended>), ApiError> {
    let inner = &state.inner;
    let appender = caller.as_ref().map(|c| c.0.name.as_str());
    let count = body.events.len() as u64;
    let events = body
        .events
        .into_iter()
        .map(|e| {
            let data = e
                .data
                .unwrap_or_else(|| Value::Object(Map::new()))
                .to_string();
            let mut event = ProposedEvent::new(e.event_type, data)
                .with_metadata(appender_metadata(e.metadata, appender))
                .with_schema_version(e.schema_version.unwrap_or(1));
            if let Some(id) = e.id {
                event = event.with_id(id);
            }
            event.subject_id = e.subject_id;
            event.personal_data = e.personal_data.map(|value| value.to_string());
            event
        })
        .collect();
    let request = AppendRequest::new(stream_id, wire::expected_version(body.expected), events);
    let started = Instant::now();
    let result = inner.host.store().append(request).await;
    metrics::observe(&inner.metrics.append, started.elapsed());
    match result {
        Ok(appended) => {
            inner.metrics.appended_events.inc_by(count);
            let version = appended.stream_version as f64;
            inner.metrics.stream_version.observe(version);
            Ok((StatusCode::CREATED, Json(wire::appended(appended))))
        }
        Err(error) => {
            inner.metrics.append_errors.inc();
            Err(error.into())
        }
    }
}

pub(crate) async fn read_stream(
    State(state): State<AppState>,
    PathParams(stream_id): PathParams<String>,
    Params(params): Params<api::ReadStreamQuery>,
    caller: Option<Extension<Caller>>,
) -> Result<Json<api::StreamEvents>, ApiError> {
    let allowed = discloses(&caller);
    let store = state.inner.host.store().clone();
    let max_bytes = state.inner.host.config().max_response_bytes;
    let answer = tokio::task::spawn_blocking(move || -> Result<api::StreamEvents, ApiError> {
        let Some(info) = store.stream_info(&stream_id)? else {
            return Err(ApiError::not_found(format!(
                "stream {stream_id:?} does not exist"
            )));
        };
        let bounds = Bounds::from(&params);
        let mut events = match bounds.stream_versions(store.as_ref(), &stream_id, info.version)? {
            Some(versions) => {
                read_versions(store.as_ref(), &stream_id, versions, &params, max_bytes)?
            }
            None => Vec::new(),
        };
        disclose(store.as_ref(), &mut events, allowed);
        Ok(api::StreamEvents {
            stream_id,
            info: wire::stream_info(info),
            events: events.iter().map(api::Event::from).collect(),
        })
    })
    .await
    .map_err(joined)??;
    Ok(Json(answer))
}

pub(crate) async fn read_all(
    State(state): State<AppState>,
    Params(params): Params<api::AllQuery>,
    caller: Option<Extension<Caller>>,
) -> Result<Json<api::AllEvents>, ApiError> {
    let allowed = discloses(&caller);
    let store = state.inner.host.store().clone();
    let max_bytes = state.inner.host.config().max_response_bytes;
    let answer = tokio::task::spawn_blocking(move || -> Result<api::AllEvents, ApiError> {
        let head = store.head();
        let Some(positions) = Bounds::from(&params).all_positions(store.as_ref())? else {
            return Ok(api::AllEvents {
                head,
                events: Vec::new(),
            });
        };
        let mut read = AllRead {
            from_position: *positions.start(),
            direction: Direction::Forward,
            limit: 0,
            event_types: api::split_types(params.types.as_deref()),
            until: Some(Until::Position((*positions.end()).min(head))),
        };
        let mut events = read_page(limit(params.limit), max_bytes, |after, n| {
            if let Some(last) = after {
                read.from_position = last.position + 1;
            }
            read.limit = n;
            store.read_all(&read)
        })?;
        disclose(store.as_ref(), &mut events, allowed);
        Ok(api::AllEvents {
            head,
            events: events.iter().map(api::Event::from).collect(),
        })
    })
    .await
    .map_err(joined)??;
    Ok(Json(answer))
}

/// A page of the stream's `versions`, walked forward from the lowest or backward from the
/// highest.
fn read_versions(
    store: &dyn EventStore,
    stream_id: &str,
    versions: RangeInclusive<u64>,
    params: &api::ReadStreamQuery,
    max_bytes: usize,
) -> Result<Vec<RecordedEvent>, ReadError> {
    let (low, high) = versions.into_inner();
    let backward = params.backward;
    let mut read = if backward {
        StreamRead::backward()
    } else {
        StreamRead::forward()
    };
    read.from_version = if backward { high } else { low };
    read_page(limit(params.limit), max_bytes, |after, n| {
        if let Some(last) = after {
            read.from_version = if backward {
                last.stream_version.saturating_sub(1)
            } else {
                last.stream_version + 1
            };
        }
        let remaining = if backward {
            read.from_version.saturating_sub(low - 1)
        } else {
            (high + 1).saturating_sub(read.from_version)
        };
        if remaining == 0 {
            return Ok(Vec::new());
        }
        read.limit = n.min(usize::try_from(remaining).unwrap_or(usize::MAX));
        store.read_stream(stream_id, &read)
    })
}
