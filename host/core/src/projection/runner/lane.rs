//! One generation being fed: the active one or the shadow, with its checkpoint and failure
//! state.

use std::sync::Arc;
use std::time::Instant;

use super::read_ahead::{ReadBatch, ReadSpec};
use crate::projection::GenerationStatus;
use crate::projection::read_model::BatchModel;
use crate::projection::schema::{self, Generation};
use crate::upcast::Relevance;
use eshost_runtime::{ProjectionInstance, ProjectionPlugin};

/// One generation being fed: the active one or the shadow.
pub(super) struct Lane {
    pub(super) generation: Generation,
    pub(super) namespace: String,
    pub(super) plugin: ProjectionPlugin,
    /// Which events the plugin sees, through the host's upcasters.
    pub(super) relevance: Arc<Relevance>,
    pub(super) instance: Option<ProjectionInstance<BatchModel>>,
    pub(super) checkpoint: u64,
    /// After a failed batch: handle one event per call up to here, to find the culprit.
    pub(super) careful_until: u64,
    /// After a failure at a known position: the next batch stops before it.
    pub(super) bound: Option<u64>,
    /// Failed tries of the event at `checkpoint + 1`.
    pub(super) attempts: u32,
    pub(super) retry_at: Option<Instant>,
    /// Stopped at a failing event: the error. Cleared by resume or a swap.
    pub(super) failed: Option<String>,
    /// The position of the event it stopped at.
    pub(super) failed_at: Option<u64>,
    /// The next batch, being read by the reader thread while the plugin handles this one.
    pub(super) ahead: Option<(ReadSpec, std::sync::mpsc::Receiver<ReadBatch>)>,
}

impl Lane {
    pub(super) fn new(
        name: &str,
        generation: Generation,
        plugin: ProjectionPlugin,
        relevance: Arc<Relevance>,
        checkpoint: u64,
    ) -> Lane {
        Lane {
            namespace: schema::namespace(name, generation.number),
            generation,
            relevance,
            plugin,
            instance: None,
            checkpoint,
            careful_until: 0,
            bound: None,
            attempts: 0,
            retry_at: None,
            failed: None,
            failed_at: None,
            ahead: None,
        }
    }

    pub(super) fn runnable(&self, now: Instant) -> bool {
        self.failed.is_none() && self.retry_at.is_none_or(|at| now >= at)
    }

    pub(super) fn clear_failure(&mut self) {
        self.failed = None;
        self.failed_at = None;
        self.attempts = 0;
        self.retry_at = None;
    }

    pub(super) fn status(&self, head: u64) -> GenerationStatus {
        GenerationStatus {
            generation: self.generation.number,
            version: self.plugin.info().version.clone(),
            hash: self.plugin.info().content_hash.clone(),
            position: self.checkpoint,
            lag: head.saturating_sub(self.checkpoint),
            failed: self.failed.clone(),
            failed_at: self.failed_at,
        }
    }
}

/// A stand-in while the active lane is lent to `step`.
pub(super) fn placeholder(lane: &Lane) -> Lane {
    Lane {
        generation: lane.generation.clone(),
        namespace: String::new(),
        plugin: lane.plugin.clone(),
        relevance: lane.relevance.clone(),
        instance: None,
        checkpoint: lane.checkpoint,
        careful_until: 0,
        bound: None,
        attempts: 0,
        retry_at: None,
        failed: None,
        failed_at: None,
        ahead: None,
    }
}
