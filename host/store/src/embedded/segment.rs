//! One sealed archive segment: a file holding a consecutive run of records moved out of
//! `events.redb`, compressed, never changed after it is written.
//!
//! The file is a fixed header followed by the body: the records (each `u32 LE length ++
//! record`, exactly the bytes `events.redb` held, so the hash chain reads the same) compressed
//! with zstd. The header names the position range, the last record's hash and time, and a
//! blake3 checksum of the compressed body; the store's manifest keeps a copy of every header,
//! so a file that is missing, replaced or altered is found when it is read.
//!
//! The PostgreSQL backend keeps the same header and body in a table row ([`seal`] and
//! [`open`] do not touch files), so a segment means the same on both backends.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::codec;

/// The directory, inside the store directory, that holds the segments.
pub const ARCHIVE_DIR: &str = "archive";
/// The size of a header, in the file and in the manifest.
pub const HEADER_LEN: usize = 128;
const MAGIC: &[u8; 8] = b"ESHSEG01";
const ZSTD_LEVEL: i32 = 3;

/// What a segment holds, as its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The first position.
    pub first: u64,
    /// The last position.
    pub last: u64,
    /// The commit time of the first record.
    pub first_recorded_at: u64,
    /// The commit time of the last record.
    pub last_recorded_at: u64,
    /// The hash of the last record: the anchor the next record chains from.
    pub last_hash: [u8; 32],
    /// The body's size, compressed.
    pub body_bytes: u64,
    /// The records' size, uncompressed.
    pub raw_bytes: u64,
    /// blake3 of the compressed body.
    pub checksum: [u8; 32],
}

impl Header {
    /// The stored form.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(MAGIC);
        let numbers = [
            self.first,
            self.last,
            self.first_recorded_at,
            self.last_recorded_at,
            self.body_bytes,
            self.raw_bytes,
        ];
        for (index, number) in numbers.iter().enumerate() {
            out[8 + index * 8..16 + index * 8].copy_from_slice(&number.to_le_bytes());
        }
        out[56..88].copy_from_slice(&self.last_hash);
        out[88..120].copy_from_slice(&self.checksum);
        out
    }

    /// Read the stored form.
    pub fn decode(bytes: &[u8]) -> Option<Header> {
        if bytes.len() != HEADER_LEN || &bytes[..8] != MAGIC {
            return None;
        }
        let number = |index: usize| {
            u64::from_le_bytes(
                bytes[8 + index * 8..16 + index * 8]
                    .try_into()
                    .unwrap_or_default(),
            )
        };
        Some(Header {
            first: number(0),
            last: number(1),
            first_recorded_at: number(2),
            last_recorded_at: number(3),
            body_bytes: number(4),
            raw_bytes: number(5),
            last_hash: bytes[56..88].try_into().ok()?,
            checksum: bytes[88..120].try_into().ok()?,
        })
    }

    /// The segment's file name (its position range).
    pub fn file_name(&self) -> String {
        file_name(self.first, self.last)
    }

    /// How many records it holds.
    pub fn count(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// The file name of the segment holding positions `first..=last`.
pub fn file_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}.seg")
}

/// A segment read back and checked: its records, uncompressed.
#[derive(Debug)]
pub struct Loaded {
    /// Its header.
    pub header: Header,
    records: Vec<u8>,
    /// (start, length) in `records` of the record at `first + i`.
    offsets: Vec<(u32, u32)>,
}

impl Loaded {
    /// The record at `position`, if this segment holds it.
    pub fn record(&self, position: u64) -> Option<&[u8]> {
        let index = usize::try_from(position.checked_sub(self.header.first)?).ok()?;
        let (start, len) = *self.offsets.get(index)?;
        Some(&self.records[start as usize..(start + len) as usize])
    }

    /// The records from `from` on, with their positions.
    pub fn from(&self, from: u64) -> impl DoubleEndedIterator<Item = (u64, &[u8])> {
        let skip = from.saturating_sub(self.header.first) as usize;
        self.offsets
            .iter()
            .enumerate()
            .skip(skip)
            .map(|(index, (start, len))| {
                (
                    self.header.first + index as u64,
                    &self.records[*start as usize..(*start + *len) as usize],
                )
            })
    }
}

/// Why a segment could not be read: the file and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentError {
    /// The segment's file.
    pub file: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// The most records in one segment.
pub const SEGMENT_EVENTS: usize = 64 * 1024;
/// The most uncompressed bytes in one segment: a reader holds a whole segment in memory.
pub const SEGMENT_BYTES: usize = 16 * 1024 * 1024;

