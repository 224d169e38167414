//! Prometheus metrics, kept in atomics and rendered as text on `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(index) = BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The outcome of a command, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandResult {
    /// Accepted, events stored.
    Accepted,
    /// Refused by a business rule.
    Rejected,
    /// Not understood by the plugin.
    Invalid,
    /// A version conflict.
    Conflict,
    /// A plugin fault (trap, limit) or another host error.
    Error,
}

const RESULTS: [(CommandResult, &str); 5] = [
    (CommandResult::Accepted, "accepted"),
    (CommandResult::Rejected, "rejected"),
    (CommandResult::Invalid, "invalid"),
    (CommandResult::Conflict, "conflict"),
    (CommandResult::Error, "error"),
];

/// Everything the server counts itself.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `POST /streams/{id}` appends, until durable.
    pub append: Histogram,
    /// Appends refused or failed.
    pub append_errors: AtomicU64,
    /// Events appended through `POST /streams/{id}`.
    pub appended_events: AtomicU64,
    /// Commands, until decided and durable.
    pub command: Histogram,
    /// Commands by result.
    results: [AtomicU64; RESULTS.len()],
    /// Plugin faults seen by commands (traps, limits).
    pub plugin_faults: AtomicU64,
    /// Plugin swaps done through the API.
    pub swaps: AtomicU64,
}

impl Metrics {
    /// Counts a command's result.
    pub fn command_result(&self, result: CommandResult) {
        let index = RESULTS.iter().position(|(r, _)| *r == result).unwrap_or(0);
        self.results[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the server's own metrics; the caller appends the store's, the pipeline's and
    /// the projections'.
    pub fn render(&self, out: &mut String) {
        self.append.render(
            out,
            "eshost_append_seconds",
            "Latency of POST /streams appends until durable.",
        );
        counter(
            out,
            "eshost_appended_events_total",
            "Events appended over HTTP.",
            self.appended_events.load(Ordering::Relaxed),
        );
        counter(
            out,
            "eshost_append_errors_total",
            "Appends refused or failed.",
            self.append_errors.load(Ordering::Relaxed),
        );
        self.command.render(
            out,
            "eshost_command_seconds",
            "Latency of commands until decided and durable.",
        );
        let _ = writeln!(
            out,
            "# HELP eshost_commands_total Commands by result.\n# TYPE eshost_commands_total counter"
        );
        for ((_, label), count) in RESULTS.iter().zip(&self.results) {
            let _ = writeln!(
                out,
                "eshost_commands_total{{result=\"{label}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        counter(
            out,
            "eshost_plugin_faults_total",
            "Commands failed by a plugin fault (trap, time or memory limit).",
            self.plugin_faults.load(Ordering::Relaxed),
        );
        counter(
            out,
            "eshost_plugin_swaps_total",
            "Plugins hot-swapped through the API.",
            self.swaps.load(Ordering::Relaxed),
        );
    }
}

/// Writes one counter.
pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

/// Writes one gauge.
pub fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_renders_cumulative_buckets() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(300));
        histogram.observe(Duration::from_millis(3));
        let mut out = String::new();
        histogram.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("x_count 2\n"), "{out}");
    }
}
