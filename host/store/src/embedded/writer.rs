//! The writer: group commit through a pipeline of three threads.
//!
//! - The **writer** (this module) takes appends from every caller as they arrive and stages
//!   them into the open batch: checked against the log as it will be, given positions, and
//!   encoded as WAL frames (see `stage`).
//! - The **syncer** writes a batch to the write-ahead log with one `pwrite` and `fdatasync`s
//!   it, makes it visible to readers, and only then answers its callers (see `syncer`).
//! - The **checkpointer** copies the durable events into redb in bulk, with their indexes, off
//!   the path of any append (see `checkpoint`).
//!
//! While the syncer waits for the disk, the writer stages whatever arrives into the next
//! batch, and hands it over the moment the syncer is free: staging overlaps the previous
//! batch's sync. One batch is synced at a time, in order, so positions stay gap-free in the
//! order they become durable, and nothing is acknowledged before it is on disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::stage::{Fatal, Inflight, Stager};
use super::syncer::Staged;
use crate::error::AppendError;
use crate::event::{AppendRequest, Appended, RecordedEvent};

/// Whether a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every append is on disk before it is acknowledged (the default).
    #[default]
    Immediate,
    /// Appends are written to the log but not synced; they reach the disk with the next
    /// checkpoint (or a clean close). For benchmarks and bulk imports: a crash loses the
    /// appends since the last checkpoint.
    None,
}

/// What reaches the writer thread.
#[derive(Debug)]
pub(crate) enum Msg {
    /// A caller's write.
    Write(WriteRequest),
    /// The syncer is done with the batch it was given: durable, or failed with this error.
    Synced(Option<AppendError>),
    /// The store is closing: finish what is queued, then stop.
    Close,
}

/// One write waiting for the writer, with the channel its answer goes back on.
#[derive(Debug)]
pub(crate) struct WriteRequest {
    pub op: WriteOp,
    pub reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// What a write does.
#[derive(Debug)]
pub(crate) enum WriteOp {
    /// Append events to one stream; the writer assigns positions and times. Beside each
    /// event, its personal part already sealed under its subject's key (keys never reach the
    /// writer).
    Append(AppendRequest, Vec<Option<Vec<u8>>>),
    /// Restore exported events exactly as they were: positions, times and hashes must
    /// continue the log.
    Import(Vec<RecordedEvent>),
}

/// Counters the writer keeps, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Batches made durable (WAL writes with their sync).
    pub commits: AtomicU64,
    /// Appends acknowledged as written (idempotent replays and refusals not counted).
    pub appends: AtomicU64,
    /// Events written.
    pub events: AtomicU64,
    /// Nanoseconds the writer waited, with the syncer free and a batch open, for more
    /// appends to arrive.
    pub gather_nanos: AtomicU64,
    /// Nanoseconds the writer spent staging appends (checking, encoding).
    pub stage_nanos: AtomicU64,
    /// Nanoseconds spent making batches durable (WAL write and sync).
    pub commit_nanos: AtomicU64,
    /// Bytes written to the WAL.
    pub wal_bytes: AtomicU64,
    /// Nanoseconds the syncer waited for a checkpoint to free WAL space.
    pub stall_nanos: AtomicU64,
    /// Checkpoints into redb.
    pub checkpoints: AtomicU64,
    /// Events checkpointed.
    pub checkpoint_events: AtomicU64,
    /// Nanoseconds spent in checkpoints.
    pub checkpoint_nanos: AtomicU64,
}

/// How long the writer waits to grow a batch before handing it to the syncer.
///
/// The writer stages appends while callers are still sending, so most of a batch arrives
/// during staging. Once the queue is empty it yields for up to `gap` for stragglers, so that
/// callers answered by the last sync join this batch rather than splitting into groups that
/// take turns at the disk. Measured with 64 appenders: a 10 us yield gave ~105k events/s; a
/// 50 us timed sleep ~85k (the timer overshoots), no wait at all ~100k.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gather {
    /// Hand the batch over when no new append has arrived for this long.
    pub gap: Duration,
    /// Never wait longer than this in total.
    pub max_wait: Duration,
}

impl Default for Gather {
    fn default() -> Self {
        Gather {
            gap: Duration::from_micros(10),
            max_wait: Duration::from_micros(500),
        }
    }
}

/// What the writer, syncer and checkpointer share beyond the tail.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Set once the WAL or redb failed: from then on every append fails with it.
    pub failed: OnceLock<AppendError>,
    /// Whether a frozen generation waits for (or is in) its checkpoint; whether closing.
    pub checkpoint: Mutex<CheckpointState>,
    /// Signalled when `checkpoint` changes.
    pub changed: Condvar,
}

/// See [`Shared::checkpoint`].
#[derive(Debug, Default)]
pub(crate) struct CheckpointState {
    pub pending: bool,
    pub closing: bool,
}

impl Shared {
    /// Record the first failure; later appends fail with it.
    pub fn fail(&self, error: AppendError) -> AppendError {
        let _ = self.failed.set(error);
        let failed = self.failed.get().cloned().unwrap_or(AppendError::Closed);
        self.changed.notify_all();
        failed
    }

