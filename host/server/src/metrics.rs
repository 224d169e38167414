//! Prometheus metrics on `GET /metrics`, through `prometheus-client`: the series the server
//! records itself (appends, commands, swaps), those the runtime and the core record (plugin
//! calls and traps, aggregate replays and snapshots), and those read from the host on each
//! scrape ([`HostCollector`]: the store's head and files, the pipeline's counters, the
//! projections' status). Labels are bounded: a result, a plugin, an aggregate type or a
//! projection name, never a stream id.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use eshost_core::Host;
use eshost_core::projection::ProjectionState;
use eshost_runtime::metrics::latency_histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::drain::Drain;

/// The `Content-Type` of the exposition: Prometheus text, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The most files [`HostCollector`] sizes in the store's directory per scrape.
const MAX_STORE_FILES: usize = 100_000;

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

impl CommandResult {
    const ALL: [CommandResult; 5] = [
        CommandResult::Accepted,
        CommandResult::Rejected,
        CommandResult::Invalid,
        CommandResult::Conflict,
        CommandResult::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            CommandResult::Accepted => "accepted",
            CommandResult::Rejected => "rejected",
            CommandResult::Invalid => "invalid",
            CommandResult::Conflict => "conflict",
            CommandResult::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Everything `/metrics` shows, and the series the server records itself.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `POST /streams/{id}` appends, until durable.
    pub append: Histogram,
    /// Appends refused or failed.
    pub append_errors: Counter,
    /// Events appended through `POST /streams/{id}`.
    pub appended_events: Counter,
    /// The stream's version after each append (HTTP appends and accepted commands).
    pub stream_version: Histogram,
    /// Commands, until decided and durable.
    pub command: Histogram,
    /// Commands by result.
    commands: Family<ResultLabel, Counter>,
    /// Plugin faults seen by commands (traps, limits).
    pub plugin_faults: Counter,
    /// Plugin swaps done through the API.
    pub swaps: Counter,
}

impl Metrics {
    /// The registry over `host`: the server's series, the runtime's and the core's, and the
    /// host's state read on each scrape.
    pub(crate) fn new(host: &Host, drain: Arc<Drain>) -> Metrics {
        let mut metrics = Metrics {
            append: latency_histogram(),
            append_errors: Counter::default(),
            appended_events: Counter::default(),
            // 1, 2, 4, ... 2^20 events.
            stream_version: Histogram::new(exponential_buckets(1.0, 2.0, 21)),
            command: latency_histogram(),
            commands: Family::default(),
            plugin_faults: Counter::default(),
            swaps: Counter::default(),
            registry: Registry::default(),
        };
        let registry = &mut metrics.registry;
        registry.register(
            "eshost_append_seconds",
            "Latency of POST /streams appends until durable",
            metrics.append.clone(),
        );
        registry.register(
            "eshost_appended_events",
            "Events appended over HTTP",
            metrics.appended_events.clone(),
        );
        registry.register(
            "eshost_append_errors",
            "Appends refused or failed",
            metrics.append_errors.clone(),
        );
        registry.register(
            "eshost_append_stream_version",
            "The stream's version after each append (HTTP appends and accepted commands): how many events the streams written to hold",
            metrics.stream_version.clone(),
        );
        registry.register(
            "eshost_command_seconds",
            "Latency of commands until decided and durable",
            metrics.command.clone(),
        );
        // Every result shows, at 0 until it happens.
        for result in CommandResult::ALL {
            drop(metrics.commands.get_or_create(&ResultLabel {
                result: result.label(),
            }));
        }
        registry.register(
            "eshost_commands",
            "Commands by result",
            metrics.commands.clone(),
        );
        registry.register(
            "eshost_plugin_faults",
            "Commands failed by a plugin fault (trap, time or memory limit)",
            metrics.plugin_faults.clone(),
        );
        registry.register(
            "eshost_plugin_swaps",
            "Plugins hot-swapped through the API",
            metrics.swaps.clone(),
        );
        host.runtime().plugin_metrics().register(registry);
        host.aggregates().timings().register(registry);
        registry.register_collector(Box::new(HostCollector {
            host: host.clone(),
            drain,
        }));
        metrics
    }

    /// Counts a command's result.
    pub fn command_result(&self, result: CommandResult) {
        self.commands
            .get_or_create(&ResultLabel {
                result: result.label(),
            })
            .inc();
    }

