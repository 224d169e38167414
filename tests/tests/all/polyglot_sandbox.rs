//! A Python plugin is contained like a Rust one: reading a file or opening a socket fails
//! (and, uncaught, fails the call with a clear error naming the plugin), an endless loop stops
//! at the time limit, a memory bomb at the memory limit, the clock and randomness are fixed,
//! and right after each fault the host still serves that plugin and others. The guest is
//! `tests/polyglot-guests/hostile-py`.

use std::time::{Duration, Instant};

use crate::polyglot_support::{component, interpreter_limits, json, runtime};
use eshost_runtime::{
    Limits, LoadedPlugin, MemoryReadModel, PluginError, PluginKind, ProjectionInstance,
    ProjectionPlugin, QueryError,
};
use eshost_tests::{event, runtime_in, test_limits};
use serde_json::Value;

/// Generous: a limit check, not a benchmark.
const PATIENCE: Duration = Duration::from_secs(20);

struct Fixture {
    hostile: ProjectionPlugin,
    balances: ProjectionPlugin,
}

fn fixture() -> Fixture {
    let runtime = runtime();
    let hostile = runtime
        .load_projection(component("hostile-py"))
        .expect("load the hostile Python guest");
    let balances = runtime
        .load_projection(component("balances-py"))
        .expect("load the Python balances");
    Fixture { hostile, balances }
}

fn instance(plugin: &ProjectionPlugin) -> ProjectionInstance<MemoryReadModel> {
    plugin.instantiate(MemoryReadModel::new()).unwrap()
}

/// Runs the query `kind` on the hostile guest; returns its result and how long it took.
fn attack(
    instance: &mut ProjectionInstance<MemoryReadModel>,
    kind: &str,
) -> (Result<String, QueryError>, Duration) {
    let start = Instant::now();
    let result = instance.query(kind, "null");
    (result, start.elapsed())
}

fn fault(result: Result<String, QueryError>) -> PluginError {
    match result {
        Err(QueryError::Plugin(error)) => error,
        other => panic!("expected a plugin fault, got {other:?}"),
    }
}

