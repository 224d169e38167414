//! The archive tier: the sealed segments (see `segment`) that hold the oldest positions, the
//! manifest naming them, and reads through them.
//!
//! The manifest is a copy of every segment's header, kept in `events.redb` (`META_ARCHIVE`)
//! and committed in the same transaction that deletes the archived records from the hot
//! `events` table. Positions up to the manifest's last segment are read from segments; the
//! hot log keeps the rest, and the last segment's hash is the anchor it chains from. The
//! stream and event-id indexes stay hot (small, fixed-width), so a stream read finds archived
//! positions as before and only fetches their records from segments.
//!
//! Readers take the manifest after beginning their redb transaction, and an archive
//! publishes the new manifest before it commits the deletion: a reader whose snapshot lacks
//! the records always finds them in segments.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::segment::{self, ARCHIVE_DIR, HEADER_LEN, Header, Loaded, SegmentError};
use crate::error::ReadError;

/// How many checked, uncompressed segments stay in memory for readers.
const CACHED_SEGMENTS: usize = 4;

/// The sealed segments, in position order, consecutive from position 1.
#[derive(Debug, Default, Clone)]
pub(crate) struct Manifest {
    pub segments: Vec<Header>,
}

impl Manifest {
    /// Every position up to this one is archived (0: none).
    pub fn through(&self) -> u64 {
        self.segments.last().map_or(0, |header| header.last)
    }

    /// The stored form: the headers, one after another.
    pub fn encode(&self) -> Vec<u8> {
        self.segments.iter().flat_map(|h| h.encode()).collect()
    }

    /// Read the stored form; `None` if it is malformed or not consecutive.
    pub fn decode(bytes: &[u8]) -> Option<Manifest> {
        if !bytes.len().is_multiple_of(HEADER_LEN) {
            return None;
        }
        let segments = bytes
            .chunks(HEADER_LEN)
            .map(Header::decode)
            .collect::<Option<Vec<_>>>()?;
        let mut next = 1;
        for header in &segments {
            if header.first != next || header.last < header.first {
                return None;
            }
            next = header.last + 1;
        }
        Some(Manifest { segments })
    }

    /// The header of the segment holding `position`.
    fn holding(&self, position: u64) -> Option<&Header> {
        let index = self.segments.partition_point(|h| h.last < position);
        self.segments.get(index).filter(|h| h.first <= position)
    }
}

/// The archive of one store: where its segments are, the current manifest, and a small
/// cache of segments read back.
#[derive(Debug)]
pub(crate) struct Archive {
    dir: PathBuf,
    manifest: RwLock<Arc<Manifest>>,
    cache: Mutex<VecDeque<Arc<Loaded>>>,
    /// Held for the whole of an archive, so that two never interleave.
    pub running: Mutex<()>,
}

impl Archive {
    /// The archive of the store in `store_dir`, as `manifest` records it. Segment files (and
    /// temporary ones) the manifest does not name are removed: an archive that stopped before its commit left
    /// them, and redb still holds their records.
    pub fn open(store_dir: &Path, manifest: Manifest) -> std::io::Result<Archive> {
        let dir = store_dir.join(ARCHIVE_DIR);
        if dir.is_dir() {
            let named: std::collections::HashSet<String> =
                manifest.segments.iter().map(Header::file_name).collect();
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // Only what an archive writes: other files are not the store's to remove.
                let ours = name.ends_with(".seg") || name.ends_with(".seg.tmp");
                if ours && !named.contains(&name) {
                    tracing::info!(file = %entry.path().display(), "removing an unfinished archive segment");
                    std::fs::remove_file(entry.path())?;
                }
            }
        }
        Ok(Archive {
            dir,
            manifest: RwLock::new(Arc::new(manifest)),
            cache: Mutex::new(VecDeque::new()),
            running: Mutex::new(()),
        })
    }

    /// The directory of the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest now. Take it after beginning a redb read transaction (see above).
    pub fn view(&self) -> ArchiveView<'_> {
        ArchiveView {
            archive: self,
            manifest: self
                .manifest
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Publish `manifest`; readers route its positions to segments from now on.
    pub fn publish(&self, manifest: Manifest) {
        *self.manifest.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(manifest);
    }

    /// The segment `header` names, checked, from the cache or its file.
    fn segment(&self, header: &Header) -> Result<Arc<Loaded>, ReadError> {
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.iter().find(|s| s.header == *header).cloned()
        };
        if let Some(loaded) = cached {
            return Ok(loaded);
        }
        let loaded = Arc::new(segment::load(&self.dir, header).map_err(read_error)?);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHED_SEGMENTS {
            cache.pop_front();
        }
        cache.push_back(loaded.clone());
        Ok(loaded)
    }
}

