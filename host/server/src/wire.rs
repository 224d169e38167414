//! From the core's and the store's types to the wire contract's ([`eshost_api`]).

use eshost_api as api;
use eshost_core::aggregate::{AggregateState, EmittedEvent, HistoryEntry};
use eshost_core::check::{CheckFailure, CheckReport, Findings};
use eshost_core::cluster::NodeProgress;
use eshost_core::cluster::plugins::{ActivationSource, RecordedActivation};
use eshost_core::privacy::ForgetReport;
use eshost_core::projection::{GenerationStatus, ProjectionState, ProjectionStatus, SwapOutcome};
use eshost_runtime::{PluginInfo, PluginKind};
use eshost_store::{Appended, Forgot, StreamInfo};
use serde_json::Value;

/// JSON text as a value; text that is not JSON (never stored, but plugins' answers may be) as
/// a string.
pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::from(text))
}

pub fn emitted(event: &EmittedEvent) -> api::EmittedEvent {
    api::EmittedEvent {
        event_id: event.event_id,
        position: event.position,
        stream_version: event.stream_version,
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        recorded_at: event.recorded_at,
        data: json(&event.data),
    }
}

pub fn appended(appended: Appended) -> api::Appended {
    api::Appended {
        first_position: appended.first_position,
        last_position: appended.last_position,
        first_version: appended.first_version,
        stream_version: appended.stream_version,
        recorded_at: appended.recorded_at,
        already_stored: appended.already_stored,
    }
}

pub fn stream_info(info: StreamInfo) -> api::StreamInfo {
    api::StreamInfo {
        version: info.version,
        first_position: info.first_position,
        last_position: info.last_position,
        created_at: info.created_at,
        updated_at: info.updated_at,
    }
}

pub fn aggregate_state(state: AggregateState) -> api::AggregateState {
    api::AggregateState {
        aggregate_type: state.aggregate_type,
        stream_id: state.stream_id,
        version: state.version,
        position: state.position,
        recorded_at: state.recorded_at,
        state: state.state,
        from_snapshot: state.from_snapshot,
    }
}

/// One step of a history; `disclose` false hides the decrypted personal data.
pub fn history_entry(entry: &HistoryEntry, disclose: bool) -> api::HistoryEntry {
    let mut shown = api::Event::from(&entry.event);
    if !disclose {
        shown.personal_data = None;
    }
    api::HistoryEntry {
        event: shown,
        state: entry.state.clone(),
    }
}

pub fn projection_state(state: ProjectionState) -> api::ProjectionState {
    match state {
        ProjectionState::Running => api::ProjectionState::Running,
        ProjectionState::Paused => api::ProjectionState::Paused,
        ProjectionState::Failed => api::ProjectionState::Failed,
        ProjectionState::Rebuilding => api::ProjectionState::Rebuilding,
    }
}

pub fn generation(status: GenerationStatus) -> api::GenerationStatus {
    api::GenerationStatus {
        generation: status.generation,
        version: status.version,
        hash: status.hash,
        position: status.position,
        lag: status.lag,
        failed: status.failed,
        failed_at: status.failed_at,
    }
}

pub fn projection_status(status: ProjectionStatus) -> api::ProjectionStatus {
    api::ProjectionStatus {
        name: status.name,
        state: projection_state(status.state),
        position: status.position,
        head: status.head,
        lag: status.lag,
        events_per_sec: status.events_per_sec,
        last_error: status.last_error,
        active: generation(status.active),
        rebuild: status.rebuild.map(generation),
        dead_letters: status.dead_letters,
    }
}

