//! The runner's upcast step: one call that rewrites a batch of events, in place, to the newest
//! shapes before the projection sees them (through the host's [`UpcasterChain`]).

use crate::upcast::Upcasting;
use eshost_runtime::Event;

pub use crate::upcast::UpcasterChain;

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

impl Upcast for Upcasting {
    fn upcast(&mut self, events: &mut [Event]) -> Result<(), UpcastFailure> {
        if self.chain().is_empty() {
            return Ok(());
        }
        for event in events {
            Upcasting::upcast(self, event).map_err(|error| UpcastFailure {
                position: event.position,
                message: error.to_string(),
            })?;
        }
        Ok(())
    }
}
