//! Erasures on every node: each node follows `$erasures` from where it left off (kept in its
//! `views.redb`) and purges its own derived data for each erasure that another node, or an
//! offline `eshost forget`, recorded; then it reports the position in the node registry. The
//! node that took the request purges at once and answers when every live node has reported
//! (bounded in time; see `Forgetting::forget`). A node that was down purges when it is back.

use super::{Followed, Node};
use crate::privacy::{ERASURE_EVENT, ERASURE_STREAM, Forgetting};
use eshost_store::EventStore;
use std::sync::Arc;

/// Starts following `$erasures` for `forgetting` on `node`, from where this node left off
/// (on its first start: from `head`, since a new node's derived data is built from the log as
/// it is now), until `stop`.
pub fn start(
    store: Arc<dyn EventStore>,
    views: &crate::views::Views,
    forgetting: Forgetting,
    node: Node,
    head: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let followed = Followed::new(views, "erasures");
    let from = match followed.get()? {
        Some(position) => position + 1,
        None => {
            followed.set(head)?;
            head + 1
        }
    };
    node.purged_erasures(from - 1);
    super::follow(
        store,
        ERASURE_STREAM,
        ERASURE_EVENT,
        from,
        stop,
        move |event| {
            let (forgetting, node, followed) = (forgetting.clone(), node.clone(), followed.clone());
            async move {
                let position = event.position;
                let _ = tokio::task::spawn_blocking(move || {
                if !forgetting.handled_here(position) {
                    let subject = serde_json::from_str::<serde_json::Value>(&event.data)
                        .ok()
                        .and_then(|data| data["subject_id"].as_str().map(str::to_owned));
                    match subject {
                        Some(subject) => match forgetting.purge_recorded(&subject, position) {
                            Ok(report) => tracing::info!(%subject, projections = ?report.projections_rebuilt, "erasure recorded elsewhere: purged here"),
                            Err(error) => {
                                // The pending marker stays: the purge finishes on the next start.
                                tracing::error!(%subject, %error, "erasure recorded elsewhere: purge failed")
                            }
                        },
                        None => tracing::warn!(position, "a malformed erasure event is ignored"),
                    }
                }
                if let Err(error) = followed.set(position) {
                    tracing::warn!(%error, "recording how far {ERASURE_STREAM} was followed failed");
                }
                node.purged_erasures(position);
            })
            .await;
            }
        },
    );
    Ok(())
}
