//! Carrying out a batch's intents exactly once, and recording what came of them.
//!
//! Every effect is named by the reactor, the event that caused it and the intent's index among
//! that event's intents, so a batch handled again after a crash (or a retry) does nothing new:
//! - a command goes with an idempotency key from that name: the pipeline answers a repeated
//!   key with its first reply, from the log, and decides nothing again;
//! - what the reactor appends (its events, `TimerScheduled`, the outcome of each command) goes
//!   under event ids derived from that name, and an id already in the log is not appended
//!   again (one runner per reactor writes these, so the lookup cannot race).

use std::collections::HashMap;

use serde_json::{Value, json};
use uuid::Uuid;

use super::crash_hook::{CrashHook, Stage};
use crate::aggregate::{Aggregates, CommandOptions, CommandReply, Decision};
use eshost_runtime::{Effect, Event, Intent, NewEvent};
use eshost_store::{AppendRequest, EventStore, ExpectedVersion, ProposedEvent};

/// The system stream a reactor's outcomes and timers are recorded in.
pub fn outcome_stream(reactor: &str) -> String {
    format!("$reactor-{reactor}")
}

/// Event types the host records in a reactor's stream.
pub(crate) const COMMAND_ACCEPTED: &str = "CommandAccepted";
pub(crate) const COMMAND_REJECTED: &str = "CommandRejected";
pub(crate) const TIMER_SCHEDULED: &str = "TimerScheduled";
pub(crate) const TIMER_FIRED: &str = "TimerFired";

/// What carrying out a batch's intents did.
#[derive(Debug, Default)]
pub(crate) struct Done {
    pub(crate) commands: u64,
    pub(crate) appended: u64,
}

