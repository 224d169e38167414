//! The composition root: a [`Host`] built from a [`Config`] — the store it names, the
//! plugins it lists, the command pipeline, the projections, the plugin watchers and the
//! erasure steps. The server, the CLI and the benchmarks all start a host this one way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eshost_runtime::{LoadedPlugin, PluginKind, Runtime, RuntimeConfig};
use eshost_store::tap::Tap;
use eshost_store::{EventStore, RecoveringStore, StoreConfig};
use eshost_store_postgres::{KekSource, PgConfig, PgStore};

use crate::aggregate::{AggregateConfig, Aggregates, EngineConfig};
use crate::cluster::control::ProjectionControl;
use crate::cluster::plugins::{ActivationSource, PluginLog, StartVersion, StartedVersions};
use crate::cluster::{Node, erasures, node_id};
use crate::config::{Config, FailurePolicy};
use crate::privacy::Forgetting;
use crate::projection::{PluginWatcher, ProjectionConfig, Projections, WatchedPlugin};
use crate::reactor::Reactors;
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
    reactors: Reactors,
    forgetting: Forgetting,
    plugin_log: PluginLog,
    projection_control: ProjectionControl,
    node: Node,
    /// Stops the followers of the system streams.
    stop: tokio::sync::watch::Sender<bool>,
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
    version: &StartVersion,
    expected: PluginKind,
) -> anyhow::Result<LoadedPlugin> {
    let at = || format!("config file {}: `{key}`", config.file.display());
    let plugin = runtime
        .load_bytes(&version.bytes, &version.label, expected)
        .with_context(|| format!("{}: loading {}", at(), version.label))?;
    let info = plugin.info();
    if info.kind != expected {
        bail!(
            "{}: {} is {} plugin ({:?}), not {}",
            at(),
            version.label,
            info.kind.with_article(),
            info.name,
            expected.with_article()
        );
    }
    if info.name != name {
        bail!(
            "{}: {} describes itself as {:?}, but the config names it {name:?}",
            at(),
            version.label,
            info.name
        );
    }
    Ok(plugin)
}

/// What choosing the versions to run at start needs, and what it chose.
struct Starting<'a> {
    store: &'a dyn EventStore,
    config: &'a Config,
    node: &'a str,
    runtime: &'a Runtime,
    /// Plugin name → the content hash of the version chosen.
    current: HashMap<String, String>,
}

impl Starting<'_> {
    /// The version of the plugin at `config.{section}[index]` to run (see
    /// `cluster::plugins::at_start`), loaded under the plugin's own limits and checked to be
    /// the `kind` and `name` the config says.
    fn load(
        &mut self,
        section: &str,
        index: usize,
        name: &str,
        path: &std::path::Path,
        kind: PluginKind,
    ) -> anyhow::Result<(StartVersion, LoadedPlugin)> {
        let key = format!("{section}[{index}].plugin");
        let runtime = self.runtime.with_limits(self.config.plugin_limits(name));
        let label = path.display().to_string();
        let version =
            crate::cluster::plugins::at_start(self.store, self.node, name, kind, path, |bytes| {
                runtime
                    .load_bytes(bytes, &label, kind)
                    .map(|plugin| plugin.info().version.clone())
                    .map_err(|e| e.to_string())
            })
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("config file {}: `{key}`", self.config.file.display()))?;
        let loaded = load_kind(&runtime, self.config, &key, name, &version, kind)?;
        self.current
            .insert(name.to_owned(), loaded.info().content_hash.clone());
        Ok((version, loaded))
    }
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
    open_store_tapped(config, None)
}

/// [`open_store`], the embedded store's writes going through `tap` (the power-cut tests).
pub fn open_store_tapped(config: &Config, tap: Tap) -> anyhow::Result<Arc<dyn EventStore>> {
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
            store_config.tap = tap;
            Ok(Arc::new(RecoveringStore::open(store_config).with_context(
                || format!("opening store {}", config.store.display()),
            )?))
        }
    }
}

impl Host {
    /// Opens the store and loads every plugin the config names. Call inside a tokio runtime.
    pub fn start(config: &Config) -> anyhow::Result<Host> {
        Host::start_tapped(config, None)
    }

