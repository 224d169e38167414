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
