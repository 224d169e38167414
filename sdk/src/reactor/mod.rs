//! Reactors: turn events into intents (commands to send, events to append, timers), the way
//! process managers, sagas and policies do.

mod outcome;

use serde::Serialize;

use crate::Error;
use crate::event::{DomainEvent, EncodedEvent, StoredEvent, encode, event_types};
use crate::projection::batch::BatchCache;
use crate::projection::{QueryArgs, QueryError, ReadModel, ReadModelStore, ReadModelView};

pub use outcome::{Cause, Outcome, outcome_stream};

/// A reactor: reads events of every stream and says what to do about them.
///
/// Like a [`Projection`](crate::Projection), a reactor keeps no state of its own between
/// calls: what it must remember lives in its [`ReadModel`]. For each event it adds intents to
/// [`Intents`]; the host carries out each one exactly once and records what came of it (see
/// [`Outcome`]) in the reactor's own stream, from where it comes back to
/// [`on_outcome`](Reactor::on_outcome) in a later batch.
///
/// A reactor must be deterministic: the same events and read model must give the same
/// intents. Plugins see a fixed clock; use the events' `recorded_at` for time.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an eshost reactor",
    note = "implement `eshost_sdk::Reactor` for it"
)]
pub trait Reactor: 'static {
    /// The reactor's name, e.g. `transfer-saga`. It may append only to streams whose id
    /// starts with the name and a `-`.
    const NAME: &'static str;

    /// The events this reactor reacts to, from every stream but the system ones. Its variant
    /// names are the `handles` the reactor declares; other types are never delivered.
    type Event: DomainEvent;

    /// Reacts to one event: updates the read model and adds intents to `out` (each caused by
    /// this event). `meta` is the stored event (stream id, position, `recorded_at`, ...). An
    /// error stops the reactor at this event, with none of the batch's intents carried out.
    fn react(
        event: Self::Event,
        meta: &StoredEvent<'_>,
        model: &mut ReadModel<'_>,
        out: &mut Intents,
    ) -> Result<(), Error>;

    /// Reacts to what came of an earlier intent: a command accepted or rejected, a timer
    /// fired. `meta` is the outcome event in the reactor's own stream. By default nothing.
    fn on_outcome(
        outcome: Outcome,
        meta: &StoredEvent<'_>,
        model: &mut ReadModel<'_>,
        out: &mut Intents,
    ) -> Result<(), Error> {
        let _ = (outcome, meta, model, out);
        Ok(())
    }

    /// Answers the query `name` over the read model, returning JSON. Read-only. By default
    /// the reactor has no queries.
    fn query(
        name: &str,
        args: QueryArgs<'_>,
        model: &ReadModelView<'_>,
    ) -> Result<serde_json::Value, QueryError> {
        let _ = (args, model);
        Err(QueryError::unknown(name))
    }
}

/// One thing a reactor wants done, and the event that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The global position of the event whose handling gave the intent.
    pub cause: u64,
    /// What to do.
    pub effect: Effect,
}

/// What an [`Intent`] asks for. JSON travels as text, as across the WIT boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send a command to one aggregate.
    Send {
        /// The aggregate type, e.g. `bank-account`.
        aggregate_type: String,
        /// The aggregate id.
        aggregate_id: String,
        /// The command, a JSON object.
        command: String,
        /// JSON given back in the outcome.
        context: String,
    },
    /// Append events, together, to a stream the reactor owns.
    Append {
        /// The stream.
        stream_id: String,
        /// The events.
        events: Vec<EncodedEvent>,
    },
    /// Be woken at `due_at`.
    Timer {
        /// ms since the Unix epoch.
        due_at: u64,
        /// JSON given back in `TimerFired`.
        payload: String,
    },
}

/// Where a reactor puts its intents while it handles one event; the SDK fills in the cause.
#[derive(Debug)]
pub struct Intents {
    reactor: &'static str,
    cause: u64,
    list: Vec<Intent>,
}

fn json<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::new(format!("cannot encode the {what}: {e}")))
}

impl Intents {
    pub(crate) fn new(reactor: &'static str) -> Self {
        Self {
            reactor,
            cause: 0,
            list: Vec::new(),
        }
    }

    fn push(&mut self, effect: Effect) {
        self.list.push(Intent {
            cause: self.cause,
            effect,
        });
    }

