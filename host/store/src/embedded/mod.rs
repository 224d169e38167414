//! The embedded backend: the log in one redb file, `events.redb`, written by one
//! group-committing writer thread and read on redb read transactions from any thread.

mod file;
mod index;
mod reader;
pub(crate) mod schema;
mod verify;
mod writer;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

pub use writer::{Durability, Gather, WriterStats, now_ms};

use crate::error::{AppendError, OpenError, ReadError, ValidationError};
use crate::event::{AppendRequest, Appended, EventRef, RecordedEvent, StreamInfo};
use crate::keys::{self, Forgot, KeyStore, Personal, SubjectKeys};
use crate::read::{AllRead, StreamRead};
use crate::report::VerifyReport;
use crate::validate::{self, Limits};
use crate::{BoxFuture, EventStore};
use schema::{
    EVENT_IDS, EVENTS, Head, META, META_FORMAT, META_HEAD, STORE_FORMAT, STREAM_EVENTS, STREAMS,
};
use writer::{WriteOp, WriteRequest, Writer};

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
    /// How many events the in-memory recent index holds before it is flushed to redb.
    pub index_flush_events: usize,
    /// The key store file; `None`: `keys.eshk` in the store directory.
    pub keys: Option<PathBuf>,
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
            keys: None,
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
    requests: Option<mpsc::Sender<WriteRequest>>,
    head: watch::Receiver<u64>,
    stats: Arc<WriterStats>,
    recent: Arc<RwLock<index::RecentIndex>>,
    keys: Arc<KeyStore>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what it holds and exit; joining it
        // releases the file before the store is reported closed.
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Store {
    /// Open (or create) the store in `config.dir`.
    pub fn open(config: StoreConfig) -> Result<Store, OpenError> {
        std::fs::create_dir_all(&config.dir).map_err(|source| OpenError::Directory {
            path: config.dir.clone(),
            source,
        })?;
        let path = config.dir.join(EVENTS_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| OpenError::Directory {
                path: path.clone(),
                source,
            })?;
        let db = file::ZeroAheadFile::new(file)
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
        let (head, recent) = initialise(&db).map_err(|reason| match reason {
            Initialise::Format(found) => OpenError::Format {
                path: path.clone(),
                found,
                supported: STORE_FORMAT,
            },
            Initialise::Database(reason) => OpenError::Database {
                path: path.clone(),
                reason,
            },
        })?;
        // Opened after the events file, whose lock makes this store's key file ours too.
        let keys_path = config
            .keys
            .clone()
            .unwrap_or_else(|| config.dir.join(keys::KEYS_FILE));
        let keys = Arc::new(KeyStore::open(&keys_path)?);
        let db = Arc::new(db);
        let (head_tx, head_rx) = watch::channel(head.position);
        // Unbounded: every queued append has a caller awaiting it, so the queue is bounded by
        // the callers in flight, which the server limits.
        let (requests, receiver) = mpsc::channel();
        let stats = Arc::new(WriterStats::default());
        let recent = Arc::new(RwLock::new(recent));
        let writer = Writer {
            recent: recent.clone(),
            flush_events: config.index_flush_events.max(1),
            stats: stats.clone(),
            db: db.clone(),
            head,
            head_tx,
            durability: config.durability,
            max_batch: config.max_batch.max(1),
            gather: config.gather,
        };
        let writer = std::thread::Builder::new()
            .name("eshost-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|source| OpenError::Directory {
                path: config.dir.clone(),
                source,
            })?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                path,
                limits: config.limits,
                requests: Some(requests),
                head: head_rx,
                stats,
                recent,
                keys,
                writer: Some(writer),
            }),
        })
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
        self.sender()?
            .send(request)
            .map_err(|_| AppendError::Closed)?;
        answer.blocking_recv().map_err(|_| AppendError::Closed)?
    }

    /// [`EventStore::append_system`] from a thread that is not running async code.
    pub fn append_system_blocking(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        let (request, answer) = self.submit_system(request)?;
        self.sender()?
            .send(request)
            .map_err(|_| AppendError::Closed)?;
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
        self.sender()?
            .send(WriteRequest {
                op: WriteOp::Import(events),
                reply,
            })
            .map_err(|_| AppendError::Closed)?;
        answer.blocking_recv().map_err(|_| AppendError::Closed)?
    }

    /// The size limits appends are checked against.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    fn sender(&self) -> Result<&mpsc::Sender<WriteRequest>, AppendError> {
        self.inner.requests.as_ref().ok_or(AppendError::Closed)
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

    fn begin_read(&self) -> Result<redb::ReadTransaction, ReadError> {
        Ok(self.inner.db.begin_read()?)
    }

    /// A read transaction begun while holding the recent index, so the two agree (see
    /// `index`). Keep the guard only as long as it takes to copy what is needed.
    fn begin_read_indexed(
        &self,
    ) -> Result<
        (
            RwLockReadGuard<'_, index::RecentIndex>,
            redb::ReadTransaction,
        ),
        ReadError,
    > {
        let recent = self.inner.recent.read().unwrap_or_else(|e| e.into_inner());
        let txn = self.begin_read()?;
        Ok((recent, txn))
    }
}

