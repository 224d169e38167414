//! `eshost-bench`: the benchmarks. Each prints figures next to a baseline (or limit) measured
//! in the same run. A binary of its own, so that the product binary carries no benchmark code
//! and no sample plugin.

mod append;
mod append_pg;
mod archive;
mod archive_pg;
mod command;
mod growth;
mod growth_measure;
mod http;
mod http_external;
mod http_load;
mod load;
mod projection;
mod reactor;
mod replay;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Parser, Subcommand, ValueEnum};
use eshost_store::Durability;

/// Measure eshost: prints figures beside a baseline measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "eshost-bench", version, about, long_about = None)]
struct Cli {
    /// Which benchmark.
    #[command(subcommand)]
    command: BenchCommand,
}

fn main() -> ExitCode {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("ESHOST_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        BenchCommand::Append(args) => bench_append(args),
        BenchCommand::Replay(args) => bench_replay(args),
        BenchCommand::Command(args) => bench_command(args),
        BenchCommand::Load(args) => bench_load(args),
        BenchCommand::Projection(args) => bench_projection(args),
        BenchCommand::Reactor(args) => bench_reactor(args),
        BenchCommand::Archive(args) => bench_archive(args),
        BenchCommand::Http(args) => bench_http(args),
        BenchCommand::HttpLoad(args) => {
            http_load::run(&args).and_then(|report| print_report(&report, args.json))
        }
        BenchCommand::Growth(args) => bench_growth(args),
        BenchCommand::GrowthCrashChild(args) => growth::crash_child(&args.store, args.events),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("eshost-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `eshost-bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Concurrent single-event appends, durable by default, against raw redb inserts.
    Append(BenchAppendArgs),
    /// Replays one account's long history through the bank-account component, against the
    /// same aggregate compiled natively; also times a cold and a cached plugin load.
    Replay(BenchReplayArgs),
    /// Concurrent clients sending deposits through the command pipeline (durable).
    Command(BenchCommandArgs),
    /// Rebuilds one aggregate with a long history, replaying it and from a snapshot.
    Load(BenchLoadArgs),
    /// Rebuilds the balances projection over a large store through the projection runner,
    /// and times a hot swap from the file changing to the new version serving.
    Projection(BenchProjectionArgs),
    /// The transfer saga under load: funded accounts, transfers requested by concurrent
    /// clients, the saga carrying each out (debit, credit, complete); source events/s, saga
    /// commands/s, transfers/s end to end, and request-to-debit latency from the log.
    Reactor(BenchReactorArgs),
    /// Archives every event of a store of bank events: hot file size before and after,
    /// segment size (compression ratio), and `balances` rebuilt from the hot log vs from the
    /// archive.
    Archive(BenchArchiveArgs),
    /// Starts the real HTTP server in-process on a loopback port (scratch durable store,
    /// bank-account plugin) and sends deposits from concurrent keep-alive HTTP clients.
    Http(BenchHttpArgs),
    /// An HTTP load generator for a server in another process (keep-alive connections,
    /// raw appends, commands or `GET /health`); `http --external` runs it.
    HttpLoad(http_load::HttpLoadArgs),
    /// Fills a store stage by stage (10M events over 1M accounts by default) and measures,
    /// at each stage, appends, stream reads, cold loads, `$all` scans, start-up, file sizes
    /// and memory.
    Growth(BenchGrowthArgs),
    /// The child process `growth` kills to time a start-up after a crash.
    #[command(hide = true)]
    GrowthCrashChild(GrowthCrashChildArgs),
}

/// `eshost-bench growth`.
#[derive(Debug, Args)]
pub struct BenchGrowthArgs {
    /// The bank-account component (cold aggregate loads).
    #[arg(
        long,
        default_value = "plugins/target/wasm32-wasip2/release/bank_account.wasm"
    )]
    plugin: PathBuf,
    /// Store sizes at which to measure, comma-separated, ascending; the last is the fill
    /// target (at most 100,000,000).
    #[arg(long, value_delimiter = ',', default_value = "0,1000000,10000000")]
    stages: Vec<u64>,
    /// Accounts (streams) the events are spread over.
    #[arg(long, default_value_t = 1_000_000)]
    streams: u64,
    /// Seconds of durable appends per stage and kind (at most 600).
    #[arg(long, default_value_t = 3.0)]
    append_seconds: f64,
    /// Accounts in the hot set that the first kind of appends goes to.
    #[arg(long, default_value_t = 1_000)]
    hot_accounts: u64,
    /// Concurrent appenders.
    #[arg(long, default_value_t = 64)]
    appenders: usize,
    /// Stream reads per stage.
    #[arg(long, default_value_t = 2_000)]
    stream_reads: usize,
    /// Cold aggregate loads per stage.
    #[arg(long, default_value_t = 500)]
    cold_loads: usize,
    /// Events of `$all` scanned per stage, from position 1.
    #[arg(long, default_value_t = 1_000_000)]
    scan_events: u64,
    /// redb's page cache, MiB (default: the store's, 256).
    #[arg(long)]
    cache_mib: Option<usize>,
    /// Skip the start-up after a SIGKILL.
    #[arg(long)]
    no_crash: bool,
    /// Directory for the scratch store (default: the system temp dir); removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `eshost-bench growth-crash-child`.
#[derive(Debug, Args)]
pub struct GrowthCrashChildArgs {
    /// The store directory.
    #[arg(long)]
    store: PathBuf,
    /// Events to append (durably) before saying `ready`.
    #[arg(long)]
    events: u64,
}

/// `eshost-bench http`.
#[derive(Debug, Args)]
pub struct BenchHttpArgs {
    /// The bank-account component.
    #[arg(
        long,
        default_value = "plugins/target/wasm32-wasip2/release/bank_account.wasm"
    )]
    plugin: PathBuf,
    /// Concurrent HTTP clients (keep-alive connections to 127.0.0.1), each with one request
    /// in flight; at most 1024.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Accounts the deposits are spread over (opened first).
    #[arg(long, default_value_t = 1_000)]
    accounts: usize,
    /// Seconds to send (at most 600).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Threads of the clients' async runtime (the server has one per core).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Snapshot interval, events.
    #[arg(long, default_value_t = 1_000)]
    snapshot_every: u64,
    /// Directory for the scratch store (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Drive these running `eshost run` nodes (loopback ADDR:PORT, comma-separated; each
    /// client sticks to one, round-robin) instead of a host in this process. Their config
    /// must serve the bank-account aggregate.
    #[arg(long, value_delimiter = ',')]
    servers: Vec<std::net::SocketAddr>,
    /// Drive the in-process server from `eshost-bench http-load` in a child process instead:
    /// `GET /health` (the ceiling), raw appends and commands, at each of `--levels`.
    #[arg(long)]
    external: bool,
    /// With `--external`: numbers of connections, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    levels: Vec<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `eshost-bench projection` and `eshost-bench archive`.
