//! Archiving: the oldest events move out of the hot log into sealed, compressed, immutable
//! segments, and reads cover both tiers as one log. What every backend answers; both keep
//! segments in one format ([`crate::segment`]): the embedded backend as files, PostgreSQL as
//! rows of a table in the database its nodes share.

use std::path::PathBuf;

use serde::Serialize;

/// Which events an archive moves: those before a position or a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveCut {
    /// Events at positions below this one.
    BeforePosition(u64),
    /// Events recorded before this time (ms since the Unix epoch).
    BeforeTime(u64),
}

/// One sealed segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentInfo {
    /// Where it is: a file of the embedded backend, or, on PostgreSQL, the stable name
    /// `postgres:<schema>.segments/<first>-<last>` (the `segments` row whose
    /// `first_position` is `<first>`). Errors about the segment name it the same way.
    pub file: String,
    /// Its first position.
    pub first_position: u64,
    /// Its last position.
    pub last_position: u64,
    /// Its size, compressed: with its header in a file; the body alone on PostgreSQL (which
    /// keeps the header as columns).
    pub bytes: u64,
    /// The records' size, uncompressed.
    pub raw_bytes: u64,
}

/// What an archive did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Archived {
    /// How many events moved.
    pub events: u64,
    /// The segments written.
    pub segments: Vec<SegmentInfo>,
    /// Every position up to this one is archived now (0: none).
    pub archived_through: u64,
}

/// Why an archive failed. Nothing is lost: events leave the hot log only in the transaction
/// that records their durable segments.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The backend keeps every event hot.
    #[error("archiving is not supported by this store backend")]
    Unsupported,
    /// A segment could not be written.
    #[error("cannot write archive segment {file}: {reason}")]
    Write {
        /// The segment's file (or PostgreSQL name).
        file: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The store failed to read or commit.
    #[error(transparent)]
    Read(#[from] crate::ReadError),
}

impl From<redb::Error> for ArchiveError {
    fn from(error: redb::Error) -> Self {
        ArchiveError::Read(error.into())
    }
}
