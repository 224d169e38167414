//! Checking a candidate plugin version against the stored history before it goes live
//! (`POST /plugins/{name}/check`, `eshost plugin check`, and a swap that requires a clean
//! check):
//!
//! - an upcaster: every stored event of the types it or the live version upcasts, through the
//!   chain with the candidate in place of the live version beside the live chain (`upcaster`);
//! - an aggregate: every stream of its type rebuilt under the candidate beside the live
//!   version (`aggregate`);
//! - a projection: the whole history replayed into memory and compared key by key with the
//!   live read model (the replay `--diff` of `projection::replay`).
//!
//! Nothing live changes. The log is read in pages of [`PAGE`] events, never whole; what the
//! report keeps of each kind of finding is capped at [`SAMPLES`]. A check is *clean* when
//! nothing failed: changed events, differing states or rows are what a new version is for,
//! so they are reported, not refused.

mod aggregate;
mod upcaster;

use std::time::Instant;

pub use aggregate::{AggregateCheck, StateDifference};
pub use upcaster::{UpcastSample, UpcasterCheck};

use crate::cluster::plugins::{ActivateError, PluginLog};
use crate::projection::replay::{DiffReport, diff_views, replay_into_memory};
use eshost_runtime::{LoadedPlugin, PluginInfo};

/// Events read from the log at a time.
pub const PAGE: usize = 500;
/// Findings of each kind kept in a report (samples, differences, failures).
pub const SAMPLES: usize = 5;

/// An event the candidate could not process, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    /// The event's position in `$all`.
    pub position: u64,
    /// Its stream.
    pub stream_id: String,
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its stored type.
    pub event_type: String,
    /// What went wrong.
    pub message: String,
}

/// A projection candidate's replay against the live read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionCheck {
    /// Events passed to the candidate.
    pub handled: u64,
    /// Keys of the replayed read model.
    pub keys: u64,
    /// The comparison with the live read model; `None` when the replay failed.
    pub diff: Option<DiffReport>,
    /// Why the replay failed.
    pub failure: Option<String>,
}

/// What a check found, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Findings {
    /// An upcaster candidate.
    Upcaster(UpcasterCheck),
    /// An aggregate candidate.
    Aggregate(AggregateCheck),
    /// A projection candidate.
    Projection(ProjectionCheck),
}

/// The report of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The candidate: its name, kind, version and hash.
    pub candidate: PluginInfo,
    /// The log position the check read up to.
    pub head: u64,
    /// How long it took, in milliseconds.
    pub elapsed_ms: u64,
    /// What it found.
    pub findings: Findings,
}

impl CheckReport {
    /// The first failure, in a few words (for an error message).
    pub fn summary(&self) -> String {
        match &self.findings {
            Findings::Upcaster(check) => match &check.first_failure {
                Some(f) => format!(
                    "{} of {} events fail, the first at position {}: {}",
                    check.failed, check.events, f.position, f.message
                ),
                None => "no failure".into(),
            },
            Findings::Aggregate(check) => match check.failures.first() {
                Some(f) => format!(
                    "{} of {} streams fail to rebuild, the first ({}) at version {} (position {}): {}",
                    check.failed,
                    check.streams,
                    f.stream_id,
                    f.stream_version,
                    f.position,
                    f.message
                ),
                None => "no failure".into(),
            },
            Findings::Projection(check) => {
                check.failure.clone().unwrap_or_else(|| "no failure".into())
            }
        }
    }

    /// True when nothing failed under the candidate.
    pub fn is_clean(&self) -> bool {
        match &self.findings {
            Findings::Upcaster(check) => check.failed == 0,
            Findings::Aggregate(check) => check.failed == 0,
            Findings::Projection(check) => check.failure.is_none(),
        }
    }
}

