//! Re-check the log: positions gap-free, stream versions contiguous, the hash chain intact.

use std::collections::HashMap;

use redb::{ReadTransaction, TableError};

use super::schema::{EVENTS, Head, META, META_HEAD};
use crate::codec::{self, GENESIS_HASH};
use crate::error::ReadError;
use crate::report::{BadRecord, VerifyReport};

/// Walk the whole log once.
pub fn verify(txn: &ReadTransaction) -> Result<VerifyReport, ReadError> {
    let head = match txn.open_table(META) {
        Ok(meta) => match meta.get(META_HEAD)? {
            Some(bytes) => Head::decode(bytes.value()).ok_or_else(|| ReadError::Corrupt {
                position: 0,
                reason: "the head record is malformed".into(),
            })?,
            None => Head::EMPTY,
        },
        Err(TableError::TableDoesNotExist(_)) => Head::EMPTY,
        Err(error) => return Err(error.into()),
    };
    let mut report = VerifyReport {
        events_checked: 0,
        head: head.position,
        first_bad: None,
    };
    let bad = |report: &mut VerifyReport, position, reason: String| {
        report.first_bad = Some(BadRecord { position, reason });
    };
    let events = match txn.open_table(EVENTS) {
        Ok(table) => Some(table),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(error) => return Err(error.into()),
    };
    let mut previous = GENESIS_HASH;
    let mut expected_position = 1;
    let mut stream_versions: HashMap<String, u64> = HashMap::new();
    if let Some(events) = events {
        for entry in events.range(0u64..)? {
            let (key, value) = entry?;
            let position = key.value();
            if position != expected_position {
                bad(
                    &mut report,
                    expected_position,
                    format!("missing; the next stored position is {position}"),
                );
                return Ok(report);
            }
            let decoded = match codec::decode(position, value.value()) {
                Ok(decoded) => decoded,
                Err(reason) => {
                    bad(&mut report, position, reason);
                    return Ok(report);
                }
            };
            if codec::chain_hash(&previous, position, decoded.body_bytes) != decoded.event.hash {
                bad(
                    &mut report,
                    position,
                    "hash does not match its content and predecessor".into(),
                );
                return Ok(report);
            }
            let event = decoded.event;
            let version = stream_versions
                .entry(event.stream_id.to_owned())
                .or_insert(0);
            if event.stream_version != *version + 1 {
                bad(
                    &mut report,
                    position,
                    format!(
                        "stream {:?} jumps from version {} to {}",
                        event.stream_id, version, event.stream_version
                    ),
                );
                return Ok(report);
            }
            *version += 1;
            previous = event.hash;
            expected_position += 1;
            report.events_checked += 1;
        }
    }
    let checked = report.events_checked;
    if checked != head.position || previous != head.hash {
        bad(
            &mut report,
            checked + 1,
            format!(
                "the log ends at position {checked} but the head says {}",
                head.position
            ),
        );
    }
    Ok(report)
}
