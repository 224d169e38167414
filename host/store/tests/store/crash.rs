//! Crash safety: a child process appends under load and reports each acknowledged event; the
//! parent kills it with SIGKILL at an arbitrary moment, reopens the store, and checks that
//! every acknowledged event is there and the hash chain verifies. Several cycles, one store,
//! with settings that put the kill at different places in the write pipeline.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eshost_store::{
    AllRead, AppendRequest, EventStore, ExpectedVersion, ProposedEvent, Store, StoreConfig,
};
use uuid::Uuid;

const CHILD_ENV: &str = "ESHOST_CRASH_CHILD_STORE";
const VARIANT_ENV: &str = "ESHOST_CRASH_CHILD_VARIANT";

/// The store settings of each cycle's child.
fn config(dir: &std::path::Path, variant: u64) -> StoreConfig {
    let base = StoreConfig::new(dir);
    match variant % 3 {
        // Checkpoints every 300 events: kills land before, during and after checkpoints and
        // write-ahead log file switches.
        0 => StoreConfig {
            index_flush_events: 300,
            ..base
        },
        // No checkpoint before the kill: every acknowledged event is only in the log's file.
        1 => StoreConfig {
            index_flush_events: 1_000_000,
            ..base
        },
        // Tiny log files: frequent switches, and appends that wait for a checkpoint to free one.
        _ => StoreConfig {
            index_flush_events: 1_000_000,
            wal_bytes: 64 * 1024,
            ..base
        },
    }
}

/// Runs only as the child of `acknowledged_events_survive_sigkill`: appends until killed,
/// printing `ack <event id>` for every event the store acknowledged.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let variant = std::env::var(VARIANT_ENV)
        .ok()
        .and_then(|variant| variant.parse().ok())
        .unwrap_or(0);
    let store = Store::open(config(dir.as_ref(), variant)).expect("child opens the store");
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
    for cycle in 0..6u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(VARIANT_ENV, cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        // Kill at a moment that differs per cycle, after the child has acknowledged some events.
        let kill_after = Duration::from_millis(300 + 110 * cycle);
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

        assert_eq!(
            stored_format(dir.path()),
            2,
            "cycle {cycle}: a killed store is marked open, so that no build without the log \
             opens it and misses the events only the log holds"
        );

        let store = Store::open(config(dir.path(), cycle)).expect("reopen after SIGKILL");
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
        drop(store);
        assert_eq!(
            stored_format(dir.path()),
            1,
            "cycle {cycle}: a cleanly closed store has everything in redb"
        );
    }
}

/// The format version recorded in the store's redb file.
fn stored_format(dir: &std::path::Path) -> u32 {
    const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    let db = redb::Database::open(dir.join(eshost_store::EVENTS_FILE)).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let meta = txn.open_table(META).unwrap();
    let format = meta.get("format").unwrap().expect("a format is recorded");
    u32::from_le_bytes(format.value().try_into().unwrap())
}
