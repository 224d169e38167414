//! `eshost-bench projection`: rebuilds the `balances` projection over a store of bank events
//! through the real runner (read, convert, `handle`, commit with the checkpoint), and times a
//! hot swap from the file changing to the new version serving queries.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use eshost_core::projection::{ProjectionConfig, Projections};
use eshost_core::views::Views;
use eshost_runtime::{Runtime, RuntimeConfig};
use eshost_store::{
    AppendRequest, Durability, EventStore, ExpectedVersion, ProposedEvent, Store, StoreConfig,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct ProjectionBenchOptions {
    /// The balances component.
    pub plugin: PathBuf,
    /// Events in the store.
    pub events: u64,
    /// Accounts (streams) they are spread over.
    pub accounts: u64,
    /// Events per `handle` call.
    pub batch: usize,
    /// Where to put the scratch store (a temporary directory by default).
    pub dir: Option<PathBuf>,
}

/// What it measured.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionBenchReport {
    /// Events in the store.
    pub events: u64,
    /// Accounts.
    pub accounts: u64,
    /// Events per `handle` call.
    pub batch: usize,
    /// Seconds to write the store (setup, not measured further).
    pub setup_seconds: f64,
    /// Seconds for the runner to take `balances` from position 0 to the head.
    pub rebuild_seconds: f64,
    /// `events / rebuild_seconds`.
    pub events_per_sec: f64,
    /// Seconds to compile and check the new version when its file changed (cold cache).
    pub swap_check_seconds: f64,
    /// Seconds from the file changing to the new version answering queries (compile, check,
    /// shadow rebuild over the whole store, switch).
    pub swap_seconds: f64,
    /// 1-minute load average when the run ended.
    pub load_average: Option<f64>,
}

impl std::fmt::Display for ProjectionBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "projection: balances over {} events, {} accounts, batches of {}",
            self.events, self.accounts, self.batch
        )?;
        writeln!(
            f,
            "  {:<34} {:>12.0}",
            "rebuild events/s", self.events_per_sec
        )?;
        writeln!(
            f,
            "  {:<34} {:>12.2}",
            "rebuild seconds", self.rebuild_seconds
        )?;
        writeln!(
            f,
            "  {:<34} {:>12.2}",
            "swap: compile + check (s)", self.swap_check_seconds
        )?;
        writeln!(
            f,
            "  {:<34} {:>12.2}",
            "swap: file changed -> serving (s)", self.swap_seconds
        )?;
        writeln!(f, "  {:<34} {:>12.2}", "setup seconds", self.setup_seconds)?;
        match self.load_average {
            Some(load) => write!(f, "  {:<34} {:>12.2}", "load average (1 min)", load),
            None => write!(f, "  {:<34} {:>12}", "load average (1 min)", "n/a"),
        }
    }
}

/// The 1-minute load average, where the system tells it.
pub fn load_average() -> Option<f64> {
    super::load_average().map(|[one_minute, ..]| one_minute)
}

/// Appends `events` bank events over `accounts` streams in large group commits.
pub(crate) fn fill(store: &dyn EventStore, events: u64, accounts: u64) -> anyhow::Result<()> {
    let accounts = accounts.clamp(1, events.max(1));
    let per_account = events / accounts;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let chunk = 500u64;
    let mut pending = Vec::new();
    for account in 0..accounts {
        let count = per_account + u64::from(account < events % accounts);
        let mut written = 0;
        while written < count {
            let n = chunk.min(count - written);
            let batch = (written..written + n)
                .map(|i| match i {
                    0 => ProposedEvent::new(
                        "AccountOpened",
                        r#"{"initial_deposit":1000,"currency":"USD"}"#,
                    ),
                    i if i % 4 == 3 => {
                        ProposedEvent::new("FundsWithdrawn", format!(r#"{{"amount":{}}}"#, i % 50))
                    }
                    i => ProposedEvent::new(
                        "FundsDeposited",
                        format!(r#"{{"amount":{},"currency":"USD"}}"#, i % 100),
                    )
                    .with_schema_version(2),
                })
                .collect();
            pending.push(store.append(AppendRequest::new(
                format!("account-{account}"),
                ExpectedVersion::Any,
                batch,
            )));
            written += n;
            if pending.len() >= 256 {
                for append in pending.drain(..) {
                    runtime.block_on(append)?;
                }
            }
        }
    }
    for append in pending {
        runtime.block_on(append)?;
    }
    Ok(())
}

/// Appends a custom section to a component: same behaviour, another content hash.
fn another_version(component: &[u8]) -> Vec<u8> {
    let name = b"eshost-bench";
    let payload = b"v2";
    let mut bytes = component.to_vec();
    bytes.push(0); // custom section
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    bytes
}

/// Runs the benchmark in a scratch directory.
pub fn run(options: &ProjectionBenchOptions) -> anyhow::Result<ProjectionBenchReport> {
    let scratch = match &options.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let dir = scratch.path().join("store");
    let mut config = StoreConfig::new(&dir);
    config.durability = Durability::None;
    let store = Store::open(config)?;
    let started = Instant::now();
    fill(&store, options.events, options.accounts)?;
    let setup_seconds = started.elapsed().as_secs_f64();
    let head = store.head();

    // A fresh component cache: the swap includes a cold compile, as a new file would.
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(scratch.path().join("cache")),
        ..RuntimeConfig::default()
    })?;
    let plugin_file = scratch.path().join("balances.wasm");
    let original = std::fs::read(&options.plugin)?;
    std::fs::write(&plugin_file, &original)?;
    // Compile once before timing the rebuild: the rebuild measures the runner.
    runtime.load_projection(&plugin_file)?;

    let views = Views::open(&dir)?;
    let projections = Projections::new(Arc::new(store.clone()), views, runtime);
    let mut projection = ProjectionConfig::new("balances", &plugin_file);
    projection.batch = options.batch;
    let timeout = Duration::from_secs(3600);
    let started = Instant::now();
    projections.add(projection)?;
    let status = projections
        .wait_caught_up("balances", timeout)
        .ok_or_else(|| anyhow::anyhow!("the projection vanished"))?;
    let rebuild_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(status.position == head, "the rebuild stopped: {status:?}");

    let watcher = projections.watch_files()?;
    let changed = Instant::now();
    std::fs::write(&plugin_file, another_version(&original))?;
    let status = projections
        .wait_for("balances", timeout, |s| {
            s.rebuild.is_some() || s.active.generation > 1
        })
        .ok_or_else(|| anyhow::anyhow!("the projection vanished"))?;
    let swap_check_seconds = changed.elapsed().as_secs_f64();
    anyhow::ensure!(
        status.rebuild.is_some() || status.active.generation > 1,
        "the new version was not picked up: {status:?}"
    );
    let status = projections
        .wait_for("balances", timeout, |s| {
            s.active.generation > 1 && s.rebuild.is_none()
        })
        .ok_or_else(|| anyhow::anyhow!("the projection vanished"))?;
    let swap_seconds = changed.elapsed().as_secs_f64();
    anyhow::ensure!(
        status.active.generation > 1,
        "the swap did not finish: {status:?}"
    );
    projections.query("balances", "total", "null")?;
    drop(watcher);
    projections.shutdown();

    Ok(ProjectionBenchReport {
        events: head,
        accounts: options.accounts,
        batch: options.batch,
        setup_seconds,
        rebuild_seconds,
        events_per_sec: head as f64 / rebuild_seconds,
        swap_check_seconds,
        swap_seconds,
        load_average: load_average(),
    })
}
