//! Compacting a stopped store's redb files: redb moves the live pages to the front of the
//! file and truncates it, so the space of freed pages (and the old bytes they held) goes
//! back to the file system instead of staying in the file until redb reuses it.

use std::path::{Path, PathBuf};

use redb::Database;

use super::{EVENTS_FILE, Store, StoreConfig};
use crate::OpenError;

/// The size of one file (or table) of a store before and after a compaction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    /// The file's path, or a table's qualified name.
    pub name: String,
    /// Its size before, in bytes.
    pub bytes_before: u64,
    /// Its size after, in bytes.
    pub bytes_after: u64,
}

/// Why a file could not be compacted.
#[derive(Debug, thiserror::Error)]
#[error("cannot compact {path}: {reason}")]
pub struct CompactError {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    pub reason: String,
}

impl From<OpenError> for CompactError {
    fn from(error: OpenError) -> Self {
        let path = match &error {
            OpenError::Directory { path, .. }
            | OpenError::Locked { path }
            | OpenError::Database { path, .. }
            | OpenError::Format { path, .. } => path.clone(),
            OpenError::Keys(_) => PathBuf::new(),
        };
        CompactError {
            path,
            reason: error.to_string(),
        }
    }
}

impl Store {
    /// Compacts `events.redb` of a store no process has open. The store is opened and
    /// closed first, so that everything in its write-ahead log is in redb (and the format
    /// checks run) before redb rewrites the file.
    pub fn compact(config: StoreConfig) -> Result<Compacted, CompactError> {
        let path = config.dir.join(EVENTS_FILE);
        drop(Store::open(config)?);
        compact_redb(&path)
    }
}

/// Compacts one redb file no process has open, until redb finds nothing more to move.
pub fn compact_redb(path: &Path) -> Result<Compacted, CompactError> {
    let failed = |reason: String| CompactError {
        path: path.to_owned(),
        reason,
    };
    let size = || {
        std::fs::metadata(path)
            .map(|metadata| metadata.len())
            .map_err(|error| failed(error.to_string()))
    };
    let bytes_before = size()?;
    let mut db = Database::open(path).map_err(|error| match error {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            failed("it is locked by another process (is `eshost run` using it?)".into())
        }
        other => failed(other.to_string()),
    })?;
    // Each pass moves what it can; a pass that moves nothing leaves the file at its smallest.
    const MAX_PASSES: usize = 64;
    for _ in 0..MAX_PASSES {
        if !db.compact().map_err(|error| failed(error.to_string()))? {
            break;
        }
    }
    drop(db);
    Ok(Compacted {
        name: path.display().to_string(),
        bytes_before,
        bytes_after: size()?,
    })
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};

    use super::*;

    const ROWS: TableDefinition<u64, &[u8]> = TableDefinition::new("rows");
    const MARKER: &[u8] = b"forgotten-plaintext-7f3a9c";

    fn holds_marker(path: &Path) -> bool {
        let bytes = std::fs::read(path).unwrap();
        bytes.windows(MARKER.len()).any(|window| window == MARKER)
    }

    #[test]
    fn compaction_drops_the_old_bytes_of_freed_pages_and_keeps_the_live_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("views.redb");
        let filler = vec![b'x'; 1000];
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut rows = txn.open_table(ROWS).unwrap();
                for key in 0..4000u64 {
                    let mut value = filler.clone();
                    if key % 2 == 0 {
                        value[..MARKER.len()].copy_from_slice(MARKER);
                    }
                    rows.insert(key, value.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
            // Drop every row that holds the marker, in a few transactions, as a purge would.
            for chunk in 0..4u64 {
                let txn = db.begin_write().unwrap();
                {
                    let mut rows = txn.open_table(ROWS).unwrap();
                    for key in (chunk * 1000..(chunk + 1) * 1000).filter(|k| k % 2 == 0) {
                        rows.remove(key).unwrap();
                    }
                }
                txn.commit().unwrap();
            }
        }
        assert!(
            holds_marker(&path),
            "freed pages kept the old bytes before compacting"
        );

        let compacted = compact_redb(&path).unwrap();
        assert!(
            compacted.bytes_after < compacted.bytes_before,
            "{compacted:?}"
        );
        assert!(!holds_marker(&path), "the old bytes survived compaction");

        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let rows = txn.open_table(ROWS).unwrap();
        assert_eq!(rows.len().unwrap(), 2000);
        assert_eq!(rows.get(3).unwrap().unwrap().value(), filler.as_slice());
        assert!(rows.get(2).unwrap().is_none());
    }

    #[test]
    fn a_file_in_use_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("views.redb");
        let _open = Database::create(&path).unwrap();
        let error = compact_redb(&path).unwrap_err();
        assert!(error.to_string().contains("views.redb"), "{error}");
        assert!(error.to_string().contains("locked"), "{error}");
    }
}
