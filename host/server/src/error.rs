//! API errors: an [`ErrorCode`] (which fixes the status) and a message, answered as the JSON
//! [`ErrorBody`] `{error, message}` (plus `actual_version` on a conflict).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eshost_api::{ErrorBody, ErrorCode};

use eshost_core::aggregate::{CommandError, QueryError as StateQueryError, StateError};
use eshost_core::cluster::plugins::ActivateError;
use eshost_core::privacy::ForgetError;
use eshost_core::projection::{ProjectionHostError, QueryFailure};
use eshost_core::reactor::ReactorError;
use eshost_runtime::QueryError as PluginQueryError;
use eshost_store::{AppendError, ReadError};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError(pub ErrorBody);

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(ErrorBody::new(code, message))
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::NotFound, message)
    }

    /// 500: a real fault of the host or a plugin.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Internal, message)
    }

    /// 413.
    pub fn too_large() -> Self {
        ApiError::new(
            ErrorCode::TooLarge,
            "the request body is larger than the host accepts",
        )
    }

    fn conflict(message: String, actual: u64) -> Self {
        let mut error = ApiError::new(ErrorCode::Conflict, message);
        error.0.actual_version = Some(actual);
        error
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.0.error
    }

    /// The HTTP status of the code.
    pub fn status(&self) -> StatusCode {
        status_of(self.0.error)
    }
}

/// The status of an error code: [`ErrorCode::status`] decides, exhaustively.
pub fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Seconds a client is asked to wait before retrying a write the read-only store refused.
pub const READ_ONLY_RETRY_AFTER_SECS: u64 = 5;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // A 500 is a fault of the host or a plugin: the operator sees it in the log, not only
        // the client.
        if self.0.error == ErrorCode::Internal {
            tracing::error!(cause = %self.0.message, "answered 500");
        }
        let retry_after = (self.0.error == ErrorCode::ReadOnly).then_some([(
            axum::http::header::RETRY_AFTER,
            READ_ONLY_RETRY_AFTER_SECS.to_string(),
        )]);
        (self.status(), retry_after, Json(self.0)).into_response()
    }
}

impl From<AppendError> for ApiError {
    fn from(error: AppendError) -> Self {
        match &error {
            AppendError::Invalid(_) => ApiError::bad_request(error.to_string()),
            AppendError::Conflict { actual, .. } => ApiError::conflict(error.to_string(), *actual),
            AppendError::DuplicateEventId { .. } => {
                ApiError::new(ErrorCode::DuplicateEventId, error.to_string())
            }
            AppendError::Closed => ApiError::new(ErrorCode::Unavailable, error.to_string()),
            AppendError::ReadOnly { .. } => ApiError::new(ErrorCode::ReadOnly, error.to_string()),
            AppendError::Seal(eshost_store::keys::SealError::Forgotten { .. }) => {
                ApiError::new(ErrorCode::SubjectForgotten, error.to_string())
            }
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
            CommandError::State {
                source: StateError::ForeignStream { .. },
                ..
            } => ApiError::new(ErrorCode::Conflict, error.to_string()),
            CommandError::Closed => ApiError::new(ErrorCode::Unavailable, error.to_string()),
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
            StateQueryError::Purged(_)
            | StateQueryError::State(StateError::ForeignStream { .. }) => {
                ApiError::new(ErrorCode::Conflict, error.to_string())
            }
            _ => ApiError::internal(error.to_string()),
        }
    }
}

impl From<ActivateError> for ApiError {
    fn from(error: ActivateError) -> Self {
        match error {
            ActivateError::Unknown(_) => ApiError::not_found(error.to_string()),
            ActivateError::BadPlugin(_) | ActivateError::Chain { .. } => {
                ApiError::new(ErrorCode::BadPlugin, error.to_string())
            }
            ActivateError::CheckFailed(ref report) => {
                let mut api_error = ApiError::new(ErrorCode::CheckFailed, error.to_string());
                api_error.0.check = Some(Box::new(crate::wire::check_report(report)));
                api_error
            }
            ActivateError::UnknownVersion { .. } => ApiError::not_found(error.to_string()),
            ActivateError::Projection(error) => error.into(),
            ActivateError::Reactor(error) => error.into(),
            ActivateError::Store { .. } => ApiError::internal(error.to_string()),
        }
    }
}

impl From<ProjectionHostError> for ApiError {
    fn from(error: ProjectionHostError) -> Self {
        match &error {
            ProjectionHostError::Unknown(_) => ApiError::not_found(error.to_string()),
            ProjectionHostError::Load(_) | ProjectionHostError::WrongName { .. } => {
                ApiError::new(ErrorCode::BadPlugin, error.to_string())
            }
            ProjectionHostError::Stopped(_) => {
                ApiError::new(ErrorCode::Unavailable, error.to_string())
            }
            ProjectionHostError::NotStoppedAt { .. } => {
                ApiError::new(ErrorCode::Conflict, error.to_string())
            }
            _ => ApiError::internal(error.to_string()),
        }
    }
}

impl From<ReactorError> for ApiError {
    fn from(error: ReactorError) -> Self {
        match &error {
            ReactorError::Unknown(_) => ApiError::not_found(error.to_string()),
            ReactorError::BadPlugin(_) | ReactorError::Duplicate(_) => {
                ApiError::new(ErrorCode::BadPlugin, error.to_string())
            }
            ReactorError::Query(PluginQueryError::UnknownQuery { .. }) => {
                ApiError::not_found(error.to_string())
            }
            ReactorError::Query(PluginQueryError::InvalidArgs { .. }) => {
                ApiError::bad_request(error.to_string())
            }
            ReactorError::Stopped(_) => ApiError::new(ErrorCode::Unavailable, error.to_string()),
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

impl From<ForgetError> for ApiError {
    fn from(error: ForgetError) -> Self {
        match error {
            ForgetError::InvalidSubject { .. } => ApiError::bad_request(error.to_string()),
            ForgetError::Failed { .. } => ApiError::internal(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_its_own_status() {
        for code in ErrorCode::ALL {
            assert_eq!(status_of(code).as_u16(), code.status(), "{code:?}");
        }
    }
}
