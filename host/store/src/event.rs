//! The event as appended and as stored, and the shapes of append requests and results.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An event a client wants to append. JSON fields hold JSON text, checked before the writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposedEvent {
    /// Unique id; re-appending an id that is already stored with the same content is a no-op.
    pub event_id: Uuid,
    /// What happened, e.g. `FundsDeposited`.
    pub event_type: String,
    /// Version of the shape of `data`, for upcasting.
    pub schema_version: u32,
    /// The payload, JSON text.
    pub data: String,
    /// A JSON object as text: correlation/causation ids, user, plugin hash, free keys.
    pub metadata: String,
    /// The data subject `personal_data` belongs to; required with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<String>,
    /// Personal data (JSON text), stored sealed under the subject's key and erased with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_data: Option<String>,
}

impl ProposedEvent {
    /// An event with a fresh time-ordered id, schema version 1 and empty metadata.
    pub fn new(event_type: impl Into<String>, data: impl Into<String>) -> Self {
        ProposedEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            data: data.into(),
            metadata: "{}".to_owned(),
            subject_id: None,
            personal_data: None,
        }
    }

    /// The same event with personal data (JSON text) belonging to `subject_id`.
    pub fn with_personal_data(
        mut self,
        subject_id: impl Into<String>,
        personal_data: impl Into<String>,
    ) -> Self {
        self.subject_id = Some(subject_id.into());
        self.personal_data = Some(personal_data.into());
        self
    }

    /// The same event with `metadata` (a JSON object as text).
    pub fn with_metadata(mut self, metadata: impl Into<String>) -> Self {
        self.metadata = metadata.into();
        self
    }

    /// The same event with `schema_version`.
    pub fn with_schema_version(mut self, schema_version: u32) -> Self {
        self.schema_version = schema_version;
        self
    }

    /// The same event with a chosen id (clients choose ids to make retries idempotent).
    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Global position in `$all`: gap-free, from 1, assigned at commit.
    pub position: u64,
    /// The stream the event belongs to.
    pub stream_id: String,
    /// Version within the stream: contiguous, from 1.
    pub stream_version: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// What happened.
    pub event_type: String,
    /// Version of the shape of `data`.
    pub schema_version: u32,
    /// Commit time, milliseconds since the Unix epoch (UTC); never decreases along `$all`.
    pub recorded_at: u64,
    /// The payload, JSON text.
    pub data: String,
    /// The metadata, a JSON object as text.
    pub metadata: String,
    /// The data subject of the event's personal data, if it carries any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<String>,
    /// The personal data, decrypted, when revealed to a reader allowed to see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_data: Option<String>,
    /// True when the event's personal data was erased with its subject's key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shredded: bool,
    /// The personal data as stored: sealed under the subject's key (what the hash covers).
    #[serde(skip)]
    pub sealed: Option<Vec<u8>>,
    /// blake3(previous hash, this record): the chain `verify` re-checks.
    #[serde(with = "hex_hash")]
    pub hash: [u8; 32],
}

impl RecordedEvent {
    /// A borrowed view of the stored fields.
    pub fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            position: self.position,
            stream_id: &self.stream_id,
            stream_version: self.stream_version,
            event_id: self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            recorded_at: self.recorded_at,
            data: &self.data,
            metadata: &self.metadata,
            subject_id: self.subject_id.as_deref(),
            sealed: self.sealed.as_deref(),
            hash: self.hash,
        }
    }
}

/// What the stream's version must be for an append to go ahead. Its one wire encoding
/// (`"any"`, `"no_stream"`, `"stream_exists"` or a number) belongs to the API
/// (`eshost_api::ExpectedVersion`); here it is only a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must exist (have at least one event).
    StreamExists,
    /// The stream's last version must be exactly this (0 = the stream must not exist).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` (0 = no stream) satisfies this expectation.
    pub fn accepts(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::StreamExists => actual > 0,
            ExpectedVersion::Exact(version) => actual == version,
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// One or more events to append to one stream, atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRequest {
    /// The stream to append to.
    pub stream_id: String,
    /// The precondition on the stream's version.
    pub expected: ExpectedVersion,
    /// The events, in order; at least one.
    pub events: Vec<ProposedEvent>,
}

impl AppendRequest {
    /// A request to append `events` to `stream_id` if the stream is at `expected`.
    pub fn new(
        stream_id: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<ProposedEvent>,
    ) -> Self {
        AppendRequest {
            stream_id: stream_id.into(),
            expected,
            events,
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// Position of the first event appended.
    pub first_position: u64,
    /// Position of the last event appended.
    pub last_position: u64,
    /// Stream version of the first event appended.
    pub first_version: u64,
    /// Stream version after the append (the version to expect next time).
    pub stream_version: u64,
    /// Commit time of the events, ms since the epoch.
    pub recorded_at: u64,
    /// True when every event was already stored (an idempotent retry): nothing was written.
    pub already_stored: bool,
}

/// What the store knows about one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The stream's last version (its event count).
    pub version: u64,
    /// Position of the stream's first event.
    pub first_position: u64,
    /// Position of the stream's last event.
    pub last_position: u64,
    /// When the first event was recorded (ms since the epoch).
    pub created_at: u64,
    /// When the last event was recorded (ms since the epoch).
    pub updated_at: u64,
}

mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(hash: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(64);
        for byte in hash {
            text.push_str(&format!("{byte:02x}"));
        }
        serializer.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut hash = [0u8; 32];
        if text.len() != 64 {
            return Err(D::Error::custom("a hash is 64 hex digits"));
        }
        for (index, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16)
                .map_err(|_| D::Error::custom("a hash is 64 hex digits"))?;
        }
        Ok(hash)
    }
}

/// A stored event borrowed from the store's pages, for reads that should not allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// Global position.
    pub position: u64,
    /// The stream.
    pub stream_id: &'a str,
    /// Version within the stream.
    pub stream_version: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// What happened.
    pub event_type: &'a str,
    /// Version of the shape of `data`.
    pub schema_version: u32,
    /// Commit time, ms since the epoch.
    pub recorded_at: u64,
    /// JSON payload.
    pub data: &'a str,
    /// JSON metadata object.
    pub metadata: &'a str,
    /// The data subject of the sealed personal part, if any.
    pub subject_id: Option<&'a str>,
    /// The personal part as stored, sealed under the subject's key.
    pub sealed: Option<&'a [u8]>,
    /// The chained hash.
    pub hash: [u8; 32],
}

impl EventRef<'_> {
    /// An owned copy, personal data still sealed (see `EventStore::reveal`).
    pub fn to_owned(&self) -> RecordedEvent {
        RecordedEvent {
            position: self.position,
            stream_id: self.stream_id.to_owned(),
            stream_version: self.stream_version,
            event_id: self.event_id,
            event_type: self.event_type.to_owned(),
            schema_version: self.schema_version,
            recorded_at: self.recorded_at,
            data: self.data.to_owned(),
            metadata: self.metadata.to_owned(),
            subject_id: self.subject_id.map(str::to_owned),
            personal_data: None,
            shredded: false,
            sealed: self.sealed.map(<[u8]>::to_vec),
            hash: self.hash,
        }
    }
}
