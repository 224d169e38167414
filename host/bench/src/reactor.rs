//! `eshost-bench reactor`: the transfer saga under load. An in-process host (built the way
//! `eshost run` builds it, durable store) serves `bank-account`, `transfer` and the
//! `transfer-saga` reactor (no fraud-watch: it would freeze the busy accounts); `accounts`
//! accounts are funded, then `clients` concurrent clients request `transfers` transfers. The
//! run ends when the saga has carried out everything and the log is still. The figures come
//! from the log itself: each request's `recorded_at` against the `FundsWithdrawn` it caused
//! (metadata `causation_id` = the request's event id), and the last debit and completion.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use eshost_core::aggregate::{At, CommandOptions};
use eshost_core::config::Config;
use eshost_core::host::Host;
use eshost_core::reactor::ReactorState;
use eshost_store::AllRead;

use super::{load_average, load_text, percentile};

const SAGA: &str = "transfer-saga";
/// Every account's opening balance, in cents: enough for every transfer to go through.
const OPENING: u64 = 1_000_000_000;
/// The longest wait for the saga to settle after the last request.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);

/// What to run.
#[derive(Debug, Clone)]
pub struct ReactorBenchOptions {
    /// The directory with `bank_account.wasm`, `transfer.wasm` and `transfer_saga.wasm`.
    pub plugins: PathBuf,
    /// Accounts, funded first.
    pub accounts: usize,
    /// Transfers requested.
    pub transfers: usize,
    /// Concurrent clients, each with one request in flight.
    pub clients: usize,
    /// Events per saga `handle` call.
    pub batch: usize,
    /// Where to put the scratch store (a temporary directory by default).
    pub dir: Option<PathBuf>,
}

/// What it measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReactorBenchReport {
    /// Accounts.
    pub accounts: usize,
    /// Transfers requested.
    pub transfers: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Events per saga `handle` call.
    pub batch: usize,
    /// Seconds from the first request sent to the saga settled (wall clock).
    pub seconds: f64,
    /// Requests accepted per second while the clients sent (the source event rate offered).
    pub requests_per_sec: f64,
    /// `TransferRequested` handled per second: requests over the span from the first
    /// request's `recorded_at` to the last debit's.
    pub source_events_per_sec: f64,
    /// Commands the saga sent per second (3 per completed transfer) over the span from the
    /// first request to the last completion.
    pub commands_per_sec: f64,
    /// Completed transfers per second over that same span, end to end.
    pub transfers_per_sec: f64,
    /// Commands the saga sent.
    pub commands_sent: u64,
    /// Transfers completed (every one is expected to).
    pub completed: u64,
    /// Transfers failed or refunded (none expected).
    pub not_completed: u64,
    /// From a request's `recorded_at` to its debit's, milliseconds.
    pub debit_p50_ms: u64,
    /// 99th percentile.
    pub debit_p99_ms: u64,
    /// Slowest.
    pub debit_max_ms: u64,
    /// Whether every request has exactly one debit caused by it and the money is conserved.
    pub verified: bool,
    /// 1, 5 and 15 minute load averages when the run ended (the machine may be shared).
    pub load_average: Option<[f64; 3]>,
}

impl std::fmt::Display for ReactorBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "reactor: transfer-saga, {} transfers over {} accounts, {} clients, batches of {}, \
             durable, {:.1} s",
            self.transfers, self.accounts, self.clients, self.batch, self.seconds
        )?;
        let rows = [
            ("requests/s (clients)", self.requests_per_sec),
            ("source events/s (handled)", self.source_events_per_sec),
            ("saga commands/s", self.commands_per_sec),
            ("transfers/s (end to end)", self.transfers_per_sec),
        ];
        for (name, value) in rows {
            writeln!(f, "  {name:<32} {value:>14.0}")?;
        }
        writeln!(
            f,
            "  {:<32} {:>14}",
            "request -> debit p50/p99/max (ms)",
            format!(
                "{}/{}/{}",
                self.debit_p50_ms, self.debit_p99_ms, self.debit_max_ms
            )
        )?;
        writeln!(f, "  {:<32} {:>14}", "commands sent", self.commands_sent)?;
        writeln!(
            f,
            "  {:<32} {:>14}",
            "completed / not completed",
            format!("{}/{}", self.completed, self.not_completed)
        )?;
        writeln!(f, "  {:<32} {:>14}", "verified", self.verified)?;
        write!(
            f,
            "  {:<32} {:>14}",
            "load average",
            load_text(self.load_average)
        )
    }
}

