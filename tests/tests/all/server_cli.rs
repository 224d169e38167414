//! The real `eshost` binary twice over: `eshost run` with the bank example's config on a
//! loopback port, and the CLI's client verbs against it (command, state, history, projection
//! query, subscribe, a 422 refusal's exit code and message).
//! Needs `target/release/eshost` (built by `cargo test --release --workspace`).

use std::io::Read;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Kills the server when the test ends, passing or not.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `eshost ARGS --server BASE`, killed after 20 s.
fn eshost(base: &str, args: &[&str]) -> Output {
    let mut child = Command::new(eshost_tests::eshost_binary())
        .args(args)
        .args(["--server", base])
        .env_remove("ESHOST_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("eshost {args:?} did not finish in 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Output {
        code: status.code(),
        stdout,
        stderr,
    }
}

fn json(output: &Output) -> Value {
    assert_eq!(output.code, Some(0), "stderr: {}", output.stderr);
    serde_json::from_str(output.stdout.trim()).unwrap()
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

    let events = eshost(&base, &["subscribe", "--from", "1", "--limit", "2"]);
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
