//! A log moves between the backends unchanged: exported from redb and imported into
//! PostgreSQL, then appended to there and moved back, with the same positions, ids, times,
//! hashes and ciphertexts, personal data readable with the keys and shredded where forgotten.
//! Each import recomputes every hash with its own backend, so this also shows that both
//! chain the same record bytes.

use std::ops::ControlFlow;

use eshost_store::transfer;
use eshost_store::{
    AllRead, AppendRequest, EventStore, ExpectedVersion, ProposedEvent, RecordedEvent,
};
use eshost_store_tests::{Backend, Opened, Place};

fn move_log(source: &Opened, target: &Opened) {
    let (mut events, mut keys) = (Vec::new(), Vec::new());
    transfer::export(&**source, None, &mut events).unwrap();
    transfer::export_keys(&**source, &mut keys).unwrap();
    transfer::import_keys(&**target, &mut keys.as_slice()).unwrap();
    let report = transfer::import(&**target, &mut events.as_slice(), 100).unwrap();
    assert_eq!(report.head, source.head());
}

fn revealed(store: &dyn EventStore) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    store
        .visit_all(&AllRead::from(1), &mut |event| {
            events.push(store.revealed(&event));
            ControlFlow::Continue(())
        })
        .unwrap();
    events
}

fn append(store: &Opened, stream: &str, event: ProposedEvent) {
    store
        .append_blocking(AppendRequest::new(
            stream,
            ExpectedVersion::Any,
            vec![event],
        ))
        .unwrap();
}

#[test]
fn a_log_moves_from_redb_to_postgres_and_back_unchanged() {
    let redb_place = Place::new(Backend::Redb);
    let redb = redb_place.open();
    for n in 0..30 {
        let event = ProposedEvent::new("FundsDeposited", format!(r#"{{"amount":{n}}}"#))
            .with_metadata(format!(r#"{{"correlation_id":"c-{n}"}}"#));
        append(&redb, &format!("account-{}", n % 4), event);
    }
    for n in 1..=3 {
        let customer = format!("customer-{n}");
        let event = ProposedEvent::new("CustomerRegistered", "{}")
            .with_personal_data(&customer, format!(r#"{{"name":"Name {n}"}}"#));
        append(&redb, &customer, event);
    }
    redb.forget_subject("customer-2").unwrap();

    let pg_place = Place::new(Backend::Postgres);
    let pg = pg_place.open();
    move_log(&redb, &pg);
    let from_redb = redb.read_all(&AllRead::from(1)).unwrap();
    assert_eq!(pg.read_all(&AllRead::from(1)).unwrap(), from_redb);
    assert_eq!(
        revealed(&*pg),
        revealed(&*redb),
        "readable and shredded alike"
    );
    assert!(revealed(&*pg).iter().any(|event| event.shredded));
    assert!(pg.verify().unwrap().is_ok());

    // PostgreSQL continues the chain; redb accepts its hashes when the log moves back.
    append(
        &pg,
        "account-1",
        ProposedEvent::new("FundsWithdrawn", r#"{"amount":5}"#),
    );
    append(
        &pg,
        "customer-4",
        ProposedEvent::new("CustomerRegistered", "{}")
            .with_personal_data("customer-4", r#"{"name":"Name 4"}"#),
    );
    let back_place = Place::new(Backend::Redb);
    let back = back_place.open();
    move_log(&pg, &back);
    let from_pg = pg.read_all(&AllRead::from(1)).unwrap();
    assert_eq!(from_pg.len(), 35);
    assert_eq!(back.read_all(&AllRead::from(1)).unwrap(), from_pg);
    assert_eq!(revealed(&*back), revealed(&*pg));
    assert!(back.verify().unwrap().is_ok());
    assert_eq!(
        back.stream_info("account-1").unwrap(),
        pg.stream_info("account-1").unwrap()
    );
}
