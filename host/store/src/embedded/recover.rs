//! Recovering from an I/O error without a restart.
//!
//! When the write-ahead log or redb fails (a full disk, a failing device), the writer stops
//! and redb latches the failure: every later write of that `Database` fails. Appends then
//! fail fast with [`AppendError::ReadOnly`] naming the cause, and [`EventStore::degraded`]
//! says why. A recovery thread probes the store directory with a small synced write, backing
//! off; once the probe succeeds it closes the failed store and opens it again, which is the
//! crash recovery path: the frames the log holds past `events.redb`'s head are copied in,
//! up to the last acknowledged position only (a batch that failed was never acknowledged
//! and must not appear), and a new log epoch makes every older frame stale.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use uuid::Uuid;

use super::{Carried, Store, StoreConfig};
use crate::archive::{ArchiveCut, ArchiveError, Archived};
use crate::error::{AppendError, OpenError, ReadError};
use crate::event::{AppendRequest, Appended, EventRef, RecordedEvent, StreamInfo};
use crate::keys::{self, Forgot, KeyStore, Personal, SubjectKeys};
use crate::read::{AllRead, StreamRead};
use crate::report::VerifyReport;
use crate::validate::Limits;
use crate::{BlobError, BoxFuture, EventStore};

/// The probe file, written and removed in the store directory before a reopen.
const PROBE_FILE: &str = "eshost.probe";
/// The first wait between probes; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a reopen waits for reads in progress on the failed store to finish.
const READERS_DEADLINE: Duration = Duration::from_secs(5);

/// The embedded store, reopened by itself after an I/O error. Cheap to clone; the recovery
/// thread stops with the last clone.
#[derive(Debug, Clone)]
pub struct RecoveringStore {
    shared: Arc<Shared>,
    _stop: Arc<StopOnDrop>,
}

#[derive(Debug)]
struct Shared {
    config: StoreConfig,
    head: Arc<watch::Sender<u64>>,
    keys: Arc<KeyStore>,
    limits: Limits,
    /// `None` between closing a failed store and a successful reopen.
    current: RwLock<Option<Store>>,
    /// Why writes fail, while they do; the recovery thread waits on `wake`.
    degraded: Mutex<Degraded>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Degraded {
    cause: Option<String>,
    stopping: bool,
}

#[derive(Debug)]
struct StopOnDrop {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl RecoveringStore {
    /// Open (or create) the store in `config.dir`, and start watching it for I/O errors.
    pub fn open(config: StoreConfig) -> Result<RecoveringStore, OpenError> {
        let store = Store::open(config.clone())?;
        let shared = Arc::new(Shared {
            head: store.inner.head_sender(),
            keys: store.inner.keys.clone(),
            limits: store.limits(),
            config,
            current: RwLock::new(Some(store)),
            degraded: Mutex::new(Degraded::default()),
            wake: Condvar::new(),
        });
        let weak = Arc::downgrade(&shared);
        let thread = std::thread::Builder::new()
            .name("eshost-recover".into())
            .spawn(move || recover_loop(&weak))
            .map_err(|source| OpenError::Directory {
                path: shared.config.dir.clone(),
                source,
            })?;
        Ok(RecoveringStore {
            _stop: Arc::new(StopOnDrop {
                shared: shared.clone(),
                thread: Mutex::new(Some(thread)),
            }),
            shared,
        })
    }

    /// The store as it is now: the failed one until it is reopened, none while reopening.
    fn current(&self) -> Option<Store> {
        self.shared.current()
    }

    fn read_store(&self) -> Result<Store, ReadError> {
        self.current().ok_or_else(|| {
            ReadError::Storage(format!(
                "the event store is being reopened after an I/O error: {}",
                self.degraded().unwrap_or_default()
            ))
        })
    }

