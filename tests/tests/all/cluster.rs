//! Issue 17: several `eshost run` nodes on one PostgreSQL log, as real processes. Any node
//! takes any command; a node killed under load loses nothing acknowledged; a node paused past
//! every timeout writes no stale state when it resumes; a swap through one node fails no
//! command and reaches every node (and survives a restart); a forget through one node purges
//! every node; a keyed retry through another node gets the first reply.
//!
//! They need `ESHOST_TEST_POSTGRES` (see `cluster_support`) and the release `eshost` binary.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster_support::{
    Cluster, all_events, balance, balances_from_log, client, command, get, new_identity, open,
    wait_for,
};

const ACCOUNTS: usize = 6;

fn account(index: usize) -> String {
    format!("account-{index}")
}

/// Deposits of 1 from `clients` concurrent clients, `per_client` each, each client going
/// round the nodes of `bases` (shared accounts, so nodes race on the same streams). Returns
/// the acknowledged replies and how many commands failed (any answer but 200: a transport
/// error counts, since a node may die under it).
async fn load(
    bases: Vec<String>,
    clients: usize,
    per_client: usize,
    on_progress: impl Fn(usize) + Send + Sync + 'static,
) -> (Vec<Value>, Vec<String>) {
    let on_progress = std::sync::Arc::new(on_progress);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (bases, on_progress, done) = (bases.clone(), on_progress.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut acknowledged = Vec::new();
            let mut failures = Vec::new();
            for i in 0..per_client {
                let base = &bases[(c + i) % bases.len()];
                let target = account((c * 7 + i) % ACCOUNTS);
                let body = json!({"type": "Deposit", "amount": 1});
                match command(&client, base, &target, &body, None).await {
                    Ok((200, reply)) => acknowledged.push(reply),
                    Ok((status, reply)) => failures.push(format!("{base} {status} {reply}")),
                    Err(error) => failures.push(format!("{base}: {error}")),
                }
                on_progress(done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1);
            }
            (acknowledged, failures)
        }));
    }
    let mut acknowledged = Vec::new();
    let mut failures = Vec::new();
    for task in tasks {
        let (a, f) = task.await.expect("a load task");
        acknowledged.extend(a);
        failures.extend(f);
    }
    (acknowledged, failures)
}

