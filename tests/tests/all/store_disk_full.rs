//! A full disk, then freed, without a restart: the real host on a small tmpfs filled to the
//! brim. Writes fail with `read_only` (503, `Retry-After`), `/health` answers 503 `degraded`
//! with the cause, a projection that cannot commit reports `failed`, reads are served; once
//! the filler is deleted the store reopens itself, writes succeed, `/health` is ok again and
//! the projection catches up. Every acknowledged event is then stored exactly once, nothing
//! refused appears, `verify` passes and the read model equals a rebuild.
//!
//! Mounting needs root (the CI runs the tests as root): without it the test fails, saying so.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use eshost_tests::cli::{Running, eshost_offline};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(120);
/// The reason carried by each big event: the statement projection stores it in its read
/// model, so `views.redb` grows with the log.
const REASON_BYTES: usize = 32 * 1024;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, megabytes: u32) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "this test needs root: it mounts a {megabytes} MiB tmpfs as the host's data \
             directory to fill it (run the tests as root, as the CI does); mount said: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fill the file system under `dir` to the brim: big writes, then ever smaller ones until
/// not even 512 bytes fit.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let mut chunk = 1 << 20;
    let zeros = vec![1u8; chunk];
    for _ in 0..100_000 {
        match file.write_all(&zeros[..chunk]) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(28) => {
                if chunk <= 512 {
                    return;
                }
                chunk /= 2;
            }
            Err(error) => panic!("filling {}: {error}", path.display()),
        }
    }
    panic!("{} never filled up", path.display());
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < DEADLINE {
        match check().await {
            Ok(()) => return,
            Err(state) => last = state,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("waited {DEADLINE:?} for {what}; last seen: {last}");
}

async fn get(client: &reqwest::Client, url: String) -> (u16, Value) {
    let response = client.get(&url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn frozen(n: usize) -> Value {
    let reason = format!("{n:06} {}", "x".repeat(REASON_BYTES));
    json!({"expected": "any", "events": [{"type": "AccountFrozen", "data": {"reason": reason}}]})
}

/// The account's statement, every line, read in pages (typed arguments go in `?args=`).
async fn statement(client: &reqwest::Client, base: &str, account: &str) -> Vec<Value> {
    let mut lines = Vec::new();
    let mut after = None;
    for _ in 0..10_000 {
        let args = json!({"account": account, "limit": 16, "after": after}).to_string();
        let response = client
            .get(format!("{base}/projections/statement/query/statement"))
            .query(&[("args", args)])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{answer}");
        let page = answer["lines"].as_array().unwrap().clone();
        let Some(last) = page.last() else {
            lines.push(json!({"balance": answer["balance"], "currency": answer["currency"]}));
            return lines;
        };
        after = last["version"].as_u64();
        lines.extend(page);
    }
    panic!("the statement of {account} never ended");
}

/// The stream's events, read in pages.
async fn stream(client: &reqwest::Client, base: &str, account: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut from = 1;
    for _ in 0..10_000 {
        let (status, page) = get(client, format!("{base}/streams/{account}?from={from}")).await;
        assert_eq!(status, 200, "{page}");
        let page = page["events"].as_array().unwrap().clone();
        let Some(last) = page.last() else {
            return events;
        };
        from = last["stream_version"].as_u64().unwrap() + 1;
        events.extend(page);
    }
    panic!("the stream {account} never ended");
}

async fn projection(client: &reqwest::Client, base: &str, name: &str) -> Value {
    get(client, format!("{base}/projections/{name}")).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_the_store_read_only_and_freeing_it_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _tmpfs = Tmpfs::mount(&data, 64);
    let (child, base) = eshost_tests::start_bank_host(dir.path());
    let host = Running(child);
    let client = reqwest::Client::new();
    let account = "account-full";
    let other = "account-other";

    let open = json!({"type": "Open", "owner": "Ann", "initial_deposit": 100});
    for id in [account, other] {
        let answer = client
            .post(format!("{base}/aggregates/bank-account/{id}"))
            .json(&open)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200);
    }

    let filler = data.join("filler");
    fill(&filler);

    // Append big events until the store gives up: the write-ahead log has room, but the
    // checkpoint into events.redb finds none.
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for n in 0..2000 {
        let response = client
            .post(format!("{base}/streams/{account}"))
            .json(&frozen(n))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let body: Value = response.json().await.unwrap();
        match status {
            201 => acknowledged.push(n),
            503 => {
                assert_eq!(body["error"], "read_only", "{body}");
                assert!(
                    body["message"]
                        .as_str()
                        .unwrap()
                        .contains("No space left on device"),
                    "{body}"
                );
                assert!(retry_after.is_some(), "a 503 read_only carries Retry-After");
                refused = Some(n);
                break;
            }
            other => panic!("append {n}: {other} {body}"),
        }
    }
    let refused = refused.expect("the store never ran out of space");
    assert!(!acknowledged.is_empty());

    // Degraded: commands fail fast with the same error, /health says so with 503.
    let deposit = json!({"type": "Deposit", "amount": 5});
    let answer = client
        .post(format!("{base}/aggregates/bank-account/{other}"))
        .json(&deposit)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 503);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "read_only", "{body}");
    let (status, health) = get(&client, format!("{base}/health")).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["cause"].as_str().unwrap().contains("No space left"),
        "{health}"
    );
    // The statement projection cannot commit its read model to the full disk.
    wait_for("the statement projection to report failed", || async {
        let status = projection(&client, &base, "statement").await;
        match status["state"] == "failed" && status["last_error"].is_string() {
            true => Ok(()),
            false => Err(status.to_string()),
        }
    })
    .await;
    // Reads are served.
    let before = stream(&client, &base, account).await;
    assert_eq!(before.len(), 1 + acknowledged.len());

    // Free the disk: the store and the projection recover by themselves.
    std::fs::remove_file(&filler).unwrap();
    wait_for("/health to be ok", || async {
        let (status, health) = get(&client, format!("{base}/health")).await;
        match (status, health["status"].as_str()) {
            (200, Some("ok")) => Ok(()),
            _ => Err(health.to_string()),
        }
    })
    .await;
    let after = 999_999;
    let response = client
        .post(format!("{base}/streams/{account}"))
        .json(&frozen(after))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    acknowledged.push(after);
    let answer = client
        .post(format!("{base}/aggregates/bank-account/{other}"))
        .json(&deposit)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    // The refused deposit left no trace in the aggregate's cached state either.
    let (_, state) = get(&client, format!("{base}/aggregates/bank-account/{other}")).await;
    assert_eq!(
        (&state["version"], &state["state"]["balance"]),
        (&json!(2), &json!(105)),
        "{state}"
    );
    let (_, head) = get(&client, format!("{base}/health")).await;
    let head = head["head"].as_u64().unwrap();
    for name in ["statement", "balances"] {
        wait_for(&format!("{name} to run and catch up"), || async {
            let status = projection(&client, &base, name).await;
            match status["state"] == "running" && status["position"].as_u64() >= Some(head) {
                true => Ok(()),
                false => Err(status.to_string()),
            }
        })
        .await;
    }

    // Every acknowledged append is there once, in order; the refused one is not.
    let reasons: Vec<usize> = stream(&client, &base, account)
        .await
        .iter()
        .filter(|event| event["event_type"] == "AccountFrozen")
        .map(|event| {
            event["data"]["reason"].as_str().unwrap()[..6]
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        !reasons.contains(&refused),
        "refused append {refused} was stored"
    );
    assert_eq!(reasons, acknowledged);

    // The read model equals a rebuild of it.
    let live = statement(&client, &base, account).await;
    let rebuilt = client
        .post(format!("{base}/projections/statement/rebuild"))
        .send()
        .await
        .unwrap();
    assert!(rebuilt.status().is_success());
    wait_for("the rebuild to finish", || async {
        let status = projection(&client, &base, "statement").await;
        match status["rebuild"].is_null()
            && status["state"] == "running"
            && status["position"].as_u64() >= Some(head)
        {
            true => Ok(()),
            false => Err(status.to_string()),
        }
    })
    .await;
    assert_eq!(statement(&client, &base, account).await, live);

    drop(host);
    let verified = eshost_offline(&["verify", "--store", data.to_str().unwrap()]);
    assert_eq!(verified.code, Some(0), "{verified:?}");
}