/// A reactor's status.
pub fn reactor_status(status: eshost_core::reactor::ReactorStatus) -> api::ReactorStatus {
    use eshost_core::reactor::ReactorState;
    api::ReactorStatus {
        stream: eshost_core::reactor::outcome_stream(&status.name),
        name: status.name,
        state: match status.state {
            ReactorState::Running => api::ReactorState::Running,
            ReactorState::Paused => api::ReactorState::Paused,
            ReactorState::Failed => api::ReactorState::Failed,
        },
        checkpoint: status.checkpoint,
        head: status.head,
        lag: status.head.saturating_sub(status.checkpoint),
        version: status.version,
        content_hash: status.content_hash,
        commands_sent: status.commands_sent,
        events_appended: status.events_appended,
        timers_pending: status.timers_pending as u64,
        dead_letters: status.dead_letters,
        failed_at: status.failed_at,
        last_error: status.last_error,
    }
}

pub fn plugin_kind(kind: PluginKind) -> api::PluginKind {
    match kind {
        PluginKind::Aggregate => api::PluginKind::Aggregate,
        PluginKind::Upcaster => api::PluginKind::Upcaster,
        PluginKind::Projection => api::PluginKind::Projection,
        PluginKind::Reactor => api::PluginKind::Reactor,
    }
}

/// An aggregate or upcaster plugin.
pub fn plugin(info: &PluginInfo) -> api::Plugin {
    api::Plugin {
        name: info.name.clone(),
        kind: plugin_kind(info.kind),
        version: info.version.clone(),
        content_hash: info.content_hash.clone(),
        handles: Some(info.handles.clone()),
        upcasts: Some(
            info.upcasts
                .iter()
                .map(|v| api::VersionedType {
                    event_type: v.event_type.clone(),
                    schema_version: v.schema_version,
                })
                .collect(),
        ),
        wit_version: Some(info.wit_version.clone()),
        state: None,
        rebuild: None,
    }
}

/// A projection plugin, from its status.
pub fn projection_plugin(status: ProjectionStatus) -> api::Plugin {
    api::Plugin {
        name: status.name,
        kind: api::PluginKind::Projection,
        version: status.active.version,
        content_hash: status.active.hash,
        handles: None,
        upcasts: None,
        wit_version: None,
        state: Some(projection_state(status.state)),
        rebuild: status.rebuild.map(generation),
    }
}

pub fn swap_outcome(outcome: SwapOutcome) -> api::SwapOutcome {
    match outcome {
        SwapOutcome::Rebuilding { generation } => api::SwapOutcome::Rebuilding { generation },
        SwapOutcome::Continued => api::SwapOutcome::Continued,
        SwapOutcome::Unchanged => api::SwapOutcome::Unchanged,
    }
}

pub fn forget_report(report: ForgetReport) -> api::ForgetReport {
    api::ForgetReport {
        subject_id: report.subject_id,
        key: match report.key {
            Forgot::KeyErased => api::Forgot::KeyErased,
            Forgot::AlreadyForgotten => api::Forgot::AlreadyForgotten,
            Forgot::NoKey => api::Forgot::NoKey,
        },
        erasure_position: report.erasure_position,
        streams: report.streams,
        event_types: report.event_types,
        snapshots_deleted: report.snapshots_deleted as u64,
        projections_rebuilt: report.projections_rebuilt,
        projections_pending: report.projections_pending,
        nodes: report
            .nodes
            .into_iter()
            .map(|node| api::NodePurge {
                id: node.id,
                address: node.address,
                state: match node.state {
                    NodeProgress::Done => api::NodeProgress::Done,
                    NodeProgress::Pending => api::NodeProgress::Pending,
                    NodeProgress::NotLive => api::NodeProgress::NotLive,
                },
            })
            .collect(),
    }
}

pub fn activation(recorded: RecordedActivation) -> api::PluginActivation {
    let activation = recorded.activation;
    api::PluginActivation {
        position: recorded.position,
        recorded_at: recorded.recorded_at,
        name: activation.name,
        kind: activation.kind,
        content_hash: activation.content_hash,
        version: activation.version,
        previous_hash: activation.previous_hash,
        source: match activation.source {
            ActivationSource::Config => api::ActivationSource::Config,
            ActivationSource::Upload => api::ActivationSource::Upload,
            ActivationSource::Watcher => api::ActivationSource::Watcher,
            ActivationSource::Rollback => api::ActivationSource::Rollback,
        },
        user: activation.user,
        reason: activation.reason,
        node: activation.node,
        start: activation.start.map(|start| start.to_string()),
    }
}

