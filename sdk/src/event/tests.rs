//! The stored form of events, both ways, and personal data.

use super::*;
use serde_json::json;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Ev {
    Opened {
        owner: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        initial: Option<u64>,
    },
    Moved(Inner),
    Pair(u32, String),
    Closed,
    #[serde(rename = "Renamed")]
    WasRenamed {
        n: i64,
    },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Inner {
    amount: u64,
}

impl DomainEvent for Ev {
    const SCHEMA_VERSIONS: &'static [(&'static str, u32)] = &[("Moved", 3)];
}

fn stored<'a>(event_type: &'a str, schema_version: u32, data: &'a str) -> StoredEvent<'a> {
    StoredEvent {
        position: 7,
        stream_id: "s-1",
        stream_version: 1,
        event_id: "00000000-0000-0000-0000-000000000000",
        event_type,
        schema_version,
        recorded_at: 0,
        data,
        metadata: "{}",
        subject_id: None,
        personal_data: None,
        shredded: false,
    }
}

fn roundtrip(ev: Ev) -> (EncodedEvent, serde_json::Value) {
    let enc = encode(&ev).unwrap();
    let back: Ev = stored(enc.event_type, enc.schema_version, &enc.data)
        .decode()
        .unwrap();
    assert_eq!(back, ev);
    let data = serde_json::from_str(&enc.data).unwrap();
    (enc, data)
}

#[test]
fn struct_variant_is_stored_as_an_object_named_by_the_variant() {
    let (enc, data) = roundtrip(Ev::Opened {
        owner: "Ann \"A\"".into(),
        initial: Some(5),
    });
    assert_eq!((enc.event_type, enc.schema_version), ("Opened", 1));
    assert_eq!(data, json!({"owner": "Ann \"A\"", "initial": 5}));

    let (_, data) = roundtrip(Ev::Opened {
        owner: "B".into(),
        initial: None,
    });
    assert_eq!(data, json!({"owner": "B"}));
}

#[test]
fn other_variant_shapes_roundtrip() {
    let (enc, data) = roundtrip(Ev::Moved(Inner { amount: 3 }));
    assert_eq!((enc.event_type, enc.schema_version), ("Moved", 3));
    assert_eq!(data, json!({"amount": 3}));

    let (_, data) = roundtrip(Ev::Pair(1, "x".into()));
    assert_eq!(data, json!([1, "x"]));

    let (enc, data) = roundtrip(Ev::Closed);
    assert_eq!(enc.event_type, "Closed");
    assert_eq!(data, json!({}));

    let (enc, _) = roundtrip(Ev::WasRenamed { n: -1 });
    assert_eq!(enc.event_type, "Renamed");
}