#[derive(Debug, Args)]
pub struct BenchProjectionArgs {
    /// The balances component.
    #[arg(
        long,
        default_value = "plugins/target/wasm32-wasip2/release/balances.wasm"
    )]
    plugin: PathBuf,
    /// Events in the store.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Accounts the events are spread over.
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// Events per `handle` call.
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Directory for the scratch store (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `eshost-bench reactor`.
#[derive(Debug, Args)]
pub struct BenchReactorArgs {
    /// The directory with bank_account.wasm, transfer.wasm and transfer_saga.wasm.
    #[arg(long, default_value = "plugins/target/wasm32-wasip2/release")]
    plugins: PathBuf,
    /// Accounts, funded first.
    #[arg(long, default_value_t = 100)]
    accounts: usize,
    /// Transfers requested (at most 1,000,000).
    #[arg(long, default_value_t = 1_000)]
    transfers: usize,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Events per saga `handle` call.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Directory for the scratch store (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `eshost-bench archive`.
#[derive(Debug, Args)]
pub struct BenchArchiveArgs {
    #[command(flatten)]
    common: BenchProjectionArgs,
    /// A `postgres://USER@HOST:PORT/DB` URL: run against the PostgreSQL store there, in a
    /// scratch schema dropped afterwards.
    #[arg(long)]
    store: Option<String>,
}

/// `eshost-bench command`.
#[derive(Debug, Args)]
pub struct BenchCommandArgs {
    /// The bank-account component.
    #[arg(
        long,
        default_value = "plugins/target/wasm32-wasip2/release/bank_account.wasm"
    )]
    plugin: PathBuf,
    /// Concurrent clients, each with one command in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Accounts the deposits are spread over.
    #[arg(long, default_value_t = 1_000)]
    accounts: usize,
    /// Seconds to send.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Pipeline worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Snapshot interval, events.
    #[arg(long, default_value_t = 1_000)]
    snapshot_every: u64,
    /// Commit durability.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Immediate)]
    durability: DurabilityArg,
    /// Directory for the scratch store (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `eshost-bench load`.
#[derive(Debug, Args)]
pub struct BenchLoadArgs {
    /// The bank-account component.
    #[arg(
        long,
        default_value = "plugins/target/wasm32-wasip2/release/bank_account.wasm"
    )]
    plugin: PathBuf,
    /// Events in the account's history.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Timed loads of each kind (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Directory for the scratch store (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `eshost-bench replay`.
#[derive(Debug, Args)]
pub struct BenchReplayArgs {
    /// The bank-account component.
    #[arg(
        long,
        default_value = "plugins/target/wasm32-wasip2/release/bank_account.wasm"
    )]
    plugin: PathBuf,
    /// Events in the account's history.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Events per `apply` call.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Component cache to time loads against (default: a fresh temporary one).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Commit durability on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DurabilityArg {
    /// Every commit reaches the disk before it is acknowledged.
    Immediate,
    /// Commits stay in memory (no fsync); for comparison only.
    None,
}

