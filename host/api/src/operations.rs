//! Operations: health, and forgetting a data subject.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// The last committed position.
    pub head: u64,
    /// Seconds since the host started.
    pub uptime_seconds: u64,
}

/// `POST /subjects/{id}/forget`: the body is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetRequest {
    /// Why, e.g. a ticket number. Stored in the log: no personal data here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What happened to a subject's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Forgot {
    /// The key was erased.
    KeyErased,
    /// The subject had been forgotten before.
    AlreadyForgotten,
    /// The subject had no key (no personal data stored); a tombstone now refuses any.
    NoKey,
}

/// What forgetting did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ForgetReport {
    /// The subject.
    pub subject_id: String,
    /// What happened to the key.
    pub key: Forgot,
    /// Where the erasure event is in `$all`.
    pub erasure_position: u64,
    /// The streams that held the subject's personal data.
    pub streams: Vec<String>,
    /// The event types that carried it.
    pub event_types: Vec<String>,
    /// Aggregate snapshots deleted.
    pub snapshots_deleted: u64,
    /// Projections rebuilt from the shredded log.
    pub projections_rebuilt: Vec<String>,
    /// Projections whose rebuild had not switched in when the wait ended (their old read
    /// model serves until it does).
    pub projections_pending: Vec<String>,
}
