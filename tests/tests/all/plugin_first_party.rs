//! The first-party plugins, loaded as components, describe themselves and give the same
//! answers as the same crates compiled natively (through the SDK's test harness) over the same
//! events and commands.

use balances::Balances;
use bank_account::BankAccount;
use deposit_currency::DepositCurrency;
use eshost_runtime::{
    Event, HandleError, MemoryReadModel, PluginKind, ProjectionPlugin, QueryError, UpcastResult,
    UpcasterInstance,
};
use eshost_sdk::testing::{AggregateTest, ProjectionTest};
use eshost_sdk::{QueryError as SdkQueryError, Rejection};
use eshost_tests::{BALANCES, BANK_ACCOUNT, DEPOSIT_CURRENCY, STATEMENT, command, event, runtime};
use serde_json::{Value, json};
use statement::Statement;

/// Three accounts' interleaved history, as `$all` holds it: some deposits still in the old
/// (v1, no currency) shape, one EUR account, a freeze, and an event of a type no bank plugin
/// knows.
fn history() -> Vec<Event> {
    let rows: &[(&str, &str, u32, Value)] = &[
        (
            "account-1",
            "AccountOpened",
            1,
            json!({"owner": "Ann", "initial_deposit": 500}),
        ),
        (
            "account-2",
            "AccountOpened",
            1,
            json!({"owner": "Bob", "currency": "EUR"}),
        ),
        ("account-1", "FundsDeposited", 1, json!({"amount": 250})),
        (
            "account-2",
            "FundsDeposited",
            2,
            json!({"amount": 1000, "currency": "EUR"}),
        ),
        ("account-1", "FundsWithdrawn", 1, json!({"amount": 100})),
        ("account-3", "AccountOpened", 1, json!({"owner": "Cy"})),
        (
            "audit",
            "AuditNoted",
            1,
            json!({"note": "not a bank event"}),
        ),
        (
            "account-3",
            "FundsDeposited",
            1,
            json!({"amount": 70, "memo": "gift"}),
        ),
        (
            "account-1",
            "FundsDeposited",
            2,
            json!({"amount": 5, "currency": "USD"}),
        ),
        ("account-2", "FundsWithdrawn", 1, json!({"amount": 1})),
        (
            "account-2",
            "AccountFrozen",
            1,
            json!({"reason": "fraud check"}),
        ),
        ("account-3", "FundsWithdrawn", 1, json!({"amount": 20})),
    ];
    let mut versions = std::collections::BTreeMap::<&str, u64>::new();
    rows.iter()
        .enumerate()
        .map(|(i, (stream, event_type, schema_version, data))| {
            let version = versions.entry(stream).or_default();
            *version += 1;
            event(
                i as u64 + 1,
                stream,
                *version,
                event_type,
                *schema_version,
                &data.to_string(),
            )
        })
        .collect()
}

/// The history upcast on read through the component, as the host does.
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

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn each_plugin_describes_itself() {
    let (runtime, _cache) = runtime();
    let cases = [
        (BANK_ACCOUNT, PluginKind::Aggregate, "bank-account"),
        (DEPOSIT_CURRENCY, PluginKind::Upcaster, "deposit-currency"),
        (BALANCES, PluginKind::Projection, "balances"),
        (STATEMENT, PluginKind::Projection, "statement"),
    ];
    for (path, kind, name) in cases {
        let plugin = runtime.load(path, kind).expect("load");
        let info = plugin.info();
        assert_eq!(info.name, name);
        assert_eq!(info.kind, kind);
        assert_eq!(info.version, "0.1.0");
        assert_eq!(info.wit_version, "0.1.0");
        assert_eq!(info.content_hash.len(), 64, "a blake3 hex digest");
        assert_eq!(
            info.content_hash,
            blake3::hash(&std::fs::read(path).unwrap())
                .to_hex()
                .as_str(),
            "the identity is the hash of the bytes"
        );
    }

    let bank = runtime.load_aggregate(BANK_ACCOUNT).unwrap();
    let mut handles = bank.info().handles.clone();
    handles.sort();
    assert_eq!(
        handles,
        [
            "AccountClosed",
            "AccountFrozen",
            "AccountOpened",
            "AccountUnfrozen",
            "FundsDeposited",
            "FundsWithdrawn"
        ]
    );
    let upcaster = runtime.load_upcaster(DEPOSIT_CURRENCY).unwrap();
    assert!(upcaster.info().upcasts_event("FundsDeposited", 1));
    assert!(!upcaster.info().upcasts_event("FundsDeposited", 2));
    assert_eq!(upcaster.info().upcasts.len(), 1);
}

