//! The real `eshost` binary with the bank example's config on a loopback port: commands,
//! a rejected overdraft, projections, SSE resume, a hot swap by upload, and a clean SIGTERM.
//! Needs `target/release/eshost` (built by `cargo test --release --workspace`).

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

fn with_custom_section(mut bytes: Vec<u8>) -> Vec<u8> {
    let name = b"eshost-e2e";
    bytes.extend_from_slice(&[0, (1 + name.len() + 2) as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(b"v2");
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_over_http_with_sse_resume_hot_swap_and_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = eshost_tests::start_bank_host(dir.path());

    let drive = async {
        let http = reqwest::Client::new();
        let command = |id: &str, body: Value| {
            http.post(format!("{base}/aggregates/bank-account/{id}"))
                .json(&body)
                .send()
        };
        assert_eq!(
            command("account-1", json!({"type": "Open", "owner": "Ann"}))
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            command("account-1", json!({"type": "Deposit", "amount": 500}))
                .await
                .unwrap()
                .status(),
            200
        );
        let overdraft = command("account-1", json!({"type": "Withdraw", "amount": 900}))
            .await
            .unwrap();
        assert_eq!(overdraft.status(), 422);
        let body: Value = overdraft.json().await.unwrap();
        assert_eq!(body["error"], "rejected");
        assert_eq!(
            command("account-2", json!({"type": "Open", "owner": "Bob"}))
                .await
                .unwrap()
                .status(),
            200
        );

        // SSE: resume after account-1's first event (Last-Event-ID), see the next two
        // positions in order (the log opens with the config's activations in $plugins).
        let stream: Value = http
            .get(format!("{base}/streams/account-1"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let opened = stream["events"][0]["position"].as_u64().unwrap();
        let response = http
            .get(format!("{base}/subscribe?stream_prefix=account-"))
            .header("last-event-id", opened.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut stream = response.bytes_stream();
        let mut text = String::new();
        while text.matches("\nid: ").count() + usize::from(text.starts_with("id: ")) < 2 {
            let chunk = stream.next().await.unwrap().unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        let ids: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .collect();
        let expected = [(opened + 1).to_string(), (opened + 2).to_string()];
        assert_eq!(&ids[..2], expected, "{text}");
        drop(stream);

        // Balances through the projection, once caught up.
        let mut balance = Value::Null;
        while balance != json!(500) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let answer: Value = http
                .get(format!(
                    "{base}/projections/balances/query/balance?account=account-1"
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            balance = answer["balance"].clone();
        }

        // Hot swap of the statement projection by upload: it rebuilds and takes over.
        let before: Value = http
            .get(format!("{base}/projections/statement"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let bytes = with_custom_section(std::fs::read(eshost_tests::STATEMENT).unwrap());
        let swapped = http
            .put(format!("{base}/plugins/statement"))
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(swapped.status(), 202);
        loop {
            let status: Value = http
                .get(format!("{base}/projections/statement"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if status["active"]["hash"] != before["active"]["hash"]
                && status["rebuild"].is_null()
                && status["lag"] == 0
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let statement: Value = http
            .get(format!(
                "{base}/projections/statement/query/statement?account=account-1"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(statement["balance"], 500, "{statement}");
    };
    tokio::time::timeout(Duration::from_secs(60), drive)
        .await
        .expect("the e2e run within 60 s");

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
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