/// Checks `bytes` as a new version of the configured plugin `name` against the whole log.
/// Blocking; reads the whole log (in pages).
pub fn check(log: &PluginLog, name: &str, bytes: &[u8]) -> Result<CheckReport, ActivateError> {
    let kind = log
        .kind_of(name)
        .ok_or_else(|| ActivateError::Unknown(name.to_owned()))?;
    let label = format!("candidate for {name:?}");
    let loaded = log
        .runtime(name)?
        .load_bytes(bytes, &label, kind)
        .map_err(|e| ActivateError::BadPlugin(e.to_string()))?;
    let candidate = loaded.info().clone();
    if candidate.name != name {
        return Err(ActivateError::BadPlugin(format!(
            "the component describes itself as {:?}, not {name:?}",
            candidate.name
        )));
    }
    let started = Instant::now();
    let store = log.store();
    let head = store.head();
    let findings = match loaded {
        LoadedPlugin::Reactor(_) => {
            return Err(ActivateError::BadPlugin(format!(
                "{name:?} is a reactor: a check replays no reactor (it would act); list what a \
                 version would do with `eshost replay --plugin FILE --from N`"
            )));
        }
        LoadedPlugin::Upcaster(_) => {
            let chain = log.candidate_chain(name, bytes, &label)?;
            let live = log.upcasters().detached();
            // What either version raises: an event the live one claims and the candidate no
            // longer does changes too.
            let live_version = live.plugins().into_iter().filter(|p| p.info().name == name);
            let claims = live_version.flat_map(|p| p.info().upcasts.clone());
            let types: std::collections::BTreeSet<String> = (candidate.upcasts.iter().cloned())
                .chain(claims)
                .map(|claim| claim.event_type)
                .collect();
            Findings::Upcaster(upcaster::check(
                name,
                store.as_ref(),
                &live,
                &chain,
                &types,
                head,
            )?)
        }
        LoadedPlugin::Aggregate(plugin) => {
            let aggregates = log.aggregates();
            let live = aggregates
                .plugin(name)
                .ok_or_else(|| ActivateError::Unknown(name.to_owned()))?;
            Findings::Aggregate(aggregate::check(
                store.as_ref(),
                &log.upcasters().detached(),
                &live,
                &plugin,
                head,
            )?)
        }
        LoadedPlugin::Projection(plugin) => {
            let projections = log.projections();
            let batch = projections.config(name).map_or(2000, |c| c.batch);
            let upcasters = log.upcasters().detached();
            let replayed = replay_into_memory(store.as_ref(), &plugin, batch, &upcasters, |_| {});
            Findings::Projection(match replayed {
                Ok((model, handled)) => {
                    let diff =
                        diff_views(projections.views(), name, &model, SAMPLES).map_err(|e| {
                            ActivateError::Store {
                                name: name.to_owned(),
                                reason: format!("comparing with the live read model: {e:#}"),
                            }
                        })?;
                    ProjectionCheck {
                        handled,
                        keys: model.entries.len() as u64,
                        diff: Some(diff),
                        failure: None,
                    }
                }
                Err(error) => ProjectionCheck {
                    handled: 0,
                    keys: 0,
                    diff: None,
                    failure: Some(format!("{error:#}")),
                },
            })
        }
    };
    debug_assert_eq!(kind, candidate.kind);
    Ok(CheckReport {
        candidate,
        head,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        findings,
    })
}

/// A read of the log failed during a check.
fn read_failed(name: &str, error: impl std::fmt::Display) -> ActivateError {
    ActivateError::Store {
        name: name.to_owned(),
        reason: format!("reading the log for the check: {error}"),
    }
}

/// Calls `visit` with every event of `types` (all when empty) up to `head`, a page at a time
/// (each page its own read).
fn for_each_event(
    store: &dyn eshost_store::EventStore,
    types: &[String],
    head: u64,
    visit: &mut dyn FnMut(&eshost_store::EventRef<'_>),
) -> Result<(), eshost_store::ReadError> {
    let mut from = 1;
    while from <= head {
        let read = eshost_store::AllRead {
            limit: PAGE,
            event_types: types.to_vec(),
            until: Some(eshost_store::Until::Position(head)),
            ..eshost_store::AllRead::from(from)
        };
        let mut last = None;
        store.visit_all(&read, &mut |event| {
            last = Some(event.position);
            visit(&event);
            std::ops::ControlFlow::Continue(())
        })?;
        match last {
            Some(last) => from = last + 1,
            None => break,
        }
    }
    Ok(())
}
