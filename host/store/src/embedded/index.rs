//! The stream and event-id indexes of the events held in memory, and their bulk flush to redb.
//!
//! Writing a stream's index entry in every commit touches one B-tree leaf per stream in the
//! batch; with many streams, a commit wrote dozens of scattered pages. So appends only reach
//! the write-ahead log; the index entries of the events in memory (see `tail`) live in a
//! [`RecentIndex`] per generation and are written to redb in sorted bulk when a generation is
//! checkpointed, together with its events.
//!
//! `META_INDEXED` records how far redb's indexes are complete. A checkpoint moves it with the
//! head; stores written before the write-ahead log may hold events past it, which
//! [`RecentIndex::recover`] indexes once on open.

use std::collections::HashMap;

use redb::{ReadableTable, Table, WriteTransaction};

use super::schema::{EVENT_IDS, EVENTS, META, META_INDEXED, STREAM_EVENTS, STREAMS, StreamRow};
use crate::codec;

/// Index entries of the events after the last flush.
#[derive(Debug, Default)]
pub(crate) struct RecentIndex {
    /// Streams changed since the flush: their current row and their new events' positions.
    pub streams: HashMap<String, RecentStream>,
    /// Ids of the events since the flush.
    pub ids: HashMap<u128, u64>,
    /// How many events the recent index holds.
    pub events: usize,
    /// The number the next new stream gets.
    pub next_stream_number: u64,
}

/// One stream's recent state.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecentStream {
    /// The stream's current row.
    pub row: StreamRow,
    /// Positions of its latest versions, ending at `row.1` (its version).
    pub positions: Vec<u64>,
}

impl RecentStream {
    /// (version, position) of the recent events that lie after `indexed`.
    pub fn after(&self, indexed: u64) -> Vec<(u64, u64)> {
        let first_version = self.row.1 + 1 - self.positions.len() as u64;
        (first_version..)
            .zip(self.positions.iter().copied())
            .filter(|(_, position)| *position > indexed)
            .collect()
    }
}

/// The position through which redb's index is complete, and the next stream number then.
pub(crate) fn indexed(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<(u64, u64), redb::StorageError> {
    Ok(match meta.get(META_INDEXED)? {
        Some(bytes) => {
            let bytes = bytes.value();
            let position = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
            let next = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
            (position, next.max(1))
        }
        None => (0, 1),
    })
}

impl RecentIndex {
    /// Index the events redb holds after `META_INDEXED`, up to `head` (stores written before
    /// the write-ahead log flushed their indexes separately).
    pub fn recover(txn: &WriteTransaction, head: u64) -> Result<RecentIndex, String> {
        let meta = txn.open_table(META).map_err(|e| e.to_string())?;
        let (base, next_stream_number) = indexed(&meta).map_err(|e| e.to_string())?;
        let streams = txn.open_table(STREAMS).map_err(|e| e.to_string())?;
        let events = txn.open_table(EVENTS).map_err(|e| e.to_string())?;
        let mut recent = RecentIndex {
            next_stream_number,
            ..RecentIndex::default()
        };
        for entry in events.range(base + 1..=head).map_err(|e| e.to_string())? {
            let (key, value) = entry.map_err(|e| e.to_string())?;
            recent.index_record(&streams, key.value(), value.value())?;
        }
        Ok(recent)
    }

    /// Add the stored record at `position` to the index, finding streams it does not hold
    /// yet in `streams`.
    pub fn index_record(
        &mut self,
        streams: &impl ReadableTable<&'static str, StreamRow>,
        position: u64,
        record: &[u8],
    ) -> Result<(), String> {
        let decoded = codec::decode(position, record)
            .map_err(|reason| format!("position {position}: {reason}"))?;
        let event = decoded.event;
        let row = match self.streams.get(event.stream_id) {
            Some(stream) => Some(stream.row),
            None => streams
                .get(event.stream_id)
                .map_err(|e| e.to_string())?
                .map(|row| row.value()),
        };
        let row = match row {
            Some((number, _, first, _, created, _)) => (
                number,
                event.stream_version,
                first,
                position,
                created,
                event.recorded_at,
            ),
            None => {
                self.next_stream_number += 1;
                (
                    self.next_stream_number - 1,
                    event.stream_version,
                    position,
                    position,
                    event.recorded_at,
                    event.recorded_at,
                )
            }
        };
        self.record(event.stream_id, row, &[position]);
        self.ids.insert(event.event_id.as_u128(), position);
        Ok(())
    }

    /// Add what `batch` indexes (the entries of later events) to this index.
    pub fn merge(&mut self, batch: &RecentIndex) {
        for (stream, entry) in &batch.streams {
            self.record(stream, entry.row, &entry.positions);
        }
        self.ids
            .extend(batch.ids.iter().map(|(id, position)| (*id, *position)));
        self.next_stream_number = batch.next_stream_number;
    }

    /// The position of event `id`, if it is indexed here.
    pub fn position_of(&self, id: u128) -> Option<u64> {
        self.ids.get(&id).copied()
    }

    /// The current row of `stream`, if it changed since the flush.
    pub fn row(&self, stream: &str) -> Option<StreamRow> {
        self.streams.get(stream).map(|recent| recent.row)
    }

    /// Record that `stream` now has `row` and its new events are at `positions`.
    pub fn record(&mut self, stream: &str, row: StreamRow, positions: &[u64]) {
        match self.streams.get_mut(stream) {
            Some(recent) => {
                recent.row = row;
                recent.positions.extend_from_slice(positions);
            }
            None => {
                self.streams.insert(
                    stream.to_owned(),
                    RecentStream {
                        row,
                        positions: positions.to_vec(),
                    },
                );
            }
        }
        self.events += positions.len();
    }

    /// Write every entry into redb's index tables, in key order, and mark them indexed
    /// through `head`.
    pub fn flush(&self, txn: &WriteTransaction, head: u64) -> Result<(), redb::Error> {
        let mut names: Vec<_> = self.streams.iter().collect();
        names.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut streams: Table<&str, StreamRow> = txn.open_table(STREAMS)?;
        let mut entries = Vec::with_capacity(self.events);
        for (name, recent) in names {
            streams.insert(name.as_str(), recent.row)?;
            let number = recent.row.0;
            entries.extend(
                recent
                    .after(0)
                    .into_iter()
                    .map(|(version, position)| ((number, version), position)),
            );
        }
        entries.sort_unstable();
        let mut stream_events = txn.open_table(STREAM_EVENTS)?;
        for (key, position) in entries {
            stream_events.insert(key, position)?;
        }
        let mut ids: Vec<_> = self
            .ids
            .iter()
            .map(|(id, position)| (*id, *position))
            .collect();
        ids.sort_unstable();
        let mut event_ids = txn.open_table(EVENT_IDS)?;
        for (id, position) in ids {
            event_ids.insert(id, position)?;
        }
        let mut marker = [0u8; 16];
        marker[..8].copy_from_slice(&head.to_le_bytes());
        marker[8..].copy_from_slice(&self.next_stream_number.to_le_bytes());
        txn.open_table(META)?
            .insert(META_INDEXED, marker.as_slice())?;
        Ok(())
    }
}
