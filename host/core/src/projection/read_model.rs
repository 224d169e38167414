//! The read models a projection plugin works on, over one namespace of `views.redb`:
//!
//! - [`BatchModel`] for `handle`: reads the last committed state through a redb read
//!   transaction and keeps the batch's writes in memory, so the runner can commit them with
//!   the checkpoint in one write transaction (or drop them when the batch fails). No write
//!   transaction is held while the plugin runs, so runners never wait on each other's plugins.
//! - [`SnapshotModel`] for queries: one read transaction, so a query sees one committed state
//!   however many reads it makes, whatever the runner commits meanwhile.

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::ReadOnlyTable;

use eshost_runtime::{ReadModel, ReadModelError};

type Table = ReadOnlyTable<&'static str, &'static str>;
type Entries<'a> = Box<dyn Iterator<Item = Result<(String, String), ReadModelError>> + 'a>;

fn failed(error: impl std::fmt::Display) -> ReadModelError {
    ReadModelError(error.to_string())
}

/// Committed entries of a namespace, as of one read transaction; `None` reads as empty.
#[derive(Default)]
pub(crate) struct Snapshot(Option<Table>);

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Snapshot").field(&self.0.is_some()).finish()
    }
}

impl Snapshot {
    pub(crate) fn new(table: Option<Table>) -> Self {
        Snapshot(table)
    }

    fn get(&self, key: &str) -> Result<Option<String>, ReadModelError> {
        let Some(table) = &self.0 else {
            return Ok(None);
        };
        Ok(table
            .get(key)
            .map_err(failed)?
            .map(|v| v.value().to_owned()))
    }

    /// Entries with `prefix`, after `start_after`, in key order, lazily.
    fn range<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&'a str>,
    ) -> Result<Entries<'a>, ReadModelError> {
        let Some(table) = &self.0 else {
            return Ok(Box::new(std::iter::empty()));
        };
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let range = table
            .range::<&str>((lower, Bound::Unbounded))
            .map_err(failed)?;
        Ok(Box::new(
            range
                .map(|entry| {
                    entry
                        .map(|(k, v)| (k.value().to_owned(), v.value().to_owned()))
                        .map_err(failed)
                })
                .take_while(move |entry| match entry {
                    Ok((key, _)) => key.starts_with(prefix),
                    Err(_) => true,
                }),
        ))
    }
}

/// A batch's view: committed state plus the batch's own writes (`None` = deleted).
#[derive(Debug, Default)]
pub(crate) struct BatchModel {
    committed: Snapshot,
    pub(crate) writes: BTreeMap<String, Option<String>>,
}

impl BatchModel {
    pub(crate) fn new(committed: Snapshot) -> Self {
        BatchModel {
            committed,
            writes: BTreeMap::new(),
        }
    }
}

impl ReadModel for BatchModel {
    fn get(&self, key: &str) -> Result<Option<String>, ReadModelError> {
        match self.writes.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.committed.get(key),
        }
    }

    fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, ReadModelError> {
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut pending = self
            .writes
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .peekable();
        let mut committed = self.committed.range(prefix, start_after)?.peekable();
        let mut found = Vec::new();
        // Merge two ordered sequences; a pending write shadows the committed entry.
        while found.len() < limit {
            let next_committed = match committed.peek() {
                Some(Ok((key, _))) => Some(key.as_str()),
                Some(Err(_)) => return Err(committed.next().expect("peeked").unwrap_err()),
                None => None,
            };
            let take_pending = match (pending.peek(), next_committed) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((pk, _)), Some(ck)) => pk.as_str() <= ck,
            };
            if take_pending {
                let (key, value) = pending.next().expect("peeked");
                if next_committed == Some(key.as_str()) {
                    committed.next();
                }
                if let Some(value) = value {
                    found.push((key.clone(), value.clone()));
                }
            } else {
                found.push(committed.next().expect("peeked")?);
            }
        }
        Ok(found)
    }

    fn put(&mut self, key: String, value: String) -> Result<(), ReadModelError> {
        self.writes.insert(key, Some(value));
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<(), ReadModelError> {
        self.writes.insert(key.to_owned(), None);
        Ok(())
    }
}

/// A query's view: committed state as of one read transaction. Writes are refused by the
/// runtime before they reach it.
#[derive(Debug, Default)]
pub(crate) struct SnapshotModel(pub(crate) Snapshot);

impl ReadModel for SnapshotModel {
    fn get(&self, key: &str) -> Result<Option<String>, ReadModelError> {
        self.0.get(key)
    }

    fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, ReadModelError> {
        self.0.range(prefix, start_after)?.take(limit).collect()
    }

    fn put(&mut self, _key: String, _value: String) -> Result<(), ReadModelError> {
        Err(ReadModelError("queries are read-only".into()))
    }

    fn delete(&mut self, _key: &str) -> Result<(), ReadModelError> {
        Err(ReadModelError("queries are read-only".into()))
    }
}