#[test]
fn decoding_ignores_unknown_fields_and_accepts_null_for_unit_events() {
    let ev: Ev = stored("Opened", 1, r#"{"owner":"x","extra":[1,2]}"#)
        .decode()
        .unwrap();
    assert_eq!(
        ev,
        Ev::Opened {
            owner: "x".into(),
            initial: None
        }
    );
    assert_eq!(
        stored("Closed", 1, "null").decode::<Ev>().unwrap(),
        Ev::Closed
    );
}

#[test]
fn decoding_errors_name_the_problem() {
    let err = stored("Nope", 1, "{}").decode::<Ev>().unwrap_err();
    assert!(err.contains("unknown variant `Nope`"), "{err}");

    let err = stored("Opened", 1, r#"{"owner":"x"} trailing"#)
        .decode::<Ev>()
        .unwrap_err();
    assert!(err.contains("trailing characters"), "{err}");

    let err = stored("Moved", 2, r#"{}"#).decode::<Ev>().unwrap_err();
    assert!(err.contains("schema version 2"), "{err}");
    assert!(err.contains("reads version 3"), "{err}");
    assert!(err.contains("missing field `amount`"), "{err}");
}

#[test]
fn event_types_lists_the_variants() {
    assert_eq!(
        event_types::<Ev>(),
        ["Opened", "Moved", "Pair", "Closed", "Renamed"]
    );
    assert_eq!(schema_version::<Ev>("Moved"), 3);
    assert_eq!(schema_version::<Ev>("Opened"), 1);
}

#[test]
fn internally_tagged_enums_are_refused_clearly() {
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum Tagged {
        A { x: u8 },
    }
    impl DomainEvent for Tagged {}

    let err = encode(&Tagged::A { x: 1 }).unwrap_err();
    assert!(err.contains("externally tagged"), "{err}");
    let err = stored("A", 1, r#"{"x":1}"#).decode::<Tagged>().unwrap_err();
    assert!(err.contains("externally tagged"), "{err}");
}

// ---- personal data ----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Person {
    Registered {
        id: String,
        #[serde(default)]
        name: Option<String>,
        tier: u8,
        #[serde(default, rename = "mail")]
        email: Option<String>,
    },
    // Not listed in PERSONAL_FIELDS: never split, whatever subject_id says.
    Renamed {
        id: String,
        name: String,
    },
    Left,
}

impl DomainEvent for Person {
    const PERSONAL_FIELDS: &'static [(&'static str, &'static [&'static str])] =
        &[("Registered", &["name", "mail"])];

    fn subject_id(&self) -> Option<String> {
        match self {
            // An empty id stands for a plugin bug: no subject.
            Self::Registered { id, .. } | Self::Renamed { id, .. } => Some(id.clone()),
            Self::Left => None,
        }
    }
}

fn registered(id: &str, name: Option<&str>, email: Option<&str>) -> Person {
    Person::Registered {
        id: id.into(),
        name: name.map(Into::into),
        tier: 2,
        email: email.map(Into::into),
    }
}

fn with_personal<'a>(enc: &'a EncodedEvent) -> StoredEvent<'a> {
    StoredEvent {
        subject_id: enc.subject_id.as_deref(),
        personal_data: enc.personal_data.as_deref(),
        ..stored(enc.event_type, enc.schema_version, &enc.data)
    }
}

