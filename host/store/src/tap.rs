//! Where the embedded store's writes can be watched. Every write, truncation and sync of the
//! files that hold the log (`events.redb`, the write-ahead log), the subjects' keys and any
//! other redb file opened through [`TappedBackend`] (the host's `views.redb`), and every new
//! directory entry and directory sync, goes through a [`TappedFile`], which tells its
//! [`WriteTap`] first. A tap may refuse: the write then never reaches the file.
//!
//! Production runs without a tap (one `Option` check per write). The power-cut tests record
//! through one: they know what was synced and what was only written, and after a simulated cut
//! rebuild each file from what a disk could have kept (see `eshost-store-tests`' `powercut`).
//! Reads are not tapped: until the cut, the files hold everything written, like a page cache.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Told of each write before it reaches the file; an error stops it.
pub trait WriteTap: Send + Sync + std::fmt::Debug {
    /// `data` is about to be written at `offset` of `path`.
    fn write(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()>;
    /// `path` is about to be cut or extended to `len` bytes.
    fn set_len(&self, path: &Path, len: u64) -> io::Result<()>;
    /// `path`'s data (and its length) is about to be made durable.
    fn sync(&self, path: &Path) -> io::Result<()>;
    /// `path` was just created, empty: its directory entry is durable once its directory is
    /// synced.
    fn created(&self, path: &Path) -> io::Result<()>;
    /// The entries of directory `dir` are about to be made durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A tap, or none.
pub type Tap = Option<Arc<dyn WriteTap>>;

/// A file opened for reading and writing whose changes go through a tap.
#[derive(Debug)]
pub struct TappedFile {
    file: File,
    path: PathBuf,
    tap: Tap,
}

impl TappedFile {
    /// Open `path` for reading and writing, creating it (empty) if missing.
    pub fn open(path: &Path, tap: &Tap) -> io::Result<TappedFile> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if !existed && let Some(tap) = tap {
            tap.created(path)?;
        }
        Ok(TappedFile {
            file,
            path: path.to_owned(),
            tap: tap.clone(),
        })
    }

    /// The file, to read, lock or ask its length.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write all of `data` at `offset`.
    pub fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        if let Some(tap) = &self.tap {
            tap.write(&self.path, offset, data)?;
        }
        self.file.write_all_at(data, offset)
    }

    /// Cut or extend the file to `len` bytes.
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        if let Some(tap) = &self.tap {
            tap.set_len(&self.path, len)?;
        }
        self.file.set_len(len)
    }

    /// Make the data durable (`fdatasync`).
    pub fn sync_data(&self) -> io::Result<()> {
        if let Some(tap) = &self.tap {
            tap.sync(&self.path)?;
        }
        self.file.sync_data()
    }

    /// Make the data and the metadata durable (`fsync`).
    pub fn sync_all(&self) -> io::Result<()> {
        if let Some(tap) = &self.tap {
            tap.sync(&self.path)?;
        }
        self.file.sync_all()
    }
}

/// Make the entries of directory `dir` durable.
pub fn sync_dir(dir: &Path, tap: &Tap) -> io::Result<()> {
    if let Some(tap) = tap {
        tap.sync_dir(dir)?;
    }
    File::open(dir)?.sync_all()
}

/// redb's file backend with its changes going through a tap.
#[derive(Debug)]
pub struct TappedBackend {
    inner: FileBackend,
    path: PathBuf,
    tap: Tap,
}

impl TappedBackend {
    /// Open (or create) the redb file at `path`.
    pub fn open(path: &Path, tap: &Tap) -> Result<TappedBackend, redb::DatabaseError> {
        let file = TappedFile::open(path, tap)?;
        Ok(TappedBackend {
            inner: FileBackend::new(file.file)?,
            path: file.path,
            tap: file.tap,
        })
    }
}

impl StorageBackend for TappedBackend {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if let Some(tap) = &self.tap {
            tap.set_len(&self.path, len)?;
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        if let Some(tap) = &self.tap {
            tap.sync(&self.path)?;
        }
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if let Some(tap) = &self.tap {
            tap.write(&self.path, offset, data)?;
        }
        self.inner.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
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
