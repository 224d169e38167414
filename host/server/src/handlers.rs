//! The handler behind each route of [`super::ROUTES`].

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::metrics::{CommandResult, counter, gauge};
use super::{ApiError, AppState, Caller};
use eshost_core::aggregate::{At, CommandError, CommandOptions, Decision};
use eshost_core::privacy::{ForgetError, ForgetRequest};
use eshost_core::projection::ProjectionState;
use eshost_runtime::PluginKind;
use eshost_store::{
    AllRead, AppendRequest, Direction, EventStore, ExpectedVersion, ProposedEvent, RecordedEvent,
    StreamRead, Until,
};

/// A JSON body; malformed JSON is a 400 and an over-large body a 413, both as JSON errors.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_rejection)?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| ApiError::bad_request(format!("malformed JSON body: {error}")))
    }
}

fn body_rejection(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the request body is larger than the host accepts",
        )
    } else {
        ApiError::bad_request(rejection.body_text())
    }
}

/// Query parameters; a malformed one is a 400 as a JSON error.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(Params)
            .map_err(|error| ApiError::bad_request(format!("bad query parameters: {error}")))
    }
}

/// An event as the API shows it: data and metadata as JSON values; for an event with
/// personal data, its `subject_id`, the data itself when disclosed, and `shredded`.
pub fn event_json(event: &RecordedEvent) -> Value {
    let parse = |text: &str| serde_json::from_str(text).unwrap_or_else(|_| Value::from(text));
    let mut value = json!({
        "position": event.position,
        "stream_id": event.stream_id,
        "stream_version": event.stream_version,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "schema_version": event.schema_version,
        "recorded_at": event.recorded_at,
        "data": parse(&event.data),
        "metadata": parse(&event.metadata),
    });
    if let Some(subject) = &event.subject_id {
        value["subject_id"] = subject.as_str().into();
        value["shredded"] = event.shredded.into();
        if let Some(personal) = &event.personal_data {
            value["personal_data"] = parse(personal);
        }
    }
    value
}

/// Whether the caller may see decrypted personal data: tokens must say so; without
/// tokens (open, loopback only) everyone may.
fn discloses(caller: &Option<axum::Extension<Caller>>) -> bool {
    caller.as_ref().is_none_or(|caller| caller.personal_data)
}

