//! Staging: checking each append against the log as it will be once the batches before it are
//! durable, giving it positions, and encoding its records into the open batch's WAL frames.
//!
//! The stager looks things up newest first: the open batch, the batch being synced, the tail
//! (durable, in memory), then redb, through a read transaction begun under the tail's lock
//! (see `tail`) and begun again whenever a checkpoint has moved events out of the tail.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use redb::{Database, ReadOnlyTable, ReadableDatabase};
use tokio::sync::oneshot;

use super::archive::Archive;
use super::index::RecentIndex;
use super::schema::{EVENT_IDS, EVENTS, Head, STREAMS, StreamRow};
use super::tail::{Batch, Tail};
use super::wal;
use crate::codec::{self, RecordBody};
use crate::error::AppendError;
use crate::event::{AppendRequest, Appended, EventRef, ProposedEvent, RecordedEvent};

/// A caller's reply channel and the answer it will get.
pub(crate) type Answer = (
    oneshot::Sender<Result<Appended, AppendError>>,
    Result<Appended, AppendError>,
);

/// A failure of the storage engine while staging: the store stops taking appends.
pub(crate) struct Fatal(pub AppendError);

impl<E: Into<AppendError>> From<E> for Fatal {
    fn from(error: E) -> Self {
        Fatal(error.into())
    }
}

/// The batch being staged.
#[derive(Debug, Default)]
pub(crate) struct Open {
    /// Its records, framed for the WAL.
    pub batch: Batch,
    /// Their index entries.
    pub index: RecentIndex,
    /// Every caller's answer, in arrival order.
    pub answers: Vec<Answer>,
}

impl Open {
    /// Whether no append waits in it.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

/// The batch the syncer is writing, as the stager still needs to see it.
#[derive(Debug)]
pub(crate) struct Inflight {
    pub batch: Arc<Batch>,
    pub index: Arc<RecentIndex>,
}

/// redb's state at some moment, for what the tail no longer holds.
struct RedbView {
    trims: u64,
    streams: ReadOnlyTable<&'static str, StreamRow>,
    ids: ReadOnlyTable<u128, u64>,
    events: ReadOnlyTable<u64, &'static [u8]>,
}

/// What the writer stages against.
pub(crate) struct Stager {
    pub db: Arc<Database>,
    pub tail: Arc<RwLock<Tail>>,
    /// The WAL epoch written into every frame.
    pub epoch: u32,
    /// The head once the open batch is durable.
    pub head: Head,
    /// The number the next new stream gets.
    pub next_stream_number: u64,
    pub open: Open,
    pub inflight: Option<Inflight>,
    view: Option<RedbView>,
    /// Where records the hot log no longer holds are.
    pub archive: Arc<Archive>,
}

impl Stager {
    /// A stager continuing after `head`.
    pub fn new(
        db: Arc<Database>,
        tail: Arc<RwLock<Tail>>,
        epoch: u32,
        head: Head,
        next_stream_number: u64,
        archive: Arc<Archive>,
    ) -> Stager {
        let mut stager = Stager {
            db,
            tail,
            epoch,
            head,
            next_stream_number,
            open: Open::default(),
            inflight: None,
            view: None,
            archive,
        };
        stager.open.batch.first = head.position + 1;
        stager
    }

    /// Take the open batch (to sync it) and start the next one.
    pub fn take_open(&mut self) -> Open {
        // A stale snapshot would keep redb from reusing the pages checkpoints free.
        if let Some(view) = &self.view {
            let trims = self.tail.read().unwrap_or_else(|e| e.into_inner()).trims;
            if view.trims != trims {
                self.view = None;
            }
        }
        self.open.index.next_stream_number = self.next_stream_number;
        let mut next = Open::default();
        next.batch.first = self.head.position + 1;
        std::mem::replace(&mut self.open, next)
    }

