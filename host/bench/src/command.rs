//! `eshost-bench command`: concurrent clients sending deposits through the command pipeline
//! (bank-account component, durable appends), with latency percentiles. The balances are
//! checked against the accepted deposits at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use eshost_core::aggregate::{
    AggregateConfig, Aggregates, At, CommandOptions, Decision, EngineConfig,
};
use eshost_core::upcast::UpcasterChain;
use eshost_core::views::Views;
use eshost_runtime::{Runtime, RuntimeConfig};
use eshost_store::{Durability, Store, StoreConfig};

use super::{load_average, load_text, percentile};

/// What to run.
#[derive(Debug, Clone)]
pub struct CommandBenchOptions {
    /// The bank-account component.
    pub plugin: PathBuf,
    /// Concurrent clients, each with one command in flight.
    pub clients: usize,
    /// Accounts the deposits are spread over.
    pub accounts: usize,
    /// How long the clients send.
    pub duration: Duration,
    /// Pipeline worker threads.
    pub workers: usize,
    /// Whether each commit waits for the disk.
    pub durability: Durability,
    /// Snapshot interval, events.
    pub snapshot_every: u64,
    /// Where to put the scratch store (a temporary directory by default).
    pub dir: Option<PathBuf>,
}

impl Default for CommandBenchOptions {
    fn default() -> Self {
        CommandBenchOptions {
            plugin: PathBuf::from("plugins/target/wasm32-wasip2/release/bank_account.wasm"),
            clients: 64,
            accounts: 1_000,
            duration: Duration::from_secs(5),
            workers: EngineConfig::default().workers,
            durability: Durability::Immediate,
            snapshot_every: AggregateConfig::default().snapshot_every,
            dir: None,
        }
    }
}

/// What it measured.
#[derive(Debug, Clone, Serialize)]
pub struct CommandBenchReport {
    /// Concurrent clients.
    pub clients: usize,
    /// Accounts.
    pub accounts: usize,
    /// Pipeline workers.
    pub workers: usize,
    /// `immediate` or `none`.
    pub durability: &'static str,
    /// Seconds the clients sent.
    pub seconds: f64,
    /// Commands answered (accepted or refused).
    pub commands: u64,
    /// Answered commands per second.
    pub commands_per_sec: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest command.
    pub max_us: u64,
    /// Commands refused by the aggregate (none expected).
    pub refused: u64,
    /// Decisions served from a worker's cache.
    pub cache_hits: u64,
    /// States built from the store.
    pub rebuilds: u64,
    /// Conflict retries.
    pub retries: u64,
    /// Store commits during the run; appends per commit shows the group commit at work.
    pub commits: u64,
    /// Mean appends per commit.
    pub appends_per_commit: f64,
    /// Whether every account's balance equals its opening plus its accepted deposits.
    pub balances_verified: bool,
    /// 1, 5 and 15 minute load averages when the run ended (the machine may be shared).
    pub load_average: Option<[f64; 3]>,
}

impl std::fmt::Display for CommandBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "command: {} clients, {} accounts, {} workers, durability {}, {:.1} s",
            self.clients, self.accounts, self.workers, self.durability, self.seconds
        )?;
        writeln!(f, "  {:<28} {:>14.0}", "commands/s", self.commands_per_sec)?;
        writeln!(f, "  {:<28} {:>14}", "commands", self.commands)?;
        writeln!(
            f,
            "  {:<28} {:>14}",
            "latency p50/p90/p99 (us)",
            format!("{}/{}/{}", self.p50_us, self.p90_us, self.p99_us)
        )?;
        writeln!(f, "  {:<28} {:>14}", "latency max (us)", self.max_us)?;
        writeln!(f, "  {:<28} {:>14}", "refused", self.refused)?;
        writeln!(
            f,
            "  {:<28} {:>14}",
            "cache hits/rebuilds/retries",
            format!("{}/{}/{}", self.cache_hits, self.rebuilds, self.retries)
        )?;
        writeln!(
            f,
            "  {:<28} {:>14.1}",
            "appends per commit", self.appends_per_commit
        )?;
        writeln!(
            f,
            "  {:<28} {:>14}",
            "balances verified", self.balances_verified
        )?;
        write!(
            f,
            "  {:<28} {:>14}",
            "load average",
            load_text(self.load_average)
        )
    }
}