fn toml_string(path: &Path) -> String {
    Value::String(path.display().to_string()).to_string()
}

/// The account a transfer debits and the one it credits: every pair of distinct accounts,
/// spread over the run.
fn accounts_of(transfer: usize, accounts: usize) -> (String, String) {
    let from = transfer % accounts;
    let to = (from + 1 + (transfer / accounts) % (accounts - 1)) % accounts;
    (format!("account-{from}"), format!("account-{to}"))
}

/// Runs the benchmark in a scratch store.
pub fn run(options: &ReactorBenchOptions) -> anyhow::Result<ReactorBenchReport> {
    anyhow::ensure!(
        options.accounts >= 2 && options.transfers > 0 && options.clients > 0,
        "at least 2 accounts, 1 transfer and 1 client"
    );
    let plugins = std::path::absolute(&options.plugins)?;
    let plugin = |name: &str| -> anyhow::Result<String> {
        let file = plugins.join(format!("{name}.wasm"));
        anyhow::ensure!(
            file.is_file(),
            "{} not found; build the plugins first: cargo build --release --target \
             wasm32-wasip2 --manifest-path plugins/Cargo.toml (or pass --plugins)",
            file.display()
        );
        Ok(toml_string(&file))
    };
    let scratch = match &options.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    // The same path as `eshost run`: a config file, Config::parse, Host::start.
    let text = format!(
        "store = {store}\nlisten = \"127.0.0.1:0\"\nwatch_plugins = false\n\n\
         [[aggregates]]\nname = \"bank-account\"\nplugin = {bank}\n\n\
         [[aggregates]]\nname = \"transfer\"\nplugin = {transfer}\n\n\
         [[reactors]]\nname = \"{SAGA}\"\nplugin = {saga}\nbatch = {batch}\n",
        store = toml_string(&scratch.path().join("data")),
        bank = plugin("bank_account")?,
        transfer = plugin("transfer")?,
        saga = plugin("transfer_saga")?,
        batch = options.batch.max(1),
    );
    let config_file = scratch.path().join("eshost.toml");
    std::fs::write(&config_file, &text)?;
    let config = Config::parse(&text, &config_file)?;

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let host = {
        let _entered = tokio.enter();
        Host::start(&config)?
    };
    let result = tokio.block_on(measure(&host, options));
    host.shutdown();
    result
}

async fn execute(host: &Host, ty: &str, id: &str, command: String) -> anyhow::Result<()> {
    let reply = host
        .aggregates()
        .execute(ty, id, &command, CommandOptions::default())
        .await
        .with_context(|| format!("{ty} {id}"))?;
    anyhow::ensure!(reply.accepted(), "{ty} {id} refused {command}: {reply:?}");
    Ok(())
}

/// Sends `count` commands from `clients` concurrent tasks; `command(i)` is the i-th.
async fn concurrently(
    host: &Host,
    clients: usize,
    count: usize,
    command: impl Fn(usize) -> (&'static str, String, String) + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let command = Arc::new(command);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.min(count) {
        let (host, next, command) = (host.clone(), next.clone(), command.clone());
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return anyhow::Ok(());
                }
                let (ty, id, body) = command(index);
                execute(&host, ty, &id, body).await?;
            }
        });
    }
    while let Some(task) = tasks.join_next().await {
        task??;
    }
    Ok(())
}

/// Waits until the saga has carried out everything and appended nothing since: its effects
/// are new events, so "caught up" holds only once the head stays where it was.
fn settle(host: &Host) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let head = host.store().head();
        let left = deadline.saturating_duration_since(Instant::now());
        let (status, caught_up) = host.reactors().wait_caught_up(SAGA, left)?;
        anyhow::ensure!(
            status.state == ReactorState::Running,
            "the saga stopped: {status:?}"
        );
        anyhow::ensure!(caught_up, "the saga did not settle in time: {status:?}");
        if host.store().head() == head {
            return Ok(());
        }
    }
}

/// What the log says about the transfers.
#[derive(Default)]
struct Tally {
    /// Per request's event id: its `recorded_at`.
    requested: HashMap<String, u64>,
    first_request_ms: Option<u64>,
    /// Request → debit, ms; one per debit whose cause is a request.
    debit_latencies: Vec<u64>,
    last_debit_ms: u64,
    last_completion_ms: u64,
    completed: u64,
    not_completed: u64,
}