    /// Check `request` and, if it is accepted, stage its events. The outer `Result` is a
    /// storage failure; the inner one is this append's own answer.
    pub fn append(
        &mut self,
        request: &AppendRequest,
        sealed: &[Option<Vec<u8>>],
    ) -> Result<Result<Appended, AppendError>, Fatal> {
        if let Some(answer) = self.replayed_append(request, sealed)? {
            return Ok(answer);
        }
        let now = super::writer::now_ms().max(self.head.recorded_at);
        let stream = request.stream_id.as_str();
        let existing = self.row(stream)?;
        let actual = existing.map_or(0, |(_, version, ..)| version);
        if !request.expected.accepts(actual) {
            return Ok(Err(AppendError::Conflict {
                stream_id: request.stream_id.clone(),
                expected: request.expected,
                actual,
            }));
        }
        let first_position = self.head.position + 1;
        let (number, first_in_stream, created_at) = match existing {
            Some((number, _, first, _, created, _)) => (number, first, created),
            None => {
                self.next_stream_number += 1;
                (self.next_stream_number - 1, first_position, now)
            }
        };
        let mut version = actual;
        let mut positions = Vec::with_capacity(request.events.len());
        for (event, sealed) in request.events.iter().zip(sealed) {
            version += 1;
            let body = RecordBody {
                stream_version: version,
                event_id: event.event_id,
                schema_version: event.schema_version,
                recorded_at: now,
                stream_id: stream,
                event_type: &event.event_type,
                data: &event.data,
                metadata: &event.metadata,
                personal: personal_of(event.subject_id.as_deref(), sealed.as_deref()),
            };
            let position = self.stage_record(&body, event.event_id.as_u128(), now);
            positions.push(position);
        }
        let row = (
            number,
            version,
            first_in_stream,
            self.head.position,
            created_at,
            now,
        );
        self.open.index.record(stream, row, &positions);
        Ok(Ok(Appended {
            first_position,
            last_position: self.head.position,
            first_version: actual + 1,
            stream_version: version,
            recorded_at: now,
            already_stored: false,
        }))
    }

    /// Encode `body` as the next record of the open batch; returns its position.
    fn stage_record(&mut self, body: &RecordBody<'_>, id: u128, recorded_at: u64) -> u64 {
        let position = self.head.position + 1;
        let frames = &mut self.open.batch.frames;
        let start = wal::begin_frame(frames);
        let hash = body.encode_into(position, &self.head.hash, frames);
        wal::finish_frame(frames, start, self.epoch, position);
        let record_start = start + wal::FRAME_HEADER;
        self.open
            .batch
            .records
            .push((record_start as u32, (frames.len() - record_start) as u32));
        self.open.index.ids.insert(id, position);
        self.head = Head {
            position,
            hash,
            recorded_at,
        };
        position
    }

    /// Check exported events and stage them so that they continue the log exactly: each at
    /// the next position, at or after the last commit time, at the next version of its
    /// stream, with an unused id, and with the hash the chain gives it. Nothing is staged
    /// unless all pass.
    pub fn import(
        &mut self,
        events: &[RecordedEvent],
    ) -> Result<Result<Appended, AppendError>, Fatal> {
        let refuse =
            |position: u64, reason: String| Ok(Err(AppendError::Import { position, reason }));
        let mut check = self.head;
        let mut rows: HashMap<&str, Option<StreamRow>> = HashMap::new();
        let mut versions: HashMap<&str, u64> = HashMap::new();
        let mut ids = HashSet::new();
        let mut buffer = Vec::new();
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
            let stream = event.stream_id.as_str();
            if !rows.contains_key(stream) {
                let row = self.row(stream)?;
                rows.insert(stream, row);
            }
            let version = match versions.get(stream) {
                Some(version) => *version,
                None => rows[stream].map_or(0, |(_, version, ..)| version),
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
            versions.insert(stream, event.stream_version);
            let id = event.event_id.as_u128();
            if !ids.insert(id) || self.position_of(id)?.is_some() {
                return refuse(
                    event.position,
                    format!("event id {} is already stored", event.event_id),
                );
            }
            buffer.clear();
            let hash = body_of(event).encode_into(event.position, &check.hash, &mut buffer);
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
            return refuse(self.head.position + 1, "the import is empty".into());
        };
        for event in events {
            self.stage_record(&body_of(event), event.event_id.as_u128(), event.recorded_at);
            let stream = event.stream_id.as_str();
            let row = match self.open.index.row(stream).or(rows[stream]) {
                Some((number, _, first_in_stream, _, created, _)) => (
                    number,
                    event.stream_version,
                    first_in_stream,
                    event.position,
                    created,
                    event.recorded_at,
                ),
                None => {
                    self.next_stream_number += 1;
                    (
                        self.next_stream_number - 1,
                        event.stream_version,
                        event.position,
                        event.position,
                        event.recorded_at,
                        event.recorded_at,
                    )
                }
            };
            self.open.index.record(stream, row, &[event.position]);
        }
        Ok(Ok(Appended {
            first_position: first.position,
            last_position: self.head.position,
            first_version: first.stream_version,
            stream_version: events.last().map_or(0, |event| event.stream_version),
            recorded_at: self.head.recorded_at,
            already_stored: false,
        }))
    }