#[test]
fn the_upcaster_agrees_with_its_crate() {
    let (runtime, _cache) = runtime();
    let mut upcaster = runtime
        .load_upcaster(DEPOSIT_CURRENCY)
        .unwrap()
        .instantiate()
        .unwrap();
    let mut events = history();
    events.push(event(
        99,
        "account-9",
        1,
        "FundsDeposited",
        1,
        r#"{"amount":"lots"}"#,
    ));
    for e in &events {
        let native = eshost_sdk::testing::upcast::<DepositCurrency>(
            &e.event_type,
            e.schema_version,
            json(&e.data),
        );
        let component = upcaster.upcast(e);
        match (native, component) {
            (Ok(None), Ok(UpcastResult::Unchanged)) => {}
            (Ok(Some(native)), Ok(UpcastResult::Upcasted(wasm))) => {
                assert_eq!(wasm.event_type, native.event_type);
                assert_eq!(wasm.schema_version, native.schema_version);
                assert_eq!(json(&wasm.data), native.data);
            }
            (Err(native), Err(wasm)) => {
                assert!(native.contains("has no amount in cents"), "{native}");
                assert!(
                    wasm.to_string().contains("has no amount in cents"),
                    "{wasm}"
                );
            }
            (native, wasm) => panic!("{e:?}: native {native:?}, component {wasm:?}"),
        }
    }
}

#[test]
fn the_aggregate_agrees_with_its_crate() {
    let (runtime, _cache) = runtime();
    let bank = runtime.load_aggregate(BANK_ACCOUNT).unwrap();
    let mut upcaster = runtime
        .load_upcaster(DEPOSIT_CURRENCY)
        .unwrap()
        .instantiate()
        .unwrap();
    let history = history();

    let commands = [
        json!({"type": "Deposit", "amount": 40}),
        json!({"type": "Deposit", "amount": 40, "currency": "EUR"}),
        json!({"type": "Withdraw", "amount": 100000}),
        json!({"type": "Withdraw", "amount": 1}),
        json!({"type": "Freeze", "reason": "checks"}),
        json!({"type": "Unfreeze"}),
        json!({"type": "Close"}),
        json!({"type": "Deposit", "amount": 9_007_199_254_740_991_i64}),
        json!({"type": "Open", "owner": "Zed"}),
        json!({"type": "Deposit", "amount": -3}),
        json!({"type": "Teleport"}),
        json!({"amount": 5}),
    ];

    for account in ["account-1", "account-2", "account-3", "account-4"] {
        let stream: Vec<Event> = history
            .iter()
            .filter(|e| e.stream_id == account)
            .cloned()
            .collect();
        let stream = upcast_all(&mut upcaster, &stream);
        let stream: Vec<Event> = stream
            .into_iter()
            .filter(|e| bank.info().handles_event(&e.event_type))
            .collect();

        let mut native = AggregateTest::<BankAccount>::with_id(account);
        for e in &stream {
            native = native.given_stored(&e.event_type, e.schema_version, json(&e.data));
        }

        let mut instance = bank.instantiate().unwrap();
        instance.new(account).unwrap();
        // Two batches, to show batching does not matter.
        let (first, rest) = stream.split_at(stream.len() / 2);
        instance.apply(first).unwrap();
        instance.apply(rest).unwrap();
        assert_eq!(
            json(&instance.state().unwrap()),
            native.state_json(),
            "{account}"
        );

        for (i, payload) in commands.iter().enumerate() {
            let issued_at = 1_800_000_000_000 + i as u64;
            let wasm = instance.handle(&command(&payload.to_string(), issued_at));
            let then = AggregateTest::<BankAccount>::with_id(account);
            let then = stream
                .iter()
                .fold(then, |t, e| {
                    t.given_stored(&e.event_type, e.schema_version, json(&e.data))
                })
                .when_json(payload.clone());
            match (then.result(), &wasm) {
                (Ok(native), Ok(wasm)) => {
                    assert_eq!(native.len(), wasm.len(), "{account} {payload}");
                    for (n, w) in native.iter().zip(wasm) {
                        assert_eq!(w.event_type, n.event_type);
                        assert_eq!(w.schema_version, n.schema_version);
                        assert_eq!(json(&w.data), json(&n.data));
                        assert_eq!(w.subject_id, None);
                    }
                }
                (Err(Rejection::Rejected(n)), Err(HandleError::Rejected(w))) => assert_eq!(n, w),
                (Err(Rejection::Invalid(n)), Err(HandleError::Invalid(w))) => assert_eq!(n, w),
                (native, wasm) => {
                    panic!("{account} {payload}: native {native:?}, component {wasm:?}")
                }
            }
        }
        // Deciding commands does not change the state.
        assert_eq!(json(&instance.state().unwrap()), native.state_json());

        // A snapshot restores the same state in a fresh instance.
        let snapshot = instance.snapshot().unwrap();
        let mut restored = bank.instantiate().unwrap();
        restored.restore(account, &snapshot).unwrap();
        assert_eq!(restored.state().unwrap(), instance.state().unwrap());
        assert_eq!(restored.aggregate_id(), Some(account));
    }
}

