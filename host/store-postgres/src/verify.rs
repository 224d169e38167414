//! Re-check the log in pages: positions gap-free from 1, stream versions contiguous, every
//! hash recomputed from the columns with the shared record encoding (so a PostgreSQL log and
//! a redb log of the same events have the same hashes). Archived events are checked as their
//! segments hold them, so the chain runs through the segments into the hot rows.

use std::collections::HashMap;
use std::sync::Arc;

use eshost_store::codec::GENESIS_HASH;
use eshost_store::{BadRecord, ReadError, VerifyReport};

use crate::archive::Tier;
use crate::error::read_error;
use crate::pool::Pool;
use crate::reader::{Stored, stored_of};
use crate::schema::Sql;
use crate::stage::body_of;
use crate::writer::head_of;

const VERIFY_PAGE: i64 = 2000;

/// Walk the log up to the head read first (later commits are left for the next run).
pub(crate) async fn verify(
    pool: &Arc<Pool>,
    sql: &Sql,
    tier: &Tier,
) -> Result<VerifyReport, ReadError> {
    let mut conn = pool.get().await.map_err(read_error)?;
    let read_head = conn.statement(&sql.read_head).await.map_err(read_error)?;
    let page = conn.statement(&sql.verify_page).await.map_err(read_error)?;
    let head = head_of(
        &conn
            .client
            .query_one(&read_head, &[])
            .await
            .map_err(read_error)?,
    );
    let mut report = VerifyReport {
        events_checked: 0,
        head: head.position,
        first_bad: None,
    };
    let mut previous = GENESIS_HASH;
    let mut expected = 1u64;
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut buffer = Vec::new();
    while expected <= head.position {
        let rows = conn
            .client
            .query(
                &page,
                &[&(expected as i64), &(head.position as i64), &VERIFY_PAGE],
            )
            .await
            .map_err(read_error)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            // An archived event is checked as its segment holds it; a segment that is
            // missing or altered is an error naming it.
            let event = match stored_of(row) {
                Ok(Stored::Hot(event)) => event,
                Ok(Stored::Archived(slim)) => match tier.archived(&mut conn, &slim).await {
                    Ok(event) => event,
                    Err(ReadError::Corrupt { position, reason }) => {
                        return Ok(bad(report, position, reason));
                    }
                    Err(error) => return Err(error),
                },
                Err(error) => return Ok(bad(report, expected, error.to_string())),
            };
            if event.position != expected {
                return Ok(bad(
                    report,
                    expected,
                    format!("missing; the next stored position is {}", event.position),
                ));
            }
            buffer.clear();
            if body_of(&event).encode_into(event.position, &previous, &mut buffer) != event.hash {
                return Ok(bad(
                    report,
                    event.position,
                    "hash does not match its content and predecessor".into(),
                ));
            }
            let version = versions.entry(event.stream_id.clone()).or_insert(0);
            if event.stream_version != *version + 1 {
                let reason = format!(
                    "stream {:?} jumps from version {} to {}",
                    event.stream_id, version, event.stream_version
                );
                return Ok(bad(report, event.position, reason));
            }
            *version += 1;
            previous = event.hash;
            expected += 1;
            report.events_checked += 1;
        }
    }
    let checked = report.events_checked;
    if checked != head.position || previous != head.hash {
        let reason = format!(
            "the log ends at position {checked} but the head says {}",
            head.position
        );
        return Ok(bad(report, checked + 1, reason));
    }
    Ok(report)
}

fn bad(mut report: VerifyReport, position: u64, reason: String) -> VerifyReport {
    report.first_bad = Some(BadRecord { position, reason });
    report
}
