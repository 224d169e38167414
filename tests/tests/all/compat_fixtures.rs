//! The plugin contract keeps old guests working: components built once against
//! `eshost:plugin@0.1.0` and committed as bytes (`tests/compat/v0.1.0/`, source and toolchain
//! in `tests/compat/`) load in today's host and behave as they did: decisions, upcasts,
//! read-model writes and queries. If one of these fails, the host broke 0.1 plugins in the
//! wild; fix the host, never the fixture.

use std::path::PathBuf;
use std::time::Duration;

use eshost_core::aggregate::{At, CommandOptions, Decision};
use eshost_core::{Config, Host};
use eshost_runtime::{
    HandleError, MemoryReadModel, NewEvent, PluginKind, QueryError, UpcastError, UpcastResult,
    UpcastedEvent,
};
use eshost_store::{AppendRequest, ExpectedVersion, ProposedEvent};
use eshost_tests::{command, event, runtime};
use serde_json::{Value, json};

/// A committed compatibility fixture, e.g. `v0.1.0/aggregate.wasm`.
pub fn fixture(path: &str) -> PathBuf {
    let file = eshost_tests::checkout().join("tests/compat").join(path);
    assert!(file.is_file(), "{} is missing", file.display());
    file
}

fn added(position: u64, stream: &str, version: u64, amount: u64) -> eshost_runtime::Event {
    event(
        position,
        stream,
        version,
        "Added",
        2,
        &format!("{{\"amount\":{amount}}}"),
    )
}

