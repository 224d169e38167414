//! `eshost-bench http`: the real HTTP server in-process on a loopback port (built the way
//! `eshost run` builds it, over a scratch durable store with the bank-account component),
//! and concurrent keep-alive HTTP clients sending deposits, with latency percentiles. The
//! balances are checked over HTTP against the accepted deposits at the end.
//!
//! The clients run on their own async runtime in the same process; on a small machine they
//! compete with the server for the cores, which the report says (`client_threads`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use eshost_core::config::Config;
use eshost_server::Server;

use super::{load_average, load_text, percentile};

/// What to run.
#[derive(Debug, Clone)]
pub struct HttpBenchOptions {
    /// The bank-account component.
    pub plugin: PathBuf,
    /// Concurrent HTTP clients, each with one request in flight.
    pub clients: usize,
    /// Accounts the deposits are spread over.
    pub accounts: usize,
    /// How long the clients send.
    pub duration: Duration,
    /// Threads of the clients' async runtime.
    pub client_threads: usize,
    /// Snapshot interval, events.
    pub snapshot_every: u64,
    /// Where to put the scratch store (a temporary directory by default).
    pub dir: Option<PathBuf>,
    /// Drive these running nodes (each client sticks to one, round-robin) instead of a host
    /// started in-process: a cluster on one PostgreSQL log.
    pub servers: Vec<SocketAddr>,
}

impl Default for HttpBenchOptions {
    fn default() -> Self {
        HttpBenchOptions {
            plugin: PathBuf::from("plugins/target/wasm32-wasip2/release/bank_account.wasm"),
            clients: 64,
            accounts: 1_000,
            duration: Duration::from_secs(5),
            client_threads: 1,
            snapshot_every: 1_000,
            dir: None,
            servers: Vec::new(),
        }
    }
}

/// What it measured.
#[derive(Debug, Clone, Serialize)]
pub struct HttpBenchReport {
    /// Concurrent HTTP clients.
    pub clients: usize,
    /// Accounts.
    pub accounts: usize,
    /// Threads of the clients' runtime (the server's runtime has one per core).
    pub client_threads: usize,
    /// The nodes driven (0: the host in this process).
    pub servers: usize,
    /// Seconds the clients sent.
    pub seconds: f64,
    /// Commands answered with 200 (accepted).
    pub commands: u64,
    /// Accepted commands per second (every commit durable).
    pub commands_per_sec: f64,
    /// Latency percentiles of answered requests, microseconds (client side).
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest request.
    pub max_us: u64,
    /// Requests that failed (transport errors or a status other than 200).
    pub errors: u64,
    /// Whether every account's balance (read over HTTP) equals its opening plus its
    /// accepted deposits.
    pub balances_verified: bool,
    /// 1, 5 and 15 minute load averages when the run ended (the machine may be shared).
    pub load_average: Option<[f64; 3]>,
}

impl std::fmt::Display for HttpBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match self.servers {
            0 => "same process".to_owned(),
            servers => format!("against {servers} running node(s)"),
        };
        writeln!(
            f,
            "http: {} clients ({} client thread(s), {target}), {} accounts, durable, {:.1} s",
            self.clients, self.client_threads, self.accounts, self.seconds
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
        writeln!(f, "  {:<28} {:>14}", "errors", self.errors)?;
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

const OPENING: u64 = 100;

/// Runs the benchmark over a scratch store.
pub fn run(options: &HttpBenchOptions) -> anyhow::Result<HttpBenchReport> {
    anyhow::ensure!(
        options.clients > 0 && options.accounts > 0,
        "clients and accounts must be positive"
    );
    anyhow::ensure!(
        options.clients <= 1024,
        "at most 1024 clients (each holds a loopback connection)"
    );
    if !options.servers.is_empty() {
        anyhow::ensure!(
            options.servers.iter().all(|s| s.ip().is_loopback()),
            "only loopback servers"
        );
        return tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.client_threads.max(1))
            .enable_all()
            .thread_name("bench-client")
            .build()?
            .block_on(drive(options, &options.servers));
    }
    let server = RunningServer::start(
        &options.plugin,
        options.snapshot_every,
        options.dir.as_deref(),
    )?;
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.client_threads.max(1))
        .enable_all()
        .thread_name("bench-client")
        .build()?;
    let result = clients.block_on(drive(options, &[server.address]));

    server.stop();
    drop(clients);
    result
}

/// The real server (built the way `eshost run` builds it) on a loopback port, over a scratch
/// durable store with the bank-account component, on its own runtime.
pub(crate) struct RunningServer {
    /// Where it listens.
    pub address: SocketAddr,
    runtime: tokio::runtime::Runtime,
    host: Server,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    _scratch: tempfile::TempDir,
}