    /// Sends `command` (a JSON object, e.g. `json!({"type":"Withdraw","amount":5})` or a
    /// serde struct) to the aggregate `aggregate_type` `aggregate_id`; `context` (any JSON,
    /// `()` for none) comes back in its [`Outcome`].
    pub fn send<C: Serialize + ?Sized, X: Serialize + ?Sized>(
        &mut self,
        aggregate_type: &str,
        aggregate_id: &str,
        command: &C,
        context: &X,
    ) -> Result<(), Error> {
        let command = serde_json::to_value(command)
            .map_err(|e| Error::new(format!("cannot encode the command: {e}")))?;
        if !command.is_object() {
            return Err(Error::new(format!(
                "a command must be a JSON object, not {command}"
            )));
        }
        let effect = Effect::Send {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            command: command.to_string(),
            context: json(context, "command context")?,
        };
        self.push(effect);
        Ok(())
    }

    /// Appends `events`, together, to `stream_id`, which must be one of the reactor's own
    /// streams: its id starts with the reactor's name and a `-`.
    pub fn append<E: DomainEvent>(
        &mut self,
        stream_id: &str,
        events: impl IntoIterator<Item = E>,
    ) -> Result<(), Error> {
        let owned = stream_id
            .strip_prefix(self.reactor)
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('-'));
        if !owned {
            return Err(Error::new(format!(
                "reactor {} may append only to streams named {}-..., not {stream_id:?}",
                self.reactor, self.reactor
            )));
        }
        let events = events
            .into_iter()
            .map(|e| encode(&e).map_err(Error::new))
            .collect::<Result<Vec<_>, _>>()?;
        self.push(Effect::Append {
            stream_id: stream_id.to_owned(),
            events,
        });
        Ok(())
    }

    /// Asks to be woken at `due_at` (ms since the Unix epoch): an [`Outcome::TimerFired`]
    /// carrying `payload` comes once the host's clock reaches it. Derive `due_at` from an
    /// event's `recorded_at`, never from a clock.
    pub fn timer<P: Serialize + ?Sized>(&mut self, due_at: u64, payload: &P) -> Result<(), Error> {
        let effect = Effect::Timer {
            due_at,
            payload: json(payload, "timer payload")?,
        };
        self.push(effect);
        Ok(())
    }
}

/// Handles a batch of stored events: outcomes from the reactor's own stream go to
/// `on_outcome`, events of the reactor's types to `react`, the rest are skipped. Returns the
/// intents, or the position and message of the first failure.
pub(crate) fn handle_batch<'e, R: Reactor>(
    events: impl IntoIterator<Item = StoredEvent<'e>>,
    store: &mut dyn ReadModelStore,
) -> Result<Vec<Intent>, (u64, String)> {
    let known = event_types::<R::Event>();
    let own = outcome_stream(R::NAME);
    let mut out = Intents::new(R::NAME);
    let mut cache = BatchCache::new(store);
    let result = (|| {
        for event in events {
            out.cause = event.position;
            cache.position = event.position;
            let failed = |e: String| (event.position, e);
            if event.stream_id == own {
                let Some(outcome) = Outcome::decode(&event).map_err(failed)? else {
                    continue;
                };
                R::on_outcome(outcome, &event, &mut ReadModel::new(&mut cache), &mut out)
            } else if known.contains(&event.event_type) {
                let decoded = event.decode::<R::Event>().map_err(failed)?;
                R::react(decoded, &event, &mut ReadModel::new(&mut cache), &mut out)
            } else {
                continue;
            }
            .map_err(|e| failed(e.to_string()))?;
            // A decoded value that would not encode when a read needed its text.
            if let Some(message) = cache.failure.get_mut().take() {
                return Err(failed(message));
            }
        }
        Ok(())
    })();
    // Flushed even after a failure, as for projections: the host commits the writes with the
    // checkpoint, or not at all.
    let flushed = cache.flush();
    result.and(flushed).map(|()| out.list)
}

/// Runs a query and renders its answer as JSON text.
pub(crate) fn run_query<R: Reactor>(
    name: &str,
    args: &str,
    store: &dyn ReadModelStore,
) -> Result<String, QueryError> {
    let answer = R::query(name, QueryArgs::new(args), &ReadModelView::new(store))?;
    Ok(answer.to_string())
}
