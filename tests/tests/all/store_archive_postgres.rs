//! Issue 19, item 3, on PostgreSQL: `eshost archive` moves a shared store's oldest events into
//! segment rows while a node serves, the node reads the same log and takes commands after
//! it, `verify` chains through the segments, a node with an empty data directory rebuilds
//! its projections from the archive, and a node's `[archive]` schedule archives on its own.
//!
//! They need `ESHOST_TEST_POSTGRES` (see `cluster_support`) and the release `eshost` binary.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster_support::{
    Cluster, all_events, balance, balances_from_log, client, command, open, wait_for,
};
use eshost_tests::cli::{eshost_offline, json as output_json};

const ACCOUNTS: usize = 8;

/// `eshost archive --before BEFORE` on the cluster's store; its JSON answer.
fn archive_verb(cluster: &Cluster, before: &str) -> Value {
    let kek = cluster.dir.path().join("eshost.kek");
    output_json(&eshost_offline(&[
        "archive",
        "--store",
        &cluster.store,
        "--key-encryption-key",
        kek.to_str().unwrap(),
        "--before",
        before,
    ]))
}

async fn deposits(client: &reqwest::Client, node: &str, rounds: i64) {
    for round in 1..=rounds {
        for index in 0..ACCOUNTS {
            let body = json!({"type": "Deposit", "amount": round});
            let account = format!("account-{index}");
            let (status, answer) = command(client, node, &account, &body, None).await.unwrap();
            assert_eq!(status, 200, "{account}: {answer}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_verb_runs_beside_a_live_node_and_its_schedule_archives_too() {
    let mut cluster = Cluster::start(1);
    let client = client();
    let node = cluster.nodes[0].base.clone();
    for index in 0..ACCOUNTS {
        open(&client, &node, &format!("account-{index}"), 100).await;
    }
    deposits(&client, &node, 4).await;
    let before = all_events(&client, &node).await;
    let head = before.len() as u64;

    let archived = tokio::task::block_in_place(|| archive_verb(&cluster, &(head + 1).to_string()));
    assert_eq!(archived["archived_events"], head, "{archived}");
    assert_eq!(archived["archived_through"], head, "{archived}");
    let file = archived["segments"][0]["file"].as_str().unwrap();
    assert!(
        file.starts_with("postgres:") && file.ends_with(&format!("/1-{head}")),
        "{file}"
    );
    assert!(archived["archive_bytes"].as_u64() > Some(0), "{archived}");

    // The live node reads the same log, and its commands go on after the archived versions.
    assert_eq!(all_events(&client, &node).await, before);
    deposits(&client, &node, 1).await;
    let (ok, report) = tokio::task::block_in_place(|| cluster.verify());
    assert!(ok, "{report}");
    assert!(
        report.contains(&format!("ok: {} events", head + ACCOUNTS as u64)),
        "{report}"
    );

    // A node with an empty data directory rebuilds its read models from the archive; with
    // `[archive]` on, it archives what is older than zero days by itself.
    tokio::task::block_in_place(|| cluster.nodes[0].stop());
    std::fs::remove_dir_all(cluster.dir.path().join("node1")).unwrap();
    let config = &cluster.nodes[0].config;
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str("\n[archive]\nafter_days = 0\nevery_secs = 1\n");
    std::fs::write(config, text).unwrap();
    tokio::task::block_in_place(|| cluster.restart(0));
    let node = cluster.nodes[0].base.clone();
    let events = all_events(&client, &node).await;
    let last = events.last().unwrap()["position"].as_u64();
    wait_for(
        &client,
        &node,
        "/projections/balances",
        Duration::from_secs(60),
        |status| status["position"].as_u64() >= last && status["rebuild"].is_null(),
    )
    .await;
    for (account, amount) in balances_from_log(&events) {
        let answer = balance(&client, &node, &account).await;
        assert_eq!(
            answer["balance"].as_i64(),
            Some(amount),
            "{account}: {answer}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // A cut at position 1 moves nothing and says how far the archive reaches.
        let reach = tokio::task::block_in_place(|| archive_verb(&cluster, "1"));
        if reach["archived_through"].as_u64() == last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the schedule did not archive: {reach}\n{}",
            cluster.log(0)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(all_events(&client, &node).await, events);
    let (ok, report) = tokio::task::block_in_place(|| cluster.verify());
    assert!(ok, "{report}");
}
