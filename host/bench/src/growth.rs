//! `eshost-bench growth`: what the store costs as it grows. A store is filled, stage by stage,
//! to `events` bank events over `streams` accounts; at each stage the benchmark measures the
//! same things, so that the figures at the last stage compare with those of an empty store:
//! durable appends, stream reads, cold aggregate loads, `$all` scans, start-up (clean, and
//! after a SIGKILL with the write-ahead log full), file sizes and resident memory.
//!
//! The fill is set-up, not measurement: exported-style records are imported in large
//! batches, without waiting for the disk, so that 10M events take a minute or two.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::growth_measure::{self as measure, Fill};
use super::{load_average, load_text};
use eshost_store::{EventStore, Store, StoreConfig};

/// What to run.
#[derive(Debug, Clone)]
pub struct GrowthBenchOptions {
    /// The bank-account component (for the cold aggregate loads).
    pub plugin: PathBuf,
    /// Store sizes (events) at which to measure, ascending; the last is the fill target.
    pub stages: Vec<u64>,
    /// Accounts (streams) the events are spread over, round robin.
    pub streams: u64,
    /// Seconds of durable appends per stage and kind.
    pub append_seconds: f64,
    /// Accounts in the hot set the first kind of appends goes to (the same at every stage).
    pub hot_accounts: u64,
    /// Concurrent appenders, each with one append in flight, to random accounts.
    pub appenders: usize,
    /// Stream reads (whole random accounts) per stage.
    pub stream_reads: usize,
    /// Cold aggregate loads (random accounts) per stage.
    pub cold_loads: usize,
    /// Events of `$all` scanned per stage (one pass from position 1, first thing after open).
    pub scan_events: u64,
    /// redb's page cache, MiB (the store's default when `None`).
    pub cache_mib: Option<usize>,
    /// Whether to time a start-up after a SIGKILL with the write-ahead log full.
    pub crash_startup: bool,
    /// Where to put the scratch store (the system temp dir by default); removed at the end.
    pub dir: Option<PathBuf>,
}

/// The figures of one stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// Events in the store when the stage's measurements began.
    pub events: u64,
    /// Seconds the fill up to this stage took (set-up, not durable).
    pub fill_seconds: f64,
    /// `Store::open` after a clean close: open, format check, write-ahead log recovery.
    pub startup_ms: f64,
    /// `Store::open` after a SIGKILL with up to a checkpoint's worth of events only in the log.
    pub crash_startup_ms: Option<f64>,
    /// Durable appends per second, single events to random accounts of the hot set.
    pub append_events_per_sec: f64,
    /// Append latency p50, microseconds.
    pub append_p50_us: u64,
    /// Append latency p99, microseconds.
    pub append_p99_us: u64,
    /// Durable appends per second, single events to accounts drawn from all of them: each
    /// event touches another part of the stream index.
    pub uniform_append_events_per_sec: f64,
    /// Its latency p99, microseconds.
    pub uniform_append_p99_us: u64,
    /// Mean time to read one whole account, microseconds.
    pub stream_read_us: f64,
    /// Mean events per account read.
    pub stream_read_events: f64,
    /// Mean cold aggregate load (fresh instance, read, apply, state), microseconds.
    pub cold_load_us: f64,
    /// `$all` read rate, events per second: one pass from position 1 right after the open.
    pub all_scan_events_per_sec: f64,
    /// The same pass again, straight after.
    pub warm_all_scan_events_per_sec: f64,
    /// Size of `events.redb` when the stage began.
    pub events_file_bytes: u64,
    /// Size of the two write-ahead log files together.
    pub wal_file_bytes: u64,
    /// `events_file_bytes` per event.
    pub bytes_per_event: f64,
    /// Resident memory of the benchmark process at the end of the stage, store open, MiB.
    pub rss_mib: f64,
    /// Load averages after the stage.
    pub load_average: Option<[f64; 3]>,
}

/// What it measured.
#[derive(Debug, Clone, Serialize)]
pub struct GrowthBenchReport {
    /// Accounts the events are spread over.
    pub streams: u64,
    /// redb's page cache, bytes (what memory should be bounded by).
    pub cache_bytes: usize,
    /// Events held in memory and the log before a checkpoint.
    pub checkpoint_events: usize,
    /// Each stage.
    pub stages: Vec<StageReport>,
    /// Accounts in the hot set.
    pub hot_accounts: u64,
    /// Last stage over first: appends/s to the hot set.
    pub append_ratio: f64,
    /// Last stage over first: appends/s drawn from all accounts.
    pub uniform_append_ratio: f64,
    /// Last stage over first: stream reads per second.
    pub stream_read_ratio: f64,
    /// Last stage over first: cold loads per second.
    pub cold_load_ratio: f64,
    /// Last stage over first: `$all` scan rate.
    pub all_scan_ratio: f64,
    /// Peak resident memory, MiB.
    pub peak_rss_mib: f64,
}

