//! What every loaded plugin has in common, whatever its world and WIT version: its identity
//! ([`PluginInfo`]), how it was loaded ([`LoadStats`]), and the machinery that runs one call in
//! a sandboxed instance, maps a trap or a limit to a [`PluginError`], and throws the instance
//! away after a fault. A [`World`] is what a version module's pre-instantiated component
//! offers this machinery.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::{Store, Trap};

use super::engine::deadline_ticks;
use super::error::PluginError;
use super::metrics::PluginMetrics;
use super::read_model::ReadModel;
use super::sandbox::{HostFault, HostState, Limits};
use super::types::{Description, PluginKind, VersionedType};

/// A plugin's identity: what it says about itself in `describe()`, plus what the host knows
/// of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginInfo {
    /// The plugin's name (the aggregate type, or the projection or upcaster name).
    pub name: String,
    /// Its kind; the world it targets, and what `describe()` says.
    pub kind: PluginKind,
    /// The plugin's own version, free text.
    pub version: String,
    /// The event types it wants to see; empty means all.
    pub handles: Vec<String>,
    /// Upcasters: the (type, schema version) pairs it rewrites.
    pub upcasts: Vec<VersionedType>,
    /// The blake3 hash of the component's bytes, hex: the plugin's identity, recorded in the
    /// metadata of the events it emits and on its snapshots.
    pub content_hash: String,
    /// The version of the `eshost:plugin` package the component exports, e.g. `0.1.0`.
    pub wit_version: String,
}

impl PluginInfo {
    /// Whether the plugin wants to see events of `event_type` (its `handles` list is empty or
    /// names it).
    pub fn handles_event(&self, event_type: &str) -> bool {
        self.handles.is_empty() || self.handles.iter().any(|h| h == event_type)
    }

    /// Upcasters: whether `upcast` should be called for an event of this type and version.
    pub fn upcasts_event(&self, event_type: &str, schema_version: u32) -> bool {
        self.upcasts
            .iter()
            .any(|v| v.event_type == event_type && v.schema_version == schema_version)
    }

    /// Upcasters: whether `upcast` may give an event of `event_type`: one of the types it
    /// declares in `handles` or upcasts, or any type when `handles` is empty.
    pub fn may_produce(&self, event_type: &str) -> bool {
        self.handles_event(event_type) || self.upcasts.iter().any(|v| v.event_type == event_type)
    }
}

/// How a plugin was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LoadStats {
    /// True when the compiled component came from the on-disk cache.
    pub cache_hit: bool,
    /// The time to compile or deserialize the component (not counting `describe()`).
    pub component: Duration,
    /// The whole load: read, hash, compile or deserialize, link, instantiate, `describe()`.
    pub total: Duration,
}

/// What a loaded plugin shares between its instances.
#[derive(Debug, Clone)]
pub(crate) struct PluginCore {
    pub(crate) info: PluginInfo,
    pub(crate) name: Arc<str>,
    pub(crate) engine: wasmtime::Engine,
    pub(crate) limits: Limits,
    pub(crate) epoch_tick: Duration,
    pub(crate) load_stats: LoadStats,
    /// Where calls are timed and faults counted; `None` until `describe()` named the plugin.
    pub(crate) metrics: Option<PluginMetrics>,
}

impl PluginCore {
    /// A copy with other limits.
    pub(crate) fn with_limits(&self, limits: Limits) -> Arc<PluginCore> {
        let mut core = self.clone();
        core.limits = limits;
        Arc::new(core)
    }

    pub(crate) fn new_store(&self) -> Store<HostState> {
        let mut store = Store::new(
            &self.engine,
            HostState::new(self.name.clone(), &self.limits),
        );
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        store
    }

    pub(crate) fn deadline_ticks(&self) -> u64 {
        deadline_ticks(self.limits.time, self.epoch_tick)
    }

    /// Fails with [`PluginError::OutputTooLarge`] when `size` is over the output limit.
    pub(crate) fn check_output(&self, call: &'static str, size: usize) -> Result<(), PluginError> {
        if size > self.limits.output_bytes {
            return Err(PluginError::OutputTooLarge {
                plugin: self.info.name.clone(),
                call,
                size,
                limit: self.limits.output_bytes,
            });
        }
        Ok(())
    }

    pub(crate) fn contract(&self, call: &'static str, message: impl Into<String>) -> PluginError {
        PluginError::Contract {
            plugin: self.info.name.clone(),
            call,
            message: message.into(),
        }
    }

    /// Turns the error of a failed call into a [`PluginError`] naming the plugin.
    pub(crate) fn classify(
        &self,
        error: &wasmtime::Error,
        state: &HostState,
        stderr: &str,
    ) -> PluginError {
        let plugin = self.info.name.clone();
        if state.limiter.denied.is_some() {
            return PluginError::MemoryLimit {
                plugin,
                limit_bytes: state.limiter.max_bytes,
            };
        }
        let mut message = match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => {
                return PluginError::Timeout {
                    plugin,
                    limit: self.limits.time,
                };
            }
            Some(Trap::StackOverflow) => return PluginError::StackOverflow { plugin },
            Some(trap) => trap.to_string(),
            None => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => format!("called exit({})", exit.0),
                None => format!("{error:#}"),
            },
        };
        if !stderr.is_empty() {
            message.push_str("; stderr: ");
            message.push_str(stderr);
        }
        PluginError::Trap { plugin, message }
    }
}