#[test]
fn the_0_1_0_aggregate_still_decides_applies_and_snapshots() {
    let (runtime, _cache) = runtime();
    let plugin = runtime
        .load_aggregate(fixture("v0.1.0/aggregate.wasm"))
        .unwrap();
    let info = plugin.info();
    assert_eq!(
        (info.name.as_str(), info.kind, info.wit_version.as_str()),
        ("compat-counter", PluginKind::Aggregate, "0.1.0")
    );
    assert_eq!(info.handles, ["Added", "Named"]);

    let mut instance = plugin.instantiate().unwrap();
    instance.new("c-1").unwrap();
    instance
        .apply(&[added(1, "c-1", 1, 30), added(2, "c-1", 2, 50)])
        .unwrap();
    assert_eq!(
        instance.handle(&command(r#"{"type":"Add","amount":20}"#, 7)),
        Ok(vec![NewEvent {
            event_type: "Added".into(),
            schema_version: 2,
            data: r#"{"amount":20}"#.into(),
            subject_id: None,
            personal_data: None,
        }])
    );
    assert_eq!(
        instance.handle(&command(r#"{"type":"Add","amount":21}"#, 7)),
        Err(HandleError::Rejected(
            "limit 100 exceeded: total 80, adding 21".into()
        ))
    );
    assert_eq!(
        instance.handle(&command(r#"{"type":"Add","amount":0}"#, 7)),
        Err(HandleError::Invalid(
            "amount must be a positive number".into()
        ))
    );
    let named = instance
        .handle(&command(r#"{"type":"Name","name":"Ann"}"#, 7))
        .unwrap();
    assert_eq!(named[0].subject_id.as_deref(), Some("c-1"));
    assert_eq!(named[0].personal_data.as_deref(), Some(r#"{"name":"Ann"}"#));

    let state: Value = serde_json::from_str(&instance.state().unwrap()).unwrap();
    assert_eq!(state, json!({"id": "c-1", "total": 80, "events": 2}));
    let snapshot = instance.snapshot().unwrap();
    assert_eq!(snapshot, b"80,2");
    let mut restored = plugin.instantiate().unwrap();
    restored.restore("c-1", &snapshot).unwrap();
    assert_eq!(restored.state().unwrap(), instance.state().unwrap());
    let refused = restored.restore("c-1", b"garbage").unwrap_err();
    assert!(
        refused.to_string().contains("is not `total,events`"),
        "{refused}"
    );

    // An event the aggregate does not know is an event error naming its position.
    instance.new("c-2").unwrap();
    let error = instance
        .apply(&[event(9, "c-2", 1, "Added", 1, r#"{"n":1}"#)])
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "plugin \"compat-counter\" could not apply the event at position 9: cannot apply Added v1"
    );
}

#[test]
fn the_0_1_0_upcaster_still_upcasts_and_refuses() {
    let (runtime, _cache) = runtime();
    let plugin = runtime
        .load_upcaster(fixture("v0.1.0/upcaster.wasm"))
        .unwrap();
    assert_eq!(plugin.info().name, "compat-added");
    assert_eq!(plugin.info().wit_version, "0.1.0");
    assert!(plugin.info().upcasts_event("Added", 1));
    assert!(!plugin.info().upcasts_event("Added", 2));

    let mut instance = plugin.instantiate().unwrap();
    assert_eq!(
        instance.upcast(&event(1, "c-1", 1, "Added", 1, r#"{"n":30}"#)),
        Ok(UpcastResult::Upcasted(UpcastedEvent {
            event_type: "Added".into(),
            schema_version: 2,
            data: r#"{"amount":30}"#.into(),
        }))
    );
    assert_eq!(
        instance.upcast(&added(2, "c-1", 2, 5)),
        Ok(UpcastResult::Unchanged)
    );
    let refused = instance
        .upcast(&event(3, "c-1", 3, "Added", 1, r#"{"m":1}"#))
        .unwrap_err();
    assert_eq!(
        refused,
        UpcastError::Refused {
            plugin: "compat-added".into(),
            position: 3,
            message: r#"Added v1 without a number n: {"m":1}"#.into(),
        }
    );
}

#[test]
fn the_0_1_0_projection_still_writes_its_read_model_and_answers() {
    let (runtime, _cache) = runtime();
    let plugin = runtime
        .load_projection(fixture("v0.1.0/projection.wasm"))
        .unwrap();
    assert_eq!(plugin.info().name, "compat-totals");
    assert_eq!(plugin.info().wit_version, "0.1.0");

    let mut instance = plugin.instantiate(MemoryReadModel::new()).unwrap();
    instance
        .handle(&[
            added(1, "c-1", 1, 30),
            added(2, "c-2", 1, 7),
            added(3, "c-1", 2, 50),
            added(4, "c-3", 1, 1),
        ])
        .unwrap();
    let entries = &instance.read_model().entries;
    assert_eq!(entries["total/c-1"], "80");
    assert_eq!(entries["events"], "4");
    assert_eq!(
        instance.query("total", r#"{"stream":"c-1"}"#).unwrap(),
        r#"{"stream":"c-1","total":80}"#
    );
    // `streams` pages through the read model with `scan`, two entries at a time.
    assert_eq!(
        instance.query("streams", "{}").unwrap(),
        r#"{"c-1":80,"c-2":7,"c-3":1}"#
    );
    assert!(matches!(
        instance.query("total", "{}"),
        Err(QueryError::InvalidArgs { .. })
    ));
    assert!(matches!(
        instance.query("nope", "{}"),
        Err(QueryError::UnknownQuery { .. })
    ));
    let error = instance
        .handle(&[event(5, "c-1", 3, "Added", 1, r#"{"n":1}"#)])
        .unwrap_err();
    assert!(error.to_string().contains("at position 5"), "{error}");
}

/// The three fixtures configured together in a host, over a store holding an event of the
/// old shape: the chain upcasts it for the aggregate and the projection alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_0_1_0_plugins_serve_a_host_together() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("eshost.toml");
    let text = format!(
        "store = \"data\"\nwatch_plugins = false\n\
         [[aggregates]]\nname = \"compat-counter\"\nplugin = {:?}\n\
         [[upcasters]]\nname = \"compat-added\"\nplugin = {:?}\n\
         [[projections]]\nname = \"compat-totals\"\nplugin = {:?}\n",
        fixture("v0.1.0/aggregate.wasm"),
        fixture("v0.1.0/upcaster.wasm"),
        fixture("v0.1.0/projection.wasm"),
    );
    std::fs::write(&file, text).unwrap();
    let host = Host::start(&Config::load(&file).unwrap()).unwrap();
    host.store()
        .append(AppendRequest::new(
            "c-1",
            ExpectedVersion::NoStream,
            vec![ProposedEvent::new("Added", r#"{"n":30}"#)],
        ))
        .await
        .unwrap();

    let aggregates = host.aggregates();
    let send = |payload: &'static str| {
        aggregates.execute("compat-counter", "c-1", payload, CommandOptions::default())
    };
    let accepted = send(r#"{"type":"Add","amount":50}"#).await.unwrap();
    let Decision::Accepted { events } = accepted.decision else {
        panic!("not accepted: {accepted:?}");
    };
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].stream_version, events[0].schema_version), (2, 2));
    assert_eq!(
        send(r#"{"type":"Add","amount":21}"#)
            .await
            .unwrap()
            .decision,
        Decision::Rejected {
            reason: "limit 100 exceeded: total 80, adding 21".into()
        }
    );
    let state = aggregates
        .state("compat-counter", "c-1", At::Latest)
        .await
        .unwrap();
    assert_eq!(state.state, json!({"id": "c-1", "total": 80, "events": 2}));

    let projections = host.projections().clone();
    let total = tokio::task::spawn_blocking(move || {
        projections
            .wait_caught_up("compat-totals", Duration::from_secs(30))
            .expect("the projection catches up");
        projections.query("compat-totals", "total", r#"{"stream":"c-1"}"#)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(total, r#"{"stream":"c-1","total":80}"#);
    host.shutdown();
}
