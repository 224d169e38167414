//! Snapshots in `views.redb`: the latest state bytes of each aggregate, with the hash of the
//! plugin that made them and the stream version they cover. They are derived data: losing
//! one costs a replay, never correctness.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::views::Views;

/// (aggregate type, aggregate id) → encoded [`Snapshot`].
const SNAPSHOTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("aggregate_snapshots");

/// Format tag of the encoding, so that a future layout can tell old rows apart.
const FORMAT: &[u8; 2] = b"S1";

/// One aggregate's state as of a stream version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The content hash of the plugin that produced `state`; only that code may restore it.
    pub plugin_hash: String,
    /// The stream version the state covers (the events up to and including it).
    pub version: u64,
    /// The global position of the event at `version`.
    pub position: u64,
    /// When the event at `version` was recorded (ms since the epoch): lets "as of a time"
    /// queries use the snapshot.
    pub recorded_at: u64,
    /// The plugin's snapshot bytes.
    pub state: Vec<u8>,
}

/// Why the snapshot table could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// redb failed.
    #[error("snapshot storage: {0}")]
    Storage(String),
    /// A stored snapshot could not be decoded.
    #[error("snapshot of {aggregate_type} {id:?} is corrupt")]
    Corrupt {
        /// The aggregate type.
        aggregate_type: String,
        /// The aggregate id.
        id: String,
    },
}

fn storage(error: impl Into<redb::Error>) -> SnapshotError {
    SnapshotError::Storage(error.into().to_string())
}

/// The snapshot table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Snapshots {
    views: Views,
}

impl Snapshots {
    /// The snapshots kept in `views`.
    pub fn new(views: Views) -> Self {
        Snapshots { views }
    }

    /// The latest snapshot of one aggregate, if any.
    pub fn get(&self, aggregate_type: &str, id: &str) -> Result<Option<Snapshot>, SnapshotError> {
        let txn = self.views.begin_read().map_err(storage)?;
        let table = match txn.open_table(SNAPSHOTS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(storage(error)),
        };
        let Some(row) = table.get((aggregate_type, id)).map_err(storage)? else {
            return Ok(None);
        };
        decode(row.value())
            .map(Some)
            .ok_or_else(|| SnapshotError::Corrupt {
                aggregate_type: aggregate_type.to_owned(),
                id: id.to_owned(),
            })
    }

    /// Stores `snapshot` as the latest of one aggregate. The commit does not wait for the
    /// disk: a snapshot lost in a crash is rebuilt by replay, and the next durable commit to
    /// `views.redb` carries it anyway.
    pub fn put(
        &self,
        aggregate_type: &str,
        id: &str,
        snapshot: &Snapshot,
    ) -> Result<(), SnapshotError> {
        self.put_bytes(aggregate_type, id, &encode(snapshot))
    }

    /// Stores raw bytes as a snapshot row (tests use it to plant a corrupt one).
    pub fn put_bytes(
        &self,
        aggregate_type: &str,
        id: &str,
        bytes: &[u8],
    ) -> Result<(), SnapshotError> {
        let mut txn = self.views.begin_write().map_err(storage)?;
        txn.set_durability(redb::Durability::None)
            .map_err(storage)?;
        {
            let mut table = txn.open_table(SNAPSHOTS).map_err(storage)?;
            table.insert((aggregate_type, id), bytes).map_err(storage)?;
        }
        txn.commit().map_err(storage)
    }

    /// Deletes the snapshots of `ids` under every type of `types`, durably (a crash must not
    /// bring back a purged state). Returns how many there were.
    pub fn delete_all(&self, types: &[String], ids: &[String]) -> Result<usize, SnapshotError> {
        let txn = self.views.begin_write().map_err(storage)?;
        let mut deleted = 0;
        {
            let mut table = txn.open_table(SNAPSHOTS).map_err(storage)?;
            for aggregate_type in types {
                for id in ids {
                    if table
                        .remove((aggregate_type.as_str(), id.as_str()))
                        .map_err(storage)?
                        .is_some()
                    {
                        deleted += 1;
                    }
                }
            }
        }
        txn.commit().map_err(storage)?;
        Ok(deleted)
    }

