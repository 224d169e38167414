//! A projection that fails on an event: retried, then stopped at it with the error visible
//! (never skipped), or parked in the dead-letter table when so configured; a fixed version
//! swapped in completes the projection; an event a projection does not handle never stops it.
//! The guests are `tests/guests/tally-*` and the bank plugins.

use crate::projection_support::{
    WAIT, append, append_event, host, host_with_upcasters, open_store, quick, summary, tally, ticks,
};
use eshost_core::projection::{ProjectionState, SwapMode, SwapOutcome};
use eshost_tests::{BALANCES, CUSTOMERS, DEPOSIT_CURRENCY, TALLY_V1, TALLY_V2};
use serde_json::{Value, json};

/// 10 ticks, a `Poison` at position 11, 10 more ticks.
fn poisoned_store(dir: &std::path::Path) -> eshost_store::Store {
    let store = open_store(dir);
    append(&store, &ticks(10));
    append(&store, &[("s-p", "Poison")]);
    append(&store, &ticks(10));
    store
}

#[test]
fn a_trapping_event_stops_the_projection_with_the_error_visible() {
    let dir = tempfile::tempdir().unwrap();
    let store = poisoned_store(dir.path());
    let projections = host(&store, dir.path());
    projections.add(tally(TALLY_V1)).unwrap();

    let status = projections
        .wait_for("tally", WAIT, |s| s.state == ProjectionState::Failed)
        .unwrap();
    assert_eq!(status.state, ProjectionState::Failed, "{status:?}");
    assert_eq!(status.position, 10, "stopped right before the poison");
    assert_eq!(status.lag, 11);
    let error = status.active.failed.clone().unwrap();
    assert!(error.contains("position 11"), "{error}");
    assert!(error.contains("poison at position 11"), "{error}");
    assert!(status.last_error.is_some());
    // Queries keep answering from what was committed; nothing after the poison was applied.
    assert_eq!(summary(&projections), ("1".into(), 10, 10));

    // Resuming with the same code fails again at the same event: it is never skipped.
    projections.resume("tally").unwrap();
    let status = projections
        .wait_for("tally", WAIT, |s| {
            s.state == ProjectionState::Failed && s.position == 10
        })
        .unwrap();
    assert_eq!(status.state, ProjectionState::Failed);
    assert_eq!(status.position, 10);
}

#[test]
fn an_operator_skips_only_the_event_a_projection_is_stopped_at() {
    let dir = tempfile::tempdir().unwrap();
    let store = poisoned_store(dir.path());
    let projections = host(&store, dir.path());
    projections.add(tally(TALLY_V1)).unwrap();
    projections
        .wait_for("tally", WAIT, |s| s.state == ProjectionState::Failed)
        .unwrap();

    // Another position is refused, naming where it stopped; nothing moves.
    let refused = projections.skip("tally", 12, "wrong one").unwrap_err();
    assert!(
        refused.to_string().contains("stopped at position 11"),
        "{refused}"
    );
    assert_eq!(summary(&projections), ("1".into(), 10, 10));

    projections.skip("tally", 11, "ticket 42").unwrap();
    let status = projections.wait_caught_up("tally", WAIT).unwrap();
    assert_eq!(status.position, 21, "{status:?}");
    assert_eq!(summary(&projections), ("1".into(), 20, 20));
    let letters = projections.dead_letters("tally").unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].position, letters[0].event_type.as_str()),
        (11, "Poison")
    );
    assert_eq!(letters[0].reason, "skipped by an operator: ticket 42");

    // A running projection has nothing to skip.
    let refused = projections.skip("tally", 11, "again").unwrap_err();
    assert!(refused.to_string().contains("not stopped"), "{refused}");
}

#[test]
fn a_refused_event_in_a_big_batch_commits_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    append(&store, &ticks(25));
    append(&store, &[("s-r", "Refused")]);
    append(&store, &ticks(5));
    let projections = host(&store, dir.path());
    let mut config = tally(TALLY_V1);
    config.batch = 1000;
    projections.add(config).unwrap();
    let status = projections
        .wait_for("tally", WAIT, |s| s.state == ProjectionState::Failed)
        .unwrap();
    assert_eq!(status.position, 25);
    assert!(
        status
            .active
            .failed
            .as_deref()
            .unwrap()
            .contains("refused event"),
        "{status:?}"
    );
    assert_eq!(summary(&projections).1, 25);
}

