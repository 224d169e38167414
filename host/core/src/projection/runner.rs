//! One projection's runner: a thread that feeds `$all` through the plugin in batches and
//! commits each batch's writes with the checkpoint in one transaction; builds a shadow
//! generation beside the active one and switches to it; retries, stops at or parks a failing
//! event.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase};
use tokio::sync::{mpsc, watch};

use super::read_model::{BatchModel, Snapshot};
use super::schema::{self, DeadLetter, Generation, Meta};
use super::{
    GenerationStatus, ProjectionConfig, ProjectionHostError, ProjectionState, ProjectionStatus,
    QueryPool, Shared, SwapMode, SwapOutcome,
};
use crate::upcast::{Relevance, UpcasterChain, Upcasting};
use eshost_runtime::{Event, ProjectionError, ProjectionInstance, ProjectionPlugin, Runtime};
use eshost_store::{AllRead, Direction, EventRef, EventStore, Until, now_ms};

/// What callers ask of a runner.
pub(crate) enum Control {
    Pause,
    Resume,
    Rebuild {
        ack: Sender<Result<u64, ProjectionHostError>>,
    },
    AbortRebuild,
    /// Rebuild from position 0 because derived rows may hold personal data that is now
    /// shredded: restarts a rebuild already running (with its plugin), as it may have read
    /// that data too.
    Purge {
        ack: Sender<Result<u64, ProjectionHostError>>,
    },
    Swap {
        plugin: ProjectionPlugin,
        bytes: Vec<u8>,
        mode: SwapMode,
        ack: Sender<Result<SwapOutcome, ProjectionHostError>>,
    },
    Stop,
}

/// How long non-durable commits may pile up before one waits for the disk. A crash loses at
/// most this much work, never consistency: data and checkpoint roll back together.
const DURABLE_EVERY: Duration = Duration::from_millis(500);

/// One generation being fed: the active one or the shadow.
struct Lane {
    generation: Generation,
    namespace: String,
    plugin: ProjectionPlugin,
    /// Which events the plugin sees, through the host's upcasters.
    relevance: Arc<Relevance>,
    instance: Option<ProjectionInstance<BatchModel>>,
    checkpoint: u64,
    /// After a failed batch: handle one event per call up to here, to find the culprit.
    careful_until: u64,
    /// After a failure at a known position: the next batch stops before it.
    bound: Option<u64>,
    /// Failed tries of the event at `checkpoint + 1`.
    attempts: u32,
    retry_at: Option<Instant>,
    /// Stopped at a failing event: the error. Cleared by resume or a swap.
    failed: Option<String>,
    /// The next batch, being read by the reader thread while the plugin handles this one.
    ahead: Option<(ReadSpec, std::sync::mpsc::Receiver<ReadBatch>)>,
}

impl Lane {
    fn new(
        name: &str,
        generation: Generation,
        plugin: ProjectionPlugin,
        upcasters: &UpcasterChain,
        checkpoint: u64,
    ) -> Lane {
        Lane {
            namespace: schema::namespace(name, generation.number),
            generation,
            relevance: upcasters.relevance(&plugin.info().handles),
            plugin,
            instance: None,
            checkpoint,
            careful_until: 0,
            bound: None,
            attempts: 0,
            retry_at: None,
            failed: None,
            ahead: None,
        }
    }

    fn runnable(&self, now: Instant) -> bool {
        self.failed.is_none() && self.retry_at.is_none_or(|at| now >= at)
    }

    fn clear_failure(&mut self) {
        self.failed = None;
        self.attempts = 0;
        self.retry_at = None;
    }

    fn status(&self, head: u64) -> GenerationStatus {
        GenerationStatus {
            generation: self.generation.number,
            version: self.plugin.info().version.clone(),
            hash: self.plugin.info().content_hash.clone(),
            position: self.checkpoint,
            lag: head.saturating_sub(self.checkpoint),
            failed: self.failed.clone(),
        }
    }
}

pub(crate) struct Runner {
    config: ProjectionConfig,
    store: Arc<dyn EventStore>,
    db: Arc<Database>,
    shared: Arc<Shared>,
    control: mpsc::UnboundedReceiver<Control>,
    head: watch::Receiver<u64>,
    upcasting: Upcasting,
    active: Lane,
    shadow: Option<Lane>,
    paused: bool,
    last_error: Option<String>,
    last_durable: Instant,
    /// A commit since `last_durable` is not on disk yet.
    unsynced: bool,
    /// (when, positions processed so far), for the rate.
    samples: VecDeque<(Instant, u64)>,
    processed: u64,
    /// Jobs for the reader thread (started with the first read ahead; `None` before, or if it
    /// could not start).
    reader: Option<Sender<ReadJob>>,
    /// A handled batch, whose strings the next read reuses.
    spare: Vec<Event>,
}

