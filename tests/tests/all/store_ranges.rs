//! Reads of a range (a start and an end by version, position or time; times as ms or RFC
//! 3339) through HTTP, the CLI against a running host and the CLI on the stopped store; an
//! aggregate's state as of an RFC 3339 time; snapshots taken on demand.
//! Needs `target/release/eshost` (built by `cargo test --release --workspace`).

use std::process::Command;
use std::time::{Duration, Instant};

use eshost_api::Timestamp;
use eshost_tests::cli::{Running, eshost_offline, eshost_online, json, json_lines};
use serde_json::Value;

/// Sends each command to `account-id` and returns the events recorded, in order.
fn commands(base: &str, id: &str, bodies: &[&str]) -> Vec<Value> {
    let mut events = Vec::new();
    for body in bodies {
        let accepted = json(&eshost_online(base, &["command", "bank-account", id, body]));
        events.extend(accepted["events"].as_array().unwrap().iter().cloned());
    }
    events
}

/// Waits (bounded) until the clock is past `millis`, so what follows is recorded later.
fn clock_past(millis: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while eshost_store::now_ms() <= millis {
        assert!(Instant::now() < deadline, "the clock stood still");
        std::thread::yield_now();
    }
}

fn recorded_at(event: &Value) -> u64 {
    event["recorded_at"].as_u64().unwrap()
}

fn rfc3339(millis: u64) -> String {
    Timestamp(millis).rfc3339()
}

/// The stream versions of the events an answer (or JSON lines) holds.
fn versions(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["stream_version"].as_u64().unwrap())
        .collect()
}

fn read_versions(base: &str, args: &[&str]) -> Vec<u64> {
    let answer = json(&eshost_online(base, args));
    versions(answer["events"].as_array().unwrap())
}

