//! Several eshost processes appending to one database at once, with exact expected versions
//! and with `any` on the same streams. Each child process prints every event the store
//! acknowledged; the parent checks the log holds each once, where it was acknowledged,
//! with versions contiguous, positions gap-free and the chain intact.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use eshost_store::keys::KeyEncryptionKey;
use eshost_store::{
    AllRead, AppendError, AppendRequest, EventStore, ExpectedVersion, ProposedEvent,
};
use eshost_store_postgres::{KekSource, PgConfig, PgStore};
use eshost_store_tests::{PgPlace, runtime};
use uuid::Uuid;

const CHILD_SCHEMA: &str = "ESHOST_PG_CHILD_SCHEMA";
const CHILD_KEK: &str = "ESHOST_PG_CHILD_KEK";
const STREAMS: [&str; 3] = ["shared-0", "shared-1", "shared-2"];
const PROCESSES: usize = 3;
const TASKS: usize = 8;
const ACKS_PER_TASK: usize = 15;

/// Runs only as a child of `appenders_in_several_processes_lose_nothing`: appends from eight
/// tasks (half with exact versions, half with `any`) and prints `ack ID STREAM VERSION
/// POSITION` for every acknowledged event.
#[test]
fn child_appender() {
    let (Ok(schema), Ok(kek)) = (std::env::var(CHILD_SCHEMA), std::env::var(CHILD_KEK)) else {
        return;
    };
    let url = format!("{}?schema={schema}", eshost_store_tests::server_url());
    let kek = KeyEncryptionKey::from_hex(&kek).expect("the parent's key");
    let store = PgStore::open(PgConfig::new(&url, KekSource::Key(kek)).unwrap()).unwrap();
    let lines = runtime().block_on(async move {
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut lines = Vec::new();
                    let mut acks = 0;
                    for attempt in 0usize..10_000 {
                        if acks == ACKS_PER_TASK {
                            break;
                        }
                        let stream = STREAMS[(task + attempt) % STREAMS.len()];
                        let expected = if task % 2 == 0 {
                            let version = store
                                .stream_info(stream)
                                .unwrap()
                                .map_or(0, |info| info.version);
                            ExpectedVersion::Exact(version)
                        } else {
                            ExpectedVersion::Any
                        };
                        let event = ProposedEvent::new("Appended", format!("{task}"));
                        let id = event.event_id;
                        match store
                            .append(AppendRequest::new(stream, expected, vec![event]))
                            .await
                        {
                            Ok(appended) => {
                                acks += 1;
                                lines.push(format!(
                                    "ack {id} {stream} {} {}",
                                    appended.stream_version, appended.first_position
                                ));
                            }
                            Err(AppendError::Conflict { .. }) => {}
                            Err(other) => panic!("child append failed: {other}"),
                        }
                    }
                    assert_eq!(acks, ACKS_PER_TASK, "the task kept conflicting");
                    lines
                })
            })
            .collect();
        let mut lines = Vec::new();
        for task in tasks {
            lines.extend(task.await.unwrap());
        }
        lines
    });
    let mut out = std::io::stdout().lock();
    // The test harness prints `test NAME ... ` before this, without a line break.
    writeln!(out).unwrap();
    for line in lines {
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();
}

#[test]
fn appenders_in_several_processes_lose_nothing_and_keep_the_chain() {
    let place = PgPlace::new();
    // Create the tables before the children race to.
    drop(place.open());
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "postgres::processes::child_appender",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_SCHEMA, &place.schema)
                .env(CHILD_KEK, place.kek.to_hex())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Read each child's output as it comes (a full pipe would stall it).
    let (outputs, finished) = std::sync::mpsc::channel();
    for child in children {
        let outputs = outputs.clone();
        std::thread::spawn(move || outputs.send(child.wait_with_output().unwrap()));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut acks: Vec<(Uuid, String, u64, u64)> = Vec::new();
    for _ in 0..PROCESSES {
        let left = deadline.saturating_duration_since(Instant::now());
        let output = finished
            .recv_timeout(left)
            .expect("a child appender did not finish within 300 s");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "a child failed:\n{text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for line in text.lines().filter_map(|line| line.strip_prefix("ack ")) {
            let fields: Vec<&str> = line.split(' ').collect();
            acks.push((
                fields[0].parse().unwrap(),
                fields[1].to_owned(),
                fields[2].parse().unwrap(),
                fields[3].parse().unwrap(),
            ));
        }
    }
    let total = PROCESSES * TASKS * ACKS_PER_TASK;
    assert_eq!(
        acks.len(),
        total,
        "every child printed every acknowledgement"
    );

    let store = place.open();
    let all = store.read_all(&AllRead::from(1)).unwrap();
    assert_eq!(
        all.len(),
        total,
        "exactly the acknowledged events are stored"
    );
    let positions: Vec<u64> = all.iter().map(|event| event.position).collect();
    assert_eq!(
        positions,
        (1..=total as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    let stored: HashMap<Uuid, _> = all.iter().map(|event| (event.event_id, event)).collect();
    assert_eq!(stored.len(), total, "each event once");
    for (id, stream, version, position) in &acks {
        let event = stored[id];
        assert_eq!(
            (&event.stream_id, event.stream_version, event.position),
            (stream, *version, *position),
            "stored where it was acknowledged"
        );
    }
    let won: HashSet<(&String, u64)> = acks.iter().map(|(_, s, v, _)| (s, *v)).collect();
    assert_eq!(won.len(), total, "each stream version was won once");
    for stream in STREAMS {
        let versions: Vec<u64> = all
            .iter()
            .filter(|event| event.stream_id == stream)
            .map(|event| event.stream_version)
            .collect();
        assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    }
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{report}");
}
