//! `eshost-bench load`: rebuilds one bank account with a long history, cold (a fresh plugin
//! instance, no cache), by replaying every event and from a snapshot.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::{load_average, load_text};
use eshost_core::aggregate::{AggregateConfig, Aggregates, At, EngineConfig};
use eshost_core::upcast::UpcasterChain;
use eshost_core::views::Views;
use eshost_runtime::{Runtime, RuntimeConfig};
use eshost_store::{AppendRequest, Durability, ExpectedVersion, ProposedEvent, Store, StoreConfig};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadBenchOptions {
    /// The bank-account component.
    pub plugin: PathBuf,
    /// Events in the account's history.
    pub events: usize,
    /// Timed loads of each kind; the median is reported.
    pub runs: usize,
    /// Where to put the scratch store (a temporary directory by default).
    pub dir: Option<PathBuf>,
}

impl Default for LoadBenchOptions {
    fn default() -> Self {
        LoadBenchOptions {
            plugin: PathBuf::from("plugins/target/wasm32-wasip2/release/bank_account.wasm"),
            events: 100_000,
            runs: 5,
            dir: None,
        }
    }
}

/// What it measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadBenchReport {
    /// Events in the history.
    pub events: usize,
    /// Events per `apply` call.
    pub apply_batch: usize,
    /// Median time to build the state by replaying every event: fresh instance, read, apply,
    /// `state()`. Milliseconds.
    pub load_ms: f64,
    /// The first such load (colder page cache).
    pub first_load_ms: f64,
    /// Replay speed of the median load.
    pub events_per_sec: f64,
    /// Median time to build it from a snapshot covering the history.
    pub load_with_snapshot_ms: f64,
    /// The snapshot's size.
    pub snapshot_bytes: usize,
    /// Whether both ways gave the same state.
    pub states_match: bool,
    /// 1, 5 and 15 minute load averages when the run ended (the machine may be shared).
    pub load_average: Option<[f64; 3]>,
}

impl std::fmt::Display for LoadBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "load: one aggregate, {} events, apply batches of {}",
            self.events, self.apply_batch
        )?;
        writeln!(
            f,
            "  {:<28} {:>14.1}",
            "replay all (ms, median)", self.load_ms
        )?;
        writeln!(
            f,
            "  {:<28} {:>14.1}",
            "replay all, first (ms)", self.first_load_ms
        )?;
        writeln!(f, "  {:<28} {:>14.0}", "events/s", self.events_per_sec)?;
        writeln!(
            f,
            "  {:<28} {:>14.2}",
            "from snapshot (ms, median)", self.load_with_snapshot_ms
        )?;
        writeln!(f, "  {:<28} {:>14}", "snapshot bytes", self.snapshot_bytes)?;
        writeln!(f, "  {:<28} {:>14}", "states match", self.states_match)?;
        write!(
            f,
            "  {:<28} {:>14}",
            "load average",
            load_text(self.load_average)
        )
    }
}

/// Runs the benchmark in a scratch store.
pub fn run(options: &LoadBenchOptions) -> anyhow::Result<LoadBenchReport> {
    anyhow::ensure!(options.events >= 1, "the history needs at least one event");
    let scratch = match &options.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let mut config = StoreConfig::new(scratch.path());
    // Writing the history is set-up, not the measurement.
    config.durability = Durability::None;
    let store = Store::open(config)?;
    let id = "account-1";
    let mut written = 0;
    while written < options.events {
        let count = (options.events - written).min(1_000);
        let events = (written..written + count)
            .map(|index| {
                if index == 0 {
                    ProposedEvent::new("AccountOpened", r#"{"owner":"bench","currency":"USD"}"#)
                } else {
                    let data = format!(r#"{{"amount":{},"currency":"USD"}}"#, 1 + index % 100);
                    ProposedEvent::new("FundsDeposited", data).with_schema_version(2)
                }
            })
            .collect();
        store.append_blocking(AppendRequest::new(id, ExpectedVersion::Any, events))?;
        written += count;
    }

    let views = Views::open(scratch.path())?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let plugin = runtime.load_aggregate(&options.plugin)?;
    let name = plugin.info().name.clone();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let _entered = tokio.enter();
    let engine = EngineConfig::default();
    let apply_batch = engine.apply_batch;
    let aggregates = Aggregates::new(
        Arc::new(store.clone()),
        views,
        UpcasterChain::empty(),
        engine,
    )?;
    aggregates.register(plugin, AggregateConfig::every(0))?;

    let runs = options.runs.max(1);
    let mut replays = Vec::with_capacity(runs);
    let mut replayed = None;
    for _ in 0..runs {
        let started = Instant::now();
        let state = aggregates.state_blocking(&name, id, At::Latest, false)?;
        replays.push(started.elapsed().as_secs_f64() * 1000.0);
        replayed = Some(state.state);
    }
    let snapshot = aggregates
        .snapshot_blocking(&name, id)?
        .ok_or_else(|| anyhow::anyhow!("no snapshot of a stream with events"))?;
    let mut restores = Vec::with_capacity(runs);
    let mut restored = None;
    for _ in 0..runs {
        let started = Instant::now();
        let state = aggregates.state_blocking(&name, id, At::Latest, true)?;
        restores.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(state.from_snapshot.is_some(), "the snapshot was not used");
        restored = Some(state.state);
    }
    let first_load_ms = replays[0];
    let load_ms = median(&mut replays);
    Ok(LoadBenchReport {
        events: options.events,
        apply_batch,
        load_ms,
        first_load_ms,
        events_per_sec: options.events as f64 / (load_ms / 1000.0),
        load_with_snapshot_ms: median(&mut restores),
        snapshot_bytes: snapshot.state.len(),
        states_match: replayed == restored,
        load_average: load_average(),
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
