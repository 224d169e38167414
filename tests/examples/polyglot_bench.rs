//! Figures for projections in any language: for each `--plugin FILE` (a `balances`-shaped
//! projection component: Rust, Python, JavaScript), the time to load it cold (compiling it into
//! an empty component cache), the time to load it again from the cache in a new runtime, the
//! time to instantiate it, and the events per second it projects (events handed to `handle`
//! in batches, into an in-memory read model, through the same runtime the host uses).
//!
//! ```sh
//! scripts/build-polyglot.sh
//! CARGO_TARGET_DIR=... cargo run --release -p eshost-tests --example polyglot_bench -- \
//!     --plugin "$(ls -d $CARGO_TARGET_DIR/release/build/eshost-tests-*/out/plugins/wasm32-wasip2/release/balances.wasm | head -1)" \
//!     --plugin target/polyglot/balances-py.wasm --plugin target/polyglot/balances-js.wasm \
//!     [--events 100000] [--accounts 1000] [--batch 1000] [--memory-mib 256] [--time-ms 10000] [--json]
//! ```

#[path = "../tests/all/polyglot_support/mod.rs"]
mod polyglot_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use eshost_runtime::{Limits, MemoryReadModel, Runtime, RuntimeConfig};
use serde::Serialize;

#[derive(Debug)]
struct Options {
    plugins: Vec<PathBuf>,
    events: usize,
    accounts: u64,
    batch: usize,
    runs: usize,
    limits: Limits,
    json: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: polyglot_bench --plugin FILE [--plugin FILE ...] [--events N] [--accounts N] \
         [--batch N] [--runs N] [--memory-mib N] [--time-ms N] [--json]"
    );
    std::process::exit(2)
}

fn options() -> Options {
    let mut options = Options {
        plugins: Vec::new(),
        events: 100_000,
        accounts: 1_000,
        batch: 1_000,
        runs: 5,
        limits: Limits {
            time: Duration::from_secs(10),
            memory_bytes: 256 * 1024 * 1024,
            ..Limits::default()
        },
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        let mut number = || value().parse::<u64>().unwrap_or_else(|_| usage());
        match arg.as_str() {
            "--plugin" => options.plugins.push(PathBuf::from(value())),
            "--events" => options.events = number() as usize,
            "--accounts" => options.accounts = number(),
            "--batch" => options.batch = number() as usize,
            "--runs" => options.runs = number() as usize,
            "--memory-mib" => options.limits.memory_bytes = number() as usize * 1024 * 1024,
            "--time-ms" => options.limits.time = Duration::from_millis(number()),
            "--json" => options.json = true,
            _ => usage(),
        }
    }
    if options.plugins.is_empty() || options.batch == 0 || options.runs == 0 {
        usage();
    }
    options
}

#[derive(Debug, Serialize)]
struct Report {
    plugin: PathBuf,
    name: String,
    size_bytes: u64,
    /// Load with an empty component cache: read, hash, compile, link, `describe()`.
    first_load_ms: f64,
    /// Of which compiling.
    compile_ms: f64,
    /// Median load from the on-disk cache, in a new runtime each time.
    cached_load_ms: f64,
    cache_hit: bool,
    /// Median time to create a fresh instance (the first call of a new instance).
    instantiate_ms: f64,
    events: usize,
    batch: usize,
    /// Events through `handle`, per second (instantiation excluded).
    events_per_sec: f64,
    /// Read-model entries at the end, and the `total` query's answer (the same for every
    /// language over the same events).
    entries: usize,
    total: String,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn runtime(cache: &std::path::Path, limits: &Limits) -> Runtime {
    Runtime::new(RuntimeConfig {
        limits: limits.clone(),
        cache_dir: Some(cache.to_owned()),
        ..RuntimeConfig::default()
    })
    .expect("start a runtime")
}

fn bench(options: &Options, plugin: &PathBuf, history: &[eshost_runtime::Event]) -> Report {
    let cache = tempfile::tempdir().expect("a temporary directory");
    let cold = runtime(cache.path(), &options.limits)
        .load_projection(plugin)
        .unwrap_or_else(|e| panic!("{}: {e}", plugin.display()));
    let first = cold.load_stats();

    let mut cached = Vec::new();
    let mut hit = true;
    let mut loaded = None;
    for _ in 0..options.runs {
        let plugin = runtime(cache.path(), &options.limits)
            .load_projection(plugin)
            .expect("load from the cache");
        cached.push(ms(plugin.load_stats().total));
        hit &= plugin.load_stats().cache_hit;
        loaded = Some(plugin);
    }
    let plugin_loaded = loaded.expect("runs > 0");

    let mut instantiate = Vec::new();
    for _ in 0..options.runs {
        let mut instance = plugin_loaded.instantiate(MemoryReadModel::new()).unwrap();
        let start = Instant::now();
        instance.handle(&[]).expect("an empty batch");
        instantiate.push(ms(start.elapsed()));
    }

    let wanted: Vec<_> = history
        .iter()
        .filter(|e| plugin_loaded.info().handles_event(&e.event_type))
        .cloned()
        .collect();
    let mut instance = plugin_loaded.instantiate(MemoryReadModel::new()).unwrap();
    instance.handle(&[]).expect("instantiate");
    let start = Instant::now();
    for chunk in wanted.chunks(options.batch) {
        instance
            .handle(chunk)
            .unwrap_or_else(|e| panic!("{}: {e}", plugin.display()));
    }
    let took = start.elapsed();
    let total = instance.query("total", "null").expect("the total query");

    Report {
        plugin: plugin.clone(),
        name: plugin_loaded.info().name.clone(),
        size_bytes: std::fs::metadata(plugin).map(|m| m.len()).unwrap_or(0),
        first_load_ms: ms(first.total),
        compile_ms: ms(first.component),
        cached_load_ms: median(cached),
        cache_hit: hit,
        instantiate_ms: median(instantiate),
        events: wanted.len(),
        batch: options.batch,
        events_per_sec: wanted.len() as f64 / took.as_secs_f64(),
        entries: instance.read_model().entries.len(),
        total,
    }
}

fn main() {
    let options = options();
    let history = polyglot_support::generated_history(1, options.events, options.accounts);
    let reports: Vec<Report> = options
        .plugins
        .iter()
        .map(|plugin| bench(&options, plugin, &history))
        .collect();
    if options.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reports).expect("serialise")
        );
        return;
    }
    println!(
        "{:<44} {:>7} {:>11} {:>11} {:>11} {:>10}",
        "plugin", "MB", "first load", "cached", "instantiate", "events/s"
    );
    for r in &reports {
        println!(
            "{:<44} {:>7.1} {:>8.0} ms {:>8.1} ms {:>8.1} ms {:>10.0}",
            r.plugin.display(),
            r.size_bytes as f64 / 1e6,
            r.first_load_ms,
            r.cached_load_ms,
            r.instantiate_ms,
            r.events_per_sec,
        );
    }
    let totals: Vec<&str> = reports.iter().map(|r| r.total.as_str()).collect();
    println!(
        "{} events, {} accounts, batches of {}; every plugin's total: {}",
        reports[0].events,
        options.accounts,
        options.batch,
        if totals.windows(2).all(|w| w[0] == w[1]) {
            totals[0].to_owned()
        } else {
            format!("DIFFERENT: {totals:?}")
        }
    );
}