fn views_error(name: &str) -> impl Fn(redb::Error) -> ProjectionHostError + '_ {
    move |e| ProjectionHostError::Views {
        name: name.to_owned(),
        message: e.to_string(),
    }
}

fn redb_error(e: impl Into<redb::Error>) -> redb::Error {
    e.into()
}

impl Runner {
    /// Opens (or creates) the projection's record and prepares its lanes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        config: ProjectionConfig,
        store: Arc<dyn EventStore>,
        db: Arc<Database>,
        runtime: Runtime,
        plugin: ProjectionPlugin,
        bytes: Vec<u8>,
        upcasters: UpcasterChain,
        control: mpsc::UnboundedReceiver<Control>,
    ) -> Result<(Runner, Arc<Shared>), ProjectionHostError> {
        let name = config.name.clone();
        let err = views_error(&name);
        let hash = plugin.info().content_hash.clone();
        let meta = schema::read_meta(&db, &name).map_err(&err)?;
        // The code of a recorded generation, from views.redb (or the configured file).
        let code_of =
            |generation: &Generation| -> Result<Option<ProjectionPlugin>, ProjectionHostError> {
                if generation.hash == hash {
                    return Ok(Some(plugin.clone()));
                }
                match schema::code(&db, &generation.hash).map_err(&err)? {
                    Some(bytes) => {
                        let label = format!("{name} (recorded version {})", &generation.hash[..12]);
                        match runtime.load_bytes(
                            &bytes,
                            &label,
                            eshost_runtime::PluginKind::Projection,
                        )? {
                            eshost_runtime::LoadedPlugin::Projection(p) => Ok(Some(p)),
                            _ => unreachable!("load_bytes checks the kind"),
                        }
                    }
                    None => Ok(None),
                }
            };
        let mut new_shadow = false;
        let (meta, active_plugin, shadow_plugin) = match meta {
            Some(meta) => match code_of(&meta.active)? {
                Some(active_plugin) => {
                    let shadow_plugin = match &meta.shadow {
                        Some(shadow) => code_of(shadow)?,
                        None => None,
                    };
                    let configured_is_live = meta.active.hash == hash
                        || meta.shadow.as_ref().is_some_and(|s| s.hash == hash);
                    new_shadow = !configured_is_live;
                    (meta, active_plugin, shadow_plugin)
                }
                // The code of the active generation is lost: start over with the configured one.
                None => (
                    Self::create(&db, &name, &hash, &bytes, Some(&meta)).map_err(&err)?,
                    plugin.clone(),
                    None,
                ),
            },
            None => (
                Self::create(&db, &name, &hash, &bytes, None).map_err(&err)?,
                plugin.clone(),
                None,
            ),
        };
        let active_checkpoint =
            schema::checkpoint(&db, &schema::namespace(&name, meta.active.number)).map_err(&err)?;
        let active = Lane::new(
            &name,
            meta.active.clone(),
            active_plugin.clone(),
            &upcasters,
            active_checkpoint,
        );
        let mut plugins = std::collections::HashMap::new();
        plugins.insert(meta.active.number, QueryPool::new(active_plugin));
        let shadow = match (&meta.shadow, shadow_plugin) {
            (Some(generation), Some(shadow_plugin)) => {
                let checkpoint =
                    schema::checkpoint(&db, &schema::namespace(&name, generation.number))
                        .map_err(&err)?;
                plugins.insert(generation.number, QueryPool::new(shadow_plugin.clone()));
                Some(Lane::new(
                    &name,
                    generation.clone(),
                    shadow_plugin,
                    &upcasters,
                    checkpoint,
                ))
            }
            _ => None,
        };
        let head = store.watch_head();
        let status = ProjectionStatus {
            name: name.clone(),
            state: ProjectionState::Running,
            position: active.checkpoint,
            head: store.head(),
            lag: store.head().saturating_sub(active.checkpoint),
            events_per_sec: 0.0,
            last_error: None,
            active: active.status(store.head()),
            rebuild: shadow.as_ref().map(|s| s.status(store.head())),
            dead_letters: 0,
        };
        let shared = Arc::new(Shared {
            name: name.clone(),
            status: Mutex::new(status),
            plugins: Mutex::new(plugins),
        });
        let mut runner = Runner {
            config,
            store,
            db,
            shared: shared.clone(),
            control,
            head,
            upcasting: upcasters.instantiate(),
            active,
            shadow,
            paused: false,
            last_error: None,
            last_durable: Instant::now(),
            unsynced: false,
            samples: VecDeque::new(),
            processed: 0,
            reader: None,
            spare: Vec::new(),
        };
        if new_shadow {
            runner.start_shadow(plugin, Some(&bytes))?;
        }
        runner.publish(runner.store.head());
        Ok((runner, shared))
    }

    /// Records a new projection (or restarts one whose code is lost) at generation 1 (or the
    /// next number), empty, at checkpoint 0.
    fn create(
        db: &Database,
        name: &str,
        hash: &str,
        bytes: &[u8],
        old: Option<&Meta>,
    ) -> Result<Meta, redb::Error> {
        let number = old.map_or(0, |m| m.last_number) + 1;
        let meta = Meta {
            active: Generation {
                number,
                hash: hash.to_owned(),
            },
            shadow: None,
            last_number: number,
        };
        let txn = db.begin_write().map_err(redb_error)?;
        if let Some(old) = old {
            schema::drop_namespace(&txn, &schema::namespace(name, old.active.number))?;
            if let Some(shadow) = &old.shadow {
                schema::drop_namespace(&txn, &schema::namespace(name, shadow.number))?;
            }
        }
        txn.open_table(schema::CODE)?.insert(hash, bytes)?;
        schema::create_namespace(&txn, &schema::namespace(name, number))?;
        schema::write_meta(&txn, name, &meta)?;
        txn.commit().map_err(redb_error)?;
        Ok(meta)
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    /// Runs until stopped, then makes the last commits durable: a clean stop leaves the read
    /// model at the checkpoint it reached, not at the last periodic sync.
    pub(crate) fn run(mut self) {
        self.follow();
        self.sync();
    }

    /// The loop: apply control messages, feed the lanes, sleep on the head watch. Returns when
    /// asked to stop (after the batch in hand) or when the host is gone.
    fn follow(&mut self) {
        let waiter = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(projection = %self.name(), "cannot start the runner: {error}");
                return;
            }
        };
        let mut head_open = true;
        loop {
            while let Ok(control) = self.control.try_recv() {
                if !self.apply(control) {
                    return;
                }
            }
            let head = *self.head.borrow_and_update();
            let worked = !self.paused && self.work(head);
            self.publish(head);
            if worked {
                continue;
            }
            // Nothing to do until the log grows, a caller asks something, or a retry is due.
            let retry_at = [Some(&self.active), self.shadow.as_ref()]
                .into_iter()
                .flatten()
                .filter(|lane| lane.failed.is_none())
                .filter_map(|lane| lane.retry_at)
                .min()
                .filter(|_| !self.paused);
            let control = waiter.block_on(async {
                let sleep = async {
                    match retry_at {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                };
                let head_changed = async {
                    if !head_open || self.head.changed().await.is_err() {
                        head_open = false;
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    control = self.control.recv() => Some(control),
                    () = head_changed => None,
                    () = sleep => None,
                }
            });
            let keep_going = match control {
                Some(Some(control)) => self.apply(control),
                // Every sender is gone: the host was dropped.
                Some(None) => false,
                None => true,
            };
            if !keep_going {
                return;
            }
        }
    }

    /// Applies one control message; false to stop.
    fn apply(&mut self, control: Control) -> bool {
        match control {
            Control::Stop => return false,
            Control::Pause => self.paused = true,
            Control::Resume => {
                self.paused = false;
                self.active.clear_failure();
                if let Some(shadow) = &mut self.shadow {
                    shadow.clear_failure();
                }
            }
            Control::Rebuild { ack } => {
                let plugin = self.active.plugin.clone();
                let result = self.start_shadow(plugin, None);
                self.answer(ack, result);
            }
            Control::Purge { ack } => {
                let plugin = match &self.shadow {
                    Some(shadow) => shadow.plugin.clone(),
                    None => self.active.plugin.clone(),
                };
                let result = self.start_shadow(plugin, None);
                self.answer(ack, result);
            }
            Control::AbortRebuild => {
                if let Err(error) = self.drop_shadow() {
                    self.last_error = Some(error.to_string());
                }
            }
            Control::Swap {
                plugin,
                bytes,
                mode,
                ack,
            } => {
                let result = self.swap(plugin, bytes, mode);
                if let Err(error) = &result {
                    self.last_error = Some(format!("swap failed: {error}"));
                }
                self.answer(ack, result);
            }
        }
        true
    }

    /// Answers a caller once the status shows what was done: whoever gets the answer and then
    /// asks for the status sees the rebuild it started.
    fn answer<T>(&mut self, ack: Sender<T>, result: T) {
        let head = *self.head.borrow();
        self.publish(head);
        let _ = ack.send(result);
    }

    fn swap(
        &mut self,
        plugin: ProjectionPlugin,
        bytes: Vec<u8>,
        mode: SwapMode,
    ) -> Result<SwapOutcome, ProjectionHostError> {
        let hash = plugin.info().content_hash.clone();
        match mode {
            SwapMode::Rebuild => {
                let rebuilding = self
                    .shadow
                    .as_ref()
                    .is_some_and(|s| s.generation.hash == hash);
                if rebuilding || (self.active.generation.hash == hash && self.shadow.is_none()) {
                    return Ok(SwapOutcome::Unchanged);
                }
                let generation = self.start_shadow(plugin, Some(&bytes))?;
                Ok(SwapOutcome::Rebuilding { generation })
            }
            SwapMode::Continue => {
                let name = self.config.name.clone();
                let err = views_error(&name);
                let mut meta = schema::read_meta(&self.db, &name)
                    .map_err(&err)?
                    .ok_or_else(|| ProjectionHostError::Unknown(name.clone()))?;
                meta.active.hash = hash.clone();
                let commit = || -> Result<(), redb::Error> {
                    let txn = self.db.begin_write().map_err(redb_error)?;
                    txn.open_table(schema::CODE)?
                        .insert(hash.as_str(), bytes.as_slice())?;
                    schema::write_meta(&txn, &name, &meta)?;
                    schema::collect_code(&txn)?;
                    txn.commit().map_err(redb_error)?;
                    Ok(())
                };
                commit().map_err(&err)?;
                self.active.generation = meta.active;
                self.active.relevance = self.upcasting.chain().relevance(&plugin.info().handles);
                self.active.plugin = plugin.clone();
                self.active.instance = None;
                self.active.clear_failure();
                self.shared
                    .plugins
                    .lock()
                    .expect("not poisoned")
                    .insert(self.active.generation.number, QueryPool::new(plugin));
                Ok(SwapOutcome::Continued)
            }
        }
    }

    /// Starts a new generation from position 0 with `plugin` (replacing a shadow in
    /// progress). `bytes` is the plugin's code when it is not recorded yet.
    fn start_shadow(
        &mut self,
        plugin: ProjectionPlugin,
        bytes: Option<&[u8]>,
    ) -> Result<u64, ProjectionHostError> {
        let name = self.config.name.clone();
        let err = views_error(&name);
        let mut meta = schema::read_meta(&self.db, &name)
            .map_err(&err)?
            .ok_or_else(|| ProjectionHostError::Unknown(name.clone()))?;
        let old_shadow = meta.shadow.take();
        meta.last_number += 1;
        let generation = Generation {
            number: meta.last_number,
            hash: plugin.info().content_hash.clone(),
        };
        meta.shadow = Some(generation.clone());
        let namespace = schema::namespace(&name, generation.number);
        let commit = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write().map_err(redb_error)?;
            if let Some(old) = &old_shadow {
                schema::drop_namespace(&txn, &schema::namespace(&name, old.number))?;
            }
            if let Some(bytes) = bytes {
                txn.open_table(schema::CODE)?
                    .insert(generation.hash.as_str(), bytes)?;
            }
            schema::create_namespace(&txn, &namespace)?;
            schema::write_meta(&txn, &name, &meta)?;
            schema::collect_code(&txn)?;
            txn.commit().map_err(redb_error)?;
            Ok(())
        };
        commit().map_err(&err)?;
        let mut plugins = self.shared.plugins.lock().expect("not poisoned");
        if let Some(old) = &old_shadow {
            plugins.remove(&old.number);
        }
        plugins.insert(generation.number, QueryPool::new(plugin.clone()));
        drop(plugins);
        tracing::info!(projection = %name, generation = generation.number, "rebuild started");
        let upcasters = self.upcasting.chain().clone();
        self.shadow = Some(Lane::new(&name, generation.clone(), plugin, &upcasters, 0));
        Ok(generation.number)
    }

    fn drop_shadow(&mut self) -> Result<(), redb::Error> {
        let Some(shadow) = self.shadow.take() else {
            return Ok(());
        };
        let name = self.config.name.clone();
        let mut meta = schema::read_meta(&self.db, &name)?
            .ok_or_else(|| redb::Error::Corrupted(format!("no record of {name:?}")))?;
        meta.shadow = None;
        let txn = self.db.begin_write().map_err(redb_error)?;
        schema::drop_namespace(&txn, &shadow.namespace)?;
        schema::write_meta(&txn, &name, &meta)?;
        schema::collect_code(&txn)?;
        txn.commit().map_err(redb_error)?;
        self.shared
            .plugins
            .lock()
            .expect("not poisoned")
            .remove(&shadow.generation.number);
        Ok(())
    }

    /// Makes the caught-up shadow the active generation and drops the old one, in one
    /// transaction.
    fn switch(&mut self) -> Result<(), redb::Error> {
        let shadow = self.shadow.as_ref().expect("a shadow to switch to");
        let name = self.config.name.clone();
        let mut meta = schema::read_meta(&self.db, &name)?
            .ok_or_else(|| redb::Error::Corrupted(format!("no record of {name:?}")))?;
        meta.active = shadow.generation.clone();
        meta.shadow = None;
        let mut txn = self.db.begin_write().map_err(redb_error)?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
        schema::drop_namespace(&txn, &self.active.namespace)?;
        schema::write_meta(&txn, &name, &meta)?;
        schema::collect_code(&txn)?;
        txn.commit().map_err(redb_error)?;
        self.synced();
        let shadow = self.shadow.take().expect("checked above");
        let old = std::mem::replace(&mut self.active, shadow);
        self.shared
            .plugins
            .lock()
            .expect("not poisoned")
            .remove(&old.generation.number);
        tracing::info!(
            projection = %name,
            generation = self.active.generation.number,
            "switched to the rebuilt generation"
        );
        Ok(())
    }

    /// Feeds one batch to each lane that is behind; switches a caught-up shadow. Returns
    /// whether anything happened.
    fn work(&mut self, head: u64) -> bool {
        let now = Instant::now();
        let mut worked = false;
        if self.active.runnable(now) && self.active.checkpoint < head {
            let stand_in = placeholder(&self.active);
            let mut lane = std::mem::replace(&mut self.active, stand_in);
            self.step(&mut lane, head);
            self.active = lane;
            worked = true;
        }
        if let Some(mut shadow) = self.shadow.take() {
            if shadow.runnable(now) && shadow.checkpoint < head {
                self.step(&mut shadow, head);
                self.shadow = Some(shadow);
                worked = true;
            } else if shadow.failed.is_none() && shadow.checkpoint >= head {
                self.shadow = Some(shadow);
                if let Err(error) = self.switch() {
                    self.last_error = Some(format!("switch failed: {error}"));
                    if let Some(shadow) = &mut self.shadow {
                        shadow.retry_at = Some(now + self.config.backoff);
                    }
                }
                worked = true;
            } else {
                self.shadow = Some(shadow);
            }
        }
        worked
    }

    /// Reads, upcasts, handles and commits one batch of `lane`, or deals with its failure.
    /// While the plugin handles it, the reader thread reads the next one.
    fn step(&mut self, lane: &mut Lane, head: u64) {
        let careful = lane.bound.is_none() && lane.checkpoint < lane.careful_until;
        let bound = lane.bound.unwrap_or(head).min(head);
        let spec = ReadSpec {
            from: lane.checkpoint + 1,
            bound,
            limit: if careful { 1 } else { self.config.batch.max(1) },
            hash: lane.plugin.info().content_hash.clone(),
        };
        let ahead = lane.ahead.take().filter(|(ahead, _)| ahead.serves(&spec));
        let batch = match ahead.and_then(|(_, batch)| batch.recv().ok()) {
            Some(batch) => batch,
            None => {
                let spare = std::mem::take(&mut self.spare);
                read_batch(&*self.store, &spec, &lane.relevance, spare)
            }
        };
        let ReadBatch {
            mut events,
            last,
            error,
        } = batch;
        if let Some(error) = error {
            self.spare = events;
            self.transient(lane, format!("reading the log: {error}"));
            return;
        }
        if !careful && last < bound {
            let next = ReadSpec {
                from: last + 1,
                ..spec
            };
            lane.ahead = self.read_ahead(next, lane.relevance.clone());
        }
        self.handle(lane, &mut events, last);
        self.spare = events;
    }

    /// Asks the reader thread for the batch `spec`, handing it the spare batch to refill.
    fn read_ahead(
        &mut self,
        spec: ReadSpec,
        relevance: Arc<Relevance>,
    ) -> Option<(ReadSpec, std::sync::mpsc::Receiver<ReadBatch>)> {
        if self.reader.is_none() {
            self.reader = spawn_reader(&self.config.name, self.store.clone());
        }
        let reader = self.reader.as_ref()?;
        let (reply, batch) = std::sync::mpsc::sync_channel(1);
        let job = ReadJob {
            spec: spec.clone(),
            relevance,
            spare: std::mem::take(&mut self.spare),
            reply,
        };
        match reader.send(job) {
            Ok(()) => Some((spec, batch)),
            Err(std::sync::mpsc::SendError(job)) => {
                self.spare = job.spare;
                self.reader = None;
                None
            }
        }
    }

    /// Upcasts, handles and commits a batch read up to `last`, or deals with its failure.
    /// The batch holds only events relevant to the plugin; those it handles once upcast go to
    /// it.
    fn handle(&mut self, lane: &mut Lane, events: &mut Vec<Event>, last: u64) {
        if !self.upcasting.chain().is_empty() {
            if let Err(failure) = self.upcasting.upcast_all(events) {
                let message = format!("upcasting: {}", failure.error);
                self.failed_batch(lane, events, Some(failure.position), message);
                return;
            }
            let relevance = &lane.relevance;
            events.retain(|event| relevance.is_handled(&event.event_type));
        }
        if events.is_empty() {
            self.commit(lane, Default::default(), last);
            return;
        }
        let instance = match &mut lane.instance {
            Some(instance) => instance,
            None => match lane.plugin.instantiate(BatchModel::default()) {
                Ok(instance) => lane.instance.insert(instance),
                Err(error) => {
                    self.failed_batch(lane, events, None, error.to_string());
                    return;
                }
            },
        };
        let snapshot = match self.snapshot(&lane.namespace) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                self.transient(lane, format!("reading the read model: {error}"));
                return;
            }
        };
        *instance.read_model_mut() = BatchModel::new(snapshot);
        let result = instance.handle(events);
        let model = std::mem::take(instance.read_model_mut());
        match result {
            Ok(()) => self.commit(lane, model.writes, last),
            Err(error) => {
                let position = match &error {
                    ProjectionError::Event { position, .. } => Some(*position),
                    _ => None,
                };
                self.failed_batch(lane, events, position, error.to_string());
            }
        }
    }

    fn snapshot(&self, namespace: &str) -> Result<Snapshot, redb::Error> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        match txn.open_table(schema::data_table(namespace)) {
            Ok(table) => Ok(Snapshot::new(Some(table))),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(Snapshot::new(None)),
            Err(error) => Err(error.into()),
        }
    }

    /// Commits a batch's writes with the new checkpoint, in one transaction.
    fn commit(
        &mut self,
        lane: &mut Lane,
        writes: std::collections::BTreeMap<String, Option<String>>,
        last: u64,
    ) {
        let durable = self.last_durable.elapsed() >= DURABLE_EVERY;
        let result = (|| -> Result<(), redb::Error> {
            let mut txn = self.db.begin_write().map_err(redb_error)?;
            if !durable {
                txn.set_durability(redb::Durability::None)
                    .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
            }
            {
                let mut table = txn.open_table(schema::data_table(&lane.namespace))?;
                for (key, value) in &writes {
                    match value {
                        Some(value) => {
                            table.insert(key.as_str(), value.as_str())?;
                        }
                        None => {
                            table.remove(key.as_str())?;
                        }
                    }
                }
                txn.open_table(schema::CHECKPOINTS)?
                    .insert(lane.namespace.as_str(), last)?;
            }
            txn.commit().map_err(redb_error)?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                if durable {
                    self.synced();
                } else {
                    self.unsynced = true;
                }
                self.processed += last - lane.checkpoint;
                lane.checkpoint = last;
                lane.bound = None;
                lane.attempts = 0;
                lane.retry_at = None;
            }
            Err(error) => self.transient(lane, format!("committing: {error}")),
        }
    }

    /// A failure that is not the event's fault (I/O): retry the batch after the backoff.
    fn transient(&mut self, lane: &mut Lane, message: String) {
        tracing::warn!(projection = %self.config.name, "{message}");
        lane.attempts = lane.attempts.saturating_add(1);
        lane.retry_at = Some(Instant::now() + self.backoff(lane.attempts));
        self.last_error = Some(message);
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        self.config
            .backoff
            .saturating_mul(factor)
            .min(self.config.max_backoff)
    }

    /// A batch failed: narrow it down to the failing event, retry that one with backoff, and
    /// after the last attempt stop at it or park it.
    fn failed_batch(
        &mut self,
        lane: &mut Lane,
        events: &[Event],
        position: Option<u64>,
        message: String,
    ) {
        let name = self.config.name.clone();
        self.last_error = Some(message.clone());
        let first = events.first().map(|e| e.position);
        if events.len() > 1 {
            // Commit what comes before the failing event, then try events one by one.
            let last = events.last().map_or(0, |e| e.position);
            match position.filter(|p| events.iter().any(|e| e.position == *p)) {
                Some(p) if Some(p) != first => {
                    lane.bound = Some(p - 1);
                    lane.careful_until = p;
                }
                Some(p) => lane.careful_until = p,
                None => lane.careful_until = last,
            }
            return;
        }
        let Some(event) = events.first() else {
            return;
        };
        lane.attempts += 1;
        tracing::warn!(
            projection = %name,
            position = event.position,
            attempt = lane.attempts,
            "event failed: {message}"
        );
        if lane.attempts < self.config.attempts.max(1) {
            lane.retry_at = Some(Instant::now() + self.backoff(lane.attempts));
            return;
        }
        if self.config.dead_letter {
            let letter = DeadLetter {
                position: event.position,
                stream_id: event.stream_id.clone(),
                event_type: event.event_type.clone(),
                reason: message,
                attempts: lane.attempts,
                parked_at: now_ms(),
            };
            match self.park(lane, &letter) {
                Ok(()) => {
                    self.processed += event.position - lane.checkpoint;
                    lane.checkpoint = event.position;
                    lane.attempts = 0;
                    lane.retry_at = None;
                    lane.bound = None;
                }
                Err(error) => self.transient(lane, format!("parking: {error}")),
            }
            return;
        }
        lane.failed = Some(format!("stopped at position {}: {message}", event.position));
        lane.retry_at = None;
    }

    /// Parks `letter` and moves the checkpoint past it, in one transaction.
    fn park(&mut self, lane: &Lane, letter: &DeadLetter) -> Result<(), redb::Error> {
        let bytes = serde_json::to_vec(letter).expect("a dead letter serializes");
        let txn = self.db.begin_write().map_err(redb_error)?;
        txn.open_table(schema::DEAD_LETTERS)?
            .insert((lane.namespace.as_str(), letter.position), bytes.as_slice())?;
        txn.open_table(schema::CHECKPOINTS)?
            .insert(lane.namespace.as_str(), letter.position)?;
        txn.commit().map_err(redb_error)?;
        self.synced();
        Ok(())
    }

    /// A durable commit just made every earlier one durable too.
    fn synced(&mut self) {
        self.last_durable = Instant::now();
        self.unsynced = false;
    }

    /// Makes the commits made without waiting for the disk durable (an empty durable commit
    /// carries them).
    fn sync(&mut self) {
        if !self.unsynced {
            return;
        }
        let result = (|| -> Result<(), redb::Error> {
            let mut txn = self.db.begin_write().map_err(redb_error)?;
            txn.set_durability(redb::Durability::Immediate)
                .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
            txn.commit().map_err(redb_error)
        })();
        match result {
            Ok(()) => self.synced(),
            Err(error) => tracing::warn!(
                projection = %self.config.name,
                "making the last commits durable: {error}; the next start redoes them"
            ),
        }
    }

    /// Publishes the status for callers.
    fn publish(&mut self, head: u64) {
        let now = Instant::now();
        self.samples.push_back((now, self.processed));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > Duration::from_secs(3))
        {
            self.samples.pop_front();
        }
        let events_per_sec = match (self.samples.front(), self.samples.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                (n1 - n0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        };
        let state = if self.paused {
            ProjectionState::Paused
        } else if self.shadow.is_some() {
            ProjectionState::Rebuilding
        } else if self.active.failed.is_some() {
            ProjectionState::Failed
        } else {
            ProjectionState::Running
        };
        let dead_letters = if self.config.dead_letter {
            schema::dead_letters(&self.db, &self.active.namespace)
                .map(|l| l.len() as u64)
                .unwrap_or(0)
        } else {
            0
        };
        let mut status = self.shared.status.lock().expect("not poisoned");
        let last_error = self.last_error.clone().or(status.last_error.take());
        *status = ProjectionStatus {
            name: self.shared.name.clone(),
            state,
            position: self.active.checkpoint,
            head,
            lag: head.saturating_sub(self.active.checkpoint),
            events_per_sec,
            last_error,
            active: self.active.status(head),
            rebuild: self.shadow.as_ref().map(|s| s.status(head)),
            dead_letters,
        };
        self.last_error = status.last_error.clone();
    }
}

