//! `eshost-bench append`: concurrent single-event appends through the group-committing
//! writer, against a baseline of raw redb inserts of the same records in large commits; with
//! `--store postgres://...`, through the PostgreSQL store against raw batched INSERTs on the
//! same database (`append_pg`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redb::{Database, TableDefinition};
use serde::Serialize;

use super::percentile;
use eshost_store::codec::{GENESIS_HASH, RecordBody};
use eshost_store::{
    AppendRequest, Durability, EventStore, ExpectedVersion, ProposedEvent, Store, StoreConfig,
    WriterStats,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct AppendBenchOptions {
    /// Concurrent appenders, each with one append in flight.
    pub appenders: usize,
    /// Size of each event's JSON data, in bytes.
    pub event_bytes: usize,
    /// How long the store phase runs.
    pub duration: Duration,
    /// Whether each commit waits for the disk.
    pub durability: Durability,
    /// Events per commit in the raw redb baseline.
    pub baseline_batch: usize,
    /// Where to put the scratch stores (a temporary directory by default).
    pub dir: Option<PathBuf>,
    /// Bytes of personal data per event (0: none), sealed under one subject per appender.
    pub personal_bytes: usize,
    /// A `postgres://` URL: run against the PostgreSQL store there (in a schema of its own,
    /// dropped afterwards) instead of the embedded one.
    pub store: Option<String>,
}

impl Default for AppendBenchOptions {
    fn default() -> Self {
        AppendBenchOptions {
            appenders: 64,
            event_bytes: 200,
            duration: Duration::from_secs(5),
            personal_bytes: 0,
            durability: Durability::Immediate,
            baseline_batch: 1000,
            dir: None,
            store: None,
        }
    }
}

/// What it measured.
#[derive(Debug, Clone, Serialize)]
pub struct AppendBenchReport {
    /// `redb` or `postgres`.
    pub backend: &'static str,
    /// PostgreSQL only: the server's settings and the latency of one durable commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<super::append_pg::ServerProfile>,
    /// Concurrent appenders.
    pub appenders: usize,
    /// Bytes of JSON data per event.
    pub event_bytes: usize,
    /// `immediate` or `none`.
    pub durability: &'static str,
    /// Seconds the store phase ran.
    pub seconds: f64,
    /// Events acknowledged.
    pub events: u64,
    /// Acknowledged events per second.
    pub events_per_sec: f64,
    /// Append latency percentiles, microseconds.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest append.
    pub max_us: u64,
    /// Commits the writer made.
    pub commits: u64,
    /// Mean appends per commit.
    pub appends_per_commit: f64,
    /// Mean time the writer spent per commit gathering, staging and committing, microseconds.
    pub writer_gather_us: f64,
    /// See `writer_gather_us`.
    pub writer_stage_us: f64,
    /// See `writer_gather_us`.
    pub writer_commit_us: f64,
    /// Raw redb inserts of the same records, `baseline_batch` per commit, events per second.
    pub baseline_events_per_sec: f64,
    /// Events per raw commit in the baseline.
    pub baseline_batch: usize,
    /// `events_per_sec / baseline_events_per_sec`.
    pub ratio: f64,
}

impl std::fmt::Display for AppendBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "append ({}): {} appenders, {} B events, durability {}, {:.1} s",
            self.backend, self.appenders, self.event_bytes, self.durability, self.seconds
        )?;
        writeln!(f, "  {:<28} {:>14.0}", "events/s", self.events_per_sec)?;
        writeln!(f, "  {:<28} {:>14}", "events", self.events)?;
        writeln!(
            f,
            "  {:<28} {:>14}",
            "latency p50/p90/p99 (us)",
            format!("{}/{}/{}", self.p50_us, self.p90_us, self.p99_us)
        )?;
        writeln!(
            f,
            "  {:<28} {:>14}",
            "latency p99.9/max (us)",
            format!("{}/{}", self.p999_us, self.max_us)
        )?;
        writeln!(
            f,
            "  {:<28} {:>14.1}",
            "appends per commit", self.appends_per_commit
        )?;
        writeln!(
            f,
            "  {:<28} {:>14}",
            "writer gather/stage/commit",
            format!(
                "{:.0}/{:.0}/{:.0} us",
                self.writer_gather_us, self.writer_stage_us, self.writer_commit_us
            )
        )?;
        if let Some(server) = &self.server {
            writeln!(
                f,
                "  {:<28} {:>14}",
                "server fsync/sync commit",
                format!("{}/{}", server.fsync, server.synchronous_commit)
            )?;
            writeln!(
                f,
                "  {:<28} {:>14}",
                "1-row commit p50/p99 (us)",
                format!("{}/{}", server.commit_p50_us, server.commit_p99_us)
            )?;
        }
        let baseline = match self.backend {
            "postgres" => "INSERTs",
            _ => "redb",
        };
        writeln!(
            f,
            "  {:<28} {:>14.0}",
            format!("baseline raw {baseline} ({}/commit)", self.baseline_batch),
            self.baseline_events_per_sec
        )?;
        write!(f, "  {:<28} {:>14.2}", "ratio to baseline", self.ratio)
    }
}