    /// Lock the checkpoint state.
    pub fn state(&self) -> std::sync::MutexGuard<'_, CheckpointState> {
        self.checkpoint.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct Writer {
    pub stager: Stager,
    pub stats: Arc<WriterStats>,
    pub shared: Arc<Shared>,
    pub max_batch: usize,
    pub max_batch_bytes: usize,
    pub gather: Gather,
    pub syncer: Option<Sender<Staged>>,
    pub syncer_thread: Option<JoinHandle<()>>,
    pub checkpointer_thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Serve writes until told to close; then sync what is left, and let the checkpointer
    /// copy everything into redb.
    pub fn run(mut self, messages: Receiver<Msg>) {
        let mut syncing = false;
        let mut closing = false;
        // When the open batch could first have been handed over: gathering counts from here.
        let mut ready_since = Instant::now();
        loop {
            if closing && !syncing && self.stager.open.is_empty() {
                break;
            }
            let handable = !syncing && !self.stager.open.is_empty();
            let message = if handable {
                match self.gather_next(&messages, ready_since) {
                    Some(message) => message,
                    None => {
                        self.hand_over();
                        syncing = true;
                        continue;
                    }
                }
            } else {
                match messages.recv() {
                    Ok(message) => message,
                    Err(_) => Msg::Close,
                }
            };
            match message {
                Msg::Write(request) => {
                    if self.stager.open.is_empty() && !syncing {
                        ready_since = Instant::now();
                    }
                    self.stage(request);
                    if !syncing && self.is_full() {
                        self.hand_over();
                        syncing = true;
                    }
                }
                Msg::Synced(failed) => {
                    syncing = false;
                    self.stager.inflight = None;
                    ready_since = Instant::now();
                    if let Some(error) = failed {
                        self.fail_open(&error);
                    }
                }
                Msg::Close => closing = true,
            }
        }
        self.close();
    }

    fn is_full(&self) -> bool {
        self.stager.open.answers.len() >= self.max_batch
            || self.stager.open.batch.frames.len() >= self.max_batch_bytes
    }

    /// The next message while a batch waits to be handed over: one already queued, or one
    /// that arrives within the gap. `None`: hand the batch over now.
    fn gather_next(&self, messages: &Receiver<Msg>, ready_since: Instant) -> Option<Msg> {
        if let Ok(message) = messages.try_recv() {
            return Some(message);
        }
        let left = self.gather.max_wait.saturating_sub(ready_since.elapsed());
        if left.is_zero() || self.gather.gap.is_zero() {
            return None;
        }
        // Yield rather than sleep: a timed sleep overshoots by the timer slack (~50 us), and
        // the callers about to send need this core more than the writer does.
        let waiting = Instant::now();
        let deadline = self.gather.gap.min(left);
        let message = loop {
            std::thread::yield_now();
            if let Ok(message) = messages.try_recv() {
                break Some(message);
            }
            if waiting.elapsed() >= deadline {
                break None;
            }
        };
        add_elapsed(&self.stats.gather_nanos, waiting);
        message
    }

    /// Stage one write into the open batch, or answer it at once if the store has failed.
    fn stage(&mut self, WriteRequest { op, reply }: WriteRequest) {
        if let Some(error) = self.shared.failed.get() {
            let _ = reply.send(Err(error.clone()));
            return;
        }
        let started = Instant::now();
        let outcome = match &op {
            WriteOp::Append(request, sealed) => self.stager.append(request, sealed),
            WriteOp::Import(events) => self.stager.import(events),
        };
        add_elapsed(&self.stats.stage_nanos, started);
        match outcome {
            Ok(answer) => self.stager.open.answers.push((reply, answer)),
            Err(Fatal(error)) => {
                tracing::error!(%error, "event store staging failed");
                let error = self.shared.fail(error);
                let _ = reply.send(Err(error.clone()));
                self.fail_open(&error);
            }
        }
    }

    /// Give the open batch to the syncer and keep seeing it until it is durable.
    fn hand_over(&mut self) {
        let open = self.stager.take_open();
        let batch = Arc::new(open.batch);
        let index = Arc::new(open.index);
        self.stager.inflight = Some(Inflight {
            batch: batch.clone(),
            index: index.clone(),
        });
        let staged = Staged {
            batch,
            index,
            head: self.stager.head,
            answers: open.answers,
        };
        let sent = match &self.syncer {
            Some(syncer) => syncer.send(staged).map_err(|failed| failed.0),
            None => Err(staged),
        };
        if let Err(staged) = sent {
            // The syncer is gone (it panicked): nothing can become durable any more.
            let error = self.shared.fail(AppendError::Storage(
                "the event store's syncer stopped".into(),
            ));
            for (reply, _) in staged.answers {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }

    /// Fail every append of the open batch: it was staged after a batch that failed.
    fn fail_open(&mut self, error: &AppendError) {
        let open = self.stager.take_open();
        for (reply, _) in open.answers {
            let _ = reply.send(Err(error.clone()));
        }
    }

    /// Stop the syncer, then let the checkpointer copy everything into redb and stop.
    fn close(&mut self) {
        self.syncer.take();
        if let Some(syncer) = self.syncer_thread.take() {
            let _ = syncer.join();
        }
        self.shared.state().closing = true;
        self.shared.changed.notify_all();
        if let Some(checkpointer) = self.checkpointer_thread.take() {
            let _ = checkpointer.join();
        }
    }
}

pub(crate) fn add_elapsed(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
