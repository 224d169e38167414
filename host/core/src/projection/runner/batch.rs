//! One batch of a lane: read (or take what the reader thread read ahead), upcast, handle,
//! commit with the checkpoint; and what a failure does: retry with backoff, narrow down to the
//! failing event, then stop at it or park it as a dead letter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lane::Lane;
use super::read_ahead::{ReadBatch, ReadJob, ReadSpec, read_batch, spawn_reader};
use super::{DURABLE_EVERY, Runner, redb_error};
use crate::projection::read_model::{BatchModel, Snapshot};
use crate::projection::schema::{self, DeadLetter};
use crate::upcast::Relevance;
use eshost_runtime::{Event, ProjectionError};
use eshost_store::now_ms;

impl Runner {
    /// Reads, upcasts, handles and commits one batch of `lane`, or deals with its failure.
    /// While the plugin handles it, the reader thread reads the next one.
    pub(super) fn step(&mut self, lane: &mut Lane, head: u64) {
        let careful = lane.bound.is_none() && lane.checkpoint < lane.careful_until;
        let bound = lane.bound.unwrap_or(head).min(head);
        let spec = ReadSpec {
            from: lane.checkpoint + 1,
            bound,
            limit: if careful { 1 } else { self.config.batch.max(1) },
            hash: lane.plugin.info().content_hash.clone(),
        };
        let ahead = lane.ahead.take().filter(|(ahead, _)| ahead.serves(&spec));
        let batch = match ahead.and_then(|(_, batch)| batch.recv().ok()) {
            Some(batch) => batch,
            None => {
                let spare = std::mem::take(&mut self.spare);
                read_batch(&*self.store, &spec, &lane.relevance, spare)
            }
        };
        let ReadBatch {
            mut events,
            last,
            error,
        } = batch;
        if let Some(error) = error {
            self.spare = events;
            self.transient(lane, format!("reading the log: {error}"));
            return;
        }
        if !careful && last < bound {
            let next = ReadSpec {
                from: last + 1,
                ..spec
            };
            lane.ahead = self.read_ahead(next, lane.relevance.clone());
        }
        self.handle(lane, &mut events, last);
        self.spare = events;
    }

    /// Asks the reader thread for the batch `spec`, handing it the spare batch to refill.
    pub(super) fn read_ahead(
        &mut self,
        spec: ReadSpec,
        relevance: Arc<Relevance>,
    ) -> Option<(ReadSpec, std::sync::mpsc::Receiver<ReadBatch>)> {
        if self.reader.is_none() {
            self.reader = spawn_reader(&self.config.name, self.store.clone());
        }
        let reader = self.reader.as_ref()?;
        let (reply, batch) = std::sync::mpsc::sync_channel(1);
        let job = ReadJob {
            spec: spec.clone(),
            relevance,
            spare: std::mem::take(&mut self.spare),
            reply,
        };
        match reader.send(job) {
            Ok(()) => Some((spec, batch)),
            Err(std::sync::mpsc::SendError(job)) => {
                self.spare = job.spare;
                self.reader = None;
                None
            }
        }
    }

