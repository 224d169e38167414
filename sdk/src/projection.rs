//! Projections: build a read model from events, and answer queries over it.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

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

/// Keeps one batch's reads and writes in the guest, so that a hot key (a bank total, say)
/// costs one host call to read and one to write per batch rather than per event. The host
/// commits a batch's writes atomically, so deferring them changes nothing it can observe.
///
/// Keys are hashed (an ordered map spends most of its time comparing long common prefixes);
/// key order is restored where it shows: in scans and at the flush. JSON values are decoded
/// straight from the cached text and encoded into recycled buffers, so a hot key costs no
/// allocation per event.
struct BatchCache<'a> {
    inner: &'a mut dyn ReadModelStore,
    /// Keys read or written in this batch. Reads are cached too (hence the cell: `get`
    /// takes `&self`); nobody else writes this namespace meanwhile.
    slots: RefCell<HashMap<String, Slot, BuildHasherDefault<FxHasher>>>,
    /// An empty buffer to encode the next value into (the last replaced value's).
    spare: Vec<u8>,
    /// The position of the event being handled.
    position: u64,
    /// Why a decoded value could not be encoded when a read needed its text: fails the event.
    failure: RefCell<Option<String>>,
}

/// What the batch knows about one key.
#[derive(Default)]
struct Slot {
    /// `None`: known to be absent (never stored, or deleted). Out of date while `stale`.
    value: Option<String>,
    /// The value decoded by `update_json`, if it was; it is the truth while `stale`.
    decoded: Option<Box<dyn Decoded>>,
    /// `decoded` changed since `value` was encoded from it.
    stale: bool,
    /// Written in this batch, not yet flushed.
    dirty: bool,
    /// The position of the event that last lent out `decoded`.
    position: u64,
}

impl Slot {
    /// Brings `value` up to date with `decoded`, reusing its buffer.
    fn encode(&mut self) -> Result<(), Error> {
        if !self.stale {
            return Ok(());
        }
        let decoded = self
            .decoded
            .as_ref()
            .expect("a stale slot has a decoded value");
        let mut buffer = self
            .value
            .take()
            .map(String::into_bytes)
            .unwrap_or_default();
        buffer.clear();
        if decoded.encode(&mut buffer)? {
            let text = String::from_utf8(buffer).map_err(|e| Error::new(e.to_string()))?;
            self.value = Some(text);
        }
        self.stale = false;
        Ok(())
    }

    /// Brings `value` up to date, or records why it cannot be.
    fn encode_or_record(&mut self, key: &str, failure: &RefCell<Option<String>>) {
        if let Err(error) = self.encode() {
            failure
                .borrow_mut()
                .get_or_insert_with(|| format!("read model key {key:?}: {error}"));
        }
    }
}

/// The Fx hash (rustc's): a multiply and a rotate per word. Keys are the plugin's own, for
/// one batch: nothing to gain from a DoS-resistant hash.
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl<'a> BatchCache<'a> {
    fn new(inner: &'a mut dyn ReadModelStore) -> Self {
        Self {
            inner,
            slots: RefCell::new(HashMap::default()),
            spare: Vec::new(),
            position: 0,
            failure: RefCell::new(None),
        }
    }

    /// Writes the pending changes through, in key order (deterministic), encoding the values
    /// kept decoded. A value that does not encode fails the event that last changed it (the
    /// other writes still go through; the host commits none of them).
    fn flush(&mut self) -> Result<(), (u64, String)> {
        let slots = self.slots.get_mut();
        let mut dirty: Vec<(&String, &mut Slot)> =
            slots.iter_mut().filter(|(_, s)| s.dirty).collect();
        dirty.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut result = Ok(());
        for (key, slot) in dirty {
            if let Err(error) = slot.encode() {
                if result.is_ok() {
                    result = Err((slot.position, format!("read model key {key:?}: {error}")));
                }
                continue;
            }
            slot.dirty = false;
            match &slot.value {
                Some(value) => self.inner.put(key, value),
                None => self.inner.delete(key),
            }
        }
        result
    }

    /// Sets `key` to `value`; returns the value it replaces.
    fn write(&mut self, key: &str, value: Option<String>) -> Option<String> {
        let slots = self.slots.get_mut();
        match slots.get_mut(key) {
            Some(slot) => {
                slot.dirty = true;
                slot.decoded = None;
                slot.stale = false;
                std::mem::replace(&mut slot.value, value)
            }
            None => {
                let slot = Slot {
                    value,
                    dirty: true,
                    ..Slot::default()
                };
                slots.insert(key.to_owned(), slot);
                None
            }
        }
    }
}

