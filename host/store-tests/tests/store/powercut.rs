//! Power cuts, simulated (`eshost_store_tests::powercut`): concurrent appenders, personal data
//! and forgetting on the embedded store, the power cut at a random write or sync (during
//! appends, checkpoints, log switches, or the recovery of the previous cut), then each file
//! rebuilt as a disk could have left it. Every time the store opens again: every acknowledged
//! event is at its position, the hash chain verifies, nothing is stored twice, and the key file
//! still reveals every acknowledged personal datum (or shreds it, once its forgetting was
//! acknowledged).
//!
//! `ESHOST_POWERCUT_CYCLES` (default 600) sets the number of cuts, `ESHOST_POWERCUT_SEED` the
//! seed (printed, so that a failure is repeated exactly).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eshost_store::{
    AllRead, AppendRequest, EventStore, ExpectedVersion, ProposedEvent, Store, StoreConfig,
};
use eshost_store_tests::powercut::{PowerCut, Rng, Survivors, scratch_dir, seed_from_env};
use uuid::Uuid;

const APPENDERS: usize = 6;
/// At most this many appends per appender and cycle; the cut usually comes first.
const APPENDS_PER_CYCLE: u64 = 120;
/// A fresh store every this many cycles, so that each check reads a bounded log.
const CYCLES_PER_STORE: u64 = 40;

/// An acknowledged event.
#[derive(Debug, Clone)]
struct Acked {
    position: u64,
    stream: String,
    personal: Option<(String, String)>,
}

/// What the store acknowledged, across cuts.
#[derive(Debug, Default)]
struct Model {
    events: HashMap<Uuid, Acked>,
    /// Subjects whose forgetting was acknowledged.
    forgotten: HashSet<String>,
    /// Subjects whose forgetting was asked (it may or may not have happened).
    forgetting: HashSet<String>,
}

fn config(dir: &Path, variant: u64, tap: Option<Arc<PowerCut>>) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.cache_bytes = 4 * 1024 * 1024;
    // Checkpoints every few batches, now and then; log files that switch often.
    config.index_flush_events = [6, 40, 1_000_000][(variant % 3) as usize];
    config.wal_bytes = [64 * 1024, 256 * 1024][(variant / 3 % 2) as usize];
    config.tap = tap.map(|tap| tap as Arc<dyn eshost_store::tap::WriteTap>);
    config
}