#[test]
fn reads_take_a_range_by_version_position_or_time_online_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = eshost_tests::start_bank_host(dir.path());
    let mut child = Running(child);

    // Three eras, each recorded after the one before: account-1 v1-2 | v3-4 | v5.
    let era_a = commands(
        &base,
        "account-1",
        &[
            r#"{"type":"Open","owner":"Ann","initial_deposit":100}"#,
            r#"{"type":"Deposit","amount":10}"#,
        ],
    );
    let a_end = recorded_at(era_a.last().unwrap());
    clock_past(a_end);
    let mut era_b = commands(&base, "account-1", &[r#"{"type":"Deposit","amount":20}"#]);
    era_b.extend(commands(
        &base,
        "account-2",
        &[r#"{"type":"Open","owner":"Bo"}"#],
    ));
    era_b.extend(commands(
        &base,
        "account-1",
        &[r#"{"type":"Deposit","amount":30}"#],
    ));
    let (b_start, b_end) = (recorded_at(&era_b[0]), recorded_at(era_b.last().unwrap()));
    clock_past(b_end);
    let era_c = commands(&base, "account-1", &[r#"{"type":"Deposit","amount":40}"#]);
    let v4_position = era_b[2]["position"].as_u64().unwrap().to_string();

    // Times as RFC 3339 or ms, bounds on either side, both directions.
    let (b_from, b_until) = (rfc3339(b_start), b_end.to_string());
    let read = ["read", "account-1"];
    assert_eq!(
        read_versions(
            &base,
            &[
                &read[..],
                &["--from-time", &b_from, "--until-time", &b_until]
            ]
            .concat()
        ),
        [3, 4]
    );
    assert_eq!(
        read_versions(
            &base,
            &[&read[..], &["--backward", "--from-time", &b_from]].concat()
        ),
        [5, 4, 3]
    );
    assert_eq!(
        read_versions(&base, &[&read[..], &["--until-version", "2"]].concat()),
        [1, 2]
    );
    assert_eq!(
        read_versions(
            &base,
            &[&read[..], &["--from-position", &v4_position]].concat()
        ),
        [4, 5]
    );
    assert_eq!(
        read_versions(
            &base,
            &[
                &read[..],
                &["--backward", "--from", "4", "--until-time", &rfc3339(a_end)]
            ]
            .concat()
        ),
        [2, 1]
    );
    let later = rfc3339(recorded_at(&era_c[0]) + 3_600_000);
    assert!(read_versions(&base, &[&read[..], &["--from-time", &later]].concat()).is_empty());

    // The state as of an RFC 3339 time: after era A.
    let state = json(&eshost_online(
        &base,
        &[
            "state",
            "bank-account",
            "account-1",
            "--at",
            &rfc3339(a_end),
        ],
    ));
    assert_eq!(
        (
            state["version"].as_u64(),
            state["state"]["balance"].as_u64()
        ),
        (Some(2), Some(110))
    );

    // Over HTTP, RFC 3339 text in the query; a time that is neither is a clear 400.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = runtime.block_on(async {
        let url = format!(
            "{base}/all?from_time={}&until_time={}",
            rfc3339(b_start),
            rfc3339(b_end)
        );
        let answer = reqwest::get(url).await.unwrap();
        (
            answer.status().as_u16(),
            answer.json::<Value>().await.unwrap(),
        )
    });
    assert_eq!(status, 200, "{body}");
    let streams: Vec<(&str, u64)> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["stream_id"].as_str().unwrap(),
                e["stream_version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        streams,
        [("account-1", 3), ("account-2", 1), ("account-1", 4)]
    );
    let (status, body) = runtime.block_on(async {
        let answer = reqwest::get(format!("{base}/streams/account-1?until_time=yesterday"))
            .await
            .unwrap();
        (
            answer.status().as_u16(),
            answer.json::<Value>().await.unwrap(),
        )
    });
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("RFC 3339"),
        "{body}"
    );
    let refused = eshost_online(&base, &["read", "account-1", "--from-time", "soon"]);
    assert_eq!(refused.code, Some(2));
    assert!(refused.stderr.contains("RFC 3339"), "{}", refused.stderr);

    // A snapshot on demand: the next state read starts from it.
    let taken = json(&eshost_online(
        &base,
        &["snapshot", "bank-account", "account-1"],
    ));
    assert_eq!(taken["version"], 5, "{taken}");
    assert!(taken["bytes"].as_u64().unwrap() > 0, "{taken}");
    let state = json(&eshost_online(
        &base,
        &["state", "bank-account", "account-1"],
    ));
    assert_eq!(state["from_snapshot"], 5, "{state}");
    assert_eq!(state["state"]["balance"], 200, "{state}");
    let none = eshost_online(&base, &["snapshot", "bank-account", "account-404"]);
    assert_eq!(none.code, Some(1));
    assert!(none.stderr.contains("has no events"), "{}", none.stderr);
    let unknown = eshost_online(&base, &["snapshot", "no-such-type", "account-1"]);
    assert_eq!(unknown.code, Some(1));
    assert!(
        unknown.stderr.contains("no-such-type"),
        "{}",
        unknown.stderr
    );

    // The same ranges on the stopped store.
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(child.0.wait().unwrap().success());
    let store = dir.path().join("data");
    let store = store.to_str().unwrap();
    let offline =
        |args: &[&str]| json_lines(&eshost_offline(&[args, &["--store", store]].concat()));
    assert_eq!(
        versions(&offline(&[
            "read",
            "account-1",
            "--from-time",
            &b_from,
            "--until-time",
            &b_until
        ])),
        [3, 4]
    );
    assert_eq!(
        versions(&offline(&[
            "read",
            "account-1",
            "--backward",
            "--until-version",
            "3"
        ])),
        [3, 2, 1]
    );
    let all = offline(&[
        "all",
        "--from-time",
        &b_from,
        "--until-time",
        &rfc3339(b_end),
    ]);
    let all: Vec<&str> = all
        .iter()
        .map(|e| e["stream_id"].as_str().unwrap())
        .collect();
    assert_eq!(all, ["account-1", "account-2", "account-1"]);
    assert!(offline(&["all", "--from-time", &later]).is_empty());
}
