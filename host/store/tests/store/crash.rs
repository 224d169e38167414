//! Crash safety: a child process appends under load and reports each acknowledged event; the
//! parent kills it with SIGKILL at an arbitrary moment, reopens the store, and checks that
//! every acknowledged event is there and the hash chain verifies. Several cycles, one store.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eshost_store::{
    AllRead, AppendRequest, EventStore, ExpectedVersion, ProposedEvent, Store, StoreConfig,
};
use uuid::Uuid;

const CHILD_ENV: &str = "ESHOST_CRASH_CHILD_STORE";

/// A small index flush threshold, so that kills land before, during and after index flushes.
fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        index_flush_events: 300,
        ..StoreConfig::new(dir)
    }
}

/// Runs only as the child of `acknowledged_events_survive_sigkill`: appends until killed,
/// printing `ack <event id>` for every event the store acknowledged.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::open(config(dir.as_ref())).expect("child opens the store");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let (acks, mut printed) = tokio::sync::mpsc::unbounded_channel::<Vec<Uuid>>();
        for appender in 0..16 {
            let store = store.clone();
            let acks = acks.clone();
            tokio::spawn(async move {
                for n in 0u64.. {
                    let count = 1 + (n % 3) as usize;
                    let events: Vec<_> = (0..count)
                        .map(|i| {
                            ProposedEvent::new(
                                "Tick",
                                format!(r#"{{"appender":{appender},"n":{n},"i":{i}}}"#),
                            )
                        })
                        .collect();
                    let ids = events.iter().map(|e| e.event_id).collect();
                    let stream = format!("stream-{}", (appender + n) % 7);
                    store
                        .append(AppendRequest::new(stream, ExpectedVersion::Any, events))
                        .await
                        .expect("append");
                    if acks.send(ids).is_err() {
                        return;
                    }
                }
            });
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready").unwrap();
        while let Some(ids) = printed.recv().await {
            for id in ids {
                writeln!(out, "ack {id}").unwrap();
            }
            out.flush().unwrap();
        }
    });
}

#[test]
fn acknowledged_events_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = HashSet::new();
    for cycle in 0..4 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        // Kill at a moment that differs per cycle, after the child has acknowledged some events.
        let kill_after = Duration::from_millis(300 + 170 * cycle);
        let mut started = None;
        let mut acked_this_cycle = 0;
        for line in stdout.lines() {
            let line = line.unwrap();
            // libtest prints "test crash_child ... " on the same line first.
            if line.ends_with("ready") {
                started = Some(Instant::now());
            } else if let Some(id) = line.strip_prefix("ack ") {
                acknowledged.insert(Uuid::parse_str(id).unwrap());
                acked_this_cycle += 1;
            }
            if started.is_some_and(|at| at.elapsed() >= kill_after) && acked_this_cycle > 0 {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            acked_this_cycle > 0,
            "cycle {cycle}: the child acknowledged nothing"
        );

        let store = Store::open(config(dir.path())).expect("reopen after SIGKILL");
        let stored: Vec<_> = store.read_all(&AllRead::from(1)).unwrap();
        assert_eq!(stored.len() as u64, store.head());
        let stored_ids: HashSet<_> = stored.iter().map(|event| event.event_id).collect();
        assert_eq!(stored_ids.len(), stored.len(), "no event is stored twice");
        let missing = acknowledged.difference(&stored_ids).count();
        assert_eq!(
            missing, 0,
            "cycle {cycle}: {missing} acknowledged events were lost"
        );
        let report = store.verify().unwrap();
        assert!(report.is_ok(), "cycle {cycle}: {report}");
    }
}
