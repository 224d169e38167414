//! Re-check the log: positions gap-free, stream versions contiguous, the hash chain intact.

use std::collections::HashMap;

use std::ops::ControlFlow;

use redb::TableError;

use super::reader::Tiers;
use super::schema::{EVENTS, Head};
use super::tail::TailView;
use crate::codec::{self, GENESIS_HASH};
use crate::error::ReadError;
use crate::report::{BadRecord, VerifyReport};

/// Walk the whole log once: the archive's segments (each read back and checked against its
/// sealed header), then positions up to `base` in redb, then the tail, to `head`. A segment
/// that is missing or altered is an error naming its file.
pub fn verify(tiers: &Tiers<'_>, tail: &TailView, head: Head) -> Result<VerifyReport, ReadError> {
    let mut report = VerifyReport {
        events_checked: 0,
        head: head.position,
        first_bad: None,
    };
    let bad = |report: &mut VerifyReport, position, reason: String| {
        report.first_bad = Some(BadRecord { position, reason });
    };
    let (base, through) = (tiers.base, tiers.archived.through());
    let events = match tiers.txn.open_table(EVENTS) {
        Ok(table) => Some(table),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(error) => return Err(error.into()),
    };
    let mut check = Check {
        previous: GENESIS_HASH,
        expected_position: 1,
        stream_versions: HashMap::new(),
    };
    let mut failed = None;
    // Breaks only at a bad record, which `failed` holds.
    let _ = tiers
        .archived
        .visit(1, through, false, &mut |position, record| {
            if let Err(found) = check.next(position, record) {
                failed = Some(found);
                return Ok(ControlFlow::Break(()));
            }
            report.events_checked += 1;
            Ok(ControlFlow::Continue(()))
        })?;
    if let Some((position, reason)) = failed {
        bad(&mut report, position, reason);
        return Ok(report);
    }
    if let Some(events) = events
        && through < base
    {
        for entry in events.range(through + 1..=base)? {
            let (key, value) = entry?;
            if let Err((position, reason)) = check.next(key.value(), value.value()) {
                bad(&mut report, position, reason);
                return Ok(report);
            }
            report.events_checked += 1;
        }
    }
    for (position, record) in tail.from(base + 1) {
        if let Err((position, reason)) = check.next(position, record) {
            bad(&mut report, position, reason);
            return Ok(report);
        }
        report.events_checked += 1;
    }
    let previous = check.previous;
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

/// The chain and the stream versions so far.
struct Check {
    previous: [u8; 32],
    expected_position: u64,
    stream_versions: HashMap<String, u64>,
}

impl Check {
    /// Check the record stored at `position`; the error is where and what is wrong.
    fn next(&mut self, position: u64, record: &[u8]) -> Result<(), (u64, String)> {
        if position != self.expected_position {
            return Err((
                self.expected_position,
                format!("missing; the next stored position is {position}"),
            ));
        }
        let decoded = codec::decode(position, record).map_err(|reason| (position, reason))?;
        if codec::chain_hash(&self.previous, position, decoded.body_bytes) != decoded.event.hash {
            return Err((
                position,
                "hash does not match its content and predecessor".into(),
            ));
        }
        let event = decoded.event;
        let version = self
            .stream_versions
            .entry(event.stream_id.to_owned())
            .or_insert(0);
        if event.stream_version != *version + 1 {
            return Err((
                position,
                format!(
                    "stream {:?} jumps from version {} to {}",
                    event.stream_id, version, event.stream_version
                ),
            ));
        }
        *version += 1;
        self.previous = event.hash;
        self.expected_position += 1;
        Ok(())
    }
}
