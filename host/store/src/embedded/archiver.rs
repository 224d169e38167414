//! Moving the oldest events into sealed segments, beside the live writer.
//!
//! Two steps. `seal` reads the records from a redb snapshot and writes them as segments
//! (each synced and renamed into place, then the directory synced). `commit` publishes the
//! new manifest to readers, then deletes the records from the hot table and records the
//! manifest in one redb transaction. A crash between the two leaves segments the manifest
//! does not name: the next open removes them, and redb still holds every record. The
//! checkpointer writes only positions after the tail's base and an archive only deletes up
//! to it, so the two never touch the same records; redb runs their transactions one at a
//! time.

use std::path::PathBuf;

use redb::{Database, ReadableDatabase};

use super::archive::{Archive, Manifest};
use super::schema::{ARCHIVED_OPEN_FORMAT, EVENTS, META, META_ARCHIVE, META_FORMAT};
use super::segment::{self, Header, SEGMENT_BYTES, SEGMENT_EVENTS};
use crate::archive::{ArchiveError, Archived, SegmentInfo};

/// The most records one round moves: its deletion holds redb's write lock, which the
/// checkpointer (and, once the write-ahead log fills, the appends) wait for.
const ROUND_EVENTS: u64 = 16 * SEGMENT_EVENTS as u64;

/// Archive every position from the archive's end through `last` (which redb must hold), in
/// rounds of at most [`ROUND_EVENTS`], each committed on its own.
pub(crate) fn archive(
    db: &Database,
    archive: &Archive,
    last: u64,
) -> Result<Archived, ArchiveError> {
    let _running = archive.running.lock().unwrap_or_else(|e| e.into_inner());
    let mut total = Archived {
        events: 0,
        segments: Vec::new(),
        archived_through: archive.view().through(),
    };
    while total.archived_through < last {
        let old = archive.view().manifest.as_ref().clone();
        let first = old.through() + 1;
        let sealed = seal(db, archive, first, last.min(first + ROUND_EVENTS - 1))?;
        let round = commit(db, archive, old, sealed)?;
        total.events += round.events;
        total.segments.extend(round.segments);
        total.archived_through = round.archived_through;
    }
    Ok(total)
}

/// Write positions `first..=last` from redb as segments; their headers, in order.
pub(crate) fn seal(
    db: &Database,
    archive: &Archive,
    first: u64,
    last: u64,
) -> Result<Vec<(Header, PathBuf)>, ArchiveError> {
    let dir = archive.dir();
    let write_failed = |file: PathBuf| {
        move |error: std::io::Error| ArchiveError::Write {
            file,
            reason: error.to_string(),
        }
    };
    std::fs::create_dir_all(dir).map_err(write_failed(dir.to_path_buf()))?;
    let txn = db.begin_read().map_err(redb::Error::from)?;
    let events = txn.open_table(EVENTS).map_err(redb::Error::from)?;
    let mut sealed = Vec::new();
    let mut chunk: Vec<Vec<u8>> = Vec::new();
    let (mut chunk_first, mut chunk_bytes, mut expected) = (first, 0usize, first);
    let mut flush = |chunk: &mut Vec<Vec<u8>>, chunk_first: u64| -> Result<(), ArchiveError> {
        let last = chunk_first + chunk.len() as u64 - 1;
        let file = dir.join(segment::file_name(chunk_first, last));
        let written = segment::write(dir, chunk_first, chunk).map_err(write_failed(file))?;
        sealed.push(written);
        chunk.clear();
        Ok(())
    };
    for entry in events.range(first..=last).map_err(redb::Error::from)? {
        let (key, value) = entry.map_err(redb::Error::from)?;
        if key.value() != expected {
            return Err(crate::ReadError::Corrupt {
                position: expected,
                reason: "missing from the hot log while archiving".into(),
            }
            .into());
        }
        expected += 1;
        chunk_bytes += value.value().len() + 4;
        chunk.push(value.value().to_vec());
        if chunk.len() >= SEGMENT_EVENTS || chunk_bytes >= SEGMENT_BYTES {
            flush(&mut chunk, chunk_first)?;
            chunk_first = expected;
            chunk_bytes = 0;
        }
    }
    if expected != last + 1 {
        return Err(crate::ReadError::Corrupt {
            position: expected,
            reason: "missing from the hot log while archiving".into(),
        }
        .into());
    }
    if !chunk.is_empty() {
        flush(&mut chunk, chunk_first)?;
    }
    segment::sync_dir(dir).map_err(write_failed(dir.to_path_buf()))?;
    Ok(sealed)
}

