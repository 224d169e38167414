//! Projections: a runner per projection that feeds `$all` through its plugin and keeps its
//! read model in `views.redb`; queries over a consistent committed state; rebuilds into a
//! shadow namespace and a one-transaction switch; hot swap of the plugin; offline replay.
//!
//! Each projection has a runner thread. It reads `$all` from its checkpoint in batches (only
//! the events relevant to its plugin: of a type it handles, or that the upcaster chain may turn
//! into one), upcasts them, passes those it handles to `handle`, and commits the
//! plugin's writes with the new checkpoint in one `views.redb` transaction: a batch takes
//! effect exactly once, whatever crashes. It sleeps on the store's head watch.
//!
//! A projection's data lives in a *generation* (namespace). A rebuild or a new version builds
//! a new generation from position 0 beside the active one, which keeps serving; when the new
//! one has caught up with the head, one transaction makes it active and drops the old one.
//! The code of every live generation is kept in `views.redb`, so a restart serves the data
//! with the code that built it.

pub(crate) mod read_model;
pub mod replay;
mod runner;
pub(crate) mod schema;
mod types;
pub mod watch;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::views::Views;
use eshost_runtime::{Limits, ProjectionInstance, ProjectionPlugin, QueryError, Runtime};
use eshost_store::EventStore;

pub use crate::upcast::{UpcastFailure, UpcasterChain};
pub use schema::DeadLetter;
pub use types::{
    GenerationStatus, ProjectionConfig, ProjectionHostError, ProjectionState, ProjectionStatus,
    QueryFailure, SwapMode, SwapOutcome,
};
pub use watch::{PluginWatcher, WatchedPlugin};

use read_model::{Snapshot, SnapshotModel};
use runner::{Control, Runner};

/// What the runner shares with callers: its status and the plugins queries use.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) status: Mutex<ProjectionStatus>,
    /// Generation number → its plugin and idle query instances.
    pub(crate) plugins: Mutex<HashMap<u64, QueryPool>>,
}

#[derive(Debug)]
pub(crate) struct QueryPool {
    pub(crate) plugin: ProjectionPlugin,
    idle: Vec<ProjectionInstance<SnapshotModel>>,
}

impl QueryPool {
    pub(crate) fn new(plugin: ProjectionPlugin) -> Self {
        QueryPool {
            plugin,
            idle: Vec::new(),
        }
    }
}

struct Handle {
    shared: Arc<Shared>,
    control: tokio::sync::mpsc::UnboundedSender<Control>,
    thread: Option<std::thread::JoinHandle<()>>,
    config: ProjectionConfig,
}

struct Inner {
    store: Arc<dyn EventStore>,
    views: Views,
    runtime: Runtime,
    upcasters: UpcasterChain,
    projections: Mutex<HashMap<String, Handle>>,
}

/// The projections of one host. Cheap to clone; runners stop when [`Projections::shutdown`]
/// is called or the last clone is dropped.
#[derive(Clone)]
pub struct Projections {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Projections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.names();
        f.debug_struct("Projections")
            .field("projections", &names)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let handles: Vec<Handle> = self
            .projections
            .get_mut()
            .map(|map| map.drain().map(|(_, h)| h).collect())
            .unwrap_or_default();
        stop_all(handles);
    }
}

