//! A worker's cache of aggregates: least recently used goes first when it is full.

use std::collections::{BTreeMap, HashMap};

/// Entries by key, with their use order.
#[derive(Debug)]
pub(crate) struct Lru<V> {
    entries: HashMap<String, (u64, V)>,
    /// Use tick → key; the first entry is the least recently used.
    order: BTreeMap<u64, String>,
    tick: u64,
    capacity: usize,
}

impl<V> Lru<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Lru {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Removes and returns the entry for `key`.
    pub(crate) fn take(&mut self, key: &str) -> Option<V> {
        let (tick, value) = self.entries.remove(key)?;
        self.order.remove(&tick);
        Some(value)
    }

    /// Inserts `value` as the most recently used; returns what had to go to make room.
    pub(crate) fn put(&mut self, key: String, value: V) -> Vec<V> {
        let mut evicted: Vec<V> = self.take(&key).into_iter().collect();
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, value)) = self.entries.remove(&oldest) {
                evicted.push(value);
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, (self.tick, value));
        evicted
    }

    /// Empties the cache.
    pub(crate) fn drain(&mut self) -> Vec<V> {
        self.order.clear();
        self.entries.drain().map(|(_, (_, value))| value).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut lru = Lru::new(2);
        assert!(lru.put("a".into(), 1).is_empty());
        assert!(lru.put("b".into(), 2).is_empty());
        // Using "a" makes "b" the oldest.
        let a = lru.take("a").unwrap();
        assert!(lru.put("a".into(), a).is_empty());
        assert_eq!(lru.put("c".into(), 3), vec![2]);
        assert_eq!(lru.len(), 2);
        assert_eq!(lru.take("b"), None);
        assert_eq!(lru.put("a".into(), 10), vec![1]);
        let mut rest = lru.drain();
        rest.sort();
        assert_eq!(rest, vec![3, 10]);
    }
}