/// A world's pre-instantiated component, of any WIT version: makes the bindings of a fresh
/// instance, and asks it who it is.
pub(crate) trait World: Send + Sync + 'static {
    /// The bindings of an instantiated component.
    type Bindings: Send + 'static;
    fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Self::Bindings>;
    /// Calls the world's `describe()`.
    fn describe(
        store: &mut Store<HostState>,
        bindings: &Self::Bindings,
    ) -> wasmtime::Result<Description>;
}

/// A fault during a call: in the plugin, or raised by a host function it called.
#[derive(Debug)]
pub(crate) enum CallFault {
    Plugin(PluginError),
    Host(HostFault),
}

impl From<PluginError> for CallFault {
    fn from(error: PluginError) -> Self {
        CallFault::Plugin(error)
    }
}

/// One live instance of a plugin (a store and its bindings), created on first use and
/// replaced after any fault.
pub(crate) struct Sandboxed<W: World> {
    pub(crate) core: Arc<PluginCore>,
    pub(crate) pre: Arc<W>,
    live: Option<Live<W::Bindings>>,
}

pub(crate) struct Live<B> {
    pub(crate) store: Store<HostState>,
    pub(crate) bindings: B,
}

impl<W: World> fmt::Debug for Sandboxed<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandboxed")
            .field("plugin", &self.core.info.name)
            .field("live", &self.live.is_some())
            .finish()
    }
}

/// What a call may do: read the clock at `now_ms`, draw randomness from `seed`, use a read
/// model.
pub(crate) struct CallContext {
    pub(crate) now_ms: u64,
    pub(crate) seed: u64,
    pub(crate) read_model: Option<Box<dyn ReadModel>>,
    pub(crate) read_only: bool,
}

impl CallContext {
    pub(crate) fn plain(now_ms: u64, seed: u64) -> CallContext {
        CallContext {
            now_ms,
            seed,
            read_model: None,
            read_only: true,
        }
    }
}

impl<W: World> Sandboxed<W> {
    pub(crate) fn new(core: Arc<PluginCore>, pre: Arc<W>) -> Self {
        Sandboxed {
            core,
            pre,
            live: None,
        }
    }

    /// True when an instance is live (no fault since it was created).
    pub(crate) fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Creates the live instance if there is none, under the call time limit.
    pub(crate) fn ensure_live(&mut self) -> Result<&mut Live<W::Bindings>, PluginError> {
        if self.live.is_none() {
            let mut store = self.core.new_store();
            store.set_epoch_deadline(self.core.deadline_ticks());
            store.data_mut().begin_call(0, 0);
            let result = self.pre.instantiate(&mut store);
            let stderr = store.data_mut().end_call();
            match result {
                Ok(bindings) => self.live = Some(Live { store, bindings }),
                Err(error) => {
                    return Err(match self.core.classify(&error, store.data(), &stderr) {
                        PluginError::Trap { plugin, message } => {
                            PluginError::Instantiate { plugin, message }
                        }
                        other => other,
                    });
                }
            }
        }
        Ok(self.live.as_mut().expect("instance was just created"))
    }

    /// Runs `f`, the WIT call named `call`, in the live instance (created if needed) under the
    /// call limits, timed. On failure the instance is discarded. The read model in `context` is
    /// handed back in every case.
    pub(crate) fn call<R>(
        &mut self,
        call: &'static str,
        context: CallContext,
        f: impl FnOnce(&mut Store<HostState>, &W::Bindings) -> wasmtime::Result<R>,
    ) -> (Option<Box<dyn ReadModel>>, Result<R, CallFault>) {
        let CallContext {
            now_ms,
            seed,
            read_model,
            read_only,
        } = context;
        let core = self.core.clone();
        let live = match self.ensure_live() {
            Ok(live) => live,
            Err(error) => {
                if let Some(metrics) = &core.metrics {
                    metrics.trap(&core.name);
                }
                return (read_model, Err(error.into()));
            }
        };
        let ticks = core.deadline_ticks();
        let store = &mut live.store;
        store.set_epoch_deadline(ticks);
        {
            let state = store.data_mut();
            state.begin_call(now_ms, seed);
            state.read_model = read_model;
            state.read_only = read_only;
        }
        let started = Instant::now();
        let result = f(store, &live.bindings);
        if let Some(metrics) = &core.metrics {
            metrics.call(&core.name, call, started.elapsed());
        }
        let state = store.data_mut();
        let read_model = state.read_model.take();
        let stderr = state.end_call();
        let fault = state.fault.take();
        match result {
            Ok(value) => (read_model, Ok(value)),
            Err(error) => {
                let fault = match fault {
                    Some(fault) => CallFault::Host(fault),
                    None => {
                        if let Some(metrics) = &core.metrics {
                            metrics.trap(&core.name);
                        }
                        CallFault::Plugin(core.classify(&error, store.data(), &stderr))
                    }
                };
                tracing::warn!(
                    target: "eshost::plugin",
                    plugin = %core.info.name,
                    "call failed, instance discarded: {fault:?}"
                );
                self.live = None;
                (read_model, Err(fault))
            }
        }
    }

    /// [`call`](Self::call) for calls that use no read model.
    pub(crate) fn call_plain<R>(
        &mut self,
        call: &'static str,
        now_ms: u64,
        seed: u64,
        f: impl FnOnce(&mut Store<HostState>, &W::Bindings) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let (_, result) = self.call(call, CallContext::plain(now_ms, seed), f);
        result.map_err(|fault| match fault {
            CallFault::Plugin(error) => error,
            CallFault::Host(fault) => PluginError::Trap {
                plugin: self.core.info.name.clone(),
                message: fault.to_string(),
            },
        })
    }
}
