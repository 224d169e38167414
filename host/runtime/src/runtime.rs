//! The [`Runtime`]: one wasmtime engine, the component cache and a linker per world, and
//! loading a component into a typed plugin ([`LoadedPlugin`]): read, check the header, compile
//! or take from the cache, detect the world and contract version (`wit::detect`), link, ask
//! `describe()` and check it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};

use super::aggregate::AggregatePlugin;
use super::cache;
use super::engine;
use super::error::{LoadError, RuntimeError};
use super::metrics::PluginMetrics;
use super::plugin::{LoadStats, PluginCore, PluginInfo, Sandboxed, World};
use super::projection::ProjectionPlugin;
use super::reactor::ReactorPlugin;
use super::sandbox::{self, HostState, Limits};
use super::types::{Description, PluginKind};
use super::upcaster::UpcasterPlugin;
use super::wit::{self, AggregatePre, ProjectionPre, ReactorPre, UpcasterPre};

/// How to build a [`Runtime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Limits for every plugin (a plugin can get its own: [`Runtime::with_limits`],
    /// [`Runtime::load_with_limits`]).
    pub limits: Limits,
    /// Where compiled components are cached; `None` disables the cache. Default:
    /// `$ESHOST_CACHE_DIR`, else `$XDG_CACHE_HOME/eshost/components`, else
    /// `~/.cache/eshost/components`.
    pub cache_dir: Option<PathBuf>,
    /// The most bytes of compiled components the cache keeps; the least recently used go
    /// first. Default: `$ESHOST_CACHE_MAX_MB` MiB, else 2 GiB.
    pub cache_max_bytes: u64,
    /// How often the epoch advances: the granularity of time limits. Default 10 ms.
    pub epoch_tick: Duration,
    /// The most native stack a plugin call may use, in bytes. Default 512 KiB.
    pub max_wasm_stack: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            limits: Limits::default(),
            cache_dir: Some(cache::default_dir()),
            cache_max_bytes: cache::default_max_bytes(),
            epoch_tick: Duration::from_millis(10),
            max_wasm_stack: 512 * 1024,
        }
    }
}

/// A plugin of any kind, as [`Runtime::load_any`] returns it.
#[derive(Debug, Clone)]
pub enum LoadedPlugin {
    /// An aggregate.
    Aggregate(AggregatePlugin),
    /// An upcaster.
    Upcaster(UpcasterPlugin),
    /// A projection.
    Projection(ProjectionPlugin),
    /// A reactor.
    Reactor(ReactorPlugin),
}

impl LoadedPlugin {
    /// Who the plugin is.
    pub fn info(&self) -> &PluginInfo {
        match self {
            LoadedPlugin::Aggregate(p) => p.info(),
            LoadedPlugin::Upcaster(p) => p.info(),
            LoadedPlugin::Projection(p) => p.info(),
            LoadedPlugin::Reactor(p) => p.info(),
        }
    }

    /// How it was loaded.
    pub fn load_stats(&self) -> LoadStats {
        match self {
            LoadedPlugin::Aggregate(p) => p.load_stats(),
            LoadedPlugin::Upcaster(p) => p.load_stats(),
            LoadedPlugin::Projection(p) => p.load_stats(),
            LoadedPlugin::Reactor(p) => p.load_stats(),
        }
    }
}

/// The plugin runtime: one engine, one component cache, one linker per world. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
    /// What plugins load under (the config's, or a view's: [`with_limits`](Self::with_limits)).
    limits: Limits,
}

