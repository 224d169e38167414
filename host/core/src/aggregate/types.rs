//! What callers see of the command pipeline: its settings, what a command carries and gets
//! back, states and history, counters, and errors.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::rebuild::StateError;
use super::snapshot::SnapshotError;
use eshost_runtime::PluginError;
use eshost_store::{AppendError, ExpectedVersion, RecordedEvent};

/// How the pipeline runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Worker threads; aggregate ids are spread over them by hash.
    pub workers: usize,
    /// The most aggregates each worker keeps in its cache (least recently used go first).
    pub cache_entries: usize,
    /// How often a command is retried after a version conflict before giving up.
    pub max_retries: u32,
    /// Events per `apply` call when rebuilding state.
    pub apply_batch: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            cache_entries: 10_000,
            max_retries: 5,
            apply_batch: 1_000,
        }
    }
}

/// Per aggregate type settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateConfig {
    /// Snapshot an aggregate once this many events have been applied since its last snapshot
    /// (0: never, except on demand).
    pub snapshot_every: u64,
    /// Give every cached aggregate a wasm instance of its own instead of sharing the worker's
    /// one: a plugin that keeps per-instance hidden state (Rust std's `HashMap` keys, statics)
    /// then decides on the state a replay builds. Costs ~57 KiB of resident memory per cached
    /// aggregate, and each worker caches at most [`ISOLATED_CACHE_ENTRIES`] of this type.
    pub instance_per_aggregate: bool,
    /// Put before an aggregate's id to name its stream (`account-` keeps aggregate `42` in
    /// stream `account-42`), so that two types can use the same ids. Empty: the id is the
    /// stream id.
    pub stream_prefix: String,
}

/// The most aggregates of an `instance_per_aggregate` type a worker caches: each holds a wasm
/// instance with its own virtual memory reservation.
pub const ISOLATED_CACHE_ENTRIES: usize = 1_000;

impl AggregateConfig {
    /// `snapshot_every` unless configured.
    pub const DEFAULT_SNAPSHOT_EVERY: u64 = 1_000;

    /// The defaults, snapshotting every `snapshot_every` events.
    pub fn every(snapshot_every: u64) -> AggregateConfig {
        AggregateConfig {
            snapshot_every,
            ..AggregateConfig::default()
        }
    }
}

impl Default for AggregateConfig {
    fn default() -> Self {
        AggregateConfig {
            snapshot_every: Self::DEFAULT_SNAPSHOT_EVERY,
            instance_per_aggregate: false,
            stream_prefix: String::new(),
        }
    }
}

/// What a client sends along with a command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOptions {
    /// The command's id (a fresh one when absent).
    #[serde(default)]
    pub command_id: Option<Uuid>,
    /// Decide only if the stream is at this version (0: does not exist yet). A mismatch is
    /// returned as a conflict, never retried.
    #[serde(default)]
    pub expected_version: Option<u64>,
    /// Ties together everything one request caused (default: the command id).
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// What caused the command (default: the command id).
    #[serde(default)]
    pub causation_id: Option<String>,
    /// Who sent it.
    #[serde(default)]
    pub user: Option<String>,
    /// A repeated key gets the first reply back and writes nothing (for an accepted command,
    /// rebuilt from its events when the record in `views.redb` is gone).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Further metadata keys for the events (the host's own keys win).
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// The answer to a command. A rejection is an answer, not an error of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply {
    /// The command's id.
    pub command_id: Uuid,
    /// The aggregate (stream) id.
    pub stream_id: String,
    /// The stream's version after the command (for a refusal: the version it was decided at).
    pub stream_version: u64,
    /// What the aggregate decided.
    pub decision: Decision,
    /// True when this is the recorded reply to an earlier send of the same idempotency key.
    #[serde(default)]
    pub replayed: bool,
}

/// What an aggregate decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Decision {
    /// The command was accepted and these events were stored (none: accepted as a no-op).
    Accepted {
        /// The events, in stream order.
        events: Vec<EmittedEvent>,
    },
    /// A business rule refused it (HTTP 422).
    Rejected {
        /// The plugin's message.
        reason: String,
    },
    /// The plugin could not understand it (HTTP 400).
    Invalid {
        /// The plugin's message.
        reason: String,
    },
}

/// An event a command stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// JSON payload.
    pub data: String,
    /// JSON metadata: correlation/causation/command ids, user, the plugin's content hash.
    pub metadata: String,
    /// Commit time, ms since the epoch.
    pub recorded_at: u64,
    /// The data subject of the event's personal data, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<String>,
    /// The personal data as the plugin emitted it (stored sealed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_data: Option<String>,
}

impl CommandReply {
    /// True when the command was accepted.
    pub fn accepted(&self) -> bool {
        matches!(self.decision, Decision::Accepted { .. })
    }

    /// The stored events (empty unless accepted).
    pub fn events(&self) -> &[EmittedEvent] {
        match &self.decision {
            Decision::Accepted { events } => events,
            _ => &[],
        }
    }

