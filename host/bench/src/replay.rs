//! `eshost-bench replay`: rebuilds one bank account from a long history, through the
//! bank-account WebAssembly component (one instance, events applied in batches), and through
//! the same SDK aggregate compiled natively, in the same run. Also times loading the component
//! cold (compiling it) and warm (from the on-disk cache).

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bank_account::{BankAccount, BankEvent};
use eshost_sdk::{Aggregate, StoredEvent};
use serde::Serialize;

use eshost_runtime::{ApplyError, LoadError};
use eshost_runtime::{Event, Limits, PluginError, Runtime, RuntimeConfig, RuntimeError};

/// What to run.
#[derive(Debug, Clone)]
pub struct ReplayBenchOptions {
    /// The bank-account component (`plugins/target/wasm32-wasip2/release/bank_account.wasm`).
    pub plugin: PathBuf,
    /// How many events the account's history has.
    pub events: usize,
    /// Events per `apply` call.
    pub batch: usize,
    /// The component cache to time loads against; a fresh temporary directory by default, so
    /// that the first load compiles.
    pub cache_dir: Option<PathBuf>,
}

impl Default for ReplayBenchOptions {
    fn default() -> Self {
        ReplayBenchOptions {
            plugin: PathBuf::from("plugins/target/wasm32-wasip2/release/bank_account.wasm"),
            events: 1_000_000,
            batch: 1_000,
            cache_dir: None,
        }
    }
}

