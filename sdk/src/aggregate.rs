//! Aggregates: decide which events a command produces, and fold events into state.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::event::{DomainEvent, EncodedEvent, StoredEvent};

/// One aggregate type, e.g. a bank account. The implementing type is the state of one
/// instance (one stream).
///
/// The state is serialised with serde for snapshots and for the `state` query, so it must
/// round-trip through JSON (the harness checks this).
///
/// Commands arrive as JSON objects such as `{"type":"Deposit","amount":100}`, so the usual
/// command type is an internally tagged serde enum (`#[serde(tag = "type")]`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an eshost aggregate",
    note = "implement `eshost_sdk::Aggregate` for it"
)]
pub trait Aggregate: Default + Serialize + DeserializeOwned + 'static {
    /// The aggregate type's name, e.g. `bank-account`; the host checks it against its config.
    const NAME: &'static str;

    /// The commands this aggregate accepts.
    type Command: DeserializeOwned;

    /// The events this aggregate emits and applies.
    type Event: DomainEvent;

    /// The state of a new instance with id `id`, before any event. Defaults to
    /// `Self::default()`.
    fn initial(id: &str) -> Self {
        let _ = id;
        Self::default()
    }

    /// Decides what `command` does: the events to append, or why it is refused. Pure: the
    /// state changes only when the host applies the stored events.
    fn handle(
        &self,
        command: Self::Command,
        ctx: &CommandContext<'_>,
    ) -> Result<Vec<Self::Event>, Rejection>;

    /// Folds one stored event into the state. Cannot fail: an event is a fact.
    fn apply(&mut self, event: Self::Event);
}

/// What a command handler knows besides the command itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandContext<'a> {
    /// The aggregate id (the stream id), e.g. `account-42`.
    pub id: &'a str,
    /// When the host received the command, in ms since the Unix epoch. Use it instead of a
    /// clock: plugins see a fixed clock.
    pub issued_at: u64,
    /// The command's metadata, a JSON object (`command_id`, `correlation_id`, `user`, ...).
    pub metadata: &'a str,
}

/// Why an aggregate did not accept a command. A value, not a fault: the host answers 422.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// A business rule refused the command, e.g. `insufficient funds: balance 3, withdrawal 5`.
    Rejected(String),
    /// The command could not be understood (unknown type, missing or malformed field). The
    /// SDK reports undecodable commands this way by itself.
    Invalid(String),
}

impl Rejection {
    /// A business-rule refusal with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self::Rejected(message.into())
    }

    /// A malformed command.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    /// The message, whichever the kind.
    pub fn message(&self) -> &str {
        match self {
            Self::Rejected(m) | Self::Invalid(m) => m,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(m) => write!(f, "rejected: {m}"),
            Self::Invalid(m) => write!(f, "invalid command: {m}"),
        }
    }
}

impl std::error::Error for Rejection {}

impl From<String> for Rejection {
    fn from(message: String) -> Self {
        Self::Rejected(message)
    }
}

impl From<&str> for Rejection {
    fn from(message: &str) -> Self {
        Self::Rejected(message.to_owned())
    }
}

/// Returns `Err(Rejection)` with a formatted message from the enclosing command handler.
///
/// ```
/// # fn f(balance: u64, amount: u64) -> Result<(), eshost_sdk::Rejection> {
/// eshost_sdk::reject!("insufficient funds: balance {balance}, withdrawal {amount}");
/// # }
/// ```
#[macro_export]
macro_rules! reject {
    ($($arg:tt)+) => {
        return ::core::result::Result::Err($crate::Rejection::new(::std::format!($($arg)+)))
    };
}

/// Rejects the command with a formatted message unless `cond` holds.
///
/// ```
/// # fn f(amount: u64) -> Result<(), eshost_sdk::Rejection> {
/// eshost_sdk::ensure!(amount > 0, "amount must be positive, got {amount}");
/// # Ok(())
/// # }
/// ```
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            $crate::reject!($($arg)+);
        }
    };
}

// ---- the glue the export macro and the harness share ---------------------------------------

/// Applies one stored event to `state`. The error names the event.
pub(crate) fn apply_stored<A: Aggregate>(
    state: &mut A,
    event: &StoredEvent<'_>,
) -> Result<(), String> {
    let decoded = event.decode::<A::Event>()?;
    state.apply(decoded);
    Ok(())
}

/// Decodes a command payload and runs `handle`, encoding the resulting events.
pub(crate) fn handle_payload<A: Aggregate>(
    state: &A,
    payload: &str,
    ctx: &CommandContext<'_>,
) -> Result<Vec<EncodedEvent>, Rejection> {
    let command: A::Command =
        serde_json::from_str(payload).map_err(|e| Rejection::Invalid(e.to_string()))?;
    run_handle(state, command, ctx)
}

/// Runs `handle` on a decoded command, encoding the resulting events.
pub(crate) fn run_handle<A: Aggregate>(
    state: &A,
    command: A::Command,
    ctx: &CommandContext<'_>,
) -> Result<Vec<EncodedEvent>, Rejection> {
    let events = state.handle(command, ctx)?;
    // An event that cannot be encoded is a plugin bug: trap rather than reject.
    Ok(events
        .iter()
        .map(|e| crate::event::encode(e).unwrap_or_else(|msg| panic!("{}: {msg}", A::NAME)))
        .collect())
}

/// The snapshot bytes of a state (its JSON form).
pub(crate) fn snapshot<A: Aggregate>(state: &A) -> Vec<u8> {
    serde_json::to_vec(state)
        .unwrap_or_else(|e| panic!("{}: cannot serialise the state: {e}", A::NAME))
}

/// A state rebuilt from snapshot bytes.
pub(crate) fn restore<A: Aggregate>(bytes: &[u8]) -> Result<A, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("{}: cannot restore snapshot: {e}", A::NAME))
}

/// The state as JSON text, for queries.
pub(crate) fn state_json<A: Aggregate>(state: &A) -> String {
    serde_json::to_string(state)
        .unwrap_or_else(|e| panic!("{}: cannot serialise the state: {e}", A::NAME))
}