/// `eshost-bench append`.
#[derive(Debug, Args)]
pub struct BenchAppendArgs {
    /// Concurrent appenders.
    #[arg(long, default_value_t = 64)]
    appenders: usize,
    /// Bytes of JSON data per event.
    #[arg(long, default_value_t = 200)]
    event_bytes: usize,
    /// Seconds to run each phase.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Commit durability.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Immediate)]
    durability: DurabilityArg,
    /// Events per commit in the raw redb baseline.
    #[arg(long, default_value_t = 1000)]
    baseline_batch: usize,
    /// Directory for the scratch stores (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Bytes of personal data per event, sealed per subject (0: none).
    #[arg(long, default_value_t = 0)]
    personal_bytes: usize,
    /// A `postgres://USER@HOST:PORT/DB` URL: run against the PostgreSQL store there, in a
    /// scratch schema dropped afterwards, with raw batched INSERTs on the same database as
    /// the baseline.
    #[arg(long)]
    store: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn bench_append(args: BenchAppendArgs) -> anyhow::Result<()> {
    if args.appenders == 0 || args.seconds.is_nan() || args.seconds <= 0.0 {
        bail!("--appenders and --seconds must be positive");
    }
    let options = append::AppendBenchOptions {
        appenders: args.appenders,
        event_bytes: args.event_bytes,
        duration: Duration::from_secs_f64(args.seconds),
        durability: match args.durability {
            DurabilityArg::Immediate => Durability::Immediate,
            DurabilityArg::None => Durability::None,
        },
        baseline_batch: args.baseline_batch.max(1),
        dir: args.dir,
        personal_bytes: args.personal_bytes,
        store: args.store,
    };
    let report = append::run(&options)?;
    print_report(&report, args.json)
}

fn bench_growth(args: BenchGrowthArgs) -> anyhow::Result<()> {
    require_plugin(&args.plugin)?;
    let ascending = args.stages.windows(2).all(|pair| pair[0] < pair[1]);
    if args.stages.is_empty() || !ascending || args.stages.last() > Some(&100_000_000) {
        bail!("--stages must be ascending, at most 100,000,000");
    }
    if args.streams == 0 || args.appenders == 0 {
        bail!("--streams and --appenders must be positive");
    }
    if args.append_seconds.is_nan() || args.append_seconds <= 0.0 || args.append_seconds > 600.0 {
        bail!("--append-seconds must be positive and at most 600");
    }
    let options = growth::GrowthBenchOptions {
        plugin: args.plugin,
        stages: args.stages,
        streams: args.streams,
        append_seconds: args.append_seconds,
        hot_accounts: args.hot_accounts,
        appenders: args.appenders,
        stream_reads: args.stream_reads,
        cold_loads: args.cold_loads,
        scan_events: args.scan_events,
        cache_mib: args.cache_mib,
        crash_startup: !args.no_crash,
        dir: args.dir,
    };
    let report = growth::run(&options)?;
    print_report(&report, args.json)
}

fn bench_command(args: BenchCommandArgs) -> anyhow::Result<()> {
    if args.seconds.is_nan() || args.seconds <= 0.0 {
        bail!("--seconds must be positive");
    }
    let defaults = command::CommandBenchOptions::default();
    let options = command::CommandBenchOptions {
        plugin: args.plugin,
        clients: args.clients,
        accounts: args.accounts,
        duration: Duration::from_secs_f64(args.seconds),
        workers: args.workers.unwrap_or(defaults.workers),
        durability: match args.durability {
            DurabilityArg::Immediate => Durability::Immediate,
            DurabilityArg::None => Durability::None,
        },
        snapshot_every: args.snapshot_every,
        dir: args.dir,
    };
    let report = command::run(&options)?;
    print_report(&report, args.json)
}

fn bench_http(args: BenchHttpArgs) -> anyhow::Result<()> {
    if args.seconds.is_nan() || args.seconds <= 0.0 || args.seconds > 600.0 {
        bail!("--seconds must be positive and at most 600");
    }
    if args.external {
        let options = http_external::ExternalOptions {
            plugin: args.plugin,
            levels: args.levels,
            seconds: args.seconds,
            accounts: args.accounts,
            generator_threads: args.client_threads,
            snapshot_every: args.snapshot_every,
            dir: args.dir,
        };
        return print_report(&http_external::run(&options)?, args.json);
    }
    let options = http::HttpBenchOptions {
        plugin: args.plugin,
        clients: args.clients,
        accounts: args.accounts,
        duration: Duration::from_secs_f64(args.seconds),
        client_threads: args.client_threads,
        snapshot_every: args.snapshot_every,
        dir: args.dir,
        servers: args.servers,
    };
    let report = http::run(&options)?;
    print_report(&report, args.json)
}

fn bench_load(args: BenchLoadArgs) -> anyhow::Result<()> {
    let options = load::LoadBenchOptions {
        plugin: args.plugin,
        events: args.events,
        runs: args.runs,
        dir: args.dir,
    };
    let report = load::run(&options)?;
    print_report(&report, args.json)
}

fn bench_replay(args: BenchReplayArgs) -> anyhow::Result<()> {
    require_plugin(&args.plugin)?;
    let options = replay::ReplayBenchOptions {
        plugin: args.plugin,
        events: args.events,
        batch: args.batch,
        cache_dir: args.cache_dir,
    };
    let report = replay::run(&options)?;
    print_report(&report, args.json)
}

fn bench_projection(args: BenchProjectionArgs) -> anyhow::Result<()> {
    require_plugin(&args.plugin)?;
    let options = projection::ProjectionBenchOptions {
        plugin: args.plugin,
        events: args.events,
        accounts: args.accounts,
        batch: args.batch.max(1),
        dir: args.dir,
    };
    let report = projection::run(&options)?;
    print_report(&report, args.json)
}

fn bench_reactor(args: BenchReactorArgs) -> anyhow::Result<()> {
    if args.transfers > 1_000_000 {
        bail!("--transfers must be at most 1,000,000");
    }
    let options = reactor::ReactorBenchOptions {
        plugins: args.plugins,
        accounts: args.accounts,
        transfers: args.transfers,
        clients: args.clients,
        batch: args.batch,
        dir: args.dir,
    };
    let report = reactor::run(&options)?;
    print_report(&report, args.json)
}

fn bench_archive(args: BenchArchiveArgs) -> anyhow::Result<()> {
    let BenchArchiveArgs {
        common: args,
        store,
    } = args;
    require_plugin(&args.plugin)?;
    let options = archive::ArchiveBenchOptions {
        plugin: args.plugin,
        events: args.events,
        accounts: args.accounts,
        batch: args.batch.max(1),
        dir: args.dir,
    };
    let report = match store {
        Some(url) => archive_pg::run(&options, &url)?,
        None => archive::run(&options)?,
    };
    print_report(&report, args.json)
}

/// A benchmark's report: one JSON object with `--json`, else its table.
fn print_report(
    report: &(impl serde::Serialize + std::fmt::Display),
    json: bool,
) -> anyhow::Result<()> {
    if json {
        print_json(report)
    } else {
        println!("{report}");
        Ok(())
    }
}

/// Refuse early, with the build command, when a benchmark's plugin file is not there.
fn require_plugin(plugin: &std::path::Path) -> anyhow::Result<()> {
    if !plugin.exists() {
        bail!(
            "{} not found; build the plugins first: cargo build --release --target \
             wasm32-wasip2 --manifest-path plugins/Cargo.toml (or pass --plugin)",
            plugin.display()
        );
    }
    Ok(())
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// The value at `quantile` (0..=1) of `sorted` (nearest rank; 0 when empty).
pub(crate) fn percentile(sorted: &[u64], quantile: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// The 1, 5 and 15 minute load averages, where the OS tells them (Linux): benchmark figures
/// on a shared machine mean little without them.
pub(crate) fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// Load averages as a table cell.
pub(crate) fn load_text(load: Option<[f64; 3]>) -> String {
    match load {
        Some([one, five, fifteen]) => format!("{one:.2} {five:.2} {fifteen:.2}"),
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.5), 50);
        assert_eq!(percentile(&values, 0.99), 99);
        assert_eq!(percentile(&values, 1.0), 100);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
