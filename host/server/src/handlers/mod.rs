//! The handlers behind the routes of [`super::ROUTES`], one module per concept.

pub(super) mod commands;
pub(super) mod forgetting;
pub(super) mod operations;
pub(super) mod plugins;
pub(super) mod projections;
pub(super) mod reactors;
pub(super) mod streams;
pub(super) mod subscriptions;

use axum::Extension;
use axum::http::HeaderMap;
use eshost_core::access::disclose;

use super::Caller;

/// Whether the caller may see decrypted personal data (the core's one rule).
fn discloses(caller: &Option<Extension<Caller>>) -> bool {
    eshost_core::access::discloses(caller.as_ref().map(|c| &c.0))
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A blocking task's panic as a 500.
fn joined(error: tokio::task::JoinError) -> super::ApiError {
    super::ApiError::internal(format!("a blocking task failed: {error}"))
}
