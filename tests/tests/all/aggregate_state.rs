//! Building state: snapshots change nothing but speed, bad snapshots fall back to replay, old
//! events are upcast on read, state as of a version or a time, audit history, hot swap.

use std::time::Duration;

use crate::aggregate_support::{BANK, balance, host, pipeline, send};
use eshost_core::aggregate::{AggregateConfig, At, CommandOptions, HistoryPage, Snapshot};
use eshost_store::{AppendRequest, EventStore, ExpectedVersion, ProposedEvent, Until};
use serde_json::{Value, json};

/// A fixed mix of commands, some refused.
fn script() -> Vec<String> {
    let mut commands = vec![r#"{"type":"Open","owner":"Ann","initial_deposit":100}"#.to_owned()];
    for step in 0..40u64 {
        commands.push(match step % 9 {
            4 => format!(r#"{{"type":"Withdraw","amount":{}}}"#, 30 + step * 5),
            6 => r#"{"type":"Freeze","reason":"check"}"#.to_owned(),
            7 => r#"{"type":"Unfreeze"}"#.to_owned(),
            _ => format!(r#"{{"type":"Deposit","amount":{}}}"#, 1 + step * 3),
        });
    }
    commands
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_with_snapshots_equals_state_without() {
    let mut finals: Vec<Value> = Vec::new();
    for every in [0, 1, 2, 3, 7, 16, 1000] {
        let host = host(AggregateConfig::every(every));
        for command in script() {
            send(&host.aggregates, "account-1", &command).await;
        }
        // Snapshots are written in the background; wait for the one due last.
        let version = host
            .store
            .stream_info("account-1")
            .unwrap()
            .unwrap()
            .version;
        if every > 0 && every <= version {
            for _ in 0..200 {
                let stored = host.aggregates.snapshots().get(BANK, "account-1").unwrap();
                if stored.is_some_and(|s| s.version > version - every) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let stored = host.aggregates.snapshots().get(BANK, "account-1").unwrap();
            let stored = stored.expect("a snapshot was taken");
            assert_eq!(stored.plugin_hash, host.bank.info().content_hash);
            assert!(stored.version <= version);
        }
        let with = host
            .aggregates
            .state(BANK, "account-1", At::Latest)
            .await
            .unwrap();
        let without = host
            .aggregates
            .state_blocking(BANK, "account-1", At::Latest, false)
            .unwrap();
        assert_eq!(with.state, without.state, "snapshot every {every}");
        assert_eq!(with.version, version);
        if every > 0 && every <= version {
            assert!(
                with.from_snapshot.is_some(),
                "snapshot every {every} was used"
            );
        }
        // Every state in between, too.
        for at in [1, 5, version / 2, version - 1] {
            let with = host
                .aggregates
                .state(BANK, "account-1", At::Version(at))
                .await
                .unwrap();
            let without = host
                .aggregates
                .state_blocking(BANK, "account-1", At::Version(at), false)
                .unwrap();
            assert_eq!(with.state, without.state, "every {every}, version {at}");
            assert_eq!(with.version, at);
        }
        // Nor did the decisions depend on the interval.
        finals.push(with.state);
        assert_eq!(finals.first(), finals.last());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_foreign_snapshots_fall_back_to_replay() {
    let host = host(AggregateConfig::every(0));
    for command in script() {
        send(&host.aggregates, "account-1", &command).await;
    }
    let truth = host
        .aggregates
        .state_blocking(BANK, "account-1", At::Latest, false)
        .unwrap();
    let on_demand = host
        .aggregates
        .snapshot(BANK, "account-1")
        .await
        .unwrap()
        .expect("the account has events");
    assert_eq!(on_demand.version, truth.version);
    let used = host
        .aggregates
        .state(BANK, "account-1", At::Latest)
        .await
        .unwrap();
    assert_eq!(used.from_snapshot, Some(truth.version));
    assert_eq!(used.state, truth.state);

    let snapshots = host.aggregates.snapshots();
    let plant = |snapshot: Snapshot| snapshots.put(BANK, "account-1", &snapshot).unwrap();
    let hash = host.bank.info().content_hash.clone();
    type Plant<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Plant)> = vec![
        (
            "state bytes the plugin refuses",
            Box::new(|| {
                plant(Snapshot {
                    plugin_hash: hash.clone(),
                    state: b"\x00not json".to_vec(),
                    ..on_demand.clone()
                })
            }),
        ),
        (
            "a snapshot of other plugin code",
            Box::new(|| {
                plant(Snapshot {
                    plugin_hash: "0".repeat(64),
                    // Would be a lie: a balance the events never made.
                    state: br#"{"id":"account-1","owner":"Eve","balance":999999,"currency":"USD","frozen":false,"open":true}"#.to_vec(),
                    ..on_demand.clone()
                })
            }),
        ),
        (
            "an undecodable row",
            Box::new(|| snapshots.put_bytes(BANK, "account-1", b"garbage").unwrap()),
        ),
    ];
    for (case, plant) in cases {
        plant();
        let state = host
            .aggregates
            .state(BANK, "account-1", At::Latest)
            .await
            .unwrap();
        assert_eq!(state.state, truth.state, "{case}");
        assert_eq!(state.from_snapshot, None, "{case}");
        // A fresh pipeline (empty cache) decides on the replayed state too.
        let fresh = pipeline(
            &host.store,
            &host.views,
            &host.runtime,
            &host.bank,
            AggregateConfig::every(0),
            true,
        );
        let before = truth.state["balance"].as_u64().unwrap();
        let reply = send(&fresh, "account-1", r#"{"type":"Withdraw","amount":1}"#).await;
        assert!(reply.accepted(), "{case}: {reply:?}");
        assert_eq!(balance(&fresh, "account-1").await, before - 1, "{case}");
        send(&fresh, "account-1", r#"{"type":"Deposit","amount":1}"#).await;
    }
}

fn stored(event_type: &str, schema_version: u32, data: Value) -> ProposedEvent {
    ProposedEvent::new(event_type, data.to_string()).with_schema_version(schema_version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_deposits_reach_the_aggregate_as_version_2() {
    let host = host(AggregateConfig::every(0));
    // History written before deposits had a currency.
    host.store
        .append(AppendRequest::new(
            "account-old",
            ExpectedVersion::NoStream,
            vec![
                stored(
                    "AccountOpened",
                    1,
                    json!({"owner": "Old", "initial_deposit": 5}),
                ),
                stored("FundsDeposited", 1, json!({"amount": 40})),
                stored("FundsDeposited", 1, json!({"amount": 2})),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(balance(&host.aggregates, "account-old").await, 47);
    let reply = send(
        &host.aggregates,
        "account-old",
        r#"{"type":"Deposit","amount":3,"currency":"USD"}"#,
    )
    .await;
    assert!(reply.accepted());
    assert_eq!(reply.events()[0].schema_version, 2);
    assert_eq!(balance(&host.aggregates, "account-old").await, 50);
    // The log still holds version 1: upcasting happens on read only.
    let log = host
        .store
        .read_stream("account-old", &eshost_store::StreamRead::forward())
        .unwrap();
    assert_eq!(log[1].schema_version, 1);
    assert_eq!(log[1].data, r#"{"amount":40}"#);

    // Without the upcaster, the aggregate cannot read that history.
    let bare = pipeline(
        &host.store,
        &host.views,
        &host.runtime,
        &host.bank,
        AggregateConfig::default(),
        false,
    );
    let error = bare
        .state(BANK, "account-old", At::Latest)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("upcaster"), "{error}");
    let error = bare
        .execute(
            BANK,
            "account-old",
            r#"{"type":"Deposit","amount":1}"#,
            CommandOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("account-old"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_state_and_history_match_a_hand_computed_account() {
    let host = host(AggregateConfig::every(2));
    let commands = [
        r#"{"type":"Open","owner":"Ann","initial_deposit":500}"#,
        r#"{"type":"Deposit","amount":200}"#,
        r#"{"type":"Deposit","amount":300}"#,
        r#"{"type":"Withdraw","amount":500}"#,
    ];
    let mut recorded = Vec::new();
    for command in commands {
        let reply = send(&host.aggregates, "account-1", command).await;
        recorded.push(reply.events()[0].recorded_at);
        // Distinct commit times, so "as of a time" has something to tell apart.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(balance(&host.aggregates, "account-1").await, 500);

    let balance_at = |at: At| {
        let aggregates = host.aggregates.clone();
        async move {
            let state = aggregates.state(BANK, "account-1", at).await.unwrap();
            (state.version, state.state["balance"].as_u64().unwrap())
        }
    };
    assert_eq!(balance_at(At::Version(1)).await, (1, 500));
    assert_eq!(balance_at(At::Version(2)).await, (2, 700));
    assert_eq!(balance_at(At::Version(3)).await, (3, 1000));
    assert_eq!(balance_at(At::Version(4)).await, (4, 500));
    // A date between the second deposit and the withdrawal.
    let between = recorded[2] + 1;
    assert!(between < recorded[3]);
    assert_eq!(balance_at(At::Time(between)).await, (3, 1000));
    assert_eq!(balance_at(At::Time(recorded[1])).await, (2, 700));
    let before = host
        .aggregates
        .state(BANK, "account-1", At::Time(recorded[0] - 1))
        .await
        .unwrap();
    assert_eq!(before.version, 0);
    assert_eq!(before.state["open"], false);

    let history = host
        .aggregates
        .history(BANK, "account-1", None, HistoryPage::all())
        .await
        .unwrap();
    let steps: Vec<(&str, u64)> = history
        .iter()
        .map(|entry| {
            (
                entry.event.event_type.as_str(),
                entry.state["balance"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("AccountOpened", 500),
            ("FundsDeposited", 700),
            ("FundsDeposited", 1000),
            ("FundsWithdrawn", 500),
        ]
    );
    assert_eq!(history[3].event.stream_version, 4);
    let until = host
        .aggregates
        .history(
            BANK,
            "account-1",
            Some(Until::Time(between)),
            HistoryPage::all(),
        )
        .await
        .unwrap();
    assert_eq!(until.len(), 3);
}

/// The same component with a custom section appended: other bytes, so another content hash,
/// the same behaviour. Stands in for a new build of the plugin.
fn rebuilt(bytes: &[u8], tag: &str) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.push(tag.len() as u8);
    payload.extend_from_slice(tag.as_bytes());
    payload.extend_from_slice(b"a new build");
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_plugin_decides_every_later_command_and_ignores_old_snapshots() {
    let host = host(AggregateConfig::every(3));
    for command in script().iter().take(12) {
        send(&host.aggregates, "account-1", command).await;
    }
    let old_hash = host.bank.info().content_hash.clone();
    let snapshot = host.aggregates.snapshot(BANK, "account-1").await.unwrap();
    assert_eq!(snapshot.unwrap().plugin_hash, old_hash);

    let bytes = std::fs::read(eshost_tests::BANK_ACCOUNT).unwrap();
    let new = host
        .runtime
        .load_bytes(
            &rebuilt(&bytes, "eshost-test"),
            "bank-v2",
            eshost_runtime::PluginKind::Aggregate,
        )
        .unwrap();
    let eshost_runtime::LoadedPlugin::Aggregate(new) = new else {
        panic!("an aggregate");
    };
    let new_hash = new.info().content_hash.clone();
    assert_ne!(new_hash, old_hash);

    // Commands keep flowing while the swap happens; none fails.
    let mut senders = Vec::new();
    for task in 0..8 {
        let aggregates = host.aggregates.clone();
        senders.push(tokio::spawn(async move {
            let mut hashes = Vec::new();
            for _ in 0..10 {
                let account = format!("account-{}", 1 + task % 2);
                let command = if account == "account-1" {
                    r#"{"type":"Deposit","amount":1}"#
                } else {
                    r#"{"type":"Open","owner":"Bo"}"#
                };
                let reply = aggregates
                    .execute(BANK, &account, command, CommandOptions::default())
                    .await
                    .expect("no command fails because of a swap");
                if let Some(event) = reply.events().first() {
                    let metadata: Value = serde_json::from_str(&event.metadata).unwrap();
                    hashes.push(metadata["plugin_hash"].as_str().unwrap().to_owned());
                }
            }
            hashes
        }));
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    let old = host.aggregates.swap(new, None).unwrap();
    assert_eq!(old.content_hash, old_hash);
    for sender in senders {
        let hashes = sender.await.unwrap();
        // Once a command of a task ran on the new code, the later ones did too.
        let switched = hashes.iter().position(|h| *h == new_hash);
        if let Some(switched) = switched {
            assert!(
                hashes[switched..].iter().all(|h| *h == new_hash),
                "{hashes:?}"
            );
        }
    }
    let after = send(
        &host.aggregates,
        "account-1",
        r#"{"type":"Deposit","amount":1}"#,
    )
    .await;
    let metadata: Value = serde_json::from_str(&after.events()[0].metadata).unwrap();
    assert_eq!(metadata["plugin_hash"], new_hash.as_str());
    assert_eq!(host.aggregates.types()[0].content_hash, new_hash);

    // The old code's snapshot is not used by the new code; state is replayed and equal.
    let truth = host
        .aggregates
        .state_blocking(BANK, "account-1", At::Latest, false)
        .unwrap();
    let snapshots = host.aggregates.snapshots();
    snapshots
        .put(
            BANK,
            "account-1",
            &Snapshot {
                plugin_hash: old_hash.clone(),
                version: truth.version,
                position: truth.position,
                recorded_at: truth.recorded_at,
                state: br#"{"id":"account-1","owner":"Eve","balance":1,"currency":"USD","frozen":false,"open":true}"#.to_vec(),
            },
        )
        .unwrap();
    let state = host
        .aggregates
        .state(BANK, "account-1", At::Latest)
        .await
        .unwrap();
    assert_eq!(state.state, truth.state);
    if state.from_snapshot.is_some() {
        // A snapshot the new code wrote in the background replaced the planted one.
        let used = snapshots.get(BANK, "account-1").unwrap().unwrap();
        assert_eq!(used.plugin_hash, new_hash);
    }
}

#[test]
fn two_upcasters_for_one_event_version_are_refused() {
    let runtime = crate::aggregate_support::runtime();
    let load = || {
        runtime
            .load_upcaster(eshost_tests::DEPOSIT_CURRENCY)
            .unwrap()
    };
    let error = eshost_core::upcast::UpcasterChain::new([load(), load()]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "upcasters \"deposit-currency\" and \"deposit-currency\" both upcast FundsDeposited v1"
    );
    let chain = eshost_core::upcast::UpcasterChain::new([load()]).unwrap();
    assert!(chain.upcasts("FundsDeposited", 1));
    assert!(!chain.upcasts("FundsDeposited", 2));
    let mut upcasting = chain.instantiate();
    let mut event = eshost_tests::event(1, "a-1", 1, "FundsDeposited", 1, r#"{"amount":3}"#);
    assert!(upcasting.upcast(&mut event).unwrap());
    assert_eq!(event.schema_version, 2);
    assert_eq!(
        serde_json::from_str::<Value>(&event.data).unwrap(),
        json!({"amount": 3, "currency": "USD"})
    );
    assert!(!upcasting.upcast(&mut event).unwrap());
}

/// Issue 14, item 3: an aggregate is given only the event types it handles. A foreign event
/// appended to its stream by hand (an audit note) counts in the stream version but is never
/// applied: commands (on a cached state and on a rebuilt one), state as of any version,
/// snapshots and history keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_event_in_the_stream_leaves_commands_and_state_working() {
    let config = AggregateConfig::every(2);
    let host = host(config.clone());
    send(
        &host.aggregates,
        "account-1",
        r#"{"type":"Open","owner":"Ann","initial_deposit":100}"#,
    )
    .await;
    send(
        &host.aggregates,
        "account-1",
        r#"{"type":"Deposit","amount":50}"#,
    )
    .await;
    host.store
        .append(AppendRequest::new(
            "account-1",
            ExpectedVersion::Exact(2),
            vec![ProposedEvent::new(
                "AuditNote",
                r#"{"text":"checked by Bo"}"#,
            )],
        ))
        .await
        .unwrap();

    // The cached state is behind the note: the command conflicts, reloads past it, succeeds.
    let reply = send(
        &host.aggregates,
        "account-1",
        r#"{"type":"Deposit","amount":25}"#,
    )
    .await;
    assert!(reply.accepted(), "{reply:?}");
    assert_eq!(reply.stream_version, 4);
    // A restarted pipeline rebuilds from scratch (or its snapshot) past the note.
    let restarted = pipeline(
        &host.store,
        &host.views,
        &host.runtime,
        &host.bank,
        config,
        true,
    );
    let reply = send(&restarted, "account-1", r#"{"type":"Withdraw","amount":5}"#).await;
    assert!(reply.accepted(), "{reply:?}");
    assert_eq!(reply.stream_version, 5);
    assert_eq!(balance(&restarted, "account-1").await, 170);
    assert_eq!(balance(&host.aggregates, "account-1").await, 170);

    let at_note = host
        .aggregates
        .state(BANK, "account-1", At::Version(3))
        .await
        .unwrap();
    assert_eq!(
        (at_note.version, &at_note.state["balance"]),
        (3, &json!(150))
    );
    let snapshot = host
        .aggregates
        .snapshot(BANK, "account-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot.version, 5);
    let from_scratch = host
        .aggregates
        .state_blocking(BANK, "account-1", At::Latest, false)
        .unwrap();
    assert_eq!(from_scratch.state["balance"], 170);

    // History lists every event of the stream; the note leaves the state as it was.
    let history = host
        .aggregates
        .history(BANK, "account-1", None, HistoryPage::all())
        .await
        .unwrap();
    let steps: Vec<(&str, u64)> = history
        .iter()
        .map(|entry| {
            (
                entry.event.event_type.as_str(),
                entry.state["balance"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("AccountOpened", 100),
            ("FundsDeposited", 150),
            ("AuditNote", 150),
            ("FundsDeposited", 175),
            ("FundsWithdrawn", 170),
        ]
    );
    assert_eq!(history[2].state, history[1].state);
}