struct Shared {
    engine: wasmtime::Engine,
    cache: cache::ComponentCache,
    config: RuntimeConfig,
    /// Aggregates and upcasters import only WASI.
    wasi_linker: Linker<HostState>,
    /// Projections import WASI and the read model.
    projection_linker: Linker<HostState>,
    /// Every plugin this runtime loads records its calls here.
    metrics: PluginMetrics,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.shared.config)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Starts a runtime: builds the engine, starts its epoch ticker thread, opens the cache.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let engine = engine::new_engine(config.max_wasm_stack)?;
        engine::start_ticker(&engine, config.epoch_tick)?;
        let cache =
            cache::ComponentCache::new(&engine, config.cache_dir.clone(), config.cache_max_bytes)
                .map_err(|source| RuntimeError::CacheDir {
                path: config.cache_dir.clone().unwrap_or_default(),
                source,
            })?;
        let linker_error = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
        let wasi_linker = sandbox::new_linker(&engine).map_err(linker_error)?;
        let mut projection_linker = sandbox::new_linker(&engine).map_err(linker_error)?;
        wit::link_read_model(&mut projection_linker).map_err(linker_error)?;
        Ok(Runtime {
            limits: config.limits.clone(),
            shared: Arc::new(Shared {
                engine,
                cache,
                config,
                wasi_linker,
                projection_linker,
                metrics: PluginMetrics::default(),
            }),
        })
    }

    /// The configuration the runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.shared.config
    }

    /// The same runtime (engine, cache, linkers), loading plugins under `limits` instead: every
    /// `load*` of the view runs the load-time `describe()` and every instance of the plugins
    /// it loads under them. For the plugins a config gives limits of their own, e.g. a Python
    /// or JavaScript interpreter that needs more memory.
    pub fn with_limits(&self, limits: Limits) -> Runtime {
        Runtime {
            shared: self.shared.clone(),
            limits,
        }
    }

    /// The limits plugins loaded by this runtime run under (the config's, unless this is a
    /// [`with_limits`](Self::with_limits) view).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The durations and faults of the calls of every plugin this runtime (and every
    /// [`with_limits`](Self::with_limits) view of it) loaded.
    pub fn plugin_metrics(&self) -> &PluginMetrics {
        &self.shared.metrics
    }

    /// The wasmtime engine (for embedding code that needs it, e.g. benchmarks).
    pub fn engine(&self) -> &wasmtime::Engine {
        &self.shared.engine
    }

    /// Where the compiled form of a component with this content hash is cached, if caching
    /// is on.
    pub fn cache_path(&self, content_hash: &str) -> Option<PathBuf> {
        self.shared.cache.path_for(content_hash)
    }

    /// Loads the component at `path` as a plugin of kind `expected`. A component of another
    /// world (or one whose `describe()` disagrees with its world) is refused.
    pub fn load(
        &self,
        path: impl AsRef<Path>,
        expected: PluginKind,
    ) -> Result<LoadedPlugin, LoadError> {
        let (bytes, label) = read(path.as_ref())?;
        Ok(self.load_inner(&bytes, &label, Some(expected))?.0)
    }

    /// [`load`](Self::load) under `limits` instead of the runtime's: the `describe()` call made
    /// while loading and every instance of the plugin run under them. For a plugin that needs
    /// other limits than the rest, e.g. a Python or JavaScript interpreter
    /// (`docs/plugins-python.md`).
    pub fn load_with_limits(
        &self,
        path: impl AsRef<Path>,
        expected: PluginKind,
        limits: Limits,
    ) -> Result<LoadedPlugin, LoadError> {
        let (bytes, label) = read(path.as_ref())?;
        Ok(self.load_limited(&bytes, &label, Some(expected), limits)?.0)
    }

    /// Loads a component from memory; `label` names it in errors until it has described
    /// itself.
    pub fn load_bytes(
        &self,
        bytes: &[u8],
        label: &str,
        expected: PluginKind,
    ) -> Result<LoadedPlugin, LoadError> {
        Ok(self.load_inner(bytes, label, Some(expected))?.0)
    }

    /// Loads the component at `path` as whatever kind of plugin it is.
    pub fn load_any(&self, path: impl AsRef<Path>) -> Result<LoadedPlugin, LoadError> {
        let (bytes, label) = read(path.as_ref())?;
        Ok(self.load_inner(&bytes, &label, None)?.0)
    }

    /// Loads an aggregate plugin.
    pub fn load_aggregate(&self, path: impl AsRef<Path>) -> Result<AggregatePlugin, LoadError> {
        match self.load(path, PluginKind::Aggregate)? {
            LoadedPlugin::Aggregate(plugin) => Ok(plugin),
            _ => unreachable!("load checks the kind"),
        }
    }

    /// Loads an upcaster plugin.
    pub fn load_upcaster(&self, path: impl AsRef<Path>) -> Result<UpcasterPlugin, LoadError> {
        match self.load(path, PluginKind::Upcaster)? {
            LoadedPlugin::Upcaster(plugin) => Ok(plugin),
            _ => unreachable!("load checks the kind"),
        }
    }

    /// Loads a projection plugin.
    pub fn load_projection(&self, path: impl AsRef<Path>) -> Result<ProjectionPlugin, LoadError> {
        match self.load(path, PluginKind::Projection)? {
            LoadedPlugin::Projection(plugin) => Ok(plugin),
            _ => unreachable!("load checks the kind"),
        }
    }

    /// Loads a reactor plugin.
    pub fn load_reactor(&self, path: impl AsRef<Path>) -> Result<ReactorPlugin, LoadError> {
        match self.load(path, PluginKind::Reactor)? {
            LoadedPlugin::Reactor(plugin) => Ok(plugin),
            _ => unreachable!("load checks the kind"),
        }
    }

    /// Reads, compiles (or takes from the cache), links and describes a component.
    pub(crate) fn load_inner(
        &self,
        bytes: &[u8],
        label: &str,
        expected: Option<PluginKind>,
    ) -> Result<(LoadedPlugin, Component), LoadError> {
        self.load_limited(bytes, label, expected, self.limits.clone())
    }

    /// [`load_inner`](Self::load_inner) with the plugin's own limits.
    fn load_limited(
        &self,
        bytes: &[u8],
        label: &str,
        expected: Option<PluginKind>,
        limits: Limits,
    ) -> Result<(LoadedPlugin, Component), LoadError> {
        let start = Instant::now();
        check_header(bytes, label)?;
        if let Some(expected) = expected
            && let Some(kinds) = wit::declared_kinds(bytes)
            && let [found] = kinds[..]
            && found != expected
        {
            return Err(LoadError::WrongWorld {
                file: label.to_owned(),
                found,
                expected,
            });
        }
        let content_hash = blake3::hash(bytes).to_hex().to_string();
        let engine = &self.shared.engine;
        let cached = self
            .shared
            .cache
            .load(engine, bytes, &content_hash)
            .map_err(|e| LoadError::Invalid {
                file: label.to_owned(),
                message: format!("{e:#}"),
            })?;
        let component = cached.component;
        let target = wit::detect(engine, &component, label)?;
        let linker = match target.kind {
            PluginKind::Projection | PluginKind::Reactor => &self.shared.projection_linker,
            PluginKind::Aggregate | PluginKind::Upcaster => &self.shared.wasi_linker,
        };
        let instance_pre =
            linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::Instantiate {
                    file: label.to_owned(),
                    message: format!("{e:#}"),
                })?;
        let invalid = |e: wasmtime::Error| LoadError::Invalid {
            file: label.to_owned(),
            message: format!("{e:#}"),
        };
        let core = PluginCore {
            info: PluginInfo {
                name: label.to_owned(),
                kind: target.kind,
                version: String::new(),
                handles: Vec::new(),
                upcasts: Vec::new(),
                content_hash,
                wit_version: target.exported,
            },
            name: Arc::from(label),
            engine: engine.clone(),
            limits,
            epoch_tick: self.shared.config.epoch_tick,
            load_stats: LoadStats {
                cache_hit: cached.hit,
                component: cached.elapsed,
                total: Duration::ZERO,
            },
            metrics: Some(self.shared.metrics.clone()),
        };
        let version = target.version;
        let plugin = match target.kind {
            PluginKind::Aggregate => {
                let pre = AggregatePre::new(version, instance_pre).map_err(invalid)?;
                let (core, pre) = describe(core, pre, expected, start)?;
                LoadedPlugin::Aggregate(AggregatePlugin::new(core, pre))
            }
            PluginKind::Upcaster => {
                let pre = UpcasterPre::new(version, instance_pre).map_err(invalid)?;
                let (core, pre) = describe(core, pre, expected, start)?;
                LoadedPlugin::Upcaster(UpcasterPlugin::new(core, pre))
            }
            PluginKind::Projection => {
                let pre = ProjectionPre::new(version, instance_pre).map_err(invalid)?;
                let (core, pre) = describe(core, pre, expected, start)?;
                LoadedPlugin::Projection(ProjectionPlugin::new(core, pre))
            }
            PluginKind::Reactor => {
                let pre = ReactorPre::new(version, instance_pre).map_err(invalid)?;
                let (core, pre) = describe(core, pre, expected, start)?;
                LoadedPlugin::Reactor(ReactorPlugin::new(core, pre))
            }
        };
        tracing::debug!(
            plugin = %plugin.info().name,
            kind = %plugin.info().kind,
            wit = %plugin.info().wit_version,
            hash = %plugin.info().content_hash,
            cache_hit = plugin.load_stats().cache_hit,
            ms = plugin.load_stats().total.as_secs_f64() * 1000.0,
            "plugin loaded"
        );
        Ok((plugin, component))
    }
}

