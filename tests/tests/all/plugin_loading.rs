//! Loading plugins: components of the wrong world, non-components and unsupported contract
//! versions are refused with clear messages; compiled components are cached on disk;
//! `inspect` describes a file.

use std::fs;

use eshost_runtime::{LoadError, PluginKind, Runtime};
use eshost_tests::{
    BALANCES, BANK_ACCOUNT, COUNTER, DEPOSIT_CURRENCY, FUTURE, HOSTILE, LIAR, runtime, runtime_in,
    test_limits,
};

fn load_error(runtime: &Runtime, path: &std::path::Path, kind: PluginKind) -> LoadError {
    match runtime.load(path, kind) {
        Ok(plugin) => panic!("{} loaded as {kind}: {:?}", path.display(), plugin.info()),
        Err(error) => error,
    }
}

#[test]
fn a_component_of_another_world_is_refused_before_it_is_compiled() {
    let (runtime, cache) = runtime();
    let cases = [
        (
            BALANCES,
            PluginKind::Aggregate,
            "balances.wasm is a projection component; expected an aggregate",
        ),
        (
            BANK_ACCOUNT,
            PluginKind::Projection,
            "bank_account.wasm is an aggregate component; expected a projection",
        ),
        (
            DEPOSIT_CURRENCY,
            PluginKind::Aggregate,
            "deposit_currency.wasm is an upcaster component; expected an aggregate",
        ),
        (
            COUNTER,
            PluginKind::Upcaster,
            "counter.wasm is a projection component; expected an upcaster",
        ),
    ];
    for (path, kind, message) in cases {
        let error = load_error(&runtime, path.as_ref(), kind);
        assert!(matches!(error, LoadError::WrongWorld { .. }), "{error:?}");
        assert_eq!(error.to_string(), message);
    }
    // Read from the bytes: nothing was compiled, so nothing was cached.
    let cached = fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(cached, 0, "a refused component was compiled");
    runtime.load(BALANCES, PluginKind::Projection).unwrap();
    assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 1);
}

#[test]
fn a_plugin_that_lies_about_its_kind_is_refused() {
    let (runtime, _cache) = runtime();
    let error = load_error(&runtime, LIAR.as_ref(), PluginKind::Upcaster);
    assert_eq!(
        error.to_string(),
        "plugin \"liar\" targets the upcaster world but describes itself as an aggregate"
    );
}

