//! Reading ahead: a thread per runner reads the next batch of the log while the plugin handles
//! the current one, so reading and decoding overlap with the plugin's work.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::mpsc::Sender;

use crate::upcast::Relevance;
use eshost_runtime::Event;
use eshost_store::{AllRead, Direction, EventRef, EventStore, Until};

/// One batch read of the log for a lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReadSpec {
    /// The first position.
    pub(super) from: u64,
    /// The last position it may reach.
    pub(super) bound: u64,
    /// Events to collect at most.
    pub(super) limit: usize,
    /// The plugin whose relevance filters the events.
    pub(super) hash: String,
}

impl ReadSpec {
    /// Whether a batch read ahead for `self` is a batch `now` may return: the same start,
    /// size and filter, and never past its bound (it may stop short of it; the log only grows).
    pub(super) fn serves(&self, now: &ReadSpec) -> bool {
        self.from == now.from
            && self.limit == now.limit
            && self.hash == now.hash
            && self.bound <= now.bound
    }
}

/// What a read found: the events to handle and the position it got to (the checkpoint once
/// they are handled), or why it failed.
pub(super) struct ReadBatch {
    pub(super) events: Vec<Event>,
    pub(super) last: u64,
    pub(super) error: Option<String>,
}

/// A read for the reader thread.
pub(super) struct ReadJob {
    pub(super) spec: ReadSpec,
    pub(super) relevance: Arc<Relevance>,
    /// A handled batch whose strings to reuse.
    pub(super) spare: Vec<Event>,
    pub(super) reply: std::sync::mpsc::SyncSender<ReadBatch>,
}

/// Starts the thread that reads batches ahead for a runner. It stops when the runner drops its
/// sender.
pub(super) fn spawn_reader(name: &str, store: Arc<dyn EventStore>) -> Option<Sender<ReadJob>> {
    let (jobs, inbox) = std::sync::mpsc::channel::<ReadJob>();
    let spawned = std::thread::Builder::new()
        .name(format!("read-{name}"))
        .spawn(move || {
            for job in inbox {
                let batch = read_batch(&*store, &job.spec, &job.relevance, job.spare);
                // The runner may have moved on (a failure, a swap): then nobody waits.
                let _ = job.reply.send(batch);
            }
        });
    match spawned {
        Ok(_) => Some(jobs),
        Err(error) => {
            tracing::warn!(projection = %name, "cannot start the reader thread: {error}");
            None
        }
    }
}

/// Reads the batch `spec` from the log, reusing the strings of `events`: the events relevant
/// to the plugin, up to `limit` of them, and through at most a bounded number of positions so
/// a sparse projection still checkpoints as it goes.
pub(super) fn read_batch(
    store: &dyn EventStore,
    spec: &ReadSpec,
    relevance: &Relevance,
    mut events: Vec<Event>,
) -> ReadBatch {
    let scan_limit = spec.limit.saturating_mul(16).max(10_000);
    let mut count = 0usize;
    let mut last = spec.from - 1;
    let mut scanned = 0usize;
    let read = AllRead {
        from_position: spec.from,
        direction: Direction::Forward,
        limit: usize::MAX,
        event_types: Vec::new(),
        until: Some(Until::Position(spec.bound)),
    };
    let result = store.visit_all(&read, &mut |event| {
        last = event.position;
        scanned += 1;
        if relevance.is_relevant(event.event_type, event.schema_version) {
            match events.get_mut(count) {
                Some(reused) => fill_event(reused, &event, store),
                None => events.push(to_event(&event, store)),
            }
            count += 1;
        }
        if count >= spec.limit || scanned >= scan_limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    events.truncate(count);
    ReadBatch {
        events,
        last,
        error: result.err().map(|e| e.to_string()),
    }
}

/// Overwrites `target` with `event`, reusing its strings' buffers.
fn fill_event(target: &mut Event, event: &EventRef<'_>, store: &dyn EventStore) {
    fn set(target: &mut String, value: &str) {
        target.clear();
        target.push_str(value);
    }
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = event.event_id.hyphenated().encode_lower(&mut id);
    target.position = event.position;
    set(&mut target.stream_id, event.stream_id);
    target.stream_version = event.stream_version;
    set(&mut target.event_id, id);
    set(&mut target.event_type, event.event_type);
    target.schema_version = event.schema_version;
    target.recorded_at = event.recorded_at;
    set(&mut target.data, event.data);
    set(&mut target.metadata, event.metadata);
    crate::upcast::set_personal(target, event, store);
}

/// A stored event as plugins see it: one copy of each string, out of the store's pages.
pub(crate) fn to_event(event: &EventRef<'_>, store: &dyn EventStore) -> Event {
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = event.event_id.hyphenated().encode_lower(&mut id);
    let mut plugin_event = Event {
        position: event.position,
        stream_id: event.stream_id.to_owned(),
        stream_version: event.stream_version,
        event_id: (*id).to_owned(),
        event_type: event.event_type.to_owned(),
        schema_version: event.schema_version,
        recorded_at: event.recorded_at,
        data: event.data.to_owned(),
        metadata: event.metadata.to_owned(),
        subject_id: None,
        personal_data: None,
        shredded: false,
    };
    crate::upcast::set_personal(&mut plugin_event, event, store);
    plugin_event
}
