//! Issue 12, item 3, through the whole host: the bank (an aggregate with snapshots, an
//! upcaster, two projections) serves keyed commands from concurrent clients while the power is
//! cut at a random write or sync of `events.redb`, the write-ahead log, the key file or
//! `views.redb` (`eshost_store_tests::powercut`). Each file is then rebuilt as a disk could
//! have left it and the host starts again on them. After every start: the log verifies, no
//! acknowledged command is lost, a resent key gets its first answer back, and each read model,
//! once caught up, equals a rebuild from the log. The store-level test
//! (`host/store-tests/tests/store/powercut.rs`) runs thousands of cuts; this one runs fewer,
//! each a host start.
//!
//! `ESHOST_POWERCUT_HOST_CYCLES` (default 200) sets the number of cuts, `ESHOST_POWERCUT_SEED`
//! the seed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eshost_core::aggregate::{CommandOptions, Decision};
use eshost_core::config::Config;
use eshost_core::host::Host;
use eshost_core::projection::{ProjectionState, replay};
use eshost_store::tap::WriteTap;
use eshost_store_tests::powercut::{
    PowerCut, Rng, Survivors, scratch_dir, scratch_root, seed_from_env,
};
use eshost_tests::{BALANCES, STATEMENT};

use crate::projection_support::runtime;
use crate::server_support::bank_config;

const CLIENTS: usize = 4;
const COMMANDS_PER_CLIENT: u64 = 150;
const WAIT: Duration = Duration::from_secs(60);
/// A fresh store every this many cycles, so that each check replays a bounded log.
const CYCLES_PER_STORE: u64 = 50;

/// An accepted command, acknowledged.
#[derive(Debug, Clone)]
struct Acked {
    account: String,
    key: String,
    command: String,
    version: u64,
}

#[test]
fn read_models_equal_a_rebuild_after_simulated_power_cuts() {
    let cycles: u64 = env_number("ESHOST_POWERCUT_HOST_CYCLES").unwrap_or(200);
    let seed = seed_from_env();
    println!("host power cuts: {cycles} cycles, ESHOST_POWERCUT_SEED={seed}");
    let mut rng = Rng::new(seed);
    let mut scratch = scratch_dir();
    let mut config = bank_config(scratch.path(), "");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut acked: Vec<Acked> = Vec::new();
    let (mut checked, mut cut_while_starting, mut total_acked) = (0, 0, 0);
    for cycle in 0..cycles {
        if cycle > 0 && cycle % CYCLES_PER_STORE == 0 {
            let host = tokio
                .block_on(async { start(&config, None) })
                .expect("a start after the last cut");
            let host = Arc::new(host);
            let cut = PowerCut::new(u64::MAX);
            assert!(tokio.block_on(check(&host, &acked, &cut, "after a store's last cut")));
            Arc::into_inner(host).unwrap().shutdown();
            scratch = scratch_dir();
            config = bank_config(scratch.path(), "");
            total_acked += acked.len();
            acked.clear();
        }
        let context = format!("cycle {cycle} (ESHOST_POWERCUT_SEED={seed})");
        let cut = PowerCut::new(1 + rng.below(1500));
        let tap = Some(cut.clone() as Arc<dyn WriteTap>);
        match tokio.block_on(async { start(&config, tap) }) {
            Ok(host) => {
                let host = Arc::new(host);
                if tokio.block_on(check(&host, &acked, &cut, &context)) {
                    checked += 1;
                }
                let done = Arc::new(Mutex::new(Vec::new()));
                tokio.block_on(clients(&host, cycle, &done));
                acked.extend(done.lock().unwrap().drain(..));
                cut.cut_now();
                Arc::into_inner(host)
                    .expect("the clients let go of the host")
                    .shutdown();
            }
            Err(error) => {
                assert!(
                    cut.is_cut(),
                    "{context}: the host failed to start before any cut: {error:#}"
                );
                cut_while_starting += 1;
            }
        }
        let survivors = match rng.below(4) {
            0 => Survivors::None,
            1 => Survivors::All,
            _ => Survivors::Random,
        };
        cut.crash(survivors, &mut rng).unwrap();
        keep_image(scratch.path(), cycle);
    }
    let host = tokio
        .block_on(async { start(&config, None) })
        .expect("the last start");
    let host = Arc::new(host);
    let cut = PowerCut::new(u64::MAX);
    assert!(
        tokio.block_on(check(&host, &acked, &cut, "after the last cut")),
        "the final check ran to its end"
    );
    println!(
        "host power cuts: {cycles} cuts ({cut_while_starting} while the host started), {} \
         starts checked, {} acknowledged commands",
        checked + 1,
        total_acked + acked.len()
    );
    Arc::into_inner(host).unwrap().shutdown();
    let _ = std::fs::remove_dir_all(keep_dir());
}

/// Where the files as the last cut left them are copied (replacing the previous cut's), so
/// that a failing check can be taken apart: `ESHOST_POWERCUT_KEEP`, or beside the scratch
/// directory.
fn keep_dir() -> std::path::PathBuf {
    match std::env::var("ESHOST_POWERCUT_KEEP") {
        Ok(dir) => dir.into(),
        Err(_) => scratch_root().join(format!("eshost-powercut-last-{}", std::process::id())),
    }
}

