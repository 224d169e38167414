//! `views.redb`: everything derived from the log (snapshots, projection read models,
//! checkpoints). It can be deleted and rebuilt; keeping it apart keeps derived writes off the
//! log's writer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use eshost_store::tap::{Tap, TappedBackend};
use redb::{
    Database, ReadTransaction, ReadableDatabase, StorageError, TransactionError, WriteTransaction,
};

/// The file, inside the store directory, that holds derived data.
pub const VIEWS_FILE: &str = "views.redb";

/// The derived-data database. Each subsystem defines its own tables in it.
///
/// redb latches an I/O error (a full disk): every later write transaction of that
/// `Database` fails. [`Views::begin_write`] then closes and reopens the file, which rolls it
/// back to its last durable commit, and bumps [`Views::generation`] so that whoever keeps
/// state that mirrors the file (a projection's checkpoint) reads it again.
#[derive(Debug, Clone)]
pub struct Views {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None` after a reopen failed, until the next one succeeds.
    db: RwLock<Option<Arc<Database>>>,
    path: PathBuf,
    tap: Tap,
    generation: AtomicU64,
    /// When a reopen last failed, and why.
    last_failure: Mutex<Option<(Instant, String)>>,
}

/// Why `views.redb` could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open views database {path}: {reason}")]
pub struct ViewsOpenError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// How long a reopen waits for transactions begun on the failed file to let go of it.
const REOPEN_DEADLINE: Duration = Duration::from_secs(2);
/// How long after a failed reopen the next one is tried.
const REOPEN_BACKOFF: Duration = Duration::from_secs(1);

impl Views {
    /// Open (or create) `views.redb` in the store directory `dir`.
    pub fn open(dir: &Path) -> Result<Views, ViewsOpenError> {
        Views::open_tapped(dir, None)
    }

    /// [`Views::open`], every write to the file going through `tap` (the power-cut tests).
    pub fn open_tapped(dir: &Path, tap: Tap) -> Result<Views, ViewsOpenError> {
        let path = dir.join(VIEWS_FILE);
        std::fs::create_dir_all(dir).map_err(|error| ViewsOpenError {
            path: path.clone(),
            reason: error.to_string(),
        })?;
        let db = open_file(&path, &tap)?;
        Ok(Views {
            inner: Arc::new(Inner {
                db: RwLock::new(Some(Arc::new(db))),
                path,
                tap,
                generation: AtomicU64::new(0),
                last_failure: Mutex::new(None),
            }),
        })
    }

    /// The database, for subsystems to open their tables in. Hold it only for one
    /// operation: a reopen waits for it. An error while a failed reopen is retried.
    pub fn db(&self) -> Result<Arc<Database>, StorageError> {
        let slot = self.inner.db.read().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(db) => Ok(db.clone()),
            None => {
                drop(slot);
                let generation = self.generation();
                self.reopen(generation).map_err(unavailable)?;
                let slot = self.inner.db.read().unwrap_or_else(|e| e.into_inner());
                slot.clone()
                    .ok_or_else(|| unavailable("views.redb is being reopened".into()))
            }
        }
    }

    /// A read transaction.
    pub fn begin_read(&self) -> Result<ReadTransaction, TransactionError> {
        self.db()?.begin_read()
    }

    /// A write transaction; after an I/O error latched in the file, reopens it first.
    pub fn begin_write(&self) -> Result<WriteTransaction, TransactionError> {
        let generation = self.generation();
        // Bound first: the database must not be held (a temporary of the match) while the
        // reopen waits for every holder to let go.
        let attempt = self.db()?.begin_write();
        match attempt {
            Err(TransactionError::Storage(StorageError::PreviousIo)) => {
                self.reopen(generation).map_err(unavailable)?;
                self.db()?.begin_write()
            }
            other => other,
        }
    }

    fn last_failure(&self) -> std::sync::MutexGuard<'_, Option<(Instant, String)>> {
        self.inner
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// How many times the file was reopened after an I/O error.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Close the failed file and open it again, unless another caller did since
    /// `generation`.
    fn reopen(&self, generation: u64) -> Result<(), String> {
        // While the cause lasts, callers fail at once instead of queueing for attempts.
        if let Some((at, reason)) = &*self.last_failure()
            && at.elapsed() < REOPEN_BACKOFF
        {
            return Err(reason.clone());
        }
        let mut slot = self.inner.db.write().unwrap_or_else(|e| e.into_inner());
        if self.generation() != generation {
            return Ok(());
        }
        let deadline = Instant::now() + REOPEN_DEADLINE;
        if let Some(failed) = slot.take() {
            // Its file lock is released once the failed database is closed.
            let mut failed = failed;
            loop {
                match Arc::try_unwrap(failed) {
                    Ok(db) => break drop(db),
                    Err(shared) if Instant::now() < deadline => failed = shared,
                    Err(shared) => {
                        *slot = Some(shared);
                        return Err("views.redb failed and is still in use; retrying later".into());
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let reopened = (|| {
            loop {
                match create_database(&self.inner.path, &self.inner.tap) {
                    Ok(db) => return Ok(db),
                    // The failed file's lock goes with its last holder: wait for that only.
                    Err(error)
                        if is_locked(&error) && Instant::now() < deadline + REOPEN_DEADLINE => {}
                    Err(error) => return Err(error.to_string()),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })();
        match reopened {
            Ok(db) => {
                *slot = Some(Arc::new(db));
                self.inner.generation.fetch_add(1, Ordering::AcqRel);
                tracing::info!(path = %self.inner.path.display(), "views database reopened after an I/O error");
                Ok(())
            }
            Err(reason) => {
                let reason = format!("reopening views.redb: {reason}");
                *self.last_failure() = Some((Instant::now(), reason.clone()));
                Err(reason)
            }
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

fn unavailable(reason: String) -> StorageError {
    StorageError::Io(std::io::Error::other(reason))
}

fn open_file(path: &Path, tap: &Tap) -> Result<Database, ViewsOpenError> {
    create_database(path, tap).map_err(|error| ViewsOpenError {
        path: path.to_owned(),
        reason: if is_locked(&error) {
            "it is locked by another process (is `eshost run` using it?)".into()
        } else {
            error.to_string()
        },
    })
}

fn create_database(path: &Path, tap: &Tap) -> Result<Database, redb::DatabaseError> {
    // A crash while the file was created leaves it without redb's magic number; it never
    // held anything.
    if eshost_store::unfinished_redb(path)? {
        tracing::warn!(path = %path.display(), "removing a views file whose creation never finished");
        std::fs::remove_file(path)?;
    }
    let mut builder = Database::builder();
    builder.set_cache_size(128 * 1024 * 1024);
    match tap {
        None => builder.create(path),
        Some(_) => {
            TappedBackend::open(path, tap).and_then(|file| builder.create_with_backend(file))
        }
    }
}

fn is_locked(error: &redb::DatabaseError) -> bool {
    match error {
        redb::DatabaseError::DatabaseAlreadyOpen => true,
        redb::DatabaseError::Storage(StorageError::Io(io)) => {
            io.kind() == std::io::ErrorKind::WouldBlock
        }
        _ => false,
    }
}

/// Rewrites `views.redb` of a stopped host into a fresh file, table by table, and puts it in
/// place. redb's own compaction moves pages as they are, so old bytes left in the unused
/// part of a live page (a dropped read-model row, a deleted snapshot) would survive it; a
/// copy holds only what the tables hold now. Returns the sizes before and after.
pub fn compact(dir: &Path) -> Result<eshost_store::Compacted, ViewsOpenError> {
    let path = dir.join(VIEWS_FILE);
    let fresh = dir.join(format!("{VIEWS_FILE}.compacting"));
    let failed = |reason: String| ViewsOpenError {
        path: path.clone(),
        reason,
    };
    let size = |file: &Path| {
        std::fs::metadata(file)
            .map(|metadata| metadata.len())
            .map_err(|error| failed(error.to_string()))
    };
    let bytes_before = size(&path)?;
    {
        let source = Database::open(&path).map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                failed("it is locked by another process (is `eshost run` using it?)".into())
            }
            other => failed(other.to_string()),
        })?;
        // A copy left by an interrupted compaction is incomplete: start it again.
        let _ = std::fs::remove_file(&fresh);
        let target = Database::create(&fresh).map_err(|error| failed(error.to_string()))?;
        copy::all_tables(&source, &target).map_err(failed)?;
    }
    // The copy holds only live bytes; redb's compaction then packs it.
    eshost_store::compact_redb(&fresh).map_err(|error| failed(error.to_string()))?;
    let file = std::fs::File::open(&fresh).map_err(|error| failed(error.to_string()))?;
    file.sync_all().map_err(|error| failed(error.to_string()))?;
    std::fs::rename(&fresh, &path).map_err(|error| failed(error.to_string()))?;
    if let Ok(directory) = std::fs::File::open(dir) {
        let _ = directory.sync_all();
    }
    Ok(eshost_store::Compacted {
        name: path.display().to_string(),
        bytes_before,
        bytes_after: size(&path)?,
    })
}

mod copy {
    //! Copying every table of one redb database into another. redb opens a table only with
    //! its key and value types, so each table is tried against the types `views.redb` uses;
    //! a table of another type stops the copy (naming it) rather than being left out.

    use redb::{
        Database, Key, ReadableDatabase, ReadableTable, TableDefinition, TableError, TableHandle,
        Value,
    };

    pub(super) fn all_tables(source: &Database, target: &Database) -> Result<(), String> {
        let read = source.begin_read().map_err(|e| e.to_string())?;
        let write = target.begin_write().map_err(|e| e.to_string())?;
        let names: Vec<String> = read
            .list_tables()
            .map_err(|e| e.to_string())?
            .map(|handle| handle.name().to_owned())
            .collect();
        for name in &names {
            let copied = table::<&str, &str>(&read, &write, name)?
                || table::<&str, &[u8]>(&read, &write, name)?
                || table::<&str, u64>(&read, &write, name)?
                || table::<(&str, &str), &[u8]>(&read, &write, name)?
                || table::<(&str, &str, &str), &[u8]>(&read, &write, name)?
                || table::<(&str, u64), &[u8]>(&read, &write, name)?;
            if !copied {
                return Err(format!(
                    "table {name:?} has key and value types that compaction does not know"
                ));
            }
        }
        write.commit().map_err(|e| e.to_string())
    }

    /// Copies table `name` if it has key type `K` and value type `V`; `false` if it has not.
    fn table<K: Key + 'static, V: Value + 'static>(
        read: &redb::ReadTransaction,
        write: &redb::WriteTransaction,
        name: &str,
    ) -> Result<bool, String> {
        let definition: TableDefinition<K, V> = TableDefinition::new(name);
        let source = match read.open_table(definition) {
            Ok(table) => table,
            Err(TableError::TableTypeMismatch { .. }) => return Ok(false),
            Err(error) => return Err(format!("table {name:?}: {error}")),
        };
        let mut target = write
            .open_table(definition)
            .map_err(|e| format!("table {name:?}: {e}"))?;
        for entry in source.iter().map_err(|e| e.to_string())? {
            let (key, value) = entry.map_err(|e| e.to_string())?;
            target
                .insert(key.value(), value.value())
                .map_err(|e| format!("table {name:?}: {e}"))?;
        }
        Ok(true)
    }
}