/// Waits until every node's balances read model is at the head and equals the balances
/// computed from the log; returns them.
async fn balances_agree(cluster: &Cluster, nodes: &[usize]) -> BTreeMap<String, i64> {
    let client = client();
    // A node learns of another's commits from a NOTIFY (or its next poll): wait until the
    // node the log is read through knows the highest head any node reports, or its `$all`
    // may end before the last commit.
    let mut head = 0;
    for &index in nodes {
        let health = get(&client, &cluster.nodes[index].base, "/health").await;
        head = head.max(health["head"].as_u64().unwrap_or(0));
    }
    let reader = &cluster.nodes[nodes[0]].base;
    wait_for(&client, reader, "/health", Duration::from_secs(30), |h| {
        h["head"].as_u64() >= Some(head)
    })
    .await;
    let events = all_events(&client, reader).await;
    let expected = balances_from_log(&events);
    for &index in nodes {
        let base = &cluster.nodes[index].base;
        wait_for(
            &client,
            base,
            "/projections/balances",
            Duration::from_secs(60),
            |s| {
                s["position"].as_u64() >= events.last().and_then(|e| e["position"].as_u64())
                    && s["rebuild"].is_null()
            },
        )
        .await;
        for (account, amount) in &expected {
            let answer = balance(&client, base, account).await;
            assert_eq!(
                answer["balance"].as_i64(),
                Some(*amount),
                "node {}: {account}: {answer}",
                index + 1
            );
        }
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_take_concurrent_load_and_a_sigkilled_node_loses_nothing_acknowledged() {
    let mut cluster = Cluster::start(3);
    let client = client();
    let bases: Vec<String> = cluster.nodes.iter().map(|n| n.base.clone()).collect();
    for index in 0..ACCOUNTS {
        open(&client, &bases[index % 3], &account(index), 100).await;
    }
    // Node 2 dies with SIGKILL once a third of the load is acknowledged.
    let victim = cluster.nodes[1].pid();
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = killed.clone();
    let (acknowledged, failures) = load(bases.clone(), 6, 60, move |done| {
        if done >= 120 && !flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &victim.to_string()])
                .status();
        }
    })
    .await;
    assert!(killed.load(std::sync::atomic::Ordering::SeqCst));
    cluster.nodes[1].kill();
    assert!(
        acknowledged.len() >= 200,
        "{} acknowledged",
        acknowledged.len()
    );
    // Only commands that went to the killed node may have failed.
    for failure in &failures {
        assert!(failure.starts_with(&bases[1]), "{failure}");
    }

    // Every acknowledged event is in the log, once, where its reply said.
    let events = all_events(&client, &bases[0]).await;
    let by_id: BTreeMap<&str, &Value> = events
        .iter()
        .map(|e| (e["event_id"].as_str().unwrap(), e))
        .collect();
    assert_eq!(by_id.len(), events.len(), "event ids are unique");
    for reply in &acknowledged {
        for event in reply["events"].as_array().expect("accepted events") {
            let stored = by_id
                .get(event["event_id"].as_str().unwrap())
                .unwrap_or_else(|| panic!("acknowledged but lost: {event}"));
            assert_eq!(stored["position"], event["position"]);
            assert_eq!(stored["stream_version"], event["stream_version"]);
        }
    }
    // Positions gap-free, versions contiguous per stream.
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event["position"].as_u64(), Some(index as u64 + 1));
    }
    let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
    for event in &events {
        let version = versions
            .entry(event["stream_id"].as_str().unwrap())
            .or_default();
        *version += 1;
        assert_eq!(event["stream_version"].as_u64(), Some(*version), "{event}");
    }

    // The survivors' read models equal a clean rebuild; so does the killed node's once it is
    // back (its last batch was cut by the kill: applied exactly once all the same).
    let expected = balances_agree(&cluster, &[0, 2]).await;
    let acknowledged_total = acknowledged.len() as i64;
    let total: i64 = expected.values().sum();
    assert!(
        total >= acknowledged_total,
        "{total} < {acknowledged_total}"
    );
    cluster.restart(1);
    balances_agree(&cluster, &[1]).await;
    let (verified, output) = cluster.verify();
    assert!(verified, "{output}");
    for node in &mut cluster.nodes {
        node.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_every_timeout_writes_no_stale_state_when_it_resumes() {
    let mut cluster = Cluster::start(3);
    let client = client();
    let (one, two) = (cluster.nodes[0].base.clone(), cluster.nodes[1].base.clone());
    open(&client, &two, "account-p", 100).await;
    // Node 2 caches account-p at version 1, balance 100.
    let withdraw = |amount: i64| json!({"type": "Withdraw", "amount": amount});
    let (status, reply) = command(&client, &two, "account-p", &withdraw(10), None)
        .await
        .unwrap();
    assert_eq!((status, reply["stream_version"].as_u64()), (200, Some(2)));

    let paused_at = Instant::now();
    cluster.nodes[1].signal("STOP");
    // The others go on: they take the whole balance while node 2 sleeps.
    let (status, reply) = command(&client, &one, "account-p", &withdraw(90), None)
        .await
        .unwrap();
    assert_eq!(
        (status, reply["stream_version"].as_u64()),
        (200, Some(3)),
        "{reply}"
    );
    // Past the node registry's liveness (5 s) ...
    wait_for(&client, &one, "/nodes", Duration::from_secs(30), |answer| {
        answer["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["address"].as_str().is_some_and(|a| two.ends_with(a)) && n["live"] == false)
    })
    .await;
    // ... and past PostgreSQL's lock and idle-in-transaction timeouts (10 s): a paused node
    // holds nothing the others wait for, and whatever session it had may be ended.
    let past_timeouts = Duration::from_secs(11);
    if let Some(rest) = past_timeouts.checked_sub(paused_at.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let (status, _) = command(
        &client,
        &one,
        "account-q",
        &json!({"type": "Open", "owner": "Q"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "the other nodes serve while node 2 is paused");
    cluster.nodes[1].signal("CONT");

    // Node 2's cache says 90 is left at version 2: deciding on it would accept this withdrawal
    // and write a stale event. The append's expected version refuses the stale decision, the
    // state is rebuilt from the log (balance 0, version 3), and the command is refused.
    let (status, reply) = command(&client, &two, "account-p", &withdraw(50), None)
        .await
        .unwrap();
    assert_eq!(
        status, 422,
        "decided on the log's state, not the stale cache: {reply}"
    );
    assert_eq!(reply["stream_version"].as_u64(), Some(3), "{reply}");
    let (status, reply) = command(
        &client,
        &two,
        "account-p",
        &json!({"type": "Deposit", "amount": 5}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        (status, reply["stream_version"].as_u64()),
        (200, Some(4)),
        "{reply}"
    );
    let stream = get(&client, &one, "/streams/account-p").await;
    let kinds: Vec<&str> = stream["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "AccountOpened",
            "FundsWithdrawn",
            "FundsWithdrawn",
            "FundsDeposited"
        ],
        "no stale write from the resumed node"
    );
    // It is live again, and its read model agrees with the log.
    wait_for(&client, &one, "/nodes", Duration::from_secs(30), |answer| {
        answer["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["live"] == true)
    })
    .await;
    balances_agree(&cluster, &[0, 1, 2]).await;
    let (verified, output) = cluster.verify();
    assert!(verified, "{output}");
    for node in &mut cluster.nodes {
        node.stop();
    }
}

async fn put_plugin(client: &reqwest::Client, base: &str, name: &str, bytes: Vec<u8>) -> Value {
    let response = client
        .put(format!("{base}/plugins/{name}"))
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "PUT {name}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

fn aggregate_hash(plugins: &Value, name: &str) -> Option<String> {
    plugins["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["content_hash"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_through_one_node_under_load_fails_no_command_reaches_every_node_and_survives_a_restart()
 {
    let mut cluster = Cluster::start(3);
    let client = client();
    let bases: Vec<String> = cluster.nodes.iter().map(|n| n.base.clone()).collect();
    for index in 0..ACCOUNTS {
        open(&client, &bases[index % 3], &account(index), 100).await;
    }
    let old_bank = aggregate_hash(&get(&client, &bases[0], "/plugins").await, "bank-account")
        .expect("bank-account");
    let bank_v2 = new_identity(eshost_tests::BANK_ACCOUNT, "bank-v2");
    let balances_v2 = new_identity(eshost_tests::BALANCES, "balances-v2");
    let new_bank = blake3::hash(&bank_v2).to_hex().to_string();
    let new_balances = blake3::hash(&balances_v2).to_hex().to_string();

    let swapper = {
        let (client, base) = (client.clone(), bases[0].clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let bank = put_plugin(&client, &base, "bank-account", bank_v2).await;
            let balances = put_plugin(&client, &base, "balances", balances_v2).await;
            (bank, balances)
        })
    };
    let (acknowledged, failures) = load(bases.clone(), 6, 80, |_| {}).await;
    let (bank, balances) = swapper.await.unwrap();
    assert_eq!(failures, Vec::<String>::new(), "a swap fails no command");
    assert_eq!(acknowledged.len(), 480);
    assert_eq!(
        bank["content_hash"].as_str(),
        Some(new_bank.as_str()),
        "{bank}"
    );
    assert_eq!(
        bank["previous_hash"].as_str(),
        Some(old_bank.as_str()),
        "{bank}"
    );
    assert_eq!(balances["kind"], "projection", "{balances}");

    // Every node runs the new versions: node 3 serves the new balances.
    for base in &bases {
        wait_for(&client, base, "/plugins", Duration::from_secs(30), |p| {
            aggregate_hash(p, "bank-account").as_deref() == Some(&new_bank)
        })
        .await;
        wait_for(
            &client,
            base,
            "/projections/balances",
            Duration::from_secs(60),
            |s| s["active"]["hash"].as_str() == Some(&new_balances) && s["rebuild"].is_null(),
        )
        .await;
    }
    // Each event was decided by one version, and says which.
    let events = all_events(&client, &bases[2]).await;
    let mut by_version = BTreeMap::new();
    for event in events
        .iter()
        .filter(|e| e["event_type"] == "FundsDeposited")
    {
        let hash = event["metadata"]["plugin_hash"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(hash == old_bank || hash == new_bank, "{event}");
        *by_version.entry(hash).or_insert(0) += 1;
    }
    open(&client, &bases[2], "account-after", 1).await;
    let stream = get(&client, &bases[1], "/streams/account-after").await;
    assert_eq!(
        stream["events"][0]["metadata"]["plugin_hash"].as_str(),
        Some(new_bank.as_str()),
        "a command after the swap is decided by the new version on every node"
    );
    balances_agree(&cluster, &[0, 1, 2]).await;

    // The history, from any node.
    let history = get(&client, &bases[2], "/plugins/bank-account/history").await;
    let activations = history["activations"].as_array().unwrap();
    let last = activations.last().unwrap();
    assert_eq!(last["source"], "upload", "{history}");
    assert_eq!(last["content_hash"].as_str(), Some(new_bank.as_str()));
    assert_eq!(last["previous_hash"].as_str(), Some(old_bank.as_str()));
    assert_eq!(
        activations
            .iter()
            .filter(|a| a["source"] == "config")
            .count(),
        3,
        "each node recorded the version its config named: {history}"
    );

    // A restart keeps the uploaded versions (the config did not change).
    cluster.nodes[1].stop();
    cluster.restart(1);
    let restarted = &cluster.nodes[1].base;
    assert_eq!(
        aggregate_hash(&get(&client, restarted, "/plugins").await, "bank-account").as_deref(),
        Some(new_bank.as_str())
    );
    wait_for(
        &client,
        restarted,
        "/projections/balances",
        Duration::from_secs(60),
        |s| s["active"]["hash"].as_str() == Some(&new_balances) && s["rebuild"].is_null(),
    )
    .await;

    // A rollback through node 3 reaches node 1.
    let response = client
        .post(format!("{}/plugins/bank-account/rollback", bases[2]))
        .json(&json!({"content_hash": old_bank, "reason": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    wait_for(
        &client,
        &bases[0],
        "/plugins",
        Duration::from_secs(30),
        |p| aggregate_hash(p, "bank-account").as_deref() == Some(&old_bank),
    )
    .await;
    let history = get(&client, &bases[0], "/plugins/bank-account/history").await;
    assert_eq!(
        history["activations"].as_array().unwrap().last().unwrap()["source"],
        "rollback"
    );
    for node in &mut cluster.nodes {
        node.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forget_through_one_node_purges_every_node_and_a_node_that_was_down_when_back() {
    let mut cluster = Cluster::start(3);
    let client = client();
    let bases: Vec<String> = cluster.nodes.iter().map(|n| n.base.clone()).collect();
    let register = json!({"type": "Register", "name": "Ann Lee", "email": "ann@example.com"});
    let response = client
        .post(format!("{}/aggregates/customer/customer-1", bases[0]))
        .json(&register)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let named = |answer: &Value| answer.to_string().contains("Ann Lee");
    for base in &bases {
        wait_for(
            &client,
            base,
            "/projections/customers/query/get?id=customer-1",
            Duration::from_secs(30),
            named,
        )
        .await;
    }
    // Node 3 is down during the erasure.
    cluster.nodes[2].stop();
    wait_for(
        &client,
        &bases[0],
        "/nodes",
        Duration::from_secs(30),
        |answer| {
            answer["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["live"] == true)
                .count()
                == 2
        },
    )
    .await;
    let response = client
        .post(format!("{}/subjects/customer-1/forget", bases[0]))
        .json(&json!({"reason": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let report: Value = response.json().await.unwrap();
    let states: Vec<(&str, &str)> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["address"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states.len(), 3, "{report}");
    for (base, expected) in bases.iter().zip(["done", "done", "not_live"]) {
        assert!(
            states
                .iter()
                .any(|(address, state)| base.ends_with(address) && *state == expected),
            "{base} {expected}: {report}"
        );
    }
    // Node 2 purged before the answer: its read model no longer holds the name.
    let answer = get(
        &client,
        &bases[1],
        "/projections/customers/query/get?id=customer-1",
    )
    .await;
    assert!(
        !named(&answer),
        "node 2 still shows the forgotten name: {answer}"
    );
    let state = get(&client, &bases[1], "/aggregates/customer/customer-1").await;
    assert!(!state.to_string().contains("Ann Lee"), "{state}");
    // Node 3 purges when it is back.
    cluster.restart(2);
    let back = cluster.nodes[2].base.clone();
    wait_for(
        &client,
        &back,
        "/projections/customers/query/get?id=customer-1",
        Duration::from_secs(60),
        |a| !named(a),
    )
    .await;
    wait_for(
        &client,
        &bases[0],
        "/nodes",
        Duration::from_secs(30),
        |answer| {
            let position = report["erasure_position"].as_u64().unwrap();
            answer["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["live"] == true)
                .all(|n| n["erasures_purged"].as_u64() >= Some(position))
        },
    )
    .await;
    for node in &mut cluster.nodes {
        node.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_retry_through_another_node_returns_the_first_reply() {
    let mut cluster = Cluster::start(2);
    let client = client();
    let (one, two) = (cluster.nodes[0].base.clone(), cluster.nodes[1].base.clone());
    let open_body = json!({"type": "Open", "owner": "Kim", "initial_deposit": 100});
    let (status, first) = command(&client, &one, "account-k", &open_body, Some("open-k"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{first}");
    let (status, again) = command(&client, &two, "account-k", &open_body, Some("open-k"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{again}");
    let mut expected = first.clone();
    expected["replayed"] = json!(true);
    assert_eq!(
        again, expected,
        "an accepted command's first reply, through another node"
    );

    let too_much = json!({"type": "Withdraw", "amount": 500});
    let (status, refused) = command(&client, &one, "account-k", &too_much, Some("withdraw-k"))
        .await
        .unwrap();
    assert_eq!(status, 422, "{refused}");
    // The state now allows it; a retry of the key through the other node must still get the
    // first reply, not a second decision.
    let deposit = json!({"type": "Deposit", "amount": 1000});
    let (status, _) = command(&client, &two, "account-k", &deposit, None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, retried) = command(&client, &two, "account-k", &too_much, Some("withdraw-k"))
        .await
        .unwrap();
    assert_eq!(status, 422, "the first reply, a refusal: {retried}");
    assert_eq!(retried["message"], refused["message"]);
    assert_eq!(retried["command_id"], refused["command_id"]);
    assert_eq!(retried["stream_version"], refused["stream_version"]);
    let stream = get(&client, &one, "/streams/account-k").await;
    assert_eq!(stream["events"].as_array().unwrap().len(), 2, "{stream}");
    for node in &mut cluster.nodes {
        node.stop();
    }
}