fn read_error(error: SegmentError) -> ReadError {
    ReadError::Archive {
        file: error.file,
        reason: error.reason,
    }
}

/// What a read does with one record (its position and bytes): go on or stop.
pub(crate) type Emit<'e> = dyn FnMut(u64, &[u8]) -> Result<ControlFlow<()>, ReadError> + 'e;

/// The archive as one reader sees it.
pub(crate) struct ArchiveView<'a> {
    archive: &'a Archive,
    pub manifest: Arc<Manifest>,
}

impl ArchiveView<'_> {
    /// Every position up to this one is read from segments.
    pub fn through(&self) -> u64 {
        self.manifest.through()
    }

    /// Call `with` on the archived record at `position`.
    pub fn with_record<T>(
        &self,
        position: u64,
        with: impl FnOnce(&[u8]) -> Result<T, ReadError>,
    ) -> Result<T, ReadError> {
        let header = self
            .manifest
            .holding(position)
            .ok_or_else(|| ReadError::Corrupt {
                position,
                reason: "no archive segment holds it".into(),
            })?;
        let loaded = self.archive.segment(header)?;
        let record = loaded.record(position).ok_or_else(|| ReadError::Corrupt {
            position,
            reason: "missing from its archive segment".into(),
        })?;
        with(record)
    }

    /// Visit the archived records from `from` to `to`, forward or backward, until `emit`
    /// breaks.
    pub fn visit(
        &self,
        from: u64,
        to: u64,
        backward: bool,
        emit: &mut Emit<'_>,
    ) -> Result<ControlFlow<()>, ReadError> {
        let to = to.min(self.through());
        if from > to {
            return Ok(ControlFlow::Continue(()));
        }
        let start = self.manifest.segments.partition_point(|h| h.last < from);
        let end = self.manifest.segments.partition_point(|h| h.first <= to);
        let headers = &self.manifest.segments[start..end];
        let mut visit_one = |header: &Header| -> Result<ControlFlow<()>, ReadError> {
            let loaded = self.archive.segment(header)?;
            let records = loaded
                .from(from)
                .take_while(|(position, _)| *position <= to);
            if backward {
                let records: Vec<_> = records.collect();
                for (position, record) in records.into_iter().rev() {
                    if emit(position, record)?.is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                }
            } else {
                for (position, record) in records {
                    if emit(position, record)?.is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                }
            }
            Ok(ControlFlow::Continue(()))
        };
        if backward {
            for header in headers.iter().rev() {
                if visit_one(header)?.is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
        } else {
            for header in headers {
                if visit_one(header)?.is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Bounds `(low, high)` for a search of the last position recorded at or before `time`
    /// in a log ending at `head`, narrowed by the segments' first and last commit times, so
    /// that the search reads records of one segment at most: every position below `low` is
    /// at or before `time`, every one above `high` after it.
    pub fn narrow(&self, time: u64, head: u64) -> (u64, u64) {
        let segments = &self.manifest.segments;
        // Commit times never go down along the log.
        let done = segments.partition_point(|h| h.last_recorded_at <= time);
        let low = done.checked_sub(1).map_or(1, |i| segments[i].last + 1);
        let high = segments
            .get(done..)
            .and_then(|rest| rest.iter().find(|h| h.first_recorded_at > time))
            .map_or(head, |h| h.first - 1);
        (low, high.max(low.saturating_sub(1)))
    }

    /// The commit time of the archived record at `position`, from the headers when it is a
    /// segment's first or last.
    pub fn recorded_at(&self, position: u64) -> Result<u64, ReadError> {
        if let Some(header) = self.manifest.holding(position) {
            if position == header.first {
                return Ok(header.first_recorded_at);
            }
            if position == header.last {
                return Ok(header.last_recorded_at);
            }
        }
        self.with_record(position, |record| {
            crate::codec::recorded_at(record).ok_or_else(|| ReadError::Corrupt {
                position,
                reason: "record too short".into(),
            })
        })
    }
}
