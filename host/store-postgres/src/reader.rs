//! Reads: pages of events by position or stream version, each page one query on a pooled
//! connection. Every page sees what was committed when it ran; as positions commit in order,
//! a forward read never finds a gap that fills in later. Archived events come back as slim
//! rows, read from their segments (`archive`).

use std::sync::Arc;

use eshost_store::{AllRead, Direction, ReadError, RecordedEvent, StreamInfo, StreamRead, Until};
use tokio_postgres::Row;

use crate::archive::Tier;
use crate::error::read_error;
use crate::pool::Pool;
use crate::schema::Sql;
use crate::writer::stream_row_of;

/// Events per page: enough to amortise a round trip, few enough to bound memory.
pub(crate) const PAGE: usize = 500;

/// A row of `events`: a hot event, whole, or the slim row an archived event keeps (its
/// payload is in a segment; see `archive`).
#[derive(Debug)]
pub(crate) enum Stored {
    Hot(RecordedEvent),
    Archived(Slim),
}

/// What the slim row of an archived event holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slim {
    pub position: u64,
    pub stream_id: String,
    pub stream_version: u64,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub recorded_at: u64,
}

impl Slim {
    /// Whether `event` (read from its segment) is the one this row indexes.
    pub fn indexes(&self, event: &RecordedEvent) -> bool {
        self.position == event.position
            && self.stream_id == event.stream_id
            && self.stream_version == event.stream_version
            && self.event_id == event.event_id
            && self.event_type == event.event_type
            && self.schema_version == event.schema_version
            && self.recorded_at == event.recorded_at
    }
}

