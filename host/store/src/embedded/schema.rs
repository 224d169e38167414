//! The tables of `events.redb` and the head record.

use redb::TableDefinition;

use crate::codec::GENESIS_HASH;

/// position → encoded record (see `codec`). The log itself.
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// (stream number, stream version) → position. Streams are numbered so that this index has
/// fixed-width keys: it takes one insert per event, in as many places as there are streams in
/// a batch, and fixed-width leaves are cheaper to rewrite.
pub const STREAM_EVENTS: TableDefinition<(u64, u64), u64> = TableDefinition::new("stream_events");
/// stream id → [`StreamRow`].
pub const STREAMS: TableDefinition<&str, StreamRow> = TableDefinition::new("streams");

/// (stream number, version, first position, last position, created at, updated at). Stream
/// numbers are given in order of creation, from 1; streams are never removed.
pub type StreamRow = (u64, u64, u64, u64, u64, u64);
/// event id → position, for idempotent appends.
pub const EVENT_IDS: TableDefinition<u128, u64> = TableDefinition::new("event_ids");
/// Named values: the store format and the head.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Key in `META` of the format version (u32 LE).
pub const META_FORMAT: &str = "format";
/// Key in `META` of the head (see [`Head`]).
pub const META_HEAD: &str = "head";
/// Key in `META` of how far the redb indexes are complete: (position u64 LE, next stream
/// number u64 LE). See `index`.
pub const META_INDEXED: &str = "indexed";
/// Key in `META` of the write-ahead log's epoch (u32 LE): frames of other epochs are stale.
/// See `wal`.
pub const META_WAL_EPOCH: &str = "wal_epoch";
/// Key in `META` of the archive's manifest: the headers of its sealed segments (see
/// `archive`).
pub const META_ARCHIVE: &str = "archive";
/// The format of a closed store: every event in redb. A clean close writes it.
pub const STORE_FORMAT: u32 = 1;
/// The format while the store is open or after a crash: the write-ahead log may hold
/// acknowledged events redb lacks. A build without the log refuses it rather than lose them.
pub const OPEN_FORMAT: u32 = 2;
/// [`STORE_FORMAT`] of a store whose oldest events are in archive segments: a build that
/// knows no archive would read it with a hole, so it must refuse it.
pub const ARCHIVED_STORE_FORMAT: u32 = 3;
/// [`OPEN_FORMAT`] of a store with archive segments.
pub const ARCHIVED_OPEN_FORMAT: u32 = 4;

/// The end of the log: last position, its hash, and its commit time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The last position (0 for an empty store).
    pub position: u64,
    /// The hash of the record at `position` (zeros for an empty store).
    pub hash: [u8; 32],
    /// The commit time of the last record, ms since the epoch.
    pub recorded_at: u64,
}

impl Head {
    /// The head of an empty store.
    pub const EMPTY: Head = Head {
        position: 0,
        hash: GENESIS_HASH,
        recorded_at: 0,
    };

    /// The stored form.
    pub fn encode(&self) -> [u8; 48] {
        let mut bytes = [0u8; 48];
        bytes[..8].copy_from_slice(&self.position.to_le_bytes());
        bytes[8..40].copy_from_slice(&self.hash);
        bytes[40..].copy_from_slice(&self.recorded_at.to_le_bytes());
        bytes
    }

    /// Read the stored form.
    pub fn decode(bytes: &[u8]) -> Option<Head> {
        if bytes.len() != 48 {
            return None;
        }
        Some(Head {
            position: u64::from_le_bytes(bytes[..8].try_into().ok()?),
            hash: bytes[8..40].try_into().ok()?,
            recorded_at: u64::from_le_bytes(bytes[40..].try_into().ok()?),
        })
    }
}