impl ReadModelStore for BatchCache<'_> {
    fn get(&self, key: &str) -> Option<String> {
        let mut value = None;
        self.get_with(key, &mut |text| value = text.map(str::to_owned));
        value
    }

    fn get_with(&self, key: &str, read: &mut dyn FnMut(Option<&str>)) {
        let mut slots = self.slots.borrow_mut();
        if let Some(slot) = slots.get_mut(key) {
            slot.encode_or_record(key, &self.failure);
            return read(slot.value.as_deref());
        }
        let value = self.inner.get(key);
        read(value.as_deref());
        let slot = Slot {
            value,
            ..Slot::default()
        };
        slots.insert(key.to_owned(), slot);
    }

    fn decoded_slot(
        &mut self,
        key: &str,
        type_id: TypeId,
        decode: &mut DecodeFn<'_>,
    ) -> Option<Result<&mut dyn Any, Error>> {
        let slots = self.slots.get_mut();
        if !slots.contains_key(key) {
            let slot = Slot {
                value: self.inner.get(key),
                ..Slot::default()
            };
            slots.insert(key.to_owned(), slot);
        }
        let slot = slots.get_mut(key).expect("inserted above");
        let typed = slot
            .decoded
            .as_ref()
            .is_some_and(|d| d.as_any().type_id() == type_id);
        if !typed {
            // Not decoded yet, or as another type: from the text.
            if let Err(error) = slot.encode() {
                return Some(Err(Error::new(format!("read model key {key:?}: {error}"))));
            }
            match decode(slot.value.as_deref()) {
                Ok(decoded) => slot.decoded = Some(decoded),
                Err(error) => return Some(Err(error)),
            }
        }
        slot.stale = true;
        slot.dirty = true;
        slot.position = self.position;
        let decoded = slot.decoded.as_mut().expect("decoded above");
        Some(Ok(decoded.as_any_mut()))
    }

    fn put(&mut self, key: &str, value: &str) {
        self.write(key, Some(value.to_owned()));
    }

    fn put_with(
        &mut self,
        key: &str,
        write: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut buffer = std::mem::take(&mut self.spare);
        buffer.clear();
        if let Err(error) = write(&mut buffer) {
            self.spare = buffer;
            return Err(error);
        }
        let text = match String::from_utf8(buffer) {
            Ok(text) => text,
            Err(error) => {
                let message = error.to_string();
                self.spare = error.into_bytes();
                return Err(Error::new(message));
            }
        };
        if let Some(old) = self.write(key, Some(text)) {
            self.spare = old.into_bytes();
        }
        Ok(())
    }

    fn delete(&mut self, key: &str) {
        if let Some(old) = self.write(key, None) {
            self.spare = old.into_bytes();
        }
    }

    fn scan(&self, prefix: &str, start_after: Option<&str>, limit: u32) -> Vec<(String, String)> {
        let in_range = |k: &String, s: &Slot| {
            s.dirty && k.starts_with(prefix) && start_after.is_none_or(|after| k.as_str() > after)
        };
        for (key, slot) in self.slots.borrow_mut().iter_mut() {
            if slot.stale && in_range(key, slot) {
                slot.encode_or_record(key, &self.failure);
            }
        }
        let slots = self.slots.borrow();
        // The pending writes in range, in key order, to merge over one page from the host.
        // (Every key with the prefix is past a `start_after` that sorts before the prefix.)
        let mut pending: Vec<(&String, &Option<String>)> = slots
            .iter()
            .filter(|(k, s)| in_range(k, s))
            .map(|(k, s)| (k, &s.value))
            .collect();
        pending.sort_unstable_by(|a, b| a.0.cmp(b.0));
        // Deleted keys can leave the host's page short: fetch one more per pending delete.
        let deletes = pending.iter().filter(|(_, v)| v.is_none()).count();
        let want = limit as usize;
        let fetch = u32::try_from(want + deletes).unwrap_or(u32::MAX);
        let host = self.inner.scan(prefix, start_after, fetch);
        let host_full = host.len() as u64 >= u64::from(fetch);
        let host_end = host.last().map(|(k, _)| k.clone());
        let mut merged: BTreeMap<String, String> = host.into_iter().collect();
        for (key, value) in pending {
            // Past the end of a full host page, entries the host did not return may come
            // first: leave those keys to the next page.
            if host_full && host_end.as_ref().is_some_and(|end| key > end) {
                break;
            }
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        merged.into_iter().take(want).collect()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemoryStore;

    fn keys(entries: Vec<(String, String)>) -> Vec<String> {
        entries.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn writes_stay_in_the_guest_until_the_flush() {
        let mut host = MemoryStore::default();
        host.put("a", "1");
        let mut cache = BatchCache::new(&mut host);
        assert_eq!(cache.get("a").as_deref(), Some("1"));
        cache.put("a", "2");
        cache.put("b", "3");
        cache.delete("b");
        assert_eq!(cache.get("a").as_deref(), Some("2"));
        assert_eq!(cache.get("b"), None);
        cache.flush().unwrap();
        assert_eq!(
            host.0.into_iter().collect::<Vec<_>>(),
            [("a".into(), "2".into())]
        );
    }

    #[test]
    fn json_goes_through_the_cache_and_a_failed_encoding_writes_nothing() {
        let mut host = MemoryStore::default();
        host.put("n", "1");
        let mut cache = BatchCache::new(&mut host);
        let mut model = ReadModel::new(&mut cache);
        assert_eq!(model.get_json::<u64>("n").unwrap(), Some(1));
        model.put_json("n", &2u64).unwrap();
        model.put_json("m", &[3u64]).unwrap();
        assert_eq!(model.get_json::<u64>("n").unwrap(), Some(2));
        assert_eq!(model.get_json::<u64>("none").unwrap(), None);
        assert!(model.get_json::<String>("n").is_err());
        // Non-string map keys do not encode as JSON.
        let unencodable = BTreeMap::from([((1u8, 2u8), 3u8)]);
        assert!(model.put_json("n", &unencodable).is_err());
        model.put_json("m", &"four").unwrap();
        assert_eq!(model.get("n").as_deref(), Some("2"));
        cache.flush().unwrap();
        assert_eq!(
            host.0.into_iter().collect::<Vec<_>>(),
            [("m".into(), "\"four\"".into()), ("n".into(), "2".into())]
        );
    }

    #[test]
    fn update_json_keeps_values_decoded_until_the_flush() {
        let mut host = MemoryStore::default();
        host.put("c/a", "1");
        let mut direct = host.clone();
        let bump = |model: &mut ReadModel<'_>, key: &str| {
            model.update_json(key, |n: &mut Option<u64>| {
                *n = Some(n.unwrap_or(0) + 1);
                Ok(*n)
            })
        };
        let mut cache = BatchCache::new(&mut host);
        let mut model = ReadModel::new(&mut cache);
        assert_eq!(bump(&mut model, "c/a").unwrap(), Some(2));
        assert_eq!(bump(&mut model, "c/a").unwrap(), Some(3));
        assert_eq!(bump(&mut model, "c/b").unwrap(), Some(1));
        // Reads, scans and other types see the current value.
        assert_eq!(model.get("c/a").as_deref(), Some("3"));
        assert_eq!(
            model.scan("c/", None, 10),
            [("c/a".into(), "3".into()), ("c/b".into(), "1".into())]
        );
        assert_eq!(bump(&mut model, "c/a").unwrap(), Some(4));
        let as_float = model
            .update_json("c/a", |n: &mut Option<f64>| Ok(*n))
            .unwrap();
        assert_eq!(as_float, Some(4.0));
        model
            .update_json("c/b", |n: &mut Option<u64>| {
                *n = None;
                Ok(())
            })
            .unwrap();
        assert!(
            model
                .update_json("c/a", |_: &mut Option<String>| Ok(()))
                .is_err()
        );
        cache.flush().unwrap();
        // The same without a cache.
        let mut model = ReadModel::new(&mut direct);
        for key in ["c/a", "c/a", "c/b", "c/a"] {
            bump(&mut model, key).unwrap();
        }
        model
            .update_json("c/a", |n: &mut Option<f64>| Ok(*n))
            .unwrap();
        model.delete("c/b");
        assert_eq!(host, direct);
        assert_eq!(host.get("c/a").as_deref(), Some("4.0"));
    }

    #[test]
    fn a_decoded_value_that_does_not_encode_fails_the_event_that_changed_it() {
        let mut host = MemoryStore::default();
        let mut cache = BatchCache::new(&mut host);
        cache.position = 7;
        let mut model = ReadModel::new(&mut cache);
        model
            .update_json("bad", |m: &mut Option<BTreeMap<(u8, u8), u8>>| {
                *m = Some(BTreeMap::from([((1, 2), 3)]));
                Ok(())
            })
            .unwrap();
        model.put("good", "1");
        let (position, message) = cache.flush().unwrap_err();
        assert_eq!(position, 7);
        assert!(message.contains("\"bad\""), "{message}");
    }

    #[test]
    fn scans_merge_pending_writes() {
        let mut host = MemoryStore::default();
        for k in ["a/1", "a/2", "a/3", "a/4", "b/1"] {
            host.put(k, "host");
        }
        let mut cache = BatchCache::new(&mut host);
        cache.delete("a/2");
        cache.put("a/25", "new");
        cache.put("a/9", "new");
        cache.put("a/1", "changed");
        assert_eq!(keys(cache.scan("a/", None, 3)), ["a/1", "a/25", "a/3"]);
        assert_eq!(
            cache.scan("a/", None, 1),
            [("a/1".into(), "changed".into())]
        );
        assert_eq!(
            keys(cache.scan("a/", Some("a/25"), 10)),
            ["a/3", "a/4", "a/9"]
        );
        assert_eq!(keys(cache.scan("b", None, 10)), ["b/1"]);
    }

    /// Random operations through the cache must read exactly like the same operations
    /// applied straight to the store.
    #[test]
    fn the_cache_reads_like_the_store() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _round in 0..50 {
            let mut host = MemoryStore::default();
            for i in 0..next(40) {
                host.put(&format!("k/{:02}", next(60)), &i.to_string());
            }
            let mut reference = host.clone();
            let mut cache = BatchCache::new(&mut host);
            for step in 0..200 {
                let key = format!("k/{:02}", next(60));
                match next(5) {
                    0 => {
                        cache.delete(&key);
                        reference.delete(&key);
                    }
                    1 | 2 => {
                        cache.put(&key, &step.to_string());
                        reference.put(&key, &step.to_string());
                    }
                    3 => assert_eq!(cache.get(&key), reference.get(&key)),
                    _ => {
                        let after = (next(2) == 0).then(|| format!("k/{:02}", next(60)));
                        let limit = next(8) as u32;
                        assert_eq!(
                            cache.scan("k/", after.as_deref(), limit),
                            reference.scan("k/", after.as_deref(), limit),
                            "scan after {after:?} limit {limit}"
                        );
                    }
                }
            }
            assert_eq!(
                ReadModelView::new(&cache).scan_all("k/"),
                reference.scan("k/", None, 1000)
            );
            cache.flush().unwrap();
            assert_eq!(host, reference);
        }
    }
}
