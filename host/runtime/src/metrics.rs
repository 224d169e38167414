//! What plugin calls cost and how often they fault, recorded per plugin name and call (both
//! bounded: a host loads a handful of plugins, each world has a few calls). One
//! [`PluginMetrics`] per [`Runtime`](crate::Runtime); the server registers it for `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the latency buckets every eshost histogram uses, seconds: from a 10 µs
/// plugin call to a 10 s append stuck behind a slow disk.
pub const LATENCY_BUCKETS: [f64; 19] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram over [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Latency histograms by label set.
pub type LatencyFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A new, empty [`LatencyFamily`].
pub fn latency_family<L: Clone + std::hash::Hash + Eq>() -> LatencyFamily<L> {
    Family::new_with_constructor(latency_histogram)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    plugin: Arc<str>,
    call: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PluginLabel {
    plugin: Arc<str>,
}

/// Plugin call durations and faults. Cheap to clone (clones share the series).
#[derive(Debug, Clone)]
pub struct PluginMetrics {
    calls: LatencyFamily<CallLabels>,
    traps: Family<PluginLabel, Counter>,
}

impl Default for PluginMetrics {
    fn default() -> Self {
        PluginMetrics {
            calls: latency_family(),
            traps: Family::default(),
        }
    }
}

impl PluginMetrics {
    /// Records a call of `plugin` that ran for `elapsed`.
    pub(crate) fn call(&self, plugin: &Arc<str>, call: &'static str, elapsed: Duration) {
        let labels = CallLabels {
            plugin: plugin.clone(),
            call,
        };
        self.calls
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a call of `plugin` that faulted (trap, time or memory limit, stack overflow,
    /// exit) and so cost its instance.
    pub(crate) fn trap(&self, plugin: &Arc<str>) {
        let label = PluginLabel {
            plugin: plugin.clone(),
        };
        self.traps.get_or_create(&label).inc();
    }

    /// Registers the series in `registry`: `eshost_plugin_call_seconds{plugin,call}` and
    /// `eshost_plugin_traps_total{plugin}`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "eshost_plugin_call_seconds",
            "Duration of plugin calls, by plugin and call (instantiation not included)",
            self.calls.clone(),
        );
        registry.register(
            "eshost_plugin_traps",
            "Plugin calls that faulted (trap, time or memory limit, stack overflow, exit), by plugin",
            self.traps.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_traps_render_per_plugin() {
        let metrics = PluginMetrics::default();
        let plugin: Arc<str> = Arc::from("bank-account");
        metrics.call(&plugin, "handle", Duration::from_micros(30));
        metrics.call(&plugin, "handle", Duration::from_millis(3));
        metrics.trap(&plugin);
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        let call = "eshost_plugin_call_seconds";
        let labels = "plugin=\"bank-account\",call=\"handle\"";
        for line in [
            format!("{call}_bucket{{{labels},le=\"5e-05\"}} 1\n"),
            format!("{call}_bucket{{{labels},le=\"0.005\"}} 2\n"),
            format!("{call}_count{{{labels}}} 2\n"),
            "eshost_plugin_traps_total{plugin=\"bank-account\"} 1\n".to_owned(),
        ] {
            assert!(out.contains(&line), "{line} not in\n{out}");
        }
    }
}
