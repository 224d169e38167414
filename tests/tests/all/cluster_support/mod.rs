//! A cluster of real `eshost run` processes on one PostgreSQL log: a schema of its own on the
//! server `ESHOST_TEST_POSTGRES` names (`scripts/test` starts one; without it the tests fail,
//! saying so), one config per node in one directory (so they share `eshost.kek`), each node
//! with its own `data` directory, its stderr in `nodeN.log`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The server the cluster tests use.
pub fn server_url() -> String {
    match std::env::var("ESHOST_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "the cluster tests need a PostgreSQL server, and ESHOST_TEST_POSTGRES names none: run \
             scripts/test (it starts a throwaway cluster), or `scripts/postgres.sh start` and \
             ESHOST_TEST_POSTGRES=$(scripts/postgres.sh url)"
        ),
    }
}

/// One node: its process (while running) and base URL.
pub struct Node {
    pub child: Option<Child>,
    pub base: String,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Node {
    /// The process id (the node must be running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node runs").id()
    }

    /// Sends a Unix signal to the node.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal}");
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; it must exit cleanly within 30 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(status.success(), "{status:?}");
                return;
            }
            assert!(Instant::now() < deadline, "the node did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A node left stopped by a failing test must die too.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// Several nodes on one log.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// The store URL (with the cluster's schema).
    pub store: String,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// `count` nodes with the bank example's plugins, started one after the other.
    pub fn start(count: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let schema = format!("cluster_{}", uuid::Uuid::new_v4().simple());
        let store = format!("{}?schema={schema}", server_url());
        copy_plugins(dir.path());
        let mut cluster = Cluster {
            dir,
            store,
            nodes: Vec::new(),
        };
        for index in 1..=count {
            let config = cluster.write_config(index);
            let log = cluster.dir.path().join(format!("node{index}.log"));
            let mut node = Node {
                child: None,
                base: String::new(),
                config,
                log,
            };
            start_node(&mut node);
            cluster.nodes.push(node);
        }
        cluster
    }

    fn write_config(&self, index: usize) -> PathBuf {
        let path = self.dir.path().join(format!("node{index}.toml"));
        let bank =
            std::fs::read_to_string(eshost_tests::checkout().join("examples/bank/eshost.toml"))
                .expect("the bank config");
        let config = bank.replace(
            "store = \"data\"",
            &format!("store = \"{}\"\ndata = \"node{index}\"", self.store),
        );
        assert_ne!(config, bank, "the bank config names store = \"data\"");
        std::fs::write(&path, config).expect("write a node config");
        path
    }

    /// Starts node `index` (0-based) again, with its data directory as it was.
    pub fn restart(&mut self, index: usize) {
        start_node(&mut self.nodes[index]);
    }

    /// The node's log, for failure messages.
    pub fn log(&self, index: usize) -> String {
        std::fs::read_to_string(&self.nodes[index].log).unwrap_or_default()
    }

    /// `eshost verify` of the shared log: (success, output).
    pub fn verify(&self) -> (bool, String) {
        let output = Command::new(eshost_tests::eshost_binary())
            .args(["verify", "--store", &self.store, "--key-encryption-key"])
            .arg(self.dir.path().join("eshost.kek"))
            .output()
            .expect("run eshost verify");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }
}

fn copy_plugins(dir: &Path) {
    use eshost_tests::*;
    std::fs::create_dir_all(dir.join("plugins")).expect("create plugins/");
    for (path, file) in BANK_PLUGINS {
        std::fs::copy(path, dir.join("plugins").join(file)).expect("copy a plugin");
    }
}

fn start_node(node: &mut Node) {
    use std::io::{BufRead, BufReader};
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .expect("open the node's log");
    let mut child = Command::new(eshost_tests::eshost_binary())
        .args(["run", "--config"])
        .arg(&node.config)
        .args(["--listen", "127.0.0.1:0"])
        .env("ESHOST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start eshost run");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            panic!(
                "node {} did not start: {}",
                node.config.display(),
                std::fs::read_to_string(&node.log).unwrap_or_default()
            )
        })
        .to_owned();
    node.base = base;
    node.child = Some(child);
}

/// A client with a bounded timeout per request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client")
}

/// Sends a bank command: (status, body), or the transport error.
pub async fn command(
    client: &reqwest::Client,
    node: &str,
    account: &str,
    body: &Value,
    key: Option<&str>,
) -> reqwest::Result<(u16, Value)> {
    let mut request = client
        .post(format!("{node}/aggregates/bank-account/{account}"))
        .json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

/// GET `path` from `node` as JSON.
pub async fn get(client: &reqwest::Client, node: &str, path: &str) -> Value {
    let response = client
        .get(format!("{node}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {node}{path}: {e}"));
    response.json().await.expect("a JSON answer")
}

/// Waits (bounded) until `check` of `node`'s `path` holds; returns the last answer.
pub async fn wait_for(
    client: &reqwest::Client,
    node: &str,
    path: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let answer = get(client, node, path).await;
        if check(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{node}{path} did not reach the condition within {within:?}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event of `$all`, read through `node`.
pub async fn all_events(client: &reqwest::Client, node: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut from = 1;
    for _ in 0..10_000 {
        let page = get(client, node, &format!("/all?from={from}&limit=1000")).await;
        let batch = page["events"].as_array().expect("events").clone();
        if batch.is_empty() {
            return events;
        }
        from = batch.last().unwrap()["position"].as_u64().unwrap() + 1;
        events.extend(batch);
    }
    panic!("$all did not end");
}

/// Each account's balance computed from the log (a clean rebuild of the balances read model):
/// opened with `initial_deposit`, deposits add, withdrawals subtract.
pub fn balances_from_log(events: &[Value]) -> std::collections::BTreeMap<String, i64> {
    let mut balances = std::collections::BTreeMap::new();
    for event in events {
        let stream = event["stream_id"].as_str().unwrap();
        if !stream.starts_with("account-") {
            continue;
        }
        let amount = |key: &str| event["data"][key].as_i64().unwrap_or(0);
        let delta = match event["event_type"].as_str().unwrap() {
            "AccountOpened" => amount("initial_deposit"),
            "FundsDeposited" => amount("amount"),
            "FundsWithdrawn" => -amount("amount"),
            _ => 0,
        };
        *balances.entry(stream.to_owned()).or_insert(0) += delta;
    }
    balances
}

/// The balance the balances projection of `node` answers for `account`.
pub async fn balance(client: &reqwest::Client, node: &str, account: &str) -> Value {
    get(
        client,
        node,
        &format!("/projections/balances/query/balance?account={account}"),
    )
    .await
}

/// Opens `account` with `initial` through `node`.
pub async fn open(client: &reqwest::Client, node: &str, account: &str, initial: i64) {
    let body = json!({"type": "Open", "owner": "Ann", "initial_deposit": initial});
    let (status, answer) = command(client, node, account, &body, None).await.unwrap();
    assert_eq!(status, 200, "open {account}: {answer}");
}

/// A component with the same code and a new identity (a custom section appended).
pub fn new_identity(path: &str, tag: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(path).expect("read a component");
    let name = b"eshost";
    let payload_len = 1 + name.len() + tag.len();
    bytes.push(0);
    bytes.push(payload_len as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(tag.as_bytes());
    bytes
}