/// Runs the benchmark in a scratch store.
pub fn run(options: &CommandBenchOptions) -> anyhow::Result<CommandBenchReport> {
    anyhow::ensure!(
        options.clients > 0 && options.accounts > 0,
        "clients and accounts must be positive"
    );
    let scratch = match &options.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let mut config = StoreConfig::new(scratch.path());
    config.durability = options.durability;
    let store = Store::open(config)?;
    let views = Views::open(scratch.path())?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let plugin = runtime.load_aggregate(&options.plugin)?;
    let name = plugin.info().name.clone();

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let _entered = tokio.enter();
    let aggregates = Aggregates::new(
        Arc::new(store.clone()),
        views,
        UpcasterChain::empty(),
        EngineConfig {
            workers: options.workers.max(1),
            cache_entries: options.accounts.max(1),
            ..EngineConfig::default()
        },
    )?;
    aggregates.register(plugin, AggregateConfig::every(options.snapshot_every))?;
    let account = |index: usize| format!("account-{index}");
    const OPENING: u64 = 100;

    tokio.block_on(async {
        let mut opens = Vec::new();
        for index in 0..options.accounts {
            let (aggregates, name, id) = (aggregates.clone(), name.clone(), account(index));
            opens.push(tokio::spawn(async move {
                let command =
                    format!(r#"{{"type":"Open","owner":"bench","initial_deposit":{OPENING}}}"#);
                aggregates
                    .execute(&name, &id, &command, CommandOptions::default())
                    .await
            }));
        }
        for open in opens {
            anyhow::ensure!(open.await??.accepted(), "opening an account was refused");
        }
        anyhow::Ok(())
    })?;

    let commits_before = store.writer_stats().commits.load(Ordering::Relaxed);
    let appends_before = store.writer_stats().appends.load(Ordering::Relaxed);
    let stats_before = aggregates.stats();
    let started = Instant::now();
    let deadline = started + options.duration;
    let (latencies, deposited, refused) = tokio.block_on(async {
        let mut clients = Vec::new();
        for client in 0..options.clients {
            let (aggregates, name) = (aggregates.clone(), name.clone());
            let accounts = options.accounts;
            clients.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 14);
                let mut deposited = vec![0u64; accounts];
                let mut refused = 0u64;
                // A small LCG: each client walks the accounts in its own order.
                let mut seed =
                    0x9e37_79b9_7f4a_7c15_u64 ^ (client as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
                while Instant::now() < deadline {
                    seed = seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let index = ((seed >> 33) % accounts as u64) as usize;
                    let amount = 1 + (seed >> 20) % 100;
                    let command = format!(r#"{{"type":"Deposit","amount":{amount}}}"#);
                    let sent = Instant::now();
                    let reply = aggregates
                        .execute(
                            &name,
                            &format!("account-{index}"),
                            &command,
                            CommandOptions::default(),
                        )
                        .await?;
                    latencies.push(sent.elapsed().as_micros() as u64);
                    match reply.decision {
                        Decision::Accepted { .. } => deposited[index] += amount,
                        _ => refused += 1,
                    }
                }
                anyhow::Ok((latencies, deposited, refused))
            }));
        }
        let mut all = Vec::new();
        let mut deposited = vec![0u64; options.accounts];
        let mut refused = 0;
        for client in clients {
            let (latencies, amounts, client_refused) = client.await??;
            all.extend(latencies);
            for (total, amount) in deposited.iter_mut().zip(amounts) {
                *total += amount;
            }
            refused += client_refused;
        }
        anyhow::Ok((all, deposited, refused))
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let stats = aggregates.stats();
    let commits = store.writer_stats().commits.load(Ordering::Relaxed) - commits_before;
    let appends = store.writer_stats().appends.load(Ordering::Relaxed) - appends_before;

    let balances_verified = tokio.block_on(async {
        for (index, amount) in deposited.iter().enumerate() {
            let state = aggregates.state(&name, &account(index), At::Latest).await?;
            if state.state["balance"].as_u64() != Some(OPENING + amount) {
                return anyhow::Ok(false);
            }
        }
        anyhow::Ok(true)
    })?;

    let mut latencies = latencies;
    latencies.sort_unstable();
    let commands = latencies.len() as u64;
    Ok(CommandBenchReport {
        clients: options.clients,
        accounts: options.accounts,
        workers: options.workers.max(1),
        durability: match options.durability {
            Durability::Immediate => "immediate",
            Durability::None => "none",
        },
        seconds,
        commands,
        commands_per_sec: commands as f64 / seconds,
        p50_us: percentile(&latencies, 0.50),
        p90_us: percentile(&latencies, 0.90),
        p99_us: percentile(&latencies, 0.99),
        max_us: latencies.last().copied().unwrap_or(0),
        refused,
        cache_hits: stats.cache_hits - stats_before.cache_hits,
        rebuilds: stats.rebuilds - stats_before.rebuilds,
        retries: stats.retries - stats_before.retries,
        commits,
        appends_per_commit: appends as f64 / commits.max(1) as f64,
        balances_verified,
        load_average: load_average(),
    })
}
