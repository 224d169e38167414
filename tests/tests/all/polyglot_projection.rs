//! The `balances` projection written in Python and in JavaScript builds, over the same
//! generated history, the same read model as the Rust one (key for key, byte for byte), and
//! answers the same queries.

use crate::polyglot_support::{component, generated_history, json, runtime};
use eshost_runtime::{
    Event, MemoryReadModel, ProjectionError, ProjectionInstance, ProjectionPlugin, QueryError,
    UpcasterInstance,
};
use eshost_tests::{BALANCES, DEPOSIT_CURRENCY, event};
use serde_json::{Value, json};

/// The history upcast on read through the Rust upcaster component, as the host does.
fn upcast_all(upcaster: &mut UpcasterInstance, events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if upcaster
                .info()
                .upcasts_event(&e.event_type, e.schema_version)
            {
                upcaster.upcast_in_place(&mut e).expect("upcast");
            }
            e
        })
        .collect()
}

/// Runs `events` (those the plugin handles) through a fresh instance of `plugin`, `batch`
/// events per call.
fn project(
    plugin: &ProjectionPlugin,
    events: &[Event],
    batch: usize,
) -> ProjectionInstance<MemoryReadModel> {
    let mut instance = plugin.instantiate(MemoryReadModel::new()).unwrap();
    let wanted: Vec<Event> = events
        .iter()
        .filter(|e| plugin.info().handles_event(&e.event_type))
        .cloned()
        .collect();
    for chunk in wanted.chunks(batch) {
        instance
            .handle(chunk)
            .unwrap_or_else(|e| panic!("{}: {e}", plugin.info().name));
    }
    instance
}

/// The same answer, or the same kind of error. Error messages are compared where the
/// languages can agree: the Rust one may add serde's position (`at line 1 column 2`).
fn same_answer(
    language: &str,
    name: &str,
    args: &Value,
    rust: Result<String, QueryError>,
    other: Result<String, QueryError>,
) {
    match (rust, other) {
        (Ok(r), Ok(o)) => assert_eq!(json(&o), json(&r), "{language}: query {name} {args}"),
        (
            Err(QueryError::UnknownQuery { message: r, .. }),
            Err(QueryError::UnknownQuery { message: o, .. }),
        ) => assert_eq!(o, r, "{language}: query {name} {args}"),
        (
            Err(QueryError::InvalidArgs { message: r, .. }),
            Err(QueryError::InvalidArgs { message: o, .. }),
        ) => assert!(
            r.starts_with(&o),
            "{language}: query {name} {args}: Rust says {r:?}, {language} says {o:?}"
        ),
        (r, o) => panic!("{language}: query {name} {args}: Rust {r:?}, {language} {o:?}"),
    }
}

fn queries(history: &[Event]) -> Vec<(&'static str, Value)> {
    let mut queries = vec![
        ("total", json!(null)),
        ("total", json!({})),
        ("accounts", json!(null)),
        ("accounts", json!({"limit": 3})),
        ("accounts", json!({"after": "account-1", "limit": 2})),
        ("accounts", json!({"after": "account-3"})),
        ("accounts", json!({"after": "branch/13", "limit": 1})),
        ("balance", json!({"account": "nobody"})),
        ("balance", json!({})),
        ("balance", json!({"account": "a/b%c"})),
        ("richest", json!(null)),
    ];
    for e in history.iter().step_by(7) {
        queries.push(("balance", json!({"account": e.stream_id})));
    }
    queries
}

#[test]
fn python_and_javascript_balances_build_the_rust_read_model() {
    let runtime = runtime();
    let mut upcaster = runtime
        .load_upcaster(DEPOSIT_CURRENCY)
        .unwrap()
        .instantiate()
        .unwrap();
    let rust = runtime.load_projection(BALANCES).unwrap();
    let others = [
        (
            "Python",
            runtime.load_projection(component("balances-py")).unwrap(),
        ),
        (
            "JavaScript",
            runtime.load_projection(component("balances-js")).unwrap(),
        ),
    ];
    for (language, plugin) in &others {
        assert_eq!(plugin.info().name, "balances", "{language}");
        assert_eq!(plugin.info().handles, rust.info().handles, "{language}");
    }

    for (seed, events, accounts, batch) in
        [(1, 400, 12, 1), (2, 3_000, 60, 64), (3, 5_000, 600, 500)]
    {
        let history = upcast_all(&mut upcaster, &generated_history(seed, events, accounts));
        let mut expected = project(&rust, &history, batch);
        assert!(
            expected.read_model().entries.len() > accounts as usize / 2,
            "the history opens accounts"
        );
        for (language, plugin) in &others {
            let mut got = project(plugin, &history, batch);
            assert_eq!(
                got.read_model().entries,
                expected.read_model().entries,
                "{language}, seed {seed}: the read model differs from the Rust one"
            );
            for (name, args) in queries(&history) {
                let args_text = args.to_string();
                same_answer(
                    language,
                    name,
                    &args,
                    expected.query(name, &args_text),
                    got.query(name, &args_text),
                );
            }
        }
    }
}

