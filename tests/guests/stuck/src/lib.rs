//! An upcaster that breaks the contract: `Renamed` v1 becomes `Renamed` v1 again (no raise,
//! which would loop in a chain), `Bad` v1 is refused with a message, and `Good` v1 becomes
//! `Better` v2.

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
        let upcasts = ["Renamed", "Bad", "Good"]
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
            handles: vec![],
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
            _ => Ok(UpcastResult::Unchanged),
        }
    }
}

export!(Stuck);
