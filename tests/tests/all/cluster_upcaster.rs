//! An upcaster swapped through one node of a cluster: every node follows `$plugins`, drops
//! the aggregate states it built through the old chain, rebuilds its read models through the
//! new one, and keeps the new chain after a restart.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster_support::{Cluster, client, command, get, open, wait_for};

const WITHIN: Duration = Duration::from_secs(30);

fn version(plugins: &Value, name: &str) -> Value {
    plugins["plugins"]
        .as_array()
        .and_then(|list| list.iter().find(|p| p["name"] == name))
        .map(|p| p["version"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upcaster_swapped_through_one_node_reaches_every_node_and_its_cached_states() {
    let mut cluster = Cluster::start(2);
    let client = client();
    let bases: Vec<String> = cluster.nodes.iter().map(|n| n.base.clone()).collect();
    // A v1 deposit of 5: 5 cents through the first-party upcaster, 500 through deposit-eur.
    open(&client, &bases[0], "account-u", 1000).await;
    let old = json!({"expected": "any", "events": [
        {"type": "FundsDeposited", "data": {"amount": 5}, "schema_version": 1}
    ]});
    let appended = client
        .post(format!("{}/streams/account-u", bases[0]))
        .json(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status().as_u16(), 201);
    // Node 2 caches the account's state, built through the old chain (balance 1006).
    let deposit = json!({"type": "Deposit", "amount": 1});
    let (status, reply) = command(&client, &bases[1], "account-u", &deposit, None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{reply}");

    let swapped = client
        .put(format!("{}/plugins/deposit-currency", bases[0]))
        .header("content-type", "application/wasm")
        .body(std::fs::read(eshost_tests::DEPOSIT_EUR).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(swapped.status().as_u16(), 200);
    wait_for(&client, &bases[1], "/plugins", WITHIN, |plugins| {
        version(plugins, "deposit-currency") == "2-eur"
    })
    .await;

    // Only a state built through the new chain (1501) allows this withdrawal; node 2's cached
    // one (1006) would refuse it.
    let withdraw = json!({"type": "Withdraw", "amount": 1200});
    let (status, reply) = command(&client, &bases[1], "account-u", &withdraw, None)
        .await
        .unwrap();
    assert_eq!(status, 200, "decided on a state of the old chain: {reply}");
    for base in &bases {
        let path = "/projections/balances/query/balance?account=account-u";
        wait_for(&client, base, path, WITHIN, |row| row["balance"] == 301).await;
    }

    // A restarted node runs the swapped upcaster, not its config's file.
    cluster.nodes[1].stop();
    cluster.restart(1);
    let base = cluster.nodes[1].base.clone();
    let plugins = get(&client, &base, "/plugins").await;
    assert_eq!(version(&plugins, "deposit-currency"), "2-eur", "{plugins}");
    let state = get(&client, &base, "/aggregates/bank-account/account-u").await;
    assert_eq!(state["state"]["balance"], 301, "{state}");
}