    /// If any event id of the request is already stored, the answer to the request: the
    /// original result when the whole append is stored with the same content, else a
    /// duplicate-id error.
    fn replayed_append(
        &mut self,
        request: &AppendRequest,
        sealed: &[Option<Vec<u8>>],
    ) -> Result<Option<Result<Appended, AppendError>>, Fatal> {
        let mut stored = Vec::new();
        for (event, sealed) in request.events.iter().zip(sealed) {
            if let Some(position) = self.position_of(event.event_id.as_u128())? {
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
            let record = match self.record(*position)? {
                Some(record) => record,
                // Archived: a segment that cannot be read fails this append only.
                None => match self
                    .archive
                    .view()
                    .with_record(*position, |r| Ok(r.to_vec()))
                {
                    Ok(record) => record,
                    Err(error) => return Ok(Some(Err(AppendError::Storage(error.to_string())))),
                },
            };
            let decoded = codec::decode(*position, &record)
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

    /// The stream's row as it will be once everything staged is durable.
    fn row(&mut self, stream: &str) -> Result<Option<StreamRow>, Fatal> {
        if let Some(row) = self.open.index.row(stream) {
            return Ok(Some(row));
        }
        if let Some(row) = self.inflight.as_ref().and_then(|f| f.index.row(stream)) {
            return Ok(Some(row));
        }
        let view = {
            let tail = self.tail.read().unwrap_or_else(|e| e.into_inner());
            if let Some(row) = tail.row(stream) {
                return Ok(Some(row));
            }
            fresh_view(&mut self.view, &self.db, &tail)?
        };
        Ok(view.streams.get(stream)?.map(|row| row.value()))
    }

    /// Where event `id` is or will be stored, if anywhere.
    fn position_of(&mut self, id: u128) -> Result<Option<u64>, Fatal> {
        if let Some(position) = self.open.index.position_of(id) {
            return Ok(Some(position));
        }
        if let Some(position) = self.inflight.as_ref().and_then(|f| f.index.position_of(id)) {
            return Ok(Some(position));
        }
        let view = {
            let tail = self.tail.read().unwrap_or_else(|e| e.into_inner());
            if let Some(position) = tail.position_of(id) {
                return Ok(Some(position));
            }
            fresh_view(&mut self.view, &self.db, &tail)?
        };
        Ok(view.ids.get(id)?.map(|position| position.value()))
    }

    /// The stored (or staged) record at `position`.
    fn record(&mut self, position: u64) -> Result<Option<Vec<u8>>, Fatal> {
        if let Some(record) = self.open.batch.record(position) {
            return Ok(Some(record.to_vec()));
        }
        if let Some(record) = self
            .inflight
            .as_ref()
            .and_then(|f| f.batch.record(position))
        {
            return Ok(Some(record.to_vec()));
        }
        let view = {
            let tail = self.tail.read().unwrap_or_else(|e| e.into_inner());
            if let Some(batch) = tail.batch_holding(position) {
                return Ok(batch.record(position).map(<[u8]>::to_vec));
            }
            fresh_view(&mut self.view, &self.db, &tail)?
        };
        Ok(view
            .events
            .get(position)?
            .map(|record| record.value().to_vec()))
    }
}

/// A redb snapshot that holds everything `tail` does not: the one in hand unless a checkpoint
/// has trimmed the tail since it was begun. Called under the tail's lock.
fn fresh_view<'a>(
    view: &'a mut Option<RedbView>,
    db: &Database,
    tail: &Tail,
) -> Result<&'a RedbView, Fatal> {
    if view.as_ref().is_none_or(|view| view.trims != tail.trims) {
        let txn = db.begin_read()?;
        *view = Some(RedbView {
            trims: tail.trims,
            streams: txn.open_table(STREAMS)?,
            ids: txn.open_table(EVENT_IDS)?,
            events: txn.open_table(EVENTS)?,
        });
    }
    Ok(view.as_ref().expect("just set"))
}

pub(crate) fn body_of(event: &RecordedEvent) -> RecordBody<'_> {
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

/// Sealing is deterministic, so a retried event with the same personal data has the same
/// sealed bytes.
fn same_content(
    event: &ProposedEvent,
    sealed: Option<&[u8]>,
    stream_id: &str,
    stored: &EventRef<'_>,
) -> bool {
    stored.stream_id == stream_id
        && stored.subject_id == event.subject_id.as_deref()
        && stored.sealed == sealed
        && stored.event_type == event.event_type
        && stored.schema_version == event.schema_version
        && stored.data == event.data
        && stored.metadata == event.metadata
}
