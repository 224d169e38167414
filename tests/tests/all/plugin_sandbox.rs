//! Hostile guests: each misbehaviour fails its call with a clear error naming the plugin,
//! within its limit (or gets nothing useful), and right after it the host still serves normal
//! plugins. The guest is `tests/guests/hostile`.

use std::time::{Duration, Instant};

use eshost_runtime::{
    AggregateInstance, AggregatePlugin, HandleError, NewEvent, PluginError, Runtime,
};
use eshost_tests::{BANK_ACCOUNT, HOSTILE, command, runtime, test_limits};
use serde_json::{Value, json};

/// Generous: a limit check, not a benchmark.
const PATIENCE: Duration = Duration::from_secs(10);

struct Fixture {
    _cache: tempfile::TempDir,
    runtime: Runtime,
    hostile: AggregatePlugin,
    bank: AggregatePlugin,
}

fn fixture() -> Fixture {
    let (runtime, cache) = runtime();
    let hostile = runtime
        .load_aggregate(HOSTILE)
        .expect("load the hostile guest");
    let bank = runtime
        .load_aggregate(BANK_ACCOUNT)
        .expect("load bank-account");
    Fixture {
        _cache: cache,
        runtime,
        hostile,
        bank,
    }
}

fn hostile_instance(fixture: &Fixture) -> AggregateInstance {
    let mut instance = fixture.hostile.instantiate().unwrap();
    instance.new("victim-1").unwrap();
    instance
}

/// Runs the hostile command `kind`; returns its result and how long it took.
fn attack(
    instance: &mut AggregateInstance,
    kind: &str,
) -> (Result<Vec<NewEvent>, HandleError>, Duration) {
    let start = Instant::now();
    let result = instance.handle(&command(&json!({"type": kind}).to_string(), 1_234));
    (result, start.elapsed())
}

fn fault(result: Result<Vec<NewEvent>, HandleError>) -> PluginError {
    match result {
        Err(HandleError::Plugin(error)) => error,
        other => panic!("expected a plugin fault, got {other:?}"),
    }
}

