//! Moving the oldest events into sealed segments (see `archive`), beside live appends and
//! the other nodes.
//!
//! One transaction per segment: under an advisory lock (so two nodes never archive at once)
//! it reads the manifest, reads the next events from `events`, checks their hash chain from
//! the last segment's anchor (a corrupt event is refused, never sealed), then inserts the
//! segment row, turns the events' rows slim and records the new manifest, and commits. A
//! crash or a lost connection before the commit leaves nothing behind; after it, everything.
//! Appends never wait for it: they take the log head lock, which an archive does not touch,
//! and insert rows after the head, which an archive never changes.

use std::sync::Arc;

use eshost_store::archive::{ArchiveCut, ArchiveError, Archived, SegmentInfo};
use eshost_store::codec::GENESIS_HASH;
use eshost_store::segment::{self, Header, SEGMENT_BYTES, SEGMENT_EVENTS};
use eshost_store::{ReadError, now_ms};
use tokio_postgres::types::ToSql;

use crate::archive::{self, Manifest, Tier, segment_name};
use crate::error::read_error;
use crate::pool::{Conn, Pool};
use crate::reader::{Stored, position_at, stored_of};
use crate::schema::Sql;
use crate::stage::body_of;
use crate::writer::head_of;

/// Rows read per query while sealing.
const SEAL_PAGE: i64 = 2000;

/// Archive every position before `cut` (and at most up to the head), a segment at a time.
pub(crate) async fn archive(
    pool: &Arc<Pool>,
    sql: &Sql,
    tier: &Tier,
    cut: ArchiveCut,
) -> Result<Archived, ArchiveError> {
    let last = match cut {
        ArchiveCut::BeforePosition(position) => position.saturating_sub(1),
        ArchiveCut::BeforeTime(0) => 0,
        ArchiveCut::BeforeTime(time) => position_at(pool, sql, time - 1).await?,
    };
    let mut conn = pool.get().await.map_err(read_error)?;
    let read_head = conn.statement(&sql.read_head).await.map_err(read_error)?;
    let head = head_of(
        &conn
            .client
            .query_one(&read_head, &[])
            .await
            .map_err(read_error)?,
    );
    let last = last.min(head.position);
    let mut total = Archived {
        events: 0,
        segments: Vec::new(),
        archived_through: archive::through(&archive::read_manifest(&mut conn, sql).await?),
    };
    if total.archived_through >= last {
        return Ok(total);
    }
    relax_payload_columns(&mut conn, sql).await?;
    while total.archived_through < last {
        conn.client
            .batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(read_error)?;
        let sealed = match seal_one(&mut conn, sql, last).await {
            Ok(sealed) => sealed,
            Err(error) => {
                let _ = conn.client.batch_execute("ROLLBACK").await;
                return Err(error);
            }
        };
        conn.client
            .batch_execute("COMMIT")
            .await
            .map_err(read_error)?;
        let Some((header, manifest)) = sealed else {
            break;
        };
        total.events += header.count();
        total.archived_through = header.last;
        total.segments.push(SegmentInfo {
            file: segment_name(&sql.schema, header.first, header.last),
            first_position: header.first,
            last_position: header.last,
            bytes: header.body_bytes,
            raw_bytes: header.raw_bytes,
        });
        tier.publish(manifest);
    }
    Ok(total)
}

/// Stores made before the archive existed keep their payload columns NOT NULL: the first
/// archive lifts that (a brief exclusive lock on `events`).
async fn relax_payload_columns(conn: &mut Conn, sql: &Sql) -> Result<(), ReadError> {
    let not_null: i64 = conn
        .client
        .query_one(&sql.payload_not_null, &[])
        .await
        .map_err(read_error)?
        .get(0);
    if not_null > 0 {
        conn.client
            .batch_execute(&sql.relax_not_null)
            .await
            .map_err(read_error)?;
    }
    Ok(())
}

