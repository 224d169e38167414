//! The `reactor-plugin` world (contract 0.2): turns batches of events into [`Intent`]s
//! (commands to send, events to append, timers), keeping its own state in a read model as a
//! projection does.
//!
//! The runtime only calls the guest; carrying the intents out exactly once, and recording what
//! came of them, is the reactor runner's job (`eshost-core`).

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use super::error::PluginError;
use super::plugin::{CallContext, LoadStats, PluginCore, PluginInfo, Sandboxed};
use super::projection::{ProjectionError, QueryError, event_failed, handle_fault, query_outcome};
use super::read_model::ReadModel;
use super::sandbox::Limits;
use super::seed::call_seed;
use super::types::{Effect, Event, Intent};
use super::wit::ReactorPre;

/// A loaded reactor plugin. Cheap to clone.
#[derive(Clone)]
pub struct ReactorPlugin {
    core: Arc<PluginCore>,
    pre: Arc<ReactorPre>,
}

impl fmt::Debug for ReactorPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorPlugin")
            .field("info", &self.core.info)
            .finish_non_exhaustive()
    }
}

impl ReactorPlugin {
    pub(crate) fn new(core: Arc<PluginCore>, pre: Arc<ReactorPre>) -> Self {
        ReactorPlugin { core, pre }
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
    pub fn with_limits(&self, limits: Limits) -> ReactorPlugin {
        ReactorPlugin {
            core: self.core.with_limits(limits),
            pre: self.pre.clone(),
        }
    }

    /// A sandboxed instance working on `read_model`.
    pub fn instantiate<R: ReadModel>(
        &self,
        read_model: R,
    ) -> Result<ReactorInstance<R>, PluginError> {
        let mut sandbox = Sandboxed::new(self.core.clone(), self.pre.clone());
        sandbox.ensure_live()?;
        Ok(ReactorInstance {
            sandbox,
            read_model: Some(Box::new(read_model)),
            _model: PhantomData,
        })
    }
}

/// One sandboxed instance of a reactor plugin, with the read model it works on. A fault
/// discards the guest instance; the next call gets a fresh one. Call from a blocking context.
pub struct ReactorInstance<R: ReadModel> {
    sandbox: Sandboxed<ReactorPre>,
    /// Always `Some` between calls.
    read_model: Option<Box<dyn ReadModel>>,
    _model: PhantomData<fn() -> R>,
}

impl<R: ReadModel> fmt::Debug for ReactorInstance<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorInstance")
            .field("plugin", &self.sandbox.core.info.name)
            .finish_non_exhaustive()
    }
}

impl<R: ReadModel> ReactorInstance<R> {
    /// Who the plugin is.
    pub fn info(&self) -> &PluginInfo {
        &self.sandbox.core.info
    }

    /// The read model, mutably (e.g. to take the batch's writes).
    pub fn read_model_mut(&mut self) -> &mut R {
        let model: &mut dyn Any = self
            .read_model
            .as_mut()
            .expect("the read model is lent back")
            .as_mut();
        model.downcast_mut().expect("the read model has type R")
    }

    /// Processes a batch of events and returns what the reactor wants done, each intent naming
    /// an event of the batch as its cause. On an error the read model may hold part of the
    /// batch's writes: the runner must not commit them.
    pub fn handle(&mut self, events: &[Event]) -> Result<Vec<Intent>, ProjectionError> {
        let plugin = self.info().name.clone();
        let first = events.first().map_or(0, |event| event.position);
        let context = CallContext {
            now_ms: 0,
            seed: call_seed(&[b"react", &first.to_le_bytes()]),
            read_model: self.read_model.take(),
            read_only: false,
        };
        let (model, result) = self.sandbox.call("handle", context, |store, guest| {
            guest.handle(store, events)
        });
        self.read_model = model;
        let intents = match result {
            Ok(Ok(intents)) => intents,
            Ok(Err(error)) => return Err(event_failed(plugin, error)),
            Err(fault) => return Err(handle_fault(plugin, fault)),
        };
        self.sandbox
            .core
            .check_output("handle", intents.iter().map(intent_bytes).sum())?;
        if let Some(stray) = intents
            .iter()
            .find(|intent| !events.iter().any(|event| event.position == intent.cause))
        {
            let message = format!(
                "an intent names position {} as its cause, which is not an event of the batch",
                stray.cause
            );
            return Err(self.sandbox.core.contract("handle", message).into());
        }
        Ok(intents)
    }

    /// Answers the query `name` with `args` (JSON) over the read model, read-only.
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
}

/// What an intent weighs against the output limit.
fn intent_bytes(intent: &Intent) -> usize {
    match &intent.effect {
        Effect::Send {
            aggregate_type,
            aggregate_id,
            command,
            context,
        } => aggregate_type.len() + aggregate_id.len() + command.len() + context.len(),
        Effect::Append { stream_id, events } => {
            stream_id.len()
                + events
                    .iter()
                    .map(|e| {
                        e.event_type.len()
                            + e.data.len()
                            + e.subject_id.as_ref().map_or(0, String::len)
                            + e.personal_data.as_ref().map_or(0, String::len)
                    })
                    .sum::<usize>()
        }
        Effect::Timer { payload, .. } => payload.len(),
    }
}
