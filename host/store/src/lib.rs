//! The eshost event store: the [`EventStore`] contract every backend keeps, and its embedded
//! backend, [`Store`] (an append-only log in `events.redb`, one group-committing writer,
//! readers that never wait for it).
//!
//! What is shared by every backend lives at the top: the event and request types
//! ([`event`]), the read requests ([`read`]) and their ranges ([`range`]), errors, validation of input before any writer
//! sees it ([`validate`]), the record encoding and hash chain ([`codec`]: every backend chains
//! the same bytes, so `verify` means the same everywhere), the subject keys that seal personal
//! data ([`keys`]) and NDJSON export/import ([`transfer`]). Backends live in their own modules
//! (here `embedded`, the redb one) or crates.
//!
//! This crate knows nothing of plugins or HTTP: the compiler keeps wasmtime and axum out.

#![deny(missing_docs)]

pub mod archive;
pub mod blob;
pub mod codec;
mod embedded;
pub mod error;
pub mod event;
pub mod keys;
mod page;
pub mod range;
pub mod read;
pub mod report;
pub mod tap;
pub mod transfer;
pub mod validate;

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;

use tokio::sync::watch;

pub use archive::{ArchiveCut, ArchiveError, Archived, SegmentInfo};
pub use blob::BlobError;
/// Sealed archive segments: the format both backends keep (see [`archive`]).
pub use embedded::segment;
pub use embedded::{
    CompactError, Compacted, Durability, EVENTS_FILE, Gather, RecoveringStore, Store, StoreConfig,
    WriterStats, compact_redb, now_ms, unfinished_redb,
};
pub use error::{AppendError, OpenError, ReadError, ValidationError};
pub use event::{
    AppendRequest, Appended, EventRef, ExpectedVersion, ProposedEvent, RecordedEvent, StreamInfo,
};
pub use keys::{Forgot, KeyStore, KeyStoreError, Personal, SubjectKeys};
pub use page::{event_bytes, read_page};
pub use range::Bounds;
pub use read::{AllRead, Direction, StreamRead, Until};
pub use report::{BadRecord, VerifyReport};
pub use validate::Limits;

