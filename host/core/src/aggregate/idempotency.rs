//! Idempotency keys: a command sent again with the same key gets the first answer and writes
//! nothing.
//!
//! Two mechanisms, because neither is enough alone:
//! - the answer is recorded durably in `views.redb` under (type, id, key) once the command is
//!   decided, and looked up before a command with a key is handled;
//! - the ids of the events a keyed command emits are derived from the key, so if the host
//!   dies after the append but before the answer is recorded, the retry's append hits the
//!   store's event-id index (an idempotent no-op, or a duplicate-id error pointing at the
//!   first events) instead of writing the events twice.
//!
//! Commands for one aggregate run one at a time on its worker (a keyed command waits for the
//! one before it to be recorded), so two racing sends of one key are decided once.

use redb::{ReadableDatabase, TableDefinition};
use uuid::Uuid;

use super::CommandReply;
use crate::views::Views;

/// (aggregate type, aggregate id, key) → the first reply, JSON.
const KEYS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("aggregate_idempotency");

/// The recorded answers. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct IdempotencyKeys {
    views: Views,
}

fn failed(error: impl std::fmt::Display) -> String {
    format!("idempotency keys in views.redb: {error}")
}

impl IdempotencyKeys {
    pub(crate) fn new(views: Views) -> Self {
        IdempotencyKeys { views }
    }

    /// The reply recorded for `key`, if any.
    pub(crate) fn get(
        &self,
        aggregate_type: &str,
        id: &str,
        key: &str,
    ) -> Result<Option<CommandReply>, String> {
        let txn = self.views.db().begin_read().map_err(failed)?;
        let table = match txn.open_table(KEYS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(failed(error)),
        };
        let Some(row) = table.get((aggregate_type, id, key)).map_err(failed)? else {
            return Ok(None);
        };
        serde_json::from_slice(row.value())
            .map(Some)
            .map_err(failed)
    }

    /// Records the reply for `key`, durably: a client retrying after a host restart must
    /// still get it.
    pub(crate) fn put(
        &self,
        aggregate_type: &str,
        id: &str,
        key: &str,
        reply: &CommandReply,
    ) -> Result<(), String> {
        let json = serde_json::to_vec(reply).map_err(failed)?;
        let txn = self.views.db().begin_write().map_err(failed)?;
        {
            let mut table = txn.open_table(KEYS).map_err(failed)?;
            table
                .insert((aggregate_type, id, key), json.as_slice())
                .map_err(failed)?;
        }
        txn.commit().map_err(failed)
    }
}

/// The id of the `index`th event a command with idempotency `key` emits: the same on every
/// retry, distinct across types, aggregates and keys.
pub(crate) fn event_id(aggregate_type: &str, id: &str, key: &str, index: usize) -> Uuid {
    let mut hasher = blake3::Hasher::new_derive_key("eshost 2025 aggregate idempotency event id");
    for part in [aggregate_type, id, key] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.update(&(index as u64).to_le_bytes());
    let hash = hasher.finalize();
    let bytes: [u8; 16] = hash.as_bytes()[..16].try_into().expect("16 bytes");
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = event_id("bank-account", "account-1", "k", 0);
        assert_eq!(a, event_id("bank-account", "account-1", "k", 0));
        assert_ne!(a, event_id("bank-account", "account-1", "k", 1));
        assert_ne!(a, event_id("bank-account", "account-1k", "", 0));
        assert_ne!(a, event_id("bank-account", "account-2", "k", 0));
    }
}
