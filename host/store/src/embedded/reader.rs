//! Reads on redb read transactions: any thread, never waiting for the writer.

use std::ops::ControlFlow;

use redb::{ReadTransaction, TableError};

use crate::codec;
use crate::error::ReadError;
use crate::event::{EventRef, StreamInfo};
use crate::read::{AllRead, Direction, StreamRead};

use super::archive::ArchiveView;
use super::schema::{EVENT_IDS, EVENTS, STREAM_EVENTS, STREAMS, StreamRow};
use super::tail::{StreamTail, TailView};

/// The stored tiers one read sees: archive segments up to `archived.through()`, then redb
/// (`txn`) up to `base`; the tail holds what follows.
pub struct Tiers<'a> {
    pub txn: &'a ReadTransaction,
    pub base: u64,
    pub archived: &'a ArchiveView<'a>,
}

fn corrupt(position: u64) -> impl FnOnce(String) -> ReadError {
    move |reason| ReadError::Corrupt { position, reason }
}

/// Visit the events of `stream` selected by `read`, up to `max_position` (the bound of
/// `read.until`), stopping early when `visit` breaks.
///
/// Positions up to `base` come from the archive and redb (`tiers`); `tail` is the stream's
/// state in the tail, if it has events there: its row, the (version, position) of those
/// events, and the batches holding them.
pub fn visit_stream(
    tiers: &Tiers<'_>,
    stream: &str,
    tail: Option<StreamTail>,
    read: &StreamRead,
    max_position: u64,
    visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
) -> Result<(), ReadError> {
    let (txn, base) = (tiers.txn, tiers.base);
    let through = tiers.archived.through();
    let (number, recent, view) = match tail {
        Some((row, entries, view)) => (row.0, entries, view),
        None => match stream_row(txn, stream)? {
            Some(row) => (row.0, Vec::new(), TailView::default()),
            None => return Ok(()),
        },
    };
    let index = txn.open_table(STREAM_EVENTS)?;
    let events = txn.open_table(EVENTS)?;
    let mut returned = 0;
    // Visit the event at `position`; `Break` once the read is complete.
    let mut emit = |position: u64| -> Result<ControlFlow<()>, ReadError> {
        if returned >= read.limit {
            return Ok(ControlFlow::Break(()));
        }
        if position > max_position {
            // Forward reads meet only later events past the bound; backward ones skip them.
            return Ok(match read.direction {
                Direction::Forward => ControlFlow::Break(()),
                Direction::Backward => ControlFlow::Continue(()),
            });
        }
        let missing = || ReadError::Corrupt {
            position,
            reason: "the stream index points at a missing event".into(),
        };
        returned += 1;
        let mut emit_record = |record: &[u8]| -> Result<ControlFlow<()>, ReadError> {
            let decoded = codec::decode(position, record).map_err(corrupt(position))?;
            Ok(visit(decoded.event))
        };
        if position <= through {
            return tiers.archived.with_record(position, emit_record);
        }
        if position <= base {
            let stored = events.get(position)?.ok_or_else(missing)?;
            return emit_record(stored.value());
        }
        emit_record(view.record(position).ok_or_else(missing)?)
    };
    // redb's index may hold entries past `base` (a checkpoint committed after the tail was
    // copied): the tail has those, so they are skipped.
    match read.direction {
        Direction::Forward => {
            let from = read.from_version.max(1);
            for entry in index.range((number, from)..=(number, u64::MAX))? {
                let position = entry?.1.value();
                if position > base {
                    break;
                }
                if emit(position)?.is_break() {
                    return Ok(());
                }
            }
            for (_, position) in recent.iter().filter(|(version, _)| *version >= from) {
                if emit(*position)?.is_break() {
                    return Ok(());
                }
            }
        }
        Direction::Backward => {
            let from = read.from_version;
            for (_, position) in recent.iter().rev().filter(|(version, _)| *version <= from) {
                if emit(*position)?.is_break() {
                    return Ok(());
                }
            }
            for entry in index.range((number, 0)..=(number, from))?.rev() {
                let position = entry?.1.value();
                if position > base {
                    continue;
                }
                if emit(position)?.is_break() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Visit the events of `$all` selected by `read`, up to `max_position` (the bound of
/// `read.until`), stopping early when `visit` breaks: archived positions from segments, then
/// up to `base` from redb, then from `tail`.
pub fn visit_all(
    tiers: &Tiers<'_>,
    tail: &TailView,
    read: &AllRead,
    max_position: u64,
    visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
) -> Result<(), ReadError> {
    let (base, archived) = (tiers.base, tiers.archived);
    let through = archived.through();
    let events = match tiers.txn.open_table(EVENTS) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    if read.direction == Direction::Forward && read.from_position > max_position {
        return Ok(());
    }
    let mut returned = 0;
    // Visit one record; `Break` once the read is complete.
    let mut emit = |position: u64, record: &[u8]| -> Result<ControlFlow<()>, ReadError> {
        if returned >= read.limit {
            return Ok(ControlFlow::Break(()));
        }
        let decoded = codec::decode(position, record).map_err(corrupt(position))?;
        if !read.event_types.is_empty()
            && !read
                .event_types
                .iter()
                .any(|wanted| wanted == decoded.event.event_type)
        {
            return Ok(ControlFlow::Continue(()));
        }
        returned += 1;
        if visit(decoded.event).is_break() || returned >= read.limit {
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    };
    match read.direction {
        Direction::Forward => {
            let last_stored = max_position.min(base);
            if archived
                .visit(read.from_position, last_stored, false, &mut emit)?
                .is_break()
            {
                return Ok(());
            }
            // A snapshot older than the archive's manifest may still hold archived records.
            let from_hot = read.from_position.max(through + 1);
            if from_hot <= last_stored {
                for entry in events.range(from_hot..=last_stored)? {
                    let (key, value) = entry?;
                    if emit(key.value(), value.value())?.is_break() {
                        return Ok(());
                    }
                }
            }
            for (position, record) in tail.from(read.from_position.max(base + 1)) {
                if position > max_position || emit(position, record)?.is_break() {
                    return Ok(());
                }
            }
        }
        Direction::Backward => {
            let from = read.from_position.min(max_position);
            for (position, record) in tail.from(base + 1).rev() {
                if position > from {
                    continue;
                }
                if emit(position, record)?.is_break() {
                    return Ok(());
                }
            }
            let last_stored = from.min(base);
            if through < last_stored {
                for entry in events.range(through + 1..=last_stored)?.rev() {
                    let (key, value) = entry?;
                    if emit(key.value(), value.value())?.is_break() {
                        return Ok(());
                    }
                }
            }
            let _ = archived.visit(1, last_stored, true, &mut emit)?;
        }
    }
    Ok(())
}

/// The last position recorded at or before `time` (0 when none is), in a log that ends at
/// `head`: up to `base` in redb, then in `tail`.
///
/// Commit times never decrease along the log, so this is a binary search over positions.
pub fn position_at(
    tiers: &Tiers<'_>,
    tail: &TailView,
    head: u64,
    time: u64,
) -> Result<u64, ReadError> {
    let (base, archived) = (tiers.base, tiers.archived);
    let events = match tiers.txn.open_table(EVENTS) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(error) => return Err(error.into()),
    };
    let recorded_at = |position: u64| -> Result<u64, ReadError> {
        let missing = || ReadError::Corrupt {
            position,
            reason: "missing from a gap-free log".into(),
        };
        if position <= archived.through() {
            return archived.recorded_at(position);
        }
        let stored;
        let record = if position <= base {
            stored = events.get(position)?.ok_or_else(missing)?;
            stored.value()
        } else {
            tail.record(position).ok_or_else(missing)?
        };
        codec::recorded_at(record).ok_or_else(|| ReadError::Corrupt {
            position,
            reason: "record too short".into(),
        })
    };
    // Invariant: every position < low is at or before `time`; every position > high is after.
    let (mut low, mut high) = archived.narrow(time, head);
    while low <= high {
        let middle = low + (high - low) / 2;
        if recorded_at(middle)? <= time {
            low = middle + 1;
        } else {
            high = middle - 1;
        }
    }
    Ok(low - 1)
}

/// What the store knows about `stream`, if it exists, given its row in the recent index.
pub fn stream_info(
    txn: &ReadTransaction,
    stream: &str,
    recent: Option<StreamRow>,
) -> Result<Option<StreamInfo>, ReadError> {
    match recent {
        Some(row) => Ok(Some(stream_info_from(row))),
        None => Ok(stream_row(txn, stream)?.map(stream_info_from)),
    }
}

fn stream_row(txn: &ReadTransaction, stream: &str) -> Result<Option<StreamRow>, ReadError> {
    let streams = match txn.open_table(STREAMS) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    Ok(streams.get(stream)?.map(|guard| guard.value()))
}

/// The position of the event with id `id` in redb's event-id index (the entries flushed
/// from the recent index; the caller looks there first).
pub fn indexed_event_position(txn: &ReadTransaction, id: u128) -> Result<Option<u64>, ReadError> {
    let ids = match txn.open_table(EVENT_IDS) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    Ok(ids.get(id)?.map(|position| position.value()))
}

/// Streams whose id starts with `prefix` (a category such as `account-`), in id order,
/// starting after `after`. `recent` holds the rows of streams changed since the last index
/// flush (some of them new), which win over redb's.
pub fn streams(
    txn: &ReadTransaction,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    recent: Vec<(String, StreamRow)>,
) -> Result<Vec<(String, StreamInfo)>, ReadError> {
    let mut found: std::collections::BTreeMap<String, StreamRow> =
        stored_streams(txn, prefix, after, limit)?
            .into_iter()
            .collect();
    found.extend(
        recent.into_iter().filter(|(id, _)| {
            id.starts_with(prefix) && after.is_none_or(|after| id.as_str() > after)
        }),
    );
    Ok(found
        .into_iter()
        .take(limit)
        .map(|(id, row)| (id, stream_info_from(row)))
        .collect())
}

fn stored_streams(
    txn: &ReadTransaction,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, StreamRow)>, ReadError> {
    let streams = match txn.open_table(STREAMS) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    let start = after.filter(|after| *after >= prefix).unwrap_or(prefix);
    let mut found = Vec::new();
    for entry in streams.range(start..)? {
        if found.len() >= limit {
            break;
        }
        let (key, value) = entry?;
        let id = key.value();
        if !id.starts_with(prefix) {
            break;
        }
        if Some(id) == after {
            continue;
        }
        found.push((id.to_owned(), value.value()));
    }
    Ok(found)
}

fn stream_info_from(
    (_, version, first_position, last_position, created_at, updated_at): StreamRow,
) -> StreamInfo {
    StreamInfo {
        version,
        first_position,
        last_position,
        created_at,
        updated_at,
    }
}
