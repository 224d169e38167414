//! One error enum per store operation, so callers match exactly what can happen.

use uuid::Uuid;

use super::event::ExpectedVersion;

/// Input refused before it reaches the writer. The store is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The stream id breaks the naming rules.
    #[error("invalid stream id {stream_id:?}: {reason}")]
    StreamId {
        /// The offending id.
        stream_id: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The event type breaks the naming rules.
    #[error(
        "event {event_id} in stream {stream_id:?}: invalid event type {event_type:?}: {reason}"
    )]
    EventType {
        /// The stream appended to.
        stream_id: String,
        /// The event.
        event_id: Uuid,
        /// The offending type.
        event_type: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// `data` or `metadata` is not valid JSON (or metadata is not an object).
    #[error("event {event_id} in stream {stream_id:?}: {field} is not valid: {reason}")]
    Json {
        /// The stream appended to.
        stream_id: String,
        /// The event.
        event_id: Uuid,
        /// `data` or `metadata`.
        field: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// The event is larger than the configured limit.
    #[error("event {event_id} in stream {stream_id:?} is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// The stream appended to.
        stream_id: String,
        /// The event.
        event_id: Uuid,
        /// Its size (type + data + metadata).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The append has no events, or more than the limit.
    #[error("an append to stream {stream_id:?} must carry 1 to {limit} events, not {count}")]
    EventCount {
        /// The stream appended to.
        stream_id: String,
        /// How many events the append carried.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The subject id or personal data of an event is not acceptable.
    #[error("event {event_id} in stream {stream_id:?}: {reason}")]
    Personal {
        /// The stream appended to.
        stream_id: String,
        /// The event.
        event_id: Uuid,
        /// What is wrong.
        reason: String,
    },
    /// The same event id appears twice in one append.
    #[error("event id {event_id} appears twice in one append to stream {stream_id:?}")]
    RepeatedEventId {
        /// The stream appended to.
        stream_id: String,
        /// The repeated id.
        event_id: Uuid,
    },
}

/// Why an append failed. Nothing of a failed append is ever visible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The request was refused before it reached the writer.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The stream's version did not match the expected version.
    #[error(
        "conflict on stream {stream_id:?}: expected {expected}, but the stream is at version {actual}"
    )]
    Conflict {
        /// The stream appended to.
        stream_id: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's actual version (0 = no stream).
        actual: u64,
    },
    /// An event id is already stored with different content, or as part of another append.
    #[error("event id {event_id} is already stored at position {position} {reason}")]
    DuplicateEventId {
        /// The id.
        event_id: Uuid,
        /// Where the stored event with that id is.
        position: u64,
        /// How the stored event differs.
        reason: &'static str,
    },
    /// Imported events do not continue the log (see `Store::import`).
    #[error("cannot import the event at position {position}: {reason}")]
    Import {
        /// The position of the first event refused.
        position: u64,
        /// Why.
        reason: String,
    },
    /// Personal data could not be sealed (its subject was forgotten, or its key not stored).
    #[error(transparent)]
    Seal(#[from] super::keys::SealError),
    /// The storage engine failed; the batch was not committed.
    #[error("event store write failed: {0}")]
    Storage(String),
    /// An I/O error (a full disk, a failing device) stopped the writer; the store reopens
    /// itself once the cause is gone. Nothing of this append was written: retry later.
    #[error("the event store is read-only until it recovers from an I/O error: {cause}")]
    ReadOnly {
        /// The I/O error that stopped the writer.
        cause: String,
    },
    /// The store has been closed.
    #[error("the event store is closed")]
    Closed,
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The stream id breaks the naming rules.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The storage engine failed.
    #[error("event store read failed: {0}")]
    Storage(String),
    /// A stored record could not be decoded.
    #[error("event at position {position} is corrupt: {reason}")]
    Corrupt {
        /// The position of the bad record.
        position: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// An archive segment the log needs is missing or does not match what was sealed.
    #[error("archive segment {} {reason}", file.display())]
    Archive {
        /// The segment's file.
        file: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory could not be created or read.
    #[error("cannot use store directory {path}: {source}")]
    Directory {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another process (likely a running eshost) holds the store.
    #[error("store {path} is locked by another process (is `eshost run` using it?)")]
    Locked {
        /// The events file.
        path: std::path::PathBuf,
    },
    /// redb refused to open the file.
    #[error("cannot open event store {path}: {reason}")]
    Database {
        /// The events file.
        path: std::path::PathBuf,
        /// redb's message.
        reason: String,
    },
    /// The key store could not be opened.
    #[error(transparent)]
    Keys(#[from] super::keys::KeyStoreError),
    /// The file was written by an unknown version of the store format.
    #[error("event store {path} has format version {found}; this eshost reads version {supported}")]
    Format {
        /// The events file.
        path: std::path::PathBuf,
        /// The version found in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
}

macro_rules! storage_from {
    ($target:ident: $($source:ty),+) => {
        $(impl From<$source> for $target {
            fn from(error: $source) -> Self {
                $target::Storage(error.to_string())
            }
        })+
    };
}

storage_from!(AppendError: redb::Error, redb::StorageError, redb::TableError, redb::TransactionError, redb::CommitError);
storage_from!(ReadError: redb::Error, redb::StorageError, redb::TableError, redb::TransactionError, redb::CommitError);
