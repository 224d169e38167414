//! The wasmtime runtime that loads and sandboxes plugins.
//!
//! One [`Runtime`] holds one wasmtime `Engine`, an on-disk cache of compiled components, and a
//! linker per WIT world. [`Runtime::load`] reads a component, checks that it targets the
//! expected world and supported contract version, asks it to `describe()` itself, and returns
//! a typed plugin: [`AggregatePlugin`], [`UpcasterPlugin`] or [`ProjectionPlugin`]. A plugin
//! makes sandboxed instances ([`AggregateInstance`], ...) whose calls run under the
//! [`Limits`]; a fault in a call becomes a [`PluginError`] naming the plugin, and the instance
//! is replaced.
//!
//! Calls are synchronous: plugin code is pure computation (the only host calls are the
//! read-model ones, and redb is synchronous too), so there is nothing to await, and a sync
//! call avoids a fiber switch and a boxed future per call. Run plugin calls on worker threads
//! or in `tokio::task::spawn_blocking`, never directly on an async task: the time limit
//! (epoch interruption) bounds how long a call holds its thread.
//!
//! Modules: `engine` (the engine and its epoch ticker), `cache` (compiled components by
//! content hash), `sandbox` (WASI without capabilities, clocks, randomness, logs, [`Limits`]),
//! [`bindings`] (the one `bindgen!`), `plugin` (identity and the call machinery), one module
//! per world (`aggregate`, `upcaster`, `projection`), and `inspect`.

mod aggregate;
pub mod bindings;
mod cache;
mod engine;
mod error;
mod inspect;
mod plugin;
mod projection;
mod sandbox;
mod upcaster;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};

pub use aggregate::{
    AggregateInstance, AggregatePlugin, ApplyError, HandleError, Parked, RestoreError,
};
pub use bindings::types::{
    Command, CommandError, Event, EventError, NewEvent, UpcastResult, UpcastedEvent, VersionedType,
};
pub use error::{LoadError, PluginError, RuntimeError};
pub use inspect::{InspectError, Inspection, inspect};
pub use plugin::{LoadStats, LoadedPlugin, PluginInfo, PluginKind};
pub use projection::{
    MemoryReadModel, ProjectionError, ProjectionInstance, ProjectionPlugin, QueryError, ReadModel,
    ReadModelError,
};
pub use sandbox::Limits;
pub use upcaster::{UpcastError, UpcasterInstance, UpcasterPlugin};

use plugin::{PluginCore, Sandboxed, World};
use sandbox::HostState;

/// The version of the `eshost:plugin` WIT package this host implements.
pub const WIT_VERSION: &str = "0.1.0";

/// The contract versions this host loads: every 0.1.x (semver-compatible patches).
const SUPPORTED: &str = "0.1";

/// How to build a [`Runtime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Limits for every plugin (a plugin can get its own with `with_limits`).
    pub limits: Limits,
    /// Where compiled components are cached; `None` disables the cache. Default:
    /// `$ESHOST_CACHE_DIR`, else `$XDG_CACHE_HOME/eshost/components`, else
    /// `~/.cache/eshost/components`.
    pub cache_dir: Option<PathBuf>,
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
            epoch_tick: Duration::from_millis(10),
            max_wasm_stack: 512 * 1024,
        }
    }
}

/// The plugin runtime: one engine, one component cache, one linker per world. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

