//! Projections: build a read model from events, and answer queries over it.

pub(crate) mod batch;

use std::any::{Any, TypeId};
use std::fmt;

use serde::Serialize;
use serde::de::{Deserialize, DeserializeOwned};

use crate::Error;
use crate::event::{DomainEvent, StoredEvent, event_types};

use batch::BatchCache;

/// A read model built from the events of all streams.
///
/// A projection keeps no state of its own between calls: everything lives in the
/// [`ReadModel`], whose writes the host commits together with the projection's checkpoint.
/// Events whose type is not a variant of [`Projection::Event`] are skipped, so the enum needs
/// only the events (and fields) the projection reads.
///
/// Within one batch the SDK keeps reads and writes in the guest: each key is read from the
/// host at most once, and the writes reach the host at the end of the batch, in key order
/// (scans see them merged). A hot key thus costs two host calls per batch, not per event.
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

    /// Calls `read` with the value under `key`, borrowed where the store can (the batch
    /// cache does; the default copies it through [`get`](Self::get)).
    #[doc(hidden)]
    fn get_with(&self, key: &str, read: &mut dyn FnMut(Option<&str>)) {
        read(self.get(key).as_deref());
    }

    /// Stores under `key` the UTF-8 text that `write` appends to an empty buffer; nothing is
    /// stored when `write` fails. The batch cache reuses its buffers.
    #[doc(hidden)]
    fn put_with(
        &mut self,
        key: &str,
        write: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut buffer = Vec::new();
        write(&mut buffer)?;
        let text = String::from_utf8(buffer).map_err(|e| Error::new(e.to_string()))?;
        self.put(key, &text);
        Ok(())
    }

    /// The decoded value under `key` for [`ReadModel::update_json`], kept by the batch cache
    /// until the batch ends; `decode` makes it from the stored text when the cache holds no
    /// value of type `type_id`. `None`: this store keeps no decoded values.
    #[doc(hidden)]
    fn decoded_slot(
        &mut self,
        key: &str,
        type_id: TypeId,
        decode: &mut DecodeFn<'_>,
    ) -> Option<Result<&mut dyn Any, Error>> {
        let _ = (key, type_id, decode);
        None
    }
}

/// Decodes a value for [`ReadModelStore::decoded_slot`] from its text (`None`: absent).
#[doc(hidden)]
pub type DecodeFn<'a> = dyn FnMut(Option<&str>) -> Result<Box<dyn Decoded>, Error> + 'a;

/// A value [`ReadModel::update_json`] keeps decoded in the batch cache: an `Option<T>`
/// (`None`: absent).
#[doc(hidden)]
pub trait Decoded: Any {
    /// Appends the value's JSON to `out`; `false` when it is absent.
    fn encode(&self, out: &mut Vec<u8>) -> Result<bool, Error>;
    /// For the downcast.
    fn as_any(&self) -> &dyn Any;
    /// For the downcast.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Serialize + 'static> Decoded for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<bool, Error> {
        match self {
            Some(value) => serde_json::to_writer(out, value)
                .map(|()| true)
                .map_err(Error::from),
            None => Ok(false),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
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
        let mut decoded = Ok(None);
        self.store.get_with(key, &mut |text| {
            if let Some(text) = text {
                decoded = serde_json::from_str(text).map(Some);
            }
        });
        decoded.map_err(|e| Error::new(format!("read model key {key:?}: {e}")))
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
        self.store.put_with(key, &mut |buffer| {
            serde_json::to_writer(buffer, value).map_err(Error::from)
        })
    }

    /// Reads the JSON value under `key` as a `T` (`None` when absent), lets `update` change
    /// it, and stores the result (`None` removes the key); returns what `update` returns.
    ///
    /// The same as [`get_json`](Self::get_json) then [`put_json`](Self::put_json) (or
    /// [`delete`](Self::delete)), but within a batch the value stays decoded between calls
    /// and is encoded once, when the batch ends: the cheap way to keep a counter or a
    /// per-stream record that many events change. If `update` fails, the batch fails with
    /// its error (unless the projection handles it, in which case the changes `update` made
    /// before failing stand).
    pub fn update_json<T, R>(
        &mut self,
        key: &str,
        update: impl FnOnce(&mut Option<T>) -> Result<R, Error>,
    ) -> Result<R, Error>
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        let mut decode = |text: Option<&str>| -> Result<Box<dyn Decoded>, Error> {
            let value: Option<T> = match text {
                Some(text) => Some(
                    serde_json::from_str(text)
                        .map_err(|e| Error::new(format!("read model key {key:?}: {e}")))?,
                ),
                None => None,
            };
            Ok(Box::new(value))
        };
        match self
            .store
            .decoded_slot(key, TypeId::of::<Option<T>>(), &mut decode)
        {
            Some(slot) => {
                let value = slot?
                    .downcast_mut::<Option<T>>()
                    .expect("the cache decodes the type asked for");
                update(value)
            }
            None => {
                let mut value = self.get_json::<T>(key)?;
                let result = update(&mut value)?;
                match &value {
                    Some(value) => self.put_json(key, value)?,
                    None => self.delete(key),
                }
                Ok(result)
            }
        }
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
    let mut cache = BatchCache::new(store);
    let result = (|| {
        for event in events {
            if !known.contains(&event.event_type) {
                continue;
            }
            let decoded = event
                .decode::<P::Event>()
                .map_err(|e| (event.position, e))?;
            cache.position = event.position;
            P::handle(decoded, &event, &mut ReadModel::new(&mut cache))
                .map_err(|e| (event.position, e.to_string()))?;
            // A decoded value that would not encode when a read needed its text.
            if let Some(message) = cache.failure.get_mut().take() {
                return Err((event.position, message));
            }
        }
        Ok(())
    })();
    // Flushed even after a failure, so the host sees the writes it would have seen without
    // the cache; it commits them with the checkpoint, or not at all.
    let flushed = cache.flush();
    result.and(flushed)
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
