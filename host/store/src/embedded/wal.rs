//! The write-ahead log: where an append becomes durable before it reaches redb.
//!
//! A redb commit writes dozens of pages one `pwrite` each, then `fdatasync`s; an append only
//! needs its records on disk. So the syncer writes each batch's records, framed, with one
//! `pwrite` into a WAL file and `fdatasync`s that, and the checkpointer copies them into redb
//! later, in bulk, off the path of any append (see `checkpoint`).
//!
//! Two files, `events.wal0` and `events.wal1`, are written with zeros once, to their full
//! size, so that no append ever makes the file system allocate blocks (which would make its
//! `fdatasync` commit file-system metadata too). The events of one generation (see `tail`)
//! go to one file from offset 0; when a generation is frozen for checkpointing, writing
//! switches to the other file, which is free because the generation before was checkpointed
//! durably before any freeze can happen.
//!
//! A frame is `len u32 | epoch u32 | position u64 | check u64 | record`, where the record is
//! exactly the bytes redb stores (body and chained hash) and `check` covers the header and
//! the record's hash. The epoch is stored in redb and bumped on every open, after the frames
//! of the previous epoch have been copied into redb: frames of an older epoch, stale frames
//! behind the current ones, and frames torn by a crash are all refused by recovery, which
//! accepts only the frames that continue redb's hash chain, position by position.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::Path;

use super::schema::Head;
use crate::codec;
use crate::tap::{self, Tap, TappedFile};

/// The two WAL files in the store directory.
pub const WAL_FILES: [&str; 2] = ["events.wal0", "events.wal1"];
/// Bytes before each record.
pub const FRAME_HEADER: usize = 24;
/// No record is larger (events are limited to far less): a larger length is garbage.
const MAX_FRAME: u64 = 1 << 28;
/// Zero-filling writes this much at a time.
const ZERO_CHUNK: usize = 1 << 20;

/// Start a frame at the end of `frames`; [`finish_frame`] fills its header in.
pub fn begin_frame(frames: &mut Vec<u8>) -> usize {
    let start = frames.len();
    frames.extend_from_slice(&[0; FRAME_HEADER]);
    start
}

/// Fill in the header of the frame that starts at `start` and runs to the end of `frames`.
pub fn finish_frame(frames: &mut [u8], start: usize, epoch: u32, position: u64) {
    let len = (frames.len() - start - FRAME_HEADER) as u32;
    let record = &frames[start + FRAME_HEADER..];
    let check = frame_check(len, epoch, position, &record[record.len() - 32..]);
    let header = &mut frames[start..start + FRAME_HEADER];
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&epoch.to_le_bytes());
    header[8..16].copy_from_slice(&position.to_le_bytes());
    header[16..].copy_from_slice(&check.to_le_bytes());
}

fn frame_check(len: u32, epoch: u32, position: u64, record_hash: &[u8]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&epoch.to_le_bytes());
    hasher.update(&position.to_le_bytes());
    hasher.update(record_hash);
    u64::from_le_bytes(
        hasher.finalize().as_bytes()[..8]
            .try_into()
            .unwrap_or_default(),
    )
}

/// The WAL files, as the syncer writes them.
#[derive(Debug)]
pub struct Wal {
    files: [TappedFile; 2],
    capacity: [u64; 2],
    active: usize,
    offset: u64,
}

impl Wal {
    /// Open both files, creating them, or extending them with zeros to `bytes` each.
    pub fn open(dir: &Path, bytes: u64, tap: &Tap) -> io::Result<Wal> {
        let mut created = false;
        let mut open = |name: &str| -> io::Result<(TappedFile, u64)> {
            let path = dir.join(name);
            created |= !path.exists();
            let file = TappedFile::open(&path, tap)?;
            let length = file.file().metadata()?.len();
            if length < bytes {
                write_zeros(&file, length, bytes)?;
                file.sync_all()?;
            }
            Ok((file, length.max(bytes)))
        };
        let (first, first_len) = open(WAL_FILES[0])?;
        let (second, second_len) = open(WAL_FILES[1])?;
        if created {
            tap::sync_dir(dir, tap)?;
        }
        Ok(Wal {
            files: [first, second],
            capacity: [first_len, second_len],
            active: 0,
            offset: 0,
        })
    }

    /// Bytes left in the active file.
    pub fn room(&self) -> u64 {
        self.capacity[self.active] - self.offset
    }