impl EventStore for Store {
    fn append(&self, request: AppendRequest) -> BoxFuture<'static, Result<Appended, AppendError>> {
        let submitted = self.submit_checked(request).and_then(|(request, answer)| {
            self.sender()?
                .send(request)
                .map_err(|_| AppendError::Closed)?;
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
        let (recent, txn) = self.begin_read_indexed()?;
        let indexed = index::indexed_in(&txn)?;
        let stream = recent
            .streams
            .get(stream_id)
            .map(|stream| (stream.row, stream.after(indexed)));
        drop(recent);
        reader::visit_stream(&txn, stream_id, stream, read, visit)
    }

    fn visit_all(
        &self,
        read: &AllRead,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), ReadError> {
        reader::visit_all(&self.begin_read()?, read, visit)
    }

    fn stream_info(&self, stream_id: &str) -> Result<Option<StreamInfo>, ReadError> {
        validate::stored_stream_id(stream_id)?;
        let (recent, txn) = self.begin_read_indexed()?;
        let row = recent.row(stream_id);
        drop(recent);
        reader::stream_info(&txn, stream_id, row)
    }

    fn event_position(&self, event_id: Uuid) -> Result<Option<u64>, ReadError> {
        let id = event_id.as_u128();
        let (recent, txn) = self.begin_read_indexed()?;
        if let Some(position) = recent.ids.get(&id) {
            return Ok(Some(*position));
        }
        drop(recent);
        reader::indexed_event_position(&txn, id)
    }

    fn streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StreamInfo)>, ReadError> {
        let (recent, txn) = self.begin_read_indexed()?;
        let rows = recent
            .streams
            .iter()
            .filter(|(id, _)| id.starts_with(prefix))
            .map(|(id, stream)| (id.clone(), stream.row))
            .collect();
        drop(recent);
        reader::streams(&txn, prefix, after, limit, rows)
    }

    fn position_at(&self, time: u64) -> Result<u64, ReadError> {
        reader::position_at(&self.begin_read()?, time)
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
        let sent = self.sender().and_then(|sender| {
            sender
                .send(WriteRequest {
                    op: WriteOp::Import(events),
                    reply,
                })
                .map_err(|_| AppendError::Closed)
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
            self.sender()?
                .send(request)
                .map_err(|_| AppendError::Closed)?;
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
        verify::verify(&self.begin_read()?)
    }
}

enum Initialise {
    Format(u32),
    Database(String),
}

/// Create the tables of a new store, check the format of an old one, read its head, and
/// rebuild the recent index from the events after the last index flush.
fn initialise(db: &Database) -> Result<(Head, index::RecentIndex), Initialise> {
    let failed = |error: redb::Error| Initialise::Database(error.to_string());
    let txn = db.begin_write().map_err(|e| failed(e.into()))?;
    let head = {
        let mut meta = txn.open_table(META).map_err(|e| failed(e.into()))?;
        let format = meta
            .get(META_FORMAT)
            .map_err(|e| failed(e.into()))?
            .map(|bytes| {
                bytes
                    .value()
                    .try_into()
                    .map(u32::from_le_bytes)
                    .unwrap_or(u32::MAX)
            });
        match format {
            Some(STORE_FORMAT) => {}
            Some(other) => return Err(Initialise::Format(other)),
            None => {
                meta.insert(META_FORMAT, STORE_FORMAT.to_le_bytes().as_slice())
                    .map_err(|e| failed(e.into()))?;
            }
        }
        let head = match meta.get(META_HEAD).map_err(|e| failed(e.into()))? {
            Some(bytes) => Head::decode(bytes.value())
                .ok_or_else(|| Initialise::Database("the head record is malformed".into()))?,
            None => Head::EMPTY,
        };
        // Open every table once so readers find them even in an empty store.
        txn.open_table(EVENTS).map_err(|e| failed(e.into()))?;
        txn.open_table(STREAM_EVENTS)
            .map_err(|e| failed(e.into()))?;
        txn.open_table(STREAMS).map_err(|e| failed(e.into()))?;
        txn.open_table(EVENT_IDS).map_err(|e| failed(e.into()))?;
        let last = txn
            .open_table(EVENTS)
            .and_then(|events| Ok(events.last()?.map(|(key, _)| key.value())))
            .map_err(|e| failed(e.into()))?;
        if last.unwrap_or(0) != head.position {
            return Err(Initialise::Database(format!(
                "the log ends at position {} but its head says {}",
                last.unwrap_or(0),
                head.position
            )));
        }
        head
    };
    let recent = index::RecentIndex::recover(&txn, head.position).map_err(Initialise::Database)?;
    txn.commit().map_err(|e| failed(e.into()))?;
    Ok((head, recent))
}
