//! The tail of the log: events that are durable in the write-ahead log but not yet in redb.
//!
//! The syncer publishes each synced batch into the active [`Generation`]; when it is large enough it
//! is frozen and the checkpointer copies it into redb, while a new active generation takes
//! the appends. Only after the checkpoint's commit is the frozen generation dropped (and
//! `base` moved), under the write lock.
//!
//! Readers take the read lock while they begin their redb read transaction, and copy what
//! they need (cheap `Arc`s) before letting go. Then redb's snapshot holds at least positions
//! `1..=base` with their indexes, and the tail everything after `base`: a reader takes
//! positions up to `base` from redb and the rest from the tail, and never sees an event
//! before it is durable, nor misses one that was acknowledged.

use std::sync::Arc;

use super::index::RecentIndex;
use super::schema::{Head, StreamRow};

/// The records of one synced batch, framed as they were written to the WAL.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// The first position in the batch.
    pub first: u64,
    /// The WAL frames (see `wal`).
    pub frames: Vec<u8>,
    /// (start, length) in `frames` of the record at `first + i`.
    pub records: Vec<(u32, u32)>,
}

impl Batch {
    /// The last position in the batch (`first - 1` when empty).
    pub fn last(&self) -> u64 {
        (self.first + self.records.len() as u64).saturating_sub(1)
    }

    /// The stored record at `position`, if this batch holds it.
    pub fn record(&self, position: u64) -> Option<&[u8]> {
        let index = usize::try_from(position.checked_sub(self.first)?).ok()?;
        let (start, len) = *self.records.get(index)?;
        Some(&self.frames[start as usize..(start + len) as usize])
    }

    /// Every record, with its position.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, &[u8])> {
        self.records
            .iter()
            .enumerate()
            .map(|(index, (start, len))| {
                (
                    self.first + index as u64,
                    &self.frames[*start as usize..(*start + *len) as usize],
                )
            })
    }
}

/// One generation of the tail: consecutive synced batches and their index.
#[derive(Debug)]
pub(crate) struct Generation {
    /// The batches, in position order, none empty.
    pub batches: Vec<Arc<Batch>>,
    /// The stream and id index of their events.
    pub index: RecentIndex,
    /// The head after the last batch (the head before the first, when empty).
    pub head: Head,
    /// Bytes of WAL frames.
    pub bytes: u64,
}

impl Generation {
    /// An empty generation continuing after `head`.
    pub fn after(head: Head, next_stream_number: u64) -> Generation {
        Generation {
            batches: Vec::new(),
            index: RecentIndex {
                next_stream_number,
                ..RecentIndex::default()
            },
            head,
            bytes: 0,
        }
    }

    /// Events held.
    pub fn events(&self) -> usize {
        self.index.events
    }

    fn batch_holding(&self, position: u64) -> Option<&Arc<Batch>> {
        let index = self
            .batches
            .partition_point(|batch| batch.last() < position);
        self.batches
            .get(index)
            .filter(|batch| batch.first <= position)
    }
}

/// A stream's current row, the (version, position) of its events in the tail, and the batches
/// holding them.
pub(crate) type StreamTail = (StreamRow, Vec<(u64, u64)>, TailView);

/// The events after `base`, in memory.
#[derive(Debug)]
pub(crate) struct Tail {
    /// Positions `1..=base` are in redb, indexed.
    pub base: u64,
    /// The generation being checkpointed, if any: positions after `base`.
    pub frozen: Option<Arc<Generation>>,
    /// The generation taking appends: positions after the frozen one's.
    pub active: Generation,
    /// Bumped whenever events leave the tail (a checkpoint completed), so that a redb read
    /// transaction begun before can be known to be stale.
    pub trims: u64,
}

impl Tail {
    /// A tail after `head`, which redb holds.
    pub fn new(head: Head, next_stream_number: u64) -> Tail {
        Tail {
            base: head.position,
            frozen: None,
            active: Generation::after(head, next_stream_number),
            trims: 0,
        }
    }

    /// The last durable event.
    pub fn head(&self) -> Head {
        self.active.head
    }

    fn gens(&self) -> impl DoubleEndedIterator<Item = &Generation> {
        self.frozen.as_deref().into_iter().chain([&self.active])
    }

    /// The current row of `stream`, if it has events in the tail.
    pub fn row(&self, stream: &str) -> Option<StreamRow> {
        self.gens()
            .rev()
            .find_map(|generation| generation.index.row(stream))
    }

    /// The position of event `id`, if it is in the tail.
    pub fn position_of(&self, id: u128) -> Option<u64> {
        self.gens()
            .find_map(|generation| generation.index.position_of(id))
    }

