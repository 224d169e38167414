//! A reactor swapped through one node of a cluster: the swap is an activation in `$plugins`,
//! every node runs the new version, a transfer through another node completes under it, and a
//! restarted node keeps it rather than its config's file.

use std::time::Duration;

use serde_json::json;

use crate::cluster_support::{Cluster, client, get, new_identity, open, wait_for};

const WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactor_swapped_through_one_node_runs_on_every_node_and_after_a_restart() {
    let mut cluster = Cluster::start(2);
    let client = client();
    let bases: Vec<String> = cluster.nodes.iter().map(|n| n.base.clone()).collect();
    let before = get(&client, &bases[1], "/reactors/transfer-saga").await["content_hash"].clone();

    let swapped = client
        .put(format!(
            "{}/reactors/transfer-saga?from=checkpoint",
            bases[0]
        ))
        .header("content-type", "application/wasm")
        .body(new_identity(eshost_tests::TRANSFER_SAGA, "saga-v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(swapped.status().as_u16(), 200);
    let status: serde_json::Value = swapped.json().await.unwrap();
    let hash = status["content_hash"].clone();
    assert_ne!(hash, before, "{status}");
    for base in &bases {
        wait_for(&client, base, "/reactors/transfer-saga", WITHIN, |r| {
            r["content_hash"] == hash && r["state"] == "running"
        })
        .await;
    }
    let history = get(&client, &bases[1], "/plugins/transfer-saga/history").await;
    let last = history["activations"].as_array().unwrap().last().unwrap();
    assert_eq!(last["kind"], "reactor", "{history}");
    assert_eq!(last["source"], "upload", "{history}");
    assert_eq!(last["content_hash"], hash, "{history}");
    assert_eq!(last["start"], "checkpoint", "{history}");

    // A transfer requested through the other node completes under the new version.
    open(&client, &bases[1], "acc-r1", 500).await;
    open(&client, &bases[1], "acc-r2", 10).await;
    let requested = client
        .post(format!("{}/aggregates/transfer/t-r1", bases[1]))
        .json(&json!({"type": "Request", "from": "acc-r1", "to": "acc-r2", "amount": 120}))
        .send()
        .await
        .unwrap();
    assert_eq!(requested.status().as_u16(), 200);
    wait_for(
        &client,
        &bases[1],
        "/aggregates/transfer/t-r1",
        WITHIN,
        |t| t["state"]["status"] == "completed",
    )
    .await;

    // A restarted node runs the swapped version, not its config's file.
    cluster.nodes[1].stop();
    cluster.restart(1);
    let base = cluster.nodes[1].base.clone();
    let reactor = get(&client, &base, "/reactors/transfer-saga").await;
    assert_eq!(reactor["content_hash"], hash, "{reactor}");
}
