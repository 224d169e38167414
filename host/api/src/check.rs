//! A candidate plugin version checked against the stored history before it goes live:
//! `POST /plugins/{name}/check`, and the report a swap with `?require_check=true` is refused
//! with.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::PluginKind;

/// `PUT /plugins/{name}`'s query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SwapQuery {
    /// Check the upload against the whole history first; refuse it (422 `check_failed`, with
    /// the report) unless the check is clean.
    #[serde(default)]
    pub require_check: bool,
}

/// An event as an upcaster chain gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventShape {
    /// Its type.
    pub event_type: String,
    /// Its schema version.
    pub schema_version: u32,
    /// Its data.
    pub data: Value,
}

/// One event the candidate's chain gives otherwise than the live chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpcastSample {
    /// The event's position.
    pub position: u64,
    /// Its stream.
    pub stream_id: String,
    /// Through the live chain.
    pub before: EventShape,
    /// Through the chain with the candidate.
    pub after: EventShape,
}

/// An event the candidate could not process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckFailure {
    /// Its position in `$all` (0: not located).
    pub position: u64,
    /// Its stream.
    pub stream_id: String,
    /// Its version in the stream (0: not located).
    pub stream_version: u64,
    /// Its stored type.
    pub event_type: String,
    /// What went wrong.
    pub message: String,
}

/// An upcaster candidate run over every stored event of the types it upcasts, beside the
/// live chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpcasterCheck {
    /// The event types read.
    pub event_types: Vec<String>,
    /// Events read.
    pub events: u64,
    /// Events given as the live chain gives them.
    pub unchanged: u64,
    /// Events given otherwise.
    pub changed: u64,
    /// Events the candidate fails on.
    pub failed: u64,
    /// The first changed events (a few).
    pub samples: Vec<UpcastSample>,
    /// The first event it fails on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<CheckFailure>,
}

/// Where a stream's state under the candidate first differs from the live one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StateDifference {
    /// The stream (aggregate id).
    pub stream_id: String,
    /// The version of the first event after which the states differ.
    pub stream_version: u64,
    /// Its position.
    pub position: u64,
    /// The live version's state after it.
    pub live: Value,
    /// The candidate's.
    pub candidate: Value,
}

/// An aggregate candidate: every stream of its type rebuilt beside the live version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AggregateCheck {
    /// Streams of the type.
    pub streams: u64,
    /// Streams with the same state under both.
    pub same: u64,
    /// Streams whose state differs.
    pub differing: u64,
    /// Streams the candidate fails to rebuild.
    pub failed: u64,
    /// Streams the live version fails to rebuild (not compared).
    pub live_failed: u64,
    /// The first differing streams (a few), each at its first differing event.
    pub differences: Vec<StateDifference>,
    /// The first failing streams (a few), each at the event it fails on.
    pub failures: Vec<CheckFailure>,
}

/// One key whose value the candidate's read model gives otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiffSample {
    /// The key.
    pub key: String,
    /// Its value in the live read model (none: only the candidate has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
    /// Its value in the candidate's (none: only the live one has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
}

/// A projection candidate replayed over the whole history beside the live read model (what
/// `eshost replay --diff` does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProjectionCheck {
    /// Events passed to the candidate.
    pub handled: u64,
    /// Keys of its read model.
    pub keys: u64,
    /// Why the replay failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The live read model's checkpoint.
    pub live_position: u64,
    /// Keys of the live read model.
    pub live_keys: u64,
    /// Keys only the candidate has.
    pub added: u64,
    /// Keys only the live read model has.
    pub removed: u64,
    /// Keys with different values.
    pub changed: u64,
    /// Keys with the same value.
    pub same: u64,
    /// A few of the differing keys.
    pub samples: Vec<DiffSample>,
}

/// `POST /plugins/{name}/check`: what the candidate does to the stored history. Nothing
/// live changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckReport {
    /// The plugin.
    pub name: String,
    /// Its kind.
    pub kind: PluginKind,
    /// The candidate's own version.
    pub version: String,
    /// The candidate's content hash.
    pub content_hash: String,
    /// True when nothing failed under the candidate (changes are reported, not refused).
    pub clean: bool,
    /// The log position the check read up to.
    pub head: u64,
    /// How long it took, in milliseconds.
    pub elapsed_ms: u64,
    /// Upcasters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upcaster: Option<UpcasterCheck>,
    /// Aggregates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<AggregateCheck>,
    /// Projections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<ProjectionCheck>,
}
