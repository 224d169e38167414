//! The reactor harness: events in, intents out; outcomes of the intents fed back in as the
//! host would record them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde_json::Value;

use super::{EventJson, MemoryStore, Payload, Recorded, UpcastFn, encoded, upcast_step};
use crate::event::{DomainEvent, encode};
use crate::projection::QueryError;
use crate::reactor::{self, Cause, Effect, Intent, Outcome, Reactor, outcome_stream};
use crate::upcaster::Upcaster;

/// One intent as a test compares it (without its cause): JSON parsed, events in stored form.
#[derive(Debug, Clone, PartialEq)]
pub enum IntentJson {
    /// A command to send.
    Send {
        /// The aggregate type.
        aggregate_type: String,
        /// The aggregate id.
        aggregate_id: String,
        /// The command.
        command: Value,
        /// The context that comes back in the outcome.
        context: Value,
    },
    /// Events to append to one of the reactor's streams.
    Append {
        /// The stream.
        stream_id: String,
        /// The events.
        events: Vec<EventJson>,
    },
    /// A timer to set.
    Timer {
        /// When it is due, ms since the Unix epoch.
        due_at: u64,
        /// The payload that comes back when it fires.
        payload: Value,
    },
}

impl IntentJson {
    /// A command to send.
    pub fn send(aggregate_type: &str, aggregate_id: &str, command: Value, context: Value) -> Self {
        Self::Send {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            command,
            context,
        }
    }

    /// Events to append, given as an event enum's values.
    #[track_caller]
    pub fn append<E: DomainEvent>(stream_id: &str, events: impl IntoIterator<Item = E>) -> Self {
        Self::Append {
            stream_id: stream_id.to_owned(),
            events: events
                .into_iter()
                .map(|e| EventJson::from(&encoded(&e)))
                .collect(),
        }
    }

    /// A timer to set.
    pub fn timer(due_at: u64, payload: Value) -> Self {
        Self::Timer { due_at, payload }
    }
}

fn parse(text: &str, what: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("the {what} is not JSON: {e}: {text}"))
}

impl From<&Effect> for IntentJson {
    fn from(effect: &Effect) -> Self {
        match effect {
            Effect::Send {
                aggregate_type,
                aggregate_id,
                command,
                context,
            } => Self::Send {
                aggregate_type: aggregate_type.clone(),
                aggregate_id: aggregate_id.clone(),
                command: parse(command, "command"),
                context: parse(context, "command context"),
            },
            Effect::Append { stream_id, events } => Self::Append {
                stream_id: stream_id.clone(),
                events: events.iter().map(EventJson::from).collect(),
            },
            Effect::Timer { due_at, payload } => Self::Timer {
                due_at: *due_at,
                payload: parse(payload, "timer payload"),
            },
        }
    }
}

/// A reactor under test, with an in-memory read model. Each `given..` call is one batch, in
/// log order; the `then_expect..` calls check the intents of the last batch. The outcome
/// helpers ([`command_accepted`](Self::command_accepted), [`timer_fired`](Self::timer_fired),
/// ...) feed back what the host would record in `$reactor-{name}` for one of those intents.
///
/// Events are recorded one second apart from [`DEFAULT_EPOCH_MS`](super::DEFAULT_EPOCH_MS)
/// unless [`at`](Self::at) sets the clock.
pub struct ReactorTest<R> {
    store: MemoryStore,
    position: u64,
    /// When the next event is recorded; `None`: the default clock.
    next_at: Option<u64>,
    stream_versions: BTreeMap<String, u64>,
    upcasters: Vec<UpcastFn>,
    /// The last batch and the intents it gave.
    batch: Vec<Recorded>,
    intents: Vec<Intent>,
    /// Stream versions handed out in `CommandAccepted` outcomes, per aggregate.
    aggregate_versions: RefCell<BTreeMap<(String, String), u64>>,
    reactor: PhantomData<R>,
}

