//! The `aggregate-plugin` world: one aggregate instance's state lives inside the guest, events
//! are applied to it in batches, and commands are decided against it.

use std::fmt;
use std::sync::Arc;

use wasmtime::component::ResourceAny;

use super::error::PluginError;
use super::plugin::{LoadStats, PluginCore, PluginInfo, Sandboxed};
use super::sandbox::Limits;
use super::seed::call_seed;
use super::types::{Command, CommandError, Event, EventError, NewEvent};
use super::wit::AggregatePre;

/// What the host holds per emitted event beyond its own bytes (the command's metadata, ids,
/// positions), for the output limit.
const EVENT_OVERHEAD_BYTES: usize = 512;

/// A loaded aggregate plugin. Cheap to clone; make one [`AggregateInstance`] per worker (or
/// per cached aggregate) with [`instantiate`](Self::instantiate).
#[derive(Clone)]
pub struct AggregatePlugin {
    core: Arc<PluginCore>,
    pre: Arc<AggregatePre>,
}

impl fmt::Debug for AggregatePlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregatePlugin")
            .field("info", &self.core.info)
            .finish_non_exhaustive()
    }
}

impl AggregatePlugin {
    pub(crate) fn new(core: Arc<PluginCore>, pre: Arc<AggregatePre>) -> Self {
        AggregatePlugin { core, pre }
    }

    /// Who the plugin is.
    pub fn info(&self) -> &PluginInfo {
        &self.core.info
    }

    /// How the plugin was loaded.
    pub fn load_stats(&self) -> LoadStats {
        self.core.load_stats
    }

    /// The same plugin with other limits for the instances made from it.
    pub fn with_limits(&self, limits: Limits) -> AggregatePlugin {
        AggregatePlugin {
            core: self.core.with_limits(limits),
            pre: self.pre.clone(),
        }
    }

    /// A fresh sandboxed instance, with no aggregate loaded yet: call
    /// [`new`](AggregateInstance::new) or [`restore`](AggregateInstance::restore) first.
    pub fn instantiate(&self) -> Result<AggregateInstance, PluginError> {
        let mut sandbox = Sandboxed::new(self.core.clone(), self.pre.clone());
        sandbox.ensure_live()?;
        Ok(AggregateInstance {
            sandbox,
            current: None,
            generation: 0,
        })
    }
}

/// One sandboxed instance of an aggregate plugin, holding (at most) one aggregate's state.
///
/// After a fault (trap, time or memory limit) the guest instance is discarded and the state
/// with it: the next call gets a fresh instance, and calls that need the state fail with
/// [`PluginError::NoAggregate`] until [`new`](Self::new) or [`restore`](Self::restore)
/// rebuilds it. Call from a blocking context (a worker thread or `spawn_blocking`).
pub struct AggregateInstance {
    sandbox: Sandboxed<AggregatePre>,
    /// The guest resource holding the current aggregate, and its id.
    current: Option<(ResourceAny, String)>,
    /// Bumped whenever a fault discards the guest instance: resources of an older generation
    /// (parked aggregates) belonged to the discarded store and are gone.
    generation: u64,
}

/// An aggregate set aside inside its instance by [`AggregateInstance::park`]: its state stays
/// in the guest, so one instance can hold many aggregates (a worker's cache) at the memory
/// cost of their states alone, not of one wasm instance each.
#[derive(Debug)]
pub struct Parked {
    resource: ResourceAny,
    id: String,
    generation: u64,
}

impl Parked {
    /// The id of the parked aggregate.
    pub fn aggregate_id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for AggregateInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregateInstance")
            .field("plugin", &self.sandbox.core.info.name)
            .field("aggregate_id", &self.aggregate_id())
            .finish()
    }
}

