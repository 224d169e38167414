//! An upcaster candidate against history: every stored event of the types it upcasts goes
//! through the live chain and through the chain with the candidate in its place; the two
//! results are compared.

use std::collections::BTreeSet;

use super::{CheckFailure, SAMPLES, for_each_event, read_failed};
use crate::cluster::plugins::ActivateError;
use crate::upcast::{UpcasterChain, plugin_event};
use eshost_runtime::Event;
use eshost_store::EventStore;

/// One event as the live chain and as the candidate's chain give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpcastSample {
    /// The event's position.
    pub position: u64,
    /// Its stream.
    pub stream_id: String,
    /// (type, schema version, data) through the live chain.
    pub before: (String, u32, String),
    /// The same through the candidate's chain.
    pub after: (String, u32, String),
}

/// What the candidate does to the stored events of the types it upcasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpcasterCheck {
    /// The event types read (those the candidate upcasts).
    pub event_types: Vec<String>,
    /// Events read.
    pub events: u64,
    /// Events the candidate's chain gives as the live chain does.
    pub unchanged: u64,
    /// Events it gives otherwise.
    pub changed: u64,
    /// Events it fails on.
    pub failed: u64,
    /// The first changed events (at most [`SAMPLES`]).
    pub samples: Vec<UpcastSample>,
    /// The first event it failed on.
    pub first_failure: Option<CheckFailure>,
}

/// Runs every stored event of `types` up to `head` through `live` and `candidate` (the
/// chain with the new version of upcaster `name`).
pub(super) fn check(
    name: &str,
    store: &dyn EventStore,
    live: &UpcasterChain,
    candidate: &UpcasterChain,
    types: &BTreeSet<String>,
    head: u64,
) -> Result<UpcasterCheck, ActivateError> {
    let mut report = UpcasterCheck {
        event_types: types.iter().cloned().collect(),
        events: 0,
        unchanged: 0,
        changed: 0,
        failed: 0,
        samples: Vec::new(),
        first_failure: None,
    };
    if types.is_empty() {
        return Ok(report);
    }
    let mut live = live.instantiate();
    let mut candidate = candidate.instantiate();
    let shape = |event: &Event| {
        (
            event.event_type.clone(),
            event.schema_version,
            event.data.clone(),
        )
    };
    for_each_event(store, &report.event_types.clone(), head, &mut |stored| {
        report.events += 1;
        let event = plugin_event(stored, store);
        let mut after = event.clone();
        if let Err(error) = candidate.upcast(&mut after) {
            report.failed += 1;
            report.first_failure.get_or_insert_with(|| CheckFailure {
                position: event.position,
                stream_id: event.stream_id.clone(),
                stream_version: event.stream_version,
                event_type: event.event_type.clone(),
                message: error.to_string(),
            });
            // A trap leaves the candidate's instances unusable: start them again.
            candidate = candidate.fresh();
            return;
        }
        let mut before = event;
        // An event the live chain fails on is compared as stored: the live host cannot read
        // it either, and the candidate may be the fix.
        if live.upcast(&mut before).is_err() {
            live = live.fresh();
        }
        if shape(&before) == shape(&after) {
            report.unchanged += 1;
        } else {
            report.changed += 1;
            if report.samples.len() < SAMPLES {
                report.samples.push(UpcastSample {
                    position: before.position,
                    stream_id: before.stream_id.clone(),
                    before: shape(&before),
                    after: shape(&after),
                });
            }
        }
    })
    .map_err(|e| read_failed(name, e))?;
    Ok(report)
}
