//! The embedded backend: the log in one redb file, `events.redb`, in front of which a
//! write-ahead log makes appends durable (see `writer` for the pipeline); read on redb read
//! transactions plus the in-memory tail from any thread.

mod archive;
mod archiver;
mod blobs;
mod checkpoint;
mod compact;
mod file;
mod index;
mod open;
mod reader;
mod recover;
pub(crate) mod schema;
pub mod segment;
mod stage;
mod syncer;
mod tail;
mod verify;
mod wal;
mod writer;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

pub use compact::{CompactError, Compacted, compact_redb};
pub use file::unfinished_redb;
pub use recover::RecoveringStore;
pub use writer::{Durability, Gather, WriterStats, now_ms};

use crate::archive::{ArchiveCut, ArchiveError, Archived};
use crate::error::{AppendError, OpenError, ReadError, ValidationError};
use crate::event::{AppendRequest, Appended, EventRef, RecordedEvent, StreamInfo};
use crate::keys::{self, Forgot, KeyStore, Personal, SubjectKeys};
use crate::read::{AllRead, Direction, StreamRead, Until};
use crate::report::VerifyReport;
use crate::tap::Tap;
use crate::validate::{self, Limits};
use crate::{BoxFuture, EventStore};
use archive::{Archive, ArchiveView};
use schema::ARCHIVED_OPEN_FORMAT;
use tail::Tail;
use writer::{Msg, WriteOp, WriteRequest, Writer};

/// The file, inside the store directory, that holds the log.
pub const EVENTS_FILE: &str = "events.redb";

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The store directory; created if missing.
    pub dir: PathBuf,
    /// Size limits on appends.
    pub limits: Limits,
    /// Whether commits wait for the disk.
    pub durability: Durability,
    /// The most appends gathered into one commit.
    pub max_batch: usize,
    /// redb's page cache, in bytes.
    pub cache_bytes: usize,
    /// How long the writer waits to grow a batch.
    pub gather: Gather,
    /// How many events the write-ahead log and memory hold before they are checkpointed into
    /// redb (with their indexes), off the path of appends.
    pub index_flush_events: usize,
    /// The size of each of the two write-ahead log files, written with zeros once; a
    /// checkpoint also starts when one is half full.
    pub wal_bytes: u64,
    /// The key store file; `None`: `keys.eshk` in the store directory.
    pub keys: Option<PathBuf>,
    /// What every write to the store's files goes through (the power-cut tests' recorder);
    /// `None` in production.
    pub tap: Tap,
}

impl StoreConfig {
    /// Defaults for a store in `dir`: durable, 1 MiB events, 256 MiB cache.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            limits: Limits::default(),
            durability: Durability::Immediate,
            max_batch: 4096,
            cache_bytes: 256 * 1024 * 1024,
            gather: Gather::default(),
            index_flush_events: 16 * 1024,
            wal_bytes: 8 * 1024 * 1024,
            keys: None,
            tap: None,
        }
    }
}

/// The redb event store. Cheap to clone; the writer stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Arc<Database>,
    path: PathBuf,
    limits: Limits,
    requests: Option<mpsc::Sender<Msg>>,
    head: watch::Receiver<u64>,
    head_tx: Arc<watch::Sender<u64>>,
    stats: Arc<WriterStats>,
    tail: Arc<RwLock<Tail>>,
    keys: Arc<KeyStore>,
    archive: Arc<Archive>,
    writer: Option<JoinHandle<()>>,
    /// What the writer, syncer and checkpointer share: whether they failed.
    shared: Arc<writer::Shared>,
}

