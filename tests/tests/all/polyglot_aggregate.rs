//! The `bank-account` aggregate written in Python and in JavaScript accepts and rejects the same
//! commands as the Rust one (same events in the same stored form, same rejection messages; a
//! command the Rust plugin cannot understand is invalid in the others too), from the same
//! histories, and its state survives a snapshot.

use crate::polyglot_support::{Lcg, component, generated_history, json, runtime};
use eshost_runtime::{
    AggregateInstance, AggregatePlugin, Event, HandleError, NewEvent, UpcasterInstance,
};
use eshost_tests::{BANK_ACCOUNT, DEPOSIT_CURRENCY, command, event};
use serde_json::{Value, json};

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

/// A fresh instance of `plugin` for `account`, with `stream` applied.
fn given(plugin: &AggregatePlugin, account: &str, stream: &[Event]) -> AggregateInstance {
    let mut instance = plugin.instantiate().unwrap();
    instance.new(account).unwrap();
    let wanted: Vec<Event> = stream
        .iter()
        .filter(|e| plugin.info().handles_event(&e.event_type))
        .cloned()
        .collect();
    instance.apply(&wanted).unwrap();
    instance
}

/// Both plugins decide `payload` the same way.
fn same_decision(
    language: &str,
    context: &str,
    payload: &str,
    rust: Result<Vec<NewEvent>, HandleError>,
    other: Result<Vec<NewEvent>, HandleError>,
) -> Option<Vec<NewEvent>> {
    let context = format!("{language}: {context}");
    match (rust, other) {
        (Ok(r), Ok(p)) => {
            assert_eq!(p.len(), r.len(), "{context} {payload}");
            for (r, p) in r.iter().zip(&p) {
                assert_eq!(p.event_type, r.event_type, "{context} {payload}");
                assert_eq!(p.schema_version, r.schema_version, "{context} {payload}");
                // The stored form, byte for byte: field order included.
                assert_eq!(p.data, r.data, "{context} {payload}");
                assert_eq!(p.subject_id, r.subject_id);
                assert_eq!(p.personal_data, r.personal_data);
            }
            Some(r)
        }
        (Err(HandleError::Rejected(r)), Err(HandleError::Rejected(p))) => {
            assert_eq!(p, r, "{context} {payload}");
            None
        }
        (Err(HandleError::Invalid(r)), Err(HandleError::Invalid(p))) => {
            // serde adds where in the text it gave up; the gist must be the same.
            let gist = |m: &str| m.split(" at line ").next().unwrap_or(m).to_owned();
            for key in [
                "missing field",
                "unknown variant",
                "invalid type",
                "invalid value",
            ] {
                assert_eq!(
                    gist(&r).contains(key),
                    p.contains(key),
                    "{context} {payload}: Rust {r:?}, {language} {p:?}"
                );
            }
            None
        }
        (r, p) => panic!("{context} {payload}: Rust {r:?}, {language} {p:?}"),
    }
}

/// Commands worth asking any account, valid and not, but for `Close` (which ends a walk).
fn commands() -> Vec<Value> {
    vec![
        json!({"type": "Open", "owner": "Zed"}),
        json!({"type": "Open", "owner": "Zed", "initial_deposit": 100, "currency": "EUR"}),
        json!({"type": "Open", "owner": " ", "initial_deposit": 100}),
        json!({"type": "Open", "owner": "Zed", "initial_deposit": 0}),
        json!({"type": "Open", "owner": "Zed", "initial_deposit": -1}),
        json!({"type": "Open", "owner": "Zed", "initial_deposit": null, "currency": null}),
        json!({"type": "Open", "owner": "Zed", "currency": "euro"}),
        json!({"type": "Open", "owner": "Zed", "currency": "ÉUR"}),
        json!({"type": "Open", "owner": "Zed", "currency": "eur"}),
        json!({"type": "Open", "owner": "Zoë \"Z\"", "initial_deposit": 5, "memo": "x"}),
        json!({"type": "Open"}),
        json!({"type": "Deposit", "amount": 40}),
        json!({"type": "Deposit", "amount": 40, "currency": "EUR"}),
        json!({"type": "Deposit", "amount": 40, "currency": "GBP"}),
        json!({"type": "Deposit", "amount": 0}),
        json!({"type": "Deposit", "amount": -3}),
        json!({"type": "Deposit", "amount": 1.5}),
        json!({"type": "Deposit", "amount": "10"}),
        json!({"type": "Deposit", "amount": 9_223_372_036_854_775_807_i64}),
        json!({"type": "Deposit", "amount": 9_007_199_254_740_991_i64}),
        json!({"type": "Deposit", "amount": 9_007_199_254_740_992_i64}),
        json!({"type": "Deposit"}),
        json!({"type": "Withdraw", "amount": 1}),
        json!({"type": "Withdraw", "amount": 100_000_000}),
        json!({"type": "Withdraw", "amount": 0}),
        json!({"type": "Withdraw"}),
        json!({"type": "Freeze", "reason": "checks"}),
        json!({"type": "Freeze", "reason": "  "}),
        json!({"type": "Freeze", "reason": "\u{1f}"}),
        json!({"type": "Freeze", "reason": "\u{3000}\t"}),
        json!({"type": "Freeze"}),
        json!({"type": "Unfreeze"}),
        json!({"type": "Teleport"}),
        json!({"type": 5}),
        json!({"amount": 5}),
        json!([1, 2]),
        json!("Open"),
    ]
}

