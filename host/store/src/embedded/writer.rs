//! The single writer: group commit of every waiting append in one redb transaction.
//!
//! Appends arrive over a channel. The writer takes everything waiting, checks each append
//! against the stream's version (seeing earlier appends of the same batch, since they are
//! written into the same transaction), writes the accepted ones, commits once, and only then
//! answers each caller. One durable commit thus serves many appends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableTable, Table, WriteTransaction};
use tokio::sync::{oneshot, watch};

use super::index::{RecentIndex, RecentStream};
use super::schema::{EVENT_IDS, EVENTS, Head, META, META_HEAD, STREAMS, StreamRow};
use crate::codec::{self, RecordBody};
use crate::error::AppendError;
use crate::event::{AppendRequest, Appended, ProposedEvent, RecordedEvent};

/// Whether a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is on disk before its appends are acknowledged (the default).
    #[default]
    Immediate,
    /// Commits stay in memory until a later durable commit (or a clean close). For benchmarks
    /// and bulk imports: a crash loses the appends since the last durable commit.
    None,
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
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Appends acknowledged as written (idempotent replays and refusals not counted).
    pub appends: AtomicU64,
    /// Events written.
    pub events: AtomicU64,
    /// Nanoseconds the writer waited, with a batch open, for more appends to arrive.
    pub gather_nanos: AtomicU64,
    /// Nanoseconds batches were open: staging appends as they arrived, waits included.
    pub stage_nanos: AtomicU64,
    /// Nanoseconds spent in commits (the durable write).
    pub commit_nanos: AtomicU64,
}

pub(crate) struct Writer {
    pub stats: Arc<WriterStats>,
    pub db: Arc<Database>,
    pub head: Head,
    pub head_tx: watch::Sender<u64>,
    pub durability: Durability,
    pub max_batch: usize,
    pub gather: Gather,
    pub recent: Arc<RwLock<RecentIndex>>,
    /// Flush the recent index to redb once it holds this many events.
    pub flush_events: usize,
}

/// How long the writer waits to grow a batch before committing it.
///
/// The writer stages appends while callers are still sending, so most of a batch arrives
/// during staging. Once the queue is empty it yields for up to `gap` for stragglers, so that
/// callers answered by the last commit join this one rather than splitting into groups that
/// take turns at the disk. Measured with 64 appenders: a 10 us yield gave ~105k events/s; a
/// 50 us timed sleep ~85k (the timer overshoots), no wait at all ~100k.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gather {
    /// Commit when no new append has arrived for this long.
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

/// A failure of the storage engine mid-batch: the whole transaction is abandoned.
struct Fatal(AppendError);

impl<E: Into<AppendError>> From<E> for Fatal {
    fn from(error: E) -> Self {
        Fatal(error.into())
    }
}

struct Tables<'txn> {
    events: Table<'txn, u64, &'static [u8]>,
    streams: Table<'txn, &'static str, StreamRow>,
    event_ids: Table<'txn, u128, u64>,
}

/// The index entries of the batch being staged, applied to the recent index after commit.
#[derive(Debug, Default)]
struct BatchIndex {
    streams: HashMap<String, RecentStream>,
    ids: HashMap<u128, u64>,
    next_stream_number: u64,
    /// Whether this batch's transaction flushes the recent index to redb.
    flushed: bool,
}

/// Where the writer looks things up while staging: this batch, then the recent index, then
/// redb (inside the write transaction).
struct Lookup<'a, 'txn> {
    tables: &'a mut Tables<'txn>,
    recent: &'a RecentIndex,
    batch: &'a mut BatchIndex,
}

impl Lookup<'_, '_> {
    fn row(&self, stream: &str) -> Result<Option<StreamRow>, Fatal> {
        if let Some(row) = self.batch.streams.get(stream).map(|recent| recent.row) {
            return Ok(Some(row));
        }
        if let Some(row) = self.recent.row(stream) {
            return Ok(Some(row));
        }
        Ok(self.tables.streams.get(stream)?.map(|row| row.value()))
    }