/// What a reopen after an I/O error carries over from the store it replaces.
pub(crate) struct Carried {
    /// The head watch, so that subscribers keep theirs.
    pub head: Arc<watch::Sender<u64>>,
    /// The key store, which callers borrow from.
    pub keys: Arc<KeyStore>,
    /// The last acknowledged position: frames past it belong to a batch that failed.
    pub durable: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer syncs what it holds, the checkpointer copies everything into redb, and
        // joining them releases the file before the store is reported closed.
        if let Some(requests) = self.requests.take() {
            let _ = requests.send(Msg::Close);
        }
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Inner {
    fn head_sender(&self) -> Arc<watch::Sender<u64>> {
        self.head_tx.clone()
    }
}

impl Store {
    /// Open (or create) the store in `config.dir`.
    pub fn open(config: StoreConfig) -> Result<Store, OpenError> {
        Store::open_carrying(config, None)
    }

    pub(crate) fn open_carrying(
        config: StoreConfig,
        carried: Option<Carried>,
    ) -> Result<Store, OpenError> {
        std::fs::create_dir_all(&config.dir).map_err(|source| OpenError::Directory {
            path: config.dir.clone(),
            source,
        })?;
        let path = config.dir.join(EVENTS_FILE);
        open::discard_unfinished_creation(&config.dir, &path).map_err(|source| {
            OpenError::Directory {
                path: path.clone(),
                source,
            }
        })?;
        let db = file::ZeroAheadFile::open(&path, &config.tap)
            .and_then(|file| {
                Database::builder()
                    .set_cache_size(config.cache_bytes)
                    .create_with_backend(file)
            })
            .map_err(|error| match error {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    OpenError::Locked { path: path.clone() }
                }
                redb::DatabaseError::Storage(redb::StorageError::Io(io))
                    if io.kind() == std::io::ErrorKind::WouldBlock =>
                {
                    OpenError::Locked { path: path.clone() }
                }
                other => OpenError::Database {
                    path: path.clone(),
                    reason: other.to_string(),
                },
            })?;
        let initialised = open::initialise(&db, &config.dir, carried.as_ref().map(|c| c.durable))
            .map_err(|reason| match reason {
            open::Initialise::Format(found) => OpenError::Format {
                path: path.clone(),
                found,
                supported: ARCHIVED_OPEN_FORMAT,
            },
            open::Initialise::Database(reason) => OpenError::Database {
                path: path.clone(),
                reason,
            },
        })?;
        if initialised.recovered > 0 {
            tracing::info!(
                events = initialised.recovered,
                "recovered appends from the write-ahead log"
            );
        }
        let wal_bytes = config.wal_bytes.max(64 * 1024);
        let wal = wal::Wal::open(&config.dir, wal_bytes, &config.tap).map_err(|source| {
            OpenError::Directory {
                path: config.dir.join(wal::WAL_FILES[0]),
                source,
            }
        })?;
        // Opened after the events file, whose lock makes this store's key file ours too.
        let keys_path = config
            .keys
            .clone()
            .unwrap_or_else(|| config.dir.join(keys::KEYS_FILE));
        let archive = Archive::open(&config.dir, initialised.manifest).map_err(|source| {
            OpenError::Directory {
                path: config.dir.join(segment::ARCHIVE_DIR),
                source,
            }
        })?;
        let archive = Arc::new(archive);
        let db = Arc::new(db);
        let head = initialised.head;
        let (keys, head_tx) = match carried {
            Some(carried) => {
                carried.head.send_replace(head.position);
                (carried.keys, carried.head)
            }
            None => (
                Arc::new(open::lock_keys(&keys_path, &config.tap)?),
                Arc::new(watch::channel(head.position).0),
            ),
        };
        let head_rx = head_tx.subscribe();
        // Unbounded: every queued append has a caller awaiting it, so the queue is bounded by
        // the callers in flight, which the server limits.
        let (requests, receiver) = mpsc::channel();
        let stats = Arc::new(WriterStats::default());
        let shared = Arc::new(writer::Shared::default());
        let tail = Arc::new(RwLock::new(Tail::new(head, initialised.next_stream_number)));
        let spawn = |name: &str, run: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(run)
                .map_err(|source| OpenError::Directory {
                    path: config.dir.clone(),
                    source,
                })
        };
        let checkpointer = checkpoint::Checkpointer {
            db: db.clone(),
            tail: tail.clone(),
            shared: shared.clone(),
            stats: stats.clone(),
        };
        let checkpointer = spawn("eshost-checkpoint", Box::new(move || checkpointer.run()))?;
        let (batches, batches_rx) = mpsc::channel();
        let syncer = syncer::Syncer {
            wal,
            durable: config.durability == Durability::Immediate,
            tail: tail.clone(),
            shared: shared.clone(),
            head_tx: head_tx.clone(),
            stats: stats.clone(),
            freeze_events: config.index_flush_events.max(1),
            writer: requests.clone(),
        };
        let syncer = spawn("eshost-sync", Box::new(move || syncer.run(batches_rx)))?;
        let writer = Writer {
            stager: stage::Stager::new(
                db.clone(),
                tail.clone(),
                initialised.epoch,
                head,
                initialised.next_stream_number,
                archive.clone(),
            ),
            stats: stats.clone(),
            shared: shared.clone(),
            max_batch: config.max_batch.max(1),
            max_batch_bytes: (wal_bytes / 4) as usize,
            gather: config.gather,
            syncer: Some(batches),
            syncer_thread: Some(syncer),
            checkpointer_thread: Some(checkpointer),
        };
        let writer = spawn("eshost-writer", Box::new(move || writer.run(receiver)))?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                path,
                limits: config.limits,
                requests: Some(requests),
                head: head_rx,
                head_tx,
                stats,
                tail,
                keys,
                archive,
                writer: Some(writer),
                shared,
            }),
        })
    }

    /// The error that stopped the writer, if one did: appends fail until the store is
    /// reopened (see [`RecoveringStore`]).
    pub fn failure(&self) -> Option<AppendError> {
        self.inner.shared.failed.get().cloned()
    }

    /// The events file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The subjects' keys.
    pub fn keys(&self) -> &KeyStore {
        &self.inner.keys
    }

    /// The writer's counters.
    pub fn writer_stats(&self) -> &WriterStats {
        &self.inner.stats
    }

    /// Append from a thread that is not running async code (tools, benchmarks, tests).
    pub fn append_blocking(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        let (request, answer) = self.submit_checked(request)?;
        self.send(request)?;
        answer.blocking_recv().map_err(|_| AppendError::Closed)?
    }

    /// [`EventStore::append_system`] from a thread that is not running async code.
    pub fn append_system_blocking(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        let (request, answer) = self.submit_system(request)?;
        self.send(request)?;
        answer.blocking_recv().map_err(|_| AppendError::Closed)?
    }

    #[allow(clippy::type_complexity)]
    fn submit_system(
        &self,
        request: AppendRequest,
    ) -> Result<
        (
            WriteRequest,
            oneshot::Receiver<Result<Appended, AppendError>>,
        ),
        AppendError,
    > {
        if !request.stream_id.starts_with('$') {
            return Err(ValidationError::StreamId {
                stream_id: request.stream_id,
                reason: "system streams start with '$'",
            }
            .into());
        }
        self.submit_validated(request, validate::append_system)
    }

    /// Restore exported events exactly (positions, times, hashes); they must continue the
    /// log. See [`transfer`] for the NDJSON form.
    pub fn import_blocking(&self, events: Vec<RecordedEvent>) -> Result<Appended, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteRequest {
            op: WriteOp::Import(events),
            reply,
        })?;
        answer.blocking_recv().map_err(|_| AppendError::Closed)?
    }

    /// The size limits appends are checked against.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    fn send(&self, request: WriteRequest) -> Result<(), AppendError> {
        self.inner
            .requests
            .as_ref()
            .ok_or(AppendError::Closed)?
            .send(Msg::Write(request))
            .map_err(|_| AppendError::Closed)
    }

    #[allow(clippy::type_complexity)]
    fn submit_checked(
        &self,
        request: AppendRequest,
    ) -> Result<
        (
            WriteRequest,
            oneshot::Receiver<Result<Appended, AppendError>>,
        ),
        AppendError,
    > {
        self.submit_validated(request, validate::append)
    }

    #[allow(clippy::type_complexity)]
    fn submit_validated(
        &self,
        mut request: AppendRequest,
        check: fn(&AppendRequest, &Limits) -> Result<(), ValidationError>,
    ) -> Result<
        (
            WriteRequest,
            oneshot::Receiver<Result<Appended, AppendError>>,
        ),
        AppendError,
    > {
        validate::trim_json(&mut request);
        check(&request, &self.inner.limits)?;
        // Sealed here, on the caller's thread: the writer never sees plaintext or keys.
        let sealed = request
            .events
            .iter()
            .map(|event| match (&event.subject_id, &event.personal_data) {
                (Some(subject), Some(data)) => self
                    .inner
                    .keys
                    .seal(subject, event.event_id, data)
                    .map(Some),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, answer) = oneshot::channel();
        Ok((
            WriteRequest {
                op: WriteOp::Append(request, sealed),
                reply,
            },
            answer,
        ))
    }

    /// A redb read transaction begun under the tail's lock, with what `copy` takes from the
    /// tail and the tail's base: redb holds positions up to it, the copy what follows (see
    /// `tail`); and the archive's manifest, taken after the transaction began: positions up
    /// to its end are read from segments (see `archive`).
    fn begin_read<T>(
        &self,
        copy: impl FnOnce(&Tail) -> T,
    ) -> Result<(T, u64, redb::ReadTransaction, ArchiveView<'_>), ReadError> {
        let tail = self.inner.tail.read().unwrap_or_else(|e| e.into_inner());
        let txn = self.inner.db.begin_read()?;
        let archived = self.inner.archive.view();
        Ok((copy(&tail), tail.base, txn, archived))
    }

    /// Move the events before `cut` out of `events.redb` into sealed segments in the
    /// store's `archive` directory; reads cover both as one log. Only events the checkpointer
    /// has copied into redb move (opening the store copies them all; in a running store, the
    /// most recent ones may wait for the next archive), so it runs beside the live writer.
    pub fn archive(&self, cut: ArchiveCut) -> Result<Archived, ArchiveError> {
        let last = match cut {
            ArchiveCut::BeforePosition(position) => position.saturating_sub(1),
            ArchiveCut::BeforeTime(0) => 0,
            ArchiveCut::BeforeTime(time) => self.position_at(time - 1)?,
        };
        let base = self
            .inner
            .tail
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .base;
        archiver::archive(&self.inner.db, &self.inner.archive, last.min(base))
    }

    /// The highest position a read may return under `until`.
    fn bound(&self, until: Option<Until>) -> Result<u64, ReadError> {
        match until {
            None => Ok(u64::MAX),
            Some(Until::Position(position)) => Ok(position),
            Some(Until::Time(time)) => self.position_at(time),
        }
    }
}

