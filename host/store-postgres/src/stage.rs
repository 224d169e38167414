//! Deciding a batch: given the log head and the stream rows and stored events the batch
//! touches (read under the head lock), each append's answer, and the rows to write. Pure: no
//! I/O, so the decisions are exactly those of the embedded writer, in batch order.

use std::collections::{BTreeMap, HashMap, HashSet};

use eshost_store::codec::RecordBody;
use eshost_store::keys::SealError;
use eshost_store::{AppendError, AppendRequest, Appended, ProposedEvent, RecordedEvent};
use uuid::Uuid;

/// The end of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub position: u64,
    pub hash: [u8; 32],
    pub recorded_at: u64,
}

/// What the batch needs of a stream that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamRow {
    pub version: u64,
    pub first_position: u64,
    pub last_position: u64,
    pub created_at: u64,
    pub updated_at: u64,
}

/// One write of a batch.
#[derive(Debug)]
pub(crate) enum Op {
    /// Events to append, each with its personal part already sealed.
    Append(AppendRequest, Vec<Option<Vec<u8>>>),
    /// Exported events to restore exactly.
    Import(Vec<RecordedEvent>),
}

impl Op {
    /// The streams, event ids and subjects (of personal data) the op touches.
    pub fn touches<'a>(
        &'a self,
        streams: &mut HashSet<&'a str>,
        ids: &mut Vec<Uuid>,
        subjects: &mut HashSet<&'a str>,
    ) {
        match self {
            Op::Append(request, _) => {
                streams.insert(&request.stream_id);
                for event in &request.events {
                    ids.push(event.event_id);
                    if let Some(subject) = &event.subject_id {
                        subjects.insert(subject);
                    }
                }
            }
            Op::Import(events) => {
                for event in events {
                    streams.insert(&event.stream_id);
                    ids.push(event.event_id);
                }
            }
        }
    }
}

/// The rows a batch writes, as columns (the insert takes arrays).
#[derive(Debug, Default)]
pub(crate) struct EventRows<'a> {
    pub position: Vec<i64>,
    pub stream_id: Vec<&'a str>,
    pub stream_version: Vec<i64>,
    pub event_id: Vec<Uuid>,
    pub event_type: Vec<&'a str>,
    pub schema_version: Vec<i64>,
    pub recorded_at: Vec<i64>,
    pub data: Vec<&'a str>,
    pub metadata: Vec<&'a str>,
    pub subject_id: Vec<Option<&'a str>>,
    pub sealed: Vec<Option<&'a [u8]>>,
    pub hash: Vec<Vec<u8>>,
}

impl<'a> EventRows<'a> {
    fn push(&mut self, position: u64, body: &RecordBody<'a>, hash: [u8; 32]) {
        self.position.push(position as i64);
        self.stream_id.push(body.stream_id);
        self.stream_version.push(body.stream_version as i64);
        self.event_id.push(body.event_id);
        self.event_type.push(body.event_type);
        self.schema_version.push(i64::from(body.schema_version));
        self.recorded_at.push(body.recorded_at as i64);
        self.data.push(body.data);
        self.metadata.push(body.metadata);
        self.subject_id
            .push(body.personal.map(|(subject, _)| subject));
        self.sealed.push(body.personal.map(|(_, sealed)| sealed));
        self.hash.push(hash.to_vec());
    }

    pub fn len(&self) -> usize {
        self.position.len()
    }
}

/// A decided batch.
#[derive(Debug)]
pub(crate) struct Staged<'a> {
    /// Each op's answer, in batch order.
    pub outcomes: Vec<Result<Appended, AppendError>>,
    /// The events to insert.
    pub rows: EventRows<'a>,
    /// The new rows of the streams written to.
    pub streams: BTreeMap<&'a str, StreamRow>,
    /// The head after the batch.
    pub head: Head,
}

/// What the batch reads under the head lock.
#[derive(Debug)]
pub(crate) struct Known {
    pub head: Head,
    pub streams: HashMap<String, StreamRow>,
    pub stored: HashMap<Uuid, RecordedEvent>,
    pub forgotten: HashSet<String>,
}