    /// Appends while degraded fail at once, naming the cause; an append that fails because
    /// the writer failed under it says the same, and wakes the recovery thread.
    fn write<F>(&self, submit: F) -> BoxFuture<'static, Result<Appended, AppendError>>
    where
        F: FnOnce(&Store) -> BoxFuture<'static, Result<Appended, AppendError>>,
    {
        if let Some(cause) = self.degraded() {
            return Box::pin(async move { Err(AppendError::ReadOnly { cause }) });
        }
        let Some(store) = self.current() else {
            let cause = self.degraded().unwrap_or_default();
            return Box::pin(async move { Err(AppendError::ReadOnly { cause }) });
        };
        let answer = submit(&store);
        let shared = self.shared.clone();
        Box::pin(async move {
            match answer.await {
                Err(AppendError::Storage(error)) => match store.failure() {
                    Some(failure) => {
                        let cause = shared.notice(&failure);
                        Err(AppendError::ReadOnly { cause })
                    }
                    None => Err(AppendError::Storage(error)),
                },
                other => other,
            }
        })
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Degraded> {
        self.degraded.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn current(&self) -> Option<Store> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Record that the writer failed with `failure` and wake the recovery thread; returns
    /// the cause as reported.
    fn notice(&self, failure: &AppendError) -> String {
        let cause = cause_of(failure);
        let mut degraded = self.lock();
        if degraded.cause.is_none() {
            tracing::error!(%cause, "event store is read-only until the I/O error is gone");
            degraded.cause = Some(cause.clone());
            self.wake.notify_all();
        }
        degraded.cause.clone().unwrap_or(cause)
    }

    /// Close the failed store and open it again. On failure the slot stays empty and the
    /// next attempt opens it.
    fn reopen(&self) -> Result<(), String> {
        let mut slot = self.current.write().unwrap_or_else(|e| e.into_inner());
        if let Some(failed) = slot.take() {
            let deadline = Instant::now() + READERS_DEADLINE;
            while Arc::strong_count(&failed.inner) > 1 {
                if Instant::now() >= deadline {
                    *slot = Some(failed);
                    return Err("reads in progress hold the failed store".into());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            // Joins its writer, syncer and checkpointer, and releases the file lock.
            drop(failed);
        }
        // Read once its syncer has stopped: a batch it was syncing when the error struck may
        // still have been acknowledged.
        let durable = *self.head.borrow();
        let carried = Carried {
            head: self.head.clone(),
            keys: self.keys.clone(),
            durable,
        };
        let store =
            Store::open_carrying(self.config.clone(), Some(carried)).map_err(|e| e.to_string())?;
        *slot = Some(store);
        Ok(())
    }
}

/// The message of the error that stopped the writer.
fn cause_of(failure: &AppendError) -> String {
    match failure {
        AppendError::Storage(message) => message.clone(),
        AppendError::ReadOnly { cause } => cause.clone(),
        other => other.to_string(),
    }
}

/// Until the store is dropped: wait for a failure (or look every second), then probe and
/// reopen with backoff until the store takes writes again.
fn recover_loop(shared: &Weak<Shared>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let failure = shared.current().and_then(|store| store.failure());
        if let Some(failure) = &failure {
            shared.notice(failure);
        }
        let degraded = shared.lock().cause.is_some();
        let wait = if degraded {
            match probe(&shared.config.dir, shared.config.wal_bytes)
                .map_err(|error| format!("probing the store directory: {error}"))
                .and_then(|()| shared.reopen())
            {
                Ok(()) => {
                    tracing::info!("event store reopened; it takes writes again");
                    shared.lock().cause = None;
                    backoff = FIRST_BACKOFF;
                    continue;
                }
                Err(error) => {
                    tracing::debug!(%error, "event store not reopened yet");
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            }
        } else {
            Duration::from_secs(1)
        };
        let state = shared.lock();
        if state.stopping {
            return;
        }
        let still_degraded = state.cause.is_some();
        let (state, _) = shared
            .wake
            .wait_timeout_while(state, wait, |state| {
                !state.stopping && state.cause.is_some() == still_degraded
            })
            .unwrap_or_else(|e| e.into_inner());
        if state.stopping {
            return;
        }
    }
}

/// Whether the directory takes a synced write of `bytes` (then removed): the cause of the
/// failure is likely gone.
fn probe(dir: &Path, bytes: u64) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(PROBE_FILE);
    let written = (|| {
        let mut file = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let step = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..step])?;
            left -= step as u64;
        }
        file.sync_all()
    })();
    let removed = std::fs::remove_file(&path);
    written?;
    removed
}

impl EventStore for RecoveringStore {
    fn append(&self, request: AppendRequest) -> BoxFuture<'static, Result<Appended, AppendError>> {
        self.write(|store| store.append(request))
    }