impl RunningServer {
    /// Starts it; the scratch store goes under `dir` (the system temp dir by default).
    pub(crate) fn start(
        plugin: &std::path::Path,
        snapshot_every: u64,
        dir: Option<&std::path::Path>,
    ) -> anyhow::Result<RunningServer> {
        let plugin = std::path::absolute(plugin)?;
        anyhow::ensure!(
            plugin.is_file(),
            "{} not found; build the plugins first: cargo build --release --target wasm32-wasip2 \
         --manifest-path plugins/Cargo.toml (or pass --plugin)",
            plugin.display()
        );
        let scratch = match &dir {
            Some(dir) => tempfile::tempdir_in(dir)?,
            None => tempfile::tempdir()?,
        };
        // The same path as `eshost run`: a config file, Config::parse, Host::start, the router.
        let text = format!(
            "store = {store}\nlisten = \"127.0.0.1:0\"\nwatch_plugins = false\n\n\
         [[aggregates]]\nname = \"bank-account\"\nplugin = {plugin}\nsnapshot_every = {every}\n",
            store = toml_string(&scratch.path().join("data")),
            plugin = toml_string(&plugin),
            every = snapshot_every,
        );
        let config_file = scratch.path().join("eshost.toml");
        std::fs::write(&config_file, &text)?;
        let config = Config::parse(&text, &config_file)?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("bench-server")
            .build()?;
        let host = {
            let _entered = runtime.enter();
            Server::start(&config)?
        };
        let listener = runtime.block_on(tokio::net::TcpListener::bind(config.listen))?;
        let address: SocketAddr = listener.local_addr()?;
        anyhow::ensure!(address.ip().is_loopback(), "not a loopback address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // The router starts the admin UI's sampler, a task on the server's runtime.
        let app = {
            let _entered = runtime.enter();
            host.router()
        };
        let serving = runtime.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });

        Ok(RunningServer {
            address,
            runtime,
            host,
            stop,
            serving,
            _scratch: scratch,
        })
    }

    /// Stops serving (waiting up to 10 s for open requests), shuts the host down and removes
    /// the scratch store.
    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        let serving = self.serving;
        self.runtime.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
        });
        self.host.shutdown();
        drop(self.runtime);
    }
}

fn toml_string(path: &std::path::Path) -> String {
    Value::String(path.display().to_string()).to_string()
}

async fn drive(
    options: &HttpBenchOptions,
    addresses: &[SocketAddr],
) -> anyhow::Result<HttpBenchReport> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(options.clients)
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()?;
    let bases: Vec<String> = addresses
        .iter()
        .map(|address| format!("http://{address}/aggregates/bank-account"))
        .collect();
    let base = bases[0].clone();
    let account = |index: usize| format!("{}/account-{index}", bases[index % bases.len()]);

    // Open the accounts, at most `clients` at a time.
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(options.clients));
    let mut opens = tokio::task::JoinSet::new();
    for index in 0..options.accounts {
        let (http, url, semaphore) = (http.clone(), account(index), semaphore.clone());
        opens.spawn(async move {
            let _permit = semaphore.acquire_owned().await?;
            let body = format!(r#"{{"type":"Open","owner":"bench","initial_deposit":{OPENING}}}"#);
            let response = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "opening {url}: HTTP {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
            anyhow::Ok(())
        });
    }
    while let Some(open) = opens.join_next().await {
        open??;
    }

    let started = Instant::now();
    let deadline = started + options.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..options.clients {
        let (http, base) = (http.clone(), bases[client % bases.len()].clone());
        let accounts = options.accounts;
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 14);
            let mut deposited = vec![0u64; accounts];
            let mut errors = 0u64;
            // A small LCG: each client walks the accounts in its own order.
            let mut seed =
                0x9e37_79b9_7f4a_7c15_u64 ^ (client as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
            while Instant::now() < deadline {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let index = ((seed >> 33) % accounts as u64) as usize;
                let amount = 1 + (seed >> 20) % 100;
                let sent = Instant::now();
                let response = http
                    .post(format!("{base}/account-{index}"))
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"type":"Deposit","amount":{amount}}}"#))
                    .send()
                    .await;
                let ok = match response {
                    Ok(response) => {
                        let status = response.status();
                        // Read the body so the connection goes back to the pool.
                        let body = response.bytes().await;
                        status == reqwest::StatusCode::OK && body.is_ok()
                    }
                    Err(_) => false,
                };
                if ok {
                    latencies.push(sent.elapsed().as_micros() as u64);
                    deposited[index] += amount;
                } else {
                    errors += 1;
                    // Do not spin on a failing server.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            (latencies, deposited, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut deposited = vec![0u64; options.accounts];
    let mut errors = 0;
    while let Some(client) = tasks.join_next().await {
        let (client_latencies, amounts, client_errors) = client?;
        latencies.extend(client_latencies);
        for (total, amount) in deposited.iter_mut().zip(amounts) {
            *total += amount;
        }
        errors += client_errors;
    }
    let seconds = started.elapsed().as_secs_f64();

    let mut balances_verified = true;
    for (index, amount) in deposited.iter().enumerate() {
        let state: Value = http
            .get(format!("{base}/account-{index}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
            .context("reading a balance")?;
        if state["state"]["balance"].as_u64() != Some(OPENING + amount) {
            balances_verified = false;
            break;
        }
    }

    latencies.sort_unstable();
    let commands = latencies.len() as u64;
    Ok(HttpBenchReport {
        clients: options.clients,
        accounts: options.accounts,
        client_threads: options.client_threads.max(1),
        servers: options.servers.len(),
        seconds,
        commands,
        commands_per_sec: commands as f64 / seconds,
        p50_us: percentile(&latencies, 0.50),
        p90_us: percentile(&latencies, 0.90),
        p99_us: percentile(&latencies, 0.99),
        max_us: latencies.last().copied().unwrap_or(0),
        errors,
        balances_verified,
        load_average: load_average(),
    })
}