fn project(
    plugin: &ProjectionPlugin,
    events: &[Event],
) -> eshost_runtime::ProjectionInstance<MemoryReadModel> {
    let mut instance = plugin.instantiate(MemoryReadModel::new()).unwrap();
    let wanted: Vec<Event> = events
        .iter()
        .filter(|e| plugin.info().handles_event(&e.event_type))
        .cloned()
        .collect();
    for batch in wanted.chunks(5) {
        instance.handle(batch).unwrap();
    }
    instance
}

fn native_projection<P: eshost_sdk::Projection>(events: &[Event]) -> ProjectionTest<P> {
    events.iter().fold(
        ProjectionTest::<P>::new().with_upcaster::<DepositCurrency>(),
        |t, e| t.given_stored(&e.stream_id, &e.event_type, e.schema_version, json(&e.data)),
    )
}

fn same_query<P: eshost_sdk::Projection>(
    native: &ProjectionTest<P>,
    wasm: &mut eshost_runtime::ProjectionInstance<MemoryReadModel>,
    name: &str,
    args: Value,
) {
    let n = native.query(name, args.clone());
    let w = wasm.query(name, &args.to_string());
    match (n, w) {
        (Ok(n), Ok(w)) => assert_eq!(json(&w), n, "query {name} {args}"),
        (Err(SdkQueryError::UnknownQuery(n)), Err(QueryError::UnknownQuery { message, .. })) => {
            assert_eq!(n, message)
        }
        (Err(SdkQueryError::InvalidArgs(n)), Err(QueryError::InvalidArgs { message, .. })) => {
            assert_eq!(n, message)
        }
        (Err(SdkQueryError::Failed(n)), Err(QueryError::Failed { message, .. })) => {
            assert_eq!(n, message)
        }
        (n, w) => panic!("query {name} {args}: native {n:?}, component {w:?}"),
    }
}

#[test]
fn the_projections_agree_with_their_crates() {
    let (runtime, _cache) = runtime();
    let mut upcaster = runtime
        .load_upcaster(DEPOSIT_CURRENCY)
        .unwrap()
        .instantiate()
        .unwrap();
    let history = history();
    let upcast = upcast_all(&mut upcaster, &history);

    let balances = runtime.load_projection(BALANCES).unwrap();
    let mut wasm = project(&balances, &upcast);
    let native = native_projection::<Balances>(&history);
    assert_eq!(&wasm.read_model().entries, native.read_model());
    for (name, args) in [
        ("balance", json!({"account": "account-1"})),
        ("balance", json!({"account": "account-2"})),
        ("balance", json!({"account": "nobody"})),
        ("balance", json!({})),
        ("total", json!(null)),
        ("accounts", json!(null)),
        ("accounts", json!({"after": "account-1", "limit": 1})),
        ("richest", json!(null)),
    ] {
        same_query(&native, &mut wasm, name, args);
    }

    let statement = runtime.load_projection(STATEMENT).unwrap();
    let mut wasm = project(&statement, &upcast);
    let native = native_projection::<Statement>(&history);
    assert_eq!(&wasm.read_model().entries, native.read_model());
    for (name, args) in [
        ("statement", json!({"account": "account-1"})),
        (
            "statement",
            json!({"account": "account-3", "after": 1, "limit": 1}),
        ),
        ("statement", json!({"account": "nobody"})),
        ("statement", json!("account-1")),
        ("balances", json!(null)),
    ] {
        same_query(&native, &mut wasm, name, args);
    }
}
