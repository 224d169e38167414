//! `eshost-bench http-load`: an HTTP load generator meant to run in a process of its own, so
//! that the server's figures are not shared with clients on the server's runtime. Each
//! connection is a keep-alive HTTP/1.1 connection with one request in flight, written and
//! parsed by hand (a few hundred bytes per request: the generator should cost the server's
//! cores as little as it can). It reports requests/s and latency percentiles, and the CPU
//! time it spent itself, since on a small machine it shares the cores with the server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{load_average, load_text, percentile};

/// What each request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadKind {
    /// `POST /streams/{id}`: one raw event, expected version `any` (201, durable).
    Append,
    /// `POST /aggregates/bank-account/{id}`: a deposit through the command pipeline (200,
    /// durable); the accounts are opened first, untimed.
    Command,
    /// `GET /health`: the do-nothing ceiling of the server and this generator together.
    Health,
}

/// `eshost-bench http-load`.
#[derive(Debug, Clone, Args)]
pub struct HttpLoadArgs {
    /// The server, `http://127.0.0.1:PORT` (loopback only).
    #[arg(long)]
    pub url: String,
    /// Keep-alive connections, each with one request in flight (at most 1024).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds to send (at most 600).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// What each request does.
    #[arg(long, value_enum, default_value_t = LoadKind::Append)]
    pub kind: LoadKind,
    /// Streams (or accounts) the requests are spread over.
    #[arg(long, default_value_t = 1_000)]
    pub accounts: usize,
    /// Prefix of the stream and account ids (runs against one server need their own).
    #[arg(long, default_value = "load")]
    pub prefix: String,
    /// Threads of the generator's async runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What it measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpLoadReport {
    /// What each request did.
    pub kind: LoadKind,
    /// Connections.
    pub connections: usize,
    /// Seconds it sent.
    pub seconds: f64,
    /// Requests answered with the expected status.
    pub requests: u64,
    /// Those per second.
    pub requests_per_sec: f64,
    /// Latency percentiles, microseconds (request written to response read).
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest.
    pub max_us: u64,
    /// Requests answered otherwise, and connection failures.
    pub errors: u64,
    /// CPU the generator used while sending, in cores (user + system time over wall time).
    pub generator_cores: f64,
    /// 1, 5 and 15 minute load averages when the run ended.
    pub load_average: Option<[f64; 3]>,
}

impl std::fmt::Display for HttpLoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "http-load {:?}: {} connections, {:.1} s: {:.0} requests/s, p50/p99/p99.9 {}/{}/{} us, \
             max {} us, {} errors, generator {:.2} cores, load {}",
            self.kind,
            self.connections,
            self.seconds,
            self.requests_per_sec,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.errors,
            self.generator_cores,
            load_text(self.load_average)
        )
    }
}

/// Runs the generator against `args.url`.
pub fn run(args: &HttpLoadArgs) -> anyhow::Result<HttpLoadReport> {
    ensure!(
        (1..=1024).contains(&args.connections) && args.accounts > 0,
        "--connections must be 1 to 1024 and --accounts positive"
    );
    ensure!(
        args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 600.0,
        "--seconds must be positive and at most 600"
    );
    let address = loopback_address(&args.url)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .thread_name("http-load")
        .build()?
        .block_on(drive(args, address))
}

/// The socket address of `http://HOST:PORT[/]`, refused unless it is a loopback address.
fn loopback_address(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--url {url}: not an http:// URL"))?;
    let authority = rest.trim_end_matches('/');
    let address: SocketAddr = authority
        .parse()
        .with_context(|| format!("--url {url}: not http://IP:PORT"))?;
    ensure!(
        address.ip().is_loopback(),
        "--url {url}: only loopback servers"
    );
    Ok(address)
}

