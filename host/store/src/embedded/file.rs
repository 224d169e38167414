//! The file under `events.redb`: redb's file backend, but space is written with zeros before
//! redb first writes into it.
//!
//! redb grows its file with `set_len`, which leaves a hole. The first write into a hole makes
//! the file system allocate blocks, and the next `fdatasync` must then commit file system
//! metadata too: on ext4 that made every commit of an append-only log cost ~1 ms instead of
//! ~0.15 ms. Writing zeros ahead, in chunks, pays for the allocation once per chunk.
//!
//! Invariant: no byte at or past `zeroed_until` has been written by redb since the file was
//! opened, so zeroing `[zeroed_until, ..)` never overwrites data. On open, `zeroed_until` is
//! the file's length: what lies in an existing file is unknown, so it is never zeroed.

use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

use redb::{BackendError, StorageBackend};

use crate::tap::{Tap, TappedBackend};

// What redb's backend I/O methods return (without its experimental API).
type BackendIoError = std::io::Error;

/// Whether the redb file at `path` exists but has no magic number (all zeros): redb writes it
/// last when it creates a file, so such a file is one whose creation never finished.
pub fn unfinished_redb(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut magic = [0xffu8; 9];
    match std::fs::File::open(path) {
        Ok(file) => Ok(file.read_exact_at(&mut magic, 0).is_ok() && magic == [0; 9]),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// How far ahead of redb's writes the file is zeroed, in bytes.
const ZERO_CHUNK: u64 = 4 * 1024 * 1024;

/// A redb storage backend that zero-fills the file ahead of writes.
#[derive(Debug)]
pub struct ZeroAheadFile {
    inner: TappedBackend,
    zeroed_until: Mutex<u64>,
}

impl ZeroAheadFile {
    /// Open (or create) the file at `path`, its writes through `tap`.
    pub fn open(path: &Path, tap: &Tap) -> Result<Self, redb::DatabaseError> {
        let inner = TappedBackend::open(path, tap)?;
        let length = inner.len()?;
        Ok(ZeroAheadFile {
            inner,
            zeroed_until: Mutex::new(length),
        })
    }

    /// Zero `[zeroed_until, end + ZERO_CHUNK)`, within the file's length, if `end` is past it.
    fn zero_through(&self, end: u64) -> Result<(), BackendIoError> {
        let mut zeroed_until = self.zeroed_until.lock().unwrap_or_else(|e| e.into_inner());
        if end <= *zeroed_until {
            return Ok(());
        }
        let length = self.inner.len()?;
        let target = (end + ZERO_CHUNK).min(length).max(end);
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut at = *zeroed_until;
        while at < target {
            let step = (target - at).min(ZEROS.len() as u64);
            self.inner.write(at, &ZEROS[..step as usize])?;
            at += step;
        }
        *zeroed_until = target;
        Ok(())
    }
}

impl StorageBackend for ZeroAheadFile {
    fn len(&self) -> Result<u64, BackendIoError> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        let mut zeroed_until = self.zeroed_until.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.set_len(len)?;
        *zeroed_until = (*zeroed_until).min(len);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        self.zero_through(offset + data.len() as u64)?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), BackendIoError> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
