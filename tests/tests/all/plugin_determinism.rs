//! Replays are deterministic even for a plugin that reads the clock and randomness for every
//! event (`tests/guests/hostile`): the same events give the same state, whatever the batching,
//! the instance or the runtime; and a worker given an instance per aggregate decides on the
//! state a replay builds.

use crate::aggregate_support::{host, pipeline_with};
use eshost_core::aggregate::{AggregateConfig, At, CommandOptions, EngineConfig};
use eshost_runtime::{AggregatePlugin, Event};
use eshost_tests::{HOSTILE, event, runtime};
use serde_json::Value;

fn events() -> Vec<Event> {
    (1..=500)
        .map(|n| event(n, "victim-1", n, "Something", 1, &format!(r#"{{"n":{n}}}"#)))
        .collect()
}

fn replay(plugin: &AggregatePlugin, events: &[Event], batch: usize) -> Value {
    let mut instance = plugin.instantiate().unwrap();
    instance.new("victim-1").unwrap();
    for chunk in events.chunks(batch) {
        instance.apply(chunk).unwrap();
    }
    serde_json::from_str(&instance.state().unwrap()).unwrap()
}

#[test]
fn replaying_twice_gives_the_same_state() {
    let (runtime, _cache) = runtime();
    let plugin = runtime.load_aggregate(HOSTILE).unwrap();
    let events = events();

    let first = replay(&plugin, &events, 500);
    let second = replay(&plugin, &events, 500);
    assert_eq!(first, second);
    assert_eq!(first["applied"], 500);

    // Batching does not matter, nor does a new runtime (another engine, another cache).
    assert_eq!(replay(&plugin, &events, 7), first);
    let (other, _other_cache) = eshost_tests::runtime();
    assert_eq!(
        replay(&other.load_aggregate(HOSTILE).unwrap(), &events, 100),
        first
    );

    // The clocks the guest read while applying were frozen.
    assert_eq!(first["last_wall_ms"], 0);
    assert_eq!(first["last_monotonic_ns"], 0);

    // And a different history does give a different state (the digest is not constant).
    let mut changed = events.clone();
    changed[250].data = r#"{"n":-1}"#.into();
    assert_ne!(replay(&plugin, &changed, 500)["digest"], first["digest"]);
}

#[test]
fn an_event_the_plugin_refuses_names_its_position() {
    let (runtime, _cache) = runtime();
    let plugin = runtime.load_aggregate(HOSTILE).unwrap();
    let mut events = events();
    events[41].event_type = "Poison".into();
    let mut instance = plugin.instantiate().unwrap();
    instance.new("victim-1").unwrap();
    let error = instance.apply(&events).unwrap_err();
    assert_eq!(
        error.to_string(),
        "plugin \"hostile\" could not apply the event at position 42: poisoned event"
    );
}

/// For aggregates sharing one worker, what each `digest` command was decided on (the
/// worker's state) and what a replay of the stream up to that command builds.
async fn decided_and_replayed(instance_per_aggregate: bool) -> Vec<(Value, Value)> {
    let host = host(AggregateConfig::every(0));
    let hostile = host.runtime.load_aggregate(HOSTILE).unwrap();
    let config = AggregateConfig {
        instance_per_aggregate,
        ..AggregateConfig::every(0)
    };
    let engine = EngineConfig {
        workers: 1,
        ..EngineConfig::default()
    };
    let aggregates = pipeline_with(
        &host.store,
        &host.views,
        &host.runtime,
        &hostile,
        config,
        false,
        engine,
    );
    let ids: Vec<String> = (0..6).map(|n| format!("victim-{n}")).collect();
    let send = |id: String, kind: &'static str| {
        let aggregates = aggregates.clone();
        async move {
            let command = format!(r#"{{"type":"{kind}"}}"#);
            let reply = aggregates
                .execute("hostile", &id, &command, CommandOptions::default())
                .await
                .unwrap();
            assert!(reply.accepted(), "{kind} on {id}: {reply:?}");
            reply
        }
    };
    // Interleaved, so that each aggregate's events are applied among the others'.
    for _round in 0..4 {
        for id in &ids {
            send(id.clone(), "ok").await;
        }
    }
    let mut pairs = Vec::new();
    for id in ids.iter().rev() {
        let reply = send(id.clone(), "digest").await;
        let observed = &reply.events()[0];
        let decided: Value = serde_json::from_str(&observed.data).unwrap();
        let replayed = aggregates
            .state("hostile", id, At::Version(observed.stream_version - 1))
            .await
            .unwrap();
        pairs.push((decided["digest"].clone(), replayed.state["digest"].clone()));
    }
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_with_an_instance_of_its_own_decides_on_the_state_a_replay_builds() {
    // The guest's randomness comes from std's `RandomState`, whose keys Rust draws once per
    // instance and then counts up: in a shared instance they depend on every aggregate it
    // served, and the worker decides on a state no replay reproduces.
    let shared = decided_and_replayed(false).await;
    assert!(
        shared.iter().any(|(decided, replayed)| decided != replayed),
        "a shared instance should show the hidden per-instance state: {shared:?}"
    );
    let isolated = decided_and_replayed(true).await;
    for (decided, replayed) in &isolated {
        assert!(decided.is_string(), "{isolated:?}");
        assert_eq!(decided, replayed, "{isolated:?}");
    }
}
