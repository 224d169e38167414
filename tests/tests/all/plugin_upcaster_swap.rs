//! Upcasters hot-swapped: the new chain applies to commands, state reads and projections
//! at once, drops the states and snapshots built through the old one, fails no command under
//! load, is recorded in `$plugins` and is what a restarted host serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server_support::{bank_host, call, caught_up, get, post, restart};
use eshost_tests::DEPOSIT_EUR;

/// Appends `FundsDeposited` v1 `{amount}` events (the shape before currencies) to `account`.
async fn old_deposits(router: &axum::Router, account: &str, amounts: &[u64]) {
    let events: Vec<Value> = amounts
        .iter()
        .map(|amount| json!({"type": "FundsDeposited", "data": {"amount": amount}, "schema_version": 1}))
        .collect();
    let (status, body) = post(
        router,
        &format!("/streams/{account}"),
        json!({"expected": "any", "events": events}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn command(router: &axum::Router, account: &str, command: Value) -> (StatusCode, Value) {
    post(
        router,
        &format!("/aggregates/bank-account/{account}"),
        command,
    )
    .await
}

async fn balance(router: &axum::Router, account: &str) -> u64 {
    let (status, state) = get(router, &format!("/aggregates/bank-account/{account}")).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    state["state"]["balance"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upcaster_swap_under_load_fails_no_command_and_every_read_takes_the_new_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(dir.path(), "");
    // An account whose history holds two v1 deposits of 5: 5 cents each through the live
    // upcaster (USD), 500 through the new one (whole euros), with a snapshot built through
    // the live chain.
    let open = json!({"type": "Open", "owner": "Ann", "initial_deposit": 1000});
    assert_eq!(command(&router, "acct-old", open).await.0, StatusCode::OK);
    old_deposits(&router, "acct-old", &[5, 5]).await;
    for _ in 0..3 {
        let deposit = json!({"type": "Deposit", "amount": 1});
        assert_eq!(
            command(&router, "acct-old", deposit).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(balance(&router, "acct-old").await, 1013);
    let aggregates = host.host().aggregates();
    let snapshot = aggregates
        .snapshot("bank-account", "acct-old")
        .await
        .unwrap();
    assert_eq!(snapshot.map(|s| s.version), Some(6));

    // Load: four clients depositing 1 cent at a time while the upcaster is swapped.
    const CLIENTS: usize = 4;
    const EACH: u64 = 60;
    for client in 0..CLIENTS {
        let open = json!({"type": "Open", "owner": "Load"});
        let account = format!("load-{client}");
        assert_eq!(command(&router, &account, open).await.0, StatusCode::OK);
    }
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (router, done) = (router.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            for _ in 0..EACH {
                let deposit = json!({"type": "Deposit", "amount": 1});
                let (status, body) = command(&router, &format!("load-{client}"), deposit).await;
                if status != StatusCode::OK {
                    failed.push(body);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failed
        }));
    }
    // Swap once the load is under way.
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.load(Ordering::SeqCst) < 20 {
        assert!(Instant::now() < deadline, "the load did not start");
        tokio::task::yield_now().await;
    }
    let bytes = std::fs::read(DEPOSIT_EUR).unwrap();
    let (status, swapped) = call(
        &router,
        Method::PUT,
        "/plugins/deposit-currency",
        None,
        Some(Body::from(bytes)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{swapped}");
    assert_eq!(swapped["kind"], "upcaster");
    assert_eq!(swapped["outcome"], "swapped");
    assert_eq!(swapped["version"], "2-eur");
    assert!(
        swapped["snapshots_deleted"].as_u64().unwrap() >= 1,
        "{swapped}"
    );
    let left = aggregates
        .snapshots()
        .get("bank-account", "acct-old")
        .unwrap();
    assert!(
        left.is_none(),
        "a snapshot of the old chain survived: {left:?}"
    );
    let rebuilding = swapped["projections_rebuilding"].as_array().unwrap();
    assert!(rebuilding.contains(&json!("balances")), "{swapped}");
    let swapped_while = done.load(Ordering::SeqCst);
    let mut failed = Vec::new();
    for client in clients {
        failed.extend(client.await.unwrap());
    }
    assert!(failed.is_empty(), "failed commands: {failed:?}");
    assert!(
        swapped_while < (CLIENTS as u64) * EACH,
        "the swap happened under load ({swapped_while} commands done)"
    );
    for client in 0..CLIENTS {
        assert_eq!(balance(&router, &format!("load-{client}")).await, EACH);
    }

    // The state built through the old chain (cached, snapshotted) is gone: reads and commands
    // see the new one.
    assert_eq!(balance(&router, "acct-old").await, 2003);
    let deposit = json!({"type": "Deposit", "amount": 7});
    let (status, reply) = command(&router, "acct-old", deposit).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(balance(&router, "acct-old").await, 2010);
    caught_up(&host, "balances");
    let (status, row) = get(
        &router,
        "/projections/balances/query/balance?account=acct-old",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{row}");
    assert_eq!(row["balance"], 2010, "the read model was rebuilt: {row}");

    // Recorded like any activation; listed with its new version.
    let (_, history) = get(&router, "/plugins/deposit-currency/history").await;
    let last = history["activations"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["source"], "upload", "{history}");
    assert_eq!(last["kind"], "upcaster");
    let (_, plugins) = get(&router, "/plugins").await;
    let listed = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "deposit-currency")
        .unwrap()
        .clone();
    assert_eq!(listed["version"], "2-eur", "{plugins}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upcaster_that_is_not_one_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), "");
    let open = json!({"type": "Open", "owner": "Ann"});
    assert_eq!(command(&router, "acct-1", open).await.0, StatusCode::OK);
    old_deposits(&router, "acct-1", &[5]).await;
    // The bank aggregate's component offered as the upcaster: the wrong kind.
    let bytes = std::fs::read(eshost_tests::BANK_ACCOUNT).unwrap();
    let (status, refused) = call(
        &router,
        Method::PUT,
        "/plugins/deposit-currency",
        None,
        Some(Body::from(bytes)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"], "bad_plugin");
    assert_eq!(balance(&router, "acct-1").await, 5);
    let (_, history) = get(&router, "/plugins/deposit-currency/history").await;
    assert_eq!(
        history["activations"].as_array().unwrap().len(),
        1,
        "{history}"
    );
}

/// Kills the host when the test ends, passing or not.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// SIGTERM, then waits (at most 20 s) for a clean exit.
    fn stop(mut self) {
        let pid = self.0.id().to_string();
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        assert!(kill.unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                assert!(status.success(), "{status:?}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "eshost did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `eshost ARGS --server BASE` (killed after 60 s): its exit code and stdout as JSON.
fn eshost(base: &str, args: &[&str]) -> (Option<i32>, Value, String) {
    let mut args = args.to_vec();
    args.extend(["--server", base]);
    eshost_offline(&args)
}

/// Runs `eshost ARGS` (killed after 60 s): its exit code and stdout as JSON.
fn eshost_offline(args: &[&str]) -> (Option<i32>, Value, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(eshost_tests::eshost_binary())
        .args(args)
        .env_remove("ESHOST_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("eshost {args:?} did not finish in 60 s");
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
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (status.code(), json, stderr)
}

#[test]
fn a_restarted_host_serves_the_upcaster_swapped_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = eshost_tests::start_bank_host(dir.path());
    let host = Running(child);
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let balance = |base: String| {
        let http = http.clone();
        async move {
            let url = format!("{base}/aggregates/bank-account/acct-r");
            let state: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            state["state"]["balance"].as_u64().unwrap()
        }
    };
    tokio.block_on(async {
        let open = json!({"type": "Open", "owner": "Ann", "initial_deposit": 1000});
        let url = format!("{base}/aggregates/bank-account/acct-r");
        let opened = http.post(&url).json(&open).send().await.unwrap();
        assert_eq!(opened.status(), StatusCode::OK);
        let old = json!({"expected": "any", "events": [
            {"type": "FundsDeposited", "data": {"amount": 5}, "schema_version": 1}
        ]});
        let url = format!("{base}/streams/acct-r");
        let appended = http.post(&url).json(&old).send().await.unwrap();
        assert_eq!(appended.status(), StatusCode::CREATED);
        assert_eq!(balance(base.clone()).await, 1005);
    });

    let candidate = DEPOSIT_EUR;
    let (code, report, stderr) = eshost(
        &base,
        &[
            "plugin",
            "check",
            candidate,
            "--against",
            "deposit-currency",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["upcaster"]["changed"], 1, "{report}");
    let (code, swapped, stderr) = eshost(
        &base,
        &[
            "plugin",
            "swap",
            "deposit-currency",
            candidate,
            "--require-check",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(swapped["outcome"], "swapped", "{swapped}");
    assert_eq!(swapped["check"]["clean"], true, "{swapped}");
    assert_eq!(tokio.block_on(balance(base.clone())), 1500);
    host.stop();

    // The config still names the first-party upcaster's file; the log says what runs.
    let (child, base) = eshost_tests::start_bank_host(dir.path());
    let host = Running(child);
    assert_eq!(tokio.block_on(balance(base.clone())), 1500);
    let (code, plugins, stderr) = eshost(&base, &["plugin", "list"]);
    assert_eq!(code, Some(0), "{stderr}");
    let listed = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "deposit-currency")
        .unwrap()
        .clone();
    assert_eq!(listed["version"], "2-eur", "{plugins}");

    // The read model, rebuilt through the new chain, is what an offline replay with the
    // config gives: the replay takes the upcaster the host runs, not the config's file.
    let url = format!("{base}/projections/balances/query/balance?account=acct-r");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row: Value =
            tokio.block_on(async { http.get(&url).send().await.unwrap().json().await.unwrap() });
        if row["balance"] == 1500 {
            break;
        }
        assert!(Instant::now() < deadline, "balances never read 1500: {row}");
        std::thread::sleep(Duration::from_millis(20));
    }
    host.stop();
    let config = dir.path().join("eshost.toml");
    let plugin = dir.path().join("plugins/balances.wasm");
    let (code, report, stderr) = eshost_offline(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--plugin",
        plugin.to_str().unwrap(),
        "--diff",
        "balances",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["diff"]["changed"], 0, "{report}");
    assert_eq!(report["diff"]["added"], 0, "{report}");
    assert!(report["diff"]["same"].as_u64().unwrap() >= 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upcaster_changed_while_the_host_was_down_is_handled_like_a_swap_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(dir.path(), "");
    let open = json!({"type": "Open", "owner": "Ann", "initial_deposit": 1000});
    assert_eq!(command(&router, "acct-c", open).await.0, StatusCode::OK);
    old_deposits(&router, "acct-c", &[5]).await;
    let aggregates = host.host().aggregates().clone();
    let snapshot = aggregates.snapshot("bank-account", "acct-c").await.unwrap();
    assert_eq!(snapshot.map(|s| s.version), Some(2));
    caught_up(&host, "balances");
    let path = "/projections/balances/query/balance?account=acct-c";
    assert_eq!(get(&router, path).await.1["balance"], 1005);
    drop((router, aggregates));
    tokio::task::block_in_place(|| host.shutdown());

    // The config now names the other version of the upcaster.
    let file = dir.path().join("eshost.toml");
    let config = std::fs::read_to_string(&file).unwrap();
    let changed = config.replace(eshost_tests::DEPOSIT_CURRENCY, DEPOSIT_EUR);
    assert_ne!(changed, config);
    std::fs::write(&file, changed).unwrap();
    let config = eshost_core::config::Config::load(&file).unwrap();
    let host = tokio::task::block_in_place(|| restart(&config));
    let router = host.router();
    let left = host
        .host()
        .aggregates()
        .snapshots()
        .get("bank-account", "acct-c");
    assert!(
        left.unwrap().is_none(),
        "a snapshot of the old chain survived"
    );
    assert_eq!(balance(&router, "acct-c").await, 1500);
    caught_up(&host, "balances");
    assert_eq!(
        get(&router, path).await.1["balance"],
        1500,
        "the read model was rebuilt"
    );
}