/// Why a command could not be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// A business rule refused the command (HTTP 422). Not a fault.
    #[error("command rejected: {0}")]
    Rejected(String),
    /// The plugin could not understand the command (HTTP 400). Not a fault.
    #[error("invalid command: {0}")]
    Invalid(String),
    /// The plugin failed (HTTP 500).
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// Why events could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The plugin refused an event; the state is as it was after the events before it.
    #[error("plugin \"{plugin}\" could not apply the event at position {position}: {message}")]
    Event {
        /// The plugin's name.
        plugin: String,
        /// The position of the event that failed.
        position: u64,
        /// The plugin's reason.
        message: String,
    },
    /// The plugin failed; the state is lost.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// Why a snapshot could not be restored. Either way the host replays the stream instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The plugin refused the snapshot (e.g. written by another version).
    #[error("plugin \"{plugin}\" refused the snapshot: {message}")]
    Refused {
        /// The plugin's name.
        plugin: String,
        /// The plugin's reason.
        message: String,
    },
    /// The plugin failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

impl AggregateInstance {
    /// Another instance of the same plugin, as fresh as a new one: the guest is instantiated
    /// on its first call (cheap until then). Nothing this instance ran can show in it.
    pub fn fresh(&self) -> AggregateInstance {
        AggregateInstance {
            sandbox: Sandboxed::new(self.sandbox.core.clone(), self.sandbox.pre.clone()),
            current: None,
            generation: 0,
        }
    }

    /// The id of the aggregate currently loaded, if any.
    pub fn aggregate_id(&self) -> Option<&str> {
        self.current.as_ref().map(|(_, id)| id.as_str())
    }

    /// Who the plugin is.
    pub fn info(&self) -> &PluginInfo {
        &self.sandbox.core.info
    }

