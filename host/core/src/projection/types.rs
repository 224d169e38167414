//! What callers see of projections: their config, status, the outcome of a swap, and errors.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use eshost_runtime::{Limits, LoadError, QueryError};

/// How one projection runs.
#[derive(Debug, Clone)]
pub struct ProjectionConfig {
    /// The projection's name; the plugin must describe itself with it.
    pub name: String,
    /// The component file.
    pub plugin: PathBuf,
    /// The most events passed to one `handle` call (and committed in one transaction).
    pub batch: usize,
    /// How many times a failing event is tried before the projection stops (or parks it).
    pub attempts: u32,
    /// The wait before the first retry; it doubles per attempt.
    pub backoff: Duration,
    /// The longest wait between retries.
    pub max_backoff: Duration,
    /// Park an event that keeps failing in the dead-letter table and go on, instead of
    /// stopping at it.
    pub dead_letter: bool,
    /// The plugin's own sandbox limits (every version of it, loaded and run under them);
    /// `None`: the runtime's.
    pub limits: Option<Limits>,
}

impl ProjectionConfig {
    /// `batch` unless configured.
    pub const DEFAULT_BATCH: usize = 2_000;
    /// `attempts` unless configured.
    pub const DEFAULT_ATTEMPTS: u32 = 5;

    /// Defaults: batches of [`DEFAULT_BATCH`](Self::DEFAULT_BATCH) events,
    /// [`DEFAULT_ATTEMPTS`](Self::DEFAULT_ATTEMPTS) attempts from 100 ms backoff (at most
    /// 10 s), stop at a failing event, the runtime's limits.
    pub fn new(name: impl Into<String>, plugin: impl Into<PathBuf>) -> Self {
        ProjectionConfig {
            name: name.into(),
            plugin: plugin.into(),
            batch: Self::DEFAULT_BATCH,
            attempts: Self::DEFAULT_ATTEMPTS,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            dead_letter: false,
            limits: None,
        }
    }
}

/// What a projection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectionState {
    /// Following the log.
    Running,
    /// Paused by an operator.
    Paused,
    /// Stopped at an event that kept failing; see `last_error`.
    Failed,
    /// A new generation is being built beside the active one.
    Rebuilding,
}

/// One generation of a projection, as the status shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerationStatus {
    /// The generation number.
    pub generation: u64,
    /// The plugin's own version.
    pub version: String,
    /// The plugin's content hash.
    pub hash: String,
    /// The last position whose effects are committed.
    pub position: u64,
    /// `head - position`.
    pub lag: u64,
    /// Set when this generation stopped at a failing event.
    pub failed: Option<String>,
    /// The position of the event it is stopped at, if it is (what a skip names).
    pub failed_at: Option<u64>,
}

/// The status of a projection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectionStatus {
    /// The projection.
    pub name: String,
    /// What it is doing.
    pub state: ProjectionState,
    /// The active generation's checkpoint.
    pub position: u64,
    /// The store's head when the status was taken.
    pub head: u64,
    /// `head - position`.
    pub lag: u64,
    /// Positions processed per second, recently (active and shadow together).
    pub events_per_sec: f64,
    /// The last error of any event, upcast, read-model or swap failure (kept after recovery).
    pub last_error: Option<String>,
    /// The generation queries read.
    pub active: GenerationStatus,
    /// The generation being rebuilt, if any.
    pub rebuild: Option<GenerationStatus>,
    /// Events parked in the active generation's dead-letter table.
    pub dead_letters: u64,
    /// Batches (and single events retried alone) that failed since the host started: a
    /// plugin, upcast or read-model error, or I/O. Retries count again.
    pub failed_batches: u64,
}

/// How [`Projections::swap`] brings in a new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SwapMode {
    /// Build a new generation from position 0 while the old one serves; switch when it has
    /// caught up (the default: the new code may read history differently).
    #[default]
    Rebuild,
    /// Keep the active read model and checkpoint and go on with the new code from there: for
    /// a fix to an event the old version failed on.
    Continue,
}

/// What a swap did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapOutcome {
    /// The new version is rebuilding in this generation.
    Rebuilding {
        /// The new generation.
        generation: u64,
    },
    /// The new code took over the active generation.
    Continued,
    /// The file is the version already running (same content hash): nothing changed.
    Unchanged,
}

/// Why a projection could not be started, swapped or controlled.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionHostError {
    /// No projection of that name is configured.
    #[error("no projection named {0:?}")]
    Unknown(String),
    /// A projection of that name is already running.
    #[error("projection {0:?} is already running")]
    AlreadyRunning(String),
    /// The plugin file could not be read.
    #[error("cannot read plugin file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The plugin could not be loaded (not a component, another world, traps in describe...).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The plugin describes itself with another name.
    #[error("plugin file {file} is projection {found:?}, not {expected:?}")]
    WrongName {
        /// The file or label.
        file: String,
        /// The configured name.
        expected: String,
        /// What it says it is.
        found: String,
    },
    /// `views.redb` failed.
    #[error("projection {name:?}: views database: {message}")]
    Views {
        /// The projection.
        name: String,
        /// The error.
        message: String,
    },
    /// The runner has stopped.
    #[error("projection {0:?} is not running")]
    Stopped(String),
    /// A skip named an event the projection is not stopped at.
    #[error("projection {name:?} is not stopped at position {position}{}", match stopped_at {
        Some(at) => format!(" (it is stopped at position {at})"),
        None => " (it is not stopped)".to_owned(),
    })]
    NotStoppedAt {
        /// The projection.
        name: String,
        /// The position asked for.
        position: u64,
        /// Where its active generation is stopped, if it is.
        stopped_at: Option<u64>,
    },
}

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryFailure {
    /// No projection of that name.
    #[error("no projection named {0:?}")]
    Unknown(String),
    /// The plugin answered with an error or failed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// `views.redb` failed.
    #[error("views database: {0}")]
    Views(String),
}
