//! `eshost plugin test`: every first-party plugin, in Rust, Python and JavaScript, passes the
//! fixtures shipped in `examples/bank/fixtures`; a mismatch fails with where it is; fixtures
//! that cannot be right are refused, not passed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use eshost_tests::cli::{Output, eshost_with};
use eshost_tests::{BALANCES, BANK_ACCOUNT, DEPOSIT_CURRENCY, FRAUD_WATCH, TRANSFER_SAGA};

use crate::polyglot_support::component;

fn fixture(name: &str) -> PathBuf {
    eshost_tests::checkout()
        .join("examples/bank/fixtures")
        .join(name)
}

/// `eshost plugin test PLUGIN --fixture FIXTURE EXTRA...`, with the interpreter limits the
/// guides recommend and the polyglot tests' component cache (an interpreter compiles once).
fn plugin_test(plugin: &Path, fixture: &Path, extra: &[&str]) -> Output {
    let cache = std::env::temp_dir().join("eshost-polyglot-tests-cache");
    let mut args = vec![
        "plugin",
        "test",
        plugin.to_str().unwrap(),
        "--fixture",
        fixture.to_str().unwrap(),
        "--time-ms",
        "5000",
        "--memory-mb",
        "256",
    ];
    args.extend(extra);
    eshost_with(
        &args,
        &[("ESHOST_CACHE_DIR", cache.as_os_str())],
        Duration::from_secs(300),
    )
}

fn assert_passes(output: &Output, cases: usize) {
    assert_eq!(
        output.code,
        Some(0),
        "stdout: {}\nstderr: {}",
        output.stdout,
        output.stderr
    );
    assert!(
        output.stdout.contains(&format!("{cases} passed, 0 failed")),
        "{}",
        output.stdout
    );
}

#[test]
fn every_bank_account_plugin_passes_the_shipped_fixture() {
    let aggregates = [
        PathBuf::from(BANK_ACCOUNT),
        component("bank-account-py"),
        component("bank-account-js"),
    ];
    for plugin in &aggregates {
        let output = plugin_test(
            plugin,
            &fixture("bank-account.json"),
            &["--upcaster", DEPOSIT_CURRENCY],
        );
        assert_passes(&output, 6);
    }
}

#[test]
fn every_balances_and_deposit_currency_plugin_passes_the_shipped_fixtures() {
    for plugin in [
        PathBuf::from(BALANCES),
        component("balances-py"),
        component("balances-js"),
    ] {
        assert_passes(&plugin_test(&plugin, &fixture("balances.json"), &[]), 3);
    }
    for upcaster in [
        PathBuf::from(DEPOSIT_CURRENCY),
        component("deposit-currency-py"),
        component("deposit-currency-js"),
    ] {
        let output = plugin_test(&upcaster, &fixture("deposit-currency.json"), &[]);
        assert_passes(&output, 2);
        // And in a chain before an aggregate, as the live host runs it.
        let chained = plugin_test(
            Path::new(BANK_ACCOUNT),
            &fixture("bank-account.json"),
            &["--upcaster", upcaster.to_str().unwrap()],
        );
        assert_passes(&chained, 6);
    }
}

/// A reactor, Rust or Python, runs in the sandbox on the given events (its outcomes given in
/// its own stream), and its intents are checked; a wrong one fails with where it differs.
#[test]
fn the_transfer_saga_passes_its_fixture_and_a_wrong_intent_fails() {
    for saga in [PathBuf::from(TRANSFER_SAGA), component("transfer-saga-py")] {
        assert_passes(&plugin_test(&saga, &fixture("transfer-saga.json"), &[]), 10);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.json");
    std::fs::write(
        &path,
        r#"{"cases": [
            {"name": "debits the wrong account", "id": "t-9",
             "given": [{"type": "TransferRequested", "data": {"from": "a", "to": "b", "amount": 5}}],
             "intents": [{"cause": 1, "send": {"aggregate_type": "bank-account", "aggregate_id": "b",
                          "command": {"type": "Withdraw", "amount": 5},
                          "context": {"transfer": "t-9", "step": "debit", "from": "a", "to": "b", "amount": 5}}}]},
            {"name": "an aggregate's key", "when": {"type": "Open"}},
            {"name": "expects a failure that does not come", "id": "t-8",
             "given": [{"type": "TransferRequested", "data": {"from": "a", "to": "b", "amount": 5}}],
             "error": "no such thing"}
        ]}"#,
    )
    .unwrap();
    let output = plugin_test(Path::new(TRANSFER_SAGA), &path, &[]);
    assert_eq!(output.code, Some(1), "{}", output.stdout);
    let text = &output.stdout;
    assert!(
        text.contains("intents at [0].send.aggregate_id: expected \"b\", got \"a\""),
        "{text}"
    );
    assert!(
        text.contains("`when` does not apply to reactor plugins"),
        "{text}"
    );
    assert!(
        text.contains("expected handling the given events to fail with \"no such thing\""),
        "{text}"
    );
    assert!(text.contains("0 passed, 3 failed"), "{text}");
}