#[test]
fn a_malformed_event_stops_every_language_at_its_position() {
    let runtime = runtime();
    let good = [
        event(
            1,
            "account-1",
            1,
            "AccountOpened",
            1,
            r#"{"owner":"Ann","initial_deposit":10}"#,
        ),
        event(
            2,
            "account-1",
            2,
            "FundsDeposited",
            2,
            r#"{"amount":5,"currency":"USD"}"#,
        ),
    ];
    let malformed = [
        r#"{"amount":"lots","currency":"USD"}"#,
        r#"{"amount":-5,"currency":"USD"}"#,
        r#"{"amount":1.5,"currency":"USD"}"#,
        r#"{"currency":"USD"}"#,
        r#"{"amount":5,"currency":7}"#,
        r#"not json"#,
    ];
    let plugins = [
        ("Rust", runtime.load_projection(BALANCES).unwrap()),
        (
            "Python",
            runtime.load_projection(component("balances-py")).unwrap(),
        ),
        (
            "JavaScript",
            runtime.load_projection(component("balances-js")).unwrap(),
        ),
    ];
    for data in malformed {
        let mut batch = good.to_vec();
        batch.push(event(3, "account-1", 3, "FundsDeposited", 2, data));
        batch.push(event(
            4,
            "account-1",
            4,
            "FundsWithdrawn",
            1,
            r#"{"amount":1}"#,
        ));
        for (language, plugin) in &plugins {
            let mut instance = plugin.instantiate(MemoryReadModel::new()).unwrap();
            match instance.handle(&batch) {
                Err(ProjectionError::Event {
                    plugin, position, ..
                }) => {
                    assert_eq!(plugin, "balances", "{language} {data}");
                    assert_eq!(position, 3, "{language} {data}");
                }
                other => panic!("{language} {data}: expected an event error, got {other:?}"),
            }
            // The instance keeps serving after an event error.
            instance.handle(&good[..1]).unwrap();
        }
    }
}

#[test]
fn a_second_start_loads_an_interpreter_from_the_cache_in_milliseconds() {
    // A fresh cache: the first load compiles the ~15 MB interpreter component.
    let dir = tempfile::tempdir().unwrap();
    for name in ["balances-py", "balances-js"] {
        let first =
            eshost_tests::runtime_in(dir.path(), crate::polyglot_support::interpreter_limits())
                .load_projection(component(name))
                .unwrap();
        assert!(!first.load_stats().cache_hit, "{name}");
        // A new runtime (a restart) over the same cache directory.
        let second =
            eshost_tests::runtime_in(dir.path(), crate::polyglot_support::interpreter_limits())
                .load_projection(component(name))
                .unwrap();
        let (cold, warm) = (first.load_stats(), second.load_stats());
        assert!(warm.cache_hit, "{name}");
        assert_eq!(second.info(), first.info(), "{name}");
        // Typically 5-20 s against ~50 ms; the bounds leave room for a busy machine.
        assert!(
            warm.total < std::time::Duration::from_secs(2) && warm.total * 10 < cold.total,
            "{name}: first load {cold:?}, cached load {warm:?}"
        );
        eprintln!(
            "{name}: first load {:.0} ms, cached load {:.1} ms",
            cold.total.as_secs_f64() * 1e3,
            warm.total.as_secs_f64() * 1e3
        );
        let mut instance = second.instantiate(MemoryReadModel::new()).unwrap();
        instance.handle(&[]).unwrap();
    }
}

#[test]
fn inspect_lists_a_toolchains_own_exports_apart_from_the_contract() {
    let runtime = runtime();
    for name in ["balances-py", "balances-js"] {
        let inspection = runtime.inspect(component(name)).unwrap();
        assert!(
            inspection
                .exports
                .iter()
                .all(|e| e == "describe" || e.starts_with("eshost:plugin/")),
            "{name}: {:?}",
            inspection.exports
        );
        assert!(
            inspection
                .exports
                .contains(&"eshost:plugin/projection@0.1.0".to_owned()),
            "{name}: {:?}",
            inspection.exports
        );
        let table = inspection.to_string();
        for other in &inspection.other_exports {
            let listed = table
                .split_once("other exports (not called by the host)")
                .is_some_and(|(_, rest)| rest.contains(other.as_str()));
            assert!(listed, "{name}: {other} not listed apart:\n{table}");
        }
    }
    let python = runtime.inspect(component("balances-py")).unwrap();
    assert_eq!(python.other_exports, ["exports"], "componentize-py's own");
}