    fn position_of(&self, id: u128) -> Result<Option<u64>, Fatal> {
        if let Some(position) = self.batch.ids.get(&id).or_else(|| self.recent.ids.get(&id)) {
            return Ok(Some(*position));
        }
        Ok(self
            .tables
            .event_ids
            .get(id)?
            .map(|position| position.value()))
    }
}

impl Writer {
    /// Serve appends until every sender is gone.
    pub fn run(mut self, requests: Receiver<WriteRequest>) {
        let mut unflushed = false;
        while let Ok(first) = requests.recv() {
            let wrote = self.serve_batch(first, &requests);
            unflushed |= wrote && self.durability == Durability::None;
        }
        if unflushed {
            // Non-durable commits reach the disk with the next durable one.
            let flushed = self
                .db
                .begin_write()
                .map_err(redb::Error::from)
                .and_then(|txn| {
                    txn.commit()?;
                    Ok(())
                });
            if let Err(error) = flushed {
                tracing::error!(%error, "final flush of the event store failed");
            }
        }
    }

    /// Stage `first` and whatever follows it closely into one transaction, commit it, then
    /// answer every caller. Returns whether anything was committed.
    fn serve_batch(&mut self, first: WriteRequest, requests: &Receiver<WriteRequest>) -> bool {
        let mut answers = Vec::with_capacity(self.max_batch.min(256));
        let mut head = self.head;
        let mut index = BatchIndex::default();
        let staging = Instant::now();
        let staged = self.stage_batch(first, requests, &mut head, &mut answers, &mut index);
        add_elapsed(&self.stats.stage_nanos, staging);
        let committed = match staged {
            Ok(Some(txn)) => match commit_timed(txn, &self.stats.commit_nanos) {
                Ok(()) => {
                    self.count_committed(&answers);
                    // Readers must find the new events before any caller hears of them.
                    self.apply_index(index);
                    self.head = head;
                    self.head_tx.send_replace(head.position);
                    true
                }
                Err(error) => {
                    let error = AppendError::from(error);
                    tracing::error!(%error, "event store commit failed");
                    fail_written(&mut answers, &error);
                    false
                }
            },
            Ok(None) => false,
            Err(Fatal(error)) => {
                tracing::error!(%error, "event store write failed");
                fail_written(&mut answers, &error);
                false
            }
        };
        for (reply, outcome) in answers {
            // The caller may have given up waiting; its append stands regardless.
            let _ = reply.send(outcome);
        }
        committed
    }

    /// Stage appends into a write transaction as they arrive, until none has come for
    /// `gather.gap`, `gather.max_wait` has passed, or the batch is full. Staging while callers
    /// are still sending overlaps the writer's work with theirs. Returns the transaction when
    /// there is anything to commit.
    fn stage_batch(
        &self,
        first: WriteRequest,
        requests: &Receiver<WriteRequest>,
        head: &mut Head,
        answers: &mut Vec<Answer>,
        index: &mut BatchIndex,
    ) -> Result<Option<WriteTransaction>, Fatal> {
        let mut next = Some(first);
        let mut txn = match self.db.begin_write() {
            Ok(txn) => txn,
            Err(error) => {
                let error = AppendError::from(error);
                answers.extend(next.map(|request| (request.reply, Err(error.clone()))));
                return Err(Fatal(error));
            }
        };
        if self.durability == Durability::None {
            txn.set_durability(redb::Durability::None)
                .map_err(|error| AppendError::Storage(error.to_string()))?;
        }
        let now = now_ms().max(head.recorded_at);
        let started = Instant::now();
        let mut wrote = false;
        let recent = self.recent.read().unwrap_or_else(|e| e.into_inner());
        index.next_stream_number = recent.next_stream_number;
        if recent.events >= self.flush_events {
            recent.flush(&txn, head.position)?;
            index.flushed = true;
        }
        {
            let mut tables = Tables {
                events: txn.open_table(EVENTS)?,
                streams: txn.open_table(STREAMS)?,
                event_ids: txn.open_table(EVENT_IDS)?,
            };
            let mut lookup = Lookup {
                tables: &mut tables,
                recent: &recent,
                batch: index,
            };
            let mut buffer = Vec::new();
            while let Some(WriteRequest { op, reply }) = next.take() {
                let outcome = match &op {
                    WriteOp::Append(request, sealed) => {
                        append_one(&mut lookup, request, sealed, head, now, &mut buffer)
                    }
                    WriteOp::Import(events) => import_one(&mut lookup, events, head, &mut buffer),
                };
                match outcome {
                    Ok(outcome) => {
                        wrote |= matches!(
                            outcome,
                            Ok(Appended {
                                already_stored: false,
                                ..
                            })
                        );
                        answers.push((reply, outcome));
                    }
                    Err(Fatal(error)) => {
                        answers.push((reply, Err(error.clone())));
                        return Err(Fatal(error));
                    }
                }
                if answers.len() >= self.max_batch {
                    break;
                }
                next = self.next_request(requests, started);
            }
            if wrote {
                txn.open_table(META)?
                    .insert(META_HEAD, head.encode().as_slice())?;
            }
        }
        if wrote || index.flushed {
            Ok(Some(txn))
        } else {
            txn.abort()?;
            Ok(None)
        }
    }