#[test]
fn personal_fields_move_out_of_data_under_the_subject() {
    let enc = encode(&registered(
        "c-1",
        Some("Ann \"A\""),
        Some("ann@example.com"),
    ))
    .unwrap();
    assert_eq!(enc.event_type, "Registered");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&enc.data).unwrap(),
        json!({"id": "c-1", "tier": 2})
    );
    assert_eq!(enc.subject_id.as_deref(), Some("c-1"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(enc.personal_data.as_deref().unwrap()).unwrap(),
        json!({"name": "Ann \"A\"", "mail": "ann@example.com"})
    );

    // Null personal fields are left out; with none left there is no part and no subject.
    let enc = encode(&registered("c-1", None, Some("a@b"))).unwrap();
    assert_eq!(enc.personal_data.as_deref(), Some(r#"{"mail":"a@b"}"#));
    assert_eq!(enc.data, r#"{"id":"c-1","tier":2}"#);
    let enc = encode(&registered("c-1", None, None)).unwrap();
    assert_eq!(enc.data, r#"{"id":"c-1","tier":2}"#);
    assert_eq!((enc.subject_id, enc.personal_data), (None, None));

    // Types without personal fields take the plain path, subject or not.
    let enc = encode(&Person::Renamed {
        id: "c-1".into(),
        name: "Bo".into(),
    })
    .unwrap();
    assert_eq!(enc.data, r#"{"id":"c-1","name":"Bo"}"#);
    assert_eq!((enc.subject_id, enc.personal_data), (None, None));
    assert_eq!(personal_fields::<Person>("Registered"), ["name", "mail"]);
    assert!(personal_fields::<Person>("Left").is_empty());
}

#[test]
fn personal_data_merges_back_on_decode() {
    let event = registered("c-1", Some("Ann"), Some("ann@example.com"));
    let enc = encode(&event).unwrap();
    assert_eq!(with_personal(&enc).decode::<Person>().unwrap(), event);

    // The personal part wins over a data key of the same name (another writer's event).
    let stored_event = StoredEvent {
        subject_id: Some("c-1"),
        personal_data: Some(r#"{"name":"Ann"}"#),
        ..stored("Registered", 1, r#"{"id":"c-1","tier":1,"name":"stale"}"#)
    };
    assert_eq!(
        stored_event.decode::<Person>().unwrap(),
        Person::Registered {
            id: "c-1".into(),
            name: Some("Ann".into()),
            tier: 1,
            email: None
        }
    );
}

#[test]
fn a_shredded_event_decodes_without_its_personal_fields() {
    let enc = encode(&registered("c-1", Some("Ann"), Some("ann@example.com"))).unwrap();
    let shredded = StoredEvent {
        subject_id: enc.subject_id.as_deref(),
        personal_data: None,
        shredded: true,
        ..stored(enc.event_type, enc.schema_version, &enc.data)
    };
    assert_eq!(
        shredded.decode::<Person>().unwrap(),
        registered("c-1", None, None)
    );

    // A plugin whose personal field is required cannot read the event any more: say why.
    #[derive(Debug, Serialize, Deserialize)]
    enum Strict {
        Registered { id: String, name: String },
    }
    impl DomainEvent for Strict {}
    let err = shredded.decode::<Strict>().unwrap_err();
    assert!(err.contains("missing field `name`"), "{err}");
    assert!(err.contains("personal data was erased"), "{err}");
}

#[test]
fn personal_data_without_a_subject_is_refused() {
    let err = encode(&registered("", Some("Ann"), None)).unwrap_err();
    assert!(err.contains("cannot encode Registered event"), "{err}");
    assert!(err.contains("names no subject"), "{err}");
    // Without a value in a personal field there is nothing to protect.
    assert!(encode(&registered("", None, None)).is_ok());
}

#[test]
fn misdeclared_personal_fields_are_refused() {
    #[derive(Debug, Serialize, Deserialize)]
    enum Typo {
        Registered { id: String, email: String },
        Tuple(String),
    }
    impl DomainEvent for Typo {
        const PERSONAL_FIELDS: &'static [(&'static str, &'static [&'static str])] =
            &[("Registered", &["emial"]), ("Tuple", &["0"])];
        fn subject_id(&self) -> Option<String> {
            Some("c-1".into())
        }
    }
    // The misspelt field would otherwise stay in `data`, in the clear.
    let err = encode(&Typo::Registered {
        id: "c-1".into(),
        email: "a@b".into(),
    })
    .unwrap_err();
    assert!(
        err.contains(r#""emial", which is not a field of Registered"#),
        "{err}"
    );
    let err = encode(&Typo::Tuple("x".into())).unwrap_err();
    assert!(err.contains("not a struct variant"), "{err}");
    assert!(check_personal_fields::<Typo>("Tuple", &["0"]).is_err());
    assert!(check_personal_fields::<Typo>("Registered", &["email"]).is_ok());
}

#[test]
fn a_personal_part_that_is_not_an_object_is_a_decoding_error() {
    let event = StoredEvent {
        subject_id: Some("c-1"),
        personal_data: Some(r#""Ann""#),
        ..stored("Registered", 1, r#"{"id":"c-1","tier":1}"#)
    };
    let err = event.decode::<Person>().unwrap_err();
    assert!(err.contains("personal data is not a JSON object"), "{err}");
    let event = StoredEvent {
        personal_data: Some(r#"{"name":"Ann"}"#),
        ..stored("Left", 1, "null")
    };
    let err = event.decode::<Person>().unwrap_err();
    assert!(err.contains("is not a JSON object"), "{err}");
}
