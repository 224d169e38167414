//! Opening `events.redb`: the format check, the head, and bringing redb up to date with what
//! is durable elsewhere (the write-ahead log of the last run; indexes of an older store), so
//! that the store starts with everything in redb and an empty tail.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable};

use super::archive::Manifest;
use super::checkpoint::write_generation;
use super::index::{self, RecentIndex};
use super::schema::{
    ARCHIVED_OPEN_FORMAT, ARCHIVED_STORE_FORMAT, EVENT_IDS, EVENTS, Head, META, META_ARCHIVE,
    META_FORMAT, META_HEAD, META_WAL_EPOCH, OPEN_FORMAT, STORE_FORMAT, STREAM_EVENTS, STREAMS,
};
use super::tail::{Batch, Generation};
use super::wal;
use crate::codec;
use crate::keys::{KeyStore, KeyStoreError};
use crate::tap::Tap;

/// Why [`initialise`] failed.
pub(crate) enum Initialise {
    Format(u32),
    Database(String),
}

/// What the store starts from.
pub(crate) struct Initialised {
    /// The last event, all of it in redb.
    pub head: Head,
    /// The number the next new stream gets.
    pub next_stream_number: u64,
    /// The WAL epoch of this run.
    pub epoch: u32,
    /// Events recovered from the WAL.
    pub recovered: usize,
    /// The archive's segments.
    pub manifest: Manifest,
}

/// redb writes a new file's magic number last, after the rest of its header is durable, so a
/// crash while `events.redb` is created leaves a file redb refuses ("magic number mismatch").
/// Such a file never held an event: no append is acknowledged before the store opened, and
/// the write-ahead log files are created only after it. If the file's magic is all zeros and
/// neither log file exists, remove it, so that the store is created again. Anything else is
/// left for redb to judge.
pub(crate) fn discard_unfinished_creation(dir: &Path, path: &Path) -> std::io::Result<bool> {
    let unfinished = super::file::unfinished_redb(path)?
        && wal::WAL_FILES.iter().all(|name| !dir.join(name).exists());
    if unfinished {
        tracing::warn!(path = %path.display(), "removing an event file whose creation never finished");
        std::fs::remove_file(path)?;
    }
    Ok(unfinished)
}

/// Create the tables of a new store, check the format of an old one, read its head, index
/// what an older store left unindexed, copy the events of the last run's WAL that redb does
/// not hold yet, start a new WAL epoch, and mark the store open: all in one durable
/// transaction. With `recover_until` (a reopen after an I/O error: the last position that
/// was acknowledged), frames past it are left behind: their batch failed, and the new epoch
/// makes them stale.
pub(crate) fn initialise(
    db: &Database,
    dir: &Path,
    recover_until: Option<u64>,
) -> Result<Initialised, Initialise> {
    let failed = |error: redb::Error| Initialise::Database(error.to_string());
    let mut txn = db.begin_write().map_err(|e| failed(e.into()))?;
    txn.set_quick_repair(true);
    let (mut head, epoch, manifest) = {
        let mut meta = txn.open_table(META).map_err(|e| failed(e.into()))?;
        let format = meta
            .get(META_FORMAT)
            .map_err(|e| failed(e.into()))?
            .map(|bytes| {
                bytes
                    .value()
                    .try_into()
                    .map(u32::from_le_bytes)
                    .unwrap_or(u32::MAX)
            });
        match format {
            Some(STORE_FORMAT | OPEN_FORMAT | ARCHIVED_STORE_FORMAT | ARCHIVED_OPEN_FORMAT)
            | None => {}
            Some(other) => return Err(Initialise::Format(other)),
        }
        let manifest = match meta.get(META_ARCHIVE).map_err(|e| failed(e.into()))? {
            Some(bytes) => Manifest::decode(bytes.value())
                .ok_or_else(|| Initialise::Database("the archive manifest is malformed".into()))?,
            None => Manifest::default(),
        };
        let open_format = if manifest.segments.is_empty() {
            OPEN_FORMAT
        } else {
            ARCHIVED_OPEN_FORMAT
        };
        // Until the clean close writes the closed format back (see `checkpoint`).
        meta.insert(META_FORMAT, open_format.to_le_bytes().as_slice())
            .map_err(|e| failed(e.into()))?;
        let head = match meta.get(META_HEAD).map_err(|e| failed(e.into()))? {
            Some(bytes) => Head::decode(bytes.value())
                .ok_or_else(|| Initialise::Database("the head record is malformed".into()))?,
            None => Head::EMPTY,
        };
        let epoch = meta
            .get(META_WAL_EPOCH)
            .map_err(|e| failed(e.into()))?
            .and_then(|bytes| bytes.value().try_into().ok().map(u32::from_le_bytes))
            .unwrap_or(0);
        (head, epoch, manifest)
    };
    // Open every table once so readers find them even in an empty store.
    txn.open_table(STREAM_EVENTS)
        .map_err(|e| failed(e.into()))?;
    txn.open_table(STREAMS).map_err(|e| failed(e.into()))?;
    txn.open_table(EVENT_IDS).map_err(|e| failed(e.into()))?;
    let last = txn
        .open_table(EVENTS)
        .and_then(|events| Ok(events.last()?.map(|(key, _)| key.value())))
        .map_err(|e| failed(e.into()))?;
    // With every hot record archived, the log ends at the archive's last segment.
    let last = last.unwrap_or(manifest.through());
    if last != head.position {
        return Err(Initialise::Database(format!(
            "the log ends at position {last} but its head says {}",
            head.position
        )));
    }
    let indexed = index::indexed(&txn.open_table(META).map_err(|e| failed(e.into()))?)
        .map_err(|e| failed(e.into()))?;
    if indexed.0 < head.position {
        let recent = RecentIndex::recover(&txn, head.position).map_err(Initialise::Database)?;
        recent.flush(&txn, head.position).map_err(failed)?;
    }
    let mut records = wal::recover(dir, epoch, &head).map_err(|error| {
        Initialise::Database(format!("cannot read the write-ahead log: {error}"))
    })?;
    if let Some(until) = recover_until {
        records.retain(|(position, _)| *position <= until);
    }
    let recovered = records.len();
    if !records.is_empty() {
        let generation = recovered_generation(&txn, head, records)?;
        write_generation(&txn, &generation).map_err(failed)?;
        head = generation.head;
    }
    let epoch = epoch.wrapping_add(1);
    let next_stream_number = {
        let mut meta = txn.open_table(META).map_err(|e| failed(e.into()))?;
        meta.insert(META_WAL_EPOCH, epoch.to_le_bytes().as_slice())
            .map_err(|e| failed(e.into()))?;
        index::indexed(&meta).map_err(|e| failed(e.into()))?.1
    };
    txn.commit().map_err(|e| failed(e.into()))?;
    Ok(Initialised {
        head,
        next_stream_number,
        epoch,
        recovered,
        manifest,
    })
}