    /// The next append of this batch: one already waiting, or one that arrives within the gap.
    fn next_request(
        &self,
        requests: &Receiver<WriteRequest>,
        started: Instant,
    ) -> Option<WriteRequest> {
        if let Ok(request) = requests.try_recv() {
            return Some(request);
        }
        let left = self.gather.max_wait.saturating_sub(started.elapsed());
        if left.is_zero() || self.gather.gap.is_zero() {
            return None;
        }
        // Yield rather than sleep: a timed sleep overshoots by the timer slack (~50 us), and
        // the callers about to send need this core more than the writer does.
        let waiting = Instant::now();
        let deadline = self.gather.gap.min(left);
        let request = loop {
            std::thread::yield_now();
            if let Ok(request) = requests.try_recv() {
                break Some(request);
            }
            if waiting.elapsed() >= deadline {
                break None;
            }
        };
        add_elapsed(&self.stats.gather_nanos, waiting);
        request
    }

    /// Make a committed batch's index entries visible to readers.
    fn apply_index(&self, index: BatchIndex) {
        let mut recent = self.recent.write().unwrap_or_else(|e| e.into_inner());
        if index.flushed {
            recent.reset(self.head.position);
        }
        for (stream, entry) in index.streams {
            recent.record(&stream, entry.row, &entry.positions);
        }
        recent.ids.extend(index.ids);
        recent.next_stream_number = index.next_stream_number;
    }

    fn count_committed(&self, answers: &[Answer]) {
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
    }
}

/// A caller's reply channel and the answer it will get.
type Answer = (
    oneshot::Sender<Result<Appended, AppendError>>,
    Result<Appended, AppendError>,
);

