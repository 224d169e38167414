//! The aggregate harness: given events, when a command, then events or a refusal.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use super::{DEFAULT_ID, EventJson, Payload, Recorded, UpcastFn, encoded, upcast_step};
use crate::aggregate::{self, Aggregate, CommandContext, Rejection};
use crate::event::EncodedEvent;
use crate::upcaster::Upcaster;

/// An aggregate instance under test.
pub struct AggregateTest<A> {
    id: String,
    state: A,
    version: u64,
    upcasters: Vec<UpcastFn>,
    /// The stream so far (upcast), to rebuild the state after a `forget`.
    history: Vec<Recorded>,
    forgotten: BTreeSet<String>,
}

impl<A: Aggregate + fmt::Debug> fmt::Debug for AggregateTest<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregateTest")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> Default for AggregateTest<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Aggregate> AggregateTest<A> {
    /// A fresh instance with id [`DEFAULT_ID`].
    pub fn new() -> Self {
        Self::with_id(DEFAULT_ID)
    }

    /// A fresh instance with the given id.
    pub fn with_id(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            state: A::initial(id),
            version: 0,
            upcasters: Vec::new(),
            history: Vec::new(),
            forgotten: BTreeSet::new(),
        }
    }

    /// Runs events given from now on through the upcaster `U` (several chain, in order).
    pub fn with_upcaster<U: Upcaster>(mut self) -> Self {
        self.upcasters.push(upcast_step::<U>);
        self
    }

    /// Applies events already in the stream.
    #[track_caller]
    pub fn given(mut self, events: impl IntoIterator<Item = A::Event>) -> Self {
        for event in events {
            self.apply_recorded(encoded(&event).into());
        }
        self
    }

    /// Applies one event given in its stored form, e.g. an old schema version for an upcaster.
    #[track_caller]
    pub fn given_stored(mut self, event_type: &str, schema_version: u32, data: Value) -> Self {
        self.apply_recorded(Payload::plain(event_type, schema_version, data.to_string()));
        self
    }

    /// Forgets the data subject `subject`: the personal data of its events so far reads as
    /// shredded, the state is rebuilt from the stream, and events with personal data of
    /// `subject` are refused from now on, as in the host.
    #[track_caller]
    pub fn forget(mut self, subject: &str) -> Self {
        self.forgotten.insert(subject.to_owned());
        self.state = A::initial(&self.id);
        for record in &mut self.history {
            record.shred(subject);
            if let Err(e) = aggregate::apply_stored(&mut self.state, &record.view()) {
                panic!(
                    "applying event {} of {} after forgetting {subject:?}: {e}",
                    record.stream_version,
                    A::NAME
                );
            }
        }
        self
    }

    #[track_caller]
    fn apply_recorded(&mut self, payload: Payload) {
        payload.check_not_forgotten(&self.forgotten);
        self.version += 1;
        let record =
            Recorded::new(self.version, &self.id, self.version, payload).upcast(&self.upcasters);
        if let Err(e) = aggregate::apply_stored(&mut self.state, &record.view()) {
            panic!("applying event {} of {}: {e}", self.version, A::NAME);
        }
        self.history.push(record);
    }

    /// The current state.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// The current state as JSON, as the host's `state` query returns it.
    pub fn state_json(&self) -> Value {
        serde_json::from_str(&aggregate::state_json(&self.state)).expect("state JSON")
    }

    /// Asserts the state's JSON form.
    #[track_caller]
    pub fn then_expect_state(self, expected: Value) -> Self {
        assert_eq!(
            self.state_json(),
            expected,
            "state of {} {}",
            A::NAME,
            self.id
        );
        self
    }

    /// Sends a command.
    #[track_caller]
    pub fn when(self, command: A::Command) -> Then<A> {
        self.check_snapshot_roundtrip();
        let result = aggregate::run_handle(&self.state, command, &self.ctx());
        Then { test: self, result }
    }

    /// Sends a command as the host receives it: JSON such as `{"type":"Deposit","amount":5}`.
    #[track_caller]
    pub fn when_json(self, command: Value) -> Then<A> {
        self.check_snapshot_roundtrip();
        let result = aggregate::handle_payload(&self.state, &command.to_string(), &self.ctx());
        Then { test: self, result }
    }

    fn ctx(&self) -> CommandContext<'_> {
        CommandContext {
            id: &self.id,
            issued_at: 1_700_000_000_000,
            metadata: "{}",
        }
    }

    /// The host snapshots states and restores them later: they must survive the trip.
    #[track_caller]
    fn check_snapshot_roundtrip(&self) {
        let bytes = aggregate::snapshot(&self.state);
        let restored: A = aggregate::restore(&bytes).unwrap_or_else(|e| panic!("{e}"));
        let again = aggregate::snapshot(&restored);
        let (before, after): (Value, Value) = (
            serde_json::from_slice(&bytes).expect("snapshot is JSON"),
            serde_json::from_slice(&again).expect("snapshot is JSON"),
        );
        assert_eq!(
            before,
            after,
            "the state of {} changes through snapshot and restore",
            A::NAME
        );
    }
}

