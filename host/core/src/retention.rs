//! The retention schedule: a running host moves events older than `[archive] after_days`
//! into archive segments, once at start and then every `every_secs`.
//!
//! It runs beside the live writer: the directory store archives only what its checkpointer
//! has already copied into `events.redb`, publishes the new segments to readers before the
//! hot records go, and deletes them in one redb transaction (see `eshost_store::archive`);
//! PostgreSQL writes a segment and slims its rows in one transaction, one node at a time
//! (every node of a cluster runs the schedule; the first finds the work, the rest find it
//! done). No read ever meets a hole.

use std::sync::Arc;

use eshost_store::{ArchiveCut, EventStore, now_ms};

use crate::config::ArchivePolicy;

/// Start the schedule (nothing when `policy` is off); it ends when `stop` turns true.
pub fn start(
    store: Arc<dyn EventStore>,
    policy: ArchivePolicy,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(keep_hot) = policy.keep_hot() else {
        return;
    };
    tokio::spawn(async move {
        loop {
            let cut = now_ms().saturating_sub(keep_hot.as_millis() as u64);
            let store = store.clone();
            let ran =
                tokio::task::spawn_blocking(move || store.archive(ArchiveCut::BeforeTime(cut)))
                    .await;
            match ran {
                Ok(Ok(archived)) if archived.events > 0 => tracing::info!(
                    events = archived.events,
                    segments = archived.segments.len(),
                    archived_through = archived.archived_through,
                    "archived events older than {} days",
                    policy.after_days.unwrap_or_default()
                ),
                Ok(Ok(_)) => {}
                // The events stay hot; the next round tries again.
                Ok(Err(error)) => tracing::error!(%error, "archiving failed"),
                Err(error) => tracing::error!(%error, "archiving stopped"),
            }
            tokio::select! {
                _ = tokio::time::sleep(policy.every()) => {}
                _ = stop.changed() => return,
            }
        }
    });
}