fn add_elapsed(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

fn commit_timed(txn: WriteTransaction, counter: &AtomicU64) -> Result<(), redb::CommitError> {
    let started = Instant::now();
    let result = txn.commit();
    add_elapsed(counter, started);
    result
}

/// Turn the successes of a batch that failed to commit into the batch's error.
fn fail_written(answers: &mut [Answer], error: &AppendError) {
    for (_, outcome) in answers {
        if matches!(
            outcome,
            Ok(Appended {
                already_stored: false,
                ..
            })
        ) {
            *outcome = Err(error.clone());
        }
    }
}

/// Check and stage one append. The outer `Result` is a storage failure that dooms the batch;
/// the inner one is this append's own answer.
fn append_one(
    lookup: &mut Lookup<'_, '_>,
    request: &AppendRequest,
    sealed: &[Option<Vec<u8>>],
    head: &mut Head,
    now: u64,
    buffer: &mut Vec<u8>,
) -> Result<Result<Appended, AppendError>, Fatal> {
    if let Some(answer) = replayed_append(lookup, request, sealed)? {
        return Ok(answer);
    }
    // An import in the same batch may have moved the clock of the log past `now`.
    let now = now.max(head.recorded_at);
    let stream = request.stream_id.as_str();
    let existing = lookup.row(stream)?;
    let actual = existing.map_or(0, |(_, version, ..)| version);
    if !request.expected.accepts(actual) {
        return Ok(Err(AppendError::Conflict {
            stream_id: request.stream_id.clone(),
            expected: request.expected,
            actual,
        }));
    }
    let first_position = head.position + 1;
    let (number, first_in_stream, created_at) = match existing {
        Some((number, _, first, _, created, _)) => (number, first, created),
        None => {
            lookup.batch.next_stream_number += 1;
            (lookup.batch.next_stream_number - 1, first_position, now)
        }
    };
    let mut version = actual;
    let mut positions = Vec::with_capacity(request.events.len());
    for (event, sealed) in request.events.iter().zip(sealed) {
        version += 1;
        let position = head.position + 1;
        buffer.clear();
        let hash = RecordBody {
            stream_version: version,
            event_id: event.event_id,
            schema_version: event.schema_version,
            recorded_at: now,
            stream_id: stream,
            event_type: &event.event_type,
            data: &event.data,
            metadata: &event.metadata,
            personal: personal_of(event.subject_id.as_deref(), sealed.as_deref()),
        }
        .encode_into(position, &head.hash, buffer);
        lookup.tables.events.insert(position, buffer.as_slice())?;
        lookup.batch.ids.insert(event.event_id.as_u128(), position);
        positions.push(position);
        *head = Head {
            position,
            hash,
            recorded_at: now,
        };
    }
    let row = (
        number,
        version,
        first_in_stream,
        head.position,
        created_at,
        now,
    );
    let entry = lookup
        .batch
        .streams
        .entry(request.stream_id.clone())
        .or_default();
    entry.row = row;
    entry.positions.extend_from_slice(&positions);
    Ok(Ok(Appended {
        first_position,
        last_position: head.position,
        first_version: actual + 1,
        stream_version: version,
        recorded_at: now,
        already_stored: false,
    }))
}

/// Check and stage exported events so that they continue the log exactly: each at the next
/// position, at or after the last commit time, at the next version of its stream, with an
/// unused id, and with the hash the chain gives it. Nothing is staged unless all pass.
fn import_one(
    lookup: &mut Lookup<'_, '_>,
    events: &[RecordedEvent],
    head: &mut Head,
    buffer: &mut Vec<u8>,
) -> Result<Result<Appended, AppendError>, Fatal> {
    let refuse = |position: u64, reason: String| Ok(Err(AppendError::Import { position, reason }));
    let mut check = *head;
    let mut versions: HashMap<&str, u64> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for event in events {
        if event.position != check.position + 1 {
            return refuse(
                event.position,
                format!("the store's next position is {}", check.position + 1),
            );
        }
        if event.recorded_at < check.recorded_at {
            return refuse(
                event.position,
                "its time is before the previous event's".into(),
            );
        }
        let version = match versions.get(event.stream_id.as_str()) {
            Some(version) => *version,
            None => lookup
                .row(&event.stream_id)?
                .map_or(0, |(_, version, ..)| version),
        };
        if event.stream_version != version + 1 {
            return refuse(
                event.position,
                format!(
                    "stream {:?} is at version {version}, so the next is {}, not {}",
                    event.stream_id,
                    version + 1,
                    event.stream_version
                ),
            );
        }
        versions.insert(&event.stream_id, event.stream_version);
        let id = event.event_id.as_u128();
        if !ids.insert(id) || lookup.position_of(id)?.is_some() {
            return refuse(
                event.position,
                format!("event id {} is already stored", event.event_id),
            );
        }
        buffer.clear();
        let hash = body_of(event).encode_into(event.position, &check.hash, buffer);
        if hash != event.hash {
            return refuse(
                event.position,
                "its hash does not follow from the previous event's: the export was altered or belongs to another log".into(),
            );
        }
        check = Head {
            position: event.position,
            hash,
            recorded_at: event.recorded_at,
        };
    }
    let Some(first) = events.first() else {
        return refuse(head.position + 1, "the import is empty".into());
    };
    for event in events {
        buffer.clear();
        body_of(event).encode_into(event.position, &head.hash, buffer);
        lookup
            .tables
            .events
            .insert(event.position, buffer.as_slice())?;
        lookup
            .batch
            .ids
            .insert(event.event_id.as_u128(), event.position);
        let row = match lookup.row(&event.stream_id)? {
            Some((number, _, first_in_stream, _, created, _)) => (
                number,
                event.stream_version,
                first_in_stream,
                event.position,
                created,
                event.recorded_at,
            ),
            None => {
                lookup.batch.next_stream_number += 1;
                let number = lookup.batch.next_stream_number - 1;
                (
                    number,
                    event.stream_version,
                    event.position,
                    event.position,
                    event.recorded_at,
                    event.recorded_at,
                )
            }
        };
        let entry = lookup
            .batch
            .streams
            .entry(event.stream_id.clone())
            .or_default();
        entry.row = row;
        entry.positions.push(event.position);
        *head = Head {
            position: event.position,
            hash: event.hash,
            recorded_at: event.recorded_at,
        };
    }
    Ok(Ok(Appended {
        first_position: first.position,
        last_position: head.position,
        first_version: first.stream_version,
        stream_version: events.last().map_or(0, |event| event.stream_version),
        recorded_at: head.recorded_at,
        already_stored: false,
    }))
}

fn body_of(event: &RecordedEvent) -> RecordBody<'_> {
    RecordBody {
        stream_version: event.stream_version,
        event_id: event.event_id,
        schema_version: event.schema_version,
        recorded_at: event.recorded_at,
        stream_id: &event.stream_id,
        event_type: &event.event_type,
        data: &event.data,
        metadata: &event.metadata,
        personal: personal_of(event.subject_id.as_deref(), event.sealed.as_deref()),
    }
}