/// Calls `describe()` in a fresh instance, checks the answer against the world and the
/// expected kind, and records it in the plugin's identity.
fn describe<W: World>(
    mut core: PluginCore,
    pre: W,
    expected: Option<PluginKind>,
    start: Instant,
) -> Result<(Arc<PluginCore>, Arc<W>), LoadError> {
    let pre = Arc::new(pre);
    // Not recorded: until `describe()` answers, the plugin has no name, only a file.
    let probe_core = PluginCore {
        metrics: None,
        ..core.clone()
    };
    let mut probe = Sandboxed::new(Arc::new(probe_core), pre.clone());
    let described = probe.call_plain("describe", 0, 0, W::describe)?;
    check_description(&core, &described, expected)?;
    core.name = Arc::from(described.name.as_str());
    core.info.name = described.name;
    core.info.version = described.version;
    core.info.handles = described.handles;
    core.info.upcasts = described.upcasts;
    core.load_stats.total = start.elapsed();
    Ok((Arc::new(core), pre))
}

/// Checks what `describe()` said against the world and the expected kind.
fn check_description(
    core: &PluginCore,
    described: &Description,
    expected: Option<PluginKind>,
) -> Result<(), LoadError> {
    let world = core.info.kind;
    let name = &described.name;
    if name.trim().is_empty() || name.chars().any(char::is_control) || name.len() > 128 {
        return Err(LoadError::BadDescription {
            file: core.info.name.clone(),
            message: format!("the name {name:?} is empty, too long or has control characters"),
        });
    }
    if let Some(expected) = expected
        && expected != world
    {
        return Err(LoadError::WrongKind {
            name: name.clone(),
            found: world,
            expected,
        });
    }
    if described.kind != world {
        return Err(LoadError::KindMismatch {
            name: name.clone(),
            world,
            described: described.kind,
        });
    }
    Ok(())
}

