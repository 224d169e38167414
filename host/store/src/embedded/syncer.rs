//! The syncer: makes each staged batch durable in the write-ahead log, publishes it to
//! readers, and answers its callers, one batch at a time, in order.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::watch;

use super::index::RecentIndex;
use super::schema::Head;
use super::stage::Answer;
use super::tail::{Batch, Generation, Tail};
use super::wal::Wal;
use super::writer::{Msg, Shared, WriterStats, add_elapsed};
use crate::error::AppendError;
use crate::event::Appended;

/// A batch handed from the writer to the syncer.
#[derive(Debug)]
pub(crate) struct Staged {
    pub batch: Arc<Batch>,
    pub index: Arc<RecentIndex>,
    /// The head once the batch is durable.
    pub head: Head,
    pub answers: Vec<Answer>,
}

pub(crate) struct Syncer {
    pub wal: Wal,
    pub durable: bool,
    pub tail: Arc<RwLock<Tail>>,
    pub shared: Arc<Shared>,
    pub head_tx: Arc<watch::Sender<u64>>,
    pub stats: Arc<WriterStats>,
    /// Freeze the active generation once it holds this many events.
    pub freeze_events: usize,
    pub writer: Sender<Msg>,
}

impl Syncer {
    /// Sync batches until the writer stops sending them.
    pub fn run(mut self, batches: Receiver<Staged>) {
        while let Ok(staged) = batches.recv() {
            let failed = self.sync(staged);
            if self.writer.send(Msg::Synced(failed)).is_err() {
                break;
            }
        }
    }

    /// Make one batch durable and visible, then answer its callers. Returns the error that
    /// failed it, if any.
    fn sync(&mut self, staged: Staged) -> Option<AppendError> {
        let Staged {
            batch,
            index,
            head,
            mut answers,
        } = staged;
        if let Some(error) = self.shared.failed.get() {
            return Some(fail_all(answers, error));
        }
        if !batch.records.is_empty() {
            let started = Instant::now();
            let written = self.make_room(batch.frames.len() as u64).and_then(|()| {
                self.wal
                    .append(&batch.frames, self.durable)
                    .map_err(|error| AppendError::Storage(format!("write-ahead log: {error}")))
            });
            if let Err(error) = written {
                tracing::error!(%error, "event store sync failed");
                let error = self.shared.fail(error);
                return Some(fail_all(answers, &error));
            }
            add_elapsed(&self.stats.commit_nanos, started);
            self.count(&answers, batch.frames.len());
            {
                // Readers must find the new events before any caller hears of them.
                let mut tail = self.tail.write().unwrap_or_else(|e| e.into_inner());
                let active = &mut tail.active;
                active.bytes += batch.frames.len() as u64;
                active.index.merge(&index);
                active.batches.push(batch);
                active.head = head;
            }
            self.head_tx.send_replace(head.position);
            self.maybe_freeze();
        }
        for (reply, outcome) in answers.drain(..) {
            // The caller may have given up waiting; its append stands regardless.
            let _ = reply.send(outcome);
        }
        None
    }

    /// Make sure the active WAL file has room for `bytes`: freeze the active generation and
    /// switch files (waiting for the checkpoint before, if one still runs), and grow a file
    /// only for a batch larger than a whole one.
    fn make_room(&mut self, bytes: u64) -> Result<(), AppendError> {
        if self.wal.room() >= bytes {
            return Ok(());
        }
        let holds_events = self.read_tail().active.events() > 0;
        if holds_events {
            let waited = Instant::now();
            let mut state = self.shared.state();
            while state.pending {
                if let Some(error) = self.shared.failed.get() {
                    return Err(error.clone());
                }
                state = self
                    .shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            drop(state);
            add_elapsed(&self.stats.stall_nanos, waited);
            self.freeze();
        }
        if self.wal.room() < bytes {
            self.wal
                .grow(bytes)
                .map_err(|error| AppendError::Storage(format!("write-ahead log: {error}")))?;
        }
        Ok(())
    }

    /// Freeze the active generation if it is due and no checkpoint runs.
    fn maybe_freeze(&mut self) {
        let due = {
            let tail = self.read_tail();
            tail.active.events() >= self.freeze_events
                || tail.active.bytes >= self.wal.capacity() / 2
        };
        if due && !self.shared.state().pending {
            self.freeze();
        }
    }

    /// Hand the active generation to the checkpointer and continue in the other WAL file
    /// (free: its generation was checkpointed, as no checkpoint is pending).
    fn freeze(&mut self) {
        if !freeze(&self.tail) {
            return;
        }
        self.wal.switch();
        self.shared.state().pending = true;
        self.shared.changed.notify_all();
    }

    fn read_tail(&self) -> std::sync::RwLockReadGuard<'_, Tail> {
        self.tail.read().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, answers: &[Answer], bytes: usize) {
        let (appends, events) = answers
            .iter()
            .filter_map(|(_, outcome)| match outcome {
                Ok(appended) if !appended.already_stored => {
                    Some(appended.last_position - appended.first_position + 1)
                }
                _ => None,
            })
            .fold((0, 0), |(appends, events), count| {
                (appends + 1, events + count)
            });
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats.appends.fetch_add(appends, Ordering::Relaxed);
        self.stats.events.fetch_add(events, Ordering::Relaxed);
        self.stats
            .wal_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Make the active generation the frozen one (there is none) and start an empty one.
/// Returns whether there was anything to freeze.
pub(crate) fn freeze(tail: &RwLock<Tail>) -> bool {
    let mut tail = tail.write().unwrap_or_else(|e| e.into_inner());
    if tail.active.batches.is_empty() {
        return false;
    }
    let next = Generation::after(tail.active.head, tail.active.index.next_stream_number);
    let frozen = std::mem::replace(&mut tail.active, next);
    tail.frozen = Some(Arc::new(frozen));
    true
}

/// Fail every append of a batch that could not be made durable (replays and refusals too:
/// they were decided against a log that includes the failed batches).
fn fail_all(answers: Vec<Answer>, error: &AppendError) -> AppendError {
    for (reply, _) in answers {
        let _: Result<(), Result<Appended, AppendError>> = reply.send(Err(error.clone()));
    }
    error.clone()
}