/// A derived id: the same for the same reactor, cause, intent and part, on every attempt.
pub(crate) fn derived_id(reactor: &str, cause: &str, intent: usize, part: &str) -> Uuid {
    let mut hasher = blake3::Hasher::new_derive_key("eshost 2026 reactor effect id");
    for text in [reactor, cause, part] {
        hasher.update(&(text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.update(&(intent as u64).to_le_bytes());
    let bytes: [u8; 16] = hasher.finalize().as_bytes()[..16]
        .try_into()
        .expect("16 bytes");
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The correlation id of `event`: the one in its metadata, else its own id.
fn correlation(event: &Event) -> String {
    serde_json::from_str::<Value>(&event.metadata)
        .ok()
        .and_then(|meta| meta.get("correlation_id")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| event.event_id.clone())
}

fn cause_json(event: &Event) -> Value {
    json!({"position": event.position, "event_id": event.event_id, "stream_id": event.stream_id})
}

fn parse_json(text: &str, what: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("the {what} of an intent is not JSON: {e}"))
}

/// A command intent on its way: what it is, what caused it, and the metadata of what it
/// causes (computed once).
struct Send<'a> {
    cause: &'a Event,
    /// Its index among its cause's intents.
    index: usize,
    aggregate_type: String,
    aggregate_id: String,
    /// The command as the reactor wrote it (sent as is), and parsed (for the outcome).
    command: String,
    parsed: Value,
    context: Value,
    correlation: String,
    metadata: String,
}

/// One event the runner appends, under a derived id.
struct Record {
    stream: String,
    event: ProposedEvent,
}

/// Carries out `intents` (caused by events of `events`) for `reactor`, in order: the commands
/// first (sent together, so each aggregate's worker sees them in intent order), then the
/// appends, then the records of outcomes and timers. Returns an error to retry the batch with.
/// Blocking: `waiter` runs the commands' futures.
pub(crate) fn carry_out(
    reactor: &str,
    store: &dyn EventStore,
    aggregates: &Aggregates,
    waiter: &tokio::runtime::Runtime,
    events: &[Event],
    intents: Vec<Intent>,
    hook: &mut CrashHook,
) -> Result<Done, String> {
    let by_position: HashMap<u64, &Event> = events.iter().map(|e| (e.position, e)).collect();
    let mut index_of_cause: HashMap<u64, usize> = HashMap::new();
    let mut sends = Vec::new();
    let mut appends: Vec<Record> = Vec::new();
    let mut records: Vec<Record> = Vec::new();
    let own = outcome_stream(reactor);
    let owned_prefix = format!("{reactor}-");
    for intent in intents {
        let cause = by_position[&intent.cause];
        let index = {
            let next = index_of_cause.entry(intent.cause).or_default();
            *next += 1;
            *next - 1
        };
        // Once per intent: the cause's metadata is parsed here only.
        let correlation = correlation(cause);
        let metadata = json!({
            "correlation_id": correlation,
            "causation_id": cause.event_id,
            "reactor": reactor,
        })
        .to_string();
        match intent.effect {
            Effect::Send {
                aggregate_type,
                aggregate_id,
                command,
                context,
            } => {
                sends.push(Send {
                    parsed: parse_json(&command, "command")?,
                    context: parse_json(&context, "context")?,
                    cause,
                    index,
                    aggregate_type,
                    aggregate_id,
                    command,
                    correlation,
                    metadata,
                });
            }
            Effect::Append { stream_id, events } => {
                if !stream_id.starts_with(&owned_prefix) || stream_id.len() == owned_prefix.len() {
                    return Err(format!(
                        "an intent appends to {stream_id:?}; reactor {reactor:?} may append only \
                         to streams starting with {owned_prefix:?}"
                    ));
                }
                for (part, event) in events.into_iter().enumerate() {
                    appends.push(Record {
                        stream: stream_id.clone(),
                        event: proposed(
                            derived_id(reactor, &cause.event_id, index, &format!("append {part}")),
                            event,
                            &metadata,
                        ),
                    });
                }
            }
            Effect::Timer { due_at, payload } => {
                let payload = parse_json(&payload, "timer payload")?;
                let timer = derived_id(reactor, &cause.event_id, index, "timer").to_string();
                let data = json!({"timer": timer, "due_at": due_at, "payload": payload, "cause": cause_json(cause)});
                records.push(Record {
                    stream: own.clone(),
                    event: host_event(
                        derived_id(reactor, &cause.event_id, index, "timer scheduled"),
                        TIMER_SCHEDULED,
                        &data,
                        &metadata,
                    ),
                });
            }
        }
    }
    let mut done = Done::default();
    let sending = !sends.is_empty();
    if sending {
        hook.batch();
        let futures = sends.iter().map(|send| {
            let (cause, index) = (send.cause, send.index);
            let options = CommandOptions {
                command_id: Some(derived_id(reactor, &cause.event_id, index, "command id")),
                correlation_id: Some(send.correlation.clone()),
                causation_id: Some(cause.event_id.clone()),
                user: Some(format!("reactor:{reactor}")),
                idempotency_key: Some(format!("reactor:{reactor}:{}:{index}", cause.event_id)),
                ..CommandOptions::default()
            };
            aggregates.execute(
                &send.aggregate_type,
                &send.aggregate_id,
                &send.command,
                options,
            )
        });
        let replies = waiter.block_on(futures_util::future::join_all(futures));
        for (send, reply) in sends.into_iter().zip(replies) {
            let (cause, index) = (send.cause, send.index);
            let reply = reply.map_err(|error| {
                format!(
                    "sending the command of intent {index} of position {} to {} {:?}: {error}",
                    cause.position, send.aggregate_type, send.aggregate_id
                )
            })?;
            done.commands += 1;
            let (event_type, data) = outcome(&send, &reply);
            records.push(Record {
                stream: own.clone(),
                event: host_event(
                    derived_id(reactor, &cause.event_id, index, "outcome"),
                    event_type,
                    &data,
                    &send.metadata,
                ),
            });
        }
    }
    if sending {
        hook.reached(Stage::AfterCommands);
    }
    done.appended += append_new(store, appends, false)?;
    append_new(store, records, true)?;
    if sending {
        hook.reached(Stage::AfterRecords);
    }
    Ok(done)
}

/// The outcome event of a command.
fn outcome(send: &Send<'_>, reply: &CommandReply) -> (&'static str, Value) {
    let mut data = json!({
        "aggregate_type": send.aggregate_type,
        "aggregate_id": send.aggregate_id,
        "command": send.parsed,
        "context": send.context,
        "stream_version": reply.stream_version,
        "cause": cause_json(send.cause),
        "intent": send.index,
    });
    let (event_type, reason, invalid) = match &reply.decision {
        Decision::Accepted { .. } => return (COMMAND_ACCEPTED, data),
        Decision::Rejected { reason } => (COMMAND_REJECTED, reason, false),
        Decision::Invalid { reason } => (COMMAND_REJECTED, reason, true),
    };
    data["reason"] = json!(reason);
    data["invalid"] = json!(invalid);
    (event_type, data)
}

fn proposed(event_id: Uuid, event: NewEvent, metadata: &str) -> ProposedEvent {
    ProposedEvent {
        event_id,
        event_type: event.event_type,
        schema_version: event.schema_version,
        data: event.data,
        metadata: metadata.to_owned(),
        subject_id: event.subject_id,
        personal_data: event.personal_data,
    }
}

fn host_event(event_id: Uuid, event_type: &str, data: &Value, metadata: &str) -> ProposedEvent {
    ProposedEvent {
        event_id,
        event_type: event_type.to_owned(),
        schema_version: 1,
        data: data.to_string(),
        metadata: metadata.to_owned(),
        subject_id: None,
        personal_data: None,
    }
}

/// Appends the records not in the log yet, one append per stream (in first-seen order).
/// Returns how many it appended.
fn append_new(store: &dyn EventStore, records: Vec<Record>, system: bool) -> Result<u64, String> {
    let mut streams: Vec<(String, Vec<ProposedEvent>)> = Vec::new();
    for record in records {
        let stored = store
            .event_position(record.event.event_id)
            .map_err(|e| format!("looking up an effect in the log: {e}"))?;
        if stored.is_some() {
            continue;
        }
        match streams
            .iter_mut()
            .find(|(stream, _)| *stream == record.stream)
        {
            Some((_, events)) => events.push(record.event),
            None => streams.push((record.stream, vec![record.event])),
        }
    }
    let mut appended = 0;
    for (stream, events) in streams {
        let count = events.len() as u64;
        let request = AppendRequest::new(stream.clone(), ExpectedVersion::Any, events);
        let append = if system {
            store.append_system(request)
        } else {
            store.append(request)
        };
        eshost_store::block_on(append).map_err(|e| format!("appending to {stream:?}: {e}"))?;
        appended += count;
    }
    Ok(appended)
}

/// A `TimerFired` event for a due timer, under an id derived from the timer.
pub(crate) fn fire_timer(
    store: &dyn EventStore,
    reactor: &str,
    timer: &str,
    due_at: u64,
    payload: &str,
) -> Result<(), String> {
    let payload: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
    let data = json!({"timer": timer, "due_at": due_at, "payload": payload});
    let metadata = json!({"causation_id": timer, "correlation_id": timer, "reactor": reactor});
    let record = Record {
        stream: outcome_stream(reactor),
        event: host_event(
            derived_id(reactor, timer, 0, "timer fired"),
            TIMER_FIRED,
            &data,
            &metadata.to_string(),
        ),
    };
    append_new(store, vec![record], true).map(|_| ())
}