    /// Upcasts, handles and commits a batch read up to `last`, or deals with its failure.
    /// The batch holds only events relevant to the plugin; those it handles once upcast go to
    /// it.
    pub(super) fn handle(&mut self, lane: &mut Lane, events: &mut Vec<Event>, last: u64) {
        if !self.upcasting.is_empty() {
            if let Err(failure) = self.upcasting.upcast_all(events) {
                let message = format!("upcasting: {}", failure.error);
                self.failed_batch(lane, events, Some(failure.position), message);
                return;
            }
            let relevance = &lane.relevance;
            events.retain(|event| relevance.is_handled(&event.event_type));
        }
        if events.is_empty() {
            self.commit(lane, Default::default(), last);
            return;
        }
        let instance = match &mut lane.instance {
            Some(instance) => instance,
            None => match lane.plugin.instantiate(BatchModel::default()) {
                Ok(instance) => lane.instance.insert(instance),
                Err(error) => {
                    self.failed_batch(lane, events, None, error.to_string());
                    return;
                }
            },
        };
        let snapshot = match self.snapshot(&lane.namespace) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                self.transient(lane, format!("reading the read model: {error}"));
                return;
            }
        };
        *instance.read_model_mut() = BatchModel::new(snapshot);
        let result = instance.handle(events);
        let model = std::mem::take(instance.read_model_mut());
        match result {
            Ok(()) => self.commit(lane, model.writes, last),
            Err(error) => {
                let position = match &error {
                    ProjectionError::Event { position, .. } => Some(*position),
                    _ => None,
                };
                self.failed_batch(lane, events, position, error.to_string());
            }
        }
    }

    pub(super) fn snapshot(&self, namespace: &str) -> Result<Snapshot, redb::Error> {
        let txn = self.views.begin_read().map_err(redb_error)?;
        match txn.open_table(schema::data_table(namespace)) {
            Ok(table) => Ok(Snapshot::new(Some(table))),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(Snapshot::new(None)),
            Err(error) => Err(error.into()),
        }
    }

    /// Commits a batch's writes with the new checkpoint, in one transaction.
    pub(super) fn commit(
        &mut self,
        lane: &mut Lane,
        writes: std::collections::BTreeMap<String, Option<String>>,
        last: u64,
    ) {
        let durable = self.last_durable.elapsed() >= DURABLE_EVERY;
        let txn = self.views.begin_write();
        if self.reload_if_views_reopened(Some(lane)) {
            // Reopened under this batch: it was read from a checkpoint the file may have lost.
            return;
        }
        let result = (|| -> Result<(), redb::Error> {
            let mut txn = txn.map_err(redb_error)?;
            if !durable {
                txn.set_durability(redb::Durability::None)
                    .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
            }
            schema::write_batch(&txn, &lane.namespace, &writes, last)?;
            txn.commit().map_err(redb_error)?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                if durable {
                    self.synced();
                } else {
                    self.unsynced = true;
                }
                self.processed += last - lane.checkpoint;
                lane.checkpoint = last;
                lane.bound = None;
                lane.attempts = 0;
                lane.retry_at = None;
            }
            Err(error) => self.transient(lane, format!("committing: {error}")),
        }
    }

    /// A failure that is not the event's fault (I/O): retry the batch after the backoff.
    pub(super) fn transient(&mut self, lane: &mut Lane, message: String) {
        tracing::warn!(projection = %self.config.name, "{message}");
        self.failed_batches += 1;
        lane.attempts = lane.attempts.saturating_add(1);
        lane.retry_at = Some(Instant::now() + self.backoff(lane.attempts));
        self.stalled = Some(message.clone());
        self.last_error = Some(message);
    }

    pub(super) fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        self.config
            .backoff
            .saturating_mul(factor)
            .min(self.config.max_backoff)
    }

    /// A batch failed: narrow it down to the failing event, retry that one with backoff, and
    /// after the last attempt stop at it or park it.
    pub(super) fn failed_batch(
        &mut self,
        lane: &mut Lane,
        events: &[Event],
        position: Option<u64>,
        message: String,
    ) {
        let name = self.config.name.clone();
        self.last_error = Some(message.clone());
        self.failed_batches += 1;
        let first = events.first().map(|e| e.position);
        if events.len() > 1 {
            // Commit what comes before the failing event, then try events one by one.
            let last = events.last().map_or(0, |e| e.position);
            match position.filter(|p| events.iter().any(|e| e.position == *p)) {
                Some(p) if Some(p) != first => {
                    lane.bound = Some(p - 1);
                    lane.careful_until = p;
                }
                Some(p) => lane.careful_until = p,
                None => lane.careful_until = last,
            }
            return;
        }
        let Some(event) = events.first() else {
            return;
        };
        lane.attempts += 1;
        tracing::warn!(
            projection = %name,
            position = event.position,
            attempt = lane.attempts,
            "event failed: {message}"
        );
        if lane.attempts < self.config.attempts.max(1) {
            lane.retry_at = Some(Instant::now() + self.backoff(lane.attempts));
            return;
        }
        if self.config.dead_letter {
            let letter = DeadLetter {
                position: event.position,
                stream_id: event.stream_id.clone(),
                event_type: event.event_type.clone(),
                reason: message,
                attempts: lane.attempts,
                parked_at: now_ms(),
            };
            match self.park(lane, &letter) {
                Ok(()) => {
                    self.processed += event.position - lane.checkpoint;
                    lane.checkpoint = event.position;
                    lane.attempts = 0;
                    lane.retry_at = None;
                    lane.bound = None;
                }
                Err(error) => self.transient(lane, format!("parking: {error}")),
            }
            return;
        }
        lane.failed = Some(format!("stopped at position {}: {message}", event.position));
        lane.failed_at = Some(event.position);
        lane.retry_at = None;
    }

    /// Parks `letter` and moves the checkpoint past it, in one transaction.
    pub(super) fn park(&mut self, lane: &Lane, letter: &DeadLetter) -> Result<(), redb::Error> {
        let bytes = serde_json::to_vec(letter).expect("a dead letter serializes");
        let txn = self.views.begin_write().map_err(redb_error)?;
        txn.open_table(schema::DEAD_LETTERS)?
            .insert((lane.namespace.as_str(), letter.position), bytes.as_slice())?;
        txn.open_table(schema::CHECKPOINTS)?
            .insert(lane.namespace.as_str(), letter.position)?;
        txn.commit().map_err(redb_error)?;
        self.synced();
        Ok(())
    }
}
