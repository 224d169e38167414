//! The `{{NAME}}` reactor: a large add to a counter (`by` of 100 or more) is logged as a
//! `LargeAdd` event in the reactor's own stream `{{NAME}}-log`. A reactor can also send
//! commands to aggregates (`out.send`) and set timers (`out.timer`), and hears what came of
//! them in `on_outcome`; see the SDK's README.

use eshost_sdk::{DomainEvent, Error, Intents, Reactor, ReadModel, StoredEvent};
use serde::{Deserialize, Serialize};

/// The events it reacts to (others are skipped). Version 2 of `Added` has `by`.
#[derive(Debug, Serialize, Deserialize)]
pub enum Event {
    /// A counter went up.
    Added { by: u64 },
}

impl DomainEvent for Event {
    const SCHEMA_VERSIONS: &'static [(&'static str, u32)] = &[("Added", 2)];
}

/// What it appends to its own stream.
#[derive(Debug, Serialize, Deserialize)]
pub enum LogEvent {
    /// A counter went up by a lot at once.
    LargeAdd { stream: String, by: u64 },
}

impl DomainEvent for LogEvent {}

/// What counts as large.
const LARGE: u64 = 100;

/// The reactor.
#[derive(Debug)]
pub struct LargeAdds;

impl Reactor for LargeAdds {
    const NAME: &'static str = "{{NAME}}";
    type Event = Event;

    fn react(
        event: Event,
        meta: &StoredEvent<'_>,
        _model: &mut ReadModel<'_>,
        out: &mut Intents,
    ) -> Result<(), Error> {
        let Event::Added { by } = event;
        if by < LARGE {
            return Ok(());
        }
        let stream = meta.stream_id.to_owned();
        out.append(&format!("{}-log", Self::NAME), [LogEvent::LargeAdd { stream, by }])
    }
}

eshost_sdk::export_reactor!(LargeAdds);
