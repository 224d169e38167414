//! The command pipeline: commands in, events out, through aggregate plugins.
//!
//! [`Aggregates::execute`] routes a command to the worker that owns its aggregate id (a hash
//! of the id over a fixed set of worker threads, each with its own plugin instances and
//! cache). The worker takes the state from its cache, or builds it from the latest snapshot
//! plus later events (upcast on read, applied in batches); `handle` decides; the events are
//! appended with the expected version the state was built at. The worker does not wait for
//! the durable append: it goes on with other aggregates while the store's group commit
//! gathers many appends, and only commands for the same aggregate queue behind it. On a
//! conflict the state is rebuilt and the command retried, a bounded number of times.
//!
//! Queries ([`Aggregates::state`], [`Aggregates::history`]) build state on a blocking
//! thread with a fresh instance, without the cache.
//!
//! The aggregate id is the stream id (`account-42`), as the plugins and projections expect.

mod cache;
mod idempotency;
mod rebuild;
mod snapshot;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::upcast::UpcasterChain;
use crate::views::Views;
use eshost_runtime::{AggregatePlugin, PluginError, PluginInfo};
use eshost_store::{AppendError, EventStore, ExpectedVersion, RecordedEvent, StreamRead, Until};

pub use rebuild::{At, StateError};
pub use snapshot::{Snapshot, SnapshotError, Snapshots};

use idempotency::IdempotencyKeys;
use worker::{Job, Message};

/// How the pipeline runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Worker threads; aggregate ids are spread over them by hash.
    pub workers: usize,
    /// The most aggregates each worker keeps in its cache (least recently used go first).
    pub cache_entries: usize,
    /// How often a command is retried after a version conflict before giving up.
    pub max_retries: u32,
    /// Events per `apply` call when rebuilding state.
    pub apply_batch: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            cache_entries: 10_000,
            max_retries: 5,
            apply_batch: 1_000,
        }
    }
}

/// Per aggregate type settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregateConfig {
    /// Snapshot an aggregate once this many events have been applied since its last snapshot
    /// (0: never, except on demand).
    pub snapshot_every: u64,
}

impl AggregateConfig {
    /// `snapshot_every` unless configured.
    pub const DEFAULT_SNAPSHOT_EVERY: u64 = 1_000;
}

impl Default for AggregateConfig {
    fn default() -> Self {
        AggregateConfig {
            snapshot_every: Self::DEFAULT_SNAPSHOT_EVERY,
        }
    }
}

/// What a client sends along with a command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOptions {
    /// The command's id (a fresh one when absent).
    #[serde(default)]
    pub command_id: Option<Uuid>,
    /// Decide only if the stream is at this version (0: does not exist yet). A mismatch is
    /// returned as a conflict, never retried.
    #[serde(default)]
    pub expected_version: Option<u64>,
    /// Ties together everything one request caused (default: the command id).
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// What caused the command (default: the command id).
    #[serde(default)]
    pub causation_id: Option<String>,
    /// Who sent it.
    #[serde(default)]
    pub user: Option<String>,
    /// A repeated key gets the first reply back and writes nothing.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Further metadata keys for the events (the host's own keys win).
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// The answer to a command. A rejection is an answer, not an error of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply {
    /// The command's id.
    pub command_id: Uuid,
    /// The aggregate (stream) id.
    pub stream_id: String,
    /// The stream's version after the command (for a refusal: the version it was decided at).
    pub stream_version: u64,
    /// What the aggregate decided.
    pub decision: Decision,
    /// True when this is the recorded reply to an earlier send of the same idempotency key.
    #[serde(default)]
    pub replayed: bool,
}

/// What an aggregate decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Decision {
    /// The command was accepted and these events were stored (none: accepted as a no-op).
    Accepted {
        /// The events, in stream order.
        events: Vec<EmittedEvent>,
    },
    /// A business rule refused it (HTTP 422).
    Rejected {
        /// The plugin's message.
        reason: String,
    },
    /// The plugin could not understand it (HTTP 400).
    Invalid {
        /// The plugin's message.
        reason: String,
    },
}

