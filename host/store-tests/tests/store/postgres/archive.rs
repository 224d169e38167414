//! The archive on a shared database: one node archives while another appends and reads, two
//! nodes archive at once, a process killed mid-archive loses and duplicates nothing, and an
//! archived event still answers for its id, its stream version and its place in the hash
//! chain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use eshost_store::{
    AllRead, AppendError, AppendRequest, ArchiveCut, EventStore, ExpectedVersion, ProposedEvent,
    ReadError, StreamRead, block_on,
};
use eshost_store_tests::PgPlace;

use super::append;

const STREAMS: [&str; 3] = ["order-1", "order-2", "customer-7"];

fn event(i: usize) -> ProposedEvent {
    ProposedEvent::new("Added", format!(r#"{{"i":{i},"note":"line {i}"}}"#))
}

#[test]
fn one_node_archives_while_another_appends_and_reads_and_no_read_sees_a_hole() {
    let place = PgPlace::new();
    let (archiver, writer) = (place.open(), place.open());
    const APPENDS: usize = 1500;
    let done = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(120);
    std::thread::scope(|scope| {
        let appender = scope.spawn(|| {
            let appended = (0..APPENDS)
                .try_for_each(|i| append(&writer, STREAMS[i % 3], vec![event(i)]).map(drop));
            // Stop the other loops either way: a failed append is the failure to report.
            done.store(true, Ordering::SeqCst);
            appended
        });
        // The appending node's reads see every position once, in order, whatever moves.
        let reader = scope.spawn(|| {
            let mut rounds = 0;
            while !done.load(Ordering::SeqCst) {
                assert!(Instant::now() < deadline, "the appends took too long");
                let head = writer.head();
                let all = writer.read_all(&AllRead::from(1)).unwrap();
                assert!(all.len() as u64 >= head);
                for (index, event) in all.iter().enumerate() {
                    assert_eq!(event.position, index as u64 + 1);
                }
                let stream = writer
                    .read_stream(STREAMS[1], &StreamRead::forward())
                    .unwrap();
                for (index, event) in stream.iter().enumerate() {
                    assert_eq!(event.stream_version, index as u64 + 1);
                }
                rounds += 1;
            }
            rounds
        });
        let (mut through, mut archives) = (0, 0);
        while !done.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the appends took too long");
            let archived = archiver
                .archive(ArchiveCut::BeforePosition(u64::MAX))
                .unwrap();
            assert!(archived.archived_through >= through);
            if archived.events > 0 {
                archives += 1;
            }
            // Like a (very) frequent schedule: let the appends and reads run between rounds.
            std::thread::sleep(Duration::from_millis(5));
            through = archived.archived_through;
        }
        appender.join().unwrap().unwrap();
        assert!(reader.join().unwrap() > 0);
        assert!(archives > 1, "{archives} archives ran beside the appends");
    });
    let all = writer.read_all(&AllRead::from(1)).unwrap();
    assert_eq!(all.len(), APPENDS);
    assert_eq!(archiver.read_all(&AllRead::from(1)).unwrap(), all);
    assert!(writer.verify().unwrap().is_ok());
    assert!(archiver.verify().unwrap().is_ok());
    // Stream versions go on from the archived ones, checked on either node.
    let version = archiver.stream_info(STREAMS[0]).unwrap().unwrap().version;
    assert_eq!(version, (APPENDS as u64).div_ceil(3));
    let on = block_on(writer.append(AppendRequest::new(
        STREAMS[0],
        ExpectedVersion::Exact(version),
        vec![event(APPENDS)],
    )))
    .unwrap();
    assert_eq!(on.first_version, version + 1);
}

#[test]
fn two_nodes_archiving_at_once_seal_each_event_once() {
    let place = PgPlace::new();
    let (a, b) = (place.open(), place.open());
    for i in 0..600 {
        append(&a, STREAMS[i % 3], vec![event(i)]).unwrap();
    }
    let before = a.read_all(&AllRead::from(1)).unwrap();
    let (x, y) = std::thread::scope(|scope| {
        let x = scope.spawn(|| a.archive(ArchiveCut::BeforePosition(401)).unwrap());
        let y = scope.spawn(|| b.archive(ArchiveCut::BeforePosition(501)).unwrap());
        (x.join().unwrap(), y.join().unwrap())
    });
    // Whichever ran second sealed only what the first had not.
    assert_eq!(x.events + y.events, 500, "{x:?} {y:?}");
    assert_eq!(x.archived_through.max(y.archived_through), 500);
    let rows = place.query_text(
        "SELECT string_agg(first_position || '-' || last_position, ',' ORDER BY first_position)
         FROM \"$schema\".segments",
    );
    let segments = rows[0].clone().unwrap();
    assert!(
        segments == "1-500" || segments == "1-400,401-500",
        "{segments}"
    );
    assert_eq!(a.read_all(&AllRead::from(1)).unwrap(), before);
    assert_eq!(b.read_all(&AllRead::from(1)).unwrap(), before);
    assert!(b.verify().unwrap().is_ok());
}

#[test]
fn an_archived_event_keeps_its_id_its_version_and_its_place() {
    let place = PgPlace::new();
    let store = place.open();
    for i in 0..30 {
        append(&store, STREAMS[i % 3], vec![event(i)]).unwrap();
    }
    let before = store.read_all(&AllRead::from(1)).unwrap();
    let archived = store.archive(ArchiveCut::BeforePosition(31)).unwrap();
    assert_eq!((archived.events, archived.archived_through), (30, 30));
    // The payloads left the hot table; the store says builds without the archive keep off.
    assert_eq!(
        place.query_text("SELECT count(*) FROM \"$schema\".events WHERE data IS NOT NULL"),
        vec![Some("0".to_owned())]
    );
    assert_eq!(
        place.query_text(
            "SELECT convert_from(value, 'UTF8') FROM \"$schema\".meta WHERE key = 'format'"
        ),
        vec![Some("2".to_owned())]
    );

    let first = &before[0];
    let altered =
        ProposedEvent::new(first.event_type.clone(), r#"{"other":1}"#).with_id(first.event_id);
    let refused = block_on(store.append(AppendRequest::new(
        first.stream_id.clone(),
        ExpectedVersion::Any,
        vec![altered],
    )));
    assert!(
        matches!(
            refused,
            Err(AppendError::DuplicateEventId { position: 1, .. })
        ),
        "{refused:?}"
    );
    let stale = block_on(store.append(AppendRequest::new(
        STREAMS[0],
        ExpectedVersion::NoStream,
        vec![event(99)],
    )));
    assert!(
        matches!(stale, Err(AppendError::Conflict { actual: 10, .. })),
        "{stale:?}"
    );
    let mut reused = before[29].clone();
    (reused.position, reused.stream_version) = (31, 11);
    let import = block_on(store.import_events(vec![reused]));
    assert!(
        matches!(import, Err(AppendError::Import { .. })),
        "{import:?}"
    );
    assert_eq!(store.read_all(&AllRead::from(1)).unwrap(), before);

    // A slim row altered behind the store's back no longer matches its archived record.
    place.execute("UPDATE \"$schema\".events SET event_type = 'Forged' WHERE position = 7");
    let store = place.open();
    let error = store.read_all(&AllRead::from(1)).unwrap_err();
    assert!(
        matches!(&error, ReadError::Corrupt { position: 7, reason } if reason.contains("archive segment")),
        "{error}"
    );
    let report = store.verify().unwrap();
    assert_eq!(report.first_bad.map(|bad| bad.position), Some(7));
}

const CHILD_SCHEMA: &str = "ESHOST_PG_ARCHIVE_CHILD_SCHEMA";
const CHILD_KEK: &str = "ESHOST_PG_ARCHIVE_CHILD_KEK";

/// Runs only as a child of `a_kill_mid_archive_loses_and_duplicates_nothing`: archives the
/// whole log.
#[test]
fn child_archiver() {
    let (Ok(schema), Ok(kek)) = (std::env::var(CHILD_SCHEMA), std::env::var(CHILD_KEK)) else {
        return;
    };
    let url = format!("{}?schema={schema}", eshost_store_tests::server_url());
    let kek = eshost_store::keys::KeyEncryptionKey::from_hex(&kek).expect("the parent's key");
    let config =
        eshost_store_postgres::PgConfig::new(&url, eshost_store_postgres::KekSource::Key(kek))
            .unwrap();
    let store = eshost_store_postgres::PgStore::open(config).unwrap();
    store.archive(ArchiveCut::BeforePosition(u64::MAX)).unwrap();
}

#[test]
fn a_kill_mid_archive_loses_and_duplicates_nothing() {
    let place = PgPlace::new();
    let store = place.open();
    // Four segments' worth (a segment holds 16 MiB of records, here about 16,000 of 1 KiB):
    // the kill lands after the first commits. Fewer, larger rows keep the test light.
    const EVENTS: usize = 64_000;
    let padding = "x".repeat(1000);
    for batch in 0..EVENTS / 500 {
        let events = (0..500)
            .map(|i| {
                let data = format!(r#"{{"i":{},"pad":"{padding}"}}"#, batch * 500 + i);
                ProposedEvent::new("Added", data)
            })
            .collect();
        append(&store, STREAMS[batch % 3], events).unwrap();
    }
    let hashes = |store: &dyn EventStore| {
        let mut hashes = Vec::with_capacity(EVENTS);
        store
            .visit_all(&AllRead::from(1), &mut |event| {
                assert_eq!(
                    event.position,
                    hashes.len() as u64 + 1,
                    "each position once"
                );
                hashes.push(event.hash);
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
        hashes
    };
    let before = hashes(&store);
    assert_eq!(before.len(), EVENTS);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "postgres::archive::child_archiver",
            "--test-threads=1",
        ])
        .env(CHILD_SCHEMA, &place.schema)
        .env(CHILD_KEK, place.kek.to_hex())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the archive finished (or failed) before the kill"
        );
        let segments = place.query_text("SELECT count(*) FROM \"$schema\".segments");
        if segments[0].as_deref() != Some("0") {
            break;
        }
        assert!(Instant::now() < deadline, "no segment appeared");
        // A segment takes about a second here; each look is a connection of its own.
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // What committed is whole, what did not left nothing: every event once, the chain intact.
    let store = place.open();
    let partly = store.archive(ArchiveCut::BeforePosition(1)).unwrap();
    assert!(
        partly.archived_through > 0 && partly.archived_through < EVENTS as u64,
        "{partly:?}"
    );
    assert_eq!(
        place.query_text(
            "SELECT count(*) FROM \"$schema\".events
             WHERE data IS NULL AND position > (SELECT max(last_position) FROM \"$schema\".segments)"
        ),
        vec![Some("0".to_owned())],
        "no row is slim past the last committed segment"
    );
    assert!(store.verify().unwrap().is_ok());
    assert_eq!(hashes(&store), before);
    let rest = store.archive(ArchiveCut::BeforePosition(u64::MAX)).unwrap();
    assert_eq!(rest.archived_through, EVENTS as u64);
    assert_eq!(rest.segments[0].first_position, partly.archived_through + 1);
    assert!(store.verify().unwrap().is_ok());
    assert_eq!(hashes(&store), before);
}