/// A reactor's timers, its read model and its queries, checked in the sandbox.
#[test]
fn the_fraud_watch_passes_its_fixture_with_its_timer_and_read_model() {
    let output = plugin_test(Path::new(FRAUD_WATCH), &fixture("fraud-watch.json"), &[]);
    assert_passes(&output, 3);
}

#[test]
fn a_mismatch_fails_with_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.json");
    std::fs::write(
        &path,
        r#"{"cases": [
            {"name": "right", "when": {"type": "Open", "owner": "Ann"},
             "then": [{"type": "AccountOpened", "data": {"owner": "Ann", "currency": "USD"}}]},
            {"name": "a wrong balance",
             "given": [{"type": "AccountOpened", "data": {"owner": "Ann", "initial_deposit": 40, "currency": "USD"}}],
             "state": {"id": "test-1", "owner": "Ann", "balance": 41, "currency": "USD",
                       "frozen": false, "open": true, "closed": false}},
            {"name": "expects a refusal", "when": {"type": "Open", "owner": "Bob"},
             "rejected": "already open"}
        ]}"#,
    )
    .unwrap();
    let output = plugin_test(Path::new(BANK_ACCOUNT), &path, &[]);
    assert_eq!(output.code, Some(1), "{}", output.stdout);
    let text = &output.stdout;
    assert!(text.contains("  ok    right"), "{text}");
    assert!(text.contains("  FAIL  a wrong balance"), "{text}");
    assert!(
        text.contains("state at balance: expected 41, got 40"),
        "{text}"
    );
    assert!(
        text.contains("expected the command rejected (\"already open\"); it was accepted"),
        "{text}"
    );
    assert!(text.contains("1 passed, 2 failed"), "{text}");
    assert!(
        output.stderr.contains("2 of 3 cases failed"),
        "{}",
        output.stderr
    );
}

#[test]
fn fixtures_that_cannot_be_right_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    // An expectation of another kind of plugin would pass whatever the plugin does.
    let misplaced = write(
        "misplaced.json",
        r#"{"cases": [{"name": "queries an aggregate", "queries": [{"name": "x", "answer": 1}]}]}"#,
    );
    let output = plugin_test(Path::new(BANK_ACCOUNT), &misplaced, &[]);
    assert_eq!(output.code, Some(1));
    assert!(
        output
            .stdout
            .contains("`queries` does not apply to aggregate plugins"),
        "{}",
        output.stdout
    );
    // A misspelt key, and a file with no cases, are errors naming the file.
    let misspelt = write(
        "misspelt.json",
        r#"{"cases": [{"name": "x", "rejcted": "no"}]}"#,
    );
    let output = plugin_test(Path::new(BANK_ACCOUNT), &misspelt, &[]);
    assert_eq!(output.code, Some(1));
    assert!(output.stderr.contains("misspelt.json"), "{}", output.stderr);
    assert!(
        output.stderr.contains("unknown field `rejcted`"),
        "{}",
        output.stderr
    );
    let empty = write("empty.json", r#"{"cases": []}"#);
    let output = plugin_test(Path::new(BANK_ACCOUNT), &empty, &[]);
    assert!(
        output.stderr.contains("empty.json: no cases"),
        "{}",
        output.stderr
    );
}
