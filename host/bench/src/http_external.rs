//! `eshost-bench http --external`: the real server in this process, driven by
//! `eshost-bench http-load` in a child process, for each kind of request (the do-nothing
//! `GET /health` ceiling, raw appends, commands) at each number of connections, in one run
//! against one server. The server's CPU (this process) is measured beside the generator's,
//! since on a small machine both share the cores.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde::Serialize;

use super::http::RunningServer;
use super::http_load::{HttpLoadReport, LoadKind, process_cpu_seconds};
use super::{load_average, load_text};

/// What to run.
#[derive(Debug, Clone)]
pub struct ExternalOptions {
    /// The bank-account component.
    pub plugin: PathBuf,
    /// Numbers of connections, one run per kind at each.
    pub levels: Vec<usize>,
    /// Seconds of each run.
    pub seconds: f64,
    /// Streams (accounts) the requests are spread over.
    pub accounts: usize,
    /// Threads of the generator's runtime.
    pub generator_threads: usize,
    /// Snapshot interval, events.
    pub snapshot_every: u64,
    /// Where to put the scratch store.
    pub dir: Option<PathBuf>,
}

/// One run: the generator's report and the server's CPU.
#[derive(Debug, Clone, Serialize)]
pub struct ExternalRun {
    /// What the generator measured.
    pub load: HttpLoadReport,
    /// CPU the server's process used during the run, in cores.
    pub server_cores: f64,
}

/// Every run.
#[derive(Debug, Clone, Serialize)]
pub struct ExternalReport {
    /// Cores of the machine, shared by server and generator.
    pub cores: usize,
    /// Threads of the generator's runtime.
    pub generator_threads: usize,
    /// Each run, in order.
    pub runs: Vec<ExternalRun>,
    /// Load averages at the end.
    pub load_average: Option<[f64; 3]>,
}

impl std::fmt::Display for ExternalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "http, load generator in another process ({} thread(s)), {} cores shared, durable",
            self.generator_threads, self.cores
        )?;
        writeln!(
            f,
            "  {:<8} {:>5} {:>10} {:>8} {:>8} {:>9} {:>7} {:>7} {:>7} {:>14}",
            "kind",
            "conns",
            "req/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "errors",
            "server",
            "gen",
            "load"
        )?;
        for run in &self.runs {
            let load = &run.load;
            writeln!(
                f,
                "  {:<8} {:>5} {:>10.0} {:>8} {:>8} {:>9} {:>7} {:>7.2} {:>7.2} {:>14}",
                format!("{:?}", load.kind).to_lowercase(),
                load.connections,
                load.requests_per_sec,
                load.p50_us,
                load.p99_us,
                load.p999_us,
                load.errors,
                run.server_cores,
                load.generator_cores,
                load_text(load.load_average)
            )?;
        }
        write!(
            f,
            "  (server, gen: CPU cores used)   load average at the end: {}",
            load_text(self.load_average)
        )
    }
}

/// Starts the server and runs the generator against it for each kind and level.
pub fn run(options: &ExternalOptions) -> anyhow::Result<ExternalReport> {
    ensure!(
        !options.levels.is_empty() && options.levels.iter().all(|&l| (1..=1024).contains(&l)),
        "--levels must be 1 to 1024 connections each"
    );
    let generator = std::env::current_exe().context("finding eshost-bench itself")?;
    let server = RunningServer::start(
        &options.plugin,
        options.snapshot_every,
        options.dir.as_deref(),
    )?;
    let url = format!("http://{}", server.address);
    let mut runs = Vec::new();
    let mut result = Ok(());
    'kinds: for kind in [LoadKind::Health, LoadKind::Append, LoadKind::Command] {
        for &connections in &options.levels {
            match run_generator(&generator, &url, kind, connections, options) {
                Ok(run) => runs.push(run),
                Err(error) => {
                    result = Err(error);
                    break 'kinds;
                }
            }
        }
    }
    server.stop();
    result?;
    Ok(ExternalReport {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        generator_threads: options.generator_threads.max(1),
        runs,
        load_average: load_average(),
    })
}

fn run_generator(
    generator: &std::path::Path,
    url: &str,
    kind: LoadKind,
    connections: usize,
    options: &ExternalOptions,
) -> anyhow::Result<ExternalRun> {
    let kind_name = format!("{kind:?}").to_lowercase();
    let mut child = Command::new(generator)
        .args(["http-load", "--json", "--url", url, "--kind", &kind_name])
        .args(["--connections", &connections.to_string()])
        .args(["--seconds", &options.seconds.to_string()])
        .args(["--accounts", &options.accounts.to_string()])
        .args(["--threads", &options.generator_threads.max(1).to_string()])
        .args(["--prefix", &format!("{kind_name}-{connections}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting eshost-bench http-load")?;
    // The accounts are opened before the timed part starts; the server's CPU is measured
    // over the whole child, which for commands includes the opening (a small share).
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let limit = Duration::from_secs_f64(options.seconds) + Duration::from_secs(120);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("http-load {kind_name} at {connections} connections did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cores = (process_cpu_seconds() - cpu_before) / elapsed;
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "http-load {kind_name} at {connections} connections failed: {}",
        output.status
    );
    let load: HttpLoadReport = serde_json::from_slice(&output.stdout)
        .context("reading the report of eshost-bench http-load")?;
    Ok(ExternalRun { load, server_cores })
}
