//! What callers see of reactors: their config, status and errors.

use std::time::Duration;

use eshost_runtime::{PluginError, QueryError};
use serde::{Deserialize, Serialize};

/// Where a reactor starts reading when it has no checkpoint yet, or where a swapped version
/// goes on from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// The head of the log: only events from now on (the default; a new reactor never acts on
    /// history).
    #[default]
    Head,
    /// Position 1: every event in the log.
    Beginning,
    /// The position the reactor got to (swaps only; a new reactor starts at the head).
    Checkpoint,
    /// After this position (a chosen point, after a dry run).
    After(u64),
}

impl std::fmt::Display for StartAt {
    /// As `?from=` spells it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartAt::Head => f.write_str("head"),
            StartAt::Beginning => f.write_str("beginning"),
            StartAt::Checkpoint => f.write_str("checkpoint"),
            StartAt::After(position) => write!(f, "{position}"),
        }
    }
}

impl std::str::FromStr for StartAt {
    type Err = String;

    /// `checkpoint`, `head`, `beginning` or a position (after it), as `?from=` spells it.
    fn from_str(text: &str) -> Result<StartAt, String> {
        match text {
            "checkpoint" => Ok(StartAt::Checkpoint),
            "head" => Ok(StartAt::Head),
            "beginning" => Ok(StartAt::Beginning),
            other => other.parse().map(StartAt::After).map_err(|_| {
                format!("{other:?}: expected checkpoint, head, beginning or a position")
            }),
        }
    }
}

/// How one reactor runs.
#[derive(Debug, Clone)]
pub struct ReactorConfig {
    /// The reactor's name; its plugin describes itself with it.
    pub name: String,
    /// Events per `handle` call.
    pub batch: usize,
    /// Tries of a failing batch (then of the failing event alone) before the failure policy.
    pub attempts: u32,
    /// Park the failing event as a dead letter and go on, rather than stop at it.
    pub dead_letter: bool,
    /// Where a reactor without a checkpoint starts.
    pub start: StartAt,
    /// The first retry's wait; it doubles up to `max_backoff`.
    pub backoff: Duration,
    /// The longest wait between retries.
    pub max_backoff: Duration,
}

impl ReactorConfig {
    /// A reactor named `name` with the defaults: batches of 100, 5 attempts, stop on failure,
    /// start at the head.
    pub fn new(name: &str) -> ReactorConfig {
        ReactorConfig {
            name: name.to_owned(),
            batch: 100,
            attempts: 5,
            dead_letter: false,
            start: StartAt::Head,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What a reactor is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReactorState {
    /// Following the log.
    Running,
    /// Paused by an operator.
    Paused,
    /// Stopped at a failing event (or retrying it: see `last_error`).
    Failed,
}

/// A reactor's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReactorStatus {
    /// The reactor.
    pub name: String,
    /// Running, paused or failed.
    pub state: ReactorState,
    /// The last position whose intents are carried out.
    pub checkpoint: u64,
    /// The head of the log.
    pub head: u64,
    /// The plugin's version (its own text) and content hash.
    pub version: String,
    /// The plugin's content hash.
    pub content_hash: String,
    /// Commands sent since the host started (a redelivered one counts again).
    pub commands_sent: u64,
    /// Events appended to its own streams since the host started.
    pub events_appended: u64,
    /// Timers recorded and not fired yet.
    pub timers_pending: usize,
    /// Events parked as dead letters.
    pub dead_letters: u64,
    /// The failing event's position, when stopped.
    pub failed_at: Option<u64>,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// Why a reactor call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReactorError {
    /// No reactor of that name runs here.
    #[error("no reactor named {0:?}")]
    Unknown(String),
    /// A reactor of that name runs already.
    #[error("a reactor named {0:?} runs already")]
    Duplicate(String),
    /// The plugin is not this reactor.
    #[error("{0}")]
    BadPlugin(String),
    /// The query failed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The plugin could not be instantiated.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// `views.redb` failed.
    #[error("reactor {name:?}: {message}")]
    Views {
        /// The reactor.
        name: String,
        /// What failed.
        message: String,
    },
    /// The reactor's thread is gone (the host is stopping).
    #[error("reactor {0:?} is stopped")]
    Stopped(String),
}
