//! The events the host records in a reactor's own stream about what came of its intents.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{DomainEvent, StoredEvent, event_types};

/// The stream the host records a reactor's outcomes in: `$reactor-{name}`.
pub fn outcome_stream(reactor: &str) -> String {
    format!("$reactor-{reactor}")
}

/// The event of the batch that caused an intent, as an outcome names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    /// Its global position.
    pub position: u64,
    /// Its event id.
    pub event_id: String,
    /// Its stream.
    pub stream_id: String,
}

/// What came of an intent: an event the host appends to the reactor's own stream
/// (`$reactor-{name}`, see [`outcome_stream`]) and delivers to the reactor in a later batch,
/// whatever [`Reactor::Event`](crate::Reactor::Event) says. The reactor gets it through
/// [`Reactor::on_outcome`](crate::Reactor::on_outcome).
///
/// `context` (of a command) and `payload` (of a timer) are what the reactor gave with the
/// intent: carry there what the next step needs (which step of a saga this was, the amounts,
/// ids), so the reactor needs no state of its own to go on.
///
/// The stored form is the variant's renamed name as the event type and its fields as the data,
/// e.g. `CommandAccepted` `{"aggregate_type":..,"aggregate_id":..,"command":{..},..}`. The
/// host's `TimerScheduled` (recorded when a timer is set) is not an outcome: the SDK skips it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Outcome {
    /// The aggregate accepted the command.
    #[serde(rename = "CommandAccepted")]
    Accepted {
        /// The aggregate type the command went to.
        aggregate_type: String,
        /// The aggregate id.
        aggregate_id: String,
        /// The command as sent.
        command: Value,
        /// The context given with it.
        #[serde(default)]
        context: Value,
        /// The aggregate stream's version after the command's events.
        stream_version: u64,
        /// The event whose handling sent the command.
        cause: Cause,
        /// The intent's index among the intents that event gave.
        intent: u64,
    },
    /// The aggregate refused the command.
    #[serde(rename = "CommandRejected")]
    Rejected {
        /// The aggregate type the command went to.
        aggregate_type: String,
        /// The aggregate id.
        aggregate_id: String,
        /// The command as sent.
        command: Value,
        /// The context given with it.
        #[serde(default)]
        context: Value,
        /// Why: the aggregate's message.
        reason: String,
        /// True when the aggregate found the command malformed (invalid) rather than refused
        /// by a business rule: usually a bug in the reactor.
        invalid: bool,
        /// The event whose handling sent the command.
        cause: Cause,
        /// The intent's index among the intents that event gave.
        intent: u64,
    },
    /// A timer the reactor set is due.
    TimerFired {
        /// The host's id of the timer.
        timer: String,
        /// When it was due, ms since the Unix epoch.
        due_at: u64,
        /// The payload given with it.
        #[serde(default)]
        payload: Value,
    },
}

impl DomainEvent for Outcome {}

impl Outcome {
    /// The context of a command outcome; `None` for a timer.
    pub fn context(&self) -> Option<&Value> {
        match self {
            Self::Accepted { context, .. } | Self::Rejected { context, .. } => Some(context),
            Self::TimerFired { .. } => None,
        }
    }

    /// Decodes an event of the reactor's own stream: `None` for a type that is not an
    /// outcome (such as `TimerScheduled`).
    pub(crate) fn decode(event: &StoredEvent<'_>) -> Result<Option<Self>, String> {
        if !event_types::<Self>().contains(&event.event_type) {
            return Ok(None);
        }
        event.decode::<Self>().map(Some)
    }
}
