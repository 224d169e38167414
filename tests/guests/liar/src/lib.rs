//! An upcaster component whose `describe()` claims it is an aggregate: the host must refuse
//! it, naming the world and the claim.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    world: "upcaster-plugin",
    path: "../../../wit/v0.1.0",
});

use eshost::plugin::types::PluginKind;
use exports::eshost::plugin::upcaster::{Event, Guest as UpcasterGuest, UpcastResult};

struct Liar;

impl Guest for Liar {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "liar".into(),
            kind: PluginKind::Aggregate,
            version: "0.0.1".into(),
            handles: vec![],
            upcasts: vec![],
        }
    }
}

impl UpcasterGuest for Liar {
    fn upcast(_event: Event) -> Result<UpcastResult, String> {
        Ok(UpcastResult::Unchanged)
    }
}

export!(Liar);