/// An event a command stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmittedEvent {
    /// Its id.
    pub event_id: Uuid,
    /// Its position in `$all`.
    pub position: u64,
    /// Its version in the stream.
    pub stream_version: u64,
    /// What happened.
    pub event_type: String,
    /// The shape of `data`.
    pub schema_version: u32,
    /// JSON payload.
    pub data: String,
    /// JSON metadata: correlation/causation/command ids, user, the plugin's content hash.
    pub metadata: String,
    /// Commit time, ms since the epoch.
    pub recorded_at: u64,
    /// The data subject of the event's personal data, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<String>,
    /// The personal data as the plugin emitted it (stored sealed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_data: Option<String>,
}

impl CommandReply {
    /// True when the command was accepted.
    pub fn accepted(&self) -> bool {
        matches!(self.decision, Decision::Accepted { .. })
    }

    /// The stored events (empty unless accepted).
    pub fn events(&self) -> &[EmittedEvent] {
        match &self.decision {
            Decision::Accepted { events } => events,
            _ => &[],
        }
    }

    /// The rejection's or invalidity's message.
    pub fn refusal(&self) -> Option<&str> {
        match &self.decision {
            Decision::Accepted { .. } => None,
            Decision::Rejected { reason } | Decision::Invalid { reason } => Some(reason),
        }
    }

    /// Positions of the first and last stored event.
    pub fn positions(&self) -> Option<(u64, u64)> {
        let events = self.events();
        Some((events.first()?.position, events.last()?.position))
    }
}

/// Why the host could not decide a command. Refusals by the plugin are not here: they are a
/// [`Decision`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No plugin is registered for the type.
    #[error("no aggregate type {aggregate_type:?} is registered")]
    UnknownType {
        /// The type asked for.
        aggregate_type: String,
    },
    /// The stream moved on: an explicit expected version did not match, or retries ran out.
    #[error(
        "conflict on {stream_id:?}: expected {expected}, but the stream is at version {actual} \
         (after {attempts} attempts)"
    )]
    Conflict {
        /// The aggregate id.
        stream_id: String,
        /// What was expected.
        expected: ExpectedVersion,
        /// The stream's version.
        actual: u64,
        /// How many times the command was decided.
        attempts: u32,
    },
    /// The aggregate plugin failed (trap, limit); other aggregates are unaffected.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The aggregate's state could not be built.
    #[error("cannot build the state of {stream_id:?}: {source}")]
    State {
        /// The aggregate id.
        stream_id: String,
        /// Why.
        source: StateError,
    },
    /// The append failed for another reason than a version conflict.
    #[error(transparent)]
    Append(AppendError),
    /// The plugin used a feature this host does not implement yet.
    #[error("{0}")]
    Unsupported(String),
    /// Recording or reading an idempotency key failed.
    #[error("{0}")]
    Idempotency(String),
    /// The pipeline is shutting down.
    #[error("the command pipeline is closed")]
    Closed,
}

/// Why a state or history query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No plugin is registered for the type.
    #[error("no aggregate type {aggregate_type:?} is registered")]
    UnknownType {
        /// The type asked for.
        aggregate_type: String,
    },
    /// The state could not be built.
    #[error(transparent)]
    State(#[from] StateError),
    /// The plugin's state is not JSON.
    #[error("plugin \"{plugin}\" returned a state that is not JSON: {message}")]
    BadState {
        /// The plugin.
        plugin: String,
        /// The parser's message.
        message: String,
    },
    /// Snapshot storage failed (on demand snapshots).
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The type was swapped or purged while the snapshot was built; nothing was stored.
    #[error("aggregate type {0:?} changed while its snapshot was built; try again")]
    Purged(String),
    /// The blocking task died.
    #[error("the query task failed: {0}")]
    Task(String),
}

/// Why the pipeline could not start or a plugin could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// `Aggregates::new` was called outside a tokio runtime.
    #[error("the command pipeline must be started inside a tokio runtime")]
    NoRuntime,
    /// A worker thread could not be spawned.
    #[error("cannot start a command worker: {0}")]
    Spawn(String),
    /// The type is already registered (use `swap` to replace its plugin).
    #[error("aggregate type {0:?} is already registered")]
    Duplicate(String),
    /// `swap` for a type that was never registered.
    #[error("no aggregate type {0:?} is registered")]
    UnknownType(String),
}

