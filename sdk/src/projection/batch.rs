//! The batch cache: one batch's read-model reads and writes kept in the guest.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use super::{DecodeFn, Decoded, ReadModelStore};
use crate::Error;

/// Keeps one batch's reads and writes in the guest, so that a hot key (a bank total, say)
/// costs one host call to read and one to write per batch rather than per event. The host
/// commits a batch's writes atomically, so deferring them changes nothing it can observe.
///
/// Keys are hashed (an ordered map spends most of its time comparing long common prefixes);
/// key order is restored where it shows: in scans and at the flush. JSON values are decoded
/// straight from the cached text and encoded into recycled buffers, so a hot key costs no
/// allocation per event.
pub(crate) struct BatchCache<'a> {
    inner: &'a mut dyn ReadModelStore,
    /// Keys read or written in this batch. Reads are cached too (hence the cell: `get`
    /// takes `&self`); nobody else writes this namespace meanwhile.
    slots: RefCell<HashMap<String, Slot, BuildHasherDefault<FxHasher>>>,
    /// An empty buffer to encode the next value into (the last replaced value's).
    spare: Vec<u8>,
    /// The position of the event being handled.
    pub(crate) position: u64,
    /// Why a decoded value could not be encoded when a read needed its text: fails the event.
    pub(crate) failure: RefCell<Option<String>>,
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
    pub(crate) fn new(inner: &'a mut dyn ReadModelStore) -> Self {
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
    pub(crate) fn flush(&mut self) -> Result<(), (u64, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::{ReadModel, ReadModelView};
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
