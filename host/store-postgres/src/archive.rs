//! The archive tier of a PostgreSQL store: sealed segments kept in the database, since the
//! nodes sharing a store share nothing else.
//!
//! A segment is a row of `segments`: the header of the embedded backend's segment format
//! (`eshost_store::segment`) as columns, and its body (the records, each exactly the bytes
//! the embedded store keeps and the hash chain covers, compressed with zstd) as `bytea`. The
//! manifest, a copy of every segment's header, is the `meta` row `archive`; a segment row
//! that is missing or whose columns or body differ from it is an error naming the segment,
//! `postgres:<schema>.segments/<first>-<last>`.
//!
//! An archived event keeps a slim row in `events`, its payload columns (`data`, `metadata`,
//! `subject_id`, `sealed`, `hash`) NULL: every query that finds events by position, stream
//! version, id, type or time runs as before, and every uniqueness constraint still holds over
//! archived events. Reads turn slim rows into events from their segments (`Tier::events`).
//! The archiver writes the segment, the manifest and the slim rows in one transaction, so a
//! statement that sees a slim row always finds its segment.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};

use eshost_store::segment::{self, HEADER_LEN, Header, Loaded, SEGMENT_BYTES};
use eshost_store::{ReadError, RecordedEvent, codec};
use tokio_postgres::Row;

use crate::error::read_error;
use crate::pool::Conn;
use crate::reader::{Slim, Stored, stored_of};
use crate::schema::Sql;

/// How many uncompressed bytes of checked segments stay in memory for readers: four full
/// segments, or many small ones (a frequent schedule seals small segments, and a read across
/// them must not fetch each again for every row).
const CACHED_BYTES: u64 = 4 * SEGMENT_BYTES as u64;
/// The most segments cached, however small.
const CACHED_SEGMENTS: usize = 256;

/// The stable name of the segment holding `first..=last` in `schema`.
pub(crate) fn segment_name(schema: &str, first: u64, last: u64) -> String {
    format!("postgres:{schema}.segments/{first}-{last}")
}

/// The sealed segments, in position order, consecutive from position 1.
pub(crate) type Manifest = Vec<Header>;

/// Every position up to this one is archived (0: none).
pub(crate) fn through(manifest: &Manifest) -> u64 {
    manifest.last().map_or(0, |header| header.last)
}

/// The stored form of a manifest: the headers, one after another.
pub(crate) fn encode(manifest: &Manifest) -> Vec<u8> {
    manifest.iter().flat_map(Header::encode).collect()
}

/// Read the stored form; `None` if it is malformed or not consecutive.
fn decode(bytes: &[u8]) -> Option<Manifest> {
    if !bytes.len().is_multiple_of(HEADER_LEN) {
        return None;
    }
    let manifest = bytes
        .chunks(HEADER_LEN)
        .map(Header::decode)
        .collect::<Option<Manifest>>()?;
    let mut next = 1;
    for header in &manifest {
        if header.first != next || header.last < header.first {
            return None;
        }
        next = header.last + 1;
    }
    Some(manifest)
}

/// The manifest as the `meta` row holds it now (empty before the first archive).
pub(crate) async fn read_manifest(conn: &mut Conn, sql: &Sql) -> Result<Manifest, ReadError> {
    let statement = conn
        .statement(&sql.read_manifest)
        .await
        .map_err(read_error)?;
    let row = conn
        .client
        .query_opt(&statement, &[])
        .await
        .map_err(read_error)?;
    match row {
        None => Ok(Manifest::new()),
        Some(row) => decode(row.get(0)).ok_or_else(|| {
            ReadError::Storage(format!(
                "postgres: the archive's manifest (row 'archive' of {}.meta) is malformed",
                sql.schema
            ))
        }),
    }
}

/// One store's view of its archive: the manifest last read and the segments read back last.
#[derive(Debug)]
pub(crate) struct Tier {
    sql: Arc<Sql>,
    manifest: RwLock<Arc<Manifest>>,
    cache: Mutex<VecDeque<Arc<Loaded>>>,
}

impl Tier {
    pub fn new(sql: Arc<Sql>) -> Tier {
        Tier {
            sql,
            manifest: RwLock::new(Arc::new(Manifest::new())),
            cache: Mutex::new(VecDeque::new()),
        }
    }

    /// The name of the segment `header` describes.
    pub fn name(&self, header: &Header) -> String {
        segment_name(&self.sql.schema, header.first, header.last)
    }

