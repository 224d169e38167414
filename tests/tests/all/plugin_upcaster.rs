//! Upcasting through a component: a rewrite, a refusal naming the event, an unchanged event,
//! and an upcast that does not raise the schema version, refused as a contract violation. The
//! guest is `tests/guests/stuck`.

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
        "plugin \"stuck\" broke the plugin contract in upcast: upcasting Renamed v1 gave schema \
         version 1; it must be higher"
    );

    // The instance is still good.
    let mut again = event(11, "s", 5, "Good", 1, "2");
    assert!(upcaster.upcast_in_place(&mut again).unwrap());
}