async fn drive(args: &HttpLoadArgs, address: SocketAddr) -> anyhow::Result<HttpLoadReport> {
    if args.kind == LoadKind::Command {
        open_accounts(args, address).await?;
    }
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for connection in 0..args.connections {
        let (kind, accounts, prefix) = (args.kind, args.accounts, args.prefix.clone());
        tasks.spawn(async move {
            let mut client = Connection::new(address);
            let mut latencies = Vec::with_capacity(1 << 14);
            let mut errors = 0u64;
            // A small LCG: each connection walks the streams in its own order.
            let mut seed =
                0x9e37_79b9_7f4a_7c15_u64 ^ (connection as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
            while Instant::now() < deadline {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let index = (seed >> 33) % accounts as u64;
                let (request, expected) = request(kind, &prefix, index, 1 + (seed >> 20) % 100);
                let sent = Instant::now();
                match client.send(&request).await {
                    Ok(status) if status == expected => {
                        latencies.push(sent.elapsed().as_micros() as u64);
                    }
                    _ => {
                        errors += 1;
                        // Do not spin on a failing server.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(connection) = tasks.join_next().await {
        let (connection_latencies, connection_errors) = connection?;
        latencies.extend(connection_latencies);
        errors += connection_errors;
    }
    let seconds = started.elapsed().as_secs_f64();
    let generator_cores = (process_cpu_seconds() - cpu_before) / seconds;
    latencies.sort_unstable();
    let requests = latencies.len() as u64;
    ensure!(
        requests > 0,
        "no request to {address} succeeded ({errors} failed): is the server running?"
    );
    Ok(HttpLoadReport {
        kind: args.kind,
        connections: args.connections,
        seconds,
        requests,
        requests_per_sec: requests as f64 / seconds,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        p999_us: percentile(&latencies, 0.999),
        max_us: latencies.last().copied().unwrap_or(0),
        errors,
        generator_cores,
        load_average: load_average(),
    })
}

const OPENING: u64 = 100;

/// Opens every account, `connections` at a time (not timed).
async fn open_accounts(args: &HttpLoadArgs, address: SocketAddr) -> anyhow::Result<()> {
    let workers = args.connections.min(args.accounts);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let (accounts, prefix) = (args.accounts, args.prefix.clone());
        tasks.spawn(async move {
            let mut client = Connection::new(address);
            for index in (worker..accounts).step_by(workers) {
                let body =
                    format!(r#"{{"type":"Open","owner":"bench","initial_deposit":{OPENING}}}"#);
                let path = format!("/aggregates/bank-account/{prefix}-{index}");
                let status = client.send(&post(&path, &body)).await?;
                ensure!(status == 200, "opening {path}: HTTP {status}");
            }
            anyhow::Ok(())
        });
    }
    while let Some(opened) = tasks.join_next().await {
        opened??;
    }
    Ok(())
}

/// The bytes of one request of `kind`, and the status that means it succeeded.
fn request(kind: LoadKind, prefix: &str, index: u64, amount: u64) -> (Vec<u8>, u16) {
    match kind {
        LoadKind::Append => {
            let body = format!(
                r#"{{"events":[{{"type":"FundsDeposited","data":{{"amount":{amount}}}}}]}}"#
            );
            (post(&format!("/streams/{prefix}-{index}"), &body), 201)
        }
        LoadKind::Command => {
            let body = format!(r#"{{"type":"Deposit","amount":{amount}}}"#);
            let path = format!("/aggregates/bank-account/{prefix}-{index}");
            (post(&path, &body), 200)
        }
        LoadKind::Health => (
            b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".to_vec(),
            200,
        ),
    }
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One keep-alive connection, (re)connected on demand.
struct Connection {
    address: SocketAddr,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
}

impl Connection {
    fn new(address: SocketAddr) -> Self {
        Connection {
            address,
            stream: None,
            buffer: Vec::with_capacity(4096),
        }
    }

    /// Sends `request` and reads the whole response; its status. A failed connection is
    /// dropped, to be opened again by the next request.
    async fn send(&mut self, request: &[u8]) -> anyhow::Result<u16> {
        let result = self.exchange(request).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<u16> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.address).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.buffer.clear();
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(request).await?;
        let head_end = loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                break end + 4;
            }
            ensure!(self.buffer.len() < 64 * 1024, "response head over 64 KiB");
            read_more(stream, &mut self.buffer).await?;
        };
        let (status, length) = parse_head(&self.buffer[..head_end])?;
        while self.buffer.len() < head_end + length {
            read_more(stream, &mut self.buffer).await?;
        }
        self.buffer.drain(..head_end + length);
        Ok(status)
    }
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 8192];
    let read = stream.read(&mut chunk).await?;
    ensure!(read > 0, "the server closed the connection");
    buffer.extend_from_slice(&chunk[..read]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The status and `content-length` of a response head.
fn parse_head(head: &[u8]) -> anyhow::Result<(u16, usize)> {
    let text = std::str::from_utf8(head).context("response head not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .context("bad content-length")?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("chunked responses are not supported by the load generator");
        }
    }
    Ok((status, length.unwrap_or(0)))
}

/// User plus system CPU seconds of this process so far (0 where /proc is missing).
pub(crate) fn process_cpu_seconds() -> f64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces, hence the last ')').
    let Some((_, rest)) = text.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on; no libc dependency for it.
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_head_gives_status_and_length() {
        let head = b"HTTP/1.1 201 Created\r\nContent-Length: 42\r\ncontent-type: x\r\n\r\n";
        assert_eq!(parse_head(head).unwrap(), (201, 42));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(loopback_address("http://10.0.0.1:80").is_err());
        assert_eq!(
            loopback_address("http://127.0.0.1:8080/").unwrap().port(),
            8080
        );
    }
}
