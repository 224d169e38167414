//! The `upcaster-plugin` world: rewrites an old event shape into a newer one, on read.

use std::fmt;
use std::sync::Arc;

use super::error::PluginError;
use super::plugin::{LoadStats, PluginCore, PluginInfo, Sandboxed};
use super::sandbox::Limits;
use super::seed::call_seed;
use super::types::{Event, UpcastResult, UpcastedEvent};
use super::wit::UpcasterPre;

/// A loaded upcaster plugin. Cheap to clone; make an [`UpcasterInstance`] per thread.
#[derive(Clone)]
pub struct UpcasterPlugin {
    core: Arc<PluginCore>,
    pre: Arc<UpcasterPre>,
}

impl fmt::Debug for UpcasterPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpcasterPlugin")
            .field("info", &self.core.info)
            .finish_non_exhaustive()
    }
}

impl UpcasterPlugin {
    pub(crate) fn new(core: Arc<PluginCore>, pre: Arc<UpcasterPre>) -> Self {
        UpcasterPlugin { core, pre }
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
    pub fn with_limits(&self, limits: Limits) -> UpcasterPlugin {
        UpcasterPlugin {
            core: self.core.with_limits(limits),
            pre: self.pre.clone(),
        }
    }

    /// A sandboxed instance to upcast with.
    pub fn instantiate(&self) -> Result<UpcasterInstance, PluginError> {
        let mut sandbox = Sandboxed::new(self.core.clone(), self.pre.clone());
        sandbox.ensure_live()?;
        Ok(UpcasterInstance { sandbox })
    }
}

/// One sandboxed instance of an upcaster. Upcasters keep no state the host relies on: after a
/// fault the next call simply gets a fresh instance.
#[derive(Debug)]
pub struct UpcasterInstance {
    sandbox: Sandboxed<UpcasterPre>,
}

/// Why an event could not be upcast.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    /// The plugin refused the event.
    #[error("plugin \"{plugin}\" could not upcast the event at position {position}: {message}")]
    Refused {
        /// The plugin's name.
        plugin: String,
        /// The position of the event.
        position: u64,
        /// The plugin's reason.
        message: String,
    },
    /// The plugin failed, or returned an event that breaks the contract.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

impl UpcasterInstance {
    /// Who the plugin is.
    pub fn info(&self) -> &PluginInfo {
        &self.sandbox.core.info
    }

    /// Asks the plugin to raise `event` by one step. Call it only for events the plugin
    /// [`upcasts`](PluginInfo::upcasts_event). An output that breaks the contract is refused,
    /// naming the plugin: a schema version that is not higher (it would loop in a chain), an
    /// empty or malformed event type, a type the plugin does not declare it may produce
    /// ([`may_produce`](PluginInfo::may_produce): the host decides from the declarations which
    /// plugins an event can reach), or data that is not JSON.
    pub fn upcast(&mut self, event: &Event) -> Result<UpcastResult, UpcastError> {
        let result = self.sandbox.call_plain(
            "upcast",
            0,
            call_seed(&[&event.position.to_le_bytes()]),
            |store, guest| guest.upcast(store, event),
        )?;
        match result {
            Ok(UpcastResult::Unchanged) => Ok(UpcastResult::Unchanged),
            Ok(UpcastResult::Upcasted(new)) => {
                let core = &self.sandbox.core;
                core.check_output("upcast", new.event_type.len() + new.data.len())?;
                if let Some(problem) = output_problem(&core.info, event, &new) {
                    let message = format!(
                        "upcasting {} v{} at position {} {problem}",
                        event.event_type, event.schema_version, event.position
                    );
                    return Err(core.contract("upcast", message).into());
                }
                Ok(UpcastResult::Upcasted(new))
            }
            Err(message) => Err(UpcastError::Refused {
                plugin: self.info().name.clone(),
                position: event.position,
                message,
            }),
        }
    }

    /// [`upcast`](Self::upcast), applied to `event` in place. Returns whether it changed.
    pub fn upcast_in_place(&mut self, event: &mut Event) -> Result<bool, UpcastError> {
        match self.upcast(event)? {
            UpcastResult::Unchanged => Ok(false),
            UpcastResult::Upcasted(new) => {
                event.event_type = new.event_type;
                event.schema_version = new.schema_version;
                event.data = new.data;
                Ok(true)
            }
        }
    }
}

/// What is wrong with an upcaster's output, if anything, worded to follow "upcasting X vN".
fn output_problem(info: &PluginInfo, old: &Event, new: &UpcastedEvent) -> Option<String> {
    let event_type = &new.event_type;
    if new.schema_version <= old.schema_version {
        return Some(format!(
            "gave schema version {}; it must be higher",
            new.schema_version
        ));
    }
    if event_type.is_empty() {
        return Some("gave an empty event type".into());
    }
    if event_type.len() > eshost_store::validate::MAX_EVENT_TYPE_BYTES
        || event_type.chars().any(char::is_control)
    {
        return Some(format!(
            "gave the event type {event_type:?}: at most 256 bytes, no control characters"
        ));
    }
    if !info.may_produce(event_type) {
        return Some(format!(
            "gave the event type {event_type:?}, which it does not declare: list the types \
             `upcast` may give in `handles` of describe()"
        ));
    }
    if let Err(error) = serde_json::from_str::<serde::de::IgnoredAny>(&new.data) {
        return Some(format!("gave data that is not valid JSON: {error}"));
    }
    None
}
