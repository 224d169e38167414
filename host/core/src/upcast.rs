//! Upcasting on read: old event shapes are raised, step by step, to the current ones before
//! any aggregate or projection sees them. Stored events never change.
//!
//! An [`UpcasterChain`] is built once from the loaded upcaster plugins; each (event type,
//! schema version) pair belongs to at most one upcaster. A reader thread makes its own
//! [`Upcasting`] (sandboxed instances, created on first use) and passes every event through
//! it: the event goes to the upcaster that claims its (type, version), then again with the new
//! (type, version), until no upcaster claims it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use eshost_runtime::{Event, PluginError, UpcastError, UpcasterInstance, UpcasterPlugin};
use eshost_store::{EventRef, EventStore};

/// The upcasters of a host, keyed by the (event type, schema version) each one raises.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct UpcasterChain {
    inner: Arc<Chain>,
}

#[derive(Default)]
struct Chain {
    plugins: Vec<UpcasterPlugin>,
    by_type: HashMap<(String, u32), usize>,
}

impl fmt::Debug for UpcasterChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.inner.plugins.iter().map(|p| &p.info().name).collect();
        f.debug_struct("UpcasterChain")
            .field("plugins", &names)
            .finish()
    }
}

/// Why a chain could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Two upcasters claim the same event type and version: which one runs would be a guess.
    #[error("upcasters \"{first}\" and \"{second}\" both upcast {event_type} v{schema_version}")]
    Ambiguous {
        /// The event type.
        event_type: String,
        /// Its schema version.
        schema_version: u32,
        /// The upcaster that claimed it first.
        first: String,
        /// The other one.
        second: String,
    },
}

impl UpcasterChain {
    /// A chain of `plugins`, each claiming the (type, version) pairs its `describe()` lists.
    pub fn new(plugins: impl IntoIterator<Item = UpcasterPlugin>) -> Result<Self, ChainError> {
        let mut chain = Chain::default();
        for plugin in plugins {
            let index = chain.plugins.len();
            for claim in &plugin.info().upcasts {
                let key = (claim.event_type.clone(), claim.schema_version);
                if let Some(&other) = chain.by_type.get(&key) {
                    return Err(ChainError::Ambiguous {
                        event_type: key.0,
                        schema_version: key.1,
                        first: chain.plugins[other].info().name.clone(),
                        second: plugin.info().name.clone(),
                    });
                }
                chain.by_type.insert(key, index);
            }
            chain.plugins.push(plugin);
        }
        Ok(UpcasterChain {
            inner: Arc::new(chain),
        })
    }

    /// A chain that changes nothing.
    pub fn empty() -> Self {
        UpcasterChain::default()
    }

    /// True when no upcaster is configured.
    pub fn is_empty(&self) -> bool {
        self.inner.by_type.is_empty()
    }

    /// The upcasters, in the order given.
    pub fn plugins(&self) -> &[UpcasterPlugin] {
        &self.inner.plugins
    }

    /// Whether some upcaster raises events of this type and version.
    pub fn upcasts(&self, event_type: &str, schema_version: u32) -> bool {
        // Avoids allocating a key for the common "no upcaster at all" case.
        !self.is_empty()
            && self
                .inner
                .by_type
                .contains_key(&(event_type.to_owned(), schema_version))
    }

    /// A per-thread runner of the chain. Its instances are created on first use.
    pub fn instantiate(&self) -> Upcasting {
        Upcasting {
            chain: self.clone(),
            instances: (0..self.inner.plugins.len()).map(|_| None).collect(),
        }
    }
}

/// One thread's instances of an [`UpcasterChain`]. Call from a blocking context.
#[derive(Debug)]
pub struct Upcasting {
    chain: UpcasterChain,
    instances: Vec<Option<UpcasterInstance>>,
}

impl Upcasting {
    /// The chain this runs.
    pub fn chain(&self) -> &UpcasterChain {
        &self.chain
    }

    /// Raises `event` through the chain, in place. Returns whether it changed.
    pub fn upcast(&mut self, event: &mut Event) -> Result<bool, UpcastError> {
        if self.chain.is_empty() {
            return Ok(false);
        }
        let mut changed = false;
        // Every step raises the schema version (the runtime refuses one that does not), so
        // the chain ends; the bound is a second guard against a cycle through event types.
        for _ in 0..=self.chain.inner.by_type.len() {
            let key = (std::mem::take(&mut event.event_type), event.schema_version);
            let index = self.chain.inner.by_type.get(&key).copied();
            event.event_type = key.0;
            let Some(index) = index else {
                return Ok(changed);
            };
            let instance = match &mut self.instances[index] {
                Some(instance) => instance,
                slot => slot.insert(self.chain.inner.plugins[index].instantiate()?),
            };
            if !instance.upcast_in_place(event)? {
                return Ok(changed);
            }
            changed = true;
        }
        let plugin = self.chain.inner.plugins[0].info().name.clone();
        Err(UpcastError::Plugin(PluginError::Contract {
            plugin,
            call: "upcast",
            message: format!(
                "the upcaster chain did not settle on event {} at position {}",
                event.event_id, event.position
            ),
        }))
    }

    /// Raises every event of `events`, in place.
    pub fn upcast_all(&mut self, events: &mut [Event]) -> Result<(), UpcastError> {
        if self.chain.is_empty() {
            return Ok(());
        }
        for event in events {
            self.upcast(event)?;
        }
        Ok(())
    }
}

/// A stored event in the shape plugins receive, its personal data decrypted by `store`.
pub fn plugin_event(event: &EventRef<'_>, store: &dyn EventStore) -> Event {
    let mut plugin_event = stored_event(event);
    set_personal(&mut plugin_event, event, store);
    plugin_event
}

/// Sets `target`'s personal-data fields from `event`: decrypted, or marked shredded once the
/// subject's key is gone (or unreadable, which plugins cannot tell from shredded).
pub fn set_personal(target: &mut Event, event: &EventRef<'_>, store: &dyn EventStore) {
    target.subject_id = event.subject_id.map(str::to_owned);
    (target.personal_data, target.shredded) = match event.sealed {
        None => (None, false),
        Some(_) => store.reveal(event).into_fields(event.position),
    };
}

/// A stored event in the shape plugins receive, without its personal data.
fn stored_event(event: &EventRef<'_>) -> Event {
    Event {
        position: event.position,
        stream_id: event.stream_id.to_owned(),
        stream_version: event.stream_version,
        event_id: event.event_id.to_string(),
        event_type: event.event_type.to_owned(),
        schema_version: event.schema_version,
        recorded_at: event.recorded_at,
        data: event.data.to_owned(),
        metadata: event.metadata.to_owned(),
        subject_id: None,
        personal_data: None,
        shredded: false,
    }
}
