//! A given/when/then harness that runs plugins natively, under plain `cargo test`.
//!
//! Events given to the harness take the same path as in the host: encoded to their stored
//! form, decoded from it, optionally upcast, then applied. Commands go through `handle` and
//! the resulting events are compared in their stored form (type, schema version, JSON data,
//! and the personal part: subject and personal data).
//!
//! Personal data (see [`DomainEvent::PERSONAL_FIELDS`]) travels apart from `data` as in the
//! host. `forget(subject)` on an [`AggregateTest`] or a [`ProjectionTest`] erases a subject:
//! its events read as shredded from then on and the state or read model is rebuilt from them,
//! so a test can check that nothing of the subject's personal data is left.
//!
//! ```ignore
//! use eshost_sdk::testing::given;
//!
//! given::<Account>([Event::Opened { owner: "Ann".into() }, Event::Deposited { amount: 300 }])
//!     .when(Command::Withdraw { amount: 500 })
//!     .then_expect_rejection("insufficient funds: balance 300, withdrawal 500");
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;

use serde_json::Value;

use crate::aggregate::{self, Aggregate, CommandContext, Rejection};
use crate::event::{
    DomainEvent, EncodedEvent, StoredEvent, check_personal_fields, encode, event_types,
};
use crate::projection::{self, Projection, QueryError, ReadModelStore};
use crate::upcaster::{Upcast, Upcaster, upcast_stored};

/// The aggregate id the harness uses unless told otherwise.
pub const DEFAULT_ID: &str = "test-1";

/// Starts an aggregate test from the events already in the stream.
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> AggregateTest<A> {
    AggregateTest::new().given(events)
}

/// An upcaster step, type-erased so a test can chain several.
type UpcastFn = fn(&StoredEvent<'_>) -> Result<Upcast, String>;

fn upcast_step<U: Upcaster>(event: &StoredEvent<'_>) -> Result<Upcast, String> {
    if U::UPCASTS.contains(&(event.event_type, event.schema_version)) {
        upcast_stored::<U>(event)
    } else {
        Ok(Upcast::Unchanged)
    }
}

/// An event in the form a writer hands it to the store.
#[derive(Debug, Clone)]
struct Payload {
    event_type: String,
    schema_version: u32,
    data: String,
    subject_id: Option<String>,
    personal_data: Option<String>,
}

impl Payload {
    /// An event without personal data.
    fn plain(event_type: &str, schema_version: u32, data: String) -> Self {
        Self {
            event_type: event_type.to_owned(),
            schema_version,
            data,
            subject_id: None,
            personal_data: None,
        }
    }

    /// The host refuses to store personal data of a forgotten subject.
    #[track_caller]
    fn check_not_forgotten(&self, forgotten: &BTreeSet<String>) {
        if let (Some(subject), Some(_)) = (&self.subject_id, &self.personal_data) {
            assert!(
                !forgotten.contains(subject),
                "{} carries personal data of the forgotten subject {subject:?}, which the host \
                 refuses to store",
                self.event_type
            );
        }
    }
}

impl From<EncodedEvent> for Payload {
    fn from(e: EncodedEvent) -> Self {
        Self {
            event_type: e.event_type.to_owned(),
            schema_version: e.schema_version,
            data: e.data,
            subject_id: e.subject_id,
            personal_data: e.personal_data,
        }
    }
}

/// An owned stored event, the harness's record of one event.
#[derive(Debug, Clone)]
struct Recorded {
    position: u64,
    stream_id: String,
    stream_version: u64,
    event_type: String,
    schema_version: u32,
    data: String,
    subject_id: Option<String>,
    personal_data: Option<String>,
    shredded: bool,
}

impl Recorded {
    fn new(position: u64, stream_id: &str, stream_version: u64, payload: Payload) -> Self {
        Self {
            position,
            stream_id: stream_id.to_owned(),
            stream_version,
            event_type: payload.event_type,
            schema_version: payload.schema_version,
            data: payload.data,
            subject_id: payload.subject_id,
            personal_data: payload.personal_data,
            shredded: false,
        }
    }

    /// Erases the personal data if it is `subject`'s, as the host's erased key does.
    fn shred(&mut self, subject: &str) {
        if self.subject_id.as_deref() == Some(subject) && self.personal_data.is_some() {
            self.personal_data = None;
            self.shredded = true;
        }
    }

    fn view(&self) -> StoredEvent<'_> {
        StoredEvent {
            position: self.position,
            stream_id: &self.stream_id,
            stream_version: self.stream_version,
            event_id: "00000000-0000-4000-8000-000000000000",
            event_type: &self.event_type,
            schema_version: self.schema_version,
            recorded_at: 1_700_000_000_000 + self.position * 1000,
            data: &self.data,
            metadata: "{}",
            subject_id: self.subject_id.as_deref(),
            personal_data: self.personal_data.as_deref(),
            shredded: self.shredded,
        }
    }

    /// Runs the upcaster chain until no step changes the event, as the host does on read.
    fn upcast(mut self, chain: &[UpcastFn]) -> Self {
        for _ in 0..64 {
            let mut changed = false;
            for step in chain {
                match step(&self.view()) {
                    Ok(Upcast::Unchanged) => {}
                    Ok(Upcast::Upcasted {
                        event_type,
                        schema_version,
                        data,
                    }) => {
                        self.event_type = event_type;
                        self.schema_version = schema_version;
                        self.data = data;
                        changed = true;
                    }
                    Err(e) => panic!(
                        "upcasting {} at position {}: {e}",
                        self.event_type, self.position
                    ),
                }
            }
            if !changed {
                return self;
            }
        }
        panic!("the upcaster chain does not settle on {}", self.event_type)
    }
}