#[test]
fn python_bank_account_decides_like_the_rust_one() {
    decides_like_the_rust_one("Python", "bank-account-py");
}

#[test]
fn javascript_bank_account_decides_like_the_rust_one() {
    decides_like_the_rust_one("JavaScript", "bank-account-js");
}

fn decides_like_the_rust_one(language: &str, name: &str) {
    let runtime = runtime();
    let rust = runtime.load_aggregate(BANK_ACCOUNT).unwrap();
    let other = runtime.load_aggregate(component(name)).unwrap();
    assert_eq!(other.info().name, "bank-account", "{language}");
    let mut rust_handles = rust.info().handles.clone();
    let mut other_handles = other.info().handles.clone();
    rust_handles.sort();
    other_handles.sort();
    assert_eq!(other_handles, rust_handles);

    let mut upcaster = runtime
        .load_upcaster(DEPOSIT_CURRENCY)
        .unwrap()
        .instantiate()
        .unwrap();
    let history = upcast_all(&mut upcaster, &generated_history(7, 600, 24));
    let mut streams: Vec<&str> = history.iter().map(|e| e.stream_id.as_str()).collect();
    streams.sort();
    streams.dedup();
    streams.push("never-opened");

    let mut accepted = 0;
    let mut refused = 0;
    for account in streams {
        let stream: Vec<Event> = history
            .iter()
            .filter(|e| e.stream_id == account)
            .cloned()
            .collect();
        let mut r = given(&rust, account, &stream);
        let mut p = given(&other, account, &stream);
        assert_eq!(
            json(&p.state().unwrap()),
            json(&r.state().unwrap()),
            "{language} {account}: state after the history"
        );
        let close = json!({"type": "Close"});
        for (i, payload) in commands().iter().chain([&close]).enumerate() {
            let cmd = command(&payload.to_string(), 1_800_000_000_000 + i as u64);
            match same_decision(
                language,
                account,
                &payload.to_string(),
                r.handle(&cmd),
                p.handle(&cmd),
            ) {
                Some(_) => accepted += 1,
                None => refused += 1,
            }
        }
        // Deciding does not change the state; a snapshot restores it.
        assert_eq!(json(&p.state().unwrap()), json(&r.state().unwrap()));
        let snapshot = p.snapshot().unwrap();
        let mut restored = other.instantiate().unwrap();
        restored.restore(account, &snapshot).unwrap();
        assert_eq!(restored.state().unwrap(), p.state().unwrap());
    }
    assert!(
        accepted > 20 && refused > 100,
        "{accepted} accepted, {refused} refused"
    );
}

/// A random walk of commands, each accepted event applied to both: the two stay in step.
#[test]
fn python_and_rust_stay_in_step_over_a_command_sequence() {
    stay_in_step("Python", "bank-account-py");
}

#[test]
fn javascript_and_rust_stay_in_step_over_a_command_sequence() {
    stay_in_step("JavaScript", "bank-account-js");
}

fn stay_in_step(language: &str, name: &str) {
    let runtime = runtime();
    let rust = runtime.load_aggregate(BANK_ACCOUNT).unwrap();
    let other = runtime.load_aggregate(component(name)).unwrap();
    let mut rng = Lcg::new(42);
    let commands = commands();
    for account in ["account-a", "account-b", "account-c"] {
        let mut r = given(&rust, account, &[]);
        let mut p = given(&other, account, &[]);
        let mut version = 0;
        // A walk, then the account is closed (twice: the second is refused) and refuses.
        let closing = [
            json!({"type": "Unfreeze"}),
            json!({"type": "Close"}),
            json!({"type": "Close"}),
            json!({"type": "Deposit", "amount": 5}),
        ];
        for i in 0..300 + closing.len() as u64 {
            let payload = match i.checked_sub(300) {
                None => rng.pick(&commands).to_string(),
                Some(step) => closing[step as usize].to_string(),
            };
            let cmd = command(&payload, 1_800_000_000_000 + i);
            if let Some(events) =
                same_decision(language, account, &payload, r.handle(&cmd), p.handle(&cmd))
            {
                let stored: Vec<Event> = events
                    .iter()
                    .map(|e| {
                        version += 1;
                        event(
                            1000 + version,
                            account,
                            version,
                            &e.event_type,
                            e.schema_version,
                            &e.data,
                        )
                    })
                    .collect();
                r.apply(&stored).unwrap();
                p.apply(&stored).unwrap();
            }
            assert_eq!(
                json(&p.state().unwrap()),
                json(&r.state().unwrap()),
                "{language} {account} after {payload}"
            );
        }
        assert!(
            version > 10,
            "{account}: only {version} events were accepted"
        );
        assert_eq!(json(&r.state().unwrap())["closed"], true, "{account}");
    }
}
