//! PostgreSQL crashes and restarts under load: appends in flight fail with clear errors (or
//! succeed, when their commit made it), retries with the same event ids succeed once the
//! server is back, and nothing acknowledged is lost. The test runs a cluster of its own
//! (`scripts/postgres.sh`), as restarting the shared one would break the other tests.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eshost_store::keys::KeyEncryptionKey;
use eshost_store::{AllRead, AppendRequest, EventStore, ExpectedVersion, ProposedEvent};
use eshost_store_postgres::{KekSource, PgConfig, PgStore};
use eshost_store_tests::runtime;
use uuid::Uuid;

use super::wait_until;

const APPENDERS: usize = 8;
/// Acknowledged appends to wait for before the restart, and again after it.
const ACKS_AROUND_RESTART: usize = 200;

/// A cluster of this test's own, stopped and removed when dropped.
struct Cluster {
    dir: PathBuf,
    url: String,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = std::env::temp_dir().join(format!("eshost-pg-restart-{}", Uuid::new_v4()));
        let output = script(&["start", dir.to_str().unwrap()]);
        let url = String::from_utf8(output).unwrap().trim().to_owned();
        assert!(
            url.starts_with("postgres://"),
            "scripts/postgres.sh printed {url:?}"
        );
        Cluster { dir, url }
    }

    /// An immediate shutdown (a crash: recovery replays the WAL), then start on the same port.
    fn restart(&self) {
        script(&["restart", self.dir.to_str().unwrap()]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script_path())
            .args(["stop", self.dir.to_str().unwrap()])
            .status();
    }
}

/// The script, found from where cargo runs the test: a binary built in another checkout
/// that shares the target directory (CI's clean clone) carries that checkout's path in
/// `env!`, and cargo need not rebuild it here.
fn script_path() -> PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    package.join("../../scripts/postgres.sh")
}

fn script(args: &[&str]) -> Vec<u8> {
    let output = Command::new(script_path())
        .args(args)
        .output()
        .expect("run scripts/postgres.sh");
    assert!(
        output.status.success(),
        "scripts/postgres.sh {args:?} failed (this test runs a PostgreSQL cluster of its own and needs the server binaries):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[test]
fn postgres_restarted_under_load_loses_nothing_acknowledged() {
    let cluster = Cluster::start();
    let kek = KeyEncryptionKey::generate().unwrap();
    let config = || {
        let mut config = PgConfig::new(&cluster.url, KekSource::Key(kek.clone())).unwrap();
        config.connect_timeout = Duration::from_secs(2);
        config
    };
    let store = PgStore::open(config()).unwrap();
    // A node that only reads: its head moves only by what its listener hears.
    let reader = PgStore::open(config()).unwrap();
    let acked: Arc<Mutex<Vec<(Uuid, u64)>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = runtime();
    let deadline = Instant::now() + Duration::from_secs(180);
    let appenders: Vec<_> = (0..APPENDERS)
        .map(|appender| {
            let (store, acked, errors, stop) =
                (store.clone(), acked.clone(), errors.clone(), stop.clone());
            runtime.spawn(async move {
                for n in 0u64.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    // Retried with the same event id until acknowledged.
                    let event = ProposedEvent::new("Loaded", format!("{n}"));
                    let request = AppendRequest::new(
                        format!("load-{appender}"),
                        ExpectedVersion::Any,
                        vec![event.clone()],
                    );
                    loop {
                        assert!(Instant::now() < deadline, "appends did not recover");
                        match store.append(request.clone()).await {
                            Ok(appended) => {
                                acked
                                    .lock()
                                    .unwrap()
                                    .push((event.event_id, appended.first_position));
                                break;
                            }
                            Err(error) => {
                                errors.lock().unwrap().push(error.to_string());
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }
            })
        })
        .collect();

    let acks = || acked.lock().unwrap().len();
    wait_until(Duration::from_secs(60), "appends are under way", || {
        acks() >= ACKS_AROUND_RESTART
    });
    let started_at = || {
        eshost_store_tests::on_connection(&cluster.url, async |client| {
            let row = client
                .query_one("SELECT pg_postmaster_start_time()::text", &[])
                .await?;
            Ok(row.get::<_, String>(0))
        })
        .unwrap()
    };
    let before = started_at();
    cluster.restart();
    assert_ne!(started_at(), before, "the server restarted");
    let after_restart = acks();
    wait_until(Duration::from_secs(120), "appends recover", || {
        acks() >= after_restart + ACKS_AROUND_RESTART
    });
    stop.store(true, Ordering::SeqCst);
    for appender in appenders {
        runtime.block_on(appender).unwrap();
    }

    // Appends in flight either failed with a clear error and were retried, or the writer
    // rode out the restart (it re-checks a commit whose reply was lost once it reconnects).
    let errors = errors.lock().unwrap().clone();
    for error in &errors {
        assert!(
            error.contains("postgres"),
            "an error that does not say what failed: {error}"
        );
    }
    let acked = acked.lock().unwrap().clone();
    let total = acked.len();
    let all = store.read_all(&AllRead::from(1)).unwrap();
    assert_eq!(
        all.len(),
        total,
        "each acknowledged event stored once, nothing else"
    );
    for (id, position) in &acked {
        assert_eq!(store.event_position(*id).unwrap(), Some(*position));
    }
    let positions: Vec<u64> = all.iter().map(|event| event.position).collect();
    assert_eq!(positions, (1..=total as u64).collect::<Vec<_>>());
    assert!(store.verify().unwrap().is_ok());
    // The reading node's listener reconnected: its head watch follows the log again.
    wait_until(
        Duration::from_secs(30),
        "the reading node's head catches up",
        || reader.head() == total as u64,
    );
}