/// Reads a plugin file; the label used in errors is its file name.
pub(crate) fn read(path: &Path) -> Result<(Vec<u8>, String), LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let label = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    Ok((bytes, label))
}

/// Refuses bytes that are not a WebAssembly component, with a reason.
fn check_header(bytes: &[u8], label: &str) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(LoadError::NotWasm {
            file: label.to_owned(),
        });
    }
    // Bytes 4..8: version (u16 LE) and layer (u16 LE). Layer 0 is a core module, 1 a component.
    let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
    match layer {
        0 => Err(LoadError::CoreModule {
            file: label.to_owned(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AggregateInstance, MemoryReadModel, ProjectionInstance, UpcasterInstance};

    #[test]
    fn plugins_and_instances_can_move_to_worker_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Runtime>();
        send_sync::<AggregatePlugin>();
        send_sync::<UpcasterPlugin>();
        send_sync::<ProjectionPlugin>();
        send::<AggregateInstance>();
        send::<UpcasterInstance>();
        send::<ProjectionInstance<MemoryReadModel>>();
    }

    #[test]
    fn headers_tell_modules_from_components() {
        assert!(matches!(
            check_header(b"not wasm at all", "x"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0", "x"),
            Err(LoadError::CoreModule { .. })
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0", "x").is_ok());
    }
}