/// The store's expected version for the contract's.
pub fn expected_version(expected: api::ExpectedVersion) -> eshost_store::ExpectedVersion {
    match expected {
        api::ExpectedVersion::Any => eshost_store::ExpectedVersion::Any,
        api::ExpectedVersion::NoStream => eshost_store::ExpectedVersion::NoStream,
        api::ExpectedVersion::StreamExists => eshost_store::ExpectedVersion::StreamExists,
        api::ExpectedVersion::Exact(version) => eshost_store::ExpectedVersion::Exact(version),
    }
}

/// A check of a candidate against history.
pub fn check_report(report: &CheckReport) -> api::CheckReport {
    let info = &report.candidate;
    let failure = |f: &CheckFailure| api::CheckFailure {
        position: f.position,
        stream_id: f.stream_id.clone(),
        stream_version: f.stream_version,
        event_type: f.event_type.clone(),
        message: f.message.clone(),
    };
    let shape = |(event_type, schema_version, data): &(String, u32, String)| api::EventShape {
        event_type: event_type.clone(),
        schema_version: *schema_version,
        data: json(data),
    };
    let mut answer = api::CheckReport {
        name: info.name.clone(),
        kind: plugin_kind(info.kind),
        version: info.version.clone(),
        content_hash: info.content_hash.clone(),
        clean: report.is_clean(),
        head: report.head,
        elapsed_ms: report.elapsed_ms,
        upcaster: None,
        aggregate: None,
        projection: None,
    };
    match &report.findings {
        Findings::Upcaster(check) => {
            answer.upcaster = Some(api::UpcasterCheck {
                event_types: check.event_types.clone(),
                events: check.events,
                unchanged: check.unchanged,
                changed: check.changed,
                failed: check.failed,
                samples: check
                    .samples
                    .iter()
                    .map(|s| api::UpcastSample {
                        position: s.position,
                        stream_id: s.stream_id.clone(),
                        before: shape(&s.before),
                        after: shape(&s.after),
                    })
                    .collect(),
                first_failure: check.first_failure.as_ref().map(failure),
            })
        }
        Findings::Aggregate(check) => {
            answer.aggregate = Some(api::AggregateCheck {
                streams: check.streams,
                same: check.same,
                differing: check.differing,
                failed: check.failed,
                live_failed: check.live_failed,
                differences: check
                    .differences
                    .iter()
                    .map(|d| api::StateDifference {
                        stream_id: d.stream_id.clone(),
                        stream_version: d.stream_version,
                        position: d.position,
                        live: json(&d.live),
                        candidate: json(&d.candidate),
                    })
                    .collect(),
                failures: check.failures.iter().map(failure).collect(),
            })
        }
        Findings::Projection(check) => {
            let diff = check.diff.as_ref();
            let count =
                |f: fn(&eshost_core::projection::replay::DiffReport) -> u64| diff.map_or(0, f);
            let samples = diff
                .into_iter()
                .flat_map(|d| {
                    d.added_samples
                        .iter()
                        .chain(&d.removed_samples)
                        .chain(&d.changed_samples)
                })
                .map(|sample| api::DiffSample {
                    key: sample.key.clone(),
                    live: sample.live.clone(),
                    candidate: sample.replayed.clone(),
                })
                .collect();
            answer.projection = Some(api::ProjectionCheck {
                handled: check.handled,
                keys: check.keys,
                failure: check.failure.clone(),
                live_position: count(|d| d.live_position),
                live_keys: count(|d| d.live_keys),
                added: count(|d| d.added),
                removed: count(|d| d.removed),
                changed: count(|d| d.changed),
                same: count(|d| d.same),
                samples,
            })
        }
    }
    answer
}