/// An aggregate's state as of some point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggregateState {
    /// The aggregate type.
    pub aggregate_type: String,
    /// The aggregate (stream) id.
    pub stream_id: String,
    /// The stream version the state covers (0: no events).
    pub version: u64,
    /// The position of the event at `version` (0: none).
    pub position: u64,
    /// When it was recorded (0: none).
    pub recorded_at: u64,
    /// The plugin's `state()`.
    pub state: serde_json::Value,
    /// The snapshot version the build started from, if any.
    pub from_snapshot: Option<u64>,
}

/// One step of an aggregate's audit history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    /// The event as stored.
    pub event: RecordedEvent,
    /// The state right after it.
    pub state: serde_json::Value,
}

/// Counters of the pipeline since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PipelineStats {
    /// Commands decided (each retry counts again).
    pub decisions: u64,
    /// Decisions whose state came from a worker's cache.
    pub cache_hits: u64,
    /// States built from the store (snapshot + events, or all events).
    pub rebuilds: u64,
    /// Commands decided again after a version conflict.
    pub retries: u64,
    /// Snapshots taken by the interval rule.
    pub snapshots: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) decisions: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) rebuilds: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) snapshots: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A registered aggregate type: its current plugin and settings.
#[derive(Debug)]
pub(crate) struct Registered {
    pub(crate) plugin: AggregatePlugin,
    pub(crate) config: AggregateConfig,
    /// Changes on every swap, so workers notice they hold old code.
    pub(crate) generation: u64,
}

/// What the workers share.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) snapshots: Snapshots,
    pub(crate) keys: IdempotencyKeys,
    pub(crate) upcasters: UpcasterChain,
    pub(crate) registry: RwLock<HashMap<String, Arc<Registered>>>,
    /// Bumped on every registration or swap; workers compare it on every message.
    pub(crate) registry_version: AtomicU64,
    pub(crate) config: EngineConfig,
    pub(crate) tokio: tokio::runtime::Handle,
    pub(crate) counters: Counters,
    /// Held while a snapshot is written and while a purge changes generations, so a snapshot
    /// of a state from before a purge never lands after it.
    pub(crate) snapshot_fence: Mutex<()>,
}

impl Shared {
    /// Stores `snapshot` unless `aggregate_type` changed generation (was swapped or purged)
    /// since the state was built.
    pub(crate) fn put_snapshot(
        &self,
        aggregate_type: &str,
        id: &str,
        generation: u64,
        snapshot: &Snapshot,
    ) -> Result<bool, SnapshotError> {
        let _fence = self
            .snapshot_fence
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.registered(aggregate_type).map(|r| r.generation) != Some(generation) {
            return Ok(false);
        }
        self.snapshots.put(aggregate_type, id, snapshot)?;
        Ok(true)
    }

    pub(crate) fn registered(&self, aggregate_type: &str) -> Option<Arc<Registered>> {
        self.registry
            .read()
            .expect("registry lock")
            .get(aggregate_type)
            .cloned()
    }
}

/// Deletes the snapshots of the aggregates `ids` of any type, without a running pipeline.
pub fn purge_snapshots(views: &Views, ids: &[String]) -> Result<usize, SnapshotError> {
    Snapshots::new(views.clone()).delete_ids(ids)
}

/// The command pipeline. Cheap to clone; the workers stop when the last clone is dropped.
#[derive(Clone)]
pub struct Aggregates {
    engine: Arc<Engine>,
}

struct Engine {
    shared: Arc<Shared>,
    workers: Vec<mpsc::Sender<Message>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        for worker in &self.workers {
            let _ = worker.send(Message::Stop);
        }
        for thread in self.threads.lock().expect("threads lock").drain(..) {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Aggregates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregates")
            .field("config", &self.engine.shared.config)
            .field("types", &self.types())
            .finish()
    }
}

