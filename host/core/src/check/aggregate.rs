//! An aggregate candidate against history: every stream of its type is rebuilt under the
//! candidate beside the live version, and the two states compared. A stream that differs or
//! fails is then walked event by event (for the first few only) to find where.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use serde_json::Value;

use super::{CheckFailure, SAMPLES, for_each_event, read_failed};
use crate::aggregate::rebuild::{self, At, StateError};
use crate::cluster::plugins::ActivateError;
use crate::upcast::{UpcasterChain, Upcasting, plugin_event};
use eshost_runtime::{AggregateInstance, AggregatePlugin, ApplyError};
use eshost_store::{EventStore, StreamRead};

/// Events applied per call while rebuilding.
const BATCH: usize = 256;

/// Where a stream's state under the candidate first differs from the live one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDifference {
    /// The stream (aggregate id).
    pub stream_id: String,
    /// The version of the first event after which the states differ.
    pub stream_version: u64,
    /// Its position.
    pub position: u64,
    /// The live version's state after it (JSON).
    pub live: String,
    /// The candidate's (JSON).
    pub candidate: String,
}

/// What the candidate makes of every stream of its aggregate type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateCheck {
    /// Streams of the type (those with an event the command pipeline wrote for it).
    pub streams: u64,
    /// Streams whose state is the same under both.
    pub same: u64,
    /// Streams whose state differs.
    pub differing: u64,
    /// Streams the candidate fails to rebuild.
    pub failed: u64,
    /// Streams the live version fails to rebuild (not compared).
    pub live_failed: u64,
    /// The first differing streams (at most [`SAMPLES`]), each at its first differing event.
    pub differences: Vec<StateDifference>,
    /// The first failing streams (at most [`SAMPLES`]), each at the event it fails on.
    pub failures: Vec<CheckFailure>,
}

/// The two versions side by side.
struct Pair<'a> {
    store: &'a dyn EventStore,
    aggregate_type: &'a str,
    live_plugin: &'a AggregatePlugin,
    candidate_plugin: &'a AggregatePlugin,
    live: AggregateInstance,
    candidate: AggregateInstance,
    upcasting: Upcasting,
}

/// Rebuilds every stream of `live`'s type up to `head` under `live` and `candidate`.
pub(super) fn check(
    store: &dyn EventStore,
    upcasters: &UpcasterChain,
    live: &AggregatePlugin,
    candidate: &AggregatePlugin,
    head: u64,
) -> Result<AggregateCheck, ActivateError> {
    let name = live.info().name.as_str();
    let plugin_error = |e: eshost_runtime::PluginError| ActivateError::BadPlugin(e.to_string());
    let streams = streams_of(store, name, head).map_err(|e| read_failed(name, e))?;
    let mut pair = Pair {
        store,
        aggregate_type: name,
        live_plugin: live,
        candidate_plugin: candidate,
        live: live.instantiate().map_err(plugin_error)?,
        candidate: candidate.instantiate().map_err(plugin_error)?,
        upcasting: upcasters.instantiate(),
    };
    let mut report = AggregateCheck {
        streams: streams.len() as u64,
        same: 0,
        differing: 0,
        failed: 0,
        live_failed: 0,
        differences: Vec::new(),
        failures: Vec::new(),
    };
    for (id, version) in &streams {
        let at = At::Version(*version);
        let live_state = pair.build(Side::Live, id, at);
        let candidate_state = pair.build(Side::Candidate, id, at);
        match (live_state, candidate_state) {
            (_, Err(error)) => {
                report.failed += 1;
                if report.failures.len() < SAMPLES {
                    let failure = match pair.walk(id, *version)? {
                        Some(Divergence::Failed(failure)) => failure,
                        _ => unlocated(id, &error),
                    };
                    report.failures.push(failure);
                }
            }
            (Err(_), Ok(_)) => report.live_failed += 1,
            (Ok(live), Ok(candidate)) if same_json(&live, &candidate) => report.same += 1,
            (Ok(live), Ok(candidate)) => {
                report.differing += 1;
                if report.differences.len() < SAMPLES {
                    let difference = match pair.walk(id, *version)? {
                        Some(Divergence::Differs(difference)) => difference,
                        _ => StateDifference {
                            stream_id: id.clone(),
                            stream_version: *version,
                            position: 0,
                            live,
                            candidate,
                        },
                    };
                    report.differences.push(difference);
                }
            }
        }
    }
    Ok(report)
}

#[derive(Clone, Copy)]
enum Side {
    Live,
    Candidate,
}

enum Divergence {
    Failed(CheckFailure),
    Differs(StateDifference),
}

