//! The asynchronous part of a command: its append handed to the store and polled by the
//! worker itself, then the answer, the cached state brought up to date (and snapshotted when
//! due), and the commands that waited for it decided.

use std::collections::VecDeque;
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use uuid::Uuid;

use super::{Cached, Done, Finished, InFlight, Job, Key, Message, Worker};
use crate::aggregate::rebuild;
use crate::aggregate::snapshot::Snapshot;
use crate::aggregate::{CommandError, CommandReply, Counters, Decision, EmittedEvent, idempotency};
use eshost_runtime::{Event, NewEvent, PluginError};
use eshost_store::{
    AppendError, AppendRequest, Appended, BoxFuture, ExpectedVersion, ProposedEvent,
    ValidationError,
};

/// An append the worker polls itself: the writer's answer wakes the worker through its
/// channel, with no runtime task (and thread hop) in between.
pub(super) struct PendingAppend {
    future: BoxFuture<'static, Result<Appended, AppendError>>,
    proposed: Vec<ProposedEvent>,
    waker: Waker,
}

/// Wakes a worker to poll the append of one aggregate.
struct AppendWaker {
    sender: mpsc::Sender<Message>,
    key: Key,
}

impl Wake for AppendWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self.sender.send(Message::Poll(self.key.clone()));
    }
}

impl Worker {
    /// Hands the events to the store and awaits the append on the runtime.
    pub(super) fn append(
        &mut self,
        job: Job,
        events: Vec<NewEvent>,
        metadata: &str,
        version: u64,
        state: Option<Cached>,
        generation: u64,
    ) {
        let key = job.options.idempotency_key.clone();
        let proposed: Vec<ProposedEvent> = events
            .into_iter()
            .enumerate()
            .map(|(index, event)| ProposedEvent {
                event_id: match &key {
                    Some(key) => idempotency::event_id(&job.aggregate_type, &job.id, key, index),
                    None => Uuid::now_v7(),
                },
                event_type: event.event_type,
                schema_version: event.schema_version,
                data: event.data,
                metadata: metadata.to_owned(),
                subject_id: event.subject_id,
                personal_data: event.personal_data,
            })
            .collect();
        let request = AppendRequest::new(
            job.id.clone(),
            ExpectedVersion::Exact(version),
            proposed.clone(),
        );
        // Submitted here, on the worker, so appends reach the store in decision order.
        let append = self.shared.store.append(request);
        let task_key = (job.aggregate_type.clone(), job.id.clone());
        let (command_id, stream_id) = (job.command_id, job.id.clone());
        if key.is_none() {
            let waker = Waker::from(Arc::new(AppendWaker {
                sender: self.sender.clone(),
                key: task_key.clone(),
            }));
            self.inflight.insert(
                task_key.clone(),
                InFlight {
                    job,
                    state,
                    generation,
                    waiting: VecDeque::new(),
                    pending: Some(PendingAppend {
                        future: append,
                        proposed,
                        waker,
                    }),
                },
            );
            return self.poll_append(&task_key);
        }
        // A keyed command also records its answer (a blocking write) before it is done.
        self.inflight.insert(
            task_key.clone(),
            InFlight {
                job,
                state,
                generation,
                waiting: VecDeque::new(),
                pending: None,
            },
        );
        let shared = self.shared.clone();
        let sender = self.sender.clone();
        self.shared.tokio.spawn(async move {
            let outcome = match append.await {
                Ok(appended) => {
                    let reply = stored_reply(command_id, &stream_id, &proposed, &appended);
                    Ok((reply, !appended.already_stored))
                }
                // Only derived ids collide this way: the key's events are stored already
                // (sent before a crash, decided differently now). The first ones answer.
                Err(AppendError::DuplicateEventId { position, .. }) if key.is_some() => {
                    let (shared, key, (aggregate_type, id)) =
                        (shared.clone(), key.clone().unwrap_or_default(), task_key.clone());
                    tokio::task::spawn_blocking(move || {
                        let store = shared.store.as_ref();
                        idempotency::recover(store, &aggregate_type, &id, &key, position, command_id)
                            .map_err(|error| AppendError::Storage(error.to_string()))
                    })
                    .await
                    .unwrap_or_else(|error| Err(AppendError::Storage(error.to_string())))
                    .map(|reply| (reply, false))
                }
                Err(error) => Err(error),
            };
            let outcome = match outcome {
                Ok((mut reply, fresh)) => {
                    reply.replayed = !fresh;
                    if let Some(key) = key {
                        if fresh && shared.abort_after_keyed_append {
                            tracing::error!(stream_id = %task_key.1, "test fault: aborting after a keyed append, before its record");
                            std::process::abort();
                        }
                        let (shared, first, (aggregate_type, id)) =
                            (shared.clone(), reply.clone(), task_key.clone());
                        let recorded = tokio::task::spawn_blocking(move || {
                            shared.keys.put(&aggregate_type, &id, &key, &first)
                        })
                        .await;
                        if !matches!(recorded, Ok(Ok(()))) {
                            // The derived event ids still make a resend harmless.
                            tracing::warn!(stream_id = %task_key.1, "recording an idempotency key failed");
                        }
                    }
                    Ok(Finished::Appended { reply, fresh })
                }
                Err(error) => Err(error),
            };
            let _ = sender.send(Message::Done(Done {
                key: task_key,
                outcome,
            }));
        });
    }

