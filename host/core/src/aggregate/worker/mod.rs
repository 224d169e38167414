//! A command worker: one thread owning a share of the aggregate ids, with its own plugin
//! instances and cache.
//!
//! The thread never waits for the disk. Once `handle` has decided a command, its append is
//! handed to the store and the worker goes on with other aggregates, so many appends are in
//! flight at once and the store's group commit batches them. The worker polls the append
//! future itself, with a waker that posts to its own channel: the writer's answer reaches the
//! worker with no runtime task in between (a task per append cost about 40% of throughput).
//! Commands for an aggregate whose append is in flight queue behind it (its state is not
//! known until the append lands), which also orders them.
//!
//! Cached aggregates live inside the worker's one instance per type, parked (see
//! [`Parked`]). Measured with bank-account: an instance per cached aggregate costs ~57 KiB of
//! resident memory (plus its own virtual memory reservation) against ~150 bytes for a parked
//! state, and a command on a parked state (unpark, handle, apply, park) takes ~5 µs against
//! ~8 µs for keeping snapshot bytes instead (restore, handle, apply, snapshot). The cache is
//! bounded by count; the instance's memory limit bounds its bytes (a fault there empties the
//! cache, which is rebuilt on demand). A type configured `instance_per_aggregate` keeps an
//! instance per cached aggregate instead (`Held::Own`): the price of plugins whose hidden
//! per-instance state (std `HashMap` keys, statics) would otherwise differ from a replay's.
//!
//! This file decides; `completion` hands decided events to the store, polls the append, and
//! applies what was stored to the cached state.

mod completion;

