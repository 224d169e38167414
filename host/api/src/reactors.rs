//! Reactors: status, queries, control and swaps.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// What a reactor is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReactorState {
    /// Following the log.
    Running,
    /// Paused by an operator.
    Paused,
    /// Stopped at a failing event (`failed_at`, `last_error`).
    Failed,
}

/// `GET /reactors/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReactorStatus {
    /// The reactor.
    pub name: String,
    /// Running, paused or failed.
    pub state: ReactorState,
    /// The last position whose intents are carried out.
    pub checkpoint: u64,
    /// The head of the log.
    pub head: u64,
    /// `head - checkpoint`.
    pub lag: u64,
    /// The plugin's own version text.
    pub version: String,
    /// The plugin's content hash.
    pub content_hash: String,
    /// Commands sent since the host started.
    pub commands_sent: u64,
    /// Events appended to its own streams since the host started.
    pub events_appended: u64,
    /// Timers recorded and not fired yet.
    pub timers_pending: u64,
    /// Events parked as dead letters.
    pub dead_letters: u64,
    /// The failing event's position, when stopped.
    pub failed_at: Option<u64>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// The stream its outcomes and timers are recorded in (`$reactor-{name}`).
    pub stream: String,
}

/// `GET /reactors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReactorList {
    /// Every reactor's status.
    pub reactors: Vec<ReactorStatus>,
}

/// `PUT /reactors/{name}` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReactorSwapQuery {
    /// Where the new version goes on from: `checkpoint` (the default: where the old one got
    /// to), `head` (only events from now on), `beginning`, or a position (after it). Earlier
    /// events are delivered again; their commands are not sent twice (the same keys), but
    /// intents the old version did not produce are carried out.
    #[serde(default)]
    pub from: Option<String>,
}
