//! Commands to aggregates, their state and their history.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{Event, ExpectedVersion, Timestamp};

/// `POST /aggregates/{type}/{id}`: the command, any JSON value the aggregate's plugin
/// understands (the first-party plugins take an object with a `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct Command(pub Value);

/// `POST /aggregates/{type}/{id}` parameters. The `Idempotency-Key`, `Correlation-Id` and
/// `Causation-Id` headers go beside them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CommandQuery {
    /// Decide only if the aggregate's stream is at this version: a number, `no_stream` (the
    /// same as 0) or `any`; else 409.
    #[serde(
        default,
        deserialize_with = "crate::expected::from_text",
        skip_serializing_if = "Option::is_none"
    )]
    #[param(value_type = Option<ExpectedVersion>)]
    pub expected_version: Option<ExpectedVersion>,
}

/// A command accepted: the events it stored (200).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CommandAccepted {
    /// The command's id.
    pub command_id: Uuid,
    /// The aggregate's stream: its id, behind its type's `stream_prefix` if one is configured.
    pub stream_id: String,
    /// The stream's version after the command.
    pub stream_version: u64,
    /// True when this is the recorded answer to an earlier send of the same idempotency key.
    pub replayed: bool,
    /// The events stored, in stream order (none: accepted as a no-op).
    pub events: Vec<EmittedEvent>,
}

/// An event a command stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmittedEvent {
    /// Its id.
    pub event_id: Uuid,
    /// Its position in `$all`.
    pub position: u64,
    /// Its version in the stream.
    pub stream_version: u64,
    /// What happened.
    pub event_type: String,
    /// The shape of `data`.
    pub schema_version: u32,
    /// Commit time, ms since the epoch.
    pub recorded_at: u64,
    /// The payload.
    pub data: Value,
}

/// `GET /aggregates/{type}/{id}` parameters: at most one of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StateQuery {
    /// The state after this stream version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The state as of this time: ms since the Unix epoch, or RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>)]
    pub at: Option<Timestamp>,
}

/// An aggregate's state as of some point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AggregateState {
    /// The aggregate type.
    pub aggregate_type: String,
    /// The aggregate's stream: its id, behind its type's `stream_prefix` if one is configured.
    pub stream_id: String,
    /// The stream version the state covers.
    pub version: u64,
    /// The position of the event at `version`.
    pub position: u64,
    /// When that event was recorded.
    pub recorded_at: u64,
    /// The plugin's state.
    pub state: Value,
    /// The snapshot version the build started from, if any.
    pub from_snapshot: Option<u64>,
}

/// A snapshot taken on demand (`POST /aggregates/{type}/{id}/snapshot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotTaken {
    /// The aggregate type.
    pub aggregate_type: String,
    /// The aggregate's stream: its id, behind its type's `stream_prefix` if one is configured.
    pub stream_id: String,
    /// The stream version the snapshot covers.
    pub version: u64,
    /// The position of the event at `version`.
    pub position: u64,
    /// When that event was recorded, ms since the epoch.
    pub recorded_at: u64,
    /// The content hash of the plugin that made it (only that code restores it).
    pub plugin_hash: String,
    /// The size of the plugin's snapshot bytes.
    pub bytes: u64,
}

/// `GET /aggregates/{type}/{id}/history` parameters: an "as of" bound.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// The first stream version of the page (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// The most entries (default 1000, at most 10000); a page also ends at the host's
    /// `max_response_bytes`: ask again from the version after the last entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Only events at or before this global position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_position: Option<u64>,
    /// Only events recorded at or before this time: ms since the epoch, or RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>)]
    pub until_time: Option<Timestamp>,
}

/// An aggregate's audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct History {
    /// The aggregate type.
    pub aggregate_type: String,
    /// The aggregate's stream: its id, behind its type's `stream_prefix` if one is configured.
    pub stream_id: String,
    /// Each event with the state right after it, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// One step of an aggregate's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    /// The event.
    pub event: Event,
    /// The state right after it.
    pub state: Value,
}