fn personal_of<'a>(
    subject: Option<&'a str>,
    sealed: Option<&'a [u8]>,
) -> Option<(&'a str, &'a [u8])> {
    Some((subject?, sealed?))
}

/// If any event id of the request is already stored, the answer to the request: the original
/// result when the whole append is stored with the same content, else a duplicate-id error.
fn replayed_append(
    lookup: &Lookup<'_, '_>,
    request: &AppendRequest,
    sealed: &[Option<Vec<u8>>],
) -> Result<Option<Result<Appended, AppendError>>, Fatal> {
    let mut stored = Vec::new();
    for (event, sealed) in request.events.iter().zip(sealed) {
        if let Some(position) = lookup.position_of(event.event_id.as_u128())? {
            stored.push(((event, sealed.as_deref()), position));
        }
    }
    let Some(&(_, first_position)) = stored.first() else {
        return Ok(None);
    };
    let mut answer = Appended {
        first_position,
        last_position: first_position,
        first_version: 0,
        stream_version: 0,
        recorded_at: 0,
        already_stored: true,
    };
    for (index, ((event, sealed), position)) in stored.iter().enumerate() {
        let record = lookup.tables.events.get(*position)?.ok_or_else(|| {
            AppendError::Storage(format!(
                "event id index points at missing position {position}"
            ))
        })?;
        let decoded = codec::decode(*position, record.value())
            .map_err(|reason| AppendError::Storage(format!("position {position}: {reason}")))?;
        let duplicate = |reason| {
            Ok(Some(Err(AppendError::DuplicateEventId {
                event_id: event.event_id,
                position: *position,
                reason,
            })))
        };
        if !same_content(event, *sealed, &request.stream_id, &decoded.event) {
            return duplicate("with different content");
        }
        if *position != first_position + index as u64 || stored.len() != request.events.len() {
            return duplicate("as part of another append");
        }
        if index == 0 {
            answer.first_version = decoded.event.stream_version;
            answer.recorded_at = decoded.event.recorded_at;
        }
        answer.last_position = *position;
        answer.stream_version = decoded.event.stream_version;
    }
    Ok(Some(Ok(answer)))
}

/// Sealing is deterministic, so a retried event with the same personal data has the same
/// sealed bytes.
fn same_content(
    event: &ProposedEvent,
    sealed: Option<&[u8]>,
    stream_id: &str,
    stored: &crate::event::EventRef<'_>,
) -> bool {
    stored.stream_id == stream_id
        && stored.subject_id == event.subject_id.as_deref()
        && stored.sealed == sealed
        && stored.event_type == event.event_type
        && stored.schema_version == event.schema_version
        && stored.data == event.data
        && stored.metadata == event.metadata
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