    /// The exposition text of every series.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Records `elapsed` in seconds.
pub fn observe(histogram: &Histogram, elapsed: Duration) {
    histogram.observe(elapsed.as_secs_f64());
}

/// What is read from the host on each scrape rather than counted as it happens.
#[derive(Debug)]
struct HostCollector {
    host: Host,
    drain: Arc<Drain>,
}

impl Collector for HostCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let host = &self.host;
        gauge(
            &mut encoder,
            "eshost_http_requests_in_flight",
            "HTTP requests being served (this one included).",
            self.drain.in_flight() as u64,
        )?;
        let stats = host.aggregates().stats();
        for (name, help, value) in [
            (
                "eshost_command_decisions",
                "Plugin handle calls (retries count again).",
                stats.decisions,
            ),
            (
                "eshost_command_cache_hits",
                "Decisions from a cached state.",
                stats.cache_hits,
            ),
            (
                "eshost_aggregate_rebuilds",
                "States built from the store.",
                stats.rebuilds,
            ),
            (
                "eshost_command_retries",
                "Commands retried after a conflict.",
                stats.retries,
            ),
            (
                "eshost_snapshots",
                "Snapshots taken by the interval rule.",
                stats.snapshots,
            ),
        ] {
            counter(&mut encoder, name, help, value)?;
        }
        let head = host.store().head();
        gauge(
            &mut encoder,
            "eshost_store_head_position",
            "The last committed position.",
            head,
        )?;
        // Positions are dense, so the head counts every event committed: rate() is events/s.
        counter(
            &mut encoder,
            "eshost_store_events",
            "Events committed to the store, by any writer (its head position).",
            head,
        )?;
        let dir = &host.config().store;
        for (file, name) in [
            (eshost_store::EVENTS_FILE, "eshost_store_events_file_bytes"),
            (
                eshost_core::views::VIEWS_FILE,
                "eshost_store_views_file_bytes",
            ),
        ] {
            let size = std::fs::metadata(dir.join(file)).map_or(0, |m| m.len());
            gauge(&mut encoder, name, &format!("Size of {file}."), size)?;
        }
        gauge(
            &mut encoder,
            "eshost_store_size_bytes",
            "Bytes of every file in the store's directory (log, write-ahead log, views, archive, keys).",
            dir_bytes(dir),
        )?;
        projections(&mut encoder, host)
    }
}

/// The projections' status, one series per projection.
fn projections(encoder: &mut DescriptorEncoder, host: &Host) -> Result<(), fmt::Error> {
    let statuses = host.projections().statuses();
    type Read = fn(&eshost_core::projection::ProjectionStatus) -> u64;
    let series: [(&str, &str, MetricType, Read); 5] = [
        (
            "eshost_projection_position",
            "The projection's checkpoint.",
            MetricType::Gauge,
            |s| s.position,
        ),
        (
            "eshost_projection_lag",
            "Events between the checkpoint and the head.",
            MetricType::Gauge,
            |s| s.lag,
        ),
        (
            "eshost_projection_failed",
            "1 when the projection stopped at a failing event.",
            MetricType::Gauge,
            |s| u64::from(s.state == ProjectionState::Failed),
        ),
        (
            "eshost_projection_dead_letters",
            "Events parked in the dead-letter table.",
            MetricType::Gauge,
            |s| s.dead_letters,
        ),
        (
            "eshost_projection_errors",
            "Batches that failed (plugin, upcast, read-model or I/O error; retries count again).",
            MetricType::Counter,
            |s| s.failed_batches,
        ),
    ];
    for (name, help, metric_type, read) in series {
        let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
        for status in &statuses {
            let labels = [("projection", status.name.as_str())];
            let mut labelled = metric.encode_family(&labels)?;
            match metric_type {
                MetricType::Counter => {
                    labelled.encode_counter::<NoLabelSet, _, u64>(&read(status), None)?
                }
                _ => labelled.encode_gauge(&read(status))?,
            }
        }
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// `name` without `_total`: the encoder adds it.
fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// Bytes of the regular files under `dir` (symbolic links not followed), at most
/// [`MAX_STORE_FILES`] entries.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_STORE_FILES {
                return total;
            }
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) if meta.is_file() => total += meta.len(),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_bytes_adds_files_in_subdirectories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), [0; 10]).unwrap();
        std::fs::create_dir(dir.path().join("archive")).unwrap();
        std::fs::write(dir.path().join("archive/b"), [0; 5]).unwrap();
        assert_eq!(dir_bytes(dir.path()), 15);
    }
}
