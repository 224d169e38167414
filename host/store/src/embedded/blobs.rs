//! The blob port on redb: a table of its own in `events.redb`, written in its own transaction
//! (beside the writer's, never inside it).

use redb::{Database, ReadableDatabase, TableDefinition};

use crate::blob::{self, BlobError};

/// content hash (hex) → bytes.
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");

fn storage(error: impl Into<redb::Error>) -> BlobError {
    BlobError::Storage(error.into().to_string())
}

pub(super) fn put(db: &Database, bytes: &[u8]) -> Result<String, BlobError> {
    let hash = blob::check_put(bytes)?;
    if get(db, &hash)?.is_some() {
        return Ok(hash);
    }
    let txn = db.begin_write().map_err(storage)?;
    {
        let mut table = txn.open_table(BLOBS).map_err(storage)?;
        table.insert(hash.as_str(), bytes).map_err(storage)?;
    }
    txn.commit().map_err(storage)?;
    Ok(hash)
}

pub(super) fn get(db: &Database, hash: &str) -> Result<Option<Vec<u8>>, BlobError> {
    blob::check_hash(hash)?;
    let txn = db.begin_read().map_err(storage)?;
    let table = match txn.open_table(BLOBS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(error) => return Err(storage(error)),
    };
    match table.get(hash).map_err(storage)? {
        Some(bytes) => blob::check_read(hash, bytes.value().to_vec()).map(Some),
        None => Ok(None),
    }
}
