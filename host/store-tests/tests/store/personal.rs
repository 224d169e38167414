//! Personal data in the store: sealed per subject, never stored in plaintext, shredded by
//! erasing the key without touching the log, and carried as ciphertext by export/import.

use std::ops::ControlFlow;

use eshost_store::transfer;
use eshost_store::{
    AllRead, AppendError, AppendRequest, EventStore, ExpectedVersion, Forgot, ProposedEvent,
    RecordedEvent, StreamRead, ValidationError, keys::SealError,
};
use eshost_store_tests::{Backend, Opened, Place};

const NAME: &str = "Philippa Quenby-Marchetti";

fn registered(subject: &str, name: &str) -> ProposedEvent {
    ProposedEvent::new("CustomerRegistered", r#"{"tier":"gold"}"#)
        .with_personal_data(subject, format!(r#"{{"name":"{name}"}}"#))
}

fn append(store: &Opened, stream: &str, events: Vec<ProposedEvent>) -> Result<u64, AppendError> {
    store
        .append_blocking(AppendRequest::new(stream, ExpectedVersion::Any, events))
        .map(|appended| appended.last_position)
}

fn revealed_stream(store: &dyn EventStore, stream: &str) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    store
        .visit_stream(stream, &StreamRead::forward(), &mut |event| {
            events.push(store.revealed(&event));
            ControlFlow::Continue(())
        })
        .unwrap();
    events
}

/// A store with customers 1..=3, each registered with a name, plus plain events.
fn populated(place: &Place) -> Opened {
    let store = place.open();
    for n in 1..=3 {
        append(
            &store,
            &format!("customer-{n}"),
            vec![registered(&format!("customer-{n}"), &format!("{NAME} {n}"))],
        )
        .unwrap();
        append(
            &store,
            &format!("account-{n}"),
            vec![ProposedEvent::new("FundsDeposited", r#"{"amount":5}"#)],
        )
        .unwrap();
    }
    store
}

pub fn personal_data_is_readable_but_never_stored_in_plaintext(backend: Backend) {
    let place = Place::new(backend);
    let store = populated(&place);
    let events = revealed_stream(&*store, "customer-2");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].subject_id.as_deref(), Some("customer-2"));
    assert_eq!(
        events[0].personal_data.as_deref(),
        Some(format!(r#"{{"name":"{NAME} 2"}}"#).as_str())
    );
    assert!(!events[0].shredded);
    assert_eq!(events[0].data, r#"{"tier":"gold"}"#);
    // Plain reads carry the ciphertext only.
    let sealed = store
        .read_stream("customer-2", &StreamRead::forward())
        .unwrap();
    assert!(sealed[0].personal_data.is_none());
    let ciphertext = sealed[0].sealed.as_deref().unwrap();
    assert!(!ciphertext.windows(NAME.len()).any(|w| w == NAME.as_bytes()));
    drop(store);

    assert!(
        place.storage_contains("customer-2"),
        "subject ids are stored"
    );
    assert!(place.storage_contains("gold"), "data is stored as is");
    assert!(
        !place.storage_contains("Philippa"),
        "no plaintext name, log or keys"
    );
}

pub fn forgetting_shreds_one_subject_and_leaves_the_log_verifiable(backend: Backend) {
    let place = Place::new(backend);
    let store = populated(&place);
    let before: Vec<RecordedEvent> = store.read_all(&AllRead::from(1)).unwrap();

    assert_eq!(
        store.forget_subject("customer-2").unwrap(),
        Forgot::KeyErased
    );
    let forgotten = revealed_stream(&*store, "customer-2");
    assert!(forgotten[0].shredded);
    assert!(forgotten[0].personal_data.is_none());
    assert_eq!(forgotten[0].data, r#"{"tier":"gold"}"#, "data is untouched");
    let kept = revealed_stream(&*store, "customer-3");
    assert_eq!(
        kept[0].personal_data.as_deref(),
        Some(format!(r#"{{"name":"{NAME} 3"}}"#).as_str())
    );

    // Nothing in the log changed: same records, same hashes, and the chain verifies.
    assert_eq!(store.read_all(&AllRead::from(1)).unwrap(), before);
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{report}");

    // A forgotten subject's personal data is not stored again.
    let refused = append(
        &store,
        "customer-2",
        vec![registered("customer-2", "Again")],
    );
    assert!(
        matches!(refused, Err(AppendError::Seal(SealError::Forgotten { .. }))),
        "{refused:?}"
    );
    drop(store);

    // It stays forgotten across a restart.
    let store = place.open();
    assert!(revealed_stream(&*store, "customer-2")[0].shredded);
    assert!(!revealed_stream(&*store, "customer-1")[0].shredded);
    assert!(store.verify().unwrap().is_ok());
}

pub fn retries_are_idempotent_and_bad_personal_data_is_refused_before_the_writer(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open();
    let event = registered("customer-9", "Ann");
    let first = store
        .append_blocking(AppendRequest::new(
            "customer-9",
            ExpectedVersion::NoStream,
            vec![event.clone()],
        ))
        .unwrap();
    let retry = store
        .append_blocking(AppendRequest::new(
            "customer-9",
            ExpectedVersion::NoStream,
            vec![event.clone()],
        ))
        .unwrap();
    assert!(retry.already_stored);
    assert_eq!(retry.first_position, first.first_position);
    let changed = registered("customer-9", "Someone Else").with_id(event.event_id);
    assert!(matches!(
        append(&store, "customer-9", vec![changed]),
        Err(AppendError::DuplicateEventId { .. })
    ));

    let head = store.head();
    let mut no_subject = ProposedEvent::new("CustomerRegistered", "{}");
    no_subject.personal_data = Some(r#"{"name":"x"}"#.into());
    let mut no_data = ProposedEvent::new("CustomerRegistered", "{}");
    no_data.subject_id = Some("customer-1".into());
    let bad_json = ProposedEvent::new("CustomerRegistered", "{}")
        .with_personal_data("customer-1", "{not json");
    let control =
        ProposedEvent::new("CustomerRegistered", "{}").with_personal_data("customer\u{7}", "{}");
    for bad in [no_subject, no_data, bad_json, control] {
        let refused = append(&store, "customer-1", vec![bad]);
        assert!(
            matches!(
                refused,
                Err(AppendError::Invalid(ValidationError::Personal { .. }))
            ),
            "{refused:?}"
        );
    }
    assert_eq!(store.head(), head, "nothing was stored");
    let keys = store.subject_keys().export().unwrap();
    assert_eq!(keys.len(), 1, "no key was made for refused input: {keys:?}");
    assert!(!keys[0].forgotten);
}

pub fn export_and_import_keep_ciphertexts_and_keys_travel_only_when_asked(backend: Backend) {
    let source_place = Place::new(backend);
    let source = populated(&source_place);
    source.forget_subject("customer-1").unwrap();
    let mut export = Vec::new();
    let written = transfer::export(&*source, None, &mut export).unwrap();
    assert_eq!(written, source.head());
    let text = String::from_utf8(export.clone()).unwrap();
    assert!(
        !text.contains("Philippa"),
        "the export holds ciphertext only"
    );
    assert!(text.contains(r#""subject_id":"customer-2""#));
    let mut keys = Vec::new();
    assert_eq!(transfer::export_keys(&*source, &mut keys).unwrap(), 3);
    let keys_text = String::from_utf8(keys.clone()).unwrap();
    assert!(keys_text.contains(r#""subject":"customer-1","forgotten":true"#));
    let source_events = source.read_all(&AllRead::from(1)).unwrap();

    // Without the keys: the same log, and its personal data unreadable.
    let bare_place = Place::new(backend);
    let bare = bare_place.open();
    let report = transfer::import(&*bare, &mut export.as_slice(), 2).unwrap();
    assert_eq!(report.events, source.head());
    assert_eq!(bare.read_all(&AllRead::from(1)).unwrap(), source_events);
    assert!(bare.verify().unwrap().is_ok());
    assert!(
        revealed_stream(&*bare, "customer-2")[0]
            .personal_data
            .is_none()
    );

    // With them: identical positions, ids, hashes and ciphertexts, readable where the
    // source could read, shredded where it had forgotten.
    let full_place = Place::new(backend);
    let full = full_place.open();
    assert_eq!(
        transfer::import_keys(&*full, &mut keys.as_slice()).unwrap(),
        3
    );
    transfer::import(&*full, &mut export.as_slice(), 1000).unwrap();
    let imported = full.read_all(&AllRead::from(1)).unwrap();
    assert_eq!(imported, source_events);
    for (a, b) in imported.iter().zip(&source_events) {
        assert_eq!(
            (a.position, a.event_id, a.hash, &a.sealed),
            (b.position, b.event_id, b.hash, &b.sealed)
        );
    }
    assert!(full.verify().unwrap().is_ok());
    assert!(revealed_stream(&*full, "customer-1")[0].shredded);
    assert_eq!(
        revealed_stream(&*full, "customer-2")[0].personal_data,
        revealed_stream(&*source, "customer-2")[0].personal_data
    );
}

pub fn a_tampered_ciphertext_is_found_by_verify_at_its_position(backend: Backend) {
    let place = Place::new(backend);
    let sealed = {
        let store = populated(&place);
        let events = store
            .read_stream("customer-2", &StreamRead::forward())
            .unwrap();
        assert_eq!(events[0].position, 3);
        events[0].sealed.clone().unwrap()
    };
    let probe = &sealed[sealed.len() - 16..];
    let flipped: Vec<u8> = probe.iter().map(|byte| byte ^ 0x40).collect();
    place.tamper(probe, &flipped);

    let store = place.open();
    let report = store.verify().unwrap();
    let bad = report.first_bad.as_ref().expect("the tampering is found");
    assert_eq!(bad.position, 3, "{report}");
    assert_eq!(report.events_checked, 2);
}

crate::conformance!(
    personal_data_is_readable_but_never_stored_in_plaintext,
    forgetting_shreds_one_subject_and_leaves_the_log_verifiable,
    retries_are_idempotent_and_bad_personal_data_is_refused_before_the_writer,
    export_and_import_keep_ciphertexts_and_keys_travel_only_when_asked,
    a_tampered_ciphertext_is_found_by_verify_at_its_position,
);
