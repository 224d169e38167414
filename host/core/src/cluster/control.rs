//! Projection control that must reach every node: a rebuild requested through one node is
//! recorded in the system stream `$projections`, performed at once on that node, and by every
//! other node when it follows the stream (a node that was down does it when it is back: it
//! follows from where it left off). Pause and resume stay a node's own business, and so does
//! an operator's skip of a failing event, which is recorded there too (who, why) as the audit
//! trail of what a read model left out.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Followed, HandledHere};
use crate::projection::{ProjectionHostError, Projections};
use eshost_store::{
    AppendRequest, EventStore, ExpectedVersion, ProposedEvent, RecordedEvent, block_on,
};

/// The system stream of projection control requests.
pub const PROJECTIONS_STREAM: &str = "$projections";
/// The type of a rebuild request.
pub const REBUILD_EVENT: &str = "ProjectionRebuildRequested";

/// The type of an operator's skip of a failing event.
pub const SKIP_EVENT: &str = "ProjectionEventSkipped";

/// An operator's skip, as recorded: the audit trail of events a read model left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipRecord {
    /// The projection.
    pub name: String,
    /// The skipped event's position.
    pub position: u64,
    /// Why.
    pub reason: String,
    /// Who.
    pub user: Option<String>,
    /// The node it was skipped on.
    pub node: String,
}

/// A rebuild request, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildRequest {
    /// The projection.
    pub name: String,
    /// Who asked.
    pub user: Option<String>,
    /// The node that took the request.
    pub node: String,
}

/// Cluster-wide projection control. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ProjectionControl {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn EventStore>,
    projections: Projections,
    node: String,
    followed: Followed,
    handled: HandledHere,
}

impl ProjectionControl {
    /// Control over `projections`, following `$projections` from where this node left off (on
    /// its first start: from `head`), until `stop`.
    pub fn start(
        store: Arc<dyn EventStore>,
        views: &crate::views::Views,
        projections: Projections,
        node: String,
        head: u64,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<ProjectionControl, String> {
        let followed = Followed::new(views, "projections");
        let from = match followed.get()? {
            Some(position) => position + 1,
            None => {
                followed.set(head)?;
                head + 1
            }
        };
        let control = ProjectionControl {
            inner: Arc::new(Inner {
                store: store.clone(),
                projections,
                node,
                followed,
                handled: HandledHere::default(),
            }),
        };
        let this = control.clone();
        super::follow(
            store,
            PROJECTIONS_STREAM,
            REBUILD_EVENT,
            from,
            stop,
            move |event| {
                let this = this.clone();
                async move {
                    let _ = tokio::task::spawn_blocking(move || this.apply(&event)).await;
                }
            },
        );
        Ok(control)
    }

    /// Rebuilds `name` on every node: records the request and rebuilds here. Returns the new
    /// generation here. Blocking.
    pub fn rebuild(&self, name: &str, user: Option<String>) -> Result<u64, ProjectionHostError> {
        let inner = &self.inner;
        if inner.projections.config(name).is_none() {
            return Err(ProjectionHostError::Unknown(name.to_owned()));
        }
        let request = RebuildRequest {
            name: name.to_owned(),
            user,
            node: inner.node.clone(),
        };
        let data = serde_json::to_string(&request).expect("a request serialises");
        let append = AppendRequest::new(
            PROJECTIONS_STREAM,
            ExpectedVersion::Any,
            vec![ProposedEvent::new(REBUILD_EVENT, data)],
        );
        let appended = block_on(inner.store.append_system(append)).map_err(|error| {
            ProjectionHostError::Views {
                name: name.to_owned(),
                message: format!("recording the rebuild in {PROJECTIONS_STREAM}: {error}"),
            }
        })?;
        inner.handled.insert(appended.first_position);
        inner.projections.rebuild(name)
    }

    /// Skips the event at `position` that `name` is stopped at on this node (parked as a
    /// dead letter), then records who skipped it and why in `$projections`. Blocking.
    pub fn skip(
        &self,
        name: &str,
        position: u64,
        reason: &str,
        user: Option<String>,
    ) -> Result<(), ProjectionHostError> {
        let inner = &self.inner;
        inner.projections.skip(name, position, reason)?;
        let record = SkipRecord {
            name: name.to_owned(),
            position,
            reason: reason.to_owned(),
            user,
            node: inner.node.clone(),
        };
        let data = serde_json::to_string(&record).expect("a record serialises");
        let append = AppendRequest::new(
            PROJECTIONS_STREAM,
            ExpectedVersion::Any,
            vec![ProposedEvent::new(SKIP_EVENT, data)],
        );
        block_on(inner.store.append_system(append)).map_err(|error| {
            ProjectionHostError::Views {
                name: name.to_owned(),
                message: format!(
                    "the event was skipped, but recording it in {PROJECTIONS_STREAM} failed: {error}"
                ),
            }
        })?;
        Ok(())
    }

    fn apply(&self, event: &RecordedEvent) {
        let inner = &self.inner;
        if !inner.handled.take(event.position) {
            match serde_json::from_str::<RebuildRequest>(&event.data) {
                Ok(request) if inner.projections.config(&request.name).is_some() => {
                    match inner.projections.rebuild(&request.name) {
                        Ok(generation) => {
                            tracing::info!(projection = %request.name, generation, node = %request.node, "rebuild requested through another node")
                        }
                        Err(error) => {
                            tracing::warn!(projection = %request.name, %error, "a rebuild requested through another node failed")
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(position = event.position, %error, "a malformed rebuild request is ignored")
                }
            }
        }
        if let Err(error) = inner.followed.set(event.position) {
            tracing::warn!(%error, "recording how far {PROJECTIONS_STREAM} was followed failed");
        }
    }
}
