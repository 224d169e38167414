//! Forgetting a data subject (crypto-shredding).
//!
//! The log is never rewritten. Forgetting records the request as an event in `$erasures`,
//! erases the subject's key (so every sealed part of theirs reads as shredded from then on),
//! and then purges what was derived from their decrypted data outside the log: aggregate
//! snapshots and cached states of the streams that held it, and the read models of the
//! projections that handle those events, which are rebuilt from the shredded log.
//!
//! A pending marker in `views.redb` is written first and cleared last, so a crash midway is
//! finished the next time the host starts ([`Forgetting::resume`]).
//!
//! In a cluster every node follows `$erasures` and purges its own derived data
//! (`cluster::erasures`); the node that took the request answers once every live node has
//! reported its purge, or after [`NODES_WAIT`], saying which nodes are done, pending or not
//! live.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregates;
use crate::cluster::{HandledHere, Node, NodeState};
use crate::projection::Projections;
use crate::views::Views;
use eshost_store::{
    AllRead, AppendRequest, EventStore, ExpectedVersion, Forgot, ProposedEvent, block_on,
    keys::check_subject,
};

/// The system stream that records every erasure.
pub const ERASURE_STREAM: &str = "$erasures";
/// The type of the event recorded there.
pub const ERASURE_EVENT: &str = "SubjectForgotten";

/// How long a forget request waits for the other live nodes to report their purge.
pub const NODES_WAIT: Duration = Duration::from_secs(30);

/// Subjects whose purge has begun and not finished, with the erasure event's position.
const PENDING: TableDefinition<&str, u64> = TableDefinition::new("erasures_pending");

/// Who asked to forget, and why; recorded in the erasure event's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetRequest {
    /// Who asked (a token's name, an operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Why, e.g. a ticket number. Must not contain personal data: it is stored in the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What forgetting did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForgetReport {
    /// The subject.
    pub subject_id: String,
    /// What happened to the key.
    pub key: Forgot,
    /// Where the erasure event is in `$all`.
    pub erasure_position: u64,
    /// The streams that held the subject's personal data.
    pub streams: Vec<String>,
    /// The event types that carried it.
    pub event_types: Vec<String>,
    /// Aggregate snapshots deleted.
    pub snapshots_deleted: usize,
    /// Projections rebuilt from the shredded log.
    pub projections_rebuilt: Vec<String>,
    /// Projections whose rebuild had not switched in when the wait ended: their old read
    /// model still serves until it does (the purge finishes by itself, and on restart).
    pub projections_pending: Vec<String>,
    /// Every node sharing the store and whether it has purged (this one first).
    pub nodes: Vec<NodeState>,
}

/// Why forgetting failed. The pending marker stays, so it is finished on the next start.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    /// The subject id breaks the rules.
    #[error("invalid subject id {subject:?}: {reason}")]
    InvalidSubject {
        /// The id.
        subject: String,
        /// Which rule.
        reason: String,
    },
    /// A step failed; what is done stays done and the rest is retried on the next start.
    #[error("forgetting subject {subject:?} failed while {step}: {reason}")]
    Failed {
        /// The subject.
        subject: String,
        /// The step.
        step: &'static str,
        /// The cause.
        reason: String,
    },
}

/// Forgets subjects across the store and everything derived from it.
#[derive(Debug, Clone)]
pub struct Forgetting {
    store: Arc<dyn EventStore>,
    views: Views,
    aggregates: Option<Aggregates>,
    projections: Option<Projections>,
    wait: Duration,
    node: Option<Node>,
    /// Erasures this node recorded and purged itself: its follower skips them.
    handled: Arc<HandledHere>,
    /// Held while a purge runs here, so that the follower of `$erasures` never purges one
    /// that `forget` is purging.
    purging: Arc<Mutex<()>>,
}

