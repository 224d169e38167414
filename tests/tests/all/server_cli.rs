//! The real `eshost` binary twice over: `eshost run` with the bank example's config on a
//! loopback port, and the CLI's client verbs against it (command, state, history, projection
//! query, subscribe, a 422 refusal's exit code and message); a clean stop (SIGTERM) and the
//! offline `eshost replay` of the store it leaves.
//! Needs `target/release/eshost` (built by `cargo test --release --workspace`).

use std::path::Path;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use eshost_store::{AppendRequest, ExpectedVersion, ProposedEvent, Store, StoreConfig};
use eshost_tests::cli::{eshost_offline, eshost_online as eshost, json};
use serde_json::{Value, json};

/// Kills the server when the test ends, passing or not.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_client_verbs_drive_a_running_host() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = eshost_tests::start_bank_host(dir.path());
    let _server = Server(child);

    let opened = json(&eshost(
        &base,
        &[
            "command",
            "bank-account",
            "account-1",
            r#"{"type":"Open","owner":"Ann","initial_deposit":100}"#,
        ],
    ));
    assert_eq!(opened["stream_version"], 1);
    let deposit = [
        "command",
        "bank-account",
        "account-1",
        r#"{"type":"Deposit","amount":50}"#,
        "--idempotency-key",
        "deposit-1",
        "--expected-version",
        "1",
    ];
    let deposited = json(&eshost(&base, &deposit));
    assert_eq!(deposited["events"][0]["event_type"], "FundsDeposited");
    assert_eq!(deposited["replayed"], false);
    // The same key again: the first answer, not a second deposit.
    assert_eq!(json(&eshost(&base, &deposit))["replayed"], true);

    // A business rule refuses: the server's message on stderr, a non-zero exit, no output.
    let refused = eshost(
        &base,
        &[
            "command",
            "bank-account",
            "account-1",
            r#"{"type":"Withdraw","amount":1000}"#,
        ],
    );
    assert_eq!(refused.code, Some(1));
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    assert!(
        refused.stderr.starts_with("eshost: ") && refused.stderr.contains("insufficient"),
        "{}",
        refused.stderr
    );

    let state = json(&eshost(&base, &["state", "bank-account", "account-1"]));
    assert_eq!(state["version"], 2);
    assert_eq!(state["state"]["balance"], 150);
    let first = json(&eshost(
        &base,
        &["state", "bank-account", "account-1", "--version", "1"],
    ));
    assert_eq!(first["state"]["balance"], 100);
    let history = json(&eshost(&base, &["history", "bank-account", "account-1"]));
    assert_eq!(history["history"].as_array().unwrap().len(), 2);
    let missing = eshost(&base, &["state", "bank-account", "nobody"]);
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains("has no events"),
        "{}",
        missing.stderr
    );

    // The projection catches up asynchronously.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = json(&eshost(
            &base,
            &[
                "projection",
                "query",
                "balances",
                "balance",
                r#"{"account":"account-1"}"#,
            ],
        ));
        if answer["balance"] == 150 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "balances never showed 150: {answer}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let events = eshost(
        &base,
        &[
            "subscribe",
            "--from",
            "1",
            "--stream-prefix",
            "account-",
            "--limit",
            "2",
        ],
    );
    assert_eq!(events.code, Some(0), "{}", events.stderr);
    let lines: Vec<Value> = events
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["event_type"], "AccountOpened");
    assert_eq!(lines[1]["event_type"], "FundsDeposited");

    // append and read, which also work offline, go through the host when it is named.
    let appended = json(&eshost(
        &base,
        &[
            "append",
            "note-1",
            "--type",
            "Noted",
            "--data",
            r#"{"text":"hi"}"#,
            "--expected",
            "no_stream",
        ],
    ));
    assert_eq!(appended["stream_version"], 1);
    let conflict = eshost(
        &base,
        &[
            "append",
            "note-1",
            "--type",
            "Noted",
            "--expected",
            "no_stream",
        ],
    );
    assert_eq!(conflict.code, Some(1));
    assert!(
        conflict.stderr.contains("stream is at version 1"),
        "{}",
        conflict.stderr
    );
    let read = json(&eshost(&base, &["read", "note-1"]));
    assert_eq!(read["events"][0]["data"]["text"], "hi");
    assert_eq!(read["info"]["version"], 1);
}