/// A stand-in while the active lane is lent to `step`.
fn placeholder(lane: &Lane) -> Lane {
    Lane {
        generation: lane.generation.clone(),
        namespace: String::new(),
        plugin: lane.plugin.clone(),
        relevance: lane.relevance.clone(),
        instance: None,
        checkpoint: lane.checkpoint,
        careful_until: 0,
        bound: None,
        attempts: 0,
        retry_at: None,
        failed: None,
        ahead: None,
    }
}

/// One batch read of the log for a lane.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReadSpec {
    /// The first position.
    from: u64,
    /// The last position it may reach.
    bound: u64,
    /// Events to collect at most.
    limit: usize,
    /// The plugin whose relevance filters the events.
    hash: String,
}

impl ReadSpec {
    /// Whether a batch read ahead for `self` is a batch `now` may return: the same start,
    /// size and filter, and never past its bound (it may stop short of it; the log only grows).
    fn serves(&self, now: &ReadSpec) -> bool {
        self.from == now.from
            && self.limit == now.limit
            && self.hash == now.hash
            && self.bound <= now.bound
    }
}

/// What a read found: the events to handle and the position it got to (the checkpoint once
/// they are handled), or why it failed.
struct ReadBatch {
    events: Vec<Event>,
    last: u64,
    error: Option<String>,
}

