//! The projections' part of `views.redb`: one record per projection naming its active (and
//! shadow) generation, the plugin code of each generation, a checkpoint per namespace, dead
//! letters, and one table per namespace holding that generation's read model.
//!
//! A namespace is one generation of one projection: `projection/<name>/<generation>`. Its
//! read model and its checkpoint change in the same transaction; switching to a shadow is one
//! transaction that repoints the record and drops the old namespace.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::{Deserialize, Serialize};

/// Projection name → [`Meta`] as JSON.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("projection_meta");
/// Content hash → component bytes, so that a restart serves the version that built the data.
pub(crate) const CODE: TableDefinition<&str, &[u8]> = TableDefinition::new("projection_code");
/// Namespace → the last position whose effects are in its read model.
pub(crate) const CHECKPOINTS: TableDefinition<&str, u64> =
    TableDefinition::new("projection_checkpoints");
/// (namespace, position) → [`DeadLetter`] as JSON.
pub(crate) const DEAD_LETTERS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("projection_dead_letters");

/// One generation of a projection, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Generation {
    /// Numbered from 1 per projection, never reused.
    pub(crate) number: u64,
    /// The content hash of the plugin that builds it (its bytes are in [`CODE`]).
    pub(crate) hash: String,
}

/// What `views.redb` records about one projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// The generation queries read.
    pub(crate) active: Generation,
    /// A generation being rebuilt from position 0, if any.
    pub(crate) shadow: Option<Generation>,
    /// The last generation number handed out.
    pub(crate) last_number: u64,
}

/// An event parked by a projection configured to dead-letter, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The event's position in `$all`.
    pub position: u64,
    /// Its stream.
    pub stream_id: String,
    /// Its type.
    pub event_type: String,
    /// The last error the plugin gave for it.
    pub reason: String,
    /// How many times it was tried.
    pub attempts: u32,
    /// When it was parked, ms since the epoch.
    pub parked_at: u64,
}

/// The table name of a namespace.
pub(crate) fn namespace(name: &str, generation: u64) -> String {
    format!("projection/{name}/{generation}")
}

/// The read-model table of a namespace.
pub(crate) fn data_table(namespace: &str) -> TableDefinition<'_, &'static str, &'static str> {
    TableDefinition::new(namespace)
}

/// Writes a batch's read-model writes (`None`: delete) into `namespace` and moves its
/// checkpoint to `checkpoint`, in `txn`: the two commit together or not at all.
pub(crate) fn write_batch(
    txn: &redb::WriteTransaction,
    namespace: &str,
    writes: &std::collections::BTreeMap<String, Option<String>>,
    checkpoint: u64,
) -> Result<(), redb::Error> {
    let mut table = txn.open_table(data_table(namespace))?;
    for (key, value) in writes {
        match value {
            Some(value) => {
                table.insert(key.as_str(), value.as_str())?;
            }
            None => {
                table.remove(key.as_str())?;
            }
        }
    }
    txn.open_table(CHECKPOINTS)?.insert(namespace, checkpoint)?;
    Ok(())
}

/// Reads the record of `name`, if the projection was ever started.
pub(crate) fn read_meta(db: &Database, name: &str) -> Result<Option<Meta>, redb::Error> {
    let txn = db.begin_read()?;
    read_meta_in(&txn, name)
}

pub(crate) fn read_meta_in(
    txn: &redb::ReadTransaction,
    name: &str,
) -> Result<Option<Meta>, redb::Error> {
    let table = match txn.open_table(META) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let Some(bytes) = table.get(name)? else {
        return Ok(None);
    };
    serde_json::from_slice(bytes.value())
        .map(Some)
        .map_err(|e| redb::Error::Corrupted(format!("projection record {name:?}: {e}")))
}

pub(crate) fn write_meta(
    txn: &redb::WriteTransaction,
    name: &str,
    meta: &Meta,
) -> Result<(), redb::Error> {
    let bytes = serde_json::to_vec(meta).expect("a record serializes");
    txn.open_table(META)?.insert(name, bytes.as_slice())?;
    Ok(())
}

/// The checkpoint of a namespace (0 when it has none).
pub(crate) fn checkpoint(db: &Database, namespace: &str) -> Result<u64, redb::Error> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(CHECKPOINTS) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(error) => return Err(error.into()),
    };
    Ok(table.get(namespace)?.map(|v| v.value()).unwrap_or(0))
}

/// The component bytes recorded under `hash`.
pub(crate) fn code(db: &Database, hash: &str) -> Result<Option<Vec<u8>>, redb::Error> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(CODE) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    Ok(table.get(hash)?.map(|v| v.value().to_vec()))
}

/// Creates an empty namespace at checkpoint 0 (dropping any leftover of the same name).
pub(crate) fn create_namespace(
    txn: &redb::WriteTransaction,
    namespace: &str,
) -> Result<(), redb::Error> {
    drop_namespace(txn, namespace)?;
    txn.open_table(data_table(namespace))?;
    txn.open_table(CHECKPOINTS)?.insert(namespace, 0)?;
    Ok(())
}

/// Removes a namespace: its read model, checkpoint and dead letters.
pub(crate) fn drop_namespace(
    txn: &redb::WriteTransaction,
    namespace: &str,
) -> Result<(), redb::Error> {
    txn.delete_table(data_table(namespace))?;
    txn.open_table(CHECKPOINTS)?.remove(namespace)?;
    let mut letters = txn.open_table(DEAD_LETTERS)?;
    letters.retain_in((namespace, 0)..=(namespace, u64::MAX), |_, _| false)?;
    Ok(())
}

/// Removes recorded code that no generation of any projection uses.
pub(crate) fn collect_code(txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
    let mut used = std::collections::HashSet::new();
    for entry in txn.open_table(META)?.iter()? {
        let (_, value) = entry?;
        if let Ok(meta) = serde_json::from_slice::<Meta>(value.value()) {
            used.insert(meta.active.hash);
            if let Some(shadow) = meta.shadow {
                used.insert(shadow.hash);
            }
        }
    }
    txn.open_table(CODE)?
        .retain(|hash, _| used.contains(hash))?;
    Ok(())
}

/// The dead letters of a namespace, oldest first.
pub(crate) fn dead_letters(db: &Database, namespace: &str) -> Result<Vec<DeadLetter>, redb::Error> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(DEAD_LETTERS) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    let mut found = Vec::new();
    for entry in table.range((namespace, 0)..=(namespace, u64::MAX))? {
        let (_, value) = entry?;
        found.push(
            serde_json::from_slice(value.value())
                .map_err(|e| redb::Error::Corrupted(format!("dead letter: {e}")))?,
        );
    }
    Ok(found)
}
