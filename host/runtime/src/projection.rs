//! The `projection-plugin` world: builds a read model from events through the host's
//! `read-model` interface, and answers queries over it.
//!
//! The read model is the host's: a [`ReadModel`] the projection runner backs with redb (or
//! [`MemoryReadModel`](crate::MemoryReadModel) in tests and offline replays). A
//! [`ProjectionInstance`] owns it and lends it to the guest for each call; during `query` it
//! is read-only, and a `put` or `delete` fails the call with [`QueryError::WriteRefused`].

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use super::error::PluginError;
use super::plugin::{CallContext, CallFault, LoadStats, PluginCore, PluginInfo, Sandboxed};
use super::read_model::{ReadModel, ReadModelError};
use super::sandbox::{HostFault, Limits};
use super::seed::call_seed;
use super::types::{Event, EventError, QueryRefusal};
use super::wit::ProjectionPre;

/// A loaded projection plugin. Cheap to clone.
#[derive(Clone)]
pub struct ProjectionPlugin {
    core: Arc<PluginCore>,
    pre: Arc<ProjectionPre>,
}

impl fmt::Debug for ProjectionPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectionPlugin")
            .field("info", &self.core.info)
            .finish_non_exhaustive()
    }
}

impl ProjectionPlugin {
    pub(crate) fn new(core: Arc<PluginCore>, pre: Arc<ProjectionPre>) -> Self {
        ProjectionPlugin { core, pre }
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
    pub fn with_limits(&self, limits: Limits) -> ProjectionPlugin {
        ProjectionPlugin {
            core: self.core.with_limits(limits),
            pre: self.pre.clone(),
        }
    }

    /// A sandboxed instance working on `read_model`. Use one instance to `handle` (the runner)
    /// and others to `query`, each with its own view of the store.
    pub fn instantiate<R: ReadModel>(
        &self,
        read_model: R,
    ) -> Result<ProjectionInstance<R>, PluginError> {
        let mut sandbox = Sandboxed::new(self.core.clone(), self.pre.clone());
        sandbox.ensure_live()?;
        Ok(ProjectionInstance {
            sandbox,
            read_model: Some(Box::new(read_model)),
            _model: PhantomData,
        })
    }
}

/// One sandboxed instance of a projection plugin, with the read model it works on.
///
/// A fault discards the guest instance (the read model stays with the host); the next call
/// gets a fresh one. Call from a blocking context.
pub struct ProjectionInstance<R: ReadModel> {
    sandbox: Sandboxed<ProjectionPre>,
    /// Always `Some` between calls.
    read_model: Option<Box<dyn ReadModel>>,
    _model: PhantomData<fn() -> R>,
}

impl<R: ReadModel> fmt::Debug for ProjectionInstance<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectionInstance")
            .field("plugin", &self.sandbox.core.info.name)
            .finish_non_exhaustive()
    }
}

/// Why a batch of events could not be processed. The runner commits nothing of the batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    /// The plugin refused an event.
    #[error("plugin \"{plugin}\" could not process the event at position {position}: {message}")]
    Event {
        /// The plugin's name.
        plugin: String,
        /// The position of the event.
        position: u64,
        /// The plugin's reason.
        message: String,
    },
    /// The read-model store failed.
    #[error("plugin \"{plugin}\": read model error: {error}")]
    ReadModel {
        /// The plugin's name.
        plugin: String,
        /// The store's error.
        error: ReadModelError,
    },
    /// The plugin failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// Why a query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The projection has no query of that name (HTTP 404).
    #[error("plugin \"{plugin}\" has no query {query:?}: {message}")]
    UnknownQuery {
        /// The plugin's name.
        plugin: String,
        /// The query asked for.
        query: String,
        /// The plugin's message.
        message: String,
    },
    /// The arguments were malformed or missing (HTTP 400).
    #[error("plugin \"{plugin}\": invalid arguments for query {query:?}: {message}")]
    InvalidArgs {
        /// The plugin's name.
        plugin: String,
        /// The query.
        query: String,
        /// The plugin's message.
        message: String,
    },
    /// The query failed for another reason the plugin reports.
    #[error("plugin \"{plugin}\": query {query:?} failed: {message}")]
    Failed {
        /// The plugin's name.
        plugin: String,
        /// The query.
        query: String,
        /// The plugin's message.
        message: String,
    },
    /// The plugin tried to write to its read model during a query.
    #[error("plugin \"{plugin}\" tried to {op} during query {query:?}; queries are read-only")]
    WriteRefused {
        /// The plugin's name.
        plugin: String,
        /// The query.
        query: String,
        /// `put` or `delete`.
        op: &'static str,
    },
    /// The read-model store failed.
    #[error("plugin \"{plugin}\": read model error: {error}")]
    ReadModel {
        /// The plugin's name.
        plugin: String,
        /// The store's error.
        error: ReadModelError,
    },
    /// The plugin failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

