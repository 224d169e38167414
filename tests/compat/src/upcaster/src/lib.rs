//! `compat-added`, an upcaster built against `eshost:plugin@0.1.0` and committed as bytes
//! (`tests/compat/v0.1.0/upcaster.wasm`): `Added` v1 `{"n":N}` becomes `Added` v2
//! `{"amount":N}`; a v1 without `n` is refused.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    world: "upcaster-plugin",
    path: "../../../../wit/v0.1.0",
});

include!("../../json.rs");

use eshost::plugin::types::{PluginKind, UpcastResult, UpcastedEvent, VersionedType};
use exports::eshost::plugin::upcaster::{Event, Guest as UpcasterGuest};

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "compat-added".into(),
            kind: PluginKind::Upcaster,
            version: "1.0.0".into(),
            handles: vec!["Added".into()],
            upcasts: vec![VersionedType {
                event_type: "Added".into(),
                schema_version: 1,
            }],
        }
    }
}

impl UpcasterGuest for Plugin {
    fn upcast(event: Event) -> Result<UpcastResult, String> {
        if event.event_type != "Added" || event.schema_version != 1 {
            return Ok(UpcastResult::Unchanged);
        }
        let n = number(&event.data, "n")
            .ok_or_else(|| format!("Added v1 without a number n: {}", event.data))?;
        Ok(UpcastResult::Upcasted(UpcastedEvent {
            event_type: "Added".into(),
            schema_version: 2,
            data: format!("{{\"amount\":{n}}}"),
        }))
    }
}

export!(Plugin);