fn stop_all(handles: Vec<Handle>) {
    for handle in &handles {
        let _ = handle.control.send(Control::Stop);
    }
    for mut handle in handles {
        if let Some(thread) = handle.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Projections {
    /// A host for projections over `store`, keeping their data in `views`.
    pub fn new(store: Arc<dyn EventStore>, views: Views, runtime: Runtime) -> Self {
        Projections {
            inner: Arc::new(Inner {
                store,
                views,
                runtime,
                upcasters: UpcasterChain::empty(),
                projections: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The same, upcasting through `upcasters` the events each projection may see, before it
    /// sees them.
    pub fn with_upcasters(
        store: Arc<dyn EventStore>,
        views: Views,
        runtime: Runtime,
        upcasters: UpcasterChain,
    ) -> Self {
        Projections {
            inner: Arc::new(Inner {
                store,
                views,
                runtime,
                upcasters,
                projections: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Loads the plugin and starts the projection's runner. A projection that ran before
    /// resumes from its checkpoint with the code that built its data; if the configured file
    /// is another version, that version rebuilds beside it.
    pub fn add(&self, config: ProjectionConfig) -> Result<(), ProjectionHostError> {
        let runtime = self.runtime_for(config.limits.as_ref());
        let (bytes, _) = self.load(&runtime, &config.name, &config.plugin)?;
        let label = config.plugin.display().to_string();
        self.add_version(config, bytes, &label)
    }

    /// [`add`](Self::add) with the component given (the version the log says is active),
    /// rather than read from the configured file.
    pub fn add_version(
        &self,
        config: ProjectionConfig,
        bytes: Vec<u8>,
        label: &str,
    ) -> Result<(), ProjectionHostError> {
        let mut map = self.inner.projections.lock().expect("not poisoned");
        if map.contains_key(&config.name) {
            return Err(ProjectionHostError::AlreadyRunning(config.name));
        }
        let runtime = self.runtime_for(config.limits.as_ref());
        let plugin = self.check(&runtime, &config.name, &bytes, label)?;
        let (control, receiver) = tokio::sync::mpsc::unbounded_channel();
        let (runner, shared) = Runner::open(
            config.clone(),
            self.inner.store.clone(),
            self.inner.views.clone(),
            runtime,
            plugin,
            bytes,
            self.inner.upcasters.clone(),
            receiver,
        )?;
        let thread = std::thread::Builder::new()
            .name(format!("projection-{}", config.name))
            .spawn(move || runner.run())
            .map_err(|e| ProjectionHostError::Views {
                name: config.name.clone(),
                message: format!("cannot start the runner thread: {e}"),
            })?;
        map.insert(
            config.name.clone(),
            Handle {
                shared,
                control,
                thread: Some(thread),
                config,
            },
        );
        Ok(())
    }

    /// The runtime a projection's plugins load under: the host's, or a view with the
    /// projection's own limits.
    fn runtime_for(&self, limits: Option<&Limits>) -> Runtime {
        match limits {
            Some(limits) => self.inner.runtime.with_limits(limits.clone()),
            None => self.inner.runtime.clone(),
        }
    }

    /// Reads, compiles and checks a plugin file for projection `name`.
    fn load(
        &self,
        runtime: &Runtime,
        name: &str,
        path: &Path,
    ) -> Result<(Vec<u8>, ProjectionPlugin), ProjectionHostError> {
        let bytes = std::fs::read(path).map_err(|source| ProjectionHostError::Io {
            path: path.to_owned(),
            source,
        })?;
        let plugin = self.check(runtime, name, &bytes, &path.display().to_string())?;
        Ok((bytes, plugin))
    }

    fn check(
        &self,
        runtime: &Runtime,
        name: &str,
        bytes: &[u8],
        label: &str,
    ) -> Result<ProjectionPlugin, ProjectionHostError> {
        let plugin =
            match runtime.load_bytes(bytes, label, eshost_runtime::PluginKind::Projection)? {
                eshost_runtime::LoadedPlugin::Projection(plugin) => plugin,
                _ => unreachable!("load_bytes checks the kind"),
            };
        if plugin.info().name != name {
            return Err(ProjectionHostError::WrongName {
                file: label.to_owned(),
                expected: name.to_owned(),
                found: plugin.info().name.clone(),
            });
        }
        Ok(plugin)
    }

    /// The derived-data database the read models live in.
    pub fn views(&self) -> &Views {
        &self.inner.views
    }

    /// The configured projections' names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .projections
            .lock()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// The configuration of `name`.
    pub fn config(&self, name: &str) -> Option<ProjectionConfig> {
        let map = self.inner.projections.lock().expect("not poisoned");
        map.get(name).map(|h| h.config.clone())
    }

    fn shared(&self, name: &str) -> Option<Arc<Shared>> {
        let map = self.inner.projections.lock().expect("not poisoned");
        map.get(name).map(|h| h.shared.clone())
    }

    fn send(&self, name: &str, control: Control) -> Result<(), ProjectionHostError> {
        let map = self.inner.projections.lock().expect("not poisoned");
        let handle = map
            .get(name)
            .ok_or_else(|| ProjectionHostError::Unknown(name.to_owned()))?;
        handle
            .control
            .send(control)
            .map_err(|_| ProjectionHostError::Stopped(name.to_owned()))
    }

    /// Sends `name` the control `make` builds around a reply channel, and waits for the
    /// runner's answer.
    fn ask<T>(
        &self,
        name: &str,
        make: impl FnOnce(std::sync::mpsc::Sender<Result<T, ProjectionHostError>>) -> Control,
    ) -> Result<T, ProjectionHostError> {
        let (ack, answer) = std::sync::mpsc::channel();
        self.send(name, make(ack))?;
        answer
            .recv()
            .map_err(|_| ProjectionHostError::Stopped(name.to_owned()))?
    }

    /// Rebuilds from position 0 ([`Control::Purge`]) every projection with a plugin version
    /// for which `affected` holds. Returns their names.
    fn purge_where(
        &self,
        affected: impl Fn(&eshost_runtime::PluginInfo) -> bool,
    ) -> Result<Vec<String>, ProjectionHostError> {
        let names: Vec<String> = {
            let map = self.inner.projections.lock().expect("not poisoned");
            map.iter()
                .filter(|(_, handle)| {
                    let plugins = handle.shared.plugins.lock().expect("not poisoned");
                    plugins.values().any(|pool| affected(pool.plugin.info()))
                })
                .map(|(name, _)| name.clone())
                .collect()
        };
        for name in &names {
            self.ask(name, |ack| Control::Purge { ack })?;
        }
        Ok(names)
    }

    /// The status of `name`.
    pub fn status(&self, name: &str) -> Option<ProjectionStatus> {
        let shared = self.shared(name)?;
        let mut status = shared.status.lock().expect("not poisoned").clone();
        let head = self.inner.store.head();
        status.head = status.head.max(head);
        status.lag = status.head.saturating_sub(status.position);
        if let Some(rebuild) = &mut status.rebuild {
            rebuild.lag = status.head.saturating_sub(rebuild.position);
        }
        status.active.lag = status.lag;
        Some(status)
    }

    /// The status of every projection, by name.
    pub fn statuses(&self) -> Vec<ProjectionStatus> {
        self.names()
            .iter()
            .filter_map(|name| self.status(name))
            .collect()
    }

    /// Waits until the status of `name` satisfies `done`, up to `timeout`; returns the last
    /// status seen. For tools and tests; the runner itself never polls.
    pub fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        mut done: impl FnMut(&ProjectionStatus) -> bool,
    ) -> Option<ProjectionStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(name)?;
            if done(&status) || Instant::now() >= deadline {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `name` runs its active generation at the head with no rebuild pending.
    pub fn wait_caught_up(&self, name: &str, timeout: Duration) -> Option<ProjectionStatus> {
        self.wait_for(name, timeout, |s| {
            s.rebuild.is_none() && s.position >= s.head && s.state == ProjectionState::Running
        })
    }

    /// Pauses `name` (queries keep answering).
    pub fn pause(&self, name: &str) -> Result<(), ProjectionHostError> {
        self.send(name, Control::Pause)
    }

    /// Resumes `name` after a pause or a failure: a failed event is tried again.
    pub fn resume(&self, name: &str) -> Result<(), ProjectionHostError> {
        self.send(name, Control::Resume)
    }

    /// Skips the event at `position` that `name` is stopped at: parks it as a dead letter
    /// with `reason` and runs on. Refused unless a generation is stopped at that event.
    pub fn skip(&self, name: &str, position: u64, reason: &str) -> Result<(), ProjectionHostError> {
        self.ask(name, |ack| Control::Skip {
            position,
            reason: reason.to_owned(),
            ack,
        })
    }

    /// Rebuilds `name` from position 0 with its current code, beside the active generation.
    pub fn rebuild(&self, name: &str) -> Result<u64, ProjectionHostError> {
        self.ask(name, |ack| Control::Rebuild { ack })
    }

    /// Rebuilds, from position 0, every projection that handles any of `event_types` (the
    /// types that carried a forgotten subject's personal data), so rows derived from that
    /// data are replaced by rows built from the now shredded events. Returns the projections
    /// rebuilding; [`wait_caught_up`](Self::wait_caught_up) tells when each has switched.
    pub fn purge(&self, event_types: &[String]) -> Result<Vec<String>, ProjectionHostError> {
        self.purge_where(|info| event_types.iter().any(|t| info.handles_event(t)))
    }

    /// Rebuilds, from position 0, every projection that sees events the upcaster chain
    /// raises differently now: those relevant to it, through the chain `before` or the one in
    /// force, among the (type, schema version) pairs `changed` (what the old and the new
    /// version of the swapped upcaster claim). Their read models were built through the old
    /// chain; the old generation serves until the rebuild switches in. Returns the
    /// projections rebuilding.
    pub fn rebuild_after_upcaster_swap(
        &self,
        before: &UpcasterChain,
        changed: &[(String, u32)],
    ) -> Result<Vec<String>, ProjectionHostError> {
        let now = &self.inner.upcasters;
        self.purge_where(|info| {
            let (old, new) = (
                before.relevance(&info.handles),
                now.relevance(&info.handles),
            );
            changed
                .iter()
                .any(|(t, v)| old.is_relevant(t, *v) || new.is_relevant(t, *v))
        })
    }

    /// Drops a rebuild in progress (or failed); the active generation is untouched.
    pub fn abort_rebuild(&self, name: &str) -> Result<(), ProjectionHostError> {
        self.send(name, Control::AbortRebuild)
    }

    /// Swaps in the plugin file at `path` for `name` (see [`swap_bytes`](Self::swap_bytes)).
    pub fn swap(
        &self,
        name: &str,
        path: impl AsRef<Path>,
        mode: SwapMode,
    ) -> Result<SwapOutcome, ProjectionHostError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ProjectionHostError::Io {
            path: path.to_owned(),
            source,
        })?;
        self.swap_bytes(name, bytes, &path.display().to_string(), mode)
    }

    /// Swaps in a new version of `name`. The component is compiled and checked (a projection,
    /// describing itself as `name`) before anything changes: a bad one is refused and the
    /// running version keeps serving. Then, by `mode`, the new version rebuilds beside the
    /// old one (switching when caught up) or continues the active generation.
    pub fn swap_bytes(
        &self,
        name: &str,
        bytes: Vec<u8>,
        label: &str,
        mode: SwapMode,
    ) -> Result<SwapOutcome, ProjectionHostError> {
        let shared = self
            .shared(name)
            .ok_or_else(|| ProjectionHostError::Unknown(name.to_owned()))?;
        let limits = {
            let map = self.inner.projections.lock().expect("not poisoned");
            map.get(name)
                .and_then(|handle| handle.config.limits.clone())
        };
        let runtime = self.runtime_for(limits.as_ref());
        let plugin = match self.check(&runtime, name, &bytes, label) {
            Ok(plugin) => plugin,
            Err(error) => {
                shared.status.lock().expect("not poisoned").last_error =
                    Some(format!("swap refused: {error}"));
                return Err(error);
            }
        };
        self.ask(name, |ack| Control::Swap {
            plugin,
            bytes,
            mode,
            ack,
        })
    }

    /// Runs `query` with `args` (JSON) on the active generation of `name`, read-only, on one
    /// committed state. Blocking: call from a worker thread or `spawn_blocking`.
    pub fn query(&self, name: &str, query: &str, args: &str) -> Result<String, QueryFailure> {
        let shared = self
            .shared(name)
            .ok_or_else(|| QueryFailure::Unknown(name.to_owned()))?;
        // A switch between reading the record and finding the plugin retires the old
        // generation's plugin: take a fresh snapshot, which names the new one.
        for _ in 0..3 {
            if let Some(answer) = self.query_once(&shared, name, query, args)? {
                return Ok(answer?);
            }
        }
        Err(QueryFailure::Views(format!(
            "projection {name:?} kept switching generations during the query"
        )))
    }

    fn query_once(
        &self,
        shared: &Shared,
        name: &str,
        query: &str,
        args: &str,
    ) -> Result<Option<Result<String, QueryError>>, QueryFailure> {
        let views = |e: redb::Error| QueryFailure::Views(e.to_string());
        let txn = self.inner.views.begin_read().map_err(|e| views(e.into()))?;
        let meta = schema::read_meta_in(&txn, name)
            .map_err(views)?
            .ok_or_else(|| QueryFailure::Unknown(name.to_owned()))?;
        let generation = meta.active.number;
        let namespace = schema::namespace(name, generation);
        let table = match txn.open_table(schema::data_table(&namespace)) {
            Ok(table) => Some(table),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(views(e.into())),
        };
        let (plugin, idle) = {
            let mut plugins = shared.plugins.lock().expect("not poisoned");
            let Some(pool) = plugins.get_mut(&generation) else {
                return Ok(None);
            };
            (pool.plugin.clone(), pool.idle.pop())
        };
        let mut instance = match idle {
            Some(instance) => instance,
            None => plugin
                .instantiate(SnapshotModel::default())
                .map_err(|e| QueryFailure::Query(e.into()))?,
        };
        *instance.read_model_mut() = SnapshotModel(Snapshot::new(table));
        let result = instance.query(query, args);
        // Release the read transaction before pooling the instance.
        *instance.read_model_mut() = SnapshotModel::default();
        drop(txn);
        let mut plugins = shared.plugins.lock().expect("not poisoned");
        if let Some(pool) = plugins.get_mut(&generation)
            && pool.idle.len() < 8
            && pool.plugin.info().content_hash == instance.info().content_hash
        {
            pool.idle.push(instance);
        }
        Ok(Some(result))
    }

    /// The events `name` parked in its active generation.
    pub fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>, ProjectionHostError> {
        let views = |e: redb::Error| ProjectionHostError::Views {
            name: name.to_owned(),
            message: e.to_string(),
        };
        let db = self.inner.views.db().map_err(|e| views(e.into()))?;
        let db = &db;
        let meta = schema::read_meta(db, name)
            .map_err(views)?
            .ok_or_else(|| ProjectionHostError::Unknown(name.to_owned()))?;
        schema::dead_letters(db, &schema::namespace(name, meta.active.number)).map_err(views)
    }

    /// Watches every configured projection's plugin file and swaps (rebuilding) when one
    /// changes. A refused file is logged and shown as the projection's last error.
    pub fn watch_files(&self) -> Result<PluginWatcher, notify::Error> {
        let plugins: Vec<WatchedPlugin> = {
            let map = self.inner.projections.lock().expect("not poisoned");
            map.values()
                .map(|h| WatchedPlugin {
                    kind: eshost_runtime::PluginKind::Projection,
                    name: h.config.name.clone(),
                    path: h.config.plugin.clone(),
                })
                .collect()
        };
        let weak = Arc::downgrade(&self.inner);
        PluginWatcher::new(plugins, move |plugin| {
            let Some(inner) = weak.upgrade() else { return };
            let projections = Projections { inner };
            match projections.swap(&plugin.name, &plugin.path, SwapMode::Rebuild) {
                Ok(outcome) => {
                    tracing::info!(projection = %plugin.name, ?outcome, "plugin file changed")
                }
                Err(error) => tracing::warn!(
                    projection = %plugin.name,
                    "plugin file changed but was refused: {error}"
                ),
            }
        })
    }

    /// Stops every runner (each finishes its batch in flight) and waits for them.
    pub fn shutdown(&self) {
        let handles: Vec<Handle> = self
            .inner
            .projections
            .lock()
            .expect("not poisoned")
            .drain()
            .map(|(_, h)| h)
            .collect();
        stop_all(handles);
    }
}