impl Aggregates {
    /// Starts the workers. Call inside a tokio runtime: appends are awaited on it.
    pub fn new(
        store: Arc<dyn EventStore>,
        views: Views,
        upcasters: UpcasterChain,
        config: EngineConfig,
    ) -> Result<Aggregates, EngineError> {
        let tokio = tokio::runtime::Handle::try_current().map_err(|_| EngineError::NoRuntime)?;
        let shared = Arc::new(Shared {
            store,
            snapshots: Snapshots::new(views.clone()),
            keys: IdempotencyKeys::new(views),
            upcasters,
            registry: RwLock::new(HashMap::new()),
            registry_version: AtomicU64::new(0),
            config: EngineConfig {
                workers: config.workers.max(1),
                cache_entries: config.cache_entries.max(1),
                ..config
            },
            tokio,
            counters: Counters::default(),
            snapshot_fence: Mutex::new(()),
        });
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for index in 0..shared.config.workers {
            let (sender, receiver) = mpsc::channel();
            let worker = worker::Worker::new(shared.clone(), sender.clone());
            let thread = std::thread::Builder::new()
                .name(format!("eshost-command-{index}"))
                .spawn(move || worker.run(receiver))
                .map_err(|error| EngineError::Spawn(error.to_string()))?;
            workers.push(sender);
            threads.push(thread);
        }
        Ok(Aggregates {
            engine: Arc::new(Engine {
                shared,
                workers,
                threads: Mutex::new(threads),
            }),
        })
    }

    /// Registers `plugin` for the aggregate type it names itself (`describe().name`).
    pub fn register(
        &self,
        plugin: AggregatePlugin,
        config: AggregateConfig,
    ) -> Result<(), EngineError> {
        let name = plugin.info().name.clone();
        let shared = &self.engine.shared;
        let mut registry = shared.registry.write().expect("registry lock");
        if registry.contains_key(&name) {
            return Err(EngineError::Duplicate(name));
        }
        let generation = shared.registry_version.fetch_add(1, Ordering::SeqCst) + 1;
        registry.insert(
            name,
            Arc::new(Registered {
                plugin,
                config,
                generation,
            }),
        );
        Ok(())
    }

    /// Replaces the plugin of a registered type, atomically (hot swap). Commands already
    /// decided finish on the old code; every later command is decided by the new one. The
    /// workers drop state built by the old code and rebuild it under the new code; snapshots
    /// of the old code are ignored (they carry its hash). Returns the old plugin's identity.
    pub fn swap(
        &self,
        plugin: AggregatePlugin,
        config: Option<AggregateConfig>,
    ) -> Result<PluginInfo, EngineError> {
        let name = plugin.info().name.clone();
        let shared = &self.engine.shared;
        let old = {
            let mut registry = shared.registry.write().expect("registry lock");
            let Some(old) = registry.get(&name).cloned() else {
                return Err(EngineError::UnknownType(name));
            };
            let generation = shared.registry_version.fetch_add(1, Ordering::SeqCst) + 1;
            registry.insert(
                name,
                Arc::new(Registered {
                    plugin,
                    config: config.unwrap_or(old.config),
                    generation,
                }),
            );
            old
        };
        // Wake idle workers so they release the old code's instances now, not on next use.
        for worker in &self.engine.workers {
            let _ = worker.send(Message::Refresh);
        }
        Ok(old.plugin.info().clone())
    }

    /// The registered plugins.
    pub fn types(&self) -> Vec<PluginInfo> {
        let registry = self.engine.shared.registry.read().expect("registry lock");
        let mut types: Vec<_> = registry.values().map(|r| r.plugin.info().clone()).collect();
        types.sort_by(|a, b| a.name.cmp(&b.name));
        types
    }