use completion::PendingAppend;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use serde_json::{Map, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::cache::Lru;
use super::rebuild::{self, At, StateError};
use super::{
    CommandError, CommandOptions, CommandReply, Counters, Decision, ISOLATED_CACHE_ENTRIES,
    Registered, Shared, idempotency,
};
use crate::upcast::Upcasting;
use eshost_runtime::{AggregateInstance, ApplyError, Command, HandleError, Parked};
use eshost_store::{AppendError, ExpectedVersion};

/// What a worker is asked to do.
pub(crate) enum Message {
    /// Decide a command.
    Command(Job),
    /// An append (or the recording of an idempotent answer) finished.
    Done(Done),
    /// An append this worker polls may be ready.
    Poll(Key),
    /// The registry changed: drop instances of replaced plugins now.
    Refresh,
    /// Exit.
    Stop,
}

/// A command on its way through the pipeline.
pub(crate) struct Job {
    pub(crate) aggregate_type: String,
    pub(crate) id: String,
    pub(crate) command_id: Uuid,
    pub(crate) payload: String,
    pub(crate) options: CommandOptions,
    pub(crate) issued_at: u64,
    /// 1 for the first decision, then one more per retry after a conflict.
    pub(crate) attempt: u32,
    pub(crate) reply: oneshot::Sender<Result<CommandReply, CommandError>>,
}

impl Job {
    fn answer(self, answer: Result<CommandReply, CommandError>) {
        // The client may have gone; the command's effects stand regardless.
        let _ = self.reply.send(answer);
    }
}

/// The end of a command's asynchronous part.
pub(crate) struct Done {
    key: Key,
    outcome: Result<Finished, AppendError>,
}

enum Finished {
    /// The events are stored. `fresh`: this attempt wrote them on top of the state it was
    /// decided on, so they can be applied to it; otherwise (an idempotent replay) the state is
    /// rebuilt on next use.
    Appended { reply: CommandReply, fresh: bool },
    /// A refusal under an idempotency key was recorded.
    Recorded(CommandReply),
}

/// (aggregate type, aggregate id).
type Key = (String, String);

/// Where a cached aggregate's state lives.
enum Held {
    /// Parked in the type's shared instance.
    Parked(Parked),
    /// Current in an instance of its own (`instance_per_aggregate`).
    Own(Box<AggregateInstance>),
}

/// A cached aggregate: its state, parked in the type's instance or in one of its own.
struct Cached {
    held: Held,
    /// The stream version the state covers.
    version: u64,
    /// Events applied since the last snapshot.
    since_snapshot: u64,
}

/// A command whose asynchronous part runs; later commands for the aggregate wait here.
struct InFlight {
    job: Job,
    /// The state the command was decided on (None when it stayed in the cache).
    state: Option<Cached>,
    /// The registry generation of the instance `state` lives in.
    generation: u64,
    waiting: VecDeque<Job>,
    /// The append, when the worker polls it itself.
    pending: Option<PendingAppend>,
}

/// One aggregate type on this worker: its working instance (holding every cached aggregate,
/// unless they have their own) and cache, for one plugin generation.
struct Slot {
    registered: Arc<Registered>,
    instance: AggregateInstance,
    cache: Lru<Cached>,
}

impl Slot {
    fn isolated(&self) -> bool {
        self.registered.config.instance_per_aggregate
    }

    /// Drops a cached state.
    fn discard(&mut self, cached: Cached) {
        match cached.held {
            Held::Parked(parked) => self.instance.discard(parked),
            Held::Own(instance) => drop(instance),
        }
    }

    /// Takes the current aggregate out of the working instance: parked in it, or with the
    /// whole instance (a fresh one takes its place, so no aggregate sees another's traces).
    fn take_current(&mut self) -> Option<Held> {
        if !self.isolated() {
            return self.instance.park().map(Held::Parked);
        }
        self.instance.aggregate_id()?;
        let fresh = self.instance.fresh();
        let own = std::mem::replace(&mut self.instance, fresh);
        Some(Held::Own(Box::new(own)))
    }

    /// Makes a cached aggregate current; false when its state is gone (a fault discarded
    /// the instance it lived in).
    fn make_current(&mut self, held: Held) -> bool {
        match held {
            Held::Parked(parked) => self.instance.unpark(parked).is_ok(),
            Held::Own(instance) if instance.aggregate_id().is_some() => {
                self.instance = *instance;
                true
            }
            Held::Own(_) => false,
        }
    }

    /// Drops the current aggregate, readying the working instance for another one: fresh,
    /// when each aggregate has its own.
    fn drop_current(&mut self) {
        if self.isolated() {
            self.instance = self.instance.fresh();
        } else if let Some(stale) = self.instance.park() {
            self.instance.discard(stale);
        }
    }

    /// Caches the current aggregate, evicting the least recently used if full.
    fn park(&mut self, id: &str, version: u64, since_snapshot: u64) {
        let Some(held) = self.take_current() else {
            return;
        };
        let cached = Cached {
            held,
            version,
            since_snapshot,
        };
        for evicted in self.cache.put(id.to_owned(), cached) {
            self.discard(evicted);
        }
    }
}

pub(crate) struct Worker {
    shared: Arc<Shared>,
    sender: mpsc::Sender<Message>,
    slots: HashMap<String, Slot>,
    inflight: HashMap<Key, InFlight>,
    upcasting: Upcasting,
    registry_seen: u64,
}

impl Worker {
    pub(crate) fn new(shared: Arc<Shared>, sender: mpsc::Sender<Message>) -> Self {
        let upcasting = shared.upcasters.instantiate();
        Worker {
            shared,
            sender,
            slots: HashMap::new(),
            inflight: HashMap::new(),
            upcasting,
            registry_seen: 0,
        }
    }

    pub(crate) fn run(mut self, messages: mpsc::Receiver<Message>) {
        // Appends are polled here; a store whose futures need the runtime finds it.
        let tokio = self.shared.tokio.clone();
        let _runtime = tokio.enter();
        while let Ok(message) = messages.recv() {
            self.refresh();
            match message {
                Message::Command(job) => self.start(job),
                Message::Done(done) => self.finish(done),
                Message::Poll(key) => self.poll_append(&key),
                Message::Refresh => {}
                Message::Stop => break,
            }
        }
    }

    /// Drops the slots of types whose plugin was swapped (or removed) since last look, and
    /// moves to the upcaster chain in force (an upcaster swap moves every type to a new
    /// generation after putting the new chain in force).
    fn refresh(&mut self) {
        let version = self.shared.registry_version.load(Ordering::SeqCst);
        if version == self.registry_seen {
            return;
        }
        self.registry_seen = version;
        self.upcasting.refresh();
        let shared = self.shared.clone();
        self.slots.retain(|name, slot| {
            let current = shared.registered(name);
            let keep = current.is_some_and(|r| r.generation == slot.registered.generation);
            if !keep {
                tracing::info!(aggregate_type = %name, "plugin replaced; cached state of the old code dropped");
            }
            keep
        });
    }

    fn slot(&mut self, aggregate_type: &str) -> Result<&mut Slot, CommandError> {
        if !self.slots.contains_key(aggregate_type) {
            let mut registered = self.shared.registered(aggregate_type).ok_or_else(|| {
                CommandError::UnknownType {
                    aggregate_type: aggregate_type.to_owned(),
                }
            })?;
            if registered.generation > self.registry_seen {
                // Swapped since this message began: catch up (the chain too) before building
                // anything under the new generation.
                self.refresh();
                registered = self.shared.registered(aggregate_type).ok_or_else(|| {
                    CommandError::UnknownType {
                        aggregate_type: aggregate_type.to_owned(),
                    }
                })?;
            }
            let instance = registered.plugin.instantiate()?;
            let mut entries = self.shared.config.cache_entries;
            if registered.config.instance_per_aggregate {
                entries = entries.min(ISOLATED_CACHE_ENTRIES);
            }
            self.slots.insert(
                aggregate_type.to_owned(),
                Slot {
                    registered,
                    instance,
                    cache: Lru::new(entries),
                },
            );
        }
        Ok(self.slots.get_mut(aggregate_type).expect("inserted above"))
    }

    fn start(&mut self, job: Job) {
        let key = (job.aggregate_type.clone(), job.id.clone());
        if let Some(inflight) = self.inflight.get_mut(&key) {
            inflight.waiting.push_back(job);
            return;
        }
        self.decide(job);
    }

    /// Decides `job` against the aggregate's state: answers it, or starts its append.
    fn decide(&mut self, job: Job) {
        if let Some(key) = job.options.idempotency_key.clone() {
            match self.shared.keys.get(&job.aggregate_type, &job.id, &key) {
                Ok(Some(mut first)) => {
                    first.replayed = true;
                    return job.answer(Ok(first));
                }
                Ok(None) => {}
                Err(error) => return job.answer(Err(CommandError::Idempotency(error))),
            }
            // The record is derived and may be gone (the host died before writing it, or
            // views.redb was deleted); the events are not. Deciding again would run the
            // command on a state that already holds its own effect.
            let stored = idempotency::stored_position(
                self.shared.store.as_ref(),
                &job.aggregate_type,
                &job.id,
                &key,
            );
            match stored {
                Ok(Some(position)) => return self.answer_from_log(job, key, position),
                Ok(None) => {}
                Err(error) => {
                    let error =
                        format!("looking up the events of idempotency key {key:?}: {error}");
                    return job.answer(Err(CommandError::Idempotency(error)));
                }
            }
        }
        if let Err(error) = self.slot(&job.aggregate_type) {
            return job.answer(Err(error));
        }
        self.decide_in_slot(job)
    }

    fn decide_in_slot(&mut self, job: Job) {
        let shared = self.shared.clone();
        let Worker {
            slots, upcasting, ..
        } = self;
        let slot = slots.get_mut(&job.aggregate_type).expect("slot exists");
        let state_error = |job: Job, source: StateError| {
            let stream_id = job.id.clone();
            job.answer(Err(CommandError::State { stream_id, source }));
        };
        let mut loaded = match current_state(slot, upcasting, &shared, &job.id) {
            Ok(loaded) => loaded,
            Err(source) => return state_error(job, source),
        };
        let registered = slot.registered.clone();
        let info = registered.plugin.info();
        let metadata = metadata(&job, &info.name, &info.version, &info.content_hash);
        let command = Command {
            payload: job.payload.clone(),
            metadata: metadata.clone(),
            issued_at: job.issued_at,
        };
        // At most twice: a second decision is on a state just built from the store.
        let decision = loop {
            Counters::bump(&shared.counters.decisions);
            if let Some(expected) = job.options.expected_version
                && expected != loaded.version
            {
                // The cache could lag behind appends made outside this pipeline: look again.
                if loaded.cached {
                    loaded = match rebuild_state(slot, upcasting, &shared, &job.id) {
                        Ok(loaded) => loaded,
                        Err(source) => return state_error(job, source),
                    };
                }
                if expected != loaded.version {
                    slot.park(&job.id, loaded.version, loaded.since_snapshot);
                    let error = CommandError::Conflict {
                        stream_id: job.id.clone(),
                        expected: ExpectedVersion::Exact(expected),
                        actual: loaded.version,
                        attempts: 0,
                    };
                    return job.answer(Err(error));
                }
            }
            let decision = match slot.instance.handle(&command) {
                Ok(events) if events.is_empty() => Decision::Accepted { events: Vec::new() },
                Ok(events) => {
                    let state = slot.take_current().map(|held| Cached {
                        held,
                        version: loaded.version,
                        since_snapshot: loaded.since_snapshot,
                    });
                    let generation = slot.registered.generation;
                    return self.append(job, events, &metadata, loaded.version, state, generation);
                }
                Err(HandleError::Rejected(reason)) => Decision::Rejected { reason },
                Err(HandleError::Invalid(reason)) => Decision::Invalid { reason },
                Err(HandleError::Plugin(error)) => {
                    // The instance is gone and every aggregate parked in it: they are rebuilt
                    // on next use. Other types and workers are untouched.
                    for stale in slot.cache.drain() {
                        drop(stale);
                    }
                    return job.answer(Err(CommandError::Plugin(error)));
                }
            };
            // An acceptance is checked by its append's expected version; a refusal (or a
            // no-op) writes nothing, so nothing checks the state it was decided on. A cached
            // state lags behind appends made outside this pipeline (raw appends): confirm it
            // against the stream, and decide again on the state as it is if it moved.
            if !loaded.cached {
                break decision;
            }
            match shared.store.stream_info(&job.id) {
                Ok(info) if info.map_or(0, |info| info.version) == loaded.version => {
                    break decision;
                }
                Ok(_) => {
                    loaded = match rebuild_state(slot, upcasting, &shared, &job.id) {
                        Ok(loaded) => loaded,
                        Err(source) => return state_error(job, source),
                    };
                }
                Err(error) => {
                    slot.park(&job.id, loaded.version, loaded.since_snapshot);
                    return state_error(job, StateError::Read(error));
                }
            }
        };
        slot.park(&job.id, loaded.version, loaded.since_snapshot);
        let reply = CommandReply {
            command_id: job.command_id,
            stream_id: job.id.clone(),
            stream_version: loaded.version,
            decision,
            replayed: false,
        };
        match job.options.idempotency_key.clone() {
            None => job.answer(Ok(reply)),
            Some(key) => self.record(job, key, reply),
        }
    }

    /// Holds `job` in flight while a blocking task finishes it; later commands for the
    /// aggregate wait behind it. Returns its key.
    fn hold(&mut self, job: Job) -> Key {
        let task_key = (job.aggregate_type.clone(), job.id.clone());
        self.inflight.insert(
            task_key.clone(),
            InFlight {
                job,
                state: None,
                generation: 0,
                waiting: VecDeque::new(),
                pending: None,
            },
        );
        task_key
    }

    /// Records a reply that stored no event (a refusal) under its idempotency key, in the log
    /// and then in `views.redb`, before answering; later commands for the aggregate wait, so a
    /// resend of the key sees the record. A key decided first elsewhere (another node) answers
    /// with that first reply.
    fn record(&mut self, job: Job, key: String, reply: CommandReply) {
        let task_key = self.hold(job);
        let shared = self.shared.clone();
        let sender = self.sender.clone();
        let (aggregate_type, id) = task_key.clone();
        self.shared.tokio.spawn_blocking(move || {
            let store = shared.store.as_ref();
            let outcome = idempotency::record_in_log(store, &aggregate_type, &id, &key, &reply)
                .map_err(AppendError::Storage)
                .map(|first| {
                    if let Err(error) = shared.keys.put(&aggregate_type, &id, &key, &first) {
                        tracing::warn!(%error, "recording an idempotency key failed");
                    }
                    Finished::Recorded(first)
                });
            let _ = sender.send(Message::Done(Done {
                key: task_key,
                outcome,
            }));
        });
    }

    /// Answers a keyed command whose events are stored from `position` on but whose reply is
    /// not recorded: with the first reply, rebuilt from those events, and records it.
    fn answer_from_log(&mut self, job: Job, key: String, position: u64) {
        let command_id = job.command_id;
        let task_key = self.hold(job);
        let shared = self.shared.clone();
        let sender = self.sender.clone();
        let (aggregate_type, id) = task_key.clone();
        self.shared.tokio.spawn_blocking(move || {
            let store = shared.store.as_ref();
            let outcome =
                idempotency::recover(store, &aggregate_type, &id, &key, position, command_id)
                    .map_err(|error| AppendError::Storage(error.to_string()))
                    .map(|first| {
                        if let Err(error) = shared.keys.put(&aggregate_type, &id, &key, &first) {
                            tracing::warn!(%error, "recording an idempotency key failed");
                        }
                        Finished::Recorded(first)
                    });
            let _ = sender.send(Message::Done(Done {
                key: task_key,
                outcome,
            }));
        });
    }
}

/// The aggregate state current in a slot's instance.
#[derive(Debug, Clone, Copy)]
struct Loaded {
    /// The stream version it covers.
    version: u64,
    /// Events applied since its last snapshot.
    since_snapshot: u64,
    /// Taken from the cache rather than built from the store just now: it may lag behind
    /// appends made outside this pipeline.
    cached: bool,
}

/// Makes aggregate `id` current in the slot's instance: from the cache, else rebuilt.
fn current_state(
    slot: &mut Slot,
    upcasting: &mut Upcasting,
    shared: &Shared,
    id: &str,
) -> Result<Loaded, StateError> {
    if let Some(cached) = slot.cache.take(id) {
        let (version, since_snapshot) = (cached.version, cached.since_snapshot);
        if slot.make_current(cached.held) {
            Counters::bump(&shared.counters.cache_hits);
            return Ok(Loaded {
                version,
                since_snapshot,
                cached: true,
            });
        }
    }
    rebuild_state(slot, upcasting, shared, id)
}

fn rebuild_state(
    slot: &mut Slot,
    upcasting: &mut Upcasting,
    shared: &Shared,
    id: &str,
) -> Result<Loaded, StateError> {
    slot.drop_current();
    Counters::bump(&shared.counters.rebuilds);
    let started = Instant::now();
    let mut build = |slot: &mut Slot| {
        rebuild::build(
            &mut slot.instance,
            upcasting,
            shared.store.as_ref(),
            Some(&shared.snapshots),
            &slot.registered.plugin.info().name,
            id,
            At::Latest,
            shared.config.apply_batch,
        )
    };
    let built = match build(slot) {
        // The instance holds the whole cache, so its memory limit is the cache's byte bound:
        // a fault (typically that limit) wiped the cache; the aggregate may fit now.
        Err(StateError::Plugin(_) | StateError::Apply(ApplyError::Plugin(_)))
            if slot.cache.len() > 0 =>
        {
            tracing::warn!(stream_id = %id, "plugin fault while loading; cache dropped, loading again");
            drop(slot.cache.drain());
            build(slot)?
        }
        other => other?,
    };
    let aggregate_type = &slot.registered.plugin.info().name;
    shared.timings.replay(aggregate_type, started.elapsed());
    Ok(Loaded {
        version: built.version,
        since_snapshot: built.version - built.snapshot_version.unwrap_or(0),
        cached: false,
    })
}

/// The metadata of a command and of the events it emits.
fn metadata(job: &Job, plugin: &str, plugin_version: &str, plugin_hash: &str) -> String {
    let options = &job.options;
    let mut map: Map<String, Value> = options.metadata.clone();
    let command_id = job.command_id.to_string();
    map.insert("command_id".into(), Value::from(command_id.clone()));
    map.insert(
        "correlation_id".into(),
        Value::from(
            options
                .correlation_id
                .clone()
                .unwrap_or_else(|| command_id.clone()),
        ),
    );
    map.insert(
        "causation_id".into(),
        Value::from(options.causation_id.clone().unwrap_or(command_id)),
    );
    match &options.user {
        Some(user) => map.insert("user".into(), Value::from(user.clone())),
        None => map.remove("user"),
    };
    map.insert("aggregate_type".into(), Value::from(plugin));
    map.insert("plugin_version".into(), Value::from(plugin_version));
    map.insert("plugin_hash".into(), Value::from(plugin_hash));
    Value::Object(map).to_string()
}
