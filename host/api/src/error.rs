//! Every error answer: `{error, message}`, with `actual_version` on a conflict, the
//! command's id and version on a rejected command, and the report on a failed check.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::CheckReport;

/// What went wrong, as a machine-readable code. Each code has one HTTP status
/// ([`ErrorCode::status`]): a new code must choose one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: malformed input (JSON, query parameters, ids, headers).
    BadRequest,
    /// 400: the aggregate's plugin did not understand the command.
    InvalidCommand,
    /// 400: an uploaded plugin is not a usable component for that name.
    BadPlugin,
    /// 401: no or an unknown bearer token.
    Unauthorized,
    /// 403: the token's role does not allow the route.
    Forbidden,
    /// 404: no such route, aggregate, stream, projection, query or plugin.
    NotFound,
    /// 405: the route does not take that method.
    MethodNotAllowed,
    /// 409: the stream is not at the expected version (`actual_version` says where it is).
    Conflict,
    /// 409: an event id is stored with other content.
    DuplicateEventId,
    /// 413: the body is larger than the host accepts.
    TooLarge,
    /// 422: a business rule refused the command (`message` is the plugin's).
    Rejected,
    /// 422: personal data for a forgotten subject.
    SubjectForgotten,
    /// 422: a swap that required a clean check of the candidate against history, whose
    /// check found failures (`check` holds the report); nothing was activated.
    CheckFailed,
    /// 500: a fault of the host or of a plugin.
    Internal,
    /// 503: the host is shutting down or a component stopped.
    Unavailable,
    /// 503 with `Retry-After`: an I/O error (a full disk) made the event store read-only;
    /// it takes writes again by itself once the cause is gone. Nothing was written.
    ReadOnly,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidCommand,
        ErrorCode::BadPlugin,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::DuplicateEventId,
        ErrorCode::TooLarge,
        ErrorCode::Rejected,
        ErrorCode::SubjectForgotten,
        ErrorCode::CheckFailed,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
        ErrorCode::ReadOnly,
    ];

    /// The HTTP status of an answer with this code.
    pub const fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidCommand | ErrorCode::BadPlugin => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict | ErrorCode::DuplicateEventId => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::Rejected | ErrorCode::SubjectForgotten | ErrorCode::CheckFailed => 422,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable | ErrorCode::ReadOnly => 503,
        }
    }

    /// The code as it is written on the wire, e.g. `not_found`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidCommand => "invalid_command",
            ErrorCode::BadPlugin => "bad_plugin",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::DuplicateEventId => "duplicate_event_id",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Rejected => "rejected",
            ErrorCode::SubjectForgotten => "subject_forgotten",
            ErrorCode::CheckFailed => "check_failed",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ReadOnly => "read_only",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, machine-readable.
    pub error: ErrorCode,
    /// What went wrong, for people (lowercase, naming the thing).
    pub message: String,
    /// On a `conflict`: the stream's actual version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_version: Option<u64>,
    /// On a `rejected` command: the stream version it was decided at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_version: Option<u64>,
    /// On a `rejected` command: its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    /// On `check_failed`: the candidate's check against history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Box<CheckReport>>,
}

impl ErrorBody {
    /// An error with `code` and `message` and nothing else.
    pub fn new(error: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error,
            message: message.into(),
            actual_version: None,
            stream_version: None,
            command_id: None,
            check: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_written_as_its_name_and_has_an_error_status() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code), "{code:?} listed twice");
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(code.as_str())
            );
            assert!((400..600).contains(&code.status()), "{code:?}");
        }
    }

    #[test]
    fn an_error_body_leaves_out_what_it_does_not_have() {
        let body = ErrorBody::new(ErrorCode::NotFound, "no projection named \"x\"");
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"error": "not_found", "message": "no projection named \"x\""})
        );
    }
}