    /// Deletes the snapshots of `ids` under any aggregate type, durably, for tools that do
    /// not know the types. Scans the snapshot table once.
    pub fn delete_ids(&self, ids: &[String]) -> Result<usize, SnapshotError> {
        let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let txn = self.views.begin_write().map_err(storage)?;
        let mut deleted = 0;
        {
            let mut table = txn.open_table(SNAPSHOTS).map_err(storage)?;
            let keys: Vec<(String, String)> = table
                .iter()
                .map_err(storage)?
                .filter_map(|entry| {
                    let (key, _) = entry.ok()?;
                    let (aggregate_type, id) = key.value();
                    wanted
                        .contains(id)
                        .then(|| (aggregate_type.to_owned(), id.to_owned()))
                })
                .collect();
            for (aggregate_type, id) in keys {
                table
                    .remove((aggregate_type.as_str(), id.as_str()))
                    .map_err(storage)?;
                deleted += 1;
            }
        }
        txn.commit().map_err(storage)?;
        Ok(deleted)
    }

    /// Deletes every snapshot, durably (after an upcaster swap: each was built through the
    /// old chain). Returns how many there were.
    pub fn clear(&self) -> Result<usize, SnapshotError> {
        let txn = self.views.begin_write().map_err(storage)?;
        let deleted = match txn.open_table(SNAPSHOTS) {
            Ok(table) => table.len().map_err(storage)?,
            Err(error) => return Err(storage(error)),
        };
        txn.delete_table(SNAPSHOTS).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    /// Forgets one aggregate's snapshot.
    pub fn delete(&self, aggregate_type: &str, id: &str) -> Result<(), SnapshotError> {
        let mut txn = self.views.begin_write().map_err(storage)?;
        txn.set_durability(redb::Durability::None)
            .map_err(storage)?;
        {
            let mut table = txn.open_table(SNAPSHOTS).map_err(storage)?;
            table.remove((aggregate_type, id)).map_err(storage)?;
        }
        txn.commit().map_err(storage)
    }
}

fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let hash = snapshot.plugin_hash.as_bytes();
    let mut bytes = Vec::with_capacity(2 + 24 + 2 + hash.len() + snapshot.state.len());
    bytes.extend_from_slice(FORMAT);
    bytes.extend_from_slice(&snapshot.version.to_le_bytes());
    bytes.extend_from_slice(&snapshot.position.to_le_bytes());
    bytes.extend_from_slice(&snapshot.recorded_at.to_le_bytes());
    bytes.extend_from_slice(&(hash.len() as u16).to_le_bytes());
    bytes.extend_from_slice(hash);
    bytes.extend_from_slice(&snapshot.state);
    bytes
}

fn decode(bytes: &[u8]) -> Option<Snapshot> {
    let rest = bytes.strip_prefix(FORMAT)?;
    let u64_at = |at: usize| {
        rest.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let version = u64_at(0)?;
    let position = u64_at(8)?;
    let recorded_at = u64_at(16)?;
    let hash_len = u16::from_le_bytes(rest.get(24..26)?.try_into().ok()?) as usize;
    let plugin_hash = std::str::from_utf8(rest.get(26..26 + hash_len)?)
        .ok()?
        .to_owned();
    let state = rest.get(26 + hash_len..)?.to_vec();
    Some(Snapshot {
        plugin_hash,
        version,
        position,
        recorded_at,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_and_garbage_is_refused() {
        let snapshot = Snapshot {
            plugin_hash: "ab12".into(),
            version: 7,
            position: 99,
            recorded_at: 1_700_000_000_000,
            state: br#"{"balance":5}"#.to_vec(),
        };
        assert_eq!(decode(&encode(&snapshot)), Some(snapshot));
        assert_eq!(decode(b"S1\x01"), None);
        assert_eq!(decode(b"garbage"), None);
    }
}
