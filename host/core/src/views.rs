//! `views.redb`: everything derived from the log (snapshots, projection read models,
//! checkpoints). It can be deleted and rebuilt; keeping it apart keeps derived writes off the
//! log's writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::Database;

/// The file, inside the store directory, that holds derived data.
pub const VIEWS_FILE: &str = "views.redb";

/// The derived-data database. Each subsystem defines its own tables in it.
#[derive(Debug, Clone)]
pub struct Views {
    db: Arc<Database>,
    path: PathBuf,
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

impl Views {
    /// Open (or create) `views.redb` in the store directory `dir`.
    pub fn open(dir: &Path) -> Result<Views, ViewsOpenError> {
        let path = dir.join(VIEWS_FILE);
        let failed = |reason: String| ViewsOpenError {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|error| failed(error.to_string()))?;
        let db = Database::builder()
            .set_cache_size(128 * 1024 * 1024)
            .create(&path)
            .map_err(|error| match error {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    failed("it is locked by another process (is `eshost run` using it?)".into())
                }
                other => failed(other.to_string()),
            })?;
        Ok(Views {
            db: Arc::new(db),
            path,
        })
    }

    /// The database, for subsystems to open their tables in.
    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
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