#[test]
fn every_acknowledged_event_survives_simulated_power_cuts() {
    let cycles: u64 = std::env::var("ESHOST_POWERCUT_CYCLES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(600);
    let seed = seed_from_env();
    println!("power cuts: {cycles} cycles, ESHOST_POWERCUT_SEED={seed}");
    let mut rng = Rng::new(seed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut dir = scratch_dir();
    let mut model = Model::default();
    let mut totals = Totals::default();
    for cycle in 0..cycles {
        if cycle % CYCLES_PER_STORE == 0 {
            dir = scratch_dir();
            model = Model::default();
        }
        let context = format!("cycle {cycle} (ESHOST_POWERCUT_SEED={seed})");
        let variant = rng.below(6);
        // A quarter of the cuts among the first writes: while the store opens and recovers.
        let cut_at = if rng.below(4) == 0 { 60 } else { 700 };
        let cut = PowerCut::new(1 + rng.below(cut_at));
        match Store::open(config(dir.path(), variant, Some(cut.clone()))) {
            Ok(store) => {
                check(&store, &model, &context);
                totals.checked += 1;
                let shared = Arc::new(Mutex::new(std::mem::take(&mut model)));
                runtime.block_on(workload(&store, cycle, &shared));
                model = Arc::into_inner(shared).unwrap().into_inner().unwrap();
                // The power fails now if it has not yet: a clean close would sync everything.
                cut.cut_now();
                drop(store);
            }
            Err(error) => {
                assert!(
                    cut.is_cut(),
                    "{context}: the store failed to open before any cut: {error}"
                );
                totals.cut_while_opening += 1;
            }
        }
        let survivors = match rng.below(4) {
            0 => Survivors::None,
            1 => Survivors::All,
            _ => Survivors::Random,
        };
        totals.operations += cut.operations();
        cut.crash(survivors, &mut rng).unwrap();
        totals.cuts += 1;
    }
    let store = Store::open(config(dir.path(), 0, None)).expect("the last reopen");
    check(&store, &model, "after the last cut");
    println!(
        "power cuts: {} cuts ({} while the store was opening or recovering), {} reopened stores \
         checked, {} recorded writes and syncs",
        totals.cuts, totals.cut_while_opening, totals.checked, totals.operations
    );
    assert!(
        totals.checked > cycles / 2,
        "most cuts must come after the store opened, or appends were barely tested"
    );
}

#[derive(Debug, Default)]
struct Totals {
    cuts: u64,
    cut_while_opening: u64,
    checked: u64,
    operations: u64,
}

/// Appenders (some events carry personal data) and forgetting, until the power fails or each
/// appender is done.
async fn workload(store: &Store, cycle: u64, model: &Arc<Mutex<Model>>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for appender in 0..APPENDERS {
        let store = store.clone();
        let model = model.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..APPENDS_PER_CYCLE {
                if Instant::now() > deadline {
                    return;
                }
                let subject = format!("c{cycle}-a{appender}-s{}", n / 4);
                let count = 1 + (n % 3) as usize;
                let mut personal = Vec::new();
                let events: Vec<_> = (0..count)
                    .map(|i| {
                        let mut event = ProposedEvent::new(
                            "Tick",
                            format!(r#"{{"cycle":{cycle},"appender":{appender},"n":{n},"i":{i}}}"#),
                        );
                        if (n + i as u64).is_multiple_of(2) {
                            let data = format!(r#"{{"name":"{subject}-{i}"}}"#);
                            event.subject_id = Some(subject.clone());
                            event.personal_data = Some(data.clone());
                            personal.push(Some((subject.clone(), data)));
                        } else {
                            personal.push(None);
                        }
                        event
                    })
                    .collect();
                let ids: Vec<Uuid> = events.iter().map(|event| event.event_id).collect();
                let stream = format!("stream-{}", (appender as u64 + n) % 9);
                let request = AppendRequest::new(stream.clone(), ExpectedVersion::Any, events);
                let Ok(appended) = store.append(request).await else {
                    return;
                };
                let mut recorded = model.lock().unwrap();
                for (index, (id, personal)) in ids.into_iter().zip(personal).enumerate() {
                    recorded.events.insert(
                        id,
                        Acked {
                            position: appended.first_position + index as u64,
                            stream: stream.clone(),
                            personal,
                        },
                    );
                }
                drop(recorded);
                // Now and then, forget the subject of this appender's previous group.
                if n % 8 == 3 {
                    let forgotten = format!("c{cycle}-a{appender}-s{}", n / 4);
                    model.lock().unwrap().forgetting.insert(forgotten.clone());
                    if store.forget_subject(&forgotten).is_err() {
                        return;
                    }
                    model.lock().unwrap().forgotten.insert(forgotten);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// What the reopened store must hold.
fn check(store: &Store, model: &Model, context: &str) {
    let stored = store.read_all(&AllRead::from(1)).unwrap();
    assert_eq!(
        stored.len() as u64,
        store.head(),
        "{context}: the log has no gaps"
    );
    let by_id: HashMap<Uuid, _> = stored.iter().map(|event| (event.event_id, event)).collect();
    assert_eq!(
        by_id.len(),
        stored.len(),
        "{context}: no event is stored twice"
    );
    for (id, acked) in &model.events {
        let event = by_id
            .get(id)
            .unwrap_or_else(|| panic!("{context}: acknowledged event {id} was lost"));
        assert_eq!(
            (event.position, &event.stream_id),
            (acked.position, &acked.stream),
            "{context}: event {id} moved"
        );
        if let Some((subject, data)) = &acked.personal {
            let event = store.revealed(&event.as_ref());
            if model.forgotten.contains(subject) {
                assert!(
                    event.shredded,
                    "{context}: {subject} was forgotten, yet event {id} reads {:?}",
                    event.personal_data
                );
            } else if !model.forgetting.contains(subject) {
                assert_eq!(
                    event.personal_data.as_deref(),
                    Some(data.as_str()),
                    "{context}: the key of {subject} must still open event {id}"
                );
            }
        }
    }
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{context}: {report}");
}
