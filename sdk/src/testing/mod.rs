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

mod aggregate_test;
mod projection_test;
mod reactor_test;

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use crate::aggregate::Aggregate;
use crate::event::{
    DomainEvent, EncodedEvent, StoredEvent, check_personal_fields, encode, event_types,
};
use crate::upcaster::{Upcast, Upcaster, upcast_stored};

pub use aggregate_test::{AggregateTest, Then};
pub use projection_test::{MemoryStore, ProjectionTest};
pub use reactor_test::{IntentJson, ReactorTest};

/// The aggregate id the harness uses unless told otherwise.
pub const DEFAULT_ID: &str = "test-1";

/// The harness's clock: the event at position `n` is recorded at this plus `n` seconds
/// (unless a [`ReactorTest`] is told otherwise).
pub const DEFAULT_EPOCH_MS: u64 = 1_700_000_000_000;

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
    event_id: String,
    recorded_at: u64,
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
            event_id: format!("00000000-0000-4000-8000-{position:012x}"),
            recorded_at: DEFAULT_EPOCH_MS + position * 1000,
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
            event_id: &self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            recorded_at: self.recorded_at,
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