impl Forgetting {
    /// Forgetting over `store` and `views`; the running pipelines, when there are any, are
    /// purged too. `wait` bounds how long a call waits for projections to rebuild.
    pub fn new(
        store: Arc<dyn EventStore>,
        views: Views,
        aggregates: Option<Aggregates>,
        projections: Option<Projections>,
        wait: Duration,
    ) -> Self {
        Forgetting {
            store,
            views,
            aggregates,
            projections,
            wait,
            node: None,
            handled: Arc::default(),
            purging: Arc::default(),
        }
    }

    /// The same, on `node` of a cluster: answers list every node's purge.
    pub fn with_node(mut self, node: Node) -> Self {
        self.node = Some(node);
        self
    }

    /// Whether the erasure at `position` was recorded and purged by this node (once true, it
    /// forgets it). Waits for a purge `forget` is running.
    pub(crate) fn handled_here(&self, position: u64) -> bool {
        let _purging = self.purging.lock().unwrap_or_else(|e| e.into_inner());
        self.handled.take(position)
    }

    /// Purges what this node derived from `subject`, whose erasure another node (or an
    /// offline `forget`) recorded at `position`. Blocking.
    pub(crate) fn purge_recorded(
        &self,
        subject: &str,
        position: u64,
    ) -> Result<ForgetReport, ForgetError> {
        let _purging = self.purging.lock().unwrap_or_else(|e| e.into_inner());
        self.mark_pending(subject, position)
            .map_err(|reason| ForgetError::Failed {
                subject: subject.to_owned(),
                step: "marking the purge pending",
                reason,
            })?;
        self.finish(subject, position)
    }