/// The recovered WAL records after `head` as a generation, indexed against redb's streams.
fn recovered_generation(
    txn: &redb::WriteTransaction,
    head: Head,
    records: Vec<(u64, Vec<u8>)>,
) -> Result<Generation, Initialise> {
    let failed = |error: redb::Error| Initialise::Database(error.to_string());
    let next_stream_number = index::indexed(&txn.open_table(META).map_err(|e| failed(e.into()))?)
        .map_err(|e| failed(e.into()))?
        .1;
    let mut generation = Generation::after(head, next_stream_number);
    let mut batch = Batch {
        first: head.position + 1,
        ..Batch::default()
    };
    {
        let streams = txn.open_table(STREAMS).map_err(|e| failed(e.into()))?;
        for (position, record) in &records {
            generation
                .index
                .index_record(&streams, *position, record)
                .map_err(Initialise::Database)?;
            let start = batch.frames.len() as u32;
            batch.frames.extend_from_slice(record);
            batch.records.push((start, record.len() as u32));
        }
    }
    if let Some((position, record)) = records.last() {
        let decoded = codec::decode(*position, record)
            .map_err(|reason| Initialise::Database(format!("position {position}: {reason}")))?;
        generation.head = Head {
            position: *position,
            hash: decoded.event.hash,
            recorded_at: decoded.event.recorded_at,
        };
    }
    generation.bytes = batch.frames.len() as u64;
    generation.batches.push(Arc::new(batch));
    Ok(generation)
}

/// How long a store whose events file it holds waits for its key file's lock.
const KEYS_LOCK_WAIT: Duration = Duration::from_secs(2);

/// The store's key file, locked. Once the events file is locked (one store, one key file),
/// whoever still holds the key file's lock is on its way out: a store of this process whose
/// files are closing one after the other, or a child this process forked that has not yet
/// replaced itself (a `flock` is shared by the child's copy of the descriptor until its
/// `exec` closes it). So a held lock is waited on briefly before it is reported.
pub(crate) fn lock_keys(path: &Path, tap: &Tap) -> Result<KeyStore, KeyStoreError> {
    let deadline = Instant::now() + KEYS_LOCK_WAIT;
    loop {
        match KeyStore::open_tapped(path, tap) {
            Err(KeyStoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            opened => return opened,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::GENESIS_HASH;

    /// Frames of `epoch` for positions `1..=count` of one stream, chained from genesis.
    fn frames(epoch: u32, count: u64) -> Vec<u8> {
        let mut frames = Vec::new();
        let mut hash = GENESIS_HASH;
        for position in 1..=count {
            hash = wal::tests::record(position, &hash, &mut frames, epoch);
        }
        frames
    }

    #[test]
    fn a_reopen_recovers_the_log_only_up_to_the_last_acknowledged_position() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("events.redb")).unwrap();
        // A new store starts at epoch 0: five frames of it, the last two of a batch that
        // failed (never acknowledged).
        let mut log = wal::Wal::open(dir.path(), 64 * 1024, &None).unwrap();
        log.append(&frames(0, 5), true).unwrap();
        let reopened = initialise(&db, dir.path(), Some(3)).ok().unwrap();
        assert_eq!((reopened.recovered, reopened.head.position), (3, 3));
        // The new epoch makes the failed batch's frames stale for good, a crash later included.
        let again = initialise(&db, dir.path(), None).ok().unwrap();
        assert_eq!((again.recovered, again.head.position), (0, 3));
        assert_eq!(again.epoch, reopened.epoch + 1);
    }
}