impl Pair<'_> {
    fn instance(&mut self, side: Side) -> &mut AggregateInstance {
        match side {
            Side::Live => &mut self.live,
            Side::Candidate => &mut self.candidate,
        }
    }

    /// After a trap the instance is gone: a new one.
    fn renew(&mut self, side: Side) -> Result<(), ActivateError> {
        let plugin = match side {
            Side::Live => self.live_plugin,
            Side::Candidate => self.candidate_plugin,
        };
        *self.instance(side) = plugin
            .instantiate()
            .map_err(|e| ActivateError::BadPlugin(e.to_string()))?;
        Ok(())
    }

    /// The state of stream `id` as of `at` under one side, as JSON.
    fn build(&mut self, side: Side, id: &str, at: At) -> Result<String, StateError> {
        let (store, aggregate_type) = (self.store, self.aggregate_type);
        let upcasting = &mut self.upcasting;
        let instance = match side {
            Side::Live => &mut self.live,
            Side::Candidate => &mut self.candidate,
        };
        let built = rebuild::build(
            instance,
            upcasting,
            store,
            None,
            aggregate_type,
            id,
            at,
            BATCH,
        )
        .and_then(|_| instance.state().map_err(StateError::from));
        if built.is_err() {
            // Whatever failed, start both sides and the upcasters afresh.
            self.upcasting = self.upcasting.fresh();
            if self.renew(side).is_err() {
                tracing::warn!(aggregate_type, "cannot renew an instance during a check");
            }
        }
        built
    }

    /// Applies the stream's events one at a time to both sides, up to `version`, comparing
    /// the states after each: the first event the candidate fails on, or after which the
    /// states differ.
    fn walk(&mut self, id: &str, version: u64) -> Result<Option<Divergence>, ActivateError> {
        let renewed = self
            .renew(Side::Live)
            .and_then(|()| self.renew(Side::Candidate));
        renewed?;
        self.upcasting = self.upcasting.fresh();
        let fail = |e: eshost_runtime::PluginError| ActivateError::BadPlugin(e.to_string());
        self.live.new(id).map_err(fail)?;
        self.candidate.new(id).map_err(fail)?;
        let mut read = StreamRead::forward();
        read.limit = usize::try_from(version).unwrap_or(usize::MAX);
        let mut found = None;
        let store = self.store;
        store
            .visit_stream(id, &read, &mut |stored| {
                let event = plugin_event(&stored, store);
                let at = |message: String| CheckFailure {
                    position: event.position,
                    stream_id: event.stream_id.clone(),
                    stream_version: event.stream_version,
                    event_type: event.event_type.clone(),
                    message,
                };
                let live = rebuild::apply_batch(
                    &mut self.live,
                    &mut self.upcasting,
                    &mut vec![event.clone()],
                );
                let candidate = rebuild::apply_batch(
                    &mut self.candidate,
                    &mut self.upcasting,
                    &mut vec![event.clone()],
                );
                if let Err(error) = candidate {
                    found = Some(Divergence::Failed(at(error.to_string())));
                    return ControlFlow::Break(());
                }
                if live.is_err() {
                    return ControlFlow::Break(());
                }
                let (Ok(live), Ok(candidate)) = (self.live.state(), self.candidate.state()) else {
                    found = Some(Divergence::Failed(at("the state could not be read".into())));
                    return ControlFlow::Break(());
                };
                if !same_json(&live, &candidate) {
                    found = Some(Divergence::Differs(StateDifference {
                        stream_id: event.stream_id.clone(),
                        stream_version: event.stream_version,
                        position: event.position,
                        live,
                        candidate,
                    }));
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })
            .map_err(|e| read_failed(self.aggregate_type, e))?;
        // The walk may have left an instance trapped.
        self.renew(Side::Live)?;
        self.renew(Side::Candidate)?;
        self.upcasting = self.upcasting.fresh();
        Ok(found)
    }
}

/// A failure the walk did not reproduce: said as the rebuild said it.
fn unlocated(id: &str, error: &StateError) -> CheckFailure {
    let position = match error {
        StateError::Apply(ApplyError::Event { position, .. }) => *position,
        _ => 0,
    };
    CheckFailure {
        position,
        stream_id: id.to_owned(),
        stream_version: 0,
        event_type: String::new(),
        message: error.to_string(),
    }
}

/// Equal as JSON values (a plugin may order keys differently), else as text.
fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The streams of `aggregate_type` (those holding an event the command pipeline wrote for
/// it), each with the highest stream version seen up to `head`.
fn streams_of(
    store: &dyn EventStore,
    aggregate_type: &str,
    head: u64,
) -> Result<BTreeMap<String, u64>, eshost_store::ReadError> {
    let mut streams: BTreeMap<String, u64> = BTreeMap::new();
    for_each_event(store, &[], head, &mut |event| {
        if let Some(version) = streams.get_mut(event.stream_id) {
            *version = (*version).max(event.stream_version);
            return;
        }
        if !event.metadata.contains(aggregate_type) {
            return;
        }
        let written_for = serde_json::from_str::<Value>(event.metadata)
            .ok()
            .and_then(|m| m.get("aggregate_type")?.as_str().map(str::to_owned));
        if written_for.as_deref() == Some(aggregate_type) {
            streams.insert(event.stream_id.to_owned(), event.stream_version);
        }
    })?;
    Ok(streams)
}
