//! Broken connections and a stalled node: a commit whose reply never arrives, a connection
//! that breaks before its commit, and another session holding the log head too long.

use std::str::FromStr;
use std::time::Duration;

use eshost_store::{
    AllRead, AppendError, AppendRequest, EventStore, ExpectedVersion, ProposedEvent, block_on,
};
use eshost_store_postgres::{KekSource, PgConfig, PgStore};
use eshost_store_tests::{PgPlace, runtime};

use super::proxy::{Cut, Proxy};

/// A proxy in front of the test server, and the URL of the place through it.
fn through_proxy(place: &PgPlace) -> (Proxy, String) {
    let config = tokio_postgres::Config::from_str(&place.url).unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        other => panic!("the proxy test needs a TCP server, not {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let proxy = Proxy::start(format!("{host}:{port}"));
    let user = config.get_user().unwrap_or("postgres");
    let database = config.get_dbname().unwrap_or(user);
    let url = format!(
        "postgres://{user}@127.0.0.1:{}/{database}?sslmode=disable&schema={}",
        proxy.port, place.schema
    );
    (proxy, url)
}

#[test]
fn a_commit_whose_reply_is_lost_is_found_out_and_a_retry_is_idempotent() {
    let place = PgPlace::new();
    let (proxy, url) = through_proxy(&place);
    let store =
        PgStore::open(PgConfig::new(&url, KekSource::Key(place.kek.clone())).unwrap()).unwrap();
    let request = |stream: &str, data: &str| {
        AppendRequest::new(
            stream,
            ExpectedVersion::Any,
            vec![ProposedEvent::new("E", data)],
        )
    };
    block_on(store.append(request("s", "1"))).unwrap();

    // The server commits, the writer never hears so: it finds the events on a new
    // connection and answers as if the reply had come.
    let lost_reply = request("s", "2");
    proxy.arm(Cut::AfterCommit);
    let appended = block_on(store.append(lost_reply.clone())).unwrap();
    assert_eq!(proxy.cuts(), 1, "the reply was cut");
    assert_eq!(
        (appended.first_position, appended.already_stored),
        (2, false)
    );
    let retried = block_on(store.append(lost_reply)).unwrap();
    assert_eq!((retried.first_position, retried.already_stored), (2, true));

    // The connection breaks before the server gets the COMMIT: nothing is written, the caller
    // is told so, and the retry writes it once.
    let never_committed = request("s", "3");
    proxy.arm(Cut::BeforeCommit);
    let error = block_on(store.append(never_committed.clone())).unwrap_err();
    assert_eq!(proxy.cuts(), 2, "the commit was cut");
    assert!(
        matches!(&error, AppendError::Storage(message) if message.contains("nothing of this append was written")),
        "{error}"
    );
    let retried = block_on(store.append(never_committed)).unwrap();
    assert_eq!((retried.first_position, retried.already_stored), (3, false));

    let all = store.read_all(&AllRead::from(1)).unwrap();
    let data: Vec<&str> = all.iter().map(|event| event.data.as_str()).collect();
    assert_eq!(data, ["1", "2", "3"], "every event once, in order");
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn a_session_holding_the_head_too_long_fails_appends_clearly_until_it_lets_go() {
    let place = PgPlace::new();
    let mut config = place.config();
    config.lock_timeout = Duration::from_millis(300);
    let store = PgStore::open(config).unwrap();
    let one = || {
        AppendRequest::new(
            "s",
            ExpectedVersion::Any,
            vec![ProposedEvent::new("E", "{}")],
        )
    };
    block_on(store.append(one())).unwrap();

    // A stalled node: it took the head and does nothing.
    let runtime = runtime();
    let (client, connection) = runtime
        .block_on(tokio_postgres::connect(&place.url, tokio_postgres::NoTls))
        .unwrap();
    runtime.spawn(connection);
    runtime
        .block_on(client.batch_execute(&format!(
            "BEGIN; SELECT 1 FROM \"{}\".head FOR UPDATE",
            place.schema
        )))
        .unwrap();
    let error = block_on(store.append(one())).unwrap_err();
    assert!(
        matches!(&error, AppendError::Storage(message) if message.contains("log head") && message.contains("lock timeout")),
        "{error}"
    );
    runtime.block_on(client.batch_execute("ROLLBACK")).unwrap();
    assert_eq!(block_on(store.append(one())).unwrap().first_position, 2);
    assert!(store.verify().unwrap().is_ok());
}