fn keep_image(scratch: &Path, cycle: u64) {
    let keep = keep_dir();
    let keep = keep.as_path();
    let _ = std::fs::remove_dir_all(keep);
    std::fs::create_dir_all(keep).unwrap();
    for entry in std::fs::read_dir(scratch.join("data")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), keep.join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(keep.join("cycle"), cycle.to_string()).unwrap();
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

/// Start the host; the previous one's threads may still hold the files' locks for a moment
/// after its shutdown, so a lock is waited out (bounded).
fn start(config: &Config, tap: eshost_store::tap::Tap) -> anyhow::Result<Host> {
    let deadline = Instant::now() + WAIT;
    loop {
        match Host::start_tapped(config, tap.clone()) {
            Err(error) if is_locked(&error) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn is_locked(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<eshost_store::OpenError>(),
            Some(eshost_store::OpenError::Locked { .. })
        ) || cause.to_string().contains("locked")
    })
}

/// Clients sending keyed commands to accounts of their own until the power fails or they are
/// done; the accepted ones they were told of go to `done`.
async fn clients(host: &Arc<Host>, cycle: u64, done: &Arc<Mutex<Vec<Acked>>>) {
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let host = host.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..COMMANDS_PER_CLIENT {
                let account = format!("acct-{cycle}-{client}-{}", n / 10);
                let command = match n % 10 {
                    0 => format!(r#"{{"type":"Open","owner":"o{client}"}}"#),
                    k if k % 3 == 0 => r#"{"type":"Withdraw","amount":7}"#.to_owned(),
                    k => format!(r#"{{"type":"Deposit","amount":{}}}"#, 10 * k),
                };
                let key = format!("k-{cycle}-{client}-{n}");
                let options = CommandOptions {
                    idempotency_key: Some(key.clone()),
                    ..CommandOptions::default()
                };
                let Ok(reply) = host
                    .aggregates()
                    .execute("bank-account", &account, &command, options)
                    .await
                else {
                    return;
                };
                if matches!(reply.decision, Decision::Accepted { .. }) {
                    done.lock().unwrap().push(Acked {
                        account,
                        key,
                        command,
                        version: reply.stream_version,
                    });
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// What a started host must show. False when the power failed before the check could finish
/// (the projections cannot catch up then).
async fn check(host: &Host, acked: &[Acked], cut: &PowerCut, context: &str) -> bool {
    let store = host.store().clone();
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{context}: {report}");
    let mut versions: HashMap<&str, u64> = HashMap::new();
    for command in acked {
        let version = versions.entry(&command.account).or_insert(0);
        *version = (*version).max(command.version);
    }
    for (account, version) in &versions {
        let stored = store
            .stream_info(account)
            .unwrap()
            .map_or(0, |info| info.version);
        assert!(
            stored >= *version,
            "{context}: {account} is at version {stored}, but version {version} was acknowledged"
        );
    }
    // A resent key gets its first answer, whatever the cut did to views.redb.
    for command in acked.iter().rev().take(6) {
        let options = CommandOptions {
            idempotency_key: Some(command.key.clone()),
            ..CommandOptions::default()
        };
        match host
            .aggregates()
            .execute("bank-account", &command.account, &command.command, options)
            .await
        {
            Ok(reply) => {
                assert!(
                    reply.replayed,
                    "{context}: {} was decided again",
                    command.key
                );
                assert!(
                    matches!(reply.decision, Decision::Accepted { .. })
                        && reply.stream_version == command.version,
                    "{context}: {} got {reply:?}, first answered at version {}",
                    command.key,
                    command.version
                );
            }
            Err(_) if cut.is_cut() => return false,
            Err(error) => panic!("{context}: resending {}: {error}", command.key),
        }
    }
    for (name, plugin) in [("balances", BALANCES), ("statement", STATEMENT)] {
        // Waited for in short steps: once the power is cut it never will.
        let deadline = Instant::now() + WAIT;
        loop {
            let step = Duration::from_millis(100);
            // `wait_caught_up` answers the last status seen when its time is up: check it.
            let status =
                tokio::task::block_in_place(|| host.projections().wait_caught_up(name, step));
            if status.is_some_and(|status| {
                status.rebuild.is_none()
                    && status.position >= status.head
                    && status.state == ProjectionState::Running
            }) {
                break;
            }
            if cut.is_cut() {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "{context}: {name} did not catch up: {:?}",
                host.projections().status(name)
            );
        }
        let plugin = runtime().load_projection(plugin).unwrap();
        let (model, _) =
            replay::replay_into_memory(store.as_ref(), &plugin, 500, host.upcasters(), |_| {})
                .unwrap();
        let diff = match replay::diff_views(host.views(), name, &model, 3) {
            Ok(diff) => diff,
            // views.redb failed at the cut and cannot be reopened without power.
            Err(_) if cut.is_cut() => return false,
            Err(error) => panic!("{context}: comparing {name}: {error:#}"),
        };
        assert!(
            diff.added == 0 && diff.removed == 0 && diff.changed == 0,
            "{context}: {name} differs from a rebuild: {diff:?}; the store's head is {}, the \
             projection's status {:?}; the files as the cut left them are in {}",
            store.head(),
            host.projections().status(name),
            keep_dir().display()
        );
    }
    true
}