    /// Forget `subject`: record the erasure, erase the key, purge derived data. Blocking.
    pub fn forget(
        &self,
        subject: &str,
        request: &ForgetRequest,
    ) -> Result<ForgetReport, ForgetError> {
        check_subject(subject).map_err(|reason| ForgetError::InvalidSubject {
            subject: subject.to_owned(),
            reason,
        })?;
        let fail = |step: &'static str| {
            move |reason: String| ForgetError::Failed {
                subject: subject.to_owned(),
                step,
                reason,
            }
        };
        let key_before = if self.store.is_forgotten(subject) {
            Forgot::AlreadyForgotten
        } else {
            Forgot::KeyErased
        };
        let mut metadata = serde_json::Map::new();
        if let Some(user) = &request.user {
            metadata.insert("user".into(), user.as_str().into());
        }
        if let Some(reason) = &request.reason {
            metadata.insert("reason".into(), reason.as_str().into());
        }
        let data = serde_json::json!({
            "subject_id": subject,
            "already_forgotten": key_before == Forgot::AlreadyForgotten,
        });
        let event = ProposedEvent::new(ERASURE_EVENT, data.to_string())
            .with_metadata(serde_json::Value::Object(metadata).to_string());
        let mut report = {
            let _purging = self.purging.lock().unwrap_or_else(|e| e.into_inner());
            let appended = block_on(self.store.append_system(AppendRequest::new(
                ERASURE_STREAM,
                ExpectedVersion::Any,
                vec![event],
            )))
            .map_err(|e| fail("recording the erasure")(e.to_string()))?;
            self.handled.insert(appended.first_position);
            self.mark_pending(subject, appended.first_position)
                .map_err(fail("marking the purge pending"))?;
            self.finish(subject, appended.first_position)?
        };
        if let Some(node) = &self.node {
            report.nodes = node.wait_erasures_purged(report.erasure_position, NODES_WAIT);
        }
        Ok(report)
    }

    /// Finish every purge a crash interrupted. Called when the host starts.
    pub fn resume(&self) -> Vec<Result<ForgetReport, ForgetError>> {
        let pending = match self.pending() {
            Ok(pending) => pending,
            Err(reason) => {
                return vec![Err(ForgetError::Failed {
                    subject: String::new(),
                    step: "reading pending erasures",
                    reason,
                })];
            }
        };
        pending
            .into_iter()
            .map(|(subject, position)| {
                tracing::info!(%subject, "finishing an interrupted erasure");
                self.finish(&subject, position)
            })
            .collect()
    }

    /// Subjects whose erasure has not finished, with their erasure event's position.
    pub fn pending(&self) -> Result<Vec<(String, u64)>, String> {
        let txn = self.views.begin_read().map_err(|e| e.to_string())?;
        let table = match txn.open_table(PENDING) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(error.to_string()),
        };
        table
            .iter()
            .map_err(|e| e.to_string())?
            .map(|entry| {
                let (subject, position) = entry.map_err(|e| e.to_string())?;
                Ok((subject.value().to_owned(), position.value()))
            })
            .collect()
    }

    fn finish(&self, subject: &str, erasure_position: u64) -> Result<ForgetReport, ForgetError> {
        let fail = |step: &'static str| {
            move |reason: String| ForgetError::Failed {
                subject: subject.to_owned(),
                step,
                reason,
            }
        };
        let key = self
            .store
            .forget_subject(subject)
            .map_err(|e| fail("erasing the key")(e.to_string()))?;
        let (streams, event_types) = self
            .traces(subject)
            .map_err(fail("finding the subject's events"))?;
        let snapshots_deleted = match &self.aggregates {
            Some(aggregates) => aggregates
                .purge(&streams)
                .map_err(|e| fail("purging aggregate snapshots")(e.to_string()))?,
            None => crate::aggregate::purge_snapshots(&self.views, &streams)
                .map_err(|e| fail("purging aggregate snapshots")(e.to_string()))?,
        };
        let mut report = ForgetReport {
            subject_id: subject.to_owned(),
            key,
            erasure_position,
            streams,
            event_types,
            snapshots_deleted,
            projections_rebuilt: Vec::new(),
            projections_pending: Vec::new(),
            nodes: Vec::new(),
        };
        let Some(projections) = &self.projections else {
            // Without running projections (an offline tool), the marker stays, and the host
            // rebuilds the affected read models when it next starts.
            return Ok(report);
        };
        report.projections_rebuilt = projections
            .purge(&report.event_types)
            .map_err(|e| fail("rebuilding projections")(e.to_string()))?;
        for name in &report.projections_rebuilt {
            let caught_up = projections
                .wait_caught_up(name, self.wait)
                .is_some_and(|s| s.rebuild.is_none());
            if !caught_up {
                report.projections_pending.push(name.clone());
            }
        }
        if report.projections_pending.is_empty() {
            self.clear_pending(subject)
                .map_err(fail("clearing the pending marker"))?;
        }
        Ok(report)
    }

    /// The streams and event types that hold sealed data of `subject`.
    fn traces(&self, subject: &str) -> Result<(Vec<String>, Vec<String>), String> {
        let mut streams = std::collections::BTreeSet::new();
        let mut types = std::collections::BTreeSet::new();
        self.store
            .visit_all(&AllRead::from(1), &mut |event| {
                if event.subject_id == Some(subject) {
                    if !streams.contains(event.stream_id) {
                        streams.insert(event.stream_id.to_owned());
                    }
                    if !types.contains(event.event_type) {
                        types.insert(event.event_type.to_owned());
                    }
                }
                ControlFlow::Continue(())
            })
            .map_err(|e| e.to_string())?;
        Ok((streams.into_iter().collect(), types.into_iter().collect()))
    }

    fn mark_pending(&self, subject: &str, position: u64) -> Result<(), String> {
        let txn = self.views.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(PENDING).map_err(|e| e.to_string())?;
            table.insert(subject, position).map_err(|e| e.to_string())?;
        }
        txn.commit().map_err(|e| e.to_string())
    }

    fn clear_pending(&self, subject: &str) -> Result<(), String> {
        let txn = self.views.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(PENDING).map_err(|e| e.to_string())?;
            table.remove(subject).map_err(|e| e.to_string())?;
        }
        txn.commit().map_err(|e| e.to_string())
    }
}
