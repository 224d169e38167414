//! Shared steps of the projection tests: a store with events, a host of projections over it.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use eshost_core::projection::{ProjectionConfig, Projections, UpcasterChain};
use eshost_core::views::Views;
use eshost_runtime::{Limits, Runtime};
use eshost_store::{AppendRequest, ExpectedVersion, ProposedEvent, Store, StoreConfig};

/// Generous: the machine is shared.
pub const WAIT: Duration = Duration::from_secs(60);

/// A runtime whose component cache is shared by the projection tests (keyed by content).
pub fn runtime() -> Runtime {
    let cache = std::env::temp_dir().join("eshost-projection-tests-cache");
    eshost_tests::runtime_in(
        &cache,
        Limits {
            time: Duration::from_secs(5),
            ..eshost_tests::test_limits()
        },
    )
}

pub fn open_store(dir: &Path) -> Store {
    let mut config = StoreConfig::new(dir);
    config.durability = eshost_store::Durability::None;
    Store::open(config).expect("open the store")
}

/// Appends one event of `event_type` to `stream` for each pair.
pub fn append(store: &Store, events: &[(&str, &str)]) {
    for (stream, event_type) in events {
        store
            .append_blocking(AppendRequest::new(
                *stream,
                ExpectedVersion::Any,
                vec![ProposedEvent::new(*event_type, "{}")],
            ))
            .expect("append");
    }
}

/// `n` ordinary events over a few streams.
pub fn ticks(n: usize) -> Vec<(&'static str, &'static str)> {
    const STREAMS: [&str; 3] = ["s-a", "s-b", "s-c"];
    (0..n).map(|i| (STREAMS[i % 3], "Tick")).collect()
}

/// A host of projections over `store`, its views in `dir`.
pub fn host(store: &Store, dir: &Path) -> Projections {
    let views = Views::open(dir).expect("open views");
    Projections::new(Arc::new(store.clone()), views, runtime())
}

/// [`host`] with the upcaster components `upcasters`, in chain order.
pub fn host_with_upcasters(store: &Store, dir: &Path, upcasters: &[&str]) -> Projections {
    let views = Views::open(dir).expect("open views");
    let runtime = runtime();
    let chain = upcasters
        .iter()
        .map(|file| runtime.load_upcaster(file).expect("load an upcaster"));
    let chain = UpcasterChain::new(chain).expect("a chain");
    Projections::with_upcasters(Arc::new(store.clone()), views, runtime, chain)
}

/// Appends one event of `event_type` at `schema_version` with `data` (JSON) to `stream`.
pub fn append_event(
    store: &Store,
    stream: &str,
    event_type: &str,
    schema_version: u32,
    data: &str,
) -> u64 {
    let mut event = ProposedEvent::new(event_type, data);
    event.schema_version = schema_version;
    store
        .append_blocking(AppendRequest::new(
            stream,
            ExpectedVersion::Any,
            vec![event],
        ))
        .expect("append")
        .first_position
}

/// Projection `name` from `plugin`, quick retries.
pub fn quick(name: &str, plugin: impl AsRef<Path>) -> ProjectionConfig {
    let mut config = ProjectionConfig::new(name, plugin.as_ref());
    config.attempts = 3;
    config.backoff = Duration::from_millis(5);
    config
}

/// `tally` from `plugin`, small batches, quick retries.
pub fn tally(plugin: impl AsRef<Path>) -> ProjectionConfig {
    let mut config = ProjectionConfig::new("tally", plugin.as_ref());
    config.batch = 7;
    config.attempts = 3;
    config.backoff = Duration::from_millis(5);
    config
}

/// The `summary` answer: (version, total, sum of per-stream counts).
pub fn summary(projections: &Projections) -> (String, u64, u64) {
    let json = projections
        .query("tally", "summary", "null")
        .expect("summary query");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    (
        value["version"].as_str().unwrap().to_owned(),
        value["total"].as_u64().unwrap(),
        value["sum"].as_u64().unwrap(),
    )
}
