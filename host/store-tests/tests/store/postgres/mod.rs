//! What only the PostgreSQL store needs: several nodes and processes on one database, the
//! key-encryption key, forgetting seen by every node, a delayed and a broken transaction, a
//! stalled node holding the log head, a restarted server, and the archive on a shared
//! database.

mod archive;
mod compact;
mod faults;
mod ordering;
mod processes;
mod proxy;
mod restart;

use std::time::{Duration, Instant};

use eshost_store::keys::KeyEncryptionKey;
use eshost_store::{
    AllRead, AppendError, AppendRequest, EventStore, ExpectedVersion, ProposedEvent, StreamRead,
    block_on,
};
use eshost_store_postgres::{KekSource, PgConfig, PgOpenError, PgStore};
use eshost_store_tests::PgPlace;

fn append(store: &PgStore, stream: &str, events: Vec<ProposedEvent>) -> Result<u64, AppendError> {
    block_on(store.append(AppendRequest::new(stream, ExpectedVersion::Any, events)))
        .map(|appended| appended.last_position)
}

/// Wait until `condition` holds, failing after `within`.
fn wait_until(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

#[test]
fn two_nodes_share_one_log_and_wake_each_other() {
    let place = PgPlace::new();
    let (a, b) = (place.open(), place.open());
    let mut b_head = b.watch_head();
    assert_eq!(
        append(&a, "shared", vec![ProposedEvent::new("A", "1")]).unwrap(),
        1
    );
    // B hears of A's commit (NOTIFY, or the poll behind it) without writing itself.
    wait_until(Duration::from_secs(10), "node b sees head 1", || {
        *b_head.borrow_and_update() == 1
    });
    assert_eq!(
        append(&b, "shared", vec![ProposedEvent::new("B", "2")]).unwrap(),
        2
    );
    for n in 3..=20 {
        let node = if n % 3 == 0 { &a } else { &b };
        assert_eq!(
            append(node, "shared", vec![ProposedEvent::new("E", n.to_string())]).unwrap(),
            n
        );
    }
    let versions: Vec<u64> = a
        .read_stream("shared", &StreamRead::forward())
        .unwrap()
        .iter()
        .map(|event| event.stream_version)
        .collect();
    assert_eq!(versions, (1..=20).collect::<Vec<_>>());
    assert_eq!(
        block_on(b.append(AppendRequest::new(
            "shared",
            ExpectedVersion::Exact(19),
            vec![ProposedEvent::new("Late", "0")],
        ))),
        Err(AppendError::Conflict {
            stream_id: "shared".into(),
            expected: ExpectedVersion::Exact(19),
            actual: 20,
        })
    );
    assert!(a.verify().unwrap().is_ok());
    assert_eq!(b.verify().unwrap().events_checked, 20);
}

#[test]
fn forgetting_on_one_node_shreds_on_every_node_and_a_stale_node_cannot_store_new_data() {
    let place = PgPlace::new();
    let a = place.open();
    let mut quiet = place.config();
    // This node hears of forgetting only through NOTIFY (no poll within the test).
    quiet.poll_interval = Duration::from_secs(3600);
    let b = PgStore::open(quiet).unwrap();
    let registered = |subject: &str| {
        ProposedEvent::new("CustomerRegistered", "{}")
            .with_personal_data(subject, r#"{"name":"Ann"}"#)
    };
    append(&a, "customer-1", vec![registered("customer-1")]).unwrap();
    append(&a, "customer-2", vec![registered("customer-2")]).unwrap();
    let personal = |store: &PgStore, stream: &str| {
        let events = store.read_stream(stream, &StreamRead::forward()).unwrap();
        store.revealed(&events[0].as_ref())
    };
    // B unwraps A's keys from the database and caches them.
    assert_eq!(
        personal(&b, "customer-1").personal_data.as_deref(),
        Some(r#"{"name":"Ann"}"#)
    );
    assert!(!personal(&b, "customer-2").shredded);

    a.forget_subject("customer-1").unwrap();
    assert!(personal(&a, "customer-1").shredded);
    wait_until(Duration::from_secs(10), "node b drops the key", || {
        personal(&b, "customer-1").shredded
    });
    assert!(b.is_forgotten("customer-1"));
    assert!(matches!(
        append(&b, "customer-1", vec![registered("customer-1")]),
        Err(AppendError::Seal(_))
    ));

    // A tombstone written behind every node's back (no NOTIFY): B's cache still holds the
    // key, yet the writer refuses new personal data inside the append transaction.
    place.execute(
        "UPDATE \"$schema\".subject_keys SET wrapped = NULL,
             forgotten_seq = nextval('\"$schema\".forget_seq')
         WHERE subject = 'customer-2'",
    );
    let refused = append(&b, "customer-2", vec![registered("customer-2")]);
    assert!(
        matches!(refused, Err(AppendError::Seal(_))),
        "a stale node stored personal data of a forgotten subject: {refused:?}"
    );
    assert_eq!(a.head(), 2);
    assert!(a.verify().unwrap().is_ok());
}

#[test]
fn the_key_encryption_key_must_match_the_one_the_keys_are_wrapped_under() {
    let place = PgPlace::new();
    drop(place.open());
    let url = format!("{}?schema={}", place.url, place.schema);

    let other = KeyEncryptionKey::generate().unwrap();
    let error = PgStore::open(PgConfig::new(&url, KekSource::Key(other)).unwrap()).unwrap_err();
    assert!(matches!(error, PgOpenError::Kek { .. }), "{error}");
    assert!(error.to_string().contains("not the key"), "{error}");

    let missing = "ESHOST_TEST_KEK_THAT_IS_NOT_SET";
    let error =
        PgStore::open(PgConfig::new(&url, KekSource::Env(missing.into())).unwrap()).unwrap_err();
    assert!(error.to_string().contains(missing), "{error}");

    // A fresh store with a key file that does not exist yet: the file is made, then required.
    let fresh = PgPlace::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kek");
    let fresh_url = format!("{}?schema={}", fresh.url, fresh.schema);
    let config = || PgConfig::new(&fresh_url, KekSource::File(file.clone())).unwrap();
    let store = PgStore::open(config()).unwrap();
    append(
        &store,
        "customer-1",
        vec![ProposedEvent::new("Registered", "{}").with_personal_data("customer-1", "\"x\"")],
    )
    .unwrap();
    drop(store);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the key file is readable by its owner only"
        );
    }
    let store = PgStore::open(config()).unwrap();
    let events = store
        .read_stream("customer-1", &StreamRead::forward())
        .unwrap();
    assert_eq!(
        store.revealed(&events[0].as_ref()).personal_data.as_deref(),
        Some("\"x\"")
    );
    drop(store);
    // The subject keys in the database hold no copy of the key-encryption key.
    assert!(
        fresh
            .query_text("SELECT encode(wrapped, 'hex') FROM \"$schema\".subject_keys")
            .iter()
            .all(|wrapped| !wrapped.as_deref().unwrap_or("").contains(text.trim()))
    );
    std::fs::remove_file(&file).unwrap();
    let error = PgStore::open(config()).unwrap_err();
    assert!(error.to_string().contains("missing"), "{error}");
}

/// Without a server the PostgreSQL tests fail, saying how to run them: they never skip.
#[test]
fn without_a_server_the_postgres_tests_fail_and_say_why() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "contract::postgres::the_store_survives_reopening",
            "--test-threads=1",
        ])
        .env_remove(eshost_store_tests::SERVER_ENV)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "it passed without a server:\n{text}"
    );
    assert!(text.contains("1 failed"), "{text}");
    assert!(text.contains("scripts/test"), "{text}");
    assert!(text.contains(eshost_store_tests::SERVER_ENV), "{text}");
}

#[test]
fn reads_page_through_a_log_larger_than_a_page_while_it_grows() {
    let place = PgPlace::new();
    let store = place.open();
    for chunk in 0..4 {
        let events = (0..400)
            .map(|n| ProposedEvent::new("E", (chunk * 400 + n).to_string()))
            .collect();
        append(&store, &format!("s-{chunk}"), events).unwrap();
    }
    let mut seen = Vec::new();
    let mut grown = false;
    store
        .visit_all(&AllRead::from(1), &mut |event| {
            seen.push(event.position);
            if !grown {
                // Commits during a long read: later pages see them, in order, no gap.
                grown = true;
                append(&store, "late", vec![ProposedEvent::new("L", "0")]).unwrap();
            }
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(seen, (1..=1601).collect::<Vec<_>>());
}
