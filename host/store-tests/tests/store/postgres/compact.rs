//! Compacting a PostgreSQL store beside a live node: every table is rewritten and reported,
//! and the store keeps its events, its erasures and its chain.

use eshost_store::{AllRead, EventStore, ProposedEvent};
use eshost_store_tests::PgPlace;

use super::append;

#[test]
fn compacting_rewrites_every_table_and_the_store_keeps_serving() {
    let place = PgPlace::new();
    let store = place.open();
    let other_node = place.open();
    for n in 0..200 {
        let event = ProposedEvent::new("CustomerRegistered", "{}")
            .with_personal_data(format!("customer-{n}"), r#"{"name":"someone"}"#);
        append(&store, &format!("customer-{n}"), vec![event]).unwrap();
    }
    for n in 0..100 {
        store.forget_subject(&format!("customer-{n}")).unwrap();
    }

    let report = store.compact().unwrap();
    let names: Vec<String> = report.iter().map(|table| table.name.clone()).collect();
    for table in [
        "events",
        "streams",
        "subject_keys",
        "head",
        "meta",
        "blobs",
        "nodes",
    ] {
        let name = format!("{}.{table}", place.schema);
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let events = &report[0];
    assert!(
        events.bytes_before > 0 && events.bytes_after > 0,
        "{events:?}"
    );

    // Both nodes go on: appends, reads, erasures and the chain are intact.
    append(
        &other_node,
        "customer-200",
        vec![ProposedEvent::new("E", "{}")],
    )
    .unwrap();
    let all = store.read_all(&AllRead::from(1)).unwrap();
    assert_eq!(all.len(), 201);
    assert!(store.revealed(&all[0].as_ref()).shredded);
    assert!(!store.revealed(&all[150].as_ref()).shredded);
    assert!(store.verify().unwrap().is_ok());
}
