//! The composition root: a [`Host`] built from a [`Config`] — the store it names, the
//! plugins it lists, the command pipeline, the projections, the plugin watchers and the
//! erasure steps. The server, the CLI and the benchmarks all start a host this one way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eshost_runtime::{LoadedPlugin, PluginInfo, PluginKind, Runtime, RuntimeConfig};
use eshost_store::{EventStore, Store, StoreConfig};
use eshost_store_postgres::{KekSource, PgConfig, PgStore};

use crate::aggregate::{AggregateConfig, Aggregates, EngineConfig};
use crate::config::{Config, FailurePolicy};
use crate::privacy::Forgetting;
use crate::projection::{
    PluginWatcher, ProjectionConfig, ProjectionHostError, Projections, SwapMode, SwapOutcome,
    WatchedPlugin,
};
use crate::upcast::UpcasterChain;
use crate::views::Views;

/// A running host: the store, the plugins, the command pipeline, the projections and the
/// erasure steps of one config. Cheap to clone; [`Host::shutdown`] stops it.
#[derive(Clone)]
pub struct Host {
    parts: Arc<Parts>,
}

struct Parts {
    config: Config,
    store: Arc<dyn EventStore>,
    views: Views,
    runtime: Runtime,
    aggregates: Aggregates,
    upcasters: UpcasterChain,
    projections: Projections,
    forgetting: Forgetting,
    watchers: Mutex<Vec<PluginWatcher>>,
    started: Instant,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("config", &self.parts.config.file)
            .finish_non_exhaustive()
    }
}

fn load_kind(
    runtime: &Runtime,
    config: &Config,
    key: &str,
    name: &str,
    path: &std::path::Path,
    expected: PluginKind,
) -> anyhow::Result<LoadedPlugin> {
    let at = || format!("config file {}: `{key}`", config.file.display());
    let plugin = runtime
        .load_any(path)
        .with_context(|| format!("{}: loading {}", at(), path.display()))?;
    let info = plugin.info();
    if info.kind != expected {
        bail!(
            "{}: {} is {} plugin ({:?}), not {}",
            at(),
            path.display(),
            info.kind.with_article(),
            info.name,
            expected.with_article()
        );
    }
    if info.name != name {
        bail!(
            "{}: {} describes itself as {:?}, but the config names it {name:?}",
            at(),
            path.display(),
            info.name
        );
    }
    Ok(plugin)
}

/// What [`Host::swap_plugin`] did.
#[derive(Debug, Clone)]
pub enum PluginSwap {
    /// An aggregate's new version decides the next commands.
    Aggregate {
        /// The version it replaced.
        old: Box<PluginInfo>,
        /// The version now running.
        new: Box<PluginInfo>,
    },
    /// A projection's new version (it rebuilds beside the old one, or was the same).
    Projection(SwapOutcome),
}

/// Why [`Host::swap_plugin`] refused an upload; the running version keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// No plugin of that name is loaded.
    #[error("no plugin named {0:?}")]
    Unknown(String),
    /// Not a component of the right kind, or it names itself otherwise.
    #[error("{0}")]
    BadPlugin(String),
    /// Upcasters are fixed for the life of the host.
    #[error("upcaster {0:?} cannot be swapped while the host runs; restart with the new file")]
    NotSwappable(String),
    /// The projection refused it or could not take it.
    #[error(transparent)]
    Projection(#[from] ProjectionHostError),
    /// The pipeline could not take it.
    #[error("{0}")]
    Failed(String),
}

/// How long a forget request waits for projections to rebuild before answering.
const FORGET_WAIT: Duration = Duration::from_secs(600);

