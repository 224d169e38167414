//! `eshost-bench archive`: what archiving a store's events gives back and costs. Fills a
//! store with bank events, rebuilds `balances` from the hot log, archives every event, then
//! rebuilds it again from the segments; reports the hot file before and after (both
//! compacted), the segments' size against the records' (the compression ratio), the time to
//! archive, and both rebuilds and `$all` scans side by side. With `--store postgres://...`,
//! the same on the PostgreSQL store (`archive_pg`).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use eshost_core::projection::{ProjectionConfig, Projections};
use eshost_core::views::Views;
use eshost_runtime::{Runtime, RuntimeConfig};
use eshost_store::{
    AllRead, ArchiveCut, Durability, EVENTS_FILE, EventStore, Store, StoreConfig, compact_redb,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct ArchiveBenchOptions {
    /// The balances component.
    pub plugin: PathBuf,
    /// Events in the store.
    pub events: u64,
    /// Accounts they are spread over.
    pub accounts: u64,
    /// Events per `handle` call.
    pub batch: usize,
    /// Where to put the scratch store (a temporary directory by default).
    pub dir: Option<PathBuf>,
}

/// What it measured.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveBenchReport {
    /// Events in the store.
    pub events: u64,
    /// `events.redb`, compacted, with every event hot (PostgreSQL: the `events` table).
    pub hot_bytes_before: u64,
    /// `events.redb`, compacted, once every event is archived (indexes stay hot).
    pub hot_bytes_after: u64,
    /// The segment files.
    pub archive_bytes: u64,
    /// The records they hold, uncompressed.
    pub raw_bytes: u64,
    /// `raw_bytes / archive_bytes`.
    pub compression_ratio: f64,
    /// Segments written.
    pub segments: usize,
    /// Seconds to archive every event (read, compress, sync, delete from the hot table).
    pub archive_seconds: f64,
    /// Seconds to scan `$all` from the hot log, and from the segments.
    pub scan_hot_seconds: f64,
    /// See `scan_hot_seconds`.
    pub scan_archive_seconds: f64,
    /// Seconds to rebuild `balances` from the hot log, and from the segments.
    pub rebuild_hot_seconds: f64,
    /// See `rebuild_hot_seconds`.
    pub rebuild_archive_seconds: f64,
    /// 1-minute load average when the run ended.
    pub load_average: Option<f64>,
}

impl std::fmt::Display for ArchiveBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = |seconds: f64| self.events as f64 / seconds;
        writeln!(f, "archive: {} bank events", self.events)?;
        let rows: [(&str, String); 12] = [
            ("hot file before (bytes)", self.hot_bytes_before.to_string()),
            ("hot file after (bytes)", self.hot_bytes_after.to_string()),
            ("archive segments (bytes)", self.archive_bytes.to_string()),
            ("records uncompressed (bytes)", self.raw_bytes.to_string()),
            (
                "compression ratio",
                format!("{:.2}", self.compression_ratio),
            ),
            ("segments", self.segments.to_string()),
            ("archive seconds", format!("{:.2}", self.archive_seconds)),
            (
                "$all scan hot events/s",
                format!("{:.0}", rate(self.scan_hot_seconds)),
            ),
            (
                "$all scan archive events/s",
                format!("{:.0}", rate(self.scan_archive_seconds)),
            ),
            (
                "rebuild hot events/s",
                format!("{:.0}", rate(self.rebuild_hot_seconds)),
            ),
            (
                "rebuild archive events/s",
                format!("{:.0}", rate(self.rebuild_archive_seconds)),
            ),
            (
                "load average (1 min)",
                self.load_average
                    .map_or("n/a".into(), |l| format!("{l:.2}")),
            ),
        ];
        for (index, (name, value)) in rows.iter().enumerate() {
            let end = if index + 1 == rows.len() { "" } else { "\n" };
            write!(f, "  {name:<34} {value:>14}{end}")?;
        }
        Ok(())
    }
}

fn open(dir: &Path) -> anyhow::Result<Store> {
    let mut config = StoreConfig::new(dir);
    config.durability = Durability::None;
    Ok(Store::open(config)?)
}

/// Seconds to read every event of `$all` once.
pub(crate) fn scan(store: &dyn EventStore) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut seen = 0u64;
    store.visit_all(&AllRead::from(1), &mut |_| {
        seen += 1;
        ControlFlow::Continue(())
    })?;
    anyhow::ensure!(seen == store.head(), "the scan saw {seen} events");
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds for the runner to take `balances` (in fresh views under `views_dir`) to the head.
pub(crate) fn rebuild(
    store: Arc<dyn EventStore>,
    runtime: &Runtime,
    plugin: &Path,
    batch: usize,
    views_dir: &Path,
) -> anyhow::Result<f64> {
    let views = Views::open(views_dir)?;
    let projections = Projections::new(store.clone(), views, runtime.clone());
    let mut projection = ProjectionConfig::new("balances", plugin);
    projection.batch = batch;
    let started = Instant::now();
    projections.add(projection)?;
    let status = projections
        .wait_caught_up("balances", Duration::from_secs(3600))
        .ok_or_else(|| anyhow::anyhow!("the projection vanished"))?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        status.position == store.head(),
        "the rebuild stopped: {status:?}"
    );
    projections.shutdown();
    Ok(seconds)
}

/// Runs the benchmark in a scratch directory.
pub fn run(options: &ArchiveBenchOptions) -> anyhow::Result<ArchiveBenchReport> {
    let scratch = match &options.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let dir = scratch.path().join("store");
    let events_file = dir.join(EVENTS_FILE);
    {
        let store = open(&dir)?;
        super::projection::fill(&store, options.events, options.accounts)?;
    }
    let hot_bytes_before = compact_redb(&events_file)?.bytes_after;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(scratch.path().join("cache")),
        ..RuntimeConfig::default()
    })?;
    runtime.load_projection(&options.plugin)?;

    let store = open(&dir)?;
    let head = store.head();
    let scan_hot_seconds = scan(&store)?;
    let rebuild_hot_seconds = rebuild(
        Arc::new(store.clone()),
        &runtime,
        &options.plugin,
        options.batch,
        &scratch.path().join("views-hot"),
    )?;
    let started = Instant::now();
    let archived = store.archive(ArchiveCut::BeforePosition(head + 1))?;
    let archive_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(archived.archived_through == head, "archived {archived:?}");
    drop(store);
    let hot_bytes_after = compact_redb(&events_file)?.bytes_after;

    let store = open(&dir)?;
    let scan_archive_seconds = scan(&store)?;
    let rebuild_archive_seconds = rebuild(
        Arc::new(store.clone()),
        &runtime,
        &options.plugin,
        options.batch,
        &scratch.path().join("views-archive"),
    )?;
    anyhow::ensure!(
        store.verify()?.is_ok(),
        "the archived store does not verify"
    );
    let archive_bytes: u64 = archived.segments.iter().map(|s| s.bytes).sum();
    let raw_bytes: u64 = archived.segments.iter().map(|s| s.raw_bytes).sum();
    Ok(ArchiveBenchReport {
        events: head,
        hot_bytes_before,
        hot_bytes_after,
        archive_bytes,
        raw_bytes,
        compression_ratio: raw_bytes as f64 / archive_bytes.max(1) as f64,
        segments: archived.segments.len(),
        archive_seconds,
        scan_hot_seconds,
        scan_archive_seconds,
        rebuild_hot_seconds,
        rebuild_archive_seconds,
        load_average: super::projection::load_average(),
    })
}
