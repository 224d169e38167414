//! The pieces of `eshost-bench growth`: filling the store, and each measurement.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use uuid::Uuid;

use super::percentile;
use eshost_core::aggregate::{AggregateConfig, Aggregates, At, EngineConfig};
use eshost_core::upcast::UpcasterChain;
use eshost_core::views::Views;
use eshost_runtime::{Runtime, RuntimeConfig};
use eshost_store::codec::{GENESIS_HASH, RecordBody};
use eshost_store::{
    AllRead, AppendRequest, Direction, Durability, EventStore, ExpectedVersion, ProposedEvent,
    RecordedEvent, Store, StoreConfig, StreamRead,
};

/// Accounts with a fixed history written at every stage, for reads and loads whose work does
/// not change with the store's size: so many accounts, so many events each.
const PROBES: u64 = 500;
const PROBE_EVENTS: u64 = 10;
/// Events per import while filling.
const FILL_CHUNK: usize = 4096;

/// The shape of the store so far, kept by the benchmark so that the fill continues every
/// account at its next version.
#[derive(Debug)]
pub struct Fill {
    streams: u64,
    /// Each account's version.
    versions: Vec<u32>,
    /// The next account the round robin fills.
    next: u64,
    /// Probe accounts written so far (`probe-{stage}-{n}`), by stage.
    probe_stages: u64,
    rng: u64,
}

fn account(number: u64) -> String {
    format!("account-{number}")
}

fn probe(stage: u64, number: u64) -> String {
    format!("probe-{stage}-{number}")
}

/// A deposit as the bank-account plugin reads it.
fn deposit(amount: u64) -> (String, &'static str, u32) {
    (
        format!(r#"{{"amount":{},"currency":"USD"}}"#, 1 + amount % 100),
        "FundsDeposited",
        2,
    )
}

fn opening() -> (String, &'static str, u32) {
    (
        r#"{"owner":"bench","currency":"USD"}"#.to_owned(),
        "AccountOpened",
        1,
    )
}

/// splitmix64: random enough to pick accounts, and reproducible.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Fill {
    /// An empty store's shape, over `streams` accounts.
    pub fn new(streams: u64) -> Fill {
        Fill {
            streams,
            versions: vec![0; streams as usize],
            next: 0,
            probe_stages: 0,
            rng: 17,
        }
    }

    /// Import events round robin over the accounts until the store holds `target`, then the
    /// probe accounts of a new stage; without waiting for the disk (one checkpoint at the
    /// close makes it all durable).
    pub fn fill_to(&mut self, config: &StoreConfig, target: u64) -> anyhow::Result<()> {
        let mut config = config.clone();
        config.durability = Durability::None;
        let store = Store::open(config).context("open the store to fill it")?;
        let last = store.read_all(&AllRead {
            direction: Direction::Backward,
            limit: 1,
            ..AllRead::from(u64::MAX)
        })?;
        let mut chain = Chain {
            position: store.head(),
            hash: last.first().map_or(GENESIS_HASH, |event| event.hash),
            recorded_at: last.first().map_or(0, |event| event.recorded_at),
        };
        while chain.position < target {
            let count = (target - chain.position).min(FILL_CHUNK as u64);
            let mut events = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let number = self.next % self.streams;
                self.next += 1;
                let version = &mut self.versions[number as usize];
                *version += 1;
                let (data, kind, schema) = if *version == 1 {
                    opening()
                } else {
                    deposit(u64::from(*version))
                };
                events.push(chain.next(account(number), u64::from(*version), kind, schema, data));
            }
            store.import_blocking(events)?;
        }
        let stage = self.probe_stages;
        self.probe_stages += 1;
        for round in 1..=PROBE_EVENTS {
            let events = (0..PROBES)
                .map(|number| {
                    let (data, kind, schema) = if round == 1 {
                        opening()
                    } else {
                        deposit(round)
                    };
                    chain.next(probe(stage, number), round, kind, schema, data)
                })
                .collect();
            store.import_blocking(events)?;
        }
        Ok(())
    }

    fn random_probe(&mut self) -> String {
        let stage = next_random(&mut self.rng) % self.probe_stages.max(1);
        probe(stage, next_random(&mut self.rng) % PROBES)
    }
}

/// The end of the log as the fill continues it.
struct Chain {
    position: u64,
    hash: [u8; 32],
    recorded_at: u64,
}

impl Chain {
    fn next(
        &mut self,
        stream_id: String,
        stream_version: u64,
        event_type: &str,
        schema_version: u32,
        data: String,
    ) -> RecordedEvent {
        self.position += 1;
        self.recorded_at = self.recorded_at.max(eshost_store::now_ms());
        let event_id = Uuid::now_v7();
        let mut record = Vec::new();
        self.hash = RecordBody {
            stream_version,
            event_id,
            schema_version,
            recorded_at: self.recorded_at,
            stream_id: &stream_id,
            event_type,
            data: &data,
            metadata: "{}",
            personal: None,
        }
        .encode_into(self.position, &self.hash, &mut record);
        RecordedEvent {
            position: self.position,
            stream_id,
            stream_version,
            event_id,
            event_type: event_type.to_owned(),
            schema_version,
            recorded_at: self.recorded_at,
            data,
            metadata: "{}".to_owned(),
            subject_id: None,
            personal_data: None,
            shredded: false,
            sealed: None,
            hash: self.hash,
        }
    }
}