fn tally(host: &Host) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let events = host.store().read_all(&AllRead::from(1))?;
    for event in &events {
        match event.event_type.as_str() {
            "TransferRequested" => {
                tally
                    .requested
                    .insert(event.event_id.to_string(), event.recorded_at);
                tally.first_request_ms.get_or_insert(event.recorded_at);
            }
            "FundsWithdrawn" => {
                let metadata: Value = serde_json::from_str(&event.metadata)?;
                let cause = metadata["causation_id"].as_str().unwrap_or_default();
                if let Some(requested) = tally.requested.get(cause) {
                    tally
                        .debit_latencies
                        .push(event.recorded_at.saturating_sub(*requested));
                    tally.last_debit_ms = tally.last_debit_ms.max(event.recorded_at);
                }
            }
            "TransferCompleted" => {
                tally.completed += 1;
                tally.last_completion_ms = tally.last_completion_ms.max(event.recorded_at);
            }
            "TransferFailed" | "TransferRefunded" => tally.not_completed += 1,
            _ => {}
        }
    }
    Ok(tally)
}

async fn measure(host: &Host, options: &ReactorBenchOptions) -> anyhow::Result<ReactorBenchReport> {
    concurrently(host, options.clients, options.accounts, |index| {
        let command = format!(r#"{{"type":"Open","owner":"bench","initial_deposit":{OPENING}}}"#);
        ("bank-account", format!("account-{index}"), command)
    })
    .await?;
    // Let the saga pass the openings: the measured span holds transfers only.
    let settled = host.clone();
    tokio::task::spawn_blocking(move || settle(&settled)).await??;
    let commands_before = host.reactors().status(SAGA)?.commands_sent;

    let accounts = options.accounts;
    let started = Instant::now();
    concurrently(host, options.clients, options.transfers, move |index| {
        let (from, to) = accounts_of(index, accounts);
        let amount = 1 + index % 100;
        let command =
            format!(r#"{{"type":"Request","from":"{from}","to":"{to}","amount":{amount}}}"#);
        ("transfer", format!("t-{index}"), command)
    })
    .await?;
    let sending = started.elapsed().as_secs_f64();
    let settled = host.clone();
    tokio::task::spawn_blocking(move || settle(&settled)).await??;
    let seconds = started.elapsed().as_secs_f64();
    let commands_sent = host.reactors().status(SAGA)?.commands_sent - commands_before;

    let tally = {
        let host = host.clone();
        tokio::task::spawn_blocking(move || tally(&host)).await??
    };
    let mut total = 0;
    for index in 0..options.accounts {
        let state = host
            .aggregates()
            .state("bank-account", &format!("account-{index}"), At::Latest)
            .await?;
        total += state.state["balance"].as_u64().unwrap_or(0);
    }
    let verified = tally.requested.len() == options.transfers
        && tally.debit_latencies.len() == options.transfers
        && total == OPENING * options.accounts as u64;

    let first = tally.first_request_ms.unwrap_or(0);
    // Spans in ms from the log's clock; at least 1 ms so a tiny run divides.
    let per_sec = |count: u64, until_ms: u64| {
        count as f64 / (until_ms.saturating_sub(first).max(1) as f64 / 1000.0)
    };
    let mut latencies = tally.debit_latencies;
    latencies.sort_unstable();
    Ok(ReactorBenchReport {
        accounts: options.accounts,
        transfers: options.transfers,
        clients: options.clients,
        batch: options.batch.max(1),
        seconds,
        requests_per_sec: options.transfers as f64 / sending,
        source_events_per_sec: per_sec(tally.requested.len() as u64, tally.last_debit_ms),
        commands_per_sec: per_sec(commands_sent, tally.last_completion_ms),
        transfers_per_sec: per_sec(tally.completed, tally.last_completion_ms),
        commands_sent,
        completed: tally.completed,
        not_completed: tally.not_completed,
        debit_p50_ms: percentile(&latencies, 0.50),
        debit_p99_ms: percentile(&latencies, 0.99),
        debit_max_ms: latencies.last().copied().unwrap_or(0),
        verified,
        load_average: load_average(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_go_between_two_distinct_accounts() {
        for accounts in [2, 3, 10] {
            for transfer in 0..100 {
                let (from, to) = accounts_of(transfer, accounts);
                assert_ne!(from, to, "transfer {transfer} over {accounts} accounts");
            }
        }
        assert_eq!(accounts_of(0, 10), ("account-0".into(), "account-1".into()));
        assert_eq!(
            accounts_of(10, 10),
            ("account-0".into(), "account-2".into())
        );
    }
}
