//! Events as the API shows them, appends, and reads of a stream, of `$all` and of the live
//! subscription.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{ExpectedVersion, Timestamp};

/// A stored event: data and metadata as JSON values; for an event with personal data, its
/// `subject_id`, `shredded`, and the decrypted `personal_data` when the caller may see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Global position in `$all`: gap-free, from 1.
    pub position: u64,
    /// The stream it belongs to.
    pub stream_id: String,
    /// Version within the stream, from 1.
    pub stream_version: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// What happened, e.g. `FundsDeposited`.
    pub event_type: String,
    /// Version of the shape of `data`.
    pub schema_version: u32,
    /// Commit time, ms since the Unix epoch.
    pub recorded_at: u64,
    /// The payload.
    pub data: Value,
    /// Correlation and causation ids, who appended it, free keys.
    pub metadata: Value,
    /// The data subject of the event's personal data, if it carries any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<String>,
    /// With `subject_id`: true once the subject was forgotten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shredded: Option<bool>,
    /// The personal data, decrypted, for callers allowed to see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_data: Option<Value>,
}

/// `POST /streams/{id}`: events to append to one stream, atomically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendRequest {
    /// The precondition on the stream's version (default `any`).
    #[serde(default)]
    pub expected: ExpectedVersion,
    /// The events, in order; at least one.
    pub events: Vec<NewEvent>,
}

/// One event to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// What happened, e.g. `FundsDeposited`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The payload (default `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// A JSON object (default `{}`). The host's own keys (`user`, `command_id`,
    /// `aggregate_type`, `plugin_hash`, `plugin_version`) are not taken from a client: `user`
    /// is the appending token's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// The event's id (default: a fresh one). Re-sending a stored id with the same content is
    /// an idempotent retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// The shape of `data` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// The data subject of `personal_data`; required with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<String>,
    /// Personal data, stored sealed under the subject's key and erased with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_data: Option<Value>,
}

impl NewEvent {
    /// An event of `event_type` with `data` and nothing else set.
    pub fn new(event_type: impl Into<String>, data: Value) -> Self {
        NewEvent {
            event_type: event_type.into(),
            data: Some(data),
            metadata: None,
            id: None,
            schema_version: None,
            subject_id: None,
            personal_data: None,
        }
    }
}

/// Where an append landed (201).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Appended {
    /// Position of the first event appended.
    pub first_position: u64,
    /// Position of the last event appended.
    pub last_position: u64,
    /// Stream version of the first event appended.
    pub first_version: u64,
    /// Stream version after the append (the version to expect next time).
    pub stream_version: u64,
    /// Commit time of the events, ms since the epoch.
    pub recorded_at: u64,
    /// True when every event was already stored (an idempotent retry): nothing was written.
    pub already_stored: bool,
}

/// What the store knows about one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamInfo {
    /// The stream's last version (its event count).
    pub version: u64,
    /// Position of its first event.
    pub first_position: u64,
    /// Position of its last event.
    pub last_position: u64,
    /// When its first event was recorded (ms since the epoch).
    pub created_at: u64,
    /// When its last event was recorded (ms since the epoch).
    pub updated_at: u64,
}

/// `GET /streams/{id}` parameters. The `from_*` and `until_*` bounds all apply (the
/// narrowest wins); a time is ms since the epoch or RFC 3339.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadStreamQuery {
    /// The version the read starts at: the lowest forward (default 1), the highest backward
    /// (default the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// Newest first.
    #[serde(default)]
    pub backward: bool,
    /// The most events (default 1000, at most 10000); a page also ends at the host's
    /// `max_response_bytes` (after at least one event): read on from the last event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Only events at or after this global position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_position: Option<u64>,
    /// Only events recorded at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>)]
    pub from_time: Option<Timestamp>,
    /// Only events at or before this stream version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_version: Option<u64>,
    /// Only events at or before this global position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_position: Option<u64>,
    /// Only events recorded at or before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>)]
    pub until_time: Option<Timestamp>,
}

/// A stream's events (`GET /streams/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamEvents {
    /// The stream.
    pub stream_id: String,
    /// Its version and positions.
    pub info: StreamInfo,
    /// The events read.
    pub events: Vec<Event>,
}

/// `GET /all` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AllQuery {
    /// First position (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// The most events (default 1000, at most 10000); a page also ends at the host's
    /// `max_response_bytes` (after at least one event): read on from the last event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Only these event types, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<String>,
    /// Only events recorded at or after this time: ms since the epoch, or RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>)]
    pub from_time: Option<Timestamp>,
    /// Only events at or before this position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_position: Option<u64>,
    /// Only events recorded at or before this time: ms since the epoch, or RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>)]
    pub until_time: Option<Timestamp>,
}

/// Events of `$all` (`GET /all`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AllEvents {
    /// The last committed position when the read started.
    pub head: u64,
    /// The events read.
    pub events: Vec<Event>,
}

/// `GET /subscribe` parameters. Each server-sent event carries one [`Event`] as its data,
/// its position as `id` and its type as `event`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SubscribeQuery {
    /// First position (default 1). A `Last-Event-ID` header wins: the stream resumes after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// Only streams whose id starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_prefix: Option<String>,
    /// Only these event types, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<String>,
}

/// The event types of a comma-separated `types` parameter (blanks dropped).
pub fn split_types(types: Option<&str>) -> Vec<String> {
    types
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}