/// Inside the open transaction: seal the next segment, ending at `last` at most; its header
/// and the new manifest, or `None` when another node archived through `last` meanwhile.
async fn seal_one(
    conn: &mut Conn,
    sql: &Sql,
    last: u64,
) -> Result<Option<(Header, Manifest)>, ArchiveError> {
    let lock = conn
        .statement(&sql.archive_lock)
        .await
        .map_err(read_error)?;
    conn.client.query(&lock, &[]).await.map_err(read_error)?;
    let mut manifest = archive::read_manifest(conn, sql).await?;
    let first = archive::through(&manifest) + 1;
    if first > last {
        return Ok(None);
    }
    let end = last.min(first + SEGMENT_EVENTS as u64 - 1);
    let mut previous = manifest
        .last()
        .map_or(GENESIS_HASH, |header| header.last_hash);
    let (records, next) = read_records(conn, sql, first, end, &mut previous).await?;
    let name = segment_name(&sql.schema, first, next - 1);
    let (header, body) = tokio::task::spawn_blocking(move || segment::seal(first, &records))
        .await
        .map_err(std::io::Error::other)
        .and_then(|sealed| sealed)
        .map_err(|error| ArchiveError::Write {
            file: name.clone().into(),
            reason: error.to_string(),
        })?;
    manifest.push(header);
    let insert = conn
        .statement(&sql.insert_segment)
        .await
        .map_err(read_error)?;
    let slim = conn
        .statement(&sql.archive_events)
        .await
        .map_err(read_error)?;
    let write_manifest = conn
        .statement(&sql.write_manifest)
        .await
        .map_err(read_error)?;
    let number = |value: u64| value as i64;
    let (first_at, last_at, count) = (
        number(header.first_recorded_at),
        number(header.last_recorded_at),
        number(header.count()),
    );
    let (raw, compressed, now) = (
        number(header.raw_bytes),
        number(header.body_bytes),
        now_ms() as i64,
    );
    let (from, to) = (number(header.first), number(header.last));
    let segment_params: [&(dyn ToSql + Sync); 11] = [
        &from,
        &to,
        &first_at,
        &last_at,
        &header.last_hash.as_slice(),
        &header.checksum.as_slice(),
        &count,
        &raw,
        &compressed,
        &body,
        &now,
    ];
    conn.client
        .execute(&insert, &segment_params)
        .await
        .map_err(read_error)?;
    let slimmed = conn
        .client
        .execute(&slim, &[&from, &to])
        .await
        .map_err(read_error)?;
    if slimmed != header.count() {
        return Err(ReadError::Storage(format!(
            "postgres: archiving {name}: {slimmed} rows of {}.events changed, not {}",
            sql.schema,
            header.count()
        ))
        .into());
    }
    conn.client
        .execute(&write_manifest, &[&archive::encode(&manifest)])
        .await
        .map_err(read_error)?;
    conn.client
        .batch_execute(&sql.write_archived_format)
        .await
        .map_err(read_error)?;
    Ok(Some((header, manifest)))
}

/// The records of positions `first..=end` (stopping early at the segment's byte limit),
/// each checked to chain from `previous`; and the position after the last.
async fn read_records(
    conn: &mut Conn,
    sql: &Sql,
    first: u64,
    end: u64,
    previous: &mut [u8; 32],
) -> Result<(Vec<Vec<u8>>, u64), ArchiveError> {
    let page = conn.statement(&sql.verify_page).await.map_err(read_error)?;
    let (mut records, mut bytes, mut next) = (Vec::new(), 0usize, first);
    let missing = |position: u64| ReadError::Corrupt {
        position,
        reason: format!("missing from {}.events while archiving", sql.schema),
    };
    while next <= end && bytes < SEGMENT_BYTES {
        let rows = conn
            .client
            .query(&page, &[&(next as i64), &(end as i64), &SEAL_PAGE])
            .await
            .map_err(read_error)?;
        if rows.is_empty() {
            return Err(missing(next).into());
        }
        for row in &rows {
            let event = match stored_of(row)? {
                Stored::Hot(event) => event,
                Stored::Archived(slim) => {
                    return Err(ReadError::Corrupt {
                        position: slim.position,
                        reason: "its row is archived, but the archive's manifest ends before it"
                            .into(),
                    }
                    .into());
                }
            };
            if event.position != next {
                return Err(missing(next).into());
            }
            let mut record = Vec::new();
            if body_of(&event).encode_into(next, previous, &mut record) != event.hash {
                return Err(ReadError::Corrupt {
                    position: next,
                    reason: "its hash does not match its content and predecessor (see \
                             `eshost verify`); nothing was archived from it on"
                        .into(),
                }
                .into());
            }
            *previous = event.hash;
            bytes += record.len() + 4;
            records.push(record);
            next += 1;
            if bytes >= SEGMENT_BYTES {
                break;
            }
        }
    }
    Ok((records, next))
}
