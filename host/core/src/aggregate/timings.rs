//! What loading and snapshotting aggregates costs, per aggregate type (bounded: the types a
//! config registers). The server registers these series for `/metrics`.

use std::time::Duration;

use eshost_runtime::metrics::{LatencyFamily, latency_family};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AggregateLabel {
    aggregate: String,
}

/// Replay and snapshot durations of the command pipeline. Cheap to clone (clones share the
/// series).
#[derive(Debug, Clone)]
pub struct AggregateTimings {
    replay: LatencyFamily<AggregateLabel>,
    snapshot: LatencyFamily<AggregateLabel>,
}

impl Default for AggregateTimings {
    fn default() -> Self {
        AggregateTimings {
            replay: latency_family(),
            snapshot: latency_family(),
        }
    }
}

impl AggregateTimings {
    /// Records the build of an aggregate's state that was not cached: snapshot restored,
    /// later events read, upcast and applied.
    pub(crate) fn replay(&self, aggregate_type: &str, elapsed: Duration) {
        observe(&self.replay, aggregate_type, elapsed);
    }

    /// Records a snapshot taken (by the interval rule or on demand): the plugin's `snapshot`
    /// call and the write to `views.redb`.
    pub(crate) fn snapshot(&self, aggregate_type: &str, elapsed: Duration) {
        observe(&self.snapshot, aggregate_type, elapsed);
    }

    /// Registers `eshost_aggregate_replay_seconds{aggregate}` and
    /// `eshost_snapshot_seconds{aggregate}` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "eshost_aggregate_replay_seconds",
            "Time to build an aggregate's state that was not cached (snapshot, then later events), by aggregate type",
            self.replay.clone(),
        );
        registry.register(
            "eshost_snapshot_seconds",
            "Time to take and store a snapshot (the plugin's snapshot call and the write), by aggregate type",
            self.snapshot.clone(),
        );
    }
}

fn observe(family: &LatencyFamily<AggregateLabel>, aggregate_type: &str, elapsed: Duration) {
    let label = AggregateLabel {
        aggregate: aggregate_type.to_owned(),
    };
    family.get_or_create(&label).observe(elapsed.as_secs_f64());
}
