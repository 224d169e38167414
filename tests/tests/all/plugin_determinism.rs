//! Replays are deterministic even for a plugin that reads the clock and randomness for every
//! event (`tests/guests/hostile`): the same events give the same state, whatever the batching,
//! the instance or the runtime.

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