/// Run the benchmark: the store phase, then the baseline, in scratch directories (or in a
/// scratch schema of the PostgreSQL database `options.store` names).
pub fn run(options: &AppendBenchOptions) -> anyhow::Result<AppendBenchReport> {
    if let Some(url) = &options.store {
        return super::append_pg::run(options, url);
    }
    let scratch = match &options.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let mut config = StoreConfig::new(scratch.path().join("store"));
    config.durability = options.durability;
    let store = Store::open(config)?;
    let (latencies, seconds) = drive(Arc::new(store.clone()), options)?;
    let stats = Measured::of(store.writer_stats(), latencies, seconds);
    drop(store);
    let baseline_events_per_sec = baseline(
        &scratch.path().join("baseline.redb"),
        &payload(options.event_bytes),
        options.baseline_batch,
        options.duration,
        options.durability,
    )?;
    Ok(stats.report(options, "redb", None, baseline_events_per_sec))
}

/// What the store phase measured.
pub(crate) struct Measured {
    latencies: Vec<u64>,
    seconds: f64,
    commits: u64,
    appends: u64,
    gather_us: f64,
    stage_us: f64,
    commit_us: f64,
}

impl Measured {
    pub(crate) fn of(stats: &WriterStats, mut latencies: Vec<u64>, seconds: f64) -> Measured {
        latencies.sort_unstable();
        let commits = stats.commits.load(Ordering::Relaxed);
        let per_commit = |nanos: &std::sync::atomic::AtomicU64| {
            nanos.load(Ordering::Relaxed) as f64 / 1000.0 / commits.max(1) as f64
        };
        Measured {
            latencies,
            seconds,
            commits,
            appends: stats.appends.load(Ordering::Relaxed),
            gather_us: per_commit(&stats.gather_nanos),
            stage_us: per_commit(&stats.stage_nanos),
            commit_us: per_commit(&stats.commit_nanos),
        }
    }

    pub(crate) fn report(
        self,
        options: &AppendBenchOptions,
        backend: &'static str,
        server: Option<super::append_pg::ServerProfile>,
        baseline_events_per_sec: f64,
    ) -> AppendBenchReport {
        let latencies = &self.latencies;
        let events = latencies.len() as u64;
        let events_per_sec = events as f64 / self.seconds;
        AppendBenchReport {
            backend,
            server,
            appenders: options.appenders,
            event_bytes: options.event_bytes,
            durability: match options.durability {
                Durability::Immediate => "immediate",
                Durability::None => "none",
            },
            seconds: self.seconds,
            events,
            events_per_sec,
            p50_us: percentile(latencies, 0.50),
            p90_us: percentile(latencies, 0.90),
            p99_us: percentile(latencies, 0.99),
            p999_us: percentile(latencies, 0.999),
            max_us: latencies.last().copied().unwrap_or(0),
            commits: self.commits,
            appends_per_commit: self.appends as f64 / self.commits.max(1) as f64,
            writer_gather_us: self.gather_us,
            writer_stage_us: self.stage_us,
            writer_commit_us: self.commit_us,
            baseline_events_per_sec,
            baseline_batch: options.baseline_batch,
            ratio: events_per_sec / baseline_events_per_sec,
        }
    }
}