/// A read for the reader thread.
struct ReadJob {
    spec: ReadSpec,
    relevance: Arc<Relevance>,
    /// A handled batch whose strings to reuse.
    spare: Vec<Event>,
    reply: std::sync::mpsc::SyncSender<ReadBatch>,
}

/// Starts the thread that reads batches ahead for a runner. It stops when the runner drops its
/// sender.
fn spawn_reader(name: &str, store: Arc<dyn EventStore>) -> Option<Sender<ReadJob>> {
    let (jobs, inbox) = std::sync::mpsc::channel::<ReadJob>();
    let spawned = std::thread::Builder::new()
        .name(format!("read-{name}"))
        .spawn(move || {
            for job in inbox {
                let batch = read_batch(&*store, &job.spec, &job.relevance, job.spare);
                // The runner may have moved on (a failure, a swap): then nobody waits.
                let _ = job.reply.send(batch);
            }
        });
    match spawned {
        Ok(_) => Some(jobs),
        Err(error) => {
            tracing::warn!(projection = %name, "cannot start the reader thread: {error}");
            None
        }
    }
}

/// Reads the batch `spec` from the log, reusing the strings of `events`: the events relevant
/// to the plugin, up to `limit` of them, and through at most a bounded number of positions so
/// a sparse projection still checkpoints as it goes.
fn read_batch(
    store: &dyn EventStore,
    spec: &ReadSpec,
    relevance: &Relevance,
    mut events: Vec<Event>,
) -> ReadBatch {
    let scan_limit = spec.limit.saturating_mul(16).max(10_000);
    let mut count = 0usize;
    let mut last = spec.from - 1;
    let mut scanned = 0usize;
    let read = AllRead {
        from_position: spec.from,
        direction: Direction::Forward,
        limit: usize::MAX,
        event_types: Vec::new(),
        until: Some(Until::Position(spec.bound)),
    };
    let result = store.visit_all(&read, &mut |event| {
        last = event.position;
        scanned += 1;
        if relevance.is_relevant(event.event_type, event.schema_version) {
            match events.get_mut(count) {
                Some(reused) => fill_event(reused, &event, store),
                None => events.push(to_event(&event, store)),
            }
            count += 1;
        }
        if count >= spec.limit || scanned >= scan_limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    events.truncate(count);
    ReadBatch {
        events,
        last,
        error: result.err().map(|e| e.to_string()),
    }
}

/// Overwrites `target` with `event`, reusing its strings' buffers.
fn fill_event(target: &mut Event, event: &EventRef<'_>, store: &dyn EventStore) {
    fn set(target: &mut String, value: &str) {
        target.clear();
        target.push_str(value);
    }
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = event.event_id.hyphenated().encode_lower(&mut id);
    target.position = event.position;
    set(&mut target.stream_id, event.stream_id);
    target.stream_version = event.stream_version;
    set(&mut target.event_id, id);
    set(&mut target.event_type, event.event_type);
    target.schema_version = event.schema_version;
    target.recorded_at = event.recorded_at;
    set(&mut target.data, event.data);
    set(&mut target.metadata, event.metadata);
    crate::upcast::set_personal(target, event, store);
}

/// A stored event as plugins see it: one copy of each string, out of the store's pages.
pub(crate) fn to_event(event: &EventRef<'_>, store: &dyn EventStore) -> Event {
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = event.event_id.hyphenated().encode_lower(&mut id);
    let mut plugin_event = Event {
        position: event.position,
        stream_id: event.stream_id.to_owned(),
        stream_version: event.stream_version,
        event_id: (*id).to_owned(),
        event_type: event.event_type.to_owned(),
        schema_version: event.schema_version,
        recorded_at: event.recorded_at,
        data: event.data.to_owned(),
        metadata: event.metadata.to_owned(),
        subject_id: None,
        personal_data: None,
        shredded: false,
    };
    crate::upcast::set_personal(&mut plugin_event, event, store);
    plugin_event
}