/// After a fault: the same plugin serves again from a fresh instance, and so does another
/// plugin.
fn host_still_serves(fixture: &Fixture, instance: &mut AggregateInstance) {
    // The faulted instance lost its aggregate with its store...
    match instance.state() {
        Err(PluginError::NoAggregate { plugin }) => assert_eq!(plugin, "hostile"),
        other => panic!("expected the aggregate to be gone, got {other:?}"),
    }
    // ...and gets a fresh one on the next call.
    instance.new("victim-2").unwrap();
    let events = instance.handle(&command(r#"{"type":"ok"}"#, 1)).unwrap();
    assert_eq!(events[0].event_type, "Happened");

    let mut bank = fixture.bank.instantiate().unwrap();
    bank.new("account-1").unwrap();
    let events = bank
        .handle(&command(
            r#"{"type":"Open","owner":"Ann","initial_deposit":5}"#,
            1,
        ))
        .unwrap();
    assert_eq!(events[0].event_type, "AccountOpened");
}

fn probe(instance: &mut AggregateInstance, kind: &str) -> Value {
    let (result, _) = attack(instance, kind);
    let events = result.unwrap_or_else(|e| panic!("probe {kind}: {e}"));
    serde_json::from_str(&events[0].data).unwrap()
}

#[test]
fn an_endless_loop_is_stopped_at_the_time_limit() {
    let fixture = fixture();
    let mut instance = hostile_instance(&fixture);
    let (result, took) = attack(&mut instance, "loop");
    let error = fault(result);
    assert_eq!(
        error,
        PluginError::Timeout {
            plugin: "hostile".into(),
            limit: test_limits().time
        }
    );
    assert_eq!(
        error.to_string(),
        "plugin \"hostile\" exceeded its 500 ms time limit"
    );
    assert!(took >= test_limits().time, "stopped early: {took:?}");
    assert!(took < PATIENCE, "took {took:?}");
    host_still_serves(&fixture, &mut instance);
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let fixture = fixture();
    let mut instance = hostile_instance(&fixture);
    let (result, took) = attack(&mut instance, "alloc");
    let error = fault(result);
    assert_eq!(
        error.to_string(),
        "plugin \"hostile\" exceeded its 64 MiB memory limit"
    );
    assert!(took < PATIENCE, "took {took:?}");
    host_still_serves(&fixture, &mut instance);
}

#[test]
fn deep_recursion_overflows_the_stack_not_the_host() {
    let fixture = fixture();
    let mut instance = hostile_instance(&fixture);
    let (result, took) = attack(&mut instance, "recurse");
    let error = fault(result);
    assert_eq!(
        error,
        PluginError::StackOverflow {
            plugin: "hostile".into()
        }
    );
    assert_eq!(
        error.to_string(),
        "plugin \"hostile\" overflowed its call stack (unbounded recursion?)"
    );
    assert!(took < PATIENCE, "took {took:?}");
    host_still_serves(&fixture, &mut instance);

    // Rust keeps address-taken locals on a shadow stack in linear memory; that one overflows
    // into an out-of-bounds access, which is a trap like any other.
    let (result, took) = attack(&mut instance, "recurse-frames");
    let error = fault(result);
    assert_eq!(
        error.to_string(),
        "plugin \"hostile\" trapped: wasm trap: out of bounds memory access"
    );
    assert!(took < PATIENCE, "took {took:?}");
    host_still_serves(&fixture, &mut instance);
}

#[test]
fn a_panic_is_a_trap_with_the_panic_message() {
    let fixture = fixture();
    let mut instance = hostile_instance(&fixture);
    let (result, _) = attack(&mut instance, "panic");
    let error = fault(result);
    let message = error.to_string();
    assert!(
        message.starts_with("plugin \"hostile\" trapped: "),
        "{message}"
    );
    assert!(
        message.contains("the hostile guest panicked on purpose"),
        "{message}"
    );
    host_still_serves(&fixture, &mut instance);
}

#[test]
fn exit_is_a_trap() {
    let fixture = fixture();
    let mut instance = hostile_instance(&fixture);
    let (result, _) = attack(&mut instance, "exit");
    let error = fault(result);
    // WASI 0.2 `exit` carries only success or failure: any non-zero code is failure (1).
    assert_eq!(
        error.to_string(),
        "plugin \"hostile\" trapped: called exit(1)"
    );
    host_still_serves(&fixture, &mut instance);
}

#[test]
fn a_flood_of_tiny_events_is_refused_before_the_host_copies_them() {
    let fixture = fixture();
    let mut instance = hostile_instance(&fixture);
    let (result, took) = attack(&mut instance, "many");
    match fault(result) {
        PluginError::OutputTooLarge {
            call, size, limit, ..
        } => {
            assert_eq!(call, "handle");
            // 100,000 events of two bytes: their overhead, not their data, passes the limit.
            assert!(size > limit && size >= 100_000 * 512, "{size} {limit}");
        }
        other => panic!("expected OutputTooLarge, got {other}"),
    }
    assert!(took < PATIENCE, "took {took:?}");
    // Refusing output is not a fault of the instance: it keeps its aggregate.
    instance.state().unwrap();
    host_still_serves_after_success(&fixture);
}

#[test]
fn a_huge_output_is_refused() {
    let fixture = fixture();
    let mut instance = hostile_instance(&fixture);
    let (result, took) = attack(&mut instance, "huge");
    let error = fault(result);
    match &error {
        PluginError::OutputTooLarge {
            plugin,
            call,
            size,
            limit,
        } => {
            assert_eq!(plugin, "hostile");
            assert_eq!(*call, "handle");
            assert!(size > limit);
        }
        other => panic!("expected OutputTooLarge, got {other}"),
    }
    assert!(
        error.to_string().contains("over its 4 MiB output limit"),
        "{error}"
    );
    assert!(took < PATIENCE, "took {took:?}");
    // Refusing output is not a fault of the instance: it keeps its aggregate.
    instance.state().unwrap();
    host_still_serves_after_success(&fixture);
}

fn host_still_serves_after_success(fixture: &Fixture) {
    let mut bank = fixture.bank.instantiate().unwrap();
    bank.new("account-1").unwrap();
    bank.state().unwrap();
}

#[test]
fn a_flood_of_output_is_bounded_and_harmless() {
    let fixture = fixture();
    let mut instance = hostile_instance(&fixture);
    let (result, _) = attack(&mut instance, "print");
    assert_eq!(result.unwrap()[0].event_type, "Printed");
    instance.state().unwrap();
}

#[test]
fn a_runaway_plugin_does_not_hold_up_others() {
    let fixture = fixture();
    let runaway = fixture.hostile.with_limits(eshost_runtime::Limits {
        time: Duration::from_secs(5),
        ..test_limits()
    });
    let looping = std::thread::spawn(move || {
        let mut instance = runaway.instantiate().unwrap();
        instance.new("victim").unwrap();
        instance.handle(&command(r#"{"type":"loop"}"#, 1))
    });
    // While it loops on its thread, bank-account serves on this one.
    let mut bank = fixture.bank.instantiate().unwrap();
    bank.new("account-1").unwrap();
    let opened = bank
        .handle(&command(r#"{"type":"Open","owner":"Ann"}"#, 1))
        .unwrap();
    bank.apply(&[eshost_tests::event(
        1,
        "account-1",
        1,
        "AccountOpened",
        1,
        &opened[0].data,
    )])
    .unwrap();
    for n in 0..20 {
        let deposit = json!({"type": "Deposit", "amount": n + 1}).to_string();
        assert_eq!(bank.handle(&command(&deposit, 2)).unwrap().len(), 1);
    }
    assert!(!looping.is_finished(), "the loop runs until its 5 s limit");
    let error = fault(looping.join().unwrap());
    assert_eq!(
        error.to_string(),
        "plugin \"hostile\" exceeded its 5000 ms time limit"
    );
}

#[test]
fn files_are_out_of_reach() {
    let fixture = fixture();
    let mut instance = hostile_instance(&fixture);
    let seen = probe(&mut instance, "file");
    for what in ["read", "create", "list"] {
        assert!(seen[what]["err"].is_string(), "{what}: {seen}");
    }
    assert!(!std::path::Path::new("escape.txt").exists());
}

#[test]
fn environment_and_arguments_are_empty() {
    let fixture = fixture();
    let mut instance = hostile_instance(&fixture);
    let seen = probe(&mut instance, "env");
    assert_eq!(seen["vars"], 0, "{seen}");
    assert_eq!(seen["args"], 0, "{seen}");
}

#[test]
fn sockets_are_denied() {
    let fixture = fixture();
    let mut instance = hostile_instance(&fixture);
    let seen = probe(&mut instance, "socket");
    for what in ["tcp", "udp", "listen"] {
        assert!(seen[what]["err"].is_string(), "{what}: {seen}");
    }
}

#[test]
fn the_clock_is_the_command_time_and_sleep_does_not_wait() {
    let fixture = fixture();
    let mut instance = hostile_instance(&fixture);
    let start = Instant::now();
    // The guest sleeps 10 s: with a frozen clock the sleep is over at once.
    let seen = probe(&mut instance, "clock");
    assert!(start.elapsed() < Duration::from_secs(5), "slept for real");
    assert_eq!(
        seen["wall_ms"], 1_234,
        "the wall clock reads the command's issued-at: {seen}"
    );
    assert_eq!(
        seen["slept_ns"], 0,
        "the monotonic clock does not move: {seen}"
    );
}

#[test]
fn randomness_is_seeded() {
    let fixture = fixture();
    let first = probe(&mut hostile_instance(&fixture), "random");
    let second = probe(&mut hostile_instance(&fixture), "random");
    assert_eq!(first, second);
    let other_runtime = fixture.runtime.clone();
    let third = probe(
        &mut {
            let mut i = other_runtime
                .load_aggregate(HOSTILE)
                .unwrap()
                .instantiate()
                .unwrap();
            i.new("victim-3").unwrap();
            i
        },
        "random",
    );
    assert_eq!(first, third);
}

#[test]
fn many_faults_in_a_row_leave_the_host_healthy() {
    let fixture = fixture();
    let mut instance = hostile_instance(&fixture);
    for kind in [
        "loop",
        "alloc",
        "recurse",
        "recurse-frames",
        "panic",
        "exit",
        "loop",
        "alloc",
    ] {
        let (result, took) = attack(&mut instance, kind);
        assert_eq!(fault(result).plugin(), "hostile", "{kind}");
        assert!(took < PATIENCE, "{kind} took {took:?}");
        instance.new("again").unwrap();
    }
    host_still_serves_after_success(&fixture);
}