/// Durable append figures.
pub struct Appends {
    pub events_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// `appenders` callers, each with one single-event deposit in flight to a random account
/// among the first `accounts`, for `duration`. The accounts' new versions go back into
/// `fill`.
pub fn appends(
    store: &Store,
    fill: &mut Fill,
    accounts: u64,
    appenders: usize,
    duration: Duration,
) -> anyhow::Result<Appends> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let streams = accounts.clamp(1, fill.streams);
    let started = Instant::now();
    let deadline = started + duration;
    let results = runtime.block_on(async {
        let tasks: Vec<_> = (0..appenders)
            .map(|appender| {
                let store = store.clone();
                let mut rng = next_random(&mut fill.rng) ^ appender as u64;
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(1 << 16);
                    let mut versions = Vec::with_capacity(1 << 16);
                    while Instant::now() < deadline {
                        let number = next_random(&mut rng) % streams;
                        let (data, kind, schema) = deposit(number);
                        let event = ProposedEvent::new(kind, data).with_schema_version(schema);
                        let request =
                            AppendRequest::new(account(number), ExpectedVersion::Any, vec![event]);
                        let sent = Instant::now();
                        let appended = store.append(request).await?;
                        latencies.push(sent.elapsed().as_micros() as u64);
                        versions.push((number, appended.stream_version));
                    }
                    anyhow::Ok((latencies, versions))
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.push(task.await??);
        }
        anyhow::Ok(all)
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    for (times, versions) in results {
        latencies.extend(times);
        for (number, version) in versions {
            let known = &mut fill.versions[number as usize];
            *known = (*known).max(version as u32);
        }
    }
    latencies.sort_unstable();
    Ok(Appends {
        events_per_sec: latencies.len() as f64 / seconds,
        p50_us: percentile(&latencies, 0.5),
        p99_us: percentile(&latencies, 0.99),
    })
}

/// Mean time to read a whole random probe account, microseconds, and its events.
pub fn stream_reads(store: &Store, fill: &mut Fill, reads: usize) -> anyhow::Result<(f64, f64)> {
    let mut events = 0usize;
    let started = Instant::now();
    for _ in 0..reads.max(1) {
        events += store
            .read_stream(&fill.random_probe(), &StreamRead::forward())?
            .len();
    }
    let reads = reads.max(1) as f64;
    Ok((
        started.elapsed().as_secs_f64() * 1e6 / reads,
        events as f64 / reads,
    ))
}

/// Mean cold load of a random probe account through the bank-account plugin (a fresh
/// instance each time: read, apply, state), microseconds.
pub fn cold_loads(
    store: &Store,
    dir: &Path,
    plugin: &Path,
    fill: &mut Fill,
    loads: usize,
) -> anyhow::Result<f64> {
    let views = Views::open(dir)?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let plugin = runtime.load_aggregate(plugin)?;
    let name = plugin.info().name.clone();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let _entered = tokio.enter();
    let aggregates = Aggregates::new(
        Arc::new(store.clone()),
        views,
        UpcasterChain::empty(),
        EngineConfig::default(),
    )?;
    aggregates.register(plugin, AggregateConfig::every(0))?;
    // One load first, so that the plugin's first instantiation is not timed.
    aggregates.state_blocking(&name, &fill.random_probe(), At::Latest, false)?;
    let started = Instant::now();
    for _ in 0..loads.max(1) {
        let state = aggregates.state_blocking(&name, &fill.random_probe(), At::Latest, false)?;
        anyhow::ensure!(state.version == PROBE_EVENTS, "a probe account lost events");
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / loads.max(1) as f64)
}

/// `$all` read rate: one pass from position 1 over up to `events` events; events per second.
pub fn scan(store: &Store, events: u64) -> anyhow::Result<f64> {
    let read = AllRead {
        limit: events as usize,
        ..AllRead::from(1)
    };
    let mut count = 0u64;
    let started = Instant::now();
    store.visit_all(&read, &mut |event| {
        count += u64::from(event.position > 0);
        ControlFlow::Continue(())
    })?;
    anyhow::ensure!(count > 0, "nothing to scan");
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Kill a child that appends durably until a checkpoint's worth of events is only in the
/// write-ahead log, then time opening the store.
pub fn crash_startup(config: &StoreConfig) -> anyhow::Result<f64> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let events = (config.index_flush_events as u64)
        .saturating_sub(1_000)
        .max(1);
    let mut child = Command::new(std::env::current_exe()?)
        .arg("growth-crash-child")
        .arg("--store")
        .arg(&config.dir)
        .arg("--events")
        .arg(events.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    child.kill()?; // SIGKILL
    child.wait()?;
    anyhow::ensure!(line.trim() == "ready", "the crash child failed: {line:?}");
    let started = Instant::now();
    let store = Store::open(config.clone())?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    drop(store);
    Ok(ms)
}

/// What the crash child does: 64 callers append single events to `crash-*` streams until
/// `events` are acknowledged.
pub async fn crash_appends(store: &Store, events: u64) -> anyhow::Result<()> {
    let per_task = events.div_ceil(64);
    let tasks: Vec<_> = (0..64u64)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..per_task {
                    let event = ProposedEvent::new("Tick", format!(r#"{{"n":{n}}}"#));
                    store
                        .append(AppendRequest::new(
                            format!("crash-{task}"),
                            ExpectedVersion::Any,
                            vec![event],
                        ))
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Resident and peak resident memory of this process, MiB (0 where the OS does not say).
pub fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Bytes free for an unprivileged user on the file system holding `dir` (from `df`, since
/// the standard library does not say).
pub fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let output = std::process::Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .output()
        .context("run df to check the free disk space")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let available = text
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|kib| kib.parse::<u64>().ok())
        .with_context(|| format!("df printed no free space for {}: {text}", dir.display()))?;
    Ok(available * 1024)
}