impl<R> fmt::Debug for ReactorTest<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorTest")
            .field("position", &self.position)
            .field("intents", &self.intents)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<R: Reactor> Default for ReactorTest<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Reactor> ReactorTest<R> {
    /// An empty read model at position 0.
    pub fn new() -> Self {
        Self {
            store: MemoryStore::default(),
            position: 0,
            next_at: None,
            stream_versions: BTreeMap::new(),
            upcasters: Vec::new(),
            batch: Vec::new(),
            intents: Vec::new(),
            aggregate_versions: RefCell::new(BTreeMap::new()),
            reactor: PhantomData,
        }
    }

    /// Runs events given from now on through the upcaster `U`.
    pub fn with_upcaster<U: Upcaster>(mut self) -> Self {
        self.upcasters.push(upcast_step::<U>);
        self
    }

    /// Records the next event at `recorded_at` (ms since the Unix epoch), and each one after
    /// it a second later than the one before.
    pub fn at(mut self, recorded_at: u64) -> Self {
        self.next_at = Some(recorded_at);
        self
    }

    /// Feeds events appended to `stream_id` (not a system stream: see
    /// [`given_outcomes`](Self::given_outcomes)), as one batch.
    #[track_caller]
    pub fn given(self, stream_id: &str, events: impl IntoIterator<Item = R::Event>) -> Self {
        let stored = events.into_iter().map(|e| encoded(&e).into()).collect();
        self.feed(stream_id, stored)
    }

    /// Feeds one event in stored form, e.g. a type the reactor does not handle.
    #[track_caller]
    pub fn given_stored(
        self,
        stream_id: &str,
        event_type: &str,
        schema_version: u32,
        data: Value,
    ) -> Self {
        self.feed(
            stream_id,
            vec![Payload::plain(event_type, schema_version, data.to_string())],
        )
    }

    /// Like [`given_stored`](Self::given_stored), but returns the reactor's failure,
    /// `(position, message)`, instead of panicking. A failed batch changes nothing (no read
    /// model writes, no intents), as in the host.
    #[track_caller]
    pub fn try_given_stored(
        &mut self,
        stream_id: &str,
        event_type: &str,
        schema_version: u32,
        data: Value,
    ) -> Result<(), (u64, String)> {
        self.try_feed(
            stream_id,
            vec![Payload::plain(event_type, schema_version, data.to_string())],
        )
    }

    /// Feeds outcome events, appended to the reactor's own stream `$reactor-{name}`, as one
    /// batch. Build them with [`accepted`](Self::accepted), [`rejected`](Self::rejected),
    /// [`invalid`](Self::invalid) and [`fired`](Self::fired), or by hand.
    #[track_caller]
    pub fn given_outcomes(self, outcomes: impl IntoIterator<Item = Outcome>) -> Self {
        let stored = outcomes
            .into_iter()
            .map(|o| encode(&o).unwrap_or_else(|e| panic!("{e}")).into())
            .collect();
        self.feed(&outcome_stream(R::NAME), stored)
    }

    /// Feeds back that the aggregate accepted the command of the last batch's intent `index`.
    #[track_caller]
    pub fn command_accepted(self, index: usize) -> Self {
        let outcome = self.accepted(index);
        self.given_outcomes([outcome])
    }

    /// Feeds back that the aggregate rejected the command of the last batch's intent `index`.
    #[track_caller]
    pub fn command_rejected(self, index: usize, reason: &str) -> Self {
        let outcome = self.rejected(index, reason);
        self.given_outcomes([outcome])
    }

    /// Feeds back that the timer of the last batch's intent `index` fired.
    #[track_caller]
    pub fn timer_fired(self, index: usize) -> Self {
        let outcome = self.fired(index);
        self.given_outcomes([outcome])
    }

    /// The `CommandAccepted` the host records for the command of the last batch's intent
    /// `index`. Its `stream_version` counts the commands accepted by that aggregate in this
    /// test.
    #[track_caller]
    pub fn accepted(&self, index: usize) -> Outcome {
        let (aggregate_type, aggregate_id, command, context, cause, intent) = self.sent(index);
        let mut versions = self.aggregate_versions.borrow_mut();
        let version = versions
            .entry((aggregate_type.clone(), aggregate_id.clone()))
            .or_insert(0);
        *version += 1;
        Outcome::Accepted {
            aggregate_type,
            aggregate_id,
            command,
            context,
            stream_version: *version,
            cause,
            intent,
        }
    }

    /// The `CommandRejected` the host records when a business rule refuses the command of
    /// the last batch's intent `index`.
    #[track_caller]
    pub fn rejected(&self, index: usize, reason: &str) -> Outcome {
        self.refused(index, reason, false)
    }

    /// The `CommandRejected` the host records when the aggregate finds the command of the
    /// last batch's intent `index` malformed (`invalid: true`).
    #[track_caller]
    pub fn invalid(&self, index: usize, reason: &str) -> Outcome {
        self.refused(index, reason, true)
    }

    /// The `TimerFired` the host records once the timer of the last batch's intent `index`
    /// is due. The timer id is the harness's own.
    #[track_caller]
    pub fn fired(&self, index: usize) -> Outcome {
        let intent = self.intent(index);
        let Effect::Timer { due_at, payload } = &intent.effect else {
            panic!("intent {index} of {} is not a timer: {intent:?}", R::NAME);
        };
        Outcome::TimerFired {
            timer: format!("timer-{}-{}", intent.cause, self.index_within_cause(index)),
            due_at: *due_at,
            payload: parse(payload, "timer payload"),
        }
    }

    #[track_caller]
    fn refused(&self, index: usize, reason: &str, invalid: bool) -> Outcome {
        let (aggregate_type, aggregate_id, command, context, cause, intent) = self.sent(index);
        Outcome::Rejected {
            aggregate_type,
            aggregate_id,
            command,
            context,
            reason: reason.to_owned(),
            invalid,
            cause,
            intent,
        }
    }

    #[track_caller]
    fn intent(&self, index: usize) -> &Intent {
        self.intents.get(index).unwrap_or_else(|| {
            panic!(
                "the last batch gave {} intent(s) of {}; there is no intent {index}: {:?}",
                self.intents.len(),
                R::NAME,
                self.intents()
            )
        })
    }

    /// The intent's index among those its cause gave: the host numbers them so.
    fn index_within_cause(&self, index: usize) -> u64 {
        let cause = self.intents[index].cause;
        self.intents[..index]
            .iter()
            .filter(|i| i.cause == cause)
            .count() as u64
    }

    /// The fields of an outcome of the command of intent `index`.
    #[track_caller]
    fn sent(&self, index: usize) -> (String, String, Value, Value, Cause, u64) {
        let intent = self.intent(index);
        let Effect::Send {
            aggregate_type,
            aggregate_id,
            command,
            context,
        } = &intent.effect
        else {
            panic!("intent {index} of {} is not a command: {intent:?}", R::NAME);
        };
        let event = self
            .batch
            .iter()
            .find(|e| e.position == intent.cause)
            .expect("an intent's cause is an event of its batch");
        let cause = Cause {
            position: event.position,
            event_id: event.event_id.clone(),
            stream_id: event.stream_id.clone(),
        };
        (
            aggregate_type.clone(),
            aggregate_id.clone(),
            parse(command, "command"),
            parse(context, "command context"),
            cause,
            self.index_within_cause(index),
        )
    }

    #[track_caller]
    fn feed(mut self, stream_id: &str, events: Vec<Payload>) -> Self {
        if let Err((position, message)) = self.try_feed(stream_id, events) {
            panic!(
                "reactor {} failed at position {position}: {message}",
                R::NAME
            );
        }
        self
    }

    #[track_caller]
    fn try_feed(&mut self, stream_id: &str, events: Vec<Payload>) -> Result<(), (u64, String)> {
        assert!(
            !stream_id.starts_with('$') || stream_id == outcome_stream(R::NAME),
            "the host delivers no events of the system stream {stream_id:?} to a reactor but \
             its own outcomes; feed those with given_outcomes"
        );
        let mut position = self.position;
        let mut next_at = self.next_at;
        let mut stream_version = self.stream_versions.get(stream_id).copied().unwrap_or(0);
        let mut records = Vec::with_capacity(events.len());
        for payload in events {
            position += 1;
            stream_version += 1;
            let mut record = Recorded::new(position, stream_id, stream_version, payload);
            if let Some(at) = next_at {
                record.recorded_at = at;
                next_at = Some(at + 1000);
            }
            records.push(record.upcast(&self.upcasters));
        }
        // The host commits a batch's writes only if the whole batch succeeds.
        let mut scratch = self.store.clone();
        let intents = reactor::handle_batch::<R>(records.iter().map(Recorded::view), &mut scratch)?;
        self.store = scratch;
        self.intents = intents;
        self.batch = records;
        self.position = position;
        self.next_at = next_at;
        self.stream_versions
            .insert(stream_id.to_owned(), stream_version);
        Ok(())
    }

    /// The intents of the last batch, as compared.
    pub fn intents(&self) -> Vec<IntentJson> {
        self.intents
            .iter()
            .map(|i| IntentJson::from(&i.effect))
            .collect()
    }

    /// The intents of the last batch as the host receives them, with their causes.
    pub fn raw_intents(&self) -> &[Intent] {
        &self.intents
    }

    /// Asserts the last batch gave exactly these intents, in order.
    #[track_caller]
    pub fn then_expect_intents(self, expected: impl IntoIterator<Item = IntentJson>) -> Self {
        let expected: Vec<IntentJson> = expected.into_iter().collect();
        assert_eq!(self.intents(), expected, "intents of {}", R::NAME);
        self
    }

    /// Asserts the last batch gave no intents.
    #[track_caller]
    pub fn then_expect_no_intents(self) -> Self {
        self.then_expect_intents([])
    }

    /// Asserts the commands of the last batch are exactly these (aggregate type, id,
    /// command), in order; its other intents and the commands' contexts are not compared
    /// (see [`then_expect_intents`](Self::then_expect_intents)).
    #[track_caller]
    pub fn then_expect_commands<'a>(
        self,
        expected: impl IntoIterator<Item = (&'a str, &'a str, Value)>,
    ) -> Self {
        let expected: Vec<(String, String, Value)> = expected
            .into_iter()
            .map(|(t, id, c)| (t.to_owned(), id.to_owned(), c))
            .collect();
        let actual: Vec<(String, String, Value)> = self
            .intents()
            .into_iter()
            .filter_map(|i| match i {
                IntentJson::Send {
                    aggregate_type,
                    aggregate_id,
                    command,
                    ..
                } => Some((aggregate_type, aggregate_id, command)),
                _ => None,
            })
            .collect();
        assert_eq!(actual, expected, "commands sent by {}", R::NAME);
        self
    }

    /// Asserts the timers of the last batch are exactly these (due at, payload), in order;
    /// its other intents are not compared.
    #[track_caller]
    pub fn then_expect_timers(self, expected: impl IntoIterator<Item = (u64, Value)>) -> Self {
        let expected: Vec<(u64, Value)> = expected.into_iter().collect();
        let actual: Vec<(u64, Value)> = self
            .intents()
            .into_iter()
            .filter_map(|i| match i {
                IntentJson::Timer { due_at, payload } => Some((due_at, payload)),
                _ => None,
            })
            .collect();
        assert_eq!(actual, expected, "timers set by {}", R::NAME);
        self
    }

    /// Runs a query against the read model.
    pub fn query(&self, name: &str, args: Value) -> Result<Value, QueryError> {
        let text = reactor::run_query::<R>(name, &args.to_string(), &self.store)?;
        Ok(serde_json::from_str(&text).expect("query answers are JSON"))
    }

    /// Runs a query that must succeed.
    #[track_caller]
    pub fn query_ok(&self, name: &str, args: Value) -> Value {
        self.query(name, args.clone())
            .unwrap_or_else(|e| panic!("query {name} {args} of {}: {e}", R::NAME))
    }

    /// The read model's raw entries.
    pub fn read_model(&self) -> &BTreeMap<String, String> {
        &self.store.0
    }

    /// The position of the last event fed.
    pub fn position(&self) -> u64 {
        self.position
    }
}