    /// Polls the append of aggregate `key`, finishing the command once it is stored (or
    /// refused). Wakes for an append that is gone are ignored.
    pub(super) fn poll_append(&mut self, key: &Key) {
        let Some(inflight) = self.inflight.get_mut(key) else {
            return;
        };
        let Some(pending) = inflight.pending.as_mut() else {
            return;
        };
        let waker = pending.waker.clone();
        let result = match pending
            .future
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
        {
            Poll::Pending => return,
            Poll::Ready(result) => result,
        };
        let pending = inflight.pending.take().expect("polled above");
        let outcome = result.map(|appended| {
            let command_id = inflight.job.command_id;
            let mut reply = stored_reply(command_id, &key.1, &pending.proposed, &appended);
            let fresh = !appended.already_stored;
            reply.replayed = !fresh;
            Finished::Appended { reply, fresh }
        });
        self.finish(Done {
            key: key.clone(),
            outcome,
        });
    }

    /// A command's append (or record) finished: answer it, update the cached state, and go on
    /// with the commands that waited for it.
    pub(super) fn finish(&mut self, done: Done) {
        let Some(mut inflight) = self.inflight.remove(&done.key) else {
            return;
        };
        let max_retries = self.shared.config.max_retries;
        let state = inflight.state.take();
        let generation = inflight.generation;
        let job = inflight.job;
        match done.outcome {
            Ok(Finished::Recorded(reply)) => job.answer(Ok(reply)),
            Ok(Finished::Appended { reply, fresh }) => {
                match state {
                    Some(state) if fresh => self.apply_stored(&done.key, generation, state, &reply),
                    Some(state) => self.discard(&done.key.0, generation, state),
                    None => {}
                }
                job.answer(Ok(reply));
            }
            Err(AppendError::Conflict {
                stream_id,
                expected,
                actual,
            }) => {
                if let Some(state) = state {
                    self.discard(&done.key.0, generation, state);
                }
                if job.options.expected_version.is_some() || job.attempt > max_retries {
                    let attempts = job.attempt;
                    job.answer(Err(CommandError::Conflict {
                        stream_id,
                        expected,
                        actual,
                        attempts,
                    }));
                } else {
                    // Decide again on the state as it now is, before the commands that came
                    // after it.
                    let mut job = job;
                    job.attempt += 1;
                    Counters::bump(&self.shared.counters.retries);
                    inflight.waiting.push_front(job);
                }
            }
            Err(error) => {
                if let Some(state) = state {
                    self.discard(&done.key.0, generation, state);
                }
                let error = self.blame(&job.aggregate_type, error);
                job.answer(Err(error));
            }
        }
        let mut waiting = inflight.waiting;
        while let Some(job) = waiting.pop_front() {
            self.decide(job);
            if let Some(next) = self.inflight.get_mut(&done.key) {
                next.waiting.extend(waiting.drain(..));
                break;
            }
        }
    }

    /// Applies a command's stored events to the state it was decided on, snapshots it when due,
    /// and caches it.
    /// A failed append as the command's error. The store refusing an event the plugin
    /// emitted (its type, its JSON, its size) is the plugin's fault, named as such; only the
    /// stream id comes from the caller.
    fn blame(&self, aggregate_type: &str, error: AppendError) -> CommandError {
        match error {
            AppendError::Invalid(invalid)
                if !matches!(invalid, ValidationError::StreamId { .. }) =>
            {
                let plugin = self.slots.get(aggregate_type).map_or_else(
                    || aggregate_type.to_owned(),
                    |slot| slot.registered.plugin.info().name.clone(),
                );
                CommandError::Plugin(PluginError::Contract {
                    plugin,
                    call: "handle",
                    message: format!("it emitted an event the store refuses: {invalid}"),
                })
            }
            other => CommandError::Append(other),
        }
    }