fn encoded<E: DomainEvent>(event: &E) -> EncodedEvent {
    let enc = encode(event).unwrap_or_else(|e| panic!("{e}"));
    check_schema_versions::<E>();
    check_all_personal_fields::<E>();
    enc
}

/// Fails a test whose `PERSONAL_FIELDS` names an event type or field that does not exist: a
/// typo would store that field in the clear.
fn check_all_personal_fields<E: DomainEvent>() {
    let types = event_types::<E>();
    for (ty, fields) in E::PERSONAL_FIELDS {
        assert!(
            types.contains(ty),
            "PERSONAL_FIELDS names {ty:?}, which is not an event type of {} (types: {types:?})",
            std::any::type_name::<E>()
        );
        if let Err(e) = check_personal_fields::<E>(ty, fields) {
            panic!("{e}");
        }
    }
}

/// Fails a test whose `SCHEMA_VERSIONS` names an event type that does not exist.
fn check_schema_versions<E: DomainEvent>() {
    let types = event_types::<E>();
    for (ty, version) in E::SCHEMA_VERSIONS {
        assert!(
            types.contains(ty),
            "SCHEMA_VERSIONS names {ty:?}, which is not an event type of {} (types: {types:?})",
            std::any::type_name::<E>()
        );
        assert!(
            *version >= 1,
            "schema versions start at 1; {ty:?} has {version}"
        );
    }
}

/// One stored event as a test compares it: type, schema version, JSON data, and the personal
/// part.
#[derive(Clone, PartialEq)]
pub struct EventJson {
    /// The event type.
    pub event_type: String,
    /// The schema version.
    pub schema_version: u32,
    /// The data, parsed: without the personal fields.
    pub data: Value,
    /// The data subject of `personal_data`.
    pub subject_id: Option<String>,
    /// The personal data, parsed.
    pub personal_data: Option<Value>,
}

impl fmt::Debug for EventJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} v{} {}",
            self.event_type, self.schema_version, self.data
        )?;
        if let (Some(subject), Some(personal)) = (&self.subject_id, &self.personal_data) {
            write!(f, " personal of {subject:?} {personal}")?;
        }
        Ok(())
    }
}

impl From<&EncodedEvent> for EventJson {
    fn from(e: &EncodedEvent) -> Self {
        Self {
            event_type: e.event_type.to_owned(),
            schema_version: e.schema_version,
            data: serde_json::from_str(&e.data).expect("encoded data is JSON"),
            subject_id: e.subject_id.clone(),
            personal_data: e
                .personal_data
                .as_deref()
                .map(|p| serde_json::from_str(p).expect("encoded personal data is JSON")),
        }
    }
}

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

/// Runs an upcaster on one event given in stored form. `Ok(None)` means unchanged. Checks,
/// like the host, that an upcast raises the schema version and gives a type the upcaster
/// declares (`UPCASTS` or `RENAMES_TO`).
pub fn upcast<U: Upcaster>(
    event_type: &str,
    schema_version: u32,
    data: Value,
) -> Result<Option<EventJson>, String> {
    let payload = Payload::plain(event_type, schema_version, data.to_string());
    let record = Recorded::new(1, DEFAULT_ID, 1, payload);
    match upcast_stored::<U>(&record.view())? {
        Upcast::Unchanged => Ok(None),
        Upcast::Upcasted {
            event_type,
            schema_version,
            data,
        } => Ok(Some(EventJson {
            event_type,
            schema_version,
            data: serde_json::from_str(&data)
                .map_err(|e| format!("upcast data is not JSON: {e}"))?,
            subject_id: None,
            personal_data: None,
        })),
    }
}

/// An in-memory read model, ordered by key like the host's.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemoryStore(pub BTreeMap<String, String>);