/// Decide every op of the batch in order; later ops see the events of earlier ones.
pub(crate) fn stage<'a>(ops: &'a [Op], known: Known, now: u64) -> Staged<'a> {
    let mut staged = Staged {
        outcomes: Vec::with_capacity(ops.len()),
        rows: EventRows::default(),
        streams: BTreeMap::new(),
        head: known.head,
    };
    // Events staged by this batch, by id, for retries within the same batch.
    let mut batch_ids: HashMap<Uuid, usize> = HashMap::new();
    for op in ops {
        let outcome = match op {
            Op::Append(request, sealed) => {
                append_one(&mut staged, &known, &mut batch_ids, request, sealed, now)
            }
            Op::Import(events) => import_one(&mut staged, &known, &mut batch_ids, events),
        };
        staged.outcomes.push(outcome);
    }
    staged
}

fn stream_version(staged: &Staged<'_>, known: &Known, stream: &str) -> Option<StreamRow> {
    staged
        .streams
        .get(stream)
        .or_else(|| known.streams.get(stream))
        .copied()
}

fn append_one<'a>(
    staged: &mut Staged<'a>,
    known: &Known,
    batch_ids: &mut HashMap<Uuid, usize>,
    request: &'a AppendRequest,
    sealed: &'a [Option<Vec<u8>>],
    now: u64,
) -> Result<Appended, AppendError> {
    if let Some(answer) = replayed(staged, known, batch_ids, request, sealed) {
        return answer;
    }
    if let Some(subject) = request
        .events
        .iter()
        .filter_map(|event| event.subject_id.as_deref())
        .find(|subject| known.forgotten.contains(*subject))
    {
        return Err(AppendError::Seal(SealError::Forgotten {
            subject: subject.to_owned(),
        }));
    }
    let stream = request.stream_id.as_str();
    let existing = stream_version(staged, known, stream);
    let actual = existing.map_or(0, |row| row.version);
    if !request.expected.accepts(actual) {
        return Err(AppendError::Conflict {
            stream_id: request.stream_id.clone(),
            expected: request.expected,
            actual,
        });
    }
    // Clocks of several nodes differ: times never go back along the log.
    let now = now.max(staged.head.recorded_at);
    let first_position = staged.head.position + 1;
    let mut version = actual;
    for (event, sealed) in request.events.iter().zip(sealed) {
        version += 1;
        let position = staged.head.position + 1;
        let body = RecordBody {
            stream_version: version,
            event_id: event.event_id,
            schema_version: event.schema_version,
            recorded_at: now,
            stream_id: stream,
            event_type: &event.event_type,
            data: &event.data,
            metadata: &event.metadata,
            personal: event.subject_id.as_deref().zip(sealed.as_deref()),
        };
        let hash = chain(&body, position, &staged.head.hash);
        batch_ids.insert(event.event_id, staged.rows.len());
        staged.rows.push(position, &body, hash);
        staged.head = Head {
            position,
            hash,
            recorded_at: now,
        };
    }
    staged.streams.insert(
        stream,
        StreamRow {
            version,
            first_position: existing.map_or(first_position, |row| row.first_position),
            last_position: staged.head.position,
            created_at: existing.map_or(now, |row| row.created_at),
            updated_at: now,
        },
    );
    Ok(Appended {
        first_position,
        last_position: staged.head.position,
        first_version: actual + 1,
        stream_version: version,
        recorded_at: now,
        already_stored: false,
    })
}

fn chain(body: &RecordBody<'_>, position: u64, previous: &[u8; 32]) -> [u8; 32] {
    let mut buffer = Vec::new();
    body.encode_into(position, previous, &mut buffer)
}

/// A stored event as the batch sees it: from the database, or staged earlier in the batch.
fn stored_event(
    staged: &Staged<'_>,
    known: &Known,
    batch_ids: &HashMap<Uuid, usize>,
    id: Uuid,
) -> Option<RecordedEvent> {
    if let Some(event) = known.stored.get(&id) {
        return Some(event.clone());
    }
    let row = *batch_ids.get(&id)?;
    let rows = &staged.rows;
    Some(RecordedEvent {
        position: rows.position[row] as u64,
        stream_id: rows.stream_id[row].to_owned(),
        stream_version: rows.stream_version[row] as u64,
        event_id: id,
        event_type: rows.event_type[row].to_owned(),
        schema_version: rows.schema_version[row] as u32,
        recorded_at: rows.recorded_at[row] as u64,
        data: rows.data[row].to_owned(),
        metadata: rows.metadata[row].to_owned(),
        subject_id: rows.subject_id[row].map(str::to_owned),
        personal_data: None,
        shredded: false,
        sealed: rows.sealed[row].map(<[u8]>::to_vec),
        hash: rows.hash[row].as_slice().try_into().unwrap_or([0; 32]),
    })
}

