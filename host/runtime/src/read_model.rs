//! The read model a projection writes to, as the host sees it: the [`ReadModel`] trait the
//! projection runner implements over `views.redb`, and [`MemoryReadModel`] for tests and
//! offline replays. The guest reaches it through the `read-model` import, served by the
//! sandbox (`sandbox::HostState`) and linked by each WIT version module.

use std::any::Any;
use std::collections::BTreeMap;
use std::ops::Bound;

/// An error of the read-model store (I/O, a full disk...). It fails the plugin call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReadModelError(pub String);

/// The store behind one projection's read model: text keys and values, one namespace per
/// projection. The runner implements it over `views.redb` so that a batch's writes commit
/// with the projection's checkpoint.
pub trait ReadModel: Any + Send {
    /// The value under `key`.
    fn get(&self, key: &str) -> Result<Option<String>, ReadModelError>;
    /// Up to `limit` entries whose keys start with `prefix`, in key order, after `start_after`.
    fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, ReadModelError>;
    /// Stores `value` under `key`.
    fn put(&mut self, key: String, value: String) -> Result<(), ReadModelError>;
    /// Removes `key`.
    fn delete(&mut self, key: &str) -> Result<(), ReadModelError>;
}

/// A read model in memory, ordered by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryReadModel {
    /// The entries.
    pub entries: BTreeMap<String, String>,
}

impl MemoryReadModel {
    /// An empty read model.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ReadModel for MemoryReadModel {
    fn get(&self, key: &str) -> Result<Option<String>, ReadModelError> {
        Ok(self.entries.get(key).cloned())
    }

    fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, ReadModelError> {
        let start = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        Ok(self
            .entries
            .range((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn put(&mut self, key: String, value: String) -> Result<(), ReadModelError> {
        self.entries.insert(key, value);
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<(), ReadModelError> {
        self.entries.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_scan_pages_by_prefix() {
        let mut model = MemoryReadModel::new();
        for key in ["a/1", "a/2", "a/3", "b/1"] {
            model.put(key.into(), key.to_uppercase()).unwrap();
        }
        let keys = |entries: Vec<(String, String)>| -> Vec<String> {
            entries.into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(
            keys(model.scan("a/", None, 10).unwrap()),
            ["a/1", "a/2", "a/3"]
        );
        assert_eq!(keys(model.scan("a/", Some("a/1"), 1).unwrap()), ["a/2"]);
        assert_eq!(
            keys(model.scan("a/", Some("0"), 10).unwrap()),
            ["a/1", "a/2", "a/3"]
        );
        assert!(model.scan("c", None, 10).unwrap().is_empty());
    }
}