    /// The batch holding `position`, if the tail does.
    pub fn batch_holding(&self, position: u64) -> Option<&Arc<Batch>> {
        self.gens()
            .find_map(|generation| generation.batch_holding(position))
    }

    /// The stream's current row and the (version, position) of its events in the tail, if it
    /// has any there; with the batches that hold them.
    pub fn stream(&self, stream: &str) -> Option<StreamTail> {
        let row = self.row(stream)?;
        let entries: Vec<(u64, u64)> = self
            .gens()
            .filter_map(|generation| generation.index.streams.get(stream))
            .flat_map(|recent| recent.after(0))
            .collect();
        let mut batches: Vec<Arc<Batch>> = Vec::new();
        for (_, position) in &entries {
            if batches
                .last()
                .is_some_and(|batch| batch.last() >= *position)
            {
                continue;
            }
            if let Some(batch) = self.batch_holding(*position) {
                batches.push(batch.clone());
            }
        }
        Some((row, entries, TailView { batches }))
    }

    /// The batches holding positions from `from` on, until they hold at least `limit` events.
    pub fn view_from(&self, from: u64, limit: usize) -> TailView {
        let mut batches = Vec::new();
        let mut events = 0usize;
        for generation in self.gens() {
            let start = generation
                .batches
                .partition_point(|batch| batch.last() < from);
            for batch in &generation.batches[start..] {
                if events >= limit {
                    return TailView { batches };
                }
                events += (batch.last() + 1 - batch.first.max(from)) as usize;
                batches.push(batch.clone());
            }
        }
        TailView { batches }
    }

    /// Rows of the streams in the tail whose id starts with `prefix` (the latest row wins).
    pub fn rows_with_prefix(&self, prefix: &str) -> Vec<(String, StreamRow)> {
        let mut rows: std::collections::HashMap<&str, StreamRow> = Default::default();
        for generation in self.gens() {
            for (id, stream) in &generation.index.streams {
                if id.starts_with(prefix) {
                    rows.insert(id, stream.row);
                }
            }
        }
        rows.into_iter()
            .map(|(id, row)| (id.to_owned(), row))
            .collect()
    }
}

/// Batches of the tail copied out for a reader: consecutive, in position order.
#[derive(Debug, Default, Clone)]
pub(crate) struct TailView {
    batches: Vec<Arc<Batch>>,
}

impl TailView {
    /// The record at `position`, if the view holds it.
    pub fn record(&self, position: u64) -> Option<&[u8]> {
        let index = self
            .batches
            .partition_point(|batch| batch.last() < position);
        self.batches.get(index)?.record(position)
    }

    /// Every record from `from` on, in order.
    pub fn from(&self, from: u64) -> impl DoubleEndedIterator<Item = (u64, &[u8])> {
        self.batches
            .iter()
            .flat_map(|batch| batch.iter())
            .filter(move |(position, _)| *position >= from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: u64, count: u64) -> Arc<Batch> {
        let mut frames = Vec::new();
        let mut records = Vec::new();
        for position in first..first + count {
            let start = frames.len() as u32;
            frames.extend_from_slice(&position.to_le_bytes());
            records.push((start, 8));
        }
        Arc::new(Batch {
            first,
            frames,
            records,
        })
    }

    fn publish(generation: &mut Generation, batch: Arc<Batch>) {
        generation.index.events += batch.records.len();
        generation.head.position = batch.last();
        generation.batches.push(batch);
    }

    #[test]
    fn records_are_found_in_either_generation_and_views_cover_the_limit() {
        let mut tail = Tail::new(Head::EMPTY, 1);
        publish(&mut tail.active, batch(1, 3));
        publish(&mut tail.active, batch(4, 2));
        let next = Generation::after(tail.active.head, 1);
        let frozen = std::mem::replace(&mut tail.active, next);
        tail.frozen = Some(Arc::new(frozen));
        publish(&mut tail.active, batch(6, 4));
        assert_eq!(tail.head().position, 9);
        for position in 1..=9 {
            let record = tail.batch_holding(position).unwrap().record(position);
            assert_eq!(record, Some(position.to_le_bytes().as_slice()));
        }
        assert!(tail.batch_holding(10).is_none());
        let view = tail.view_from(5, 2);
        let positions: Vec<u64> = view.from(5).map(|(p, _)| p).collect();
        assert_eq!(
            positions,
            [5, 6, 7, 8, 9],
            "whole batches, until the limit is covered"
        );
        assert_eq!(view.record(7), Some(7u64.to_le_bytes().as_slice()));
        assert_eq!(view.record(3), None);
        let all: Vec<u64> = tail
            .view_from(1, usize::MAX)
            .from(1)
            .map(|(p, _)| p)
            .collect();
        assert_eq!(all, (1..=9).collect::<Vec<_>>());
    }
}