struct Shared {
    engine: wasmtime::Engine,
    cache: cache::ComponentCache,
    config: RuntimeConfig,
    /// Aggregates and upcasters import only WASI.
    wasi_linker: Linker<HostState>,
    /// Projections import WASI and the read model.
    projection_linker: Linker<HostState>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Starts a runtime: builds the engine, starts its epoch ticker thread, opens the cache.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let engine = engine::new_engine(&config)?;
        engine::start_ticker(&engine, config.epoch_tick)?;
        let cache =
            cache::ComponentCache::new(&engine, config.cache_dir.clone()).map_err(|source| {
                RuntimeError::CacheDir {
                    path: config.cache_dir.clone().unwrap_or_default(),
                    source,
                }
            })?;
        let linker_error = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
        let wasi_linker = sandbox::new_linker(&engine).map_err(linker_error)?;
        let mut projection_linker = sandbox::new_linker(&engine).map_err(linker_error)?;
        bindings::projection::eshost::plugin::read_model::add_to_linker::<_, HasSelf<HostState>>(
            &mut projection_linker,
            |state| state,
        )
        .map_err(linker_error)?;
        Ok(Runtime {
            shared: Arc::new(Shared {
                engine,
                cache,
                config,
                wasi_linker,
                projection_linker,
            }),
        })
    }

    /// The configuration the runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.shared.config
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

    /// Reads, compiles (or takes from the cache), links and describes a component.
    fn load_inner(
        &self,
        bytes: &[u8],
        label: &str,
        expected: Option<PluginKind>,
    ) -> Result<(LoadedPlugin, Component), LoadError> {
        let limits = self.shared.config.limits.clone();
        self.load_limited(bytes, label, expected, limits)
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
        let (world, wit_version) = detect_world(engine, &component, label)?;
        let linker = match world {
            PluginKind::Projection => &self.shared.projection_linker,
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
        let mut core = PluginCore {
            info: PluginInfo {
                name: label.to_owned(),
                kind: world,
                version: String::new(),
                handles: Vec::new(),
                upcasts: Vec::new(),
                content_hash,
                wit_version,
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
        };
        let plugin = match world {
            PluginKind::Aggregate => {
                let pre =
                    bindings::aggregate::AggregatePluginPre::new(instance_pre).map_err(invalid)?;
                let described =
                    describe(&mut core, &pre, |store, guest| guest.call_describe(store))?;
                check_description(&core, described, expected)?;
                core.load_stats.total = start.elapsed();
                LoadedPlugin::Aggregate(AggregatePlugin::new(Arc::new(core), pre))
            }
            PluginKind::Upcaster => {
                let pre =
                    bindings::upcaster::UpcasterPluginPre::new(instance_pre).map_err(invalid)?;
                let described =
                    describe(&mut core, &pre, |store, guest| guest.call_describe(store))?;
                check_description(&core, described, expected)?;
                core.load_stats.total = start.elapsed();
                LoadedPlugin::Upcaster(UpcasterPlugin::new(Arc::new(core), pre))
            }
            PluginKind::Projection => {
                let pre = bindings::projection::ProjectionPluginPre::new(instance_pre)
                    .map_err(invalid)?;
                let described =
                    describe(&mut core, &pre, |store, guest| guest.call_describe(store))?;
                check_description(&core, described, expected)?;
                core.load_stats.total = start.elapsed();
                LoadedPlugin::Projection(ProjectionPlugin::new(Arc::new(core), pre))
            }
        };
        tracing::debug!(
            plugin = %plugin.info().name,
            kind = %plugin.info().kind,
            hash = %plugin.info().content_hash,
            cache_hit = plugin.load_stats().cache_hit,
            ms = plugin.load_stats().total.as_secs_f64() * 1000.0,
            "plugin loaded"
        );
        Ok((plugin, component))
    }
}

/// Calls `describe()` in a fresh instance and records the answer in `core.info`.
fn describe<W: World + Clone>(
    core: &mut PluginCore,
    pre: &W,
    call: impl FnOnce(
        &mut wasmtime::Store<HostState>,
        &W::Bindings,
    ) -> wasmtime::Result<bindings::types::PluginInfo>,
) -> Result<bindings::types::PluginInfo, LoadError> {
    let probe = Arc::new(core.clone());
    let mut sandbox = Sandboxed::new(probe, Arc::new(pre.clone()));
    let described = sandbox.call_plain(0, call)?;
    core.info.name = described.name.clone();
    core.name = Arc::from(described.name.as_str());
    core.info.version = described.version.clone();
    core.info.handles = described.handles.clone();
    core.info.upcasts = described.upcasts.clone();
    Ok(described)
}

/// Checks what `describe()` said against the world and the expected kind.
fn check_description(
    core: &PluginCore,
    described: bindings::types::PluginInfo,
    expected: Option<PluginKind>,
) -> Result<(), LoadError> {
    let world = core.info.kind;
    let name = described.name;
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
            name,
            found: world,
            expected,
        });
    }
    let described_kind = PluginKind::from(described.kind);
    if described_kind != world {
        return Err(LoadError::KindMismatch {
            name,
            world,
            described: described_kind,
        });
    }
    Ok(())
}

/// Which world a component targets, from the eshost interface it exports, and the version of
/// the contract.
fn detect_world(
    engine: &wasmtime::Engine,
    component: &Component,
    label: &str,
) -> Result<(PluginKind, String), LoadError> {
    let ty = component.component_type();
    let mut found: Option<(PluginKind, String)> = None;
    let mut unsupported: Option<String> = None;
    for (name, _) in ty.exports(engine) {
        let Some((kind, version)) = parse_export(name) else {
            continue;
        };
        if !version_supported(&version) {
            unsupported = Some(version);
            continue;
        }
        if let Some((other, _)) = &found
            && *other != kind
        {
            return Err(LoadError::Invalid {
                file: label.to_owned(),
                message: format!(
                    "it exports both eshost:plugin/{other} and eshost:plugin/{kind}; a plugin \
                     targets one world"
                ),
            });
        }
        found = Some((kind, version));
    }
    match (found, unsupported) {
        (Some(found), _) => Ok(found),
        (None, Some(version)) => Err(LoadError::UnsupportedVersion {
            file: label.to_owned(),
            found: version,
            supported: SUPPORTED,
        }),
        (None, None) => Err(LoadError::NotAPlugin {
            file: label.to_owned(),
        }),
    }
}

/// `eshost:plugin/aggregate@0.1.0` → `(Aggregate, "0.1.0")`.
fn parse_export(name: &str) -> Option<(PluginKind, String)> {
    let rest = name.strip_prefix("eshost:plugin/")?;
    let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
    let kind = PluginKind::ALL
        .into_iter()
        .find(|kind| kind.interface() == format!("eshost:plugin/{interface}"))?;
    Some((kind, version.to_owned()))
}

/// Whether this host can load a component exporting contract `version` (any 0.1.x).
fn version_supported(version: &str) -> bool {
    let mut parts = version.split('.');
    matches!((parts.next(), parts.next()), (Some("0"), Some("1")))
}

/// Reads a plugin file; the label used in errors is its file name.
fn read(path: &Path) -> Result<(Vec<u8>, String), LoadError> {
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

    #[test]
    fn exports_are_parsed_with_their_version() {
        assert_eq!(
            parse_export("eshost:plugin/aggregate@0.1.0"),
            Some((PluginKind::Aggregate, "0.1.0".into()))
        );
        assert_eq!(
            parse_export("eshost:plugin/projection@0.3.1"),
            Some((PluginKind::Projection, "0.3.1".into()))
        );
        assert_eq!(parse_export("eshost:plugin/types@0.1.0"), None);
        assert_eq!(parse_export("wasi:cli/run@0.2.0"), None);
        assert!(version_supported("0.1.0"));
        assert!(version_supported("0.1.7"));
        assert!(!version_supported("0.3.0"));
        assert!(!version_supported("1.0.0"));
    }

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
