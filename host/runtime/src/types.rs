//! The data that crosses the plugin boundary, as the host owns it: events, commands, their
//! errors, upcast results and what a plugin says about itself.
//!
//! These types belong to the host, not to a WIT version: each version module in `wit/`
//! converts them to and from its own generated types, so the rest of the host never sees
//! generated code and an old plugin's contract never leaks into it. The field names follow
//! the WIT records they were first defined by (`eshost:plugin@0.1.0`, `wit/v0.1.0`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stored event, as a plugin sees it (already upcast to the newest schema the host knows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Global position in the log (`$all`), gap-free, starting at 1.
    pub position: u64,
    /// The stream the event belongs to, e.g. `account-42`.
    pub stream_id: String,
    /// The event's version within its stream, starting at 1.
    pub stream_version: u64,
    /// The event's unique id (a UUID in its hyphenated text form).
    pub event_id: String,
    /// What happened, past tense by convention, e.g. `FundsDeposited`.
    pub event_type: String,
    /// The version of the shape of `data`; upcasters raise it.
    pub schema_version: u32,
    /// When the event was committed, in milliseconds since the Unix epoch (UTC).
    pub recorded_at: u64,
    /// The payload, a JSON value.
    pub data: String,
    /// A JSON object: correlation and causation ids, user, the emitting plugin's hash, ...
    pub metadata: String,
    /// The data subject the personal data belongs to, if the event carries any.
    pub subject_id: Option<String>,
    /// Personal data (a JSON value), decrypted; `None` when there is none or it was shredded.
    pub personal_data: Option<String>,
    /// True when the event carried personal data whose subject has since been forgotten.
    pub shredded: bool,
}

/// An event an aggregate asks the host to append to its stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// What happened, e.g. `FundsDeposited`.
    pub event_type: String,
    /// The version of the shape of `data`.
    pub schema_version: u32,
    /// The payload, a JSON value.
    pub data: String,
    /// The data subject whose personal data `personal_data` holds.
    pub subject_id: Option<String>,
    /// Personal data (a JSON value), stored encrypted under the subject's key.
    pub personal_data: Option<String>,
}

/// A command sent to one aggregate instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The command as a JSON object, e.g. `{"type":"Deposit","amount":100}`.
    pub payload: String,
    /// A JSON object: command, correlation and causation ids, user, and other keys.
    pub metadata: String,
    /// When the host received the command, in ms since the Unix epoch: the plugin's clock.
    pub issued_at: u64,
}

/// Why an aggregate did not accept a command. Neither case is a plugin fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandError {
    /// A business rule refused the command; the message is shown to the caller.
    Rejected(String),
    /// The command could not be understood (unknown type, missing or malformed field).
    Invalid(String),
}

/// An event a plugin could not process, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventError {
    /// The position of the event that failed.
    pub position: u64,
    /// What went wrong.
    pub message: String,
}

/// An event type at one schema version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedType {
    /// The event type, e.g. `FundsDeposited`.
    pub event_type: String,
    /// Its schema version.
    pub schema_version: u32,
}

/// The output of an upcaster for one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpcastResult {
    /// The event is already current; it passes on as it is.
    Unchanged,
    /// The event rewritten to a newer shape.
    Upcasted(UpcastedEvent),
}

/// The new shape of an upcast event. Everything else (ids, positions, metadata) is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpcastedEvent {
    /// The event type, possibly renamed.
    pub event_type: String,
    /// The new schema version; must be higher than the old one.
    pub schema_version: u32,
    /// The rewritten payload, a JSON value.
    pub data: String,
}

/// The three kinds of plugin, one per WIT world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// The `aggregate-plugin` world: decides commands for one aggregate type.
    Aggregate,
    /// The `upcaster-plugin` world: rewrites old event shapes on read.
    Upcaster,
    /// The `projection-plugin` world: builds a read model and answers queries.
    Projection,
    /// The `reactor-plugin` world (contract 0.2): turns events into commands, events and
    /// timers.
    Reactor,
}

impl PluginKind {
    pub(crate) const ALL: [PluginKind; 4] = [
        PluginKind::Aggregate,
        PluginKind::Upcaster,
        PluginKind::Projection,
        PluginKind::Reactor,
    ];

    /// The kind's name: `aggregate`, `upcaster`, `projection`; also the name of the WIT
    /// interface a component of this kind exports (`eshost:plugin/aggregate@...`).
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Aggregate => "aggregate",
            PluginKind::Upcaster => "upcaster",
            PluginKind::Projection => "projection",
            PluginKind::Reactor => "reactor",
        }
    }

    /// `an aggregate`, `an upcaster`, `a projection`.
    pub fn with_article(self) -> &'static str {
        match self {
            PluginKind::Aggregate => "an aggregate",
            PluginKind::Upcaster => "an upcaster",
            PluginKind::Projection => "a projection",
            PluginKind::Reactor => "a reactor",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a plugin says about itself in `describe()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Description {
    pub(crate) name: String,
    pub(crate) kind: PluginKind,
    pub(crate) version: String,
    pub(crate) handles: Vec<String>,
    pub(crate) upcasts: Vec<VersionedType>,
}

/// Why a projection refused a query, as the plugin says it (the runtime adds the plugin and
/// query names: [`QueryError`](crate::QueryError)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QueryRefusal {
    UnknownQuery(String),
    InvalidArgs(String),
    Failed(String),
}

/// What a reactor wants done about one event of the batch it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The position of the event that caused it.
    pub cause: u64,
    /// What to do.
    pub effect: Effect,
}

/// One effect a reactor asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send a command to an aggregate.
    Send {
        /// The aggregate type.
        aggregate_type: String,
        /// The aggregate id.
        aggregate_id: String,
        /// The command, JSON.
        command: String,
        /// JSON given back in the outcome event.
        context: String,
    },
    /// Append events to a stream the reactor owns.
    Append {
        /// The stream.
        stream_id: String,
        /// The events.
        events: Vec<NewEvent>,
    },
    /// Fire a timer at `due_at` (ms since the epoch).
    Timer {
        /// When.
        due_at: u64,
        /// JSON given back in the `TimerFired` event.
        payload: String,
    },
}