/// Seal `records` (consecutive, from position `first`): their header and the compressed
/// body. Where the two are kept is the backend's business (a file here, a row in
/// PostgreSQL); [`open`] reads them back.
pub fn seal(first: u64, records: &[Vec<u8>]) -> std::io::Result<(Header, Vec<u8>)> {
    let (Some(first_record), Some(last_record)) = (records.first(), records.last()) else {
        return Err(std::io::Error::other("an archive segment needs records"));
    };
    let last = first + records.len() as u64 - 1;
    let mut raw = Vec::with_capacity(records.iter().map(|r| r.len() + 4).sum());
    for record in records {
        raw.extend_from_slice(&(record.len() as u32).to_le_bytes());
        raw.extend_from_slice(record);
    }
    let body = zstd::bulk::compress(&raw, ZSTD_LEVEL)?;
    let decoded_last = codec::decode(last, last_record).map_err(std::io::Error::other)?;
    let header = Header {
        first,
        last,
        first_recorded_at: codec::recorded_at(first_record).unwrap_or_default(),
        last_recorded_at: decoded_last.event.recorded_at,
        last_hash: decoded_last.event.hash,
        body_bytes: body.len() as u64,
        raw_bytes: raw.len() as u64,
        checksum: *blake3::hash(&body).as_bytes(),
    };
    Ok((header, body))
}

/// Write `records` (consecutive, from position `first`) as a sealed segment in `dir`:
/// into a temporary file, synced, then renamed into place. The caller syncs `dir` once
/// after its last segment.
pub fn write(dir: &Path, first: u64, records: &[Vec<u8>]) -> std::io::Result<(Header, PathBuf)> {
    let (header, body) = seal(first, records)?;
    let path = dir.join(header.file_name());
    let temporary = dir.join(format!("{}.tmp", header.file_name()));
    let mut file = File::create(&temporary)?;
    file.write_all(&header.encode())?;
    file.write_all(&body)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, &path)?;
    Ok((header, path))
}

/// Sync a directory, so that the renames into it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Read the segment `expected` names from `dir`, and check it against `expected` (a copy of
/// its header kept in the manifest): the header, the body's checksum, the record count and
/// the last record's hash.
pub fn load(dir: &Path, expected: &Header) -> Result<Loaded, SegmentError> {
    let file = dir.join(expected.file_name());
    let fail = |reason: String| SegmentError {
        file: file.clone(),
        reason,
    };
    let mut bytes = Vec::with_capacity(HEADER_LEN + expected.body_bytes as usize);
    File::open(&file)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => fail("is missing".into()),
            _ => fail(format!("cannot be read: {error}")),
        })?;
    if bytes.len() < HEADER_LEN || Header::decode(&bytes[..HEADER_LEN]) != Some(*expected) {
        return Err(fail("has a header that differs from the manifest's".into()));
    }
    open(expected, &bytes[HEADER_LEN..]).map_err(fail)
}

/// Check the compressed `body` of a segment against `expected` (its sealed header): the
/// body's size and checksum, the record count and the last record's hash; its records.
/// The error says what is wrong, for the caller to name the segment.
pub fn open(expected: &Header, body: &[u8]) -> Result<Loaded, String> {
    if body.len() as u64 != expected.body_bytes || blake3::hash(body) != expected.checksum {
        return Err("fails its checksum (altered or truncated)".into());
    }
    let records = zstd::bulk::decompress(body, expected.raw_bytes as usize)
        .map_err(|error| format!("cannot be decompressed: {error}"))?;
    let mut offsets = Vec::with_capacity(expected.count() as usize);
    let mut at = 0usize;
    while at < records.len() {
        let len = records
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
            .ok_or_else(|| "has a truncated record".to_owned())?;
        let start = at + 4;
        if start + len as usize > records.len() {
            return Err("has a truncated record".into());
        }
        offsets.push((start as u32, len));
        at = start + len as usize;
    }
    if offsets.len() as u64 != expected.count() {
        return Err(format!(
            "holds {} records, its header says {}",
            offsets.len(),
            expected.count()
        ));
    }
    let loaded = Loaded {
        header: *expected,
        records,
        offsets,
    };
    let last_hash = loaded
        .record(expected.last)
        .and_then(|record| codec::decode(expected.last, record).ok())
        .map(|decoded| decoded.event.hash);
    if last_hash != Some(expected.last_hash) {
        return Err("ends with a record whose hash differs from its header's".into());
    }
    Ok(loaded)
}
