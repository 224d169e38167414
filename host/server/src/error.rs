//! API errors: a status and a JSON body `{error, message}` (plus `actual_version` on a
//! conflict).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use eshost_core::aggregate::{CommandError, QueryError as StateQueryError, StateError};
use eshost_core::projection::{ProjectionHostError, QueryFailure};
use eshost_runtime::QueryError as PluginQueryError;
use eshost_store::{AppendError, ReadError};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short machine-readable code, e.g. `conflict`.
    pub error: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// On a conflict: the stream's actual version.
    pub actual_version: Option<u64>,
}

impl ApiError {
    /// An error with `status` and code `error`.
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            message: message.into(),
            actual_version: None,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500: a real fault of the host or a plugin.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    fn conflict(message: String, actual: u64) -> Self {
        ApiError {
            actual_version: Some(actual),
            ..ApiError::new(StatusCode::CONFLICT, "conflict", message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.error, "message": self.message });
        if let Some(actual) = self.actual_version {
            body["actual_version"] = actual.into();
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<AppendError> for ApiError {
    fn from(error: AppendError) -> Self {
        match &error {
            AppendError::Invalid(_) => ApiError::bad_request(error.to_string()),
            AppendError::Conflict { actual, .. } => ApiError::conflict(error.to_string(), *actual),
            AppendError::DuplicateEventId { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "duplicate_event_id",
                error.to_string(),
            ),
            AppendError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                error.to_string(),
            ),
            AppendError::Seal(eshost_store::keys::SealError::Forgotten { .. }) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "subject_forgotten",
                error.to_string(),
            ),
            _ => ApiError::internal(error.to_string()),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Invalid(_) => ApiError::bad_request(error.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match &error {
            CommandError::UnknownType { .. } => ApiError::not_found(error.to_string()),
            CommandError::Conflict { actual, .. } => ApiError::conflict(error.to_string(), *actual),
            CommandError::Append(append) => append.clone().into(),
            CommandError::State {
                source: StateError::Read(ReadError::Invalid(_)),
                ..
            } => ApiError::bad_request(error.to_string()),
            CommandError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                error.to_string(),
            ),
            _ => ApiError::internal(error.to_string()),
        }
    }
}

impl From<StateQueryError> for ApiError {
    fn from(error: StateQueryError) -> Self {
        match &error {
            StateQueryError::UnknownType { .. } => ApiError::not_found(error.to_string()),
            StateQueryError::State(StateError::Read(ReadError::Invalid(_))) => {
                ApiError::bad_request(error.to_string())
            }
            _ => ApiError::internal(error.to_string()),
        }
    }
}

impl From<ProjectionHostError> for ApiError {
    fn from(error: ProjectionHostError) -> Self {
        match &error {
            ProjectionHostError::Unknown(_) => ApiError::not_found(error.to_string()),
            ProjectionHostError::Load(_) | ProjectionHostError::WrongName { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_plugin", error.to_string())
            }
            ProjectionHostError::Stopped(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                error.to_string(),
            ),
            _ => ApiError::internal(error.to_string()),
        }
    }
}

impl From<QueryFailure> for ApiError {
    fn from(error: QueryFailure) -> Self {
        match &error {
            QueryFailure::Unknown(_) => ApiError::not_found(error.to_string()),
            QueryFailure::Query(PluginQueryError::UnknownQuery { .. }) => {
                ApiError::not_found(error.to_string())
            }
            QueryFailure::Query(PluginQueryError::InvalidArgs { .. }) => {
                ApiError::bad_request(error.to_string())
            }
            _ => ApiError::internal(error.to_string()),
        }
    }
}
