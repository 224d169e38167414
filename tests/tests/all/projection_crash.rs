//! Exactly-once effects: a child process runs the `balances` projection and is killed with
//! SIGKILL mid-way, several times; after each restart it goes on from its checkpoint. At the
//! end the read model equals a from-scratch replay of the whole history, key by key: no batch
//! was applied twice or lost.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::projection_support::{WAIT, open_store, runtime};
use eshost_core::projection::{ProjectionConfig, Projections, UpcasterChain, replay};
use eshost_core::views::Views;
use eshost_store::{AppendRequest, EventStore, ExpectedVersion, ProposedEvent};
use eshost_tests::BALANCES;

const CHILD_ENV: &str = "ESHOST_PROJECTION_CRASH_CHILD_STORE";

fn config() -> ProjectionConfig {
    let mut config = ProjectionConfig::new("balances", BALANCES);
    config.batch = 50;
    config
}

/// Runs only as the child of `the_read_model_survives_sigkill_exactly_once`: projects until
/// killed, printing its position as it goes.
#[test]
fn projection_crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let store = open_store(&dir);
    let views = Views::open(&dir).unwrap();
    let projections = Projections::new(Arc::new(store.clone()), views, runtime());
    projections.add(config()).unwrap();
    println!("ready");
    loop {
        let status = projections.status("balances").unwrap();
        println!("position {}", status.position);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Accounts with an opening, deposits and withdrawals, some in EUR.
fn bank_history(store: &eshost_store::Store, accounts: usize, per_account: usize) {
    for account in 0..accounts {
        let currency = if account % 5 == 0 { "EUR" } else { "USD" };
        let mut events = vec![ProposedEvent::new(
            "AccountOpened",
            format!(
                r#"{{"initial_deposit":{},"currency":"{currency}"}}"#,
                account * 10
            ),
        )];
        for n in 1..per_account {
            events.push(if n % 3 == 0 {
                ProposedEvent::new("FundsWithdrawn", format!(r#"{{"amount":{n}}}"#))
            } else {
                ProposedEvent::new(
                    "FundsDeposited",
                    format!(r#"{{"amount":{},"currency":"{currency}"}}"#, n * 7),
                )
                .with_schema_version(2)
            });
        }
        store
            .append_blocking(AppendRequest::new(
                format!("account-{account}"),
                ExpectedVersion::NoStream,
                events,
            ))
            .unwrap();
    }
}

#[test]
fn the_read_model_survives_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let head = {
        let store = open_store(dir.path());
        bank_history(&store, 400, 100);
        store.head()
    };
    assert_eq!(head, 40_000);

    let mut last_killed_at = 0;
    for cycle in 0..3u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "projection_crash::projection_crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let kill_at = head * (cycle + 1) / 4;
        let mut position = 0;
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(p) = line.rsplit("position ").next().and_then(|p| p.parse().ok()) {
                position = p;
                if position >= kill_at {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            position >= last_killed_at,
            "cycle {cycle}: restarted behind its last commit ({position} < {last_killed_at})"
        );
        assert!(
            position < head,
            "cycle {cycle}: killed after it had finished"
        );
        last_killed_at = position.min(kill_at);
    }

    // Finish in this process, then compare with a replay from scratch.
    let store = open_store(dir.path());
    {
        let views = Views::open(dir.path()).unwrap();
        let projections = Projections::new(Arc::new(store.clone()), views, runtime());
        projections.add(config()).unwrap();
        let status = projections.wait_caught_up("balances", WAIT).unwrap();
        assert_eq!(status.position, head, "{status:?}");
        projections.shutdown();
    }
    let plugin = runtime().load_projection(BALANCES).unwrap();
    let upcasters = UpcasterChain::empty();
    let (model, handled) =
        replay::replay_into_memory(&store, &plugin, 1000, &upcasters, |_| {}).unwrap();
    assert_eq!(handled, head);
    let diff = replay::diff(dir.path(), "balances", &model, 5).unwrap();
    assert_eq!(diff.live_position, head);
    assert_eq!(
        (diff.added, diff.removed, diff.changed),
        (0, 0, 0),
        "the live read model differs from a rebuild: {diff:?}"
    );
    assert_eq!(diff.same, model.entries.len() as u64);
    assert!(diff.same > 400);
}
