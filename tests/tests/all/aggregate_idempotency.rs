//! Issue 12: a keyed command's resend is answered from the log. Its first reply is recorded in
//! `views.redb` after its events are committed; when that record is missing (the host died in
//! between, or `views.redb` was deleted while the host was stopped), the resend must get the
//! first reply rebuilt from its events, not be decided again on a state that already holds its
//! effect ("already open", "insufficient funds"). For an Open, a Withdraw of the whole balance
//! and a Close (two events). The end-to-end tests need `target/release/eshost` (built by
//! `cargo test --release --workspace`).

use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::aggregate_support::{BANK, host, pipeline, send};
use eshost_core::aggregate::{AggregateConfig, CommandOptions};
use eshost_store::EventStore;
use serde_json::{Value, json};

/// The keyed commands whose effect makes deciding them again go wrong, each on an account of
/// its own: (account, command, the event types it stores).
fn effects() -> [(&'static str, Value, &'static [&'static str]); 3] {
    [
        (
            "account-open",
            json!({"type": "Open", "owner": "Ann", "initial_deposit": 100}),
            &["AccountOpened"],
        ),
        (
            "account-drain",
            json!({"type": "Withdraw", "amount": 500}),
            &["FundsWithdrawn"],
        ),
        (
            "account-close",
            json!({"type": "Close"}),
            &["FundsWithdrawn", "AccountClosed"],
        ),
    ]
}

/// Opens the accounts the other commands need: 500 to withdraw, 500 to pay out on closing.
fn setup_commands() -> [(&'static str, Value); 3] {
    [
        (
            "account-drain",
            json!({"type": "Open", "owner": "Bob", "initial_deposit": 500}),
        ),
        (
            "account-close",
            json!({"type": "Open", "owner": "Cy", "initial_deposit": 300}),
        ),
        ("account-close", json!({"type": "Deposit", "amount": 200})),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_command_whose_record_is_lost_answers_from_the_log() {
    let host = host(AggregateConfig::default());
    for (account, command) in setup_commands() {
        assert!(
            send(&host.aggregates, account, &command.to_string())
                .await
                .accepted()
        );
    }
    let keyed = CommandOptions {
        idempotency_key: Some("once".into()),
        ..CommandOptions::default()
    };
    let mut firsts = Vec::new();
    for (account, command, types) in effects() {
        let first = host
            .aggregates
            .execute(BANK, account, &command.to_string(), keyed.clone())
            .await
            .unwrap();
        let stored: Vec<&str> = first
            .events()
            .iter()
            .map(|e| e.event_type.as_str())
            .collect();
        assert_eq!(stored, types, "{account}");
        firsts.push(first);
    }

    // A pipeline over views without the records: as after deleting views.redb.
    let fresh_views_dir = tempfile::tempdir().unwrap();
    let fresh_views = eshost_core::views::Views::open(fresh_views_dir.path()).unwrap();
    let forgetful = pipeline(
        &host.store,
        &fresh_views,
        &host.runtime,
        &host.bank,
        AggregateConfig::default(),
        true,
    );
    for ((account, command, _), first) in effects().into_iter().zip(&firsts) {
        let version = host.store.stream_info(account).unwrap().unwrap().version;
        for _ in 0..2 {
            let again = forgetful
                .execute(BANK, account, &command.to_string(), keyed.clone())
                .await
                .unwrap();
            assert!(again.replayed, "{account}: {again:?}");
            assert_eq!(again.decision, first.decision, "{account}");
            assert_eq!(again.command_id, first.command_id, "{account}");
            assert_eq!(again.stream_version, first.stream_version, "{account}");
        }
        let info = host.store.stream_info(account).unwrap().unwrap();
        assert_eq!(info.version, version, "{account}: nothing written twice");
    }
}

/// A running `eshost run` with the bank config; killed if a test fails before stopping it.
struct Running {
    child: Child,
    base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, env: &[(&str, &str)]) -> Running {
    let (child, base) = eshost_tests::start_bank_host_with_env(dir, env);
    Running { child, base }
}

/// Waits (bounded) for the host to exit by itself.
fn exited(running: &mut Running) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "eshost did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the host with SIGTERM, as an operator does; it must exit cleanly.
fn stop(mut running: Running) {
    let kill = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = exited(&mut running);
    assert!(status.success(), "{status:?}");
}

/// Sends `command` to `account`, with idempotency `key` if given: (status, body).
async fn command(
    running: &Running,
    account: &str,
    command: &Value,
    key: Option<&str>,
) -> reqwest::Result<(u16, Value)> {
    let mut request = reqwest::Client::new()
        .post(format!(
            "{}/aggregates/bank-account/{account}",
            running.base
        ))
        .json(command);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

/// The events of `account` as stored.
async fn stored(running: &Running, account: &str) -> Vec<Value> {
    let body: Value = reqwest::get(format!("{}/streams/{account}", running.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["events"].as_array().expect("events").clone()
}

/// The reply's events are the last `count` stored events of the account, field for field.
fn matches_the_log(reply: &Value, log: &[Value], count: usize) {
    let events = reply["events"].as_array().expect("an accepted reply");
    assert_eq!(events.len(), count, "{reply}");
    let tail = &log[log.len() - count..];
    for (event, stored) in events.iter().zip(tail) {
        for field in [
            "event_id",
            "position",
            "stream_version",
            "event_type",
            "schema_version",
            "recorded_at",
            "data",
        ] {
            assert_eq!(event[field], stored[field], "{field}: {reply}");
        }
    }
    assert_eq!(reply["stream_version"], tail[count - 1]["stream_version"]);
}

async fn set_up(dir: &Path) {
    let host = start(dir, &[]);
    for (account, body) in setup_commands() {
        let (status, answer) = command(&host, account, &body, None).await.unwrap();
        assert_eq!(status, 200, "{account} {body}: {answer}");
    }
    stop(host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_command_killed_before_its_record_answers_from_the_log_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let drive = async {
        set_up(dir.path()).await;
        for (account, body, types) in effects() {
            // The host dies right after the events are durable, before the record.
            let mut faulty = start(dir.path(), &[("ESHOST_TEST_FAULT", "abort-after-append")]);
            let lost = command(&faulty, account, &body, Some("once")).await;
            assert!(lost.is_err(), "{account}: the host answered {lost:?}");
            let status = exited(&mut faulty);
            assert!(!status.success(), "{account}: {status:?}");
            drop(faulty);

            let host = start(dir.path(), &[]);
            let log = stored(&host, account).await;
            let kinds: Vec<&str> = log[log.len() - types.len()..]
                .iter()
                .map(|e| e["event_type"].as_str().unwrap())
                .collect();
            assert_eq!(kinds, types, "{account}: the events were stored");
            let (status, again) = command(&host, account, &body, Some("once")).await.unwrap();
            assert_eq!(status, 200, "{account}: {again}");
            assert_eq!(again["replayed"], true, "{again}");
            matches_the_log(&again, &log, types.len());
            // Now recorded: the same answer again, and nothing was written twice.
            let (status, third) = command(&host, account, &body, Some("once")).await.unwrap();
            assert_eq!((status, &third), (200, &again));
            assert_eq!(stored(&host, account).await, log, "{account}");
            stop(host);
        }
    };
    tokio::time::timeout(Duration::from_secs(120), drive)
        .await
        .expect("the crash and restarts within 120 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_command_answers_its_first_reply_after_views_redb_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let drive = async {
        set_up(dir.path()).await;
        let host = start(dir.path(), &[]);
        let mut firsts = Vec::new();
        for (account, body, types) in effects() {
            let (status, first) = command(&host, account, &body, Some("once")).await.unwrap();
            assert_eq!(status, 200, "{account}: {first}");
            assert_eq!(first["replayed"], false);
            matches_the_log(&first, &stored(&host, account).await, types.len());
            firsts.push(first);
        }
        stop(host);

        // The README: views.redb is derived; delete it while the host is stopped.
        let views = dir.path().join("data/views.redb");
        assert!(views.is_file(), "{}", views.display());
        std::fs::remove_file(&views).unwrap();

        let host = start(dir.path(), &[]);
        for ((account, body, _), first) in effects().into_iter().zip(firsts) {
            let log = stored(&host, account).await;
            let (status, again) = command(&host, account, &body, Some("once")).await.unwrap();
            assert_eq!(status, 200, "{account}: {again}");
            let mut expected = first;
            expected["replayed"] = json!(true);
            assert_eq!(again, expected, "{account}: the first reply");
            assert_eq!(
                stored(&host, account).await,
                log,
                "{account}: nothing written twice"
            );
        }
        stop(host);
    };
    tokio::time::timeout(Duration::from_secs(120), drive)
        .await
        .expect("the restarts within 120 s");
}

/// A keyed refusal is recorded in the log (`$replies`): a pipeline with views of its own (another
/// node, or views.redb deleted) answers a resend with the first refusal, even once the state
/// would now allow the command; and a pipeline that decides the key again on such a state gets
/// the first reply from the store instead of accepting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_refusal_answers_its_first_reply_from_the_log_on_another_node() {
    let host = host(AggregateConfig::default());
    let open = json!({"type": "Open", "owner": "Di", "initial_deposit": 500}).to_string();
    assert!(send(&host.aggregates, "account-r", &open).await.accepted());
    let keyed = CommandOptions {
        idempotency_key: Some("too-much".into()),
        ..CommandOptions::default()
    };
    let withdraw = json!({"type": "Withdraw", "amount": 1000}).to_string();
    let first = host
        .aggregates
        .execute(BANK, "account-r", &withdraw, keyed.clone())
        .await
        .unwrap();
    assert!(
        matches!(
            first.decision,
            eshost_core::aggregate::Decision::Rejected { .. }
        ),
        "{first:?}"
    );
    let recorded = host
        .store
        .read_stream(
            eshost_core::aggregate::REPLIES_STREAM,
            &eshost_store::StreamRead::forward(),
        )
        .unwrap();
    assert_eq!(recorded.len(), 1, "the refusal is in the log");
    // Now the state allows the withdrawal.
    let deposit = json!({"type": "Deposit", "amount": 1000}).to_string();
    assert!(
        send(&host.aggregates, "account-r", &deposit)
            .await
            .accepted()
    );
    let version = host
        .store
        .stream_info("account-r")
        .unwrap()
        .unwrap()
        .version;

    let other_views_dir = tempfile::tempdir().unwrap();
    let other_views = eshost_core::views::Views::open(other_views_dir.path()).unwrap();
    let other_node = pipeline(
        &host.store,
        &other_views,
        &host.runtime,
        &host.bank,
        AggregateConfig::default(),
        true,
    );
    for _ in 0..2 {
        let again = other_node
            .execute(BANK, "account-r", &withdraw, keyed.clone())
            .await
            .unwrap();
        assert!(again.replayed, "{again:?}");
        assert_eq!(again.decision, first.decision);
        assert_eq!(again.command_id, first.command_id);
        assert_eq!(again.stream_version, first.stream_version);
    }
    assert_eq!(
        host.store
            .stream_info("account-r")
            .unwrap()
            .unwrap()
            .version,
        version,
        "the refused withdrawal was not decided again"
    );
    // Had the lookup missed the record (a race between nodes), the acceptance's append would
    // find its first event id taken by the recorded refusal and answer with it instead.
    let taken = eshost_core::aggregate::REPLIES_STREAM;
    assert_eq!(recorded[0].stream_id, taken);
    let appended = host
        .store
        .append(eshost_store::AppendRequest::new(
            "account-r",
            eshost_store::ExpectedVersion::Any,
            vec![
                eshost_store::ProposedEvent::new("FundsWithdrawn", r#"{"amount":1000}"#)
                    .with_id(recorded[0].event_id),
            ],
        ))
        .await;
    assert!(
        matches!(
            appended,
            Err(eshost_store::AppendError::DuplicateEventId { .. })
        ),
        "{appended:?}"
    );
}