/// A boxed future, so that [`EventStore`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The store operations the command pipeline, projections and server rely on.
pub trait EventStore: Send + Sync + std::fmt::Debug {
    /// Append events to one stream atomically; resolves once they are durable.
    fn append(&self, request: AppendRequest) -> BoxFuture<'static, Result<Appended, AppendError>>;
    /// Visit the events of one stream.
    fn visit_stream(
        &self,
        stream_id: &str,
        read: &StreamRead,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), ReadError>;
    /// Visit the events of `$all`.
    fn visit_all(
        &self,
        read: &AllRead,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), ReadError>;
    /// What the store knows about one stream (`None` if it has no events).
    fn stream_info(&self, stream_id: &str) -> Result<Option<StreamInfo>, ReadError>;
    /// The position of the stored event with id `event_id`, if there is one. Callers rely on
    /// it to find what a command with a derived event id already wrote.
    fn event_position(&self, event_id: uuid::Uuid) -> Result<Option<u64>, ReadError>;
    /// Streams whose id starts with `prefix`, in id order, after `after`.
    fn streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StreamInfo)>, ReadError>;
    /// The last position recorded at or before `time` (ms since the epoch).
    fn position_at(&self, time: u64) -> Result<u64, ReadError>;
    /// The last committed position.
    fn head(&self) -> u64;
    /// A watch of the head position that changes on every commit.
    fn watch_head(&self) -> watch::Receiver<u64>;
    /// Restore exported events exactly as they were (positions, ids, times, hashes); they
    /// must continue the log. Resolves once durable. See [`transfer`] for the NDJSON form.
    fn import_events(
        &self,
        events: Vec<RecordedEvent>,
    ) -> BoxFuture<'static, Result<Appended, AppendError>>;
    /// The size limits appends are checked against.
    fn limits(&self) -> Limits;
    /// Where the subjects' keys live.
    fn subject_keys(&self) -> &dyn SubjectKeys;

    /// Decrypt the personal part of a stored event, if it has one.
    fn reveal(&self, event: &EventRef<'_>) -> Personal {
        match (event.subject_id, event.sealed) {
            (Some(subject), Some(sealed)) => {
                self.subject_keys().unseal(subject, event.event_id, sealed)
            }
            _ => Personal::None,
        }
    }

    // The erasure port: what forgetting a data subject needs of a backend.

    /// Append to one of the host's own system streams (ids starting with `$`, which clients
    /// may read but not write). Resolves once durable.
    fn append_system(
        &self,
        request: AppendRequest,
    ) -> BoxFuture<'static, Result<Appended, AppendError>>;
    /// Erase `subject`'s key: its personal data reads as shredded from then on, and new
    /// personal data for it is refused. The log itself is not touched.
    fn forget_subject(&self, subject: &str) -> Result<Forgot, KeyStoreError> {
        self.subject_keys().forget(subject)
    }
    /// Whether `subject` has been forgotten.
    fn is_forgotten(&self, subject: &str) -> bool {
        self.subject_keys().is_forgotten(subject)
    }
    /// Re-check the whole log: positions, stream versions and the hash chain.
    fn verify(&self) -> Result<VerifyReport, ReadError>;

    // The blob port (see [`blob`]): bytes stored once by content, beside the log.

    /// Stores `bytes` under their content hash and returns it, durably; storing the same
    /// bytes again writes nothing. Refused over [`blob::MAX_BLOB_BYTES`].
    fn put_blob(&self, bytes: &[u8]) -> Result<String, BlobError>;
    /// The bytes stored under `hash` (checked against it), or `None`.
    fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, BlobError>;

    /// Why appends fail right now, if an I/O error stopped the writer (the store is
    /// read-only until it recovers); `None` while the store takes writes.
    fn degraded(&self) -> Option<String> {
        None
    }

    // The node registry: which nodes share the store, for work every node must do.

    /// Registers or refreshes node `id` (its heartbeat is the store's clock, now), with what
    /// it reports. A store only one process can hold has no registry: `Ok(false)`.
    fn heartbeat(&self, node: &NodeReport) -> Result<bool, ReadError> {
        let _ = node;
        Ok(false)
    }
    /// The registered nodes, with how long ago each last reported (by the store's clock).
    fn nodes(&self) -> Result<Vec<NodeRow>, ReadError> {
        Ok(Vec::new())
    }

    // The archive (see [`archive`]).

    /// Move the events before `cut` out of the hot log into sealed, compressed segments;
    /// every read keeps covering them. Backends without an archive say so.
    fn archive(&self, cut: ArchiveCut) -> Result<Archived, ArchiveError> {
        let _ = cut;
        Err(ArchiveError::Unsupported)
    }

    /// The event owned, with its personal data decrypted (or marked shredded).
    fn revealed(&self, event: &EventRef<'_>) -> RecordedEvent {
        let mut owned = event.to_owned();
        self.reveal_owned(&mut owned);
        owned
    }

    /// Fill in `personal_data` (or `shredded`) of an owned event from its sealed part.
    fn reveal_owned(&self, owned: &mut RecordedEvent) {
        if owned.sealed.is_none() {
            return;
        }
        (owned.personal_data, owned.shredded) =
            self.reveal(&owned.as_ref()).into_fields(owned.position);
    }

    /// The events of one stream, owned.
    fn read_stream(
        &self,
        stream_id: &str,
        read: &StreamRead,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let mut events = Vec::new();
        self.visit_stream(stream_id, read, &mut |event| {
            events.push(event.to_owned());
            ControlFlow::Continue(())
        })?;
        Ok(events)
    }

    /// Events of `$all`, owned.
    fn read_all(&self, read: &AllRead) -> Result<Vec<RecordedEvent>, ReadError> {
        let mut events = Vec::new();
        self.visit_all(read, &mut |event| {
            events.push(event.to_owned());
            ControlFlow::Continue(())
        })?;
        Ok(events)
    }
}

/// What a node reports of itself to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// Its id (stable across restarts: kept in its data directory).
    pub id: String,
    /// Where its HTTP API listens.
    pub address: String,
    /// The position of the last `$erasures` event whose purge it finished (0: none).
    pub erasures_purged: u64,
}

/// A node as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// What it last reported.
    pub report: NodeReport,
    /// Milliseconds since that report, by the store's clock.
    pub age_ms: u64,
}

/// Runs `future` to completion on this thread: for blocking callers (tools, the erasure
/// steps) of the async parts of the contract. Never call it on an async task.
pub fn block_on<F: Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}