/// The workload: `appenders` tasks, each appending one event at a time to its own stream
/// until `duration` has passed. Every append's latency, and the seconds it ran.
pub(crate) fn drive(
    store: Arc<dyn EventStore>,
    options: &AppendBenchOptions,
) -> anyhow::Result<(Vec<u64>, f64)> {
    let personal = (options.personal_bytes > 0).then(|| payload(options.personal_bytes));
    let payload = payload(options.event_bytes);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let deadline = started + options.duration;
    let latencies = runtime.block_on(async {
        let tasks: Vec<_> = (0..options.appenders)
            .map(|appender| {
                let store = store.clone();
                let payload = payload.clone();
                let personal = personal.clone();
                tokio::spawn(async move {
                    let stream = format!("bench-{appender}");
                    let subject = format!("subject-{appender}");
                    let mut latencies = Vec::with_capacity(1 << 16);
                    while Instant::now() < deadline {
                        let mut event = ProposedEvent::new("BenchEvent", payload.clone());
                        if let Some(personal) = &personal {
                            event = event.with_personal_data(&subject, personal.clone());
                        }
                        let request =
                            AppendRequest::new(&stream, ExpectedVersion::Any, vec![event]);
                        let sent = Instant::now();
                        store.append(request).await?;
                        latencies.push(sent.elapsed().as_micros() as u64);
                    }
                    anyhow::Ok(latencies)
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await??);
        }
        anyhow::Ok(all)
    })?;
    Ok((latencies, started.elapsed().as_secs_f64()))
}

/// Raw redb: the same encoded records, `batch` per commit, one thread, for `duration`.
fn baseline(
    path: &std::path::Path,
    payload: &str,
    batch: usize,
    duration: Duration,
    durability: Durability,
) -> anyhow::Result<f64> {
    const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
    let db = Database::create(path)?;
    let metadata = "{}";
    let stream = "bench-0";
    let mut record = Vec::new();
    let mut previous = GENESIS_HASH;
    let mut position = 0u64;
    let started = Instant::now();
    while started.elapsed() < duration {
        let mut txn = db.begin_write()?;
        if durability == Durability::None {
            txn.set_durability(redb::Durability::None)?;
        }
        {
            let mut table = txn.open_table(TABLE)?;
            for _ in 0..batch {
                position += 1;
                record.clear();
                previous = RecordBody {
                    stream_version: position,
                    event_id: uuid::Uuid::now_v7(),
                    schema_version: 1,
                    recorded_at: 0,
                    stream_id: stream,
                    event_type: "BenchEvent",
                    data: payload,
                    metadata,
                    personal: None,
                }
                .encode_into(position, &previous, &mut record);
                table.insert(position, record.as_slice())?;
            }
        }
        txn.commit()?;
    }
    Ok(position as f64 / started.elapsed().as_secs_f64())
}

/// A JSON object of about `bytes` bytes.
pub(crate) fn payload(bytes: usize) -> String {
    let base = r#"{"account":"account-17","amount":12345,"note":""}"#;
    let padding = bytes.saturating_sub(base.len());
    format!(
        r#"{{"account":"account-17","amount":12345,"note":"{}"}}"#,
        "x".repeat(padding)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_json_of_the_asked_size() {
        let text = payload(200);
        assert_eq!(text.len(), 200);
        serde_json::from_str::<serde_json::Value>(&text).unwrap();
    }
}