    /// [`Host::start`], every write to the embedded store's files and to `views.redb` going
    /// through `tap`: the power-cut tests record them and cut the power.
    pub fn start_tapped(config: &Config, tap: Tap) -> anyhow::Result<Host> {
        let store = open_store_tapped(config, tap.clone())?;
        let views = Views::open_tapped(&config.store, tap)?;
        let node_id = node_id(&config.store)
            .with_context(|| format!("the node id in {}", config.store.display()))?;
        let node = Node::start(node_id.clone(), config.listen.to_string(), store.clone());
        let runtime = Runtime::new(RuntimeConfig {
            limits: config.limits.clone(),
            ..RuntimeConfig::default()
        })?;
        // Activations up to here are reflected in the versions chosen below; the plugin log
        // follows what comes after.
        let head = store.head();
        let mut starting = Starting {
            store: store.as_ref(),
            config,
            node: &node_id,
            runtime: &runtime,
            current: HashMap::new(),
        };
        let mut upcasters = Vec::new();
        for (index, entry) in config.upcasters.iter().enumerate() {
            let kind = PluginKind::Upcaster;
            match starting.load("upcasters", index, &entry.name, &entry.plugin, kind)? {
                (_, LoadedPlugin::Upcaster(plugin)) => upcasters.push(plugin),
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
            let kind = PluginKind::Aggregate;
            let (_, LoadedPlugin::Aggregate(plugin)) =
                starting.load("aggregates", index, &entry.name, &entry.plugin, kind)?
            else {
                unreachable!("load_kind checks the kind")
            };
            aggregates.register(
                plugin,
                AggregateConfig {
                    snapshot_every: entry.snapshot_every,
                    instance_per_aggregate: entry.instance_per_aggregate,
                    stream_prefix: entry.stream_prefix.clone(),
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
            let kind = PluginKind::Projection;
            let (version, _) =
                starting.load("projections", index, &entry.name, &entry.plugin, kind)?;
            let mut projection = ProjectionConfig::new(&entry.name, &entry.plugin);
            projection.batch = entry.batch;
            projection.attempts = entry.attempts;
            projection.dead_letter = entry.on_failure == FailurePolicy::DeadLetter;
            projection.limits = Some(config.plugin_limits(&entry.name));
            projections
                .add_version(projection, version.bytes, &version.label)
                .with_context(|| {
                    format!(
                        "config file {}: `projections[{index}].plugin`",
                        config.file.display()
                    )
                })?;
        }
        crate::chain_record::reconcile(
            &views,
            store.as_ref(),
            &runtime,
            &upcasters,
            &aggregates,
            &projections,
        )
        .context("the upcaster chain recorded in views.redb")?;
        let reactors = Reactors::new(
            store.clone(),
            views.clone(),
            aggregates.clone(),
            upcasters.clone(),
        );
        for (index, entry) in config.reactors.iter().enumerate() {
            let kind = PluginKind::Reactor;
            let (_, LoadedPlugin::Reactor(plugin)) =
                starting.load("reactors", index, &entry.name, &entry.plugin, kind)?
            else {
                unreachable!("load_kind checks the kind")
            };
            reactors.add(entry.config(), plugin).with_context(|| {
                format!(
                    "config file {}: `reactors[{index}].plugin`",
                    config.file.display()
                )
            })?;
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // A plugin's new versions load under its own limits, like the one they replace.
        let runtimes = config
            .aggregates
            .iter()
            .map(|entry| &entry.name)
            .chain(config.projections.iter().map(|entry| &entry.name))
            .chain(config.upcasters.iter().map(|entry| &entry.name))
            .chain(config.reactors.iter().map(|entry| &entry.name))
            .map(|name| {
                let limits = config.plugin_limits(name);
                (name.clone(), runtime.with_limits(limits))
            })
            .collect();
        let plugin_log = PluginLog::new(
            store.clone(),
            runtimes,
            aggregates.clone(),
            projections.clone(),
            reactors.clone(),
            upcasters.clone(),
            node.clone(),
            StartedVersions {
                current: starting.current,
                head,
            },
        );
        plugin_log.follow(head + 1, stopped.clone());
        let projection_control = ProjectionControl::start(
            store.clone(),
            &views,
            projections.clone(),
            node_id.clone(),
            head,
            stopped.clone(),
        )
        .map_err(anyhow::Error::msg)
        .context("following $projections")?;
        let mut watchers = Vec::new();
        if config.watch_plugins {
            watchers.push(watch_files(config, &plugin_log)?);
        }
        let forgetting = Forgetting::new(
            store.clone(),
            views.clone(),
            Some(aggregates.clone()),
            Some(projections.clone()),
            FORGET_WAIT,
        )
        .with_node(node.clone());
        resume_erasures(&forgetting);
        crate::retention::start(store.clone(), config.archive, stopped.clone());
        erasures::start(
            store.clone(),
            &views,
            forgetting.clone(),
            node.clone(),
            head,
            stopped,
        )
        .map_err(anyhow::Error::msg)
        .context("following $erasures")?;
        Ok(Host {
            parts: Arc::new(Parts {
                config: config.clone(),
                store,
                views,
                runtime,
                aggregates,
                upcasters,
                projections,
                reactors,
                forgetting,
                plugin_log,
                projection_control,
                node,
                stop,
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

    /// The reactors.
    pub fn reactors(&self) -> &Reactors {
        &self.parts.reactors
    }

    /// Forgetting data subjects.
    pub fn forgetting(&self) -> &Forgetting {
        &self.parts.forgetting
    }

    /// Code changes: recorded activations, swaps, rollbacks.
    pub fn plugin_log(&self) -> &PluginLog {
        &self.parts.plugin_log
    }

    /// Projection control that reaches every node (rebuilds).
    pub fn projection_control(&self) -> &ProjectionControl {
        &self.parts.projection_control
    }

    /// This node of the cluster.
    pub fn node(&self) -> &Node {
        &self.parts.node
    }

    /// When the host started.
    pub fn started(&self) -> Instant {
        self.parts.started
    }

    /// Stops the plugin watchers, the reactors and the projections (each finishes its batch
    /// and makes it durable). The command workers and the store close when the last clone is dropped (the
    /// writer finishes what it holds). Blocking.
    pub fn shutdown(self) {
        let _ = self.parts.stop.send(true);
        self.parts.node.stop();
        self.parts
            .watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.parts.reactors.shutdown();
        self.parts.projections.shutdown();
    }
}

/// Watches the configured plugin files: a changed file is activated (and recorded, so every
/// node follows); a reactor goes on from its checkpoint.
fn watch_files(config: &Config, plugin_log: &PluginLog) -> anyhow::Result<PluginWatcher> {
    let aggregates = config.aggregates.iter().map(|entry| WatchedPlugin {
        kind: PluginKind::Aggregate,
        name: entry.name.clone(),
        path: entry.plugin.clone(),
    });
    let projections = config.projections.iter().map(|entry| WatchedPlugin {
        kind: PluginKind::Projection,
        name: entry.name.clone(),
        path: entry.plugin.clone(),
    });
    let upcasters = config.upcasters.iter().map(|entry| WatchedPlugin {
        kind: PluginKind::Upcaster,
        name: entry.name.clone(),
        path: entry.plugin.clone(),
    });
    let reactors = config.reactors.iter().map(|entry| WatchedPlugin {
        kind: PluginKind::Reactor,
        name: entry.name.clone(),
        path: entry.plugin.clone(),
    });
    let plugin_log = plugin_log.clone();
    Ok(PluginWatcher::new(
        aggregates
            .chain(upcasters)
            .chain(projections)
            .chain(reactors)
            .collect(),
        move |plugin| {
            let bytes = match std::fs::read(&plugin.path) {
                Ok(bytes) => bytes,
                Err(error) => {
                    return tracing::warn!(plugin = %plugin.name, "plugin file changed but cannot be read: {error}");
                }
            };
            let reason = format!("{} changed", plugin.path.display());
            match plugin_log.activate(
                &plugin.name,
                bytes,
                ActivationSource::Watcher,
                None,
                Some(reason),
            ) {
                Ok(activated) => tracing::info!(
                    plugin = %plugin.name,
                    hash = %activated.info.content_hash,
                    outcome = ?activated.projection,
                    "plugin file changed: activated"
                ),
                Err(error) => {
                    tracing::warn!(plugin = %plugin.name, "plugin file changed but was refused: {error}")
                }
            }
        },
    )?)
}