impl std::fmt::Display for GrowthBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "growth: {} accounts; redb cache {} MiB; checkpoint every {} events",
            self.streams,
            self.cache_bytes >> 20,
            self.checkpoint_events
        )?;
        let row = |f: &mut std::fmt::Formatter<'_>, name: &str, cells: Vec<String>| {
            write!(f, "  {name:<30}")?;
            for cell in cells {
                write!(f, " {cell:>14}")?;
            }
            writeln!(f)
        };
        let each = |value: &dyn Fn(&StageReport) -> String| -> Vec<String> {
            self.stages.iter().map(value).collect()
        };
        row(f, "events in store", each(&|s| s.events.to_string()))?;
        row(
            f,
            &format!("appends/s, {} hot accounts", self.hot_accounts),
            each(&|s| format!("{:.0}", s.append_events_per_sec)),
        )?;
        row(
            f,
            "  p50/p99 (us)",
            each(&|s| format!("{}/{}", s.append_p50_us, s.append_p99_us)),
        )?;
        row(
            f,
            "appends/s, all accounts",
            each(&|s| format!("{:.0}", s.uniform_append_events_per_sec)),
        )?;
        row(
            f,
            "  p99 (us)",
            each(&|s| s.uniform_append_p99_us.to_string()),
        )?;
        row(
            f,
            "stream read (us, events)",
            each(&|s| format!("{:.0} ({:.1})", s.stream_read_us, s.stream_read_events)),
        )?;
        row(
            f,
            "cold aggregate load (us)",
            each(&|s| format!("{:.0}", s.cold_load_us)),
        )?;
        row(
            f,
            "$all scan (events/s)",
            each(&|s| format!("{:.0}", s.all_scan_events_per_sec)),
        )?;
        row(
            f,
            "  again (events/s)",
            each(&|s| format!("{:.0}", s.warm_all_scan_events_per_sec)),
        )?;
        row(
            f,
            "start-up, clean (ms)",
            each(&|s| format!("{:.1}", s.startup_ms)),
        )?;
        row(
            f,
            "start-up after SIGKILL (ms)",
            each(&|s| {
                s.crash_startup_ms
                    .map_or("-".into(), |ms| format!("{ms:.1}"))
            }),
        )?;
        row(
            f,
            "events.redb (MiB)",
            each(&|s| format!("{:.1}", s.events_file_bytes as f64 / 1048576.0)),
        )?;
        row(
            f,
            "bytes per event",
            each(&|s| format!("{:.0}", s.bytes_per_event)),
        )?;
        row(
            f,
            "log files (MiB)",
            each(&|s| format!("{:.0}", s.wal_file_bytes as f64 / 1048576.0)),
        )?;
        row(
            f,
            "resident memory (MiB)",
            each(&|s| format!("{:.0}", s.rss_mib)),
        )?;
        row(
            f,
            "fill to here (s)",
            each(&|s| format!("{:.1}", s.fill_seconds)),
        )?;
        row(
            f,
            "load average (1 min)",
            each(&|s| {
                s.load_average
                    .map_or("-".into(), |load| format!("{:.2}", load[0]))
            }),
        )?;
        writeln!(
            f,
            "  last/first: appends {:.2} (all accounts {:.2}), stream reads {:.2}, cold loads {:.2}, \
             $all scan {:.2}",
            self.append_ratio,
            self.uniform_append_ratio,
            self.stream_read_ratio,
            self.cold_load_ratio,
            self.all_scan_ratio
        )?;
        write!(
            f,
            "  peak resident memory {:.0} MiB; load average {}",
            self.peak_rss_mib,
            load_text(load_average())
        )
    }
}