    pub(super) fn apply_stored(
        &mut self,
        key: &Key,
        generation: u64,
        state: Cached,
        reply: &CommandReply,
    ) {
        let shared = self.shared.clone();
        let Some(slot) = self.slots.get_mut(&key.0) else {
            return;
        };
        if slot.registered.generation != generation {
            return;
        }
        if !slot.make_current(state.held) {
            return;
        }
        let mut events: Vec<Event> = reply
            .events()
            .iter()
            .map(|event| Event {
                position: event.position,
                stream_id: key.1.clone(),
                stream_version: event.stream_version,
                event_id: event.event_id.to_string(),
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                recorded_at: event.recorded_at,
                data: event.data.clone(),
                metadata: event.metadata.clone(),
                subject_id: event.subject_id.clone(),
                personal_data: event.personal_data.clone(),
                shredded: false,
            })
            .collect();
        let stored = events.len() as u64;
        let last = events
            .last()
            .map(|event| (event.position, event.recorded_at));
        // Only the events it handles, upcast: what it sees of them when rebuilt.
        if let Err(error) =
            rebuild::apply_batch(&mut slot.instance, &mut self.upcasting, &mut events)
        {
            tracing::warn!(stream_id = %key.1, %error, "applying stored events failed; the state will be rebuilt");
            // Whatever is current is not the state after these events.
            slot.drop_current();
            return;
        }
        let mut since_snapshot = state.since_snapshot + stored;
        let every = slot.registered.config.snapshot_every;
        if every > 0 && since_snapshot >= every {
            let started = Instant::now();
            match slot.instance.snapshot() {
                Ok(bytes) => {
                    let taken = started.elapsed();
                    let (position, recorded_at) = last.expect("an append stores events");
                    let snapshot = Snapshot {
                        plugin_hash: slot.registered.plugin.info().content_hash.clone(),
                        version: reply.stream_version,
                        position,
                        recorded_at,
                        state: bytes,
                    };
                    let (aggregate_type, id) = key.clone();
                    let writer = shared.clone();
                    shared.tokio.spawn_blocking(move || {
                        let started = Instant::now();
                        match writer.put_snapshot(&aggregate_type, &id, generation, &snapshot) {
                            // The wait for a blocking thread is not the snapshot's cost.
                            Ok(_) => writer
                                .timings
                                .snapshot(&aggregate_type, taken + started.elapsed()),
                            Err(error) => {
                                tracing::warn!(%aggregate_type, %id, %error, "storing a snapshot failed");
                            }
                        }
                    });
                    since_snapshot = 0;
                    Counters::bump(&shared.counters.snapshots);
                }
                Err(error) => {
                    tracing::warn!(stream_id = %key.1, %error, "snapshot failed");
                    return;
                }
            }
        }
        slot.park(&key.1, reply.stream_version, since_snapshot);
    }

    pub(super) fn discard(&mut self, aggregate_type: &str, generation: u64, state: Cached) {
        if let Some(slot) = self.slots.get_mut(aggregate_type)
            && slot.registered.generation == generation
        {
            slot.discard(state);
        }
    }
}

/// The reply for events stored by `appended` (one append: contiguous positions).
fn stored_reply(
    command_id: Uuid,
    stream_id: &str,
    proposed: &[ProposedEvent],
    appended: &Appended,
) -> CommandReply {
    let events = proposed
        .iter()
        .enumerate()
        .map(|(index, event)| EmittedEvent {
            event_id: event.event_id,
            position: appended.first_position + index as u64,
            stream_version: appended.first_version + index as u64,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            data: event.data.clone(),
            metadata: event.metadata.clone(),
            recorded_at: appended.recorded_at,
            subject_id: event.subject_id.clone(),
            personal_data: event.personal_data.clone(),
        })
        .collect();
    CommandReply {
        command_id,
        stream_id: stream_id.to_owned(),
        stream_version: appended.stream_version,
        decision: Decision::Accepted { events },
        replayed: false,
    }
}
