//! The command pipeline: commands in, events out, through aggregate plugins.
//!
//! [`Aggregates::execute`] routes a command to the worker that owns its aggregate id (a hash
//! of the id over a fixed set of worker threads, each with its own plugin instances and
//! cache). The worker takes the state from its cache, or builds it from the latest snapshot
//! plus later events (upcast on read, applied in batches); `handle` decides; the events are
//! appended with the expected version the state was built at. The worker does not wait for
//! the durable append: it goes on with other aggregates while the store's group commit
//! gathers many appends, and only commands for the same aggregate queue behind it. On a
//! conflict the state is rebuilt and the command retried, a bounded number of times. A
//! refusal writes nothing, so no append checks its state: one decided on a cached state is
//! confirmed against the stream's version, and decided again on the rebuilt state if the
//! stream moved (events appended outside the pipeline).
//!
//! Queries ([`Aggregates::state`], [`Aggregates::history`]) build state on a blocking
//! thread with a fresh instance, without the cache.
//!
//! An aggregate's stream is its id (`account-42`), or its id behind its type's `stream_prefix`
//! (`account-` + `42`). The public calls map ids to streams ([`Aggregates::stream_of`]); past
//! them, everything (workers, caches, snapshots, the plugin's `load`) is keyed by the stream.

mod cache;
mod idempotency;
pub(crate) mod rebuild;
mod snapshot;
mod timings;
mod types;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::upcast::UpcasterChain;
use crate::views::Views;
use eshost_runtime::{AggregatePlugin, PluginInfo};
use eshost_store::{EventStore, StreamRead, Until};

pub(crate) use idempotency::TEST_FAULT_VAR;
pub use idempotency::{REPLIES_STREAM, REPLY_EVENT};
pub use rebuild::{At, StateError};
pub use snapshot::{Snapshot, SnapshotError, Snapshots};
pub use timings::AggregateTimings;
pub use types::{
    AggregateConfig, AggregateState, CommandError, CommandOptions, CommandReply, Decision,
    EmittedEvent, EngineConfig, EngineError, HistoryEntry, HistoryPage, ISOLATED_CACHE_ENTRIES,
    PipelineStats, QueryError,
};

/// Events read from the store at a time while building a history page.
const HISTORY_CHUNK: usize = 64;

use idempotency::IdempotencyKeys;
use worker::{Job, Message};

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

impl Registered {
    /// The stream of aggregate `id` of this type.
    pub(crate) fn stream_of(&self, id: &str) -> String {
        let mut stream = String::with_capacity(self.config.stream_prefix.len() + id.len());
        stream.push_str(&self.config.stream_prefix);
        stream.push_str(id);
        stream
    }
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
    pub(crate) timings: AggregateTimings,
    /// Held while a snapshot is written and while a purge changes generations, so a snapshot
    /// of a state from before a purge never lands after it.
    pub(crate) snapshot_fence: Mutex<()>,
    /// The test hook of `idempotency::abort_after_append_requested`.
    pub(crate) abort_after_keyed_append: bool,
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
            timings: AggregateTimings::default(),
            snapshot_fence: Mutex::new(()),
            abort_after_keyed_append: idempotency::abort_after_append_requested(),
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
                    config: config.unwrap_or_else(|| old.config.clone()),
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

    /// Puts `chain`'s upcasters in force (hot swap of an upcaster) and drops every state
    /// built through the old ones: each type moves to a new generation, which discards cached
    /// states and those being computed, and every snapshot is deleted (durably). Commands
    /// already decided finish on the old chain; every later state is built through the new
    /// one. Returns how many snapshots were deleted.
    pub fn swap_upcasters(&self, chain: &UpcasterChain) -> Result<usize, SnapshotError> {
        let shared = &self.engine.shared;
        let deleted = {
            let _fence = shared
                .snapshot_fence
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // The chain first: a worker that sees the new generation sees the new chain.
            shared.upcasters.adopt(chain);
            self.next_generation();
            shared.snapshots.clear()?
        };
        for worker in &self.engine.workers {
            let _ = worker.send(Message::Refresh);
        }
        Ok(deleted)
    }

    /// Moves every registered type to a new generation. Call under the snapshot fence.
    fn next_generation(&self) -> Vec<String> {
        let shared = &self.engine.shared;
        let mut registry = shared.registry.write().expect("registry lock");
        let generation = shared.registry_version.fetch_add(1, Ordering::SeqCst) + 1;
        for registered in registry.values_mut() {
            *registered = Arc::new(Registered {
                plugin: registered.plugin.clone(),
                config: registered.config.clone(),
                generation,
            });
        }
        registry.keys().cloned().collect()
    }

    /// The plugin registered for `aggregate_type`.
    pub fn plugin(&self, aggregate_type: &str) -> Option<AggregatePlugin> {
        self.engine
            .shared
            .registered(aggregate_type)
            .map(|r| r.plugin.clone())
    }

    /// The registered plugins.
    pub fn types(&self) -> Vec<PluginInfo> {
        let registry = self.engine.shared.registry.read().expect("registry lock");
        let mut types: Vec<_> = registry.values().map(|r| r.plugin.info().clone()).collect();
        types.sort_by(|a, b| a.name.cmp(&b.name));
        types
    }

