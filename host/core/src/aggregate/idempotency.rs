//! Idempotency keys: a command sent again with the same key gets the first answer and writes
//! nothing.
//!
//! Two mechanisms, because neither is enough alone:
//! - the answer is recorded durably in `views.redb` under (type, id, key) once the command is
//!   decided, and looked up before a command with a key is handled;
//! - the ids of the events a keyed command emits are derived from the key. The record is
//!   derived data: the host may die after the append but before the record, and `views.redb`
//!   may be deleted. So a key without a record is looked up in the log by the id of its first
//!   event before the command is decided; if its events are there, the first reply is rebuilt
//!   from them (and recorded), never decided again on a state that already holds its effect.
//!   Should the lookup miss a racing append, the append itself hits the store's event-id index
//!   instead of writing the events twice.
//!
//! A reply that writes no event (a refusal, an invalid command, a no-op) is recorded in the
//! log too, in the system stream [`REPLIES_STREAM`], under the *same* derived id as the first
//! event an acceptance would have stored. The store keeps one event per id, so the log holds
//! either the key's events or its recorded reply, never both: when two nodes decide one key at
//! once (a retry through another node), the second append finds the id taken and answers with
//! what the first stored. So every keyed command answers its first reply for as long as the
//! log lives, on any node; `views.redb` keeps a copy only to answer without a log read.
//!
//! Commands for one aggregate run one at a time on its worker (a keyed command waits for the
//! one before it to be recorded), so two racing sends of one key are decided once.

use std::ops::ControlFlow;

use redb::TableDefinition;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{CommandReply, Decision, EmittedEvent};
use crate::views::Views;
use eshost_store::{
    AllRead, AppendError, AppendRequest, EventStore, ExpectedVersion, Personal, ProposedEvent,
    ReadError, block_on,
};

/// The system stream of the replies of keyed commands that stored no event.
pub const REPLIES_STREAM: &str = "$replies";
/// The type of the events there; the data is the reply.
pub const REPLY_EVENT: &str = "KeyedReplyRecorded";

/// The environment variable of the test hook [`abort_after_append_requested`].
pub(crate) const TEST_FAULT_VAR: &str = "ESHOST_TEST_FAULT";

/// A test hook, read once when the pipeline starts: with `ESHOST_TEST_FAULT=abort-after-append`
/// the process aborts right after a keyed command's events are durable and before its reply
/// is recorded, the crash the log lookup exists for. Never set it in production.
pub(crate) fn abort_after_append_requested() -> bool {
    let requested = std::env::var(TEST_FAULT_VAR).is_ok_and(|fault| fault == "abort-after-append");
    if requested {
        tracing::warn!(
            "{TEST_FAULT_VAR}=abort-after-append: the host aborts after the first keyed append (a test hook)"
        );
    }
    requested
}

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
        let txn = self.views.begin_read().map_err(failed)?;
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
        let txn = self.views.begin_write().map_err(failed)?;
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

/// Where the events of a command sent with idempotency `key` start in the log, if it has any.
pub(crate) fn stored_position(
    store: &dyn EventStore,
    aggregate_type: &str,
    id: &str,
    key: &str,
) -> Result<Option<u64>, ReadError> {
    store.event_position(event_id(aggregate_type, id, key, 0))
}

/// Records `reply` (one that stored no event) as the first reply to `key` in the log, under the
/// id the key's first event would have. Returns the first reply: `reply` itself, or, when the
/// key was decided first elsewhere (another node, an earlier send), the stored one, replayed.
/// Blocking.
pub(crate) fn record_in_log(
    store: &dyn EventStore,
    aggregate_type: &str,
    id: &str,
    key: &str,
    reply: &CommandReply,
) -> Result<CommandReply, String> {
    let failed = |error: &dyn std::fmt::Display| {
        format!("recording the reply to idempotency key {key:?} in {REPLIES_STREAM}: {error}")
    };
    let data = serde_json::to_string(reply).map_err(|e| failed(&e))?;
    let metadata = serde_json::json!({
        "aggregate_type": aggregate_type,
        "stream_id": id,
        "idempotency_key": key,
        "command_id": reply.command_id.to_string(),
    });
    let event = ProposedEvent::new(REPLY_EVENT, data)
        .with_id(event_id(aggregate_type, id, key, 0))
        .with_metadata(metadata.to_string());
    let request = AppendRequest::new(REPLIES_STREAM, ExpectedVersion::Any, vec![event]);
    match block_on(store.append_system(request)) {
        Ok(appended) if !appended.already_stored => Ok(reply.clone()),
        Ok(appended) => recover(
            store,
            aggregate_type,
            id,
            key,
            appended.first_position,
            reply.command_id,
        )
        .map_err(|e| failed(&e)),
        Err(AppendError::DuplicateEventId { position, .. }) => {
            recover(store, aggregate_type, id, key, position, reply.command_id)
                .map_err(|e| failed(&e))
        }
        Err(error) => Err(failed(&error)),
    }
}

/// The reply to the first send of idempotency `key`, whose first record is at `position`:
/// a reply recorded in [`REPLIES_STREAM`], or the events with the ids derived from the key
/// (one append: contiguous). Marked replayed.
pub(crate) fn recover(
    store: &dyn EventStore,
    aggregate_type: &str,
    id: &str,
    key: &str,
    position: u64,
    command_id: Uuid,
) -> Result<CommandReply, ReadError> {
    let mut read = AllRead::from(position);
    read.limit = 10_000;
    let mut events = Vec::new();
    let mut recorded: Option<Result<CommandReply, serde_json::Error>> = None;
    store.visit_all(&read, &mut |event| {
        if events.is_empty() && event.stream_id == REPLIES_STREAM {
            if event.event_id == event_id(aggregate_type, id, key, 0) {
                recorded = Some(serde_json::from_str(event.data));
            }
            return ControlFlow::Break(());
        }
        if event.event_id != event_id(aggregate_type, id, key, events.len()) {
            return ControlFlow::Break(());
        }
        events.push(EmittedEvent {
            event_id: event.event_id,
            position: event.position,
            stream_version: event.stream_version,
            event_type: event.event_type.to_owned(),
            schema_version: event.schema_version,
            data: event.data.to_owned(),
            metadata: event.metadata.to_owned(),
            recorded_at: event.recorded_at,
            subject_id: event.subject_id.map(str::to_owned),
            personal_data: match store.reveal(&event) {
                Personal::Data(text) => Some(text),
                _ => None,
            },
        });
        ControlFlow::Continue(())
    })?;
    if let Some(recorded) = recorded {
        let mut first = recorded.map_err(|error| {
            ReadError::Storage(format!(
                "the reply recorded for idempotency key {key:?} at position {position} is malformed: {error}"
            ))
        })?;
        first.replayed = true;
        return Ok(first);
    }
    let first_command = events
        .first()
        .and_then(|event| serde_json::from_str::<Map<String, Value>>(&event.metadata).ok())
        .and_then(|metadata| metadata.get("command_id")?.as_str()?.parse().ok())
        .unwrap_or(command_id);
    Ok(CommandReply {
        command_id: first_command,
        stream_id: id.to_owned(),
        stream_version: events.last().map_or(0, |event| event.stream_version),
        decision: Decision::Accepted { events },
        replayed: true,
    })
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