    fn visit_stream(
        &self,
        stream_id: &str,
        read: &StreamRead,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), ReadError> {
        self.read_store()?.visit_stream(stream_id, read, visit)
    }

    fn visit_all(
        &self,
        read: &AllRead,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), ReadError> {
        self.read_store()?.visit_all(read, visit)
    }

    fn stream_info(&self, stream_id: &str) -> Result<Option<StreamInfo>, ReadError> {
        self.read_store()?.stream_info(stream_id)
    }

    fn event_position(&self, event_id: Uuid) -> Result<Option<u64>, ReadError> {
        self.read_store()?.event_position(event_id)
    }

    fn streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StreamInfo)>, ReadError> {
        self.read_store()?.streams(prefix, after, limit)
    }

    fn position_at(&self, time: u64) -> Result<u64, ReadError> {
        self.read_store()?.position_at(time)
    }

    fn head(&self) -> u64 {
        *self.shared.head.borrow()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.shared.head.subscribe()
    }

    fn import_events(
        &self,
        events: Vec<RecordedEvent>,
    ) -> BoxFuture<'static, Result<Appended, AppendError>> {
        self.write(|store| store.import_events(events))
    }

    fn limits(&self) -> Limits {
        self.shared.limits
    }

    fn subject_keys(&self) -> &dyn SubjectKeys {
        self.shared.keys.as_ref()
    }

    fn reveal(&self, event: &EventRef<'_>) -> Personal {
        match (event.subject_id, event.sealed) {
            (Some(subject), Some(sealed)) => {
                self.shared.keys.unseal(subject, event.event_id, sealed)
            }
            _ => Personal::None,
        }
    }

    fn append_system(
        &self,
        request: AppendRequest,
    ) -> BoxFuture<'static, Result<Appended, AppendError>> {
        self.write(|store| store.append_system(request))
    }

    fn forget_subject(&self, subject: &str) -> Result<Forgot, keys::KeyStoreError> {
        self.shared.keys.forget(subject)
    }

    fn is_forgotten(&self, subject: &str) -> bool {
        self.shared.keys.is_forgotten(subject)
    }

    fn verify(&self) -> Result<VerifyReport, ReadError> {
        self.read_store()?.verify()
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<String, BlobError> {
        if let Some(cause) = self.degraded() {
            return Err(BlobError::Storage(format!(
                "the event store is read-only until it recovers from an I/O error: {cause}"
            )));
        }
        let store = self.current().ok_or_else(|| {
            BlobError::Storage("the event store is being reopened after an I/O error".into())
        })?;
        store.put_blob(bytes)
    }

    fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, BlobError> {
        let store = self.current().ok_or_else(|| {
            BlobError::Storage("the event store is being reopened after an I/O error".into())
        })?;
        store.get_blob(hash)
    }

    fn archive(&self, cut: ArchiveCut) -> Result<Archived, ArchiveError> {
        if let Some(cause) = self.degraded() {
            return Err(ArchiveError::Write {
                file: self.shared.config.dir.join(super::segment::ARCHIVE_DIR),
                reason: format!(
                    "the event store is read-only until it recovers from an I/O error: {cause}"
                ),
            });
        }
        self.read_store()?.archive(cut)
    }

    fn degraded(&self) -> Option<String> {
        // Never waits for a reopen in progress (the cause is recorded until it succeeds):
        // `/health` and refused writes answer at once.
        let failure = match self.shared.current.try_read() {
            Ok(slot) => slot.as_ref().and_then(Store::failure),
            Err(_) => None,
        };
        if let Some(failure) = failure {
            return Some(self.shared.notice(&failure));
        }
        self.shared.lock().cause.clone()
    }
}