impl<R: ReadModel> ProjectionInstance<R> {
    /// Who the plugin is.
    pub fn info(&self) -> &PluginInfo {
        &self.sandbox.core.info
    }

    /// The read model.
    pub fn read_model(&self) -> &R {
        let model: &dyn Any = self.boxed();
        model.downcast_ref().expect("the read model has type R")
    }

    /// The read model, mutably (e.g. to commit it with a checkpoint).
    pub fn read_model_mut(&mut self) -> &mut R {
        let model: &mut dyn Any = self.boxed_mut().as_mut();
        model.downcast_mut().expect("the read model has type R")
    }

    /// Takes the read model back, ending the instance.
    pub fn into_read_model(mut self) -> R {
        let model: Box<dyn Any> = self.read_model.take().expect("the read model is lent back");
        *model.downcast().expect("the read model has type R")
    }

    /// Processes a batch of events, in log order, writing to the read model. On an error the
    /// read model may hold part of the batch's writes: the runner must not commit them.
    pub fn handle(&mut self, events: &[Event]) -> Result<(), ProjectionError> {
        let plugin = self.info().name.clone();
        let first = events.first().map_or(0, |event| event.position);
        let context = CallContext {
            now_ms: 0,
            seed: call_seed(&[b"handle", &first.to_le_bytes()]),
            read_model: self.read_model.take(),
            read_only: false,
        };
        let (model, result) = self.sandbox.call("handle", context, |store, guest| {
            guest.handle(store, events)
        });
        self.read_model = model;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(event_failed(plugin, error)),
            Err(fault) => Err(handle_fault(plugin, fault)),
        }
    }

    /// Answers the query `name` with `args` (JSON); returns JSON. The read model is read-only
    /// during the call.
    pub fn query(&mut self, name: &str, args: &str) -> Result<String, QueryError> {
        let plugin = self.info().name.clone();
        let context = CallContext {
            now_ms: 0,
            seed: call_seed(&[b"query", name.as_bytes(), args.as_bytes()]),
            read_model: self.read_model.take(),
            read_only: true,
        };
        let (model, result) = self.sandbox.call("query", context, |store, guest| {
            guest.query(store, name, args)
        });
        self.read_model = model;
        query_outcome(&self.sandbox.core, plugin, name, result)
    }

    fn boxed(&self) -> &dyn ReadModel {
        self.read_model
            .as_deref()
            .expect("the read model is lent back")
    }

    fn boxed_mut(&mut self) -> &mut Box<dyn ReadModel> {
        self.read_model
            .as_mut()
            .expect("the read model is lent back")
    }
}

/// A plugin's refusal of an event in a batch.
pub(crate) fn event_failed(plugin: String, error: EventError) -> ProjectionError {
    ProjectionError::Event {
        plugin,
        position: error.position,
        message: error.message,
    }
}

/// What a fault during a batch call (a projection's or a reactor's `handle`) means.
pub(crate) fn handle_fault(plugin: String, fault: CallFault) -> ProjectionError {
    match fault {
        CallFault::Plugin(error) => error.into(),
        CallFault::Host(HostFault::ReadModel(error)) => {
            ProjectionError::ReadModel { plugin, error }
        }
        CallFault::Host(HostFault::WritesTooLarge { bytes, limit }) => {
            PluginError::OutputTooLarge {
                plugin,
                call: "handle",
                size: bytes,
                limit,
            }
            .into()
        }
        CallFault::Host(fault) => PluginError::Trap {
            plugin,
            message: fault.to_string(),
        }
        .into(),
    }
}

/// The answer to a query over a read model (a projection's or a reactor's), from the call.
pub(crate) fn query_outcome(
    core: &PluginCore,
    plugin: String,
    name: &str,
    result: Result<Result<String, QueryRefusal>, CallFault>,
) -> Result<String, QueryError> {
    let query = name.to_owned();
    match result {
        Ok(Ok(json)) => {
            core.check_output("query", json.len())?;
            Ok(json)
        }
        Ok(Err(QueryRefusal::UnknownQuery(message))) => Err(QueryError::UnknownQuery {
            plugin,
            query,
            message,
        }),
        Ok(Err(QueryRefusal::InvalidArgs(message))) => Err(QueryError::InvalidArgs {
            plugin,
            query,
            message,
        }),
        Ok(Err(QueryRefusal::Failed(message))) => Err(QueryError::Failed {
            plugin,
            query,
            message,
        }),
        Err(CallFault::Plugin(error)) => Err(error.into()),
        Err(CallFault::Host(HostFault::WriteDuringQuery { op })) => {
            Err(QueryError::WriteRefused { plugin, query, op })
        }
        Err(CallFault::Host(HostFault::ReadModel(error))) => {
            Err(QueryError::ReadModel { plugin, error })
        }
        Err(CallFault::Host(fault)) => Err(PluginError::Trap {
            plugin,
            message: fault.to_string(),
        }
        .into()),
    }
}
