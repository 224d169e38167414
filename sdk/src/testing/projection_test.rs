//! The projection harness: events in, the read model and query answers out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;

use serde_json::Value;

use super::{Payload, Recorded, UpcastFn, encoded, upcast_step};
use crate::projection::{self, Projection, QueryError, ReadModelStore};
use crate::upcaster::Upcaster;

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
