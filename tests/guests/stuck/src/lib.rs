//! An upcaster that breaks the contract: `Renamed` v1 becomes `Renamed` v1 again (no raise,
//! which would loop in a chain), `Bad` v1 is refused with a message, `Stray` v1 becomes
//! `Undeclared` v2 (a type it does not declare), `Garbled` v1 gets data that is not JSON and
//! `Blank` v1 an empty type. `Good` v1 becomes `Better` v2, as declared.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    world: "upcaster-plugin",
    path: "../../../wit/v0.1.0",
});

use eshost::plugin::types::{PluginKind, UpcastedEvent, VersionedType};
use exports::eshost::plugin::upcaster::{Event, Guest as UpcasterGuest, UpcastResult};

struct Stuck;

impl Guest for Stuck {
    fn describe() -> PluginInfo {
        let upcasts = ["Renamed", "Bad", "Good", "Stray", "Garbled", "Blank"]
            .into_iter()
            .map(|t| VersionedType {
                event_type: t.into(),
                schema_version: 1,
            })
            .collect();
        PluginInfo {
            name: "stuck".into(),
            kind: PluginKind::Upcaster,
            version: "0.0.1".into(),
            // What `upcast` may give, beside the types it upcasts.
            handles: vec!["Better".into()],
            upcasts,
        }
    }
}

impl UpcasterGuest for Stuck {
    fn upcast(event: Event) -> Result<UpcastResult, String> {
        match event.event_type.as_str() {
            "Renamed" => Ok(UpcastResult::Upcasted(UpcastedEvent {
                event_type: "Renamed".into(),
                schema_version: event.schema_version,
                data: event.data,
            })),
            "Bad" => Err(format!("cannot read {}", event.data)),
            "Good" => Ok(UpcastResult::Upcasted(UpcastedEvent {
                event_type: "Better".into(),
                schema_version: 2,
                data: format!("{{\"was\":{}}}", event.data),
            })),
            "Stray" => Ok(UpcastResult::Upcasted(UpcastedEvent {
                event_type: "Undeclared".into(),
                schema_version: 2,
                data: event.data,
            })),
            "Garbled" => Ok(UpcastResult::Upcasted(UpcastedEvent {
                event_type: "Better".into(),
                schema_version: 2,
                data: "{not json".into(),
            })),
            "Blank" => Ok(UpcastResult::Upcasted(UpcastedEvent {
                event_type: String::new(),
                schema_version: 2,
                data: event.data,
            })),
            _ => Ok(UpcastResult::Unchanged),
        }
    }
}

export!(Stuck);