/// Sends SIGTERM and waits (at most 20 s) for a clean exit.
fn stop(server: &mut Server) {
    let kill = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "eshost did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// Sends each command (JSON) in order to aggregate `id` of `aggregate_type`, each accepted.
async fn commands(
    http: &reqwest::Client,
    base: &str,
    aggregate_type: &str,
    id: &str,
    list: &[Value],
) {
    for command in list {
        let response = http
            .post(format!("{base}/aggregates/{aggregate_type}/{id}"))
            .json(command)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "{command} on {id}: {status} {body}");
    }
}

/// Waits (at most 60 s) until every projection of the host at `base` has processed the log
/// up to its head; returns the head.
async fn caught_up(http: &reqwest::Client, base: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all: Value = http
            .get(format!("{base}/projections"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let list = all["projections"].as_array().unwrap();
        let head = list[0]["head"].as_u64().unwrap();
        let done = list
            .iter()
            .all(|p| p["position"] == head && p["rebuild"].is_null() && p["state"] == "running");
        if done && head > 0 {
            return head;
        }
        assert!(
            Instant::now() < deadline,
            "the projections never caught up: {all}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `eshost replay --diff NAME` of the live plugin `file` with the host's config: the report.
fn replay_diff(dir: &Path, name: &str, file: &str) -> Value {
    let config = dir.join("eshost.toml");
    let plugin = dir.join("plugins").join(file);
    let report = eshost_offline(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--plugin",
        plugin.to_str().unwrap(),
        "--diff",
        name,
        "--json",
    ]);
    json(&report)
}

/// The replay matches the live read model key for key, and the live one is at `head`.
fn assert_same_as_live(report: &Value, head: u64) {
    let diff = &report["diff"];
    assert_eq!(report["head"], head, "{report}");
    assert_eq!(
        diff["live_position"], head,
        "the live checkpoint is the head: {report}"
    );
    for kind in ["added", "removed", "changed"] {
        assert_eq!(diff[kind], 0, "{kind}: {report}");
    }
    assert_eq!(diff["same"], report["keys"], "{report}");
    assert_eq!(diff["live_keys"], report["keys"], "{report}");
    assert!(report["keys"].as_u64().unwrap() > 0, "{report}");
}

/// Issue 13, item 3: a clean stop (SIGTERM) makes each projection's last commits durable. The
/// projections commit without waiting for the disk in between, so right after a burst of
/// commands most of their work is not yet durable; after the stop every read model is still
/// at the head and equals an offline replay of the same plugin.
#[test]
fn a_clean_stop_leaves_every_read_model_at_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = eshost_tests::start_bank_host(dir.path());
    let mut server = Server(child);
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let head = tokio.block_on(async {
        let http = reqwest::Client::new();
        for account in 1..=4 {
            let mut list = vec![json!({"type": "Open", "owner": "Ann", "initial_deposit": 100})];
            for n in 1..=8 {
                list.push(json!({"type": "Deposit", "amount": n * 10}));
                list.push(json!({"type": "Withdraw", "amount": n}));
            }
            commands(
                &http,
                &base,
                "bank-account",
                &format!("account-{account}"),
                &list,
            )
            .await;
            let register = json!({"type": "Register", "name": "Ann", "email": "ann@example.com"});
            commands(
                &http,
                &base,
                "customer",
                &format!("customer-{account}"),
                &[register],
            )
            .await;
        }
        caught_up(&http, &base).await
    });
    // The activations in $plugins of the config's eight plugins (its reactor's too), then the
    // commands' events.
    assert_eq!(head, 8 + 4 * 17 + 4);
    stop(&mut server);

    for (name, file) in [
        ("balances", "balances.wasm"),
        ("statement", "statement.wasm"),
        ("customers", "customers.wasm"),
    ] {
        assert_same_as_live(&replay_diff(dir.path(), name, file), head);
    }
}

/// Issue 13, item 2: `eshost replay` upcasts through the live host's chain: `--config` takes
/// it from the host's config, `--upcaster` names the files. Over a store that holds
/// `FundsDeposited` v1 events, the replay of `balances` equals the live read model; and an
/// event the upcaster refuses fails the replay with the upcaster's error, as live.
#[test]
fn replay_upcasts_through_the_live_hosts_upcasters() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let store = Store::open(StoreConfig::new(&data)).unwrap();
        for account in ["account-1", "account-2"] {
            let opened = r#"{"owner":"Ann","initial_deposit":100,"currency":"USD"}"#;
            let mut events = vec![ProposedEvent::new("AccountOpened", opened)];
            for amount in [10, 20, 30] {
                // Version 1: no currency.
                let deposit = format!(r#"{{"amount":{amount}}}"#);
                events.push(ProposedEvent::new("FundsDeposited", deposit));
            }
            let request = AppendRequest::new(account, ExpectedVersion::NoStream, events);
            store.append_blocking(request).unwrap();
        }
    }
    let (child, base) = eshost_tests::start_bank_host(dir.path());
    let mut server = Server(child);
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let head = tokio.block_on(async {
        let http = reqwest::Client::new();
        // The aggregate reads its v1 deposits through the upcaster too.
        let deposit = json!({"type": "Deposit", "amount": 5});
        commands(&http, &base, "bank-account", "account-1", &[deposit]).await;
        let head = caught_up(&http, &base).await;
        let live: Value = http
            .get(format!(
                "{base}/projections/balances/query/balance?account=account-1"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(live["balance"], 165, "{live}");
        head
    });
    stop(&mut server);

    let report = replay_diff(dir.path(), "balances", "balances.wasm");
    assert_eq!(report["upcasters"], json!(["deposit-currency"]), "{report}");
    assert_same_as_live(&report, head);

    // A deposit the upcaster cannot read, appended while the host is stopped: the replay
    // stops at it with the upcaster's error, whether the chain comes from the config or is
    // named; without the chain the plugin itself meets the old shape.
    {
        let store = Store::open(StoreConfig::new(&data)).unwrap();
        let junk = ProposedEvent::new("FundsDeposited", r#"{"amount":"ten"}"#);
        let request = AppendRequest::new("imported-1", ExpectedVersion::NoStream, vec![junk]);
        store.append_blocking(request).unwrap();
    }
    let junk_at = head + 1;
    let config = dir.path().join("eshost.toml");
    let plugin = dir.path().join("plugins/balances.wasm");
    let upcaster = dir.path().join("plugins/deposit_currency.wasm");
    let (config, plugin, upcaster) = (
        config.to_str().unwrap(),
        plugin.to_str().unwrap(),
        upcaster.to_str().unwrap(),
    );
    let store = data.to_str().unwrap();
    for args in [
        vec!["replay", "--config", config, "--plugin", plugin],
        vec![
            "replay",
            "--store",
            store,
            "--upcaster",
            upcaster,
            "--plugin",
            plugin,
        ],
    ] {
        let failed = eshost_offline(&args);
        assert_eq!(failed.code, Some(1), "{args:?}: {}", failed.stdout);
        let expected = format!(
            "upcasting the event at position {junk_at}: plugin \"deposit-currency\" could not \
             upcast the event at position {junk_at}: FundsDeposited v1 at position {junk_at} has \
             no amount in cents"
        );
        assert!(
            failed.stderr.contains(&expected),
            "{args:?}: {}",
            failed.stderr
        );
    }
    let unchained = eshost_offline(&["replay", "--store", store, "--plugin", plugin]);
    assert_eq!(unchained.code, Some(1));
    assert!(
        unchained.stderr.contains("is an upcaster missing?"),
        "{}",
        unchained.stderr
    );
}