/// A row of the columns `schema::EVENT_COLUMNS` lists; archived when its `data` is NULL.
pub(crate) fn stored_of(row: &Row) -> Result<Stored, ReadError> {
    let position = row.get::<_, i64>(0) as u64;
    let schema_version = u32::try_from(row.get::<_, i64>(5)).map_err(|_| ReadError::Corrupt {
        position,
        reason: "its schema version is out of range".into(),
    })?;
    let slim = Slim {
        position,
        stream_id: row.get(1),
        stream_version: row.get::<_, i64>(2) as u64,
        event_id: row.get(3),
        event_type: row.get(4),
        schema_version,
        recorded_at: row.get::<_, i64>(6) as u64,
    };
    let (Some(data), Some(metadata), Some(hash)) = (
        row.get::<_, Option<String>>(7),
        row.get::<_, Option<String>>(8),
        row.get::<_, Option<&[u8]>>(11),
    ) else {
        return Ok(Stored::Archived(slim));
    };
    let hash = hash.try_into().map_err(|_| ReadError::Corrupt {
        position,
        reason: format!("its hash is {} bytes, not 32", hash.len()),
    })?;
    Ok(Stored::Hot(RecordedEvent {
        position,
        stream_id: slim.stream_id,
        stream_version: slim.stream_version,
        event_id: slim.event_id,
        event_type: slim.event_type,
        schema_version,
        recorded_at: slim.recorded_at,
        data,
        metadata,
        subject_id: row.get(9),
        personal_data: None,
        shredded: false,
        sealed: row.get(10),
        hash,
    }))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Where a read stands between pages.
#[derive(Debug, Clone)]
pub(crate) enum Cursor {
    All { next: u64, max_position: u64 },
    Stream { next: u64, max_position: u64 },
    Done,
}

impl Cursor {
    pub fn is_done(&self) -> bool {
        matches!(self, Cursor::Done)
    }
}

/// The highest position a read may return under `until`.
pub(crate) async fn position_bound(
    pool: &Arc<Pool>,
    sql: &Sql,
    until: Option<Until>,
) -> Result<u64, ReadError> {
    match until {
        None => Ok(u64::MAX),
        Some(Until::Position(position)) => Ok(position),
        Some(Until::Time(time)) => position_at(pool, sql, time).await,
    }
}

/// The last position recorded at or before `time` (0 when none is).
pub(crate) async fn position_at(pool: &Arc<Pool>, sql: &Sql, time: u64) -> Result<u64, ReadError> {
    let mut conn = pool.get().await.map_err(read_error)?;
    let statement = conn.statement(&sql.position_at).await.map_err(read_error)?;
    let row = conn
        .client
        .query_one(&statement, &[&to_i64(time)])
        .await
        .map_err(read_error)?;
    Ok(row.get::<_, Option<i64>>(0).unwrap_or(0).max(0) as u64)
}

/// The next page of `$all`, at most `want` events, and where the read stands after it.
pub(crate) async fn all_page(
    pool: &Arc<Pool>,
    sql: &Sql,
    tier: &Tier,
    read: &AllRead,
    cursor: Cursor,
    want: usize,
) -> Result<(Vec<RecordedEvent>, Cursor), ReadError> {
    let Cursor::All { next, max_position } = cursor else {
        return Ok((Vec::new(), Cursor::Done));
    };
    let page = want.min(PAGE);
    let mut conn = pool.get().await.map_err(read_error)?;
    let (text, first) = match read.direction {
        Direction::Forward => (&sql.all_forward, next),
        Direction::Backward => (&sql.all_backward, next),
    };
    let statement = conn.statement(text).await.map_err(read_error)?;
    let rows = conn
        .client
        .query(
            &statement,
            &[
                &to_i64(first),
                &to_i64(max_position),
                &read.event_types,
                &(page as i64),
            ],
        )
        .await
        .map_err(read_error)?;
    let events = tier.events(&mut conn, &rows).await?;
    let cursor = match (events.last(), read.direction) {
        (Some(last), _) if events.len() == page => match read.direction {
            Direction::Forward => Cursor::All {
                next: last.position + 1,
                max_position,
            },
            Direction::Backward if last.position > 1 => Cursor::All {
                next: last.position - 1,
                max_position,
            },
            Direction::Backward => Cursor::Done,
        },
        _ => Cursor::Done,
    };
    Ok((events, cursor))
}

/// The next page of a stream, at most `want` events, and where the read stands after it.
pub(crate) async fn stream_page(
    pool: &Arc<Pool>,
    sql: &Sql,
    tier: &Tier,
    stream: &str,
    read: &StreamRead,
    cursor: Cursor,
    want: usize,
) -> Result<(Vec<RecordedEvent>, Cursor), ReadError> {
    let Cursor::Stream { next, max_position } = cursor else {
        return Ok((Vec::new(), Cursor::Done));
    };
    let page = want.min(PAGE);
    let mut conn = pool.get().await.map_err(read_error)?;
    let text = match read.direction {
        Direction::Forward => &sql.stream_forward,
        Direction::Backward => &sql.stream_backward,
    };
    let statement = conn.statement(text).await.map_err(read_error)?;
    let rows = conn
        .client
        .query(
            &statement,
            &[
                &stream,
                &to_i64(next),
                &to_i64(max_position),
                &(page as i64),
            ],
        )
        .await
        .map_err(read_error)?;
    let events = tier.events(&mut conn, &rows).await?;
    let cursor = match events.last() {
        Some(last) if events.len() == page => match read.direction {
            Direction::Forward => Cursor::Stream {
                next: last.stream_version + 1,
                max_position,
            },
            Direction::Backward if last.stream_version > 1 => Cursor::Stream {
                next: last.stream_version - 1,
                max_position,
            },
            Direction::Backward => Cursor::Done,
        },
        _ => Cursor::Done,
    };
    Ok((events, cursor))
}

pub(crate) fn stream_info_of(row: &Row) -> (String, StreamInfo) {
    let stream = stream_row_of(row, 1);
    (
        row.get(0),
        StreamInfo {
            version: stream.version,
            first_position: stream.first_position,
            last_position: stream.last_position,
            created_at: stream.created_at,
            updated_at: stream.updated_at,
        },
    )
}

/// What the store knows about one stream.
pub(crate) async fn stream_info(
    pool: &Arc<Pool>,
    sql: &Sql,
    stream: &str,
) -> Result<Option<StreamInfo>, ReadError> {
    let mut conn = pool.get().await.map_err(read_error)?;
    let statement = conn.statement(&sql.stream_info).await.map_err(read_error)?;
    let row = conn
        .client
        .query_opt(&statement, &[&stream])
        .await
        .map_err(read_error)?;
    Ok(row.as_ref().map(|row| stream_info_of(row).1))
}

/// Streams whose id starts with `prefix`, in byte order, after `after`.
pub(crate) async fn streams(
    pool: &Arc<Pool>,
    sql: &Sql,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, StreamInfo)>, ReadError> {
    let mut conn = pool.get().await.map_err(read_error)?;
    let statement = conn
        .statement(&sql.streams_from)
        .await
        .map_err(read_error)?;
    let mut found = Vec::new();
    let mut after = after.unwrap_or("").to_owned();
    while found.len() < limit {
        let page = (limit - found.len()).min(PAGE);
        let rows = conn
            .client
            .query(&statement, &[&prefix, &after, &(page as i64)])
            .await
            .map_err(read_error)?;
        let fetched = rows.len();
        for row in &rows {
            let (id, info) = stream_info_of(row);
            if !id.starts_with(prefix) {
                return Ok(found);
            }
            after.clone_from(&id);
            found.push((id, info));
        }
        if fetched < page {
            break;
        }
    }
    Ok(found)
}