/// Decrypt the personal data of `events` for a caller allowed to see it; for others, only
/// whether it was shredded.
fn disclose(store: &dyn EventStore, events: &mut [RecordedEvent], allowed: bool) {
    for event in events.iter_mut().filter(|e| e.sealed.is_some()) {
        store.reveal_owned(event);
        if !allowed {
            event.personal_data = None;
        }
    }
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CommandParams {
    expected_version: Option<u64>,
}

pub(super) async fn command(
    State(state): State<AppState>,
    Path((aggregate_type, id)): Path<(String, String)>,
    Params(params): Params<CommandParams>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
    JsonBody(command): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let options = CommandOptions {
        expected_version: params.expected_version,
        idempotency_key: header_string(&headers, "idempotency-key"),
        correlation_id: header_string(&headers, "correlation-id"),
        causation_id: header_string(&headers, "causation-id"),
        user: caller.map(|c| c.0.name),
        ..CommandOptions::default()
    };
    let started = Instant::now();
    let result = inner
        .host
        .aggregates()
        .execute(&aggregate_type, &id, &command.to_string(), options)
        .await;
    inner.metrics.command.observe(started.elapsed());
    let reply = match result {
        Ok(reply) => reply,
        Err(error) => {
            inner.metrics.command_result(match &error {
                CommandError::Conflict { .. } => CommandResult::Conflict,
                _ => CommandResult::Error,
            });
            if matches!(error, CommandError::Plugin(_)) {
                inner.metrics.plugin_faults.fetch_add(1, Ordering::Relaxed);
            }
            return Err(error.into());
        }
    };
    match &reply.decision {
        Decision::Accepted { events } => {
            inner.metrics.command_result(CommandResult::Accepted);
            let events: Vec<Value> = events
                .iter()
                .map(|e| {
                    json!({
                        "event_id": e.event_id,
                        "position": e.position,
                        "stream_version": e.stream_version,
                        "event_type": e.event_type,
                        "schema_version": e.schema_version,
                        "recorded_at": e.recorded_at,
                        "data": serde_json::from_str::<Value>(&e.data).unwrap_or_else(|_| e.data.clone().into()),
                    })
                })
                .collect();
            Ok(Json(json!({
                "command_id": reply.command_id,
                "stream_id": reply.stream_id,
                "stream_version": reply.stream_version,
                "replayed": reply.replayed,
                "events": events,
            }))
            .into_response())
        }
        Decision::Rejected { reason } => {
            inner.metrics.command_result(CommandResult::Rejected);
            let body = json!({
                "error": "rejected",
                "message": reason,
                "stream_version": reply.stream_version,
                "command_id": reply.command_id,
            });
            Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response())
        }
        Decision::Invalid { reason } => {
            inner.metrics.command_result(CommandResult::Invalid);
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_command",
                reason.clone(),
            ))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StateParams {
    version: Option<u64>,
    at: Option<u64>,
}

pub(super) async fn state(
    State(state): State<AppState>,
    Path((aggregate_type, id)): Path<(String, String)>,
    Params(params): Params<StateParams>,
) -> Result<Response, ApiError> {
    let at = match (params.version, params.at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give ?version= or ?at=, not both"));
        }
        (Some(version), None) => At::Version(version),
        (None, Some(time)) => At::Time(time),
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
    Ok(Json(built).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UntilParams {
    until_position: Option<u64>,
    until_time: Option<u64>,
}

impl UntilParams {
    fn until(&self) -> Option<Until> {
        self.until_position
            .map(Until::Position)
            .or(self.until_time.map(Until::Time))
    }
}

pub(super) async fn history(
    State(state): State<AppState>,
    Path((aggregate_type, id)): Path<(String, String)>,
    Params(params): Params<UntilParams>,
    caller: Option<axum::Extension<Caller>>,
) -> Result<Response, ApiError> {
    let allowed = discloses(&caller);
    let inner = &state.inner;
    let history = inner
        .host
        .aggregates()
        .history(&aggregate_type, &id, params.until())
        .await?;
    if history.is_empty() && inner.host.store().stream_info(&id)?.is_none() {
        return Err(ApiError::not_found(format!(
            "aggregate {aggregate_type}/{id} has no events"
        )));
    }
    let entries: Vec<Value> = history
        .iter()
        .map(|entry| {
            let mut event = entry.event.clone();
            if !allowed {
                event.personal_data = None;
            }
            json!({"event": event_json(&event), "state": entry.state})
        })
        .collect();
    Ok(
        Json(json!({"aggregate_type": aggregate_type, "stream_id": id, "history": entries}))
            .into_response(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AppendBody {
    #[serde(default)]
    expected: Option<Value>,
    events: Vec<NewEvent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEvent {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    id: Option<uuid::Uuid>,
    #[serde(default)]
    schema_version: Option<u32>,
    /// The data subject of `personal_data`.
    #[serde(default)]
    subject_id: Option<String>,
    /// Personal data, stored sealed under the subject's key.
    #[serde(default)]
    personal_data: Option<Value>,
}

fn expected_version(value: Option<Value>) -> Result<ExpectedVersion, ApiError> {
    match value {
        None => Ok(ExpectedVersion::Any),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(ExpectedVersion::Exact)
            .ok_or_else(|| ApiError::bad_request(format!("expected version {n} is not a version"))),
        Some(Value::String(text)) => text.parse().map_err(ApiError::bad_request),
        Some(other) => Err(ApiError::bad_request(format!(
            "expected must be any, no_stream, stream_exists or a number, not {other}"
        ))),
    }
}

pub(super) async fn append(
    State(state): State<AppState>,
    Path(stream_id): Path<String>,
    JsonBody(body): JsonBody<AppendBody>,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let expected = expected_version(body.expected)?;
    let count = body.events.len() as u64;
    let events = body
        .events
        .into_iter()
        .map(|e| {
            let data = e.data.unwrap_or_else(|| json!({})).to_string();
            let metadata = e.metadata.unwrap_or_else(|| json!({})).to_string();
            let mut event = ProposedEvent::new(e.event_type, data)
                .with_metadata(metadata)
                .with_schema_version(e.schema_version.unwrap_or(1));
            if let Some(id) = e.id {
                event = event.with_id(id);
            }
            event.subject_id = e.subject_id;
            event.personal_data = e.personal_data.map(|value| value.to_string());
            event
        })
        .collect();
    let started = Instant::now();
    let result = inner
        .host
        .store()
        .append(AppendRequest::new(stream_id, expected, events))
        .await;
    inner.metrics.append.observe(started.elapsed());
    match result {
        Ok(appended) => {
            inner
                .metrics
                .appended_events
                .fetch_add(count, Ordering::Relaxed);
            Ok((StatusCode::CREATED, Json(appended)).into_response())
        }
        Err(error) => {
            inner.metrics.append_errors.fetch_add(1, Ordering::Relaxed);
            Err(error.into())
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadParams {
    from: Option<u64>,
    #[serde(default)]
    backward: bool,
    limit: Option<usize>,
    until_position: Option<u64>,
    until_time: Option<u64>,
}

const DEFAULT_LIMIT: usize = 1_000;
const MAX_LIMIT: usize = 10_000;

pub(super) async fn read_stream(
    State(state): State<AppState>,
    Path(stream_id): Path<String>,
    Params(params): Params<ReadParams>,
    caller: Option<axum::Extension<Caller>>,
) -> Result<Response, ApiError> {
    let allowed = discloses(&caller);
    let store = state.inner.host.store().clone();
    let answer = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let Some(info) = store.stream_info(&stream_id)? else {
            return Err(ApiError::not_found(format!(
                "stream {stream_id:?} does not exist"
            )));
        };
        let mut read = if params.backward {
            StreamRead::backward()
        } else {
            StreamRead::forward()
        };
        if let Some(from) = params.from {
            read.from_version = from;
        }
        read.limit = params.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
        read.until = UntilParams {
            until_position: params.until_position,
            until_time: params.until_time,
        }
        .until();
        let mut events = store.read_stream(&stream_id, &read)?;
        disclose(store.as_ref(), &mut events, allowed);
        Ok(json!({
            "stream_id": stream_id,
            "info": info,
            "events": events.iter().map(event_json).collect::<Vec<_>>(),
        }))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(answer).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AllParams {
    from: Option<u64>,
    limit: Option<usize>,
    types: Option<String>,
}

fn split_types(types: Option<&str>) -> Vec<String> {
    types
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) async fn read_all(
    State(state): State<AppState>,
    Params(params): Params<AllParams>,
    caller: Option<axum::Extension<Caller>>,
) -> Result<Response, ApiError> {
    let allowed = discloses(&caller);
    let store = state.inner.host.store().clone();
    let answer = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let read = AllRead {
            from_position: params.from.unwrap_or(1).max(1),
            direction: Direction::Forward,
            limit: params.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT),
            event_types: split_types(params.types.as_deref()),
            until: None,
        };
        let head = store.head();
        let mut events = store.read_all(&read)?;
        disclose(store.as_ref(), &mut events, allowed);
        Ok(json!({
            "head": head,
            "events": events.iter().map(event_json).collect::<Vec<_>>(),
        }))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(answer).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ForgetBody {
    #[serde(default)]
    reason: Option<String>,
}

pub(super) async fn forget(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: ForgetBody = if body.iter().all(u8::is_ascii_whitespace) {
        ForgetBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|error| ApiError::bad_request(format!("bad forget request: {error}")))?
    };
    let request = ForgetRequest {
        user: caller.map(|c| c.0.name),
        reason: body.reason,
    };
    let forgetting = state.inner.host.forgetting().clone();
    let report = tokio::task::spawn_blocking(move || forgetting.forget(&subject, &request))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|error| match error {
            ForgetError::InvalidSubject { .. } => ApiError::bad_request(error.to_string()),
            ForgetError::Failed { .. } => ApiError::internal(error.to_string()),
        })?;
    Ok(Json(report).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubscribeParams {
    from: Option<u64>,
    stream_prefix: Option<String>,
    types: Option<String>,
}

struct Subscription {
    state: AppState,
    next: u64,
    prefix: String,
    types: Vec<String>,
    buffer: VecDeque<RecordedEvent>,
    disclose: bool,
    head: tokio::sync::watch::Receiver<u64>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

const SUBSCRIBE_BATCH: usize = 500;

impl Subscription {
    async fn next_event(&mut self) -> Option<Result<SseEvent, Infallible>> {
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            if let Some(event) = self.buffer.pop_front() {
                let sse = SseEvent::default()
                    .id(event.position.to_string())
                    .event(event.event_type.clone())
                    .json_data(event_json(&event))
                    .ok()?;
                return Some(Ok(sse));
            }
            self.head.borrow_and_update();
            if self.state.inner.host.store().head() >= self.next {
                let store = self.state.inner.host.store().clone();
                let read = AllRead {
                    from_position: self.next,
                    direction: Direction::Forward,
                    limit: SUBSCRIBE_BATCH,
                    event_types: self.types.clone(),
                    until: None,
                };
                let head = store.head();
                let allowed = self.disclose;
                let events = tokio::task::spawn_blocking(move || {
                    let mut events = store.read_all(&read)?;
                    disclose(store.as_ref(), &mut events, allowed);
                    Ok::<_, eshost_store::ReadError>(events)
                })
                .await
                .ok()?
                .ok()?;
                match events.last() {
                    Some(last) => self.next = last.position + 1,
                    // Everything up to the head was filtered out by type.
                    None => self.next = head + 1,
                }
                let prefix = &self.prefix;
                self.buffer.extend(
                    events
                        .into_iter()
                        .filter(|e| e.stream_id.starts_with(prefix.as_str())),
                );
                continue;
            }
            tokio::select! {
                changed = self.head.changed() => if changed.is_err() { return None },
                _ = self.shutdown.changed() => return None,
            }
        }
    }
}

pub(super) async fn subscribe(
    State(state): State<AppState>,
    Params(params): Params<SubscribeParams>,
    headers: HeaderMap,
    caller: Option<axum::Extension<Caller>>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be a position"))?,
        ),
        None => None,
    };
    let next = match resume {
        Some(last) => last + 1,
        None => params.from.unwrap_or(1).max(1),
    };
    let inner = &state.inner;
    let subscription = Subscription {
        next,
        prefix: params.stream_prefix.unwrap_or_default(),
        types: split_types(params.types.as_deref()),
        buffer: VecDeque::new(),
        disclose: discloses(&caller),
        head: inner.host.store().watch_head(),
        shutdown: inner.shutdown.clone(),
        state: state.clone(),
    };
    let stream = futures_util::stream::unfold(subscription, |mut subscription| async move {
        let item = subscription.next_event().await?;
        Some((item, subscription))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

pub(super) async fn projections(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"projections": state.inner.host.projections().statuses()}))
}

pub(super) async fn projection(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let status = state
        .inner
        .host
        .projections()
        .status(&name)
        .ok_or_else(|| ApiError::not_found(format!("no projection named {name:?}")))?;
    Ok(Json(
        serde_json::to_value(status).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

pub(super) async fn projection_query(
    State(state): State<AppState>,
    Path((name, query)): Path<(String, String)>,
    Params(params): Params<serde_json::Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let args = match params.get("args") {
        Some(Value::String(args)) => {
            serde_json::from_str::<Value>(args)
                .map_err(|e| ApiError::bad_request(format!("?args= is not JSON: {e}")))?;
            args.clone()
        }
        _ if params.is_empty() => "null".to_owned(),
        _ => {
            let object: serde_json::Map<String, Value> = params
                .into_iter()
                .map(|(key, value)| {
                    let value = match value {
                        Value::String(text) => serde_json::from_str(&text)
                            .ok()
                            .filter(|v: &Value| !v.is_string())
                            .unwrap_or(Value::String(text)),
                        other => other,
                    };
                    (key, value)
                })
                .collect();
            Value::Object(object).to_string()
        }
    };
    let projections = state.inner.host.projections().clone();
    let answer = tokio::task::spawn_blocking(move || projections.query(&name, &query, &args))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let value = serde_json::from_str(&answer).unwrap_or(Value::String(answer));
    Ok(Json(value))
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

fn projection_status(state: &AppState, name: &str) -> Value {
    state
        .inner
        .host
        .projections()
        .status(name)
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null)
}

pub(super) async fn projection_pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state.inner.host.projections().pause(&name)?;
    Ok(controlled(&state, name, "paused", |now| {
        now != ProjectionState::Running
    })
    .await)
}

pub(super) async fn projection_resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state.inner.host.projections().resume(&name)?;
    Ok(controlled(&state, name, "resumed", |now| {
        now != ProjectionState::Paused
    })
    .await)
}

/// The 202 answer to a pause or resume: `{<done>: name, status}`, with the status after the
/// runner acted on it.
async fn controlled(
    state: &AppState,
    name: String,
    done: &str,
    acted: impl Fn(ProjectionState) -> bool,
) -> Response {
    settle(state, &name, acted).await;
    let status = projection_status(state, &name);
    (
        StatusCode::ACCEPTED,
        Json(json!({done: name, "status": status})),
    )
        .into_response()
}

pub(super) async fn projection_rebuild(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let projections = state.inner.host.projections().clone();
    let target = name.clone();
    let generation = tokio::task::spawn_blocking(move || projections.rebuild(&target))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"rebuilding": name, "generation": generation})),
    )
        .into_response())
}

pub(super) async fn plugins(State(state): State<AppState>) -> Json<Value> {
    let inner = &state.inner;
    let mut plugins: Vec<Value> = Vec::new();
    for info in inner.host.aggregates().types() {
        plugins.push(json!(info));
    }
    for plugin in inner.host.upcasters().plugins() {
        plugins.push(json!(plugin.info()));
    }
    for status in inner.host.projections().statuses() {
        plugins.push(json!({
            "name": status.name,
            "kind": "projection",
            "version": status.active.version,
            "content_hash": status.active.hash,
            "state": status.state,
            "rebuild": status.rebuild,
        }));
    }
    Json(json!({"plugins": plugins}))
}

pub(super) async fn swap_plugin(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body.map_err(body_rejection)?;
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
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_plugin", e.to_string()))?;
        let eshost_runtime::LoadedPlugin::Aggregate(plugin) = loaded else {
            return Err(ApiError::internal("the runtime loaded another kind"));
        };
        if plugin.info().name != name {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_plugin",
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
        return Ok(Json(json!({
            "name": name,
            "kind": "aggregate",
            "outcome": if old.content_hash == new.content_hash { "unchanged" } else { "swapped" },
            "previous_hash": old.content_hash,
            "content_hash": new.content_hash,
            "version": new.version,
        }))
        .into_response());
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
        .map_err(|e| ApiError::internal(e.to_string()))??;
        inner.metrics.swaps.fetch_add(1, Ordering::Relaxed);
        tracing::info!(projection = %name, ?outcome, "swapped by upload");
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"name": name, "kind": "projection", "outcome": outcome})),
        )
            .into_response());
    }
    if inner
        .host
        .upcasters()
        .plugins()
        .iter()
        .any(|p| p.info().name == name)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_swappable",
            format!(
                "upcaster {name:?} cannot be swapped while the host runs; restart with the new file"
            ),
        ));
    }
    Err(ApiError::not_found(format!("no plugin named {name:?}")))
}

pub(super) async fn health(State(state): State<AppState>) -> Json<Value> {
    let inner = &state.inner;
    Json(json!({
        "status": "ok",
        "head": inner.host.store().head(),
        "uptime_seconds": inner.host.started().elapsed().as_secs(),
    }))
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let inner = &state.inner;
    let mut out = String::new();
    inner.metrics.render(&mut out);
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

pub(super) async fn openapi() -> Json<Value> {
    Json(super::openapi())
}
