//! NDJSON export and import: a whole-store round trip gives the same log; altered or
//! out-of-place input is refused at the line that does not fit.

use eshost_store::transfer::{self, ImportError};
use eshost_store::{
    AllRead, AppendError, AppendRequest, EventStore, ExpectedVersion, ProposedEvent, StreamRead,
};
use eshost_store_tests::{Backend, Opened, Place};

fn seeded_store(place: &Place) -> Opened {
    let store = place.open();
    for n in 0..40u64 {
        let stream = format!("account-{}", n % 6);
        let data = format!(" {{\"amount\": {n}, \"note\": \"line\\nbreak é\"}}\n");
        let event = ProposedEvent::new("FundsDeposited", data)
            .with_metadata(format!(r#"{{"correlation_id":"c-{n}"}}"#))
            .with_schema_version(2);
        store
            .append_blocking(AppendRequest::new(
                stream,
                ExpectedVersion::Any,
                vec![event],
            ))
            .unwrap();
    }
    store
}

fn export_all(store: &dyn EventStore) -> Vec<u8> {
    let mut out = Vec::new();
    transfer::export(store, None, &mut out).unwrap();
    out
}

pub fn a_whole_store_round_trips_with_positions_ids_times_and_hashes(backend: Backend) {
    let source_place = Place::new(backend);
    let source = seeded_store(&source_place);
    let exported = export_all(&*source);
    assert_eq!(exported.iter().filter(|byte| **byte == b'\n').count(), 40);
    // The JSON values are stored trimmed, and exported as values, not strings.
    let first: serde_json::Value =
        serde_json::from_slice(exported.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["data"]["amount"], 0);

    let target_place = Place::new(backend);
    let target = target_place.open();
    let report = transfer::import(&*target, &mut exported.as_slice(), 7).unwrap();
    assert_eq!((report.events, report.head), (40, 40));
    assert_eq!(
        target.read_all(&AllRead::from(1)).unwrap(),
        source.read_all(&AllRead::from(1)).unwrap()
    );
    assert_eq!(
        target
            .read_stream("account-3", &StreamRead::forward())
            .unwrap(),
        source
            .read_stream("account-3", &StreamRead::forward())
            .unwrap()
    );
    assert_eq!(
        target.stream_info("account-3").unwrap(),
        source.stream_info("account-3").unwrap()
    );
    assert!(target.verify().unwrap().is_ok());
    // The imported store goes on like the original: versions and the chain continue.
    let next = target
        .append_blocking(AppendRequest::new(
            "account-3",
            ExpectedVersion::Exact(7),
            vec![ProposedEvent::new("E", "{}")],
        ))
        .unwrap();
    assert_eq!(next.first_position, 41);
    assert!(target.verify().unwrap().is_ok());
    assert_eq!(export_all(&*target)[..exported.len()], exported[..]);
}

pub fn an_altered_line_is_refused_there_and_nothing_after_it_is_imported(backend: Backend) {
    let source_place = Place::new(backend);
    let exported = String::from_utf8(export_all(&*seeded_store(&source_place))).unwrap();
    let altered: String = exported
        .lines()
        .enumerate()
        .map(|(index, line)| {
            let line = if index == 12 {
                line.replace("\"amount\": 12,", "\"amount\": 1200,")
            } else {
                line.to_owned()
            };
            line + "\n"
        })
        .collect();
    assert_ne!(altered, exported, "the test changed a line");

    let target_place = Place::new(backend);
    let target = target_place.open();
    let error = transfer::import(&*target, &mut altered.as_bytes(), 5).unwrap_err();
    match &error {
        ImportError::Refused {
            line: 13,
            refusal:
                AppendError::Import {
                    position: 13,
                    reason,
                },
        } => {
            assert!(reason.contains("hash"), "{reason}");
        }
        other => panic!("unexpected {other}"),
    }
    // Chunks of 5 commit whole: lines 1-10 are in, the chunk holding line 13 is not.
    assert_eq!(target.head(), 10);
    assert!(target.verify().unwrap().is_ok());
}

pub fn an_import_that_does_not_continue_the_log_is_refused(backend: Backend) {
    let source_place = Place::new(backend);
    let exported = export_all(&*seeded_store(&source_place));

    // Into a store that already has events of its own.
    let target_place = Place::new(backend);
    let target = target_place.open();
    target
        .append_blocking(AppendRequest::new(
            "other",
            ExpectedVersion::Any,
            vec![ProposedEvent::new("E", "{}")],
        ))
        .unwrap();
    let error = transfer::import(&*target, &mut exported.as_slice(), 100).unwrap_err();
    assert!(error.to_string().contains("next position is 2"), "{error}");
    assert_eq!(target.head(), 1);

    // Twice into the same store: the second time nothing fits.
    let again_place = Place::new(backend);
    let again = again_place.open();
    transfer::import(&*again, &mut exported.as_slice(), 100).unwrap();
    assert!(transfer::import(&*again, &mut exported.as_slice(), 100).is_err());
    assert_eq!(again.head(), 40);

    // A line that is not an exported event.
    let error = transfer::import(&*again, &mut b"{\"position\":41}\n".as_slice(), 100).unwrap_err();
    assert!(
        matches!(error, ImportError::Malformed { line: 1, .. }),
        "{error}"
    );
}

pub fn a_stream_export_holds_only_that_stream(backend: Backend) {
    let place = Place::new(backend);
    let store = seeded_store(&place);
    let mut out = Vec::new();
    let written = transfer::export(&*store, Some("account-2"), &mut out).unwrap();
    assert_eq!(written, 7);
    let streams: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["stream_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(streams.iter().all(|stream| stream == "account-2"));
}

crate::conformance!(
    a_whole_store_round_trips_with_positions_ids_times_and_hashes,
    an_altered_line_is_refused_there_and_nothing_after_it_is_imported,
    an_import_that_does_not_continue_the_log_is_refused,
    a_stream_export_holds_only_that_stream,
);
