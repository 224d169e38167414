//! Projections: status, queries and control.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// What a projection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

/// One generation of a projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
    /// The position of the event it is stopped at, if it is (what `POST /projections/{name}/skip` names).
    #[serde(default)]
    pub failed_at: Option<u64>,
}

/// The status of a projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
    /// Positions processed per second, recently.
    pub events_per_sec: f64,
    /// The last error of any event, upcast, read-model or swap failure.
    pub last_error: Option<String>,
    /// The generation queries read.
    pub active: GenerationStatus,
    /// The generation being rebuilt, if any.
    pub rebuild: Option<GenerationStatus>,
    /// Events parked in the active generation's dead-letter table.
    pub dead_letters: u64,
}

/// `GET /projections`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProjectionList {
    /// Every projection's status.
    pub projections: Vec<ProjectionStatus>,
}

/// `GET /projections/{name}/query/{query}` parameters: the arguments as one JSON value in
/// `args`, or each argument as a parameter of its own (a value that parses as JSON other
/// than a string is taken as that JSON; anything else as a string).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueryArgs {
    /// The arguments, a JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
}

/// What a projection's query answered: any JSON value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct QueryAnswer(pub Value);

/// `POST /projections/{name}/pause` (202).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProjectionPaused {
    /// The projection.
    pub paused: String,
    /// Its status once the runner acted on the pause.
    pub status: Option<ProjectionStatus>,
}

/// `POST /projections/{name}/resume` (202).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProjectionResumed {
    /// The projection.
    pub resumed: String,
    /// Its status once the runner acted on the resume.
    pub status: Option<ProjectionStatus>,
}

/// `POST /projections/{name}/skip` body: the event a stopped projection is to leave out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkipRequest {
    /// The position of the event the projection is stopped at.
    pub position: u64,
    /// Why (recorded in `$projections` with who asked; keep personal data out).
    pub reason: String,
}

/// `POST /projections/{name}/skip` (200): the event is parked as a dead letter and the
/// projection runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProjectionSkipped {
    /// The projection.
    pub skipped: String,
    /// The position of the event left out.
    pub position: u64,
    /// Its status once the runner acted.
    pub status: Option<ProjectionStatus>,
}

/// `POST /projections/{name}/rebuild` (202).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProjectionRebuilding {
    /// The projection.
    pub rebuilding: String,
    /// The generation being built from position 0.
    pub generation: u64,
}