/// The outcome of a command, to check.
pub struct Then<A> {
    test: AggregateTest<A>,
    result: Result<Vec<EncodedEvent>, Rejection>,
}

impl<A> fmt::Debug for Then<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Then")
            .field("result", &self.result)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> Then<A> {
    /// What `handle` returned, in stored form.
    pub fn result(&self) -> &Result<Vec<EncodedEvent>, Rejection> {
        &self.result
    }

    /// The events the command produced, in stored form (data and personal part apart).
    #[track_caller]
    pub fn stored_events(&self) -> Vec<EventJson> {
        match &self.result {
            Ok(events) => events.iter().map(EventJson::from).collect(),
            Err(rejection) => panic!("expected events, but the command was refused: {rejection}"),
        }
    }

    /// Asserts the command produced exactly these events, then applies them and returns the
    /// test so it can go on.
    #[track_caller]
    pub fn then_expect_events(
        self,
        expected: impl IntoIterator<Item = A::Event>,
    ) -> AggregateTest<A> {
        let expected: Vec<EventJson> = expected
            .into_iter()
            .map(|e| EventJson::from(&encoded(&e)))
            .collect();
        let produced = match self.result {
            Ok(events) => events,
            Err(rejection) => {
                panic!("expected events {expected:?}, but the command was refused: {rejection}")
            }
        };
        let actual: Vec<EventJson> = produced.iter().map(EventJson::from).collect();
        assert_eq!(actual, expected, "events produced by {}", A::NAME);
        let mut test = self.test;
        for e in produced {
            test.apply_recorded(e.into());
        }
        test
    }

    /// Asserts the command produced no events.
    #[track_caller]
    pub fn then_expect_no_events(self) -> AggregateTest<A> {
        self.then_expect_events([])
    }

    /// Asserts a business rule refused the command with exactly this message.
    #[track_caller]
    pub fn then_expect_rejection(self, message: &str) -> AggregateTest<A> {
        match &self.result {
            Err(Rejection::Rejected(m)) => {
                assert_eq!(m, message, "rejection message of {}", A::NAME)
            }
            other => panic!(
                "expected the rejection {message:?}, got {}",
                describe(other)
            ),
        }
        self.test
    }

    /// Asserts the command was refused as malformed, with a message containing `fragment`.
    #[track_caller]
    pub fn then_expect_invalid(self, fragment: &str) -> AggregateTest<A> {
        match &self.result {
            Err(Rejection::Invalid(m)) => {
                assert!(
                    m.contains(fragment),
                    "invalid-command message {m:?} lacks {fragment:?}"
                )
            }
            other => panic!(
                "expected an invalid command ({fragment:?}), got {}",
                describe(other)
            ),
        }
        self.test
    }
}

fn describe(result: &Result<Vec<EncodedEvent>, Rejection>) -> String {
    match result {
        Ok(events) => format!(
            "events {:?}",
            events.iter().map(EventJson::from).collect::<Vec<_>>()
        ),
        Err(r) => r.to_string(),
    }
}
