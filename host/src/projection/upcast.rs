//! The runner's upcast step: one call that rewrites a batch of events, in place, to the newest
//! shapes before the projection sees them.

use crate::runtime::{Event, UpcastError, UpcasterInstance, UpcasterPlugin};

/// Why an event could not be upcast: the runner treats it like a failure of that event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpcastFailure {
    /// The event's position.
    pub position: u64,
    /// What went wrong.
    pub message: String,
}

/// Rewrites a batch of events to their newest shapes. One per runner (it may hold instances).
pub trait Upcast: Send {
    /// Upcasts `events` in place.
    fn upcast(&mut self, events: &mut [Event]) -> Result<(), UpcastFailure>;
}

/// Makes an [`Upcast`] step for each runner.
pub type UpcastFactory = std::sync::Arc<dyn Fn() -> Result<Box<dyn Upcast>, String> + Send + Sync>;

/// A chain of upcaster plugins: each event is offered to the upcasters that declare its
/// (type, schema version) until none does.
#[derive(Debug)]
pub struct UpcasterChain {
    instances: Vec<UpcasterInstance>,
}

impl UpcasterChain {
    /// Instances of `plugins`, in order.
    pub fn new(plugins: &[UpcasterPlugin]) -> Result<Self, String> {
        let instances = plugins
            .iter()
            .map(|p| p.instantiate().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(UpcasterChain { instances })
    }

    /// A factory for runners over `plugins`.
    pub fn factory(plugins: Vec<UpcasterPlugin>) -> UpcastFactory {
        std::sync::Arc::new(move || {
            UpcasterChain::new(&plugins).map(|chain| Box::new(chain) as Box<dyn Upcast>)
        })
    }
}

impl Upcast for UpcasterChain {
    fn upcast(&mut self, events: &mut [Event]) -> Result<(), UpcastFailure> {
        for event in events {
            // Each step raises the schema version, so the chain ends.
            'chain: loop {
                for instance in &mut self.instances {
                    if instance
                        .info()
                        .upcasts_event(&event.event_type, event.schema_version)
                    {
                        let changed =
                            instance.upcast_in_place(event).map_err(|e| UpcastFailure {
                                position: event.position,
                                message: match e {
                                    UpcastError::Refused { message, .. } => message,
                                    other => other.to_string(),
                                },
                            })?;
                        if changed {
                            continue 'chain;
                        }
                    }
                }
                break;
            }
        }
        Ok(())
    }
}