/// Name the `sealed` segments in the manifest and delete their records from the hot table.
pub(crate) fn commit(
    db: &Database,
    archive: &Archive,
    old: Manifest,
    sealed: Vec<(Header, PathBuf)>,
) -> Result<Archived, ArchiveError> {
    let mut manifest = old.clone();
    manifest
        .segments
        .extend(sealed.iter().map(|(header, _)| *header));
    let (first, last) = (old.through() + 1, manifest.through());
    // Readers go to the segments before the hot records can disappear under them.
    archive.publish(manifest.clone());
    let committed = (|| -> Result<(), redb::Error> {
        let mut txn = db.begin_write()?;
        txn.set_quick_repair(true);
        txn.open_table(EVENTS)?
            .retain_in(first..=last, |_, _| false)?;
        let mut meta = txn.open_table(META)?;
        meta.insert(META_ARCHIVE, manifest.encode().as_slice())?;
        // Builds that know no archive refuse the store rather than read it with a hole.
        meta.insert(META_FORMAT, ARCHIVED_OPEN_FORMAT.to_le_bytes().as_slice())?;
        drop(meta);
        txn.commit()?;
        Ok(())
    })();
    if let Err(error) = committed {
        archive.publish(old);
        return Err(error.into());
    }
    Ok(Archived {
        events: last + 1 - first,
        segments: sealed
            .into_iter()
            .map(|(header, path)| SegmentInfo {
                file: path.display().to_string(),
                first_position: header.first,
                last_position: header.last,
                bytes: header.body_bytes + segment::HEADER_LEN as u64,
                raw_bytes: header.raw_bytes,
            })
            .collect(),
        archived_through: last,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Store, StoreConfig};
    use super::*;
    use crate::{AllRead, AppendRequest, ArchiveCut, EventStore, ExpectedVersion, ProposedEvent};

    #[test]
    fn a_crash_between_sealing_and_committing_leaves_every_event_once() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Store::open(StoreConfig::new(dir.path())).unwrap();
        let store = open();
        for i in 0..50 {
            let event = ProposedEvent::new("Added", format!(r#"{{"i":{i}}}"#));
            let request =
                AppendRequest::new(format!("s-{}", i % 4), ExpectedVersion::Any, vec![event]);
            store.append_blocking(request).unwrap();
        }
        drop(store);
        let store = open();
        let all = store.read_all(&AllRead::from(0)).unwrap();
        // What a kill between the two steps leaves: a durable segment the manifest lacks.
        let sealed = seal(&store.inner.db, &store.inner.archive, 1, 30).unwrap();
        let file = sealed[0].1.clone();
        assert!(file.is_file());
        drop(store);

        let store = open();
        assert!(
            !file.exists(),
            "the unfinished segment is removed on opening"
        );
        assert_eq!(store.read_all(&AllRead::from(0)).unwrap(), all);
        assert!(store.verify().unwrap().is_ok());
        let archived = store.archive(ArchiveCut::BeforePosition(31)).unwrap();
        assert_eq!((archived.events, archived.archived_through), (30, 30));
        assert_eq!(store.read_all(&AllRead::from(0)).unwrap(), all);
        assert!(store.verify().unwrap().is_ok());
    }
}