    /// The rejection's or invalidity's message.
    pub fn refusal(&self) -> Option<&str> {
        match &self.decision {
            Decision::Accepted { .. } => None,
            Decision::Rejected { reason } | Decision::Invalid { reason } => Some(reason),
        }
    }

    /// Positions of the first and last stored event.
    pub fn positions(&self) -> Option<(u64, u64)> {
        let events = self.events();
        Some((events.first()?.position, events.last()?.position))
    }
}

/// Why the host could not decide a command. Refusals by the plugin are not here: they are a
/// [`Decision`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No plugin is registered for the type.
    #[error("no aggregate type {aggregate_type:?} is registered")]
    UnknownType {
        /// The type asked for.
        aggregate_type: String,
    },
    /// The stream moved on: an explicit expected version did not match, or retries ran out.
    #[error(
        "conflict on {stream_id:?}: expected {expected}, but the stream is at version {actual} \
         (after {attempts} attempts)"
    )]
    Conflict {
        /// The aggregate id.
        stream_id: String,
        /// What was expected.
        expected: ExpectedVersion,
        /// The stream's version.
        actual: u64,
        /// How many times the command was decided.
        attempts: u32,
    },
    /// The aggregate plugin failed (trap, limit); other aggregates are unaffected.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The aggregate's state could not be built.
    #[error("cannot build the state of {stream_id:?}: {source}")]
    State {
        /// The aggregate id.
        stream_id: String,
        /// Why.
        source: StateError,
    },
    /// The append failed for another reason than a version conflict.
    #[error(transparent)]
    Append(AppendError),
    /// The plugin used a feature this host does not implement yet.
    #[error("{0}")]
    Unsupported(String),
    /// Recording or reading an idempotency key failed.
    #[error("{0}")]
    Idempotency(String),
    /// The pipeline is shutting down.
    #[error("the command pipeline is closed")]
    Closed,
}

/// Why a state or history query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No plugin is registered for the type.
    #[error("no aggregate type {aggregate_type:?} is registered")]
    UnknownType {
        /// The type asked for.
        aggregate_type: String,
    },
    /// The state could not be built.
    #[error(transparent)]
    State(#[from] StateError),
    /// The plugin's state is not JSON.
    #[error("plugin \"{plugin}\" returned a state that is not JSON: {message}")]
    BadState {
        /// The plugin.
        plugin: String,
        /// The parser's message.
        message: String,
    },
    /// Snapshot storage failed (on demand snapshots).
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The type was swapped or purged while the snapshot was built; nothing was stored.
    #[error("aggregate type {0:?} changed while its snapshot was built; try again")]
    Purged(String),
    /// The blocking task died.
    #[error("the query task failed: {0}")]
    Task(String),
}

/// Why the pipeline could not start or a plugin could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// `Aggregates::new` was called outside a tokio runtime.
    #[error("the command pipeline must be started inside a tokio runtime")]
    NoRuntime,
    /// A worker thread could not be spawned.
    #[error("cannot start a command worker: {0}")]
    Spawn(String),
    /// The type is already registered (use `swap` to replace its plugin).
    #[error("aggregate type {0:?} is already registered")]
    Duplicate(String),
    /// `swap` for a type that was never registered.
    #[error("no aggregate type {0:?} is registered")]
    UnknownType(String),
}

/// An aggregate's state as of some point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggregateState {
    /// The aggregate type.
    pub aggregate_type: String,
    /// The aggregate (stream) id.
    pub stream_id: String,
    /// The stream version the state covers (0: no events).
    pub version: u64,
    /// The position of the event at `version` (0: none).
    pub position: u64,
    /// When it was recorded (0: none).
    pub recorded_at: u64,
    /// The plugin's `state()`.
    pub state: serde_json::Value,
    /// The snapshot version the build started from, if any.
    pub from_snapshot: Option<u64>,
}

/// One step of an aggregate's audit history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    /// The event as stored.
    pub event: RecordedEvent,
    /// The state right after it.
    pub state: serde_json::Value,
}

/// Which part of an aggregate's history to answer ([`Aggregates::history`](super::Aggregates::history)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPage {
    /// The first stream version (1: from the start).
    pub from_version: u64,
    /// The most entries.
    pub limit: usize,
    /// The bytes of events and states after which the page ends (after at least one entry).
    pub max_bytes: usize,
}

impl HistoryPage {
    /// The whole history, unbounded: for tools that read a stopped store.
    pub fn all() -> HistoryPage {
        HistoryPage {
            from_version: 1,
            limit: usize::MAX,
            max_bytes: usize::MAX,
        }
    }
}

/// Counters of the pipeline since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PipelineStats {
    /// Commands decided (each retry counts again).
    pub decisions: u64,
    /// Decisions whose state came from a worker's cache.
    pub cache_hits: u64,
    /// States built from the store (snapshot + events, or all events).
    pub rebuilds: u64,
    /// Commands decided again after a version conflict.
    pub retries: u64,
    /// Snapshots taken by the interval rule.
    pub snapshots: u64,
}
