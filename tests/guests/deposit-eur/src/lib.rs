//! A new version of the `deposit-currency` upcaster that reads old deposits otherwise than the
//! first-party one: `FundsDeposited` v1 `{amount}` was in whole euros, so it becomes v2
//! `{amount: amount * 100, currency: "EUR"}` (other fields are dropped); a v1 deposit of 13 is
//! refused (a candidate that breaks on one old event).

#![allow(unsafe_code)]

wit_bindgen::generate!({
    world: "upcaster-plugin",
    path: "../../../wit/v0.1.0",
});

use eshost::plugin::types::{PluginKind, UpcastedEvent, VersionedType};
use exports::eshost::plugin::upcaster::{Event, Guest as UpcasterGuest, UpcastResult};

struct DepositEur;

/// The number after `"amount":`.
fn amount(json: &str) -> Option<u64> {
    let at = json.find("\"amount\":")? + 9;
    let digits: String = json[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl Guest for DepositEur {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "deposit-currency".into(),
            kind: PluginKind::Upcaster,
            version: "2-eur".into(),
            handles: vec!["FundsDeposited".into()],
            upcasts: vec![VersionedType {
                event_type: "FundsDeposited".into(),
                schema_version: 1,
            }],
        }
    }
}

impl UpcasterGuest for DepositEur {
    fn upcast(event: Event) -> Result<UpcastResult, String> {
        if (event.event_type.as_str(), event.schema_version) != ("FundsDeposited", 1) {
            return Ok(UpcastResult::Unchanged);
        }
        let Some(amount) = amount(&event.data) else {
            return Err(format!(
                "FundsDeposited v1 at position {} has no amount",
                event.position
            ));
        };
        if amount == 13 {
            return Err(format!("a deposit of 13 at position {}", event.position));
        }
        Ok(UpcastResult::Upcasted(UpcastedEvent {
            event_type: "FundsDeposited".into(),
            schema_version: 2,
            data: format!("{{\"amount\":{},\"currency\":\"EUR\"}}", amount * 100),
        }))
    }
}

export!(DepositEur);