    /// The size of the active file.
    pub fn capacity(&self) -> u64 {
        self.capacity[self.active]
    }

    /// Continue in the other file, from its start.
    pub fn switch(&mut self) {
        self.active = 1 - self.active;
        self.offset = 0;
    }

    /// Make the active file hold at least `bytes` more from the current offset (a batch larger
    /// than a whole file; rare and slow: zeros and a full sync).
    pub fn grow(&mut self, bytes: u64) -> io::Result<()> {
        let file = &self.files[self.active];
        let target = self.offset + bytes;
        let length = self.capacity[self.active];
        if target > length {
            write_zeros(file, length, target)?;
            file.sync_all()?;
            self.capacity[self.active] = target;
        }
        Ok(())
    }

    /// Write `frames` at the end of the active file; with `durable`, wait until they are on
    /// disk. The caller has made room.
    pub fn append(&mut self, frames: &[u8], durable: bool) -> io::Result<()> {
        let file = &self.files[self.active];
        file.write_all_at(frames, self.offset)?;
        self.offset += frames.len() as u64;
        if durable {
            file.sync_data()?;
        }
        Ok(())
    }
}

fn write_zeros(file: &TappedFile, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut at = from;
    while at < to {
        let step = (to - at).min(ZERO_CHUNK as u64) as usize;
        file.write_all_at(&zeros[..step], at)?;
        at += step as u64;
    }
    Ok(())
}

/// The records of `epoch` in the WAL files of `dir` that continue the log after `head`, in
/// position order: each checked against its frame and the hash chain. Stops at the first
/// position no valid frame holds.
pub fn recover(dir: &Path, epoch: u32, head: &Head) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let mut found: HashMap<u64, Vec<u8>> = HashMap::new();
    for name in WAL_FILES {
        let file = match File::open(dir.join(name)) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        for (position, record) in live_frames(
            io::BufReader::with_capacity(ZERO_CHUNK, file),
            epoch,
            head.position,
        )? {
            found.insert(position, record);
        }
    }
    let mut records = Vec::new();
    let mut previous = head.hash;
    let mut position = head.position + 1;
    while let Some(record) = found.remove(&position) {
        let Ok(decoded) = codec::decode(position, &record) else {
            break;
        };
        if codec::chain_hash(&previous, position, decoded.body_bytes) != decoded.event.hash {
            break;
        }
        previous = decoded.event.hash;
        records.push((position, record));
        position += 1;
    }
    Ok(records)
}