#[test]
fn files_that_are_not_components_are_refused() {
    let (runtime, cache) = runtime();
    let dir = cache.path();

    let core = dir.join("core.wasm");
    fs::write(&core, b"\0asm\x01\0\0\0").unwrap(); // an empty, valid core module
    let error = load_error(&runtime, &core, PluginKind::Aggregate);
    assert!(matches!(error, LoadError::CoreModule { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("core.wasm is a core WebAssembly module, not a component"),
        "{error}"
    );

    let noise = dir.join("noise.wasm");
    fs::write(
        &noise,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let error = load_error(&runtime, &noise, PluginKind::Aggregate);
    assert_eq!(error.to_string(), "noise.wasm is not a WebAssembly file");

    let truncated = dir.join("truncated.wasm");
    fs::write(&truncated, &fs::read(HOSTILE).unwrap()[..4096]).unwrap();
    let error = load_error(&runtime, &truncated, PluginKind::Aggregate);
    assert!(matches!(error, LoadError::Invalid { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("truncated.wasm is not a valid component: "),
        "{error}"
    );

    let missing = dir.join("missing.wasm");
    let error = load_error(&runtime, &missing, PluginKind::Aggregate);
    assert!(
        error.to_string().starts_with("cannot read plugin file "),
        "{error}"
    );
}

#[test]
fn an_unsupported_contract_version_is_refused() {
    let (runtime, _cache) = runtime();
    let error = load_error(&runtime, FUTURE.as_ref(), PluginKind::Upcaster);
    assert_eq!(
        error.to_string(),
        "plugin \"future.wasm\" exports eshost:plugin@0.3.0; this host supports 0.1, 0.2"
    );
}

#[test]
fn a_second_load_comes_from_the_disk_cache() {
    let cache = tempfile::tempdir().unwrap();
    let first = runtime_in(cache.path(), test_limits())
        .load_aggregate(BANK_ACCOUNT)
        .unwrap();
    assert!(!first.load_stats().cache_hit, "an empty cache cannot hit");

    // A new runtime shares nothing with the first but the directory.
    let runtime = runtime_in(cache.path(), test_limits());
    let cached_file = runtime.cache_path(&first.info().content_hash).unwrap();
    assert!(
        cached_file.exists(),
        "the compiled component is cached at {}",
        cached_file.display()
    );
    let second = runtime.load_aggregate(BANK_ACCOUNT).unwrap();
    assert!(second.load_stats().cache_hit);
    assert_eq!(second.info(), first.info());

    // The cached plugin works.
    let mut instance = second.instantiate().unwrap();
    instance.new("account-1").unwrap();
    assert!(instance.state().unwrap().contains("account-1"));

    // A damaged cache entry is thrown away and rebuilt, not trusted.
    fs::write(&cached_file, b"definitely not a compiled component").unwrap();
    let third = runtime.load_aggregate(BANK_ACCOUNT).unwrap();
    assert!(!third.load_stats().cache_hit);
    assert!(
        fs::metadata(&cached_file).unwrap().len() > 1000,
        "the entry was rebuilt"
    );
    let fourth = runtime.load_aggregate(BANK_ACCOUNT).unwrap();
    assert!(fourth.load_stats().cache_hit);
}

#[test]
fn inspect_describes_a_plugin_file() {
    let (runtime, _cache) = runtime();
    let inspection = runtime.inspect(BANK_ACCOUNT).unwrap();
    assert_eq!(inspection.name, "bank-account");
    assert_eq!(inspection.kind, PluginKind::Aggregate);
    assert_eq!(inspection.wit, "eshost:plugin@0.1.0");
    assert_eq!(
        inspection.size_bytes,
        fs::metadata(BANK_ACCOUNT).unwrap().len()
    );
    assert!(inspection.handles.contains(&"FundsDeposited".to_owned()));
    assert!(
        inspection
            .exports
            .contains(&"eshost:plugin/aggregate@0.1.0".to_owned()),
        "{:?}",
        inspection.exports
    );
    assert!(
        inspection.exports.contains(&"describe".to_owned()),
        "{:?}",
        inspection.exports
    );
    assert!(
        inspection
            .imports
            .iter()
            .all(|i| i.starts_with("wasi:") || i.starts_with("eshost:")),
        "{:?}",
        inspection.imports
    );

    let table = inspection.to_string();
    for needle in [
        "bank-account",
        "aggregate",
        "eshost:plugin@0.1.0",
        &inspection.content_hash,
    ] {
        assert!(table.contains(needle), "{needle} missing from:\n{table}");
    }
    let json = serde_json::to_value(&inspection).unwrap();
    assert_eq!(json["kind"], "aggregate");
    assert_eq!(json["name"], "bank-account");

    let projection = runtime.inspect(COUNTER).unwrap();
    assert_eq!(projection.kind, PluginKind::Projection);
    assert!(
        projection
            .imports
            .contains(&"eshost:plugin/read-model@0.1.0".to_owned()),
        "{:?}",
        projection.imports
    );

    let upcaster = runtime.inspect(DEPOSIT_CURRENCY).unwrap();
    assert_eq!(upcaster.kind, PluginKind::Upcaster);
    assert!(upcaster.to_string().contains("FundsDeposited v1"));

    let error = runtime.inspect(FUTURE).unwrap_err();
    assert!(error.to_string().contains("eshost:plugin@0.3.0"), "{error}");
}