impl EventStore for Store {
    fn append(&self, request: AppendRequest) -> BoxFuture<'static, Result<Appended, AppendError>> {
        let submitted = self.submit_checked(request).and_then(|(request, answer)| {
            self.send(request)?;
            Ok(answer)
        });
        Box::pin(async move { submitted?.await.map_err(|_| AppendError::Closed)? })
    }

    fn visit_stream(
        &self,
        stream_id: &str,
        read: &StreamRead,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), ReadError> {
        validate::stored_stream_id(stream_id)?;
        let max_position = self.bound(read.until)?;
        let (tail, base, txn, archived) = self.begin_read(|tail| tail.stream(stream_id))?;
        let tiers = reader::Tiers {
            txn: &txn,
            base,
            archived: &archived,
        };
        reader::visit_stream(&tiers, stream_id, tail, read, max_position, visit)
    }

    fn visit_all(
        &self,
        read: &AllRead,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), ReadError> {
        let max_position = self.bound(read.until)?;
        let limit = if read.event_types.is_empty() {
            read.limit
        } else {
            usize::MAX
        };
        let (tail, base, txn, archived) = self.begin_read(|tail| match read.direction {
            Direction::Forward => tail.view_from(read.from_position, limit),
            Direction::Backward => tail.view_from(0, usize::MAX),
        })?;
        let tiers = reader::Tiers {
            txn: &txn,
            base,
            archived: &archived,
        };
        reader::visit_all(&tiers, &tail, read, max_position, visit)
    }

    fn stream_info(&self, stream_id: &str) -> Result<Option<StreamInfo>, ReadError> {
        validate::stored_stream_id(stream_id)?;
        let (row, _, txn, _) = self.begin_read(|tail| tail.row(stream_id))?;
        reader::stream_info(&txn, stream_id, row)
    }

    fn event_position(&self, event_id: Uuid) -> Result<Option<u64>, ReadError> {
        let id = event_id.as_u128();
        let (in_tail, _, txn, _) = self.begin_read(|tail| tail.position_of(id))?;
        match in_tail {
            Some(position) => Ok(Some(position)),
            None => reader::indexed_event_position(&txn, id),
        }
    }

    fn streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StreamInfo)>, ReadError> {
        let (rows, _, txn, _) = self.begin_read(|tail| tail.rows_with_prefix(prefix))?;
        reader::streams(&txn, prefix, after, limit, rows)
    }

    fn position_at(&self, time: u64) -> Result<u64, ReadError> {
        let ((tail, head), base, txn, archived) =
            self.begin_read(|tail| (tail.view_from(0, usize::MAX), tail.head().position))?;
        let tiers = reader::Tiers {
            txn: &txn,
            base,
            archived: &archived,
        };
        reader::position_at(&tiers, &tail, head, time)
    }

    fn head(&self) -> u64 {
        *self.inner.head.borrow()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.head.clone()
    }

    fn import_events(
        &self,
        events: Vec<RecordedEvent>,
    ) -> BoxFuture<'static, Result<Appended, AppendError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.send(WriteRequest {
            op: WriteOp::Import(events),
            reply,
        });
        Box::pin(async move {
            sent?;
            answer.await.map_err(|_| AppendError::Closed)?
        })
    }

    fn limits(&self) -> Limits {
        self.inner.limits
    }

    fn subject_keys(&self) -> &dyn SubjectKeys {
        self.inner.keys.as_ref()
    }

    fn reveal(&self, event: &EventRef<'_>) -> Personal {
        match (event.subject_id, event.sealed) {
            (Some(subject), Some(sealed)) => {
                self.inner.keys.unseal(subject, event.event_id, sealed)
            }
            _ => Personal::None,
        }
    }

    fn append_system(
        &self,
        request: AppendRequest,
    ) -> BoxFuture<'static, Result<Appended, AppendError>> {
        let submitted = self.submit_system(request).and_then(|(request, answer)| {
            self.send(request)?;
            Ok(answer)
        });
        Box::pin(async move { submitted?.await.map_err(|_| AppendError::Closed)? })
    }

    fn forget_subject(&self, subject: &str) -> Result<Forgot, keys::KeyStoreError> {
        self.inner.keys.forget(subject)
    }

    fn is_forgotten(&self, subject: &str) -> bool {
        self.inner.keys.is_forgotten(subject)
    }

    fn verify(&self) -> Result<VerifyReport, ReadError> {
        let ((tail, head), base, txn, archived) =
            self.begin_read(|tail| (tail.view_from(0, usize::MAX), tail.head()))?;
        let tiers = reader::Tiers {
            txn: &txn,
            base,
            archived: &archived,
        };
        verify::verify(&tiers, &tail, head)
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<String, crate::BlobError> {
        blobs::put(&self.inner.db, bytes)
    }

    fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, crate::BlobError> {
        blobs::get(&self.inner.db, hash)
    }

    fn archive(&self, cut: ArchiveCut) -> Result<Archived, ArchiveError> {
        Store::archive(self, cut)
    }
}