    /// Remember `manifest` (a newer one than any read before: archives only add segments).
    pub fn publish(&self, manifest: Manifest) {
        let mut current = self.manifest.write().unwrap_or_else(|e| e.into_inner());
        if through(&manifest) >= through(&current) {
            *current = Arc::new(manifest);
        }
    }

    /// The events of `rows` (columns as `schema::EVENT_COLUMNS` lists), archived ones read
    /// from their segments.
    pub async fn events(
        &self,
        conn: &mut Conn,
        rows: &[Row],
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            events.push(match stored_of(row)? {
                Stored::Hot(event) => event,
                Stored::Archived(slim) => self.archived(conn, &slim).await?,
            });
        }
        Ok(events)
    }

    /// The event whose slim row is `slim`, from its segment.
    pub async fn archived(&self, conn: &mut Conn, slim: &Slim) -> Result<RecordedEvent, ReadError> {
        let position = slim.position;
        let header = self.holding(conn, position).await?;
        let loaded = self.segment(conn, &header).await?;
        let corrupt = |reason: String| ReadError::Archive {
            file: self.name(&header).into(),
            reason,
        };
        let record = loaded
            .record(position)
            .ok_or_else(|| corrupt(format!("does not hold position {position}")))?;
        let event = codec::decode(position, record)
            .map_err(|reason| corrupt(format!("holds a malformed record at {position}: {reason}")))?
            .event
            .to_owned();
        if !slim.indexes(&event) {
            return Err(ReadError::Corrupt {
                position,
                reason: format!(
                    "its row in {}.events differs from its record in archive segment {}",
                    self.sql.schema,
                    self.name(&header)
                ),
            });
        }
        Ok(event)
    }

    /// The header of the segment holding `position`, re-reading the manifest when the one
    /// remembered ends before it (an archive since).
    async fn holding(&self, conn: &mut Conn, position: u64) -> Result<Header, ReadError> {
        let mut manifest = self
            .manifest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if through(&manifest) < position {
            self.publish(read_manifest(conn, &self.sql).await?);
            manifest = self
                .manifest
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
        }
        let index = manifest.partition_point(|header| header.last < position);
        manifest
            .get(index)
            .filter(|header| header.first <= position)
            .copied()
            .ok_or_else(|| ReadError::Corrupt {
                position,
                reason: format!(
                    "its row in {}.events is archived, but no archive segment holds it",
                    self.sql.schema
                ),
            })
    }

    /// The segment `header` describes, checked, from the cache or its row.
    async fn segment(&self, conn: &mut Conn, header: &Header) -> Result<Arc<Loaded>, ReadError> {
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            // Most rows of a read fall in the segment the row before fell in.
            cache.iter().rev().find(|s| s.header == *header).cloned()
        };
        if let Some(loaded) = cached {
            return Ok(loaded);
        }
        let loaded = Arc::new(self.load(conn, header).await?);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut bytes: u64 = cache.iter().map(|s| s.header.raw_bytes).sum();
        while cache.len() >= CACHED_SEGMENTS
            || (!cache.is_empty() && bytes + header.raw_bytes > CACHED_BYTES)
        {
            bytes -= cache.pop_front().map_or(0, |s| s.header.raw_bytes);
        }
        cache.push_back(loaded.clone());
        Ok(loaded)
    }

    /// Read the segment `expected` names and check it against `expected` (the manifest's
    /// copy of its header): its columns, then its body (see `segment::open`).
    async fn load(&self, conn: &mut Conn, expected: &Header) -> Result<Loaded, ReadError> {
        let fail = |reason: String| ReadError::Archive {
            file: self.name(expected).into(),
            reason,
        };
        let statement = conn
            .statement(&self.sql.segment_row)
            .await
            .map_err(read_error)?;
        let row = conn
            .client
            .query_opt(&statement, &[&(expected.first as i64)])
            .await
            .map_err(read_error)?
            .ok_or_else(|| fail("is missing".into()))?;
        let number = |index: usize| row.get::<_, i64>(index) as u64;
        let hash = |index: usize| row.get::<_, &[u8]>(index).try_into().unwrap_or([0; 32]);
        let found = Header {
            first: number(0),
            last: number(1),
            first_recorded_at: number(2),
            last_recorded_at: number(3),
            last_hash: hash(4),
            checksum: hash(5),
            raw_bytes: number(7),
            body_bytes: number(8),
        };
        if found != *expected || number(6) != expected.count() {
            return Err(fail("has columns that differ from the manifest's".into()));
        }
        segment::open(expected, row.get(9)).map_err(fail)
    }
}
