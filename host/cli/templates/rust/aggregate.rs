//! The `{{NAME}}` aggregate: a counter. Commands: `{"type":"Add","by":N}` (N > 0) emits
//! `Added {by}`; `{"type":"Reset"}` emits `Reset` (refused at zero). State: `{"count":N}`.

use eshost_sdk::{Aggregate, CommandContext, DomainEvent, Rejection, ensure};
use serde::{Deserialize, Serialize};

/// What happened. Version 2 of `Added` has `by`; version 1 had `n` (an upcaster raises it).
#[derive(Debug, Serialize, Deserialize)]
pub enum Event {
    /// The count went up.
    Added { by: u64 },
    /// The count went back to zero.
    Reset,
}

impl DomainEvent for Event {
    const SCHEMA_VERSIONS: &'static [(&'static str, u32)] = &[("Added", 2)];
}

/// What a client can ask, as JSON: `{"type":"Add","by":3}`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
pub enum Command {
    /// Count up (signed, so that zero or less is a clear rejection, not a decoding error).
    Add { by: i64 },
    /// Back to zero.
    Reset,
}

/// The state of one counter.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Counter {
    count: u64,
}

impl Aggregate for Counter {
    const NAME: &'static str = "{{NAME}}";
    type Command = Command;
    type Event = Event;

    fn handle(&self, command: Command, _: &CommandContext) -> Result<Vec<Event>, Rejection> {
        match command {
            Command::Add { by } => {
                ensure!(by > 0, "by must be positive, got {by}");
                Ok(vec![Event::Added { by: by as u64 }])
            }
            Command::Reset => {
                ensure!(self.count > 0, "nothing to reset");
                Ok(vec![Event::Reset])
            }
        }
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Added { by } => self.count = self.count.saturating_add(by),
            Event::Reset => self.count = 0,
        }
    }
}

eshost_sdk::export_aggregate!(Counter);

#[cfg(test)]
mod tests {
    use super::*;
    use eshost_sdk::testing::given;

    #[test]
    fn adding_counts_up() {
        given::<Counter>([Event::Added { by: 2 }])
            .when(Command::Add { by: 3 })
            .then_expect_events([Event::Added { by: 3 }]);
    }
}