    /// Decides `command` (JSON) for aggregate `id` of `aggregate_type` and stores its events.
    pub async fn execute(
        &self,
        aggregate_type: &str,
        id: &str,
        command: &str,
        options: CommandOptions,
    ) -> Result<CommandReply, CommandError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            aggregate_type: aggregate_type.to_owned(),
            id: id.to_owned(),
            command_id: options.command_id.unwrap_or_else(Uuid::now_v7),
            payload: command.to_owned(),
            options,
            issued_at: eshost_store::now_ms(),
            attempt: 1,
            reply,
        };
        self.engine.workers[self.worker_for(id)]
            .send(Message::Command(job))
            .map_err(|_| CommandError::Closed)?;
        answer.await.map_err(|_| CommandError::Closed)?
    }

    /// The state of an aggregate as of `at`, built without the cache (snapshots are used when
    /// they fit).
    pub async fn state(
        &self,
        aggregate_type: &str,
        id: &str,
        at: At,
    ) -> Result<AggregateState, QueryError> {
        let this = self.clone();
        let (aggregate_type, id) = (aggregate_type.to_owned(), id.to_owned());
        blocking(move || this.state_blocking(&aggregate_type, &id, at, true)).await
    }

    /// [`state`](Self::state) from a blocking thread; `use_snapshots: false` replays the whole
    /// stream.
    pub fn state_blocking(
        &self,
        aggregate_type: &str,
        id: &str,
        at: At,
        use_snapshots: bool,
    ) -> Result<AggregateState, QueryError> {
        let shared = &self.engine.shared;
        let registered = self.registered(aggregate_type)?;
        let mut instance = registered.plugin.instantiate().map_err(StateError::from)?;
        let mut upcasting = shared.upcasters.instantiate();
        let built = rebuild::build(
            &mut instance,
            &mut upcasting,
            shared.store.as_ref(),
            use_snapshots.then_some(&shared.snapshots),
            aggregate_type,
            id,
            at,
            shared.config.apply_batch,
        )?;
        let json = instance.state().map_err(StateError::from)?;
        Ok(AggregateState {
            aggregate_type: aggregate_type.to_owned(),
            stream_id: id.to_owned(),
            version: built.version,
            position: built.position,
            recorded_at: built.recorded_at,
            state: parse_state(&registered, &json)?,
            from_snapshot: built.snapshot_version,
        })
    }

    /// The audit history of an aggregate: every event of its stream (up to `until`, if
    /// given) with the state right after it.
    pub async fn history(
        &self,
        aggregate_type: &str,
        id: &str,
        until: Option<Until>,
    ) -> Result<Vec<HistoryEntry>, QueryError> {
        let this = self.clone();
        let (aggregate_type, id) = (aggregate_type.to_owned(), id.to_owned());
        blocking(move || this.history_blocking(&aggregate_type, &id, until)).await
    }

    fn history_blocking(
        &self,
        aggregate_type: &str,
        id: &str,
        until: Option<Until>,
    ) -> Result<Vec<HistoryEntry>, QueryError> {
        let shared = &self.engine.shared;
        let registered = self.registered(aggregate_type)?;
        let mut instance = registered.plugin.instantiate().map_err(StateError::from)?;
        let mut upcasting = shared.upcasters.instantiate();
        instance.new(id).map_err(StateError::from)?;
        let mut read = StreamRead::forward();
        read.until = until;
        let mut stored = Vec::new();
        shared
            .store
            .visit_stream(id, &read, &mut |event| {
                stored.push((
                    shared.store.revealed(&event),
                    crate::upcast::plugin_event(&event, &*shared.store),
                ));
                std::ops::ControlFlow::Continue(())
            })
            .map_err(StateError::from)?;
        let mut history = Vec::with_capacity(stored.len());
        for (event, plugin_event) in stored {
            rebuild::apply_batch(&mut instance, &mut upcasting, &mut vec![plugin_event])?;
            let json = instance.state().map_err(StateError::from)?;
            history.push(HistoryEntry {
                event,
                state: parse_state(&registered, &json)?,
            });
        }
        Ok(history)
    }

    /// Snapshots an aggregate now (its latest state), whatever the interval. Returns the
    /// snapshot stored, or `None` for an aggregate without events.
    pub async fn snapshot(
        &self,
        aggregate_type: &str,
        id: &str,
    ) -> Result<Option<Snapshot>, QueryError> {
        let this = self.clone();
        let (aggregate_type, id) = (aggregate_type.to_owned(), id.to_owned());
        blocking(move || this.snapshot_blocking(&aggregate_type, &id)).await
    }

    /// [`snapshot`](Self::snapshot) from a blocking thread.
    pub fn snapshot_blocking(
        &self,
        aggregate_type: &str,
        id: &str,
    ) -> Result<Option<Snapshot>, QueryError> {
        let shared = &self.engine.shared;
        let registered = self.registered(aggregate_type)?;
        let mut instance = registered.plugin.instantiate().map_err(StateError::from)?;
        let mut upcasting = shared.upcasters.instantiate();
        let built = rebuild::build(
            &mut instance,
            &mut upcasting,
            shared.store.as_ref(),
            Some(&shared.snapshots),
            aggregate_type,
            id,
            At::Latest,
            shared.config.apply_batch,
        )?;
        if built.version == 0 {
            return Ok(None);
        }
        let snapshot = Snapshot {
            plugin_hash: registered.plugin.info().content_hash.clone(),
            version: built.version,
            position: built.position,
            recorded_at: built.recorded_at,
            state: instance.snapshot().map_err(StateError::from)?,
        };
        if !shared.put_snapshot(aggregate_type, id, registered.generation, &snapshot)? {
            return Err(QueryError::Purged(aggregate_type.to_owned()));
        }
        Ok(Some(snapshot))
    }

    /// Drops everything derived from the streams `ids` outside the log: their snapshots
    /// (durably) and every cached state of every aggregate type (by moving each type to a
    /// new generation, which also discards states still being computed). Used after a
    /// subject is forgotten, so that no state built from its decrypted personal data
    /// survives; the next load replays the log, where that data now reads as shredded.
    /// Returns how many snapshots were deleted.
    pub fn purge(&self, ids: &[String]) -> Result<usize, SnapshotError> {
        let shared = &self.engine.shared;
        let deleted = {
            let _fence = shared
                .snapshot_fence
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let types: Vec<String> = {
                let mut registry = shared.registry.write().expect("registry lock");
                let generation = shared.registry_version.fetch_add(1, Ordering::SeqCst) + 1;
                for registered in registry.values_mut() {
                    *registered = Arc::new(Registered {
                        plugin: registered.plugin.clone(),
                        config: registered.config,
                        generation,
                    });
                }
                registry.keys().cloned().collect()
            };
            shared.snapshots.delete_all(&types, ids)?
        };
        // Each worker handles this before any later command or query.
        for worker in &self.engine.workers {
            let _ = worker.send(Message::Refresh);
        }
        Ok(deleted)
    }

    /// The pipeline's counters.
    pub fn stats(&self) -> PipelineStats {
        let counters = &self.engine.shared.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        PipelineStats {
            decisions: get(&counters.decisions),
            cache_hits: get(&counters.cache_hits),
            rebuilds: get(&counters.rebuilds),
            retries: get(&counters.retries),
            snapshots: get(&counters.snapshots),
        }
    }

    /// The snapshot table (for inspection and tests).
    pub fn snapshots(&self) -> &Snapshots {
        &self.engine.shared.snapshots
    }

    fn registered(&self, aggregate_type: &str) -> Result<Arc<Registered>, QueryError> {
        self.engine
            .shared
            .registered(aggregate_type)
            .ok_or_else(|| QueryError::UnknownType {
                aggregate_type: aggregate_type.to_owned(),
            })
    }

    fn worker_for(&self, id: &str) -> usize {
        // FNV-1a: stable across runs and platforms, unlike the std hasher's random keys.
        let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        (hash % self.engine.workers.len() as u64) as usize
    }
}

fn parse_state(registered: &Registered, json: &str) -> Result<serde_json::Value, QueryError> {
    serde_json::from_str(json).map_err(|error| QueryError::BadState {
        plugin: registered.plugin.info().name.clone(),
        message: error.to_string(),
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueryError> + Send + 'static,
) -> Result<T, QueryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|error| QueryError::Task(error.to_string()))?
}
