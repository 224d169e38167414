//! Operations: health, the nodes sharing the store, and forgetting a data subject.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`; `degraded` (answered with 503, for load balancers) while an I/O error keeps the
    /// event store read-only.
    pub status: String,
    /// The last committed position.
    pub head: u64,
    /// Seconds since the host started.
    pub uptime_seconds: u64,
    /// While degraded: why (the I/O error that stopped the store's writer). Reads are still
    /// served; writes answer `read_only` until the store has recovered by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
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
    /// Every node sharing the store (the one that answered first) and where its purge is.
    #[serde(default)]
    pub nodes: Vec<NodePurge>,
}

/// Where a node is with a purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeProgress {
    /// It has purged.
    Done,
    /// It is live and has not finished yet (it will).
    Pending,
    /// It has not reported for 5 s; it purges when it is back.
    NotLive,
}

/// A node's purge of an erasure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodePurge {
    /// The node's id.
    pub id: String,
    /// Where its API listens.
    pub address: String,
    /// Where its purge is.
    pub state: NodeProgress,
}

/// A node sharing the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Node {
    /// Its id (kept in its data directory).
    pub id: String,
    /// Where its API listens.
    pub address: String,
    /// Whether it reported within the last 5 s.
    pub live: bool,
    /// Milliseconds since its last report (by the database's clock).
    pub age_ms: u64,
    /// The position of the last `$erasures` event it purged.
    pub erasures_purged: u64,
    /// Whether it is the node that answered.
    pub this_node: bool,
}

/// `GET /nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeList {
    /// The nodes, by id.
    pub nodes: Vec<Node>,
}