/// Runs the benchmark in a scratch store, removed at the end (also on failure).
pub fn run(options: &GrowthBenchOptions) -> anyhow::Result<GrowthBenchReport> {
    if options.stages.is_empty() || options.streams == 0 {
        bail!("give at least one stage and one stream");
    }
    let target = *options.stages.last().unwrap_or(&0);
    let parent = options.dir.clone().unwrap_or_else(std::env::temp_dir);
    // ~170 bytes of record and ~100 of index per event, and copy-on-write slack.
    let needed = target * 600 + (256 << 20);
    let free = measure::free_bytes(&parent)?;
    if free < needed {
        bail!(
            "{} has {} MiB free; {} events need about {} MiB (pass --dir elsewhere or fewer events)",
            parent.display(),
            free >> 20,
            target,
            needed >> 20
        );
    }
    let scratch = tempfile::tempdir_in(&parent)?;
    let dir = scratch.path().join("store");
    let mut config = StoreConfig::new(&dir);
    if let Some(cache_mib) = options.cache_mib {
        config.cache_bytes = cache_mib << 20;
    }
    let mut fill = Fill::new(options.streams);
    let mut stages = Vec::new();
    for &stage in &options.stages {
        let started = Instant::now();
        fill.fill_to(&config, stage)?;
        let fill_seconds = started.elapsed().as_secs_f64();
        stages.push(measure_stage(options, &config, &mut fill, fill_seconds)?);
    }
    drop(scratch);
    let first = &stages[0];
    let last = &stages[stages.len() - 1];
    Ok(GrowthBenchReport {
        streams: options.streams,
        cache_bytes: config.cache_bytes,
        checkpoint_events: config.index_flush_events,
        hot_accounts: options.hot_accounts,
        append_ratio: last.append_events_per_sec / first.append_events_per_sec,
        uniform_append_ratio: last.uniform_append_events_per_sec
            / first.uniform_append_events_per_sec,
        stream_read_ratio: first.stream_read_us / last.stream_read_us,
        cold_load_ratio: first.cold_load_us / last.cold_load_us,
        all_scan_ratio: last.all_scan_events_per_sec / first.all_scan_events_per_sec,
        peak_rss_mib: measure::memory().1,
        stages,
    })
}

/// Every measurement of one stage, on a durable store opened for it.
fn measure_stage(
    options: &GrowthBenchOptions,
    config: &StoreConfig,
    fill: &mut Fill,
    fill_seconds: f64,
) -> anyhow::Result<StageReport> {
    let started = Instant::now();
    let store = Store::open(config.clone()).context("open the grown store")?;
    let startup_ms = started.elapsed().as_secs_f64() * 1000.0;
    let events = store.head();
    let file = |name: &str| std::fs::metadata(config.dir.join(name)).map_or(0, |m| m.len());
    let events_file_bytes = file(eshost_store::EVENTS_FILE);
    // Reads first, on the store as it was filled and reopened (redb's cache cold, every
    // event in redb); then the appends.
    let all_scan_events_per_sec = measure::scan(&store, options.scan_events)?;
    let warm_all_scan_events_per_sec = measure::scan(&store, options.scan_events)?;
    let reads = measure::stream_reads(&store, fill, options.stream_reads)?;
    let cold_load_us = measure::cold_loads(
        &store,
        &config.dir,
        &options.plugin,
        fill,
        options.cold_loads,
    )?;
    let seconds = Duration::from_secs_f64(options.append_seconds);
    let appends = measure::appends(
        &store,
        fill,
        options.hot_accounts,
        options.appenders,
        seconds,
    )?;
    let uniform = measure::appends(&store, fill, options.streams, options.appenders, seconds)?;
    // With the store open, after everything above: caches as full as they get.
    let rss_mib = measure::memory().0;
    drop(store);
    let crash_startup_ms = if options.crash_startup {
        Some(measure::crash_startup(config)?)
    } else {
        None
    };
    Ok(StageReport {
        events,
        fill_seconds,
        startup_ms,
        crash_startup_ms,
        append_events_per_sec: appends.events_per_sec,
        append_p50_us: appends.p50_us,
        append_p99_us: appends.p99_us,
        uniform_append_events_per_sec: uniform.events_per_sec,
        uniform_append_p99_us: uniform.p99_us,
        stream_read_us: reads.0,
        stream_read_events: reads.1,
        cold_load_us,
        all_scan_events_per_sec,
        warm_all_scan_events_per_sec,
        events_file_bytes,
        wal_file_bytes: file("events.wal0") + file("events.wal1"),
        bytes_per_event: events_file_bytes as f64 / events.max(1) as f64,
        rss_mib,
        load_average: load_average(),
    })
}

/// The child of the crash start-up: appends (durably) to streams of its own until `events`
/// are acknowledged, says `ready`, then waits to be killed (or for its parent to go away,
/// which closes its stdin).
pub fn crash_child(store_dir: &Path, events: u64) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let store = Store::open(StoreConfig::new(store_dir))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(measure::crash_appends(&store, events))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}
