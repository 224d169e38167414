//! Shared set-up of the aggregate tests: a store, its views, a runtime and the pipeline.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use eshost_core::aggregate::{
    AggregateConfig, Aggregates, CommandOptions, CommandReply, EngineConfig,
};
use eshost_core::upcast::UpcasterChain;
use eshost_core::views::Views;
use eshost_runtime::{AggregatePlugin, Runtime, RuntimeConfig};
use eshost_store::{Store, StoreConfig};
use eshost_tests::{BANK_ACCOUNT, DEPOSIT_CURRENCY, test_limits};

/// One host over a temporary store directory.
pub struct Host {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub views: Views,
    pub runtime: Runtime,
    pub aggregates: Aggregates,
    pub bank: AggregatePlugin,
}

/// A runtime sharing the default on-disk component cache (components compile once).
pub fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        limits: test_limits(),
        ..RuntimeConfig::default()
    })
    .expect("start a runtime")
}

pub fn upcasters(runtime: &Runtime) -> UpcasterChain {
    UpcasterChain::new([runtime
        .load_upcaster(DEPOSIT_CURRENCY)
        .expect("load the upcaster")])
    .expect("a chain")
}

/// A host with the bank-account aggregate (and the deposit-currency upcaster). Call inside a
/// tokio runtime.
pub fn host(config: AggregateConfig) -> Host {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open the store");
    let views = Views::open(dir.path()).expect("open the views");
    let runtime = runtime();
    let bank = runtime
        .load_aggregate(BANK_ACCOUNT)
        .expect("load bank-account");
    let aggregates = pipeline(&store, &views, &runtime, &bank, config, true);
    Host {
        dir,
        store,
        views,
        runtime,
        aggregates,
        bank,
    }
}

/// Another pipeline over the same store and views (a restarted or competing host).
pub fn pipeline(
    store: &Store,
    views: &Views,
    runtime: &Runtime,
    bank: &AggregatePlugin,
    config: AggregateConfig,
    with_upcaster: bool,
) -> Aggregates {
    let engine = EngineConfig {
        workers: 2,
        max_retries: 50,
        ..EngineConfig::default()
    };
    pipeline_with(store, views, runtime, bank, config, with_upcaster, engine)
}

/// [`pipeline`] with chosen engine settings.
pub fn pipeline_with(
    store: &Store,
    views: &Views,
    runtime: &Runtime,
    bank: &AggregatePlugin,
    config: AggregateConfig,
    with_upcaster: bool,
    engine: EngineConfig,
) -> Aggregates {
    let chain = if with_upcaster {
        upcasters(runtime)
    } else {
        UpcasterChain::empty()
    };
    let aggregates = Aggregates::new(Arc::new(store.clone()), views.clone(), chain, engine)
        .expect("start the pipeline");
    aggregates
        .register(bank.clone(), config)
        .expect("register bank-account");
    aggregates
}

pub const BANK: &str = "bank-account";

/// Sends `command` (JSON) to account `id`, with default options.
pub async fn send(aggregates: &Aggregates, id: &str, command: &str) -> CommandReply {
    aggregates
        .execute(BANK, id, command, CommandOptions::default())
        .await
        .unwrap_or_else(|error| panic!("{command} on {id}: {error}"))
}

/// The account's balance from its latest state.
pub async fn balance(aggregates: &Aggregates, id: &str) -> u64 {
    let state = aggregates
        .state(BANK, id, eshost_core::aggregate::At::Latest)
        .await
        .expect("state");
    state.state["balance"].as_u64().expect("a balance")
}

/// The dir of a host, for reopening.
pub fn dir(host: &Host) -> &Path {
    host.dir.path()
}