    /// The stream that holds aggregate `id` of `aggregate_type`: the id behind the type's
    /// `stream_prefix` (the id itself without a prefix, or for a type not registered).
    pub fn stream_of(&self, aggregate_type: &str, id: &str) -> String {
        match self.engine.shared.registered(aggregate_type) {
            Some(registered) => registered.stream_of(id),
            None => id.to_owned(),
        }
    }

    /// The id of the aggregate of `aggregate_type` that `stream_id` holds, if the stream's name
    /// fits the type (starts with its `stream_prefix`).
    pub fn aggregate_id_of(&self, aggregate_type: &str, stream_id: &str) -> Option<String> {
        let registered = self.engine.shared.registered(aggregate_type)?;
        stream_id
            .strip_prefix(registered.config.stream_prefix.as_str())
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
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
        let stream = self.stream_of(aggregate_type, id);
        let worker = self.worker_for(&stream);
        let job = Job {
            aggregate_type: aggregate_type.to_owned(),
            id: stream,
            command_id: options.command_id.unwrap_or_else(Uuid::now_v7),
            payload: command.to_owned(),
            options,
            issued_at: eshost_store::now_ms(),
            attempt: 1,
            reply,
        };
        self.engine.workers[worker]
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
        let stream = registered.stream_of(id);
        let mut instance = registered.plugin.instantiate().map_err(StateError::from)?;
        let mut upcasting = shared.upcasters.instantiate();
        let built = rebuild::build(
            &mut instance,
            &mut upcasting,
            shared.store.as_ref(),
            use_snapshots.then_some(&shared.snapshots),
            aggregate_type,
            &stream,
            at,
            shared.config.apply_batch,
        )?;
        let json = instance.state().map_err(StateError::from)?;
        Ok(AggregateState {
            aggregate_type: aggregate_type.to_owned(),
            stream_id: stream,
            version: built.version,
            position: built.position,
            recorded_at: built.recorded_at,
            state: parse_state(&registered, &json)?,
            from_snapshot: built.snapshot_version,
        })
    }

    /// A page of the audit history of an aggregate: the events of its stream from
    /// `page.from_version` on (up to `until`, if given), each with the state right after it.
    /// The page ends after `page.limit` entries or once the entries' events and states hold
    /// `page.max_bytes` (after at least one entry); the caller asks again from the version
    /// after the last entry.
    pub async fn history(
        &self,
        aggregate_type: &str,
        id: &str,
        until: Option<Until>,
        page: HistoryPage,
    ) -> Result<Vec<HistoryEntry>, QueryError> {
        let this = self.clone();
        let (aggregate_type, id) = (aggregate_type.to_owned(), id.to_owned());
        blocking(move || this.history_blocking(&aggregate_type, &id, until, page)).await
    }

    fn history_blocking(
        &self,
        aggregate_type: &str,
        id: &str,
        until: Option<Until>,
        page: HistoryPage,
    ) -> Result<Vec<HistoryEntry>, QueryError> {
        let shared = &self.engine.shared;
        let registered = self.registered(aggregate_type)?;
        let stream = registered.stream_of(id);
        let id = stream.as_str();
        let mut instance = registered.plugin.instantiate().map_err(StateError::from)?;
        let mut upcasting = shared.upcasters.instantiate();
        let from_version = page.from_version.max(1);
        // The state before the page: replayed, not kept.
        let built = rebuild::build(
            &mut instance,
            &mut upcasting,
            shared.store.as_ref(),
            None,
            aggregate_type,
            id,
            At::Version(from_version - 1),
            shared.config.apply_batch,
        )?;
        let mut history = Vec::new();
        let mut bytes = 0usize;
        let mut next_version = built.version + 1;
        while history.len() < page.limit {
            let mut read = StreamRead::forward();
            read.from_version = next_version;
            read.until = until;
            read.limit = (page.limit - history.len()).min(HISTORY_CHUNK);
            let chunk = shared
                .store
                .read_stream(id, &read)
                .map_err(StateError::from)?;
            let Some(last) = chunk.last() else { break };
            next_version = last.stream_version + 1;
            let complete = chunk.len() < read.limit;
            for stored in chunk {
                if let Some(foreign) = rebuild::foreign_stream(&stored.as_ref(), aggregate_type) {
                    return Err(foreign.into());
                }
                let plugin_event = crate::upcast::plugin_event(&stored.as_ref(), &*shared.store);
                rebuild::apply_batch(&mut instance, &mut upcasting, &mut vec![plugin_event])?;
                let json = instance.state().map_err(StateError::from)?;
                let size = stored.data.len()
                    + stored.metadata.len()
                    + stored.sealed.as_ref().map_or(0, Vec::len)
                    + json.len();
                if !history.is_empty() && bytes + size > page.max_bytes {
                    return Ok(history);
                }
                bytes += size;
                history.push(HistoryEntry {
                    event: shared.store.revealed(&stored.as_ref()),
                    state: parse_state(&registered, &json)?,
                });
            }
            if complete {
                break;
            }
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
        let stream = registered.stream_of(id);
        let id = stream.as_str();
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
        let started = std::time::Instant::now();
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
        shared.timings.snapshot(aggregate_type, started.elapsed());
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
            let types = self.next_generation();
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

    /// Replay and snapshot durations, for `/metrics`.
    pub fn timings(&self) -> &AggregateTimings {
        &self.engine.shared.timings
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
