//! The checkpointer: copies each frozen generation of the tail into redb — its events, their
//! stream and id indexes, the head — in one durable transaction, then drops it from memory.
//!
//! This is the bulk work (B-tree inserts, the index flush, redb's page writes and the file
//! growth under them) that once sat on the commit path of every append; here it overlaps the
//! appends. Commits use redb's quick repair, so that opening after a crash does not walk the
//! whole file: they are few (one per generation), so its second sync costs little.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use redb::{Database, ReadableTable, WriteTransaction};

use super::schema::{
    ARCHIVED_STORE_FORMAT, EVENTS, META, META_ARCHIVE, META_FORMAT, META_HEAD, STORE_FORMAT,
};
use super::syncer::freeze;
use super::tail::{Generation, Tail};
use super::writer::{Shared, WriterStats, add_elapsed};
use crate::error::AppendError;

pub(crate) struct Checkpointer {
    pub db: Arc<Database>,
    pub tail: Arc<RwLock<Tail>>,
    pub shared: Arc<Shared>,
    pub stats: Arc<WriterStats>,
}

impl Checkpointer {
    /// Checkpoint each generation the syncer freezes; when the store closes, the rest too.
    pub fn run(self) {
        loop {
            {
                let mut state = self.shared.state();
                while !state.pending && !state.closing {
                    state = self
                        .shared
                        .changed
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner());
                }
                if !state.pending {
                    // Closing, and the syncer has stopped: the active generation is the last.
                    if !freeze(&self.tail) {
                        drop(state);
                        self.mark_closed();
                        return;
                    }
                    state.pending = true;
                }
            }
            if self.shared.failed.get().is_some() {
                return;
            }
            let frozen = self
                .tail
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .frozen
                .clone();
            let Some(frozen) = frozen else {
                self.shared.state().pending = false;
                continue;
            };
            let started = Instant::now();
            match checkpoint(&self.db, &frozen) {
                Ok(()) => {
                    add_elapsed(&self.stats.checkpoint_nanos, started);
                    self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .checkpoint_events
                        .fetch_add(frozen.events() as u64, Ordering::Relaxed);
                    {
                        let mut tail = self.tail.write().unwrap_or_else(|e| e.into_inner());
                        tail.base = frozen.head.position;
                        tail.frozen = None;
                        tail.trims += 1;
                    }
                    self.shared.state().pending = false;
                    self.shared.changed.notify_all();
                }
                Err(error) => {
                    // The events stay in the WAL and in memory; appends stop until reopened.
                    let error = AppendError::from(error);
                    tracing::error!(%error, "event store checkpoint failed");
                    self.shared.fail(error);
                    return;
                }
            }
        }
    }
}

impl Checkpointer {
    /// Everything is in redb: record the closed format, which builds without the log read.
    /// Not after a failure: then the log may hold events redb lacks.
    fn mark_closed(&self) {
        if self.shared.failed.get().is_some() {
            return;
        }
        let marked = (|| -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                let format = match meta.get(META_ARCHIVE)? {
                    Some(_) => ARCHIVED_STORE_FORMAT,
                    None => STORE_FORMAT,
                };
                meta.insert(META_FORMAT, format.to_le_bytes().as_slice())?;
            }
            txn.commit()?;
            Ok(())
        })();
        if let Err(error) = marked {
            // Harmless: the next open reads either format.
            tracing::warn!(%error, "event store could not mark itself closed");
        }
    }
}

/// Copy `generation` into redb in one durable transaction.
pub(crate) fn checkpoint(db: &Database, generation: &Generation) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    write_generation(&txn, generation)?;
    txn.commit()?;
    Ok(())
}

/// Write `generation`'s events, their indexes and its head into `txn`.
pub(crate) fn write_generation(
    txn: &WriteTransaction,
    generation: &Generation,
) -> Result<(), redb::Error> {
    {
        let mut events = txn.open_table(EVENTS)?;
        for batch in &generation.batches {
            for (position, record) in batch.iter() {
                events.insert(position, record)?;
            }
        }
    }
    generation.index.flush(txn, generation.head.position)?;
    txn.open_table(META)?
        .insert(META_HEAD, generation.head.encode().as_slice())?;
    Ok(())
}
