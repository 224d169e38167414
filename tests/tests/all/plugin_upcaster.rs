//! Upcasting through a component: a rewrite, a refusal naming the event, an unchanged event,
//! and outputs that break the contract, refused naming the upcaster: no raise of the schema
//! version, a type it does not declare, data that is not JSON, an empty type. The guest is
//! `tests/guests/stuck`.

use eshost_runtime::{PluginError, UpcastError, UpcastResult};
use eshost_tests::{STUCK, event, runtime};

#[test]
fn upcasts_are_checked() {
    let (runtime, _cache) = runtime();
    let plugin = runtime.load_upcaster(STUCK).unwrap();
    assert!(plugin.info().upcasts_event("Good", 1));
    assert!(!plugin.info().upcasts_event("Good", 2));
    let mut upcaster = plugin.instantiate().unwrap();

    let mut good = event(7, "s", 1, "Good", 1, r#"{"a":1}"#);
    assert!(upcaster.upcast_in_place(&mut good).unwrap());
    assert_eq!(
        (good.event_type.as_str(), good.schema_version),
        ("Better", 2)
    );
    assert_eq!(good.data, r#"{"was":{"a":1}}"#);
    assert_eq!(
        good.position, 7,
        "everything but type, version and data is kept"
    );

    let other = event(8, "s", 2, "Other", 1, "{}");
    assert_eq!(upcaster.upcast(&other).unwrap(), UpcastResult::Unchanged);

    let error = upcaster
        .upcast(&event(9, "s", 3, "Bad", 1, "[]"))
        .unwrap_err();
    assert_eq!(
        error,
        UpcastError::Refused {
            plugin: "stuck".into(),
            position: 9,
            message: "cannot read []".into()
        }
    );

    let error = upcaster
        .upcast(&event(10, "s", 4, "Renamed", 1, "{}"))
        .unwrap_err();
    assert!(
        matches!(
            error,
            UpcastError::Plugin(PluginError::Contract { call: "upcast", .. })
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "plugin \"stuck\" broke the plugin contract in upcast: upcasting Renamed v1 at position \
         10 gave schema version 1; it must be higher"
    );

    // The instance is still good.
    let mut again = event(11, "s", 5, "Good", 1, "2");
    assert!(upcaster.upcast_in_place(&mut again).unwrap());
}

/// Issue 14, item 8: the host decides from an upcaster's declarations which plugins an event
/// can reach, so an upcast to a type the upcaster does not declare is refused, not passed on.
#[test]
fn an_upcast_to_an_undeclared_type_is_refused_naming_the_upcaster() {
    let (runtime, _cache) = runtime();
    let plugin = runtime.load_upcaster(STUCK).unwrap();
    assert!(plugin.info().may_produce("Better"), "declared in handles");
    assert!(plugin.info().may_produce("Stray"), "a type it upcasts");
    assert!(!plugin.info().may_produce("Undeclared"));
    let mut upcaster = plugin.instantiate().unwrap();

    let mut stray = event(3, "s", 1, "Stray", 1, r#"{"a":1}"#);
    let error = upcaster.upcast_in_place(&mut stray).unwrap_err();
    assert!(
        matches!(
            error,
            UpcastError::Plugin(PluginError::Contract { call: "upcast", .. })
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "plugin \"stuck\" broke the plugin contract in upcast: upcasting Stray v1 at position 3 \
         gave the event type \"Undeclared\", which it does not declare: list the types `upcast` \
         may give in `handles` of describe()"
    );
    assert_eq!(
        (
            stray.event_type.as_str(),
            stray.schema_version,
            stray.data.as_str()
        ),
        ("Stray", 1, r#"{"a":1}"#),
        "a refused upcast leaves the event as it was"
    );
}

#[test]
fn upcast_output_that_is_not_an_event_is_refused() {
    let (runtime, _cache) = runtime();
    let mut upcaster = runtime.load_upcaster(STUCK).unwrap().instantiate().unwrap();
    for (event_type, problem) in [
        ("Garbled", "gave data that is not valid JSON"),
        ("Blank", "gave an empty event type"),
    ] {
        let error = upcaster
            .upcast(&event(4, "s", 1, event_type, 1, "{}"))
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "plugin \"stuck\" broke the plugin contract in upcast: upcasting {event_type} v1 \
                 at position 4 {problem}"
            )),
            "{message}"
        );
    }
}
