//! Ranges of a read, given as a start and an end that are each a global position, a stream
//! version or a time, resolved to positions of `$all` or versions of one stream. Every
//! backend stamps a batch no earlier than the one before it, so commit times never go down
//! along the log (or along a stream) and each bound is a binary search, on any backend.

use std::ops::RangeInclusive;

use crate::{EventStore, ReadError, StreamRead};

/// The bounds of a read; all that are given apply, so the narrowest wins. Times are ms since
/// the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bounds {
    /// The lowest stream version (stream reads only).
    pub from_version: Option<u64>,
    /// The lowest global position.
    pub from_position: Option<u64>,
    /// Only events recorded at or after this time.
    pub from_time: Option<u64>,
    /// The highest stream version (stream reads only).
    pub until_version: Option<u64>,
    /// The highest global position.
    pub until_position: Option<u64>,
    /// Only events recorded at or before this time.
    pub until_time: Option<u64>,
}

impl Bounds {
    /// The positions of `$all` within the bounds (up to the head), or `None` when none is.
    pub fn all_positions(
        &self,
        store: &dyn EventStore,
    ) -> Result<Option<RangeInclusive<u64>>, ReadError> {
        let (low, high) = self.positions(store)?;
        let high = high.min(store.head());
        Ok((low <= high).then_some(low..=high))
    }

    /// The versions of a stream whose last version is `last_version` within the bounds, or
    /// `None` when none is.
    pub fn stream_versions(
        &self,
        store: &dyn EventStore,
        stream_id: &str,
        last_version: u64,
    ) -> Result<Option<RangeInclusive<u64>>, ReadError> {
        let mut low = self.from_version.unwrap_or(1).max(1);
        let mut high = self.until_version.unwrap_or(u64::MAX).min(last_version);
        if low > high {
            return Ok(None);
        }
        let (first_position, last_position) = self.positions(store)?;
        let position_of = |version: u64| position_of(store, stream_id, version);
        if first_position > 1 {
            low = first_version_where(low, high, |v| Ok(position_of(v)? >= first_position))?;
        }
        if last_position < u64::MAX && low <= high {
            high = first_version_where(low, high, |v| Ok(position_of(v)? > last_position))? - 1;
        }
        Ok((low <= high).then_some(low..=high))
    }

    /// The bounds in global positions, `1..=u64::MAX` when none is given.
    fn positions(&self, store: &dyn EventStore) -> Result<(u64, u64), ReadError> {
        let mut low = self.from_position.unwrap_or(1).max(1);
        if let Some(time) = self.from_time {
            // The first position recorded at or after `time` follows the last one before it.
            let before = match time.checked_sub(1) {
                Some(earlier) => store.position_at(earlier)?,
                None => 0,
            };
            low = low.max(before + 1);
        }
        let mut high = self.until_position.unwrap_or(u64::MAX);
        if let Some(time) = self.until_time {
            high = high.min(store.position_at(time)?);
        }
        Ok((low, high))
    }
}

/// The global position of `version` of a stream.
fn position_of(store: &dyn EventStore, stream_id: &str, version: u64) -> Result<u64, ReadError> {
    let mut read = StreamRead::forward();
    read.from_version = version;
    read.limit = 1;
    match store.read_stream(stream_id, &read)?.first() {
        Some(event) if event.stream_version == version => Ok(event.position),
        // Versions are contiguous up to the stream's last: a hole is a broken store.
        _ => Err(ReadError::Storage(format!(
            "stream {stream_id:?} has no version {version} below its last"
        ))),
    }
}

/// The lowest version in `low..=high` for which `holds` (a predicate false then true along
/// the versions), or `high + 1` when it holds for none.
fn first_version_where(
    mut low: u64,
    high: u64,
    mut holds: impl FnMut(u64) -> Result<bool, ReadError>,
) -> Result<u64, ReadError> {
    let mut end = high + 1;
    while low < end {
        let middle = low + (end - low) / 2;
        if holds(middle)? {
            end = middle;
        } else {
            low = middle + 1;
        }
    }
    Ok(low)
}

#[cfg(test)]
mod tests {
    use super::first_version_where;

    #[test]
    fn the_search_finds_the_first_version_that_holds() {
        for threshold in 1..=11 {
            let found = first_version_where(1, 10, |v| Ok(v >= threshold)).unwrap();
            assert_eq!(found, threshold);
        }
        assert_eq!(first_version_where(4, 4, |_| Ok(true)).unwrap(), 4);
        assert_eq!(first_version_where(4, 4, |_| Ok(false)).unwrap(), 5);
    }
}