/// What it measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayBenchReport {
    /// The component.
    pub plugin: PathBuf,
    /// Events replayed.
    pub events: usize,
    /// Events per `apply` call.
    pub batch: usize,
    /// Through the WebAssembly component.
    pub events_per_sec: f64,
    /// Through the same aggregate compiled natively.
    pub native_events_per_sec: f64,
    /// `events_per_sec / native_events_per_sec`.
    pub ratio: f64,
    /// Wall time of the WebAssembly replay, seconds.
    pub wasm_secs: f64,
    /// Wall time of the native replay, seconds.
    pub native_secs: f64,
    /// Loading the component with an empty cache: read, hash, compile, link, describe.
    pub first_compile_ms: f64,
    /// Loading it again in a new runtime, from the on-disk cache.
    pub cached_load_ms: f64,
    /// Whether the second load was served by the cache.
    pub cache_hit: bool,
    /// Whether both replays ended in the same state (they must).
    pub states_match: bool,
    /// The account's final balance, in cents.
    pub final_balance: u64,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayBenchError {
    /// The runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The component could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A plugin call failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// Applying the history failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The native replay failed.
    #[error("native replay: {0}")]
    Native(String),
    /// Scratch files.
    #[error("benchmark scratch directory: {0}")]
    Io(#[from] std::io::Error),
    /// Bad options.
    #[error("{0}")]
    Options(String),
}

/// Runs the benchmark.
pub fn run(options: &ReplayBenchOptions) -> Result<ReplayBenchReport, ReplayBenchError> {
    if options.events < 2 || options.batch == 0 {
        return Err(ReplayBenchError::Options(
            "the history needs at least 2 events and batches at least 1".into(),
        ));
    }
    let scratch = tempfile::tempdir()?;
    let cache_dir = options
        .cache_dir
        .clone()
        .unwrap_or_else(|| scratch.path().join("components"));
    let config = RuntimeConfig {
        cache_dir: Some(cache_dir),
        limits: Limits {
            time: Duration::from_secs(10),
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    };

    // Cold load (compiles unless the given cache already holds it), then a warm one from a
    // new runtime: nothing is shared but the cache directory.
    let start = Instant::now();
    Runtime::new(config.clone())?.load_aggregate(&options.plugin)?;
    let first_compile = start.elapsed();
    let runtime = Runtime::new(config)?;
    let start = Instant::now();
    let plugin = runtime.load_aggregate(&options.plugin)?;
    let cached_load = start.elapsed();

    let history = history(options.events);

    let mut instance = plugin.instantiate()?;
    instance.new("account-1")?;
    let start = Instant::now();
    for batch in history.chunks(options.batch) {
        instance.apply(batch)?;
    }
    let wasm = start.elapsed();
    let wasm_state: serde_json::Value = serde_json::from_str(&instance.state()?)
        .map_err(|e| ReplayBenchError::Native(format!("the plugin's state is not JSON: {e}")))?;

    let start = Instant::now();
    let native_state = replay_natively(&history)?;
    let native = start.elapsed();
    let native_state =
        serde_json::to_value(&native_state).map_err(|e| ReplayBenchError::Native(e.to_string()))?;

    let per_sec = |d: Duration| options.events as f64 / d.as_secs_f64().max(1e-9);
    let events_per_sec = per_sec(wasm);
    let native_events_per_sec = per_sec(native);
    Ok(ReplayBenchReport {
        plugin: options.plugin.clone(),
        events: options.events,
        batch: options.batch,
        events_per_sec,
        native_events_per_sec,
        ratio: events_per_sec / native_events_per_sec,
        wasm_secs: wasm.as_secs_f64(),
        native_secs: native.as_secs_f64(),
        first_compile_ms: first_compile.as_secs_f64() * 1000.0,
        cached_load_ms: cached_load.as_secs_f64() * 1000.0,
        cache_hit: plugin.load_stats().cache_hit,
        states_match: wasm_state == native_state,
        final_balance: native_state["balance"].as_u64().unwrap_or_default(),
    })
}

/// The native replay: what the component's `apply` does per event (decode the stored form
/// with the SDK, then `Aggregate::apply`), without the sandbox.
fn replay_natively(history: &[Event]) -> Result<BankAccount, ReplayBenchError> {
    let mut state = BankAccount::initial("account-1");
    for e in history {
        let stored = StoredEvent {
            position: e.position,
            stream_id: &e.stream_id,
            stream_version: e.stream_version,
            event_id: &e.event_id,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            recorded_at: e.recorded_at,
            data: &e.data,
            metadata: &e.metadata,
            subject_id: e.subject_id.as_deref(),
            personal_data: e.personal_data.as_deref(),
            shredded: e.shredded,
        };
        let event: BankEvent = stored.decode().map_err(ReplayBenchError::Native)?;
        state.apply(event);
    }
    Ok(state)
}

/// One account's history: opened, then deposits, with a withdrawal every tenth event.
fn history(events: usize) -> Vec<Event> {
    let base_ms = 1_700_000_000_000u64;
    (1..=events as u64)
        .map(|n| {
            let (event_type, schema_version, data) = if n == 1 {
                (
                    "AccountOpened",
                    1,
                    r#"{"owner":"Ann","initial_deposit":1000,"currency":"USD"}"#.to_owned(),
                )
            } else if n % 10 == 0 {
                (
                    "FundsWithdrawn",
                    1,
                    format!(r#"{{"amount":{}}}"#, n % 7 + 1),
                )
            } else {
                (
                    "FundsDeposited",
                    2,
                    format!(r#"{{"amount":{},"currency":"USD"}}"#, n % 1000 + 10),
                )
            };
            Event {
                position: n,
                stream_id: "account-1".to_owned(),
                stream_version: n,
                event_id: format!("018f2a6c-0000-7000-8000-{n:012x}"),
                event_type: event_type.to_owned(),
                schema_version,
                recorded_at: base_ms + n,
                data,
                metadata: r#"{"correlation_id":"bench","user":"bench"}"#.to_owned(),
                subject_id: None,
                personal_data: None,
                shredded: false,
            }
        })
        .collect()
}

impl fmt::Display for ReplayBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replay of {} events into one account, {} per apply ({})",
            self.events,
            self.batch,
            self.plugin.display()
        )?;
        writeln!(f, "{:<26}{:>14}{:>10}", "", "events/s", "seconds")?;
        writeln!(
            f,
            "{:<26}{:>14.0}{:>10.3}",
            "wasm component", self.events_per_sec, self.wasm_secs
        )?;
        writeln!(
            f,
            "{:<26}{:>14.0}{:>10.3}",
            "native (same SDK code)", self.native_events_per_sec, self.native_secs
        )?;
        writeln!(f, "{:<26}{:>14.2}", "ratio wasm/native", self.ratio)?;
        writeln!(
            f,
            "{:<26}{:>14.1}",
            "first load, compile (ms)", self.first_compile_ms
        )?;
        writeln!(
            f,
            "{:<26}{:>14.1}{}",
            "cached load (ms)",
            self.cached_load_ms,
            if self.cache_hit {
                ""
            } else {
                "  (cache missed!)"
            }
        )?;
        writeln!(
            f,
            "{:<26}{:>14}",
            "final balance",
            format!(
                "{}{}",
                self.final_balance,
                if self.states_match {
                    " (same state)"
                } else {
                    " (STATES DIFFER)"
                }
            )
        )
    }
}
