//! Projections: build a read model from events, and answer queries over it.

use std::fmt;

use serde::Serialize;
use serde::de::{Deserialize, DeserializeOwned};

use crate::Error;
use crate::event::{DomainEvent, StoredEvent, event_types};

/// A read model built from the events of all streams.
///
/// A projection keeps no state of its own between calls: everything lives in the
/// [`ReadModel`], whose writes the host commits together with the projection's checkpoint.
/// Events whose type is not a variant of [`Projection::Event`] are skipped, so the enum needs
/// only the events (and fields) the projection reads.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an eshost projection",
    note = "implement `eshost_sdk::Projection` for it"
)]
pub trait Projection: 'static {
    /// The projection's name, e.g. `balances`.
    const NAME: &'static str;

    /// The events this projection reads.
    type Event: DomainEvent;

    /// Folds one event into the read model. `meta` is the stored event (stream id, position,
    /// time, ...). An error stops the projection at this event; it is never skipped.
    fn handle(
        event: Self::Event,
        meta: &StoredEvent<'_>,
        model: &mut ReadModel<'_>,
    ) -> Result<(), Error>;

    /// Answers the query `name`, returning JSON. Read-only.
    fn query(
        name: &str,
        args: QueryArgs<'_>,
        model: &ReadModelView<'_>,
    ) -> Result<serde_json::Value, QueryError>;
}

/// Where a projection's read model lives: the host's store inside a plugin, an in-memory map
/// in the test harness. Keys and values are text; each projection sees only its own keys.
pub trait ReadModelStore {
    /// The value under `key`.
    fn get(&self, key: &str) -> Option<String>;
    /// Stores `value` under `key`.
    fn put(&mut self, key: &str, value: &str);
    /// Removes `key`.
    fn delete(&mut self, key: &str);
    /// Up to `limit` entries whose keys start with `prefix`, in key order, after
    /// `start_after` when given.
    fn scan(&self, prefix: &str, start_after: Option<&str>, limit: u32) -> Vec<(String, String)>;
}

/// The read model a projection writes to while handling events.
pub struct ReadModel<'a> {
    store: &'a mut dyn ReadModelStore,
}

/// The read model as a query sees it: read-only.
#[derive(Clone, Copy)]
pub struct ReadModelView<'a> {
    store: &'a dyn ReadModelStore,
}

impl fmt::Debug for ReadModel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadModel").finish_non_exhaustive()
    }
}

impl fmt::Debug for ReadModelView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadModelView").finish_non_exhaustive()
    }
}

/// Page size of [`ReadModelView::scan_all`].
const SCAN_PAGE: u32 = 256;

impl<'a> ReadModelView<'a> {
    /// A view over `store`.
    pub fn new(store: &'a dyn ReadModelStore) -> Self {
        Self { store }
    }

    /// The text stored under `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.store.get(key)
    }

    /// The JSON value stored under `key`, decoded.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.store.get(key) {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::new(format!("read model key {key:?}: {e}"))),
        }
    }

    /// Up to `limit` entries under `prefix`, in key order, after `start_after` when given.
    pub fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Vec<(String, String)> {
        self.store.scan(prefix, start_after, limit)
    }

    /// Every entry under `prefix`, in key order (fetched page by page).
    pub fn scan_all(&self, prefix: &str) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = Vec::new();
        loop {
            let after = all.last().map(|(k, _)| k.as_str());
            let page = self.store.scan(prefix, after, SCAN_PAGE);
            let full = page.len() == SCAN_PAGE as usize;
            all.extend(page);
            if !full {
                return all;
            }
        }
    }
}

impl<'a> ReadModel<'a> {
    /// A read model writing to `store`.
    pub fn new(store: &'a mut dyn ReadModelStore) -> Self {
        Self { store }
    }

    /// The read-only view, e.g. to share lookup code with queries.
    pub fn view(&self) -> ReadModelView<'_> {
        ReadModelView {
            store: &*self.store,
        }
    }

    /// The text stored under `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.store.get(key)
    }

    /// The JSON value stored under `key`, decoded.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.view().get_json(key)
    }

    /// Up to `limit` entries under `prefix`, in key order, after `start_after` when given.
    pub fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Vec<(String, String)> {
        self.store.scan(prefix, start_after, limit)
    }

    /// Every entry under `prefix`, in key order.
    pub fn scan_all(&self, prefix: &str) -> Vec<(String, String)> {
        self.view().scan_all(prefix)
    }

    /// Stores `value` under `key`.
    pub fn put(&mut self, key: &str, value: &str) {
        self.store.put(key, value);
    }

    /// Stores `value` as JSON under `key`.
    pub fn put_json<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        let text = serde_json::to_string(value)?;
        self.store.put(key, &text);
        Ok(())
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: &str) {
        self.store.delete(key);
    }
}

/// The arguments of a query, as JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryArgs<'a>(&'a str);

impl<'a> QueryArgs<'a> {
    /// Wraps argument JSON text; empty text means `null`.
    pub fn new(json: &'a str) -> Self {
        Self(json)
    }

    /// The raw JSON text.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// Decodes the arguments; a failure is [`QueryError::InvalidArgs`].
    pub fn parse<T: Deserialize<'a>>(&self) -> Result<T, QueryError> {
        let text = if self.0.trim().is_empty() {
            "null"
        } else {
            self.0
        };
        serde_json::from_str(text).map_err(|e| QueryError::InvalidArgs(e.to_string()))
    }
}

/// Why a query failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// The projection has no query of that name.
    UnknownQuery(String),
    /// The arguments were malformed or missing.
    InvalidArgs(String),
    /// The query failed for another reason.
    Failed(String),
}

impl QueryError {
    /// The error for a query name the projection does not know.
    pub fn unknown(name: &str) -> Self {
        Self::UnknownQuery(format!("no query named {name:?}"))
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownQuery(m) => write!(f, "unknown query: {m}"),
            Self::InvalidArgs(m) => write!(f, "invalid arguments: {m}"),
            Self::Failed(m) => write!(f, "query failed: {m}"),
        }
    }
}

impl std::error::Error for QueryError {}

impl From<Error> for QueryError {
    fn from(e: Error) -> Self {
        Self::Failed(e.to_string())
    }
}

/// Handles a batch of stored events, skipping types the projection does not read. Stops at
/// the first failure, returning its position and message.
pub(crate) fn handle_batch<'e, P: Projection>(
    events: impl IntoIterator<Item = StoredEvent<'e>>,
    store: &mut dyn ReadModelStore,
) -> Result<(), (u64, String)> {
    let known = event_types::<P::Event>();
    let mut model = ReadModel::new(store);
    for event in events {
        if !known.contains(&event.event_type) {
            continue;
        }
        let decoded = event
            .decode::<P::Event>()
            .map_err(|e| (event.position, e))?;
        P::handle(decoded, &event, &mut model).map_err(|e| (event.position, e.to_string()))?;
    }
    Ok(())
}

/// Runs a query and renders its answer as JSON text.
pub(crate) fn run_query<P: Projection>(
    name: &str,
    args: &str,
    store: &dyn ReadModelStore,
) -> Result<String, QueryError> {
    let answer = P::query(name, QueryArgs::new(args), &ReadModelView::new(store))?;
    Ok(answer.to_string())
}