/// Finish, in the background, erasures a crash or an offline `eshost forget` left pending.
fn resume_erasures(forgetting: &Forgetting) {
    match forgetting.pending() {
        Ok(pending) if pending.is_empty() => {}
        Ok(_) => {
            let forgetting = forgetting.clone();
            let spawned = std::thread::Builder::new()
                .name("eshost-erasures".into())
                .spawn(move || {
                    for outcome in forgetting.resume() {
                        match outcome {
                            Ok(report) => tracing::info!(
                                subject = %report.subject_id,
                                projections = ?report.projections_rebuilt,
                                "erasure finished"
                            ),
                            Err(error) => tracing::error!(%error, "erasure not finished"),
                        }
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start finishing pending erasures");
            }
        }
        Err(error) => tracing::error!(%error, "cannot read pending erasures"),
    }
}

/// The store the config names: the embedded one in its directory, or PostgreSQL.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn EventStore>> {
    match &config.postgres {
        Some(postgres) => {
            let pg = PgConfig::new(
                &postgres.url,
                KekSource::parse(&postgres.key_encryption_key),
            )
            .with_context(|| format!("config file {}: `store`", config.file.display()))?;
            let url = pg.display_url();
            Ok(Arc::new(
                PgStore::open(pg).with_context(|| format!("opening store {url}"))?,
            ))
        }
        None => {
            let mut store_config = StoreConfig::new(&config.store);
            store_config.keys = config.keys.clone();
            Ok(Arc::new(Store::open(store_config).with_context(|| {
                format!("opening store {}", config.store.display())
            })?))
        }
    }
}

impl Host {
    /// Opens the store and loads every plugin the config names. Call inside a tokio runtime.
    pub fn start(config: &Config) -> anyhow::Result<Host> {
        let store = open_store(config)?;
        let views = Views::open(&config.store)?;
        let runtime = Runtime::new(RuntimeConfig {
            limits: config.limits.clone(),
            ..RuntimeConfig::default()
        })?;
        let mut upcasters = Vec::new();
        for (index, entry) in config.upcasters.iter().enumerate() {
            let key = format!("upcasters[{index}].plugin");
            let runtime = runtime.with_limits(config.plugin_limits(&entry.name));
            match load_kind(
                &runtime,
                config,
                &key,
                &entry.name,
                &entry.plugin,
                PluginKind::Upcaster,
            )? {
                LoadedPlugin::Upcaster(plugin) => upcasters.push(plugin),
                _ => unreachable!("load_kind checks the kind"),
            }
        }
        let upcasters = UpcasterChain::new(upcasters)
            .with_context(|| format!("config file {}: `upcasters`", config.file.display()))?;
        let aggregates = Aggregates::new(
            store.clone(),
            views.clone(),
            upcasters.clone(),
            EngineConfig::default(),
        )?;
        for (index, entry) in config.aggregates.iter().enumerate() {
            let key = format!("aggregates[{index}].plugin");
            let runtime = runtime.with_limits(config.plugin_limits(&entry.name));
            let LoadedPlugin::Aggregate(plugin) = load_kind(
                &runtime,
                config,
                &key,
                &entry.name,
                &entry.plugin,
                PluginKind::Aggregate,
            )?
            else {
                unreachable!("load_kind checks the kind")
            };
            aggregates.register(
                plugin,
                AggregateConfig {
                    snapshot_every: entry.snapshot_every,
                },
            )?;
        }
        let projections = Projections::with_upcasters(
            store.clone(),
            views.clone(),
            runtime.clone(),
            upcasters.clone(),
        );
        for (index, entry) in config.projections.iter().enumerate() {
            let key = format!("projections[{index}].plugin");
            let limits = config.plugin_limits(&entry.name);
            load_kind(
                &runtime.with_limits(limits.clone()),
                config,
                &key,
                &entry.name,
                &entry.plugin,
                PluginKind::Projection,
            )?;
            let mut projection = ProjectionConfig::new(&entry.name, &entry.plugin);
            projection.batch = entry.batch;
            projection.attempts = entry.attempts;
            projection.dead_letter = entry.on_failure == FailurePolicy::DeadLetter;
            projection.limits = Some(limits);
            projections
                .add(projection)
                .with_context(|| format!("config file {}: `{key}`", config.file.display()))?;
        }
        let mut watchers = Vec::new();
        if config.watch_plugins {
            watchers.push(projections.watch_files()?);
            watchers.push(watch_aggregates(config, &runtime, &aggregates)?);
        }
        let forgetting = Forgetting::new(
            store.clone(),
            views.clone(),
            Some(aggregates.clone()),
            Some(projections.clone()),
            FORGET_WAIT,
        );
        resume_erasures(&forgetting);
        Ok(Host {
            parts: Arc::new(Parts {
                config: config.clone(),
                store,
                views,
                runtime,
                aggregates,
                upcasters,
                projections,
                forgetting,
                watchers: Mutex::new(watchers),
                started: Instant::now(),
            }),
        })
    }

    /// The config the host was started from.
    pub fn config(&self) -> &Config {
        &self.parts.config
    }

    /// The event store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.parts.store
    }

    /// The derived-data database.
    pub fn views(&self) -> &Views {
        &self.parts.views
    }

    /// The plugin runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.parts.runtime
    }

    /// The runtime plugin `name` loads under: a view of [`runtime`](Self::runtime) with the
    /// limits the config gives that plugin (its own `limits` over `[limits]`). Load a new
    /// version of a configured plugin (an upload) through it, so it keeps its limits.
    pub fn runtime_for(&self, name: &str) -> Runtime {
        let limits = self.parts.config.plugin_limits(name);
        self.parts.runtime.with_limits(limits)
    }

    /// The command pipeline.
    pub fn aggregates(&self) -> &Aggregates {
        &self.parts.aggregates
    }

    /// The upcaster chain every read path applies.
    pub fn upcasters(&self) -> &UpcasterChain {
        &self.parts.upcasters
    }

    /// The projections.
    pub fn projections(&self) -> &Projections {
        &self.parts.projections
    }

    /// Forgetting data subjects.
    pub fn forgetting(&self) -> &Forgetting {
        &self.parts.forgetting
    }

    /// Swaps in an uploaded version of the aggregate or projection `name`: the component is
    /// compiled and checked (the plugin's kind, describing itself as `name`) before anything
    /// changes. An aggregate's new version decides the next commands; a projection's rebuilds
    /// beside the old one and switches in when caught up. Blocking (it compiles). The HTTP
    /// API's `PUT /plugins/{name}` and the admin UI's upload both come here.
    pub fn swap_plugin(&self, name: &str, bytes: Vec<u8>) -> Result<PluginSwap, SwapError> {
        let label = format!("upload for {name:?}");
        let parts = &self.parts;
        if parts.aggregates.types().iter().any(|t| t.name == name) {
            // Under the limits the config gives this aggregate, like the version it replaces.
            let loaded = self
                .runtime_for(name)
                .load_bytes(&bytes, &label, PluginKind::Aggregate)
                .map_err(|e| SwapError::BadPlugin(e.to_string()))?;
            let LoadedPlugin::Aggregate(plugin) = loaded else {
                return Err(SwapError::Failed("the runtime loaded another kind".into()));
            };
            if plugin.info().name != name {
                return Err(SwapError::BadPlugin(format!(
                    "the upload describes itself as {:?}, not {name:?}",
                    plugin.info().name
                )));
            }
            let new = plugin.info().clone();
            let old = parts
                .aggregates
                .swap(plugin, None)
                .map_err(|e| SwapError::Failed(e.to_string()))?;
            return Ok(PluginSwap::Aggregate {
                old: Box::new(old),
                new: Box::new(new),
            });
        }
        if parts.projections.status(name).is_some() {
            let outcome = parts
                .projections
                .swap_bytes(name, bytes, &label, SwapMode::Rebuild)?;
            return Ok(PluginSwap::Projection(outcome));
        }
        if parts
            .upcasters
            .plugins()
            .iter()
            .any(|p| p.info().name == name)
        {
            return Err(SwapError::NotSwappable(name.to_owned()));
        }
        Err(SwapError::Unknown(name.to_owned()))
    }

    /// When the host started.
    pub fn started(&self) -> Instant {
        self.parts.started
    }

    /// Stops the plugin watchers and the projections (each finishes its batch and makes it
    /// durable). The command workers and the store close when the last clone is dropped (the
    /// writer finishes what it holds). Blocking.
    pub fn shutdown(self) {
        self.parts
            .watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.parts.projections.shutdown();
    }
}
fn watch_aggregates(
    config: &Config,
    runtime: &Runtime,
    aggregates: &Aggregates,
) -> anyhow::Result<PluginWatcher> {
    let plugins = config
        .aggregates
        .iter()
        .map(|entry| WatchedPlugin {
            kind: PluginKind::Aggregate,
            name: entry.name.clone(),
            path: entry.plugin.clone(),
        })
        .collect();
    // Each aggregate reloads under its own limits.
    let runtimes: HashMap<String, Runtime> = config
        .aggregates
        .iter()
        .map(|entry| {
            let limits = config.plugin_limits(&entry.name);
            (entry.name.clone(), runtime.with_limits(limits))
        })
        .collect();
    let aggregates = aggregates.clone();
    Ok(PluginWatcher::new(plugins, move |plugin| {
        let Some(runtime) = runtimes.get(&plugin.name) else {
            return;
        };
        match runtime.load_aggregate(&plugin.path) {
            Ok(loaded) if loaded.info().name == plugin.name => {
                match aggregates.swap(loaded, None) {
                    Ok(old) => {
                        tracing::info!(aggregate = %plugin.name, old = %old.content_hash, "plugin file changed: swapped")
                    }
                    Err(error) => tracing::warn!(aggregate = %plugin.name, "swap failed: {error}"),
                }
            }
            Ok(loaded) => tracing::warn!(
                aggregate = %plugin.name,
                "plugin file changed but describes itself as {:?}; refused",
                loaded.info().name
            ),
            Err(error) => {
                tracing::warn!(aggregate = %plugin.name, "plugin file changed but was refused: {error}")
            }
        }
    })?)
}