/// If any event id of the request is stored, the answer: the original result when the whole
/// append is stored with the same content, else a duplicate-id error.
fn replayed(
    staged: &Staged<'_>,
    known: &Known,
    batch_ids: &HashMap<Uuid, usize>,
    request: &AppendRequest,
    sealed: &[Option<Vec<u8>>],
) -> Option<Result<Appended, AppendError>> {
    let stored: Vec<(&ProposedEvent, Option<&[u8]>, RecordedEvent)> = request
        .events
        .iter()
        .zip(sealed)
        .filter_map(|(event, sealed)| {
            stored_event(staged, known, batch_ids, event.event_id)
                .map(|stored| (event, sealed.as_deref(), stored))
        })
        .collect();
    let first_position = stored.first()?.2.position;
    let mut answer = Appended {
        first_position,
        last_position: first_position,
        first_version: 0,
        stream_version: 0,
        recorded_at: 0,
        already_stored: true,
    };
    for (index, (event, sealed, stored_event)) in stored.iter().enumerate() {
        let duplicate = |reason| {
            Some(Err(AppendError::DuplicateEventId {
                event_id: event.event_id,
                position: stored_event.position,
                reason,
            }))
        };
        if !same_content(event, *sealed, &request.stream_id, stored_event) {
            return duplicate("with different content");
        }
        if stored_event.position != first_position + index as u64
            || stored.len() != request.events.len()
        {
            return duplicate("as part of another append");
        }
        if index == 0 {
            answer.first_version = stored_event.stream_version;
            answer.recorded_at = stored_event.recorded_at;
        }
        answer.last_position = stored_event.position;
        answer.stream_version = stored_event.stream_version;
    }
    Some(Ok(answer))
}

/// Sealing is deterministic, so a retried event with the same personal data has the same
/// sealed bytes.
fn same_content(
    event: &ProposedEvent,
    sealed: Option<&[u8]>,
    stream_id: &str,
    stored: &RecordedEvent,
) -> bool {
    stored.stream_id == stream_id
        && stored.subject_id.as_deref() == event.subject_id.as_deref()
        && stored.sealed.as_deref() == sealed
        && stored.event_type == event.event_type
        && stored.schema_version == event.schema_version
        && stored.data == event.data
        && stored.metadata == event.metadata
}

/// Check exported events continue the log exactly (next position, time not before the last,
/// next version of their stream, unused id, the hash the chain gives them), then stage them.
/// Nothing is staged unless all pass.
fn import_one<'a>(
    staged: &mut Staged<'a>,
    known: &Known,
    batch_ids: &mut HashMap<Uuid, usize>,
    events: &'a [RecordedEvent],
) -> Result<Appended, AppendError> {
    let refuse = |position: u64, reason: String| Err(AppendError::Import { position, reason });
    let Some(first) = events.first() else {
        return refuse(staged.head.position + 1, "the import is empty".into());
    };
    let mut check = staged.head;
    let mut versions: HashMap<&str, u64> = HashMap::new();
    let mut ids = HashSet::new();
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
            None => stream_version(staged, known, &event.stream_id).map_or(0, |row| row.version),
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
        if !ids.insert(event.event_id)
            || known.stored.contains_key(&event.event_id)
            || batch_ids.contains_key(&event.event_id)
        {
            return refuse(
                event.position,
                format!("event id {} is already stored", event.event_id),
            );
        }
        let hash = chain(&body_of(event), event.position, &check.hash);
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
    for event in events {
        batch_ids.insert(event.event_id, staged.rows.len());
        staged
            .rows
            .push(event.position, &body_of(event), event.hash);
        let row = match stream_version(staged, known, &event.stream_id) {
            Some(row) => StreamRow {
                version: event.stream_version,
                last_position: event.position,
                updated_at: event.recorded_at,
                ..row
            },
            None => StreamRow {
                version: event.stream_version,
                first_position: event.position,
                last_position: event.position,
                created_at: event.recorded_at,
                updated_at: event.recorded_at,
            },
        };
        staged.streams.insert(&event.stream_id, row);
    }
    staged.head = check;
    Ok(Appended {
        first_position: first.position,
        last_position: check.position,
        first_version: first.stream_version,
        stream_version: events.last().map_or(0, |event| event.stream_version),
        recorded_at: check.recorded_at,
        already_stored: false,
    })
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
        personal: event.subject_id.as_deref().zip(event.sealed.as_deref()),
    }
}