/// The frames of one file's live generation: from its start, well-formed frames of `epoch`
/// at consecutive positions after `head`. A file whose first frame is at or before `head`
/// holds a checkpointed generation and yields nothing; reading stops at the first frame that
/// is not well-formed (zeros, a torn write, an older epoch) or not consecutive (stale frames
/// behind the last write), so a clean start reads a few bytes.
fn live_frames(mut file: impl io::Read, epoch: u32, head: u64) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let mut frames = Vec::new();
    let mut header = [0u8; FRAME_HEADER];
    let mut expected = None;
    loop {
        match file.read_exact(&mut header) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(error) => return Err(error),
        }
        let field = |range: std::ops::Range<usize>| {
            let mut bytes = [0u8; 8];
            bytes[..range.len()].copy_from_slice(&header[range]);
            u64::from_le_bytes(bytes)
        };
        let (len, frame_epoch, position, check) =
            (field(0..4), field(4..8) as u32, field(8..16), field(16..24));
        if !(32..=MAX_FRAME).contains(&len) || frame_epoch != epoch {
            break;
        }
        if expected.is_some_and(|expected| position != expected)
            || (expected.is_none() && position <= head)
        {
            break;
        }
        let mut record = vec![0u8; len as usize];
        match file.read_exact(&mut record) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(error) => return Err(error),
        }
        if frame_check(len as u32, epoch, position, &record[record.len() - 32..]) != check {
            break;
        }
        expected = Some(position + 1);
        frames.push((position, record));
    }
    Ok(frames)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::{GENESIS_HASH, RecordBody};

    /// Appends to `frames` the frame of a one-event record at `position` chained from
    /// `previous`; returns its hash.
    pub(crate) fn record(
        position: u64,
        previous: &[u8; 32],
        frames: &mut Vec<u8>,
        epoch: u32,
    ) -> [u8; 32] {
        let start = begin_frame(frames);
        let hash = RecordBody {
            stream_version: position,
            event_id: uuid::Uuid::now_v7(),
            schema_version: 1,
            recorded_at: 7,
            stream_id: "s",
            event_type: "E",
            data: "{}",
            metadata: "{}",
            personal: None,
        }
        .encode_into(position, previous, frames);
        finish_frame(frames, start, epoch, position);
        hash
    }

    fn head_after(hash: [u8; 32], position: u64) -> Head {
        Head {
            position,
            hash,
            recorded_at: 7,
        }
    }

    #[test]
    fn recovery_takes_the_frames_that_continue_the_chain_and_stops_at_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 64 * 1024, &None).unwrap();
        let mut frames = Vec::new();
        let mut hash = GENESIS_HASH;
        let mut hashes = vec![hash];
        for position in 1..=5 {
            hash = record(position, &hash, &mut frames, 3);
            hashes.push(hash);
        }
        wal.append(&frames, true).unwrap();
        let all = recover(dir.path(), 3, &Head::EMPTY).unwrap();
        assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        // A file whose generation redb holds yields nothing; nor do frames of another epoch.
        assert!(
            recover(dir.path(), 3, &head_after(hashes[5], 5))
                .unwrap()
                .is_empty()
        );
        assert!(recover(dir.path(), 4, &Head::EMPTY).unwrap().is_empty());
        // A head whose hash the frames do not continue (another log) takes nothing.
        assert!(
            recover(dir.path(), 3, &head_after([9; 32], 3))
                .unwrap()
                .is_empty()
        );
        // Tear the fourth record: recovery keeps 1..=3.
        let path = dir.path().join(WAL_FILES[0]);
        let mut bytes = std::fs::read(&path).unwrap();
        let third_end = 3 * (frames.len() / 5);
        bytes[third_end + FRAME_HEADER + 10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let torn = recover(dir.path(), 3, &Head::EMPTY).unwrap();
        assert_eq!(torn.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn recovery_follows_the_chain_across_both_files_past_stale_frames() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 64 * 1024, &None).unwrap();
        let mut hash = GENESIS_HASH;
        // File 0: positions 1..=4, later partly overwritten by 9..=10 (stale 3..=4 stay behind).
        let mut first = Vec::new();
        for position in 1..=4 {
            hash = record(position, &hash, &mut first, 1);
        }
        wal.append(&first, true).unwrap();
        wal.switch();
        let mut second = Vec::new();
        for position in 5..=8 {
            hash = record(position, &hash, &mut second, 1);
        }
        wal.append(&second, true).unwrap();
        let checkpointed = head_after(hash, 8);
        wal.switch();
        let mut third = Vec::new();
        for position in 9..=10 {
            hash = record(position, &hash, &mut third, 1);
        }
        wal.append(&third, true).unwrap();
        let from_start = recover(dir.path(), 1, &Head::EMPTY).unwrap();
        // 1..=2 were overwritten by 9..=10: the chain from genesis stops there.
        assert!(from_start.is_empty());
        let recovered = recover(dir.path(), 1, &checkpointed).unwrap();
        assert_eq!(recovered.iter().map(|r| r.0).collect::<Vec<_>>(), [9, 10]);
        // Redb holding 1..=4 (the first file's old generation): 5..=10 follow, across files.
        let mut hash = GENESIS_HASH;
        let mut frames = Vec::new();
        for position in 1..=4 {
            hash = record(position, &hash, &mut frames, 2);
        }
        let at_four = head_after(hash, 4);
        let mut wal = Wal::open(dir.path(), 64 * 1024, &None).unwrap();
        wal.append(&frames, true).unwrap();
        wal.switch();
        let mut frames = Vec::new();
        for position in 5..=7 {
            hash = record(position, &hash, &mut frames, 2);
        }
        wal.append(&frames, true).unwrap();
        let recovered = recover(dir.path(), 2, &at_four).unwrap();
        assert_eq!(recovered.iter().map(|r| r.0).collect::<Vec<_>>(), [5, 6, 7]);
    }

    #[test]
    fn a_batch_larger_than_a_file_grows_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 4096, &None).unwrap();
        assert_eq!(wal.room(), 4096);
        wal.grow(10_000).unwrap();
        assert!(wal.room() >= 10_000);
        wal.append(&[1; 10_000], true).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join(WAL_FILES[0]))
                .unwrap()
                .len(),
            10_000
        );
    }
}
