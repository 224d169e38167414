//! The handlers behind the routes of [`super::ROUTES`], one module per concept.

pub(super) mod commands;
pub(super) mod forgetting;
pub(super) mod operations;
pub(super) mod plugins;
pub(super) mod projections;
pub(super) mod streams;
pub(super) mod subscriptions;

use axum::Extension;
use axum::http::HeaderMap;
use eshost_store::{EventStore, RecordedEvent};

use super::Caller;

/// Whether the caller may see decrypted personal data: tokens must say so; without
/// tokens (open, loopback only) everyone may.
fn discloses(caller: &Option<Extension<Caller>>) -> bool {
    caller.as_ref().is_none_or(|caller| caller.personal_data)
}

/// Decrypt the personal data of `events` for a caller allowed to see it; for others, only
/// whether it was shredded.
fn disclose(store: &dyn EventStore, events: &mut [RecordedEvent], allowed: bool) {
    for event in events.iter_mut().filter(|e| e.sealed.is_some()) {
        store.reveal_owned(event);
        if !allowed {
            event.personal_data = None;
        }
    }
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