/// After a fault: the same instance serves again (from a fresh wasm instance), and another
/// Python plugin in the same runtime works.
fn host_still_serves(fixture: &Fixture, instance: &mut ProjectionInstance<MemoryReadModel>) {
    let (result, _) = attack(instance, "ok");
    assert_eq!(
        json(&result.expect("the plugin serves again")),
        json(r#"{"ok":true}"#)
    );
    instance
        .handle(&[event(1, "s", 1, "Anything", 1, "{}")])
        .expect("handle after a fault");
    assert_eq!(
        instance
            .read_model()
            .entries
            .get("seen/00000001")
            .map(String::as_str),
        Some("Anything")
    );

    let mut balances = instance_of(&fixture.balances);
    balances
        .handle(&[event(
            1,
            "account-1",
            1,
            "AccountOpened",
            1,
            r#"{"owner":"Ann","initial_deposit":5}"#,
        )])
        .unwrap();
    assert_eq!(
        json(
            &balances
                .query("balance", r#"{"account":"account-1"}"#)
                .unwrap()
        ),
        json(r#"{"account":"account-1","balance":5,"currency":"USD"}"#)
    );
}

fn instance_of(plugin: &ProjectionPlugin) -> ProjectionInstance<MemoryReadModel> {
    instance(plugin)
}

fn probe(instance: &mut ProjectionInstance<MemoryReadModel>, kind: &str) -> Value {
    let (result, _) = attack(instance, kind);
    json(&result.unwrap_or_else(|e| panic!("probe {kind}: {e}")))
}

#[test]
fn reading_a_file_fails_the_call_naming_the_plugin() {
    let fixture = fixture();
    let mut hostile = instance(&fixture.hostile);
    let (result, took) = attack(&mut hostile, "read-file");
    let error = fault(result);
    assert_eq!(error.plugin(), "hostile-py");
    let message = error.to_string();
    assert!(
        message.starts_with("plugin \"hostile-py\" trapped"),
        "{message}"
    );
    assert!(
        message.contains("FileNotFoundError") || message.contains("/etc/passwd"),
        "the Python traceback reaches the error: {message}"
    );
    assert!(took < PATIENCE, "took {took:?}");
    host_still_serves(&fixture, &mut hostile);
}

#[test]
fn opening_a_socket_fails_the_call_naming_the_plugin() {
    let fixture = fixture();
    let mut hostile = instance(&fixture.hostile);
    let (result, took) = attack(&mut hostile, "connect");
    let error = fault(result);
    assert_eq!(error.plugin(), "hostile-py");
    let message = error.to_string();
    assert!(
        message.starts_with("plugin \"hostile-py\" trapped"),
        "{message}"
    );
    // The sandbox refuses the socket itself (wasi:sockets without network access).
    assert!(message.contains("PermissionError"), "{message}");
    assert!(took < PATIENCE, "took {took:?}");
    host_still_serves(&fixture, &mut hostile);
}

#[test]
fn an_endless_loop_is_stopped_at_the_time_limit() {
    let fixture = fixture();
    let mut hostile = instance(&fixture.hostile);
    // Instantiate first, so the attack is timed alone.
    attack(&mut hostile, "ok").0.unwrap();
    let (result, took) = attack(&mut hostile, "loop");
    let error = fault(result);
    assert_eq!(
        error,
        PluginError::Timeout {
            plugin: "hostile-py".into(),
            limit: interpreter_limits().time
        }
    );
    assert_eq!(
        error.to_string(),
        "plugin \"hostile-py\" exceeded its 2000 ms time limit"
    );
    assert!(took >= interpreter_limits().time, "stopped early: {took:?}");
    assert!(took < PATIENCE, "took {took:?}");
    host_still_serves(&fixture, &mut hostile);
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let fixture = fixture();
    // Time enough that only memory stops it, however loaded the machine.
    let patient = fixture.hostile.with_limits(Limits {
        time: PATIENCE,
        ..interpreter_limits()
    });
    let mut hostile = instance(&patient);
    let (result, took) = attack(&mut hostile, "alloc");
    let error = fault(result);
    assert_eq!(
        error.to_string(),
        "plugin \"hostile-py\" exceeded its 256 MiB memory limit"
    );
    assert!(took < PATIENCE, "took {took:?}");
    host_still_serves(&fixture, &mut hostile);
}

#[test]
fn files_sockets_and_environment_are_out_of_reach() {
    let fixture = fixture();
    let mut hostile = instance(&fixture.hostile);
    let files = probe(&mut hostile, "probe-files");
    for what in ["read", "create", "list"] {
        assert!(files[what]["err"].is_string(), "{what}: {files}");
    }
    assert!(!std::path::Path::new("escape.txt").exists());
    let sockets = probe(&mut hostile, "probe-sockets");
    for what in ["tcp", "udp", "listen", "resolve"] {
        assert!(sockets[what]["err"].is_string(), "{what}: {sockets}");
    }
    for what in ["tcp", "udp", "listen"] {
        let err = sockets[what]["err"].as_str().unwrap();
        assert!(err.starts_with("PermissionError"), "{what}: {err}");
    }
    let env = probe(&mut hostile, "probe-env");
    assert_eq!(env["vars"], 0, "{env}");
}

#[test]
fn the_clock_is_fixed_sleep_does_not_wait_and_randomness_is_seeded() {
    let fixture = fixture();
    let mut hostile = instance(&fixture.hostile);
    let start = Instant::now();
    let clock = probe(&mut hostile, "probe-clock");
    assert!(start.elapsed() < Duration::from_secs(5), "slept for real");
    // Queries run at time 0: the clock reads what the host says, not the host's time.
    assert_eq!(clock["wall_ms"], 0, "{clock}");
    assert_eq!(clock["slept_ns"], 0, "{clock}");

    let first = probe(&mut hostile, "probe-random");
    // The same calls in a fresh instance draw the same numbers.
    let mut again = instance(&fixture.hostile);
    probe(&mut again, "probe-clock");
    assert_eq!(
        probe(&mut again, "probe-random"),
        first,
        "a replay draws the same"
    );
    // The host reseeds every call from the call itself, so what a call draws from WASI does
    // not depend on what the instance served before (the interpreter's own generator, seeded
    // once, does: see the README's Determinism).
    let mut other = instance(&fixture.hostile);
    probe(&mut other, "probe-env");
    assert_eq!(
        probe(&mut other, "probe-random")["urandom"],
        first["urandom"]
    );
}

#[test]
fn a_plugin_can_have_its_own_limits_from_the_load_on() {
    // A runtime with tight limits for everything else...
    let cache = std::env::temp_dir().join("eshost-polyglot-tests-cache");
    let tight = runtime_in(&cache, test_limits());
    assert_eq!(tight.config().limits.time, Duration::from_millis(500));

    // ...gives the interpreter its own: they govern the plugin's instances.
    let LoadedPlugin::Projection(hostile) = tight
        .load_with_limits(
            component("hostile-py"),
            PluginKind::Projection,
            interpreter_limits(),
        )
        .expect("load with the interpreter's limits")
    else {
        panic!("a projection was asked for");
    };
    let mut instance = instance(&hostile);
    let (result, took) = attack(&mut instance, "loop");
    assert_eq!(
        fault(result).to_string(),
        "plugin \"hostile-py\" exceeded its 2000 ms time limit"
    );
    assert!(took >= Duration::from_secs(2), "{took:?}");

    // The load itself runs `describe()` under them: too little memory for the interpreter's
    // heap fails the load with a clear error.
    let error = tight
        .load_with_limits(
            component("balances-py"),
            PluginKind::Projection,
            Limits {
                memory_bytes: 4 * 1024 * 1024,
                ..interpreter_limits()
            },
        )
        .expect_err("4 MiB is too little for Python");
    assert!(
        error
            .to_string()
            .contains("exceeded its 4 MiB memory limit"),
        "{error}"
    );
    // The plain load, under the runtime's limits, works.
    tight.load_projection(component("balances-py")).unwrap();
}