    /// Loads a fresh aggregate `id` with the initial state, replacing the current one (the
    /// WIT `constructor(id)`).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(&mut self, id: &str) -> Result<(), PluginError> {
        self.release();
        let resource = self
            .sandbox
            .call_plain(
                "new",
                0,
                call_seed(&[b"new", id.as_bytes()]),
                |store, guest| guest.construct(store, id),
            )
            .inspect_err(|_| self.generation += 1)?;
        self.current = Some((resource, id.to_owned()));
        Ok(())
    }

    /// Loads aggregate `id` from a snapshot made by [`snapshot`](Self::snapshot), replacing
    /// the current one.
    pub fn restore(&mut self, id: &str, snapshot: &[u8]) -> Result<(), RestoreError> {
        self.release();
        let result = self
            .sandbox
            .call_plain(
                "restore",
                0,
                call_seed(&[b"restore", id.as_bytes()]),
                |store, guest| guest.restore(store, id, snapshot),
            )
            .inspect_err(|_| self.generation += 1)?;
        match result {
            Ok(resource) => {
                self.current = Some((resource, id.to_owned()));
                Ok(())
            }
            Err(message) => Err(RestoreError::Refused {
                plugin: self.info().name.clone(),
                message,
            }),
        }
    }

    /// Applies stored events, in stream order, to the current aggregate. Pass them in batches
    /// (thousands per call), not one by one.
    pub fn apply(&mut self, events: &[Event]) -> Result<(), ApplyError> {
        let resource = self.current_resource()?;
        let first = events.first().map_or(0, |event| event.stream_version);
        let seed = self.seed(b"apply", &first.to_le_bytes());
        let result = self.guarded(|sandbox| {
            sandbox.call_plain("apply", 0, seed, |store, guest| {
                guest.apply(store, resource, events)
            })
        })?;
        result.map_err(|EventError { position, message }| ApplyError::Event {
            plugin: self.info().name.clone(),
            position,
            message,
        })
    }

    /// Decides `command` against the current state: the events to append, or why not. The
    /// state does not change; apply the events once they are stored. The plugin's wall clock
    /// reads `command.issued_at` during the call.
    pub fn handle(&mut self, command: &Command) -> Result<Vec<NewEvent>, HandleError> {
        let resource = self.current_resource()?;
        let seed = self.seed(command.payload.as_bytes(), &command.issued_at.to_le_bytes());
        let result = self.guarded(|sandbox| {
            sandbox.call_plain("handle", command.issued_at, seed, |store, guest| {
                guest.handle(store, resource, command)
            })
        })?;
        match result {
            Ok(events) => {
                // Each event also costs the host a copy of the command's metadata and its
                // bookkeeping: counted, so that a flood of tiny events is refused up front.
                let size = events
                    .iter()
                    .map(|e| {
                        EVENT_OVERHEAD_BYTES
                            + e.event_type.len()
                            + e.data.len()
                            + e.subject_id.as_ref().map_or(0, String::len)
                            + e.personal_data.as_ref().map_or(0, String::len)
                    })
                    .sum();
                self.sandbox.core.check_output("handle", size)?;
                Ok(events)
            }
            Err(CommandError::Rejected(message)) => Err(HandleError::Rejected(message)),
            Err(CommandError::Invalid(message)) => Err(HandleError::Invalid(message)),
        }
    }

    /// The current state as bytes that [`restore`](Self::restore) accepts (same plugin
    /// version).
    pub fn snapshot(&mut self) -> Result<Vec<u8>, PluginError> {
        let resource = self.current_resource()?;
        let seed = self.seed(b"snapshot", &[]);
        let bytes = self.guarded(|sandbox| {
            sandbox.call_plain("snapshot", 0, seed, |store, guest| {
                guest.snapshot(store, resource)
            })
        })?;
        self.sandbox.core.check_output("snapshot", bytes.len())?;
        Ok(bytes)
    }

    /// The current state as JSON, for queries.
    pub fn state(&mut self) -> Result<String, PluginError> {
        let resource = self.current_resource()?;
        let seed = self.seed(b"state", &[]);
        let json = self.guarded(|sandbox| {
            sandbox.call_plain("state", 0, seed, |store, guest| {
                guest.state(store, resource)
            })
        })?;
        self.sandbox.core.check_output("state", json.len())?;
        Ok(json)
    }

    /// The randomness seed of a call on the current aggregate: its id, the call and where in
    /// its history the call is.
    fn seed(&self, call: &[u8], at: &[u8]) -> u64 {
        let id = self.aggregate_id().unwrap_or_default();
        call_seed(&[id.as_bytes(), call, at])
    }

    fn current_resource(&self) -> Result<ResourceAny, PluginError> {
        match &self.current {
            Some((resource, _)) if self.sandbox.is_live() => Ok(*resource),
            _ => Err(PluginError::NoAggregate {
                plugin: self.info().name.clone(),
            }),
        }
    }

    /// Runs a call on the current aggregate; if it faults, the aggregate is gone with the
    /// discarded instance.
    fn guarded<R>(
        &mut self,
        call: impl FnOnce(&mut Sandboxed<AggregatePre>) -> Result<R, PluginError>,
    ) -> Result<R, PluginError> {
        let result = call(&mut self.sandbox);
        if result.is_err() {
            self.current = None;
            self.generation += 1;
        }
        result
    }

    /// Sets the current aggregate aside without dropping its state; [`unpark`](Self::unpark)
    /// makes it current again. Nothing is current afterwards.
    pub fn park(&mut self) -> Option<Parked> {
        self.current.take().map(|(resource, id)| Parked {
            resource,
            id,
            generation: self.generation,
        })
    }

    /// Makes a parked aggregate current, dropping the current one (park it first to keep it).
    /// Fails with [`PluginError::NoAggregate`] when a fault has discarded the instance since
    /// it was parked: its state is gone and must be rebuilt.
    pub fn unpark(&mut self, parked: Parked) -> Result<(), PluginError> {
        self.release();
        if parked.generation != self.generation || !self.sandbox.is_live() {
            return Err(PluginError::NoAggregate {
                plugin: self.info().name.clone(),
            });
        }
        self.current = Some((parked.resource, parked.id));
        Ok(())
    }

    /// Drops a parked aggregate's state in the guest (a no-op when the instance it lived in
    /// is gone). Parked aggregates that are merely forgotten leak guest memory until the
    /// instance is dropped.
    pub fn discard(&mut self, parked: Parked) {
        if parked.generation == self.generation && self.sandbox.is_live() {
            let current = self.current.take();
            self.current = Some((parked.resource, parked.id));
            self.release();
            self.current = current;
        }
    }

    /// Drops the guest resource of the current aggregate, if the instance still lives.
    fn release(&mut self) {
        if let Some((resource, _)) = self.current.take()
            && self.sandbox.is_live()
        {
            let dropped = self
                .sandbox
                .call_plain("drop", 0, 0, |store, _| resource.resource_drop(store));
            if let Err(error) = dropped {
                self.generation += 1;
                tracing::warn!(target: "eshost::plugin", "dropping an aggregate failed: {error}");
            }
        }
    }
}