#[test]
fn with_dead_lettering_the_event_is_parked_and_the_rest_processed() {
    let dir = tempfile::tempdir().unwrap();
    let store = poisoned_store(dir.path());
    let projections = host(&store, dir.path());
    let mut config = tally(TALLY_V1);
    config.dead_letter = true;
    projections.add(config).unwrap();

    let status = projections.wait_caught_up("tally", WAIT).unwrap();
    assert_eq!(status.position, 21, "{status:?}");
    assert_eq!(status.state, ProjectionState::Running);
    assert_eq!(status.dead_letters, 1);
    assert_eq!(summary(&projections), ("1".into(), 20, 20));
    let letters = projections.dead_letters("tally").unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].position, 11);
    assert_eq!(letters[0].event_type, "Poison");
    assert_eq!(letters[0].stream_id, "s-p");
    assert_eq!(letters[0].attempts, 3);
    assert!(
        letters[0].reason.contains("poison at position 11"),
        "{letters:?}"
    );

    // Live events after the parked one keep flowing.
    append(&store, &ticks(4));
    let status = projections.wait_caught_up("tally", WAIT).unwrap();
    assert_eq!(status.position, 25);
    assert_eq!(summary(&projections).1, 24);
}

#[test]
fn a_fixed_version_continues_from_the_failing_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = poisoned_store(dir.path());
    let projections = host(&store, dir.path());
    projections.add(tally(TALLY_V1)).unwrap();
    projections
        .wait_for("tally", WAIT, |s| s.state == ProjectionState::Failed)
        .unwrap();

    let outcome = projections
        .swap("tally", TALLY_V2, SwapMode::Continue)
        .unwrap();
    assert_eq!(outcome, SwapOutcome::Continued);
    let status = projections.wait_caught_up("tally", WAIT).unwrap();
    assert_eq!(status.position, 21, "{status:?}");
    assert_eq!(status.active.version, "2");
    // The ten ticks before came from version 1, the poison and the rest from version 2.
    assert_eq!(summary(&projections), ("2".into(), 21, 21));
}

#[test]
fn a_fixed_version_swapped_in_rebuilds_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let store = poisoned_store(dir.path());
    let projections = host(&store, dir.path());
    projections.add(tally(TALLY_V1)).unwrap();
    projections
        .wait_for("tally", WAIT, |s| s.state == ProjectionState::Failed)
        .unwrap();

    let outcome = projections
        .swap("tally", TALLY_V2, SwapMode::Rebuild)
        .unwrap();
    assert!(
        matches!(outcome, SwapOutcome::Rebuilding { .. }),
        "{outcome:?}"
    );
    let status = projections.wait_caught_up("tally", WAIT).unwrap();
    assert_eq!(status.position, 21, "{status:?}");
    assert_eq!(status.state, ProjectionState::Running);
    assert_eq!(summary(&projections), ("2".into(), 21, 21));
}

/// Issue 14, item 2b: events are upcast only for the projections they may reach. A
/// `FundsDeposited` v1 whose data the upcaster refuses, in a stream of its own, stops
/// `balances` (it handles deposits) at that event with the error visible, and not `customers`
/// (it does not), which goes on past it.
#[test]
fn an_event_a_projection_does_not_handle_cannot_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let opened = r#"{"initial_deposit":100,"currency":"USD"}"#;
    append_event(&store, "account-1", "AccountOpened", 1, opened);
    let registered = |id: &str| format!(r#"{{"customer_id":"{id}","tier":"gold"}}"#);
    append_event(
        &store,
        "customer-1",
        "CustomerRegistered",
        1,
        &registered("customer-1"),
    );
    let junk = r#"{"amount":"lots","junk":[1,2]}"#;
    let junk_at = append_event(&store, "imported-1", "FundsDeposited", 1, junk);
    append_event(
        &store,
        "customer-2",
        "CustomerRegistered",
        1,
        &registered("customer-2"),
    );
    let deposit = r#"{"amount":5,"currency":"USD"}"#;
    let head = append_event(&store, "account-1", "FundsDeposited", 2, deposit);

    let projections = host_with_upcasters(&store, dir.path(), &[DEPOSIT_CURRENCY]);
    projections.add(quick("balances", BALANCES)).unwrap();
    projections.add(quick("customers", CUSTOMERS)).unwrap();

    let customers = projections.wait_caught_up("customers", WAIT).unwrap();
    assert_eq!(customers.state, ProjectionState::Running, "{customers:?}");
    assert_eq!(customers.position, head);
    assert_eq!(customers.last_error, None);
    let row = projections
        .query("customers", "get", r#"{"id":"customer-2"}"#)
        .unwrap();
    let row: Value = serde_json::from_str(&row).unwrap();
    assert_eq!(row["tier"], "gold", "{row}");

    let balances = projections
        .wait_for("balances", WAIT, |s| s.state == ProjectionState::Failed)
        .unwrap();
    assert_eq!(balances.state, ProjectionState::Failed, "{balances:?}");
    assert_eq!(
        balances.position,
        junk_at - 1,
        "stopped right before the junk"
    );
    let error = balances.active.failed.unwrap();
    assert!(
        error.starts_with(&format!(
            "stopped at position {junk_at}: upcasting: plugin \"deposit-currency\""
        )),
        "{error}"
    );
    assert!(error.contains("has no amount in cents"), "{error}");
    let account = projections
        .query("balances", "balance", r#"{"account":"account-1"}"#)
        .unwrap();
    let account: Value = serde_json::from_str(&account).unwrap();
    assert_eq!(account["balance"], json!(100), "{account}");
}
