//! The transfer saga under load, with the host killed (SIGKILL) three times mid-flow: every
//! transfer ends completed, failed or refunded; money is conserved across the accounts; no
//! command the saga sent was applied twice.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ACCOUNTS: usize = 8;
const OPENING: u64 = 10_000;
const CYCLES: usize = 3;
/// Transfers acknowledged in a cycle before the kill.
const BEFORE_KILL: usize = 40;
const WAIT: Duration = Duration::from_secs(60);

/// A running host, killed when dropped.
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

fn config(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        "store = \"data\"\nwatch_plugins = false\n\
         [[aggregates]]\nname = \"bank-account\"\nplugin = {:?}\n\
         [[aggregates]]\nname = \"transfer\"\nplugin = {:?}\n\
         [[reactors]]\nname = \"transfer-saga\"\nplugin = {:?}\nbatch = 16\n",
        eshost_tests::BANK_ACCOUNT,
        eshost_tests::TRANSFER,
        eshost_tests::TRANSFER_SAGA,
    );
    let file = dir.join("eshost.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn start(dir: &Path, run: usize) -> Running {
    let log = dir.join(format!("eshost-{run}.log"));
    let (child, base) = eshost_tests::start_host(&config(dir), &log, &[]);
    Running { child, base }
}

fn kill(running: Running) {
    let status = Command::new("kill")
        .args(["-KILL", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    drop(running);
}

/// Sends `body` to `ty`/`id` with idempotency `key`: the status, or `None` if the request
/// failed (the host died under it).
async fn send(
    http: &reqwest::Client,
    base: &str,
    ty: &str,
    id: &str,
    key: &str,
    body: &Value,
) -> Option<u16> {
    let response = http
        .post(format!("{base}/aggregates/{ty}/{id}"))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

async fn get(http: &reqwest::Client, base: &str, path: &str) -> Value {
    let response = http.get(format!("{base}{path}")).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn account(n: u64) -> String {
    format!("acc-{n}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_survive_sigkill_mid_flow_with_money_conserved_and_nothing_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut running = start(dir.path(), 0);
    for n in 0..ACCOUNTS as u64 {
        let open = json!({"type": "Open", "owner": account(n), "initial_deposit": OPENING});
        let key = format!("open-{n}");
        assert_eq!(
            send(
                &http,
                &running.base,
                "bank-account",
                &account(n),
                &key,
                &open
            )
            .await,
            Some(200)
        );
    }
    let mut rng = Rng(0x5eed_cafe);
    let mut transfers: Vec<(String, Value)> = Vec::new();
    for cycle in 0..=CYCLES {
        // Four clients at once, so that the saga is mid-flow on several transfers at the kill.
        let mut acknowledged = 0;
        let mut unanswered = Vec::new();
        let mut batch_start = transfers.len();
        while acknowledged < BEFORE_KILL {
            let mut sends = Vec::new();
            for _ in 0..4 {
                let from = rng.below(ACCOUNTS as u64);
                let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1)) % ACCOUNTS as u64;
                let id = format!("t-{cycle}-{}", transfers.len());
                let body = json!({"type": "Request", "from": account(from), "to": account(to), "amount": 1 + rng.below(4000)});
                transfers.push((id, body));
            }
            for (id, body) in &transfers[batch_start..] {
                sends.push(send(&http, &running.base, "transfer", id, id, body));
            }
            for ((id, _), status) in transfers[batch_start..]
                .iter()
                .zip(futures_util::future::join_all(sends).await)
            {
                match status {
                    Some(200) => acknowledged += 1,
                    Some(other) => panic!("transfer {id}: HTTP {other}"),
                    None => unanswered.push(id.clone()),
                }
            }
            batch_start = transfers.len();
        }
        if cycle == CYCLES {
            break;
        }
        tokio::task::block_in_place(|| kill(running));
        running = tokio::task::block_in_place(|| start(dir.path(), cycle + 1));
        // A request the dead host may or may not have decided is sent again, same key.
        for id in unanswered {
            let (_, body) = transfers.iter().find(|(t, _)| *t == id).unwrap();
            assert_eq!(
                send(&http, &running.base, "transfer", &id, &id, body).await,
                Some(200),
                "{id}"
            );
        }
    }

    // Every transfer settles.
    let deadline = Instant::now() + WAIT;
    let mut statuses: HashMap<String, String> = HashMap::new();
    for (id, _) in &transfers {
        loop {
            let state = get(&http, &running.base, &format!("/aggregates/transfer/{id}")).await;
            let status = state["state"]["status"].as_str().unwrap().to_owned();
            if status != "requested" {
                statuses.insert(id.clone(), status);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "transfer {id} did not settle: {state}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let completed = statuses.values().filter(|s| *s == "completed").count();
    assert!(completed > 0 && completed < transfers.len(), "{statuses:?}");

    // Money is conserved, and no command of the saga was applied twice: within an account,
    // each event the saga caused has a cause of its own.
    let mut total = 0;
    let mut caused = 0;
    for n in 0..ACCOUNTS as u64 {
        let stream = get(
            &http,
            &running.base,
            &format!("/streams/{}?limit=100000", account(n)),
        )
        .await;
        let mut causes = HashSet::new();
        for event in stream["events"].as_array().unwrap() {
            if event["metadata"]["user"] == "reactor:transfer-saga" {
                let cause = event["metadata"]["causation_id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                assert!(
                    causes.insert(cause),
                    "{} applied twice: {event}",
                    account(n)
                );
                caused += 1;
            }
        }
        let state = get(
            &http,
            &running.base,
            &format!("/aggregates/bank-account/{}", account(n)),
        )
        .await;
        total += state["state"]["balance"].as_u64().unwrap();
    }
    assert_eq!(total, OPENING * ACCOUNTS as u64, "money is conserved");
    let debits_and_credits = statuses.values().map(|s| match s.as_str() {
        "completed" => 2,
        "failed" => 0,
        _ => 3,
    });
    assert_eq!(
        caused,
        debits_and_credits.sum::<usize>(),
        "one event per saga command"
    );
    let saga = get(&http, &running.base, "/reactors/transfer-saga").await;
    assert_eq!(saga["state"], "running", "{saga}");
}

/// Waits (bounded) for the host to die by itself (the test hook's abort).
fn aborted(running: &mut Running) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            assert!(!status.success(), "the hook aborts: {status:?}");
            return;
        }
        assert!(Instant::now() < deadline, "the host did not abort");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The event types of stream `id`.
async fn types(http: &reqwest::Client, base: &str, id: &str) -> Vec<String> {
    let stream = get(http, base, &format!("/streams/{id}?limit=1000")).await;
    stream["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_each_step_of_a_transfer_leaves_it_carried_out_once_after_a_restart() {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // The saga's three steps (debit, credit, complete), each cut after its command is durable
    // and again after its outcome is recorded, always before the checkpoint moves.
    for stage in ["after-commands", "after-records"] {
        for step in 1..=3 {
            let dir = tempfile::tempdir().unwrap();
            let fault = format!("reactor-abort:{stage}:{step}");
            let log = dir.path().join("eshost-0.log");
            let (child, base) = tokio::task::block_in_place(|| {
                eshost_tests::start_host(
                    &config(dir.path()),
                    &log,
                    &[("ESHOST_TEST_FAULT", &fault)],
                )
            });
            let mut running = Running { child, base };
            for (id, deposit) in [("acc-a", 1000), ("acc-b", 0)] {
                let mut open = json!({"type": "Open", "owner": id});
                if deposit > 0 {
                    open["initial_deposit"] = json!(deposit);
                }
                let sent = send(&http, &running.base, "bank-account", id, id, &open).await;
                assert_eq!(sent, Some(200), "{fault}");
            }
            let request = json!({"type": "Request", "from": "acc-a", "to": "acc-b", "amount": 300});
            let sent = send(&http, &running.base, "transfer", "t-1", "t-1", &request).await;
            assert_eq!(sent, Some(200), "{fault}");
            tokio::task::block_in_place(|| aborted(&mut running));
            drop(running);

            let running = tokio::task::block_in_place(|| start(dir.path(), 1));
            let deadline = Instant::now() + WAIT;
            loop {
                let state = get(&http, &running.base, "/aggregates/transfer/t-1").await;
                if state["state"]["status"] == "completed" {
                    break;
                }
                assert!(Instant::now() < deadline, "{fault}: {state}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            for (id, balance, moved) in [
                ("acc-a", 700, "FundsWithdrawn"),
                ("acc-b", 300, "FundsDeposited"),
            ] {
                let state = get(
                    &http,
                    &running.base,
                    &format!("/aggregates/bank-account/{id}"),
                )
                .await;
                assert_eq!(state["state"]["balance"], balance, "{fault}: {id}");
                let moves = types(&http, &running.base, id).await;
                let count = moves.iter().filter(|t| *t == moved).count();
                assert_eq!(count, 1, "{fault}: {id} {moves:?}");
            }
            assert_eq!(
                types(&http, &running.base, "t-1").await,
                ["TransferRequested", "TransferCompleted"],
                "{fault}"
            );
            let saga = get(&http, &running.base, "/reactors/transfer-saga").await;
            assert!(saga["last_error"].is_null(), "{fault}: {saga}");
        }
    }
}