impl ReadModelStore for MemoryStore {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }

    fn put(&mut self, key: &str, value: &str) {
        self.0.insert(key.to_owned(), value.to_owned());
    }

    fn delete(&mut self, key: &str) {
        self.0.remove(key);
    }

    fn scan(&self, prefix: &str, start_after: Option<&str>, limit: u32) -> Vec<(String, String)> {
        use std::ops::Bound;
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        self.0
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit as usize)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A projection under test, with an in-memory read model. Events from several streams
/// interleave in the order they are given, as in `$all`.
pub struct ProjectionTest<P> {
    store: MemoryStore,
    position: u64,
    stream_versions: BTreeMap<String, u64>,
    upcasters: Vec<UpcastFn>,
    /// Every event fed so far (upcast), to rebuild the read model after a `forget`.
    history: Vec<Recorded>,
    forgotten: BTreeSet<String>,
    projection: PhantomData<P>,
}

impl<P> fmt::Debug for ProjectionTest<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectionTest")
            .field("position", &self.position)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<P: Projection> Default for ProjectionTest<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Projection> ProjectionTest<P> {
    /// An empty read model at position 0.
    pub fn new() -> Self {
        Self {
            store: MemoryStore::default(),
            position: 0,
            stream_versions: BTreeMap::new(),
            upcasters: Vec::new(),
            history: Vec::new(),
            forgotten: BTreeSet::new(),
            projection: PhantomData,
        }
    }

    /// Runs events given from now on through the upcaster `U`.
    pub fn with_upcaster<U: Upcaster>(mut self) -> Self {
        self.upcasters.push(upcast_step::<U>);
        self
    }

    /// Feeds events appended to `stream_id`, as one batch.
    #[track_caller]
    pub fn given(self, stream_id: &str, events: impl IntoIterator<Item = P::Event>) -> Self {
        let stored = events.into_iter().map(|e| encoded(&e).into()).collect();
        self.feed(stream_id, stored)
    }

    /// Feeds one event in stored form, e.g. a type the projection does not read.
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

    /// Forgets the data subject `subject`: the personal data of its events so far reads as
    /// shredded, and the read model is rebuilt from every event fed (as a projection rebuild
    /// after the forget does); events with personal data of `subject` are refused from now
    /// on, as in the host.
    #[track_caller]
    pub fn forget(mut self, subject: &str) -> Self {
        self.forgotten.insert(subject.to_owned());
        for record in &mut self.history {
            record.shred(subject);
        }
        let mut rebuilt = MemoryStore::default();
        if let Err((position, message)) =
            projection::handle_batch::<P>(self.history.iter().map(Recorded::view), &mut rebuilt)
        {
            panic!(
                "projection {} failed at position {position} rebuilding after forgetting \
                 {subject:?}: {message}",
                P::NAME
            );
        }
        self.store = rebuilt;
        self
    }

    #[track_caller]
    fn feed(mut self, stream_id: &str, events: Vec<Payload>) -> Self {
        if let Err((position, message)) = self.try_feed(stream_id, events) {
            panic!(
                "projection {} failed at position {position}: {message}",
                P::NAME
            );
        }
        self
    }

    /// Like [`ProjectionTest::given_stored`], but returns the projection's failure,
    /// `(position, message)`, instead of panicking. A failed batch leaves the read model and
    /// positions as they were, as in the host.
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

    #[track_caller]
    fn try_feed(&mut self, stream_id: &str, events: Vec<Payload>) -> Result<(), (u64, String)> {
        let mut position = self.position;
        let mut stream_version = self.stream_versions.get(stream_id).copied().unwrap_or(0);
        let mut records = Vec::with_capacity(events.len());
        for payload in events {
            payload.check_not_forgotten(&self.forgotten);
            position += 1;
            stream_version += 1;
            let record = Recorded::new(position, stream_id, stream_version, payload);
            records.push(record.upcast(&self.upcasters));
        }
        // The host commits a batch's writes only if the whole batch succeeds.
        let mut scratch = self.store.clone();
        projection::handle_batch::<P>(records.iter().map(Recorded::view), &mut scratch)?;
        self.store = scratch;
        self.history.extend(records);
        self.position = position;
        self.stream_versions
            .insert(stream_id.to_owned(), stream_version);
        Ok(())
    }

    /// Runs a query against the read model.
    pub fn query(&self, name: &str, args: Value) -> Result<Value, QueryError> {
        let text = projection::run_query::<P>(name, &args.to_string(), &self.store)?;
        Ok(serde_json::from_str(&text).expect("query answers are JSON"))
    }

    /// Runs a query that must succeed.
    #[track_caller]
    pub fn query_ok(&self, name: &str, args: Value) -> Value {
        self.query(name, args.clone())
            .unwrap_or_else(|e| panic!("query {name} {args} of {}: {e}", P::NAME))
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
