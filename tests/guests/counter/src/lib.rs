//! A projection that counts events per type in its read model, to test the `read-model`
//! imports. Queries: `count` (args: the event type as a JSON string), `all` (a scan),
//! `sneaky-put` and `sneaky-delete` (which write during a query and must be refused).
//! An event of type `Poison` makes `handle` return an event error.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    world: "projection-plugin",
    path: "../../../wit/v0.1.0",
});

use eshost::plugin::read_model;
use eshost::plugin::types::PluginKind;
use exports::eshost::plugin::projection::{
    Event, EventError, Guest as ProjectionGuest, QueryError,
};

struct Counter;

impl Guest for Counter {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "counter".into(),
            kind: PluginKind::Projection,
            version: "0.0.1".into(),
            handles: vec![],
            upcasts: vec![],
        }
    }
}

impl ProjectionGuest for Counter {
    fn handle(events: Vec<Event>) -> Result<(), EventError> {
        for e in &events {
            if e.event_type == "Poison" {
                return Err(EventError {
                    position: e.position,
                    message: "poisoned event".into(),
                });
            }
            let key = format!("count/{}", e.event_type);
            let n: u64 = read_model::get(&key)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            read_model::put(&key, &(n + 1).to_string());
            read_model::put("last-position", &e.position.to_string());
        }
        Ok(())
    }

    fn query(name: String, args: String) -> Result<String, QueryError> {
        match name.as_str() {
            "count" => {
                let event_type = args.trim().trim_matches('"');
                if event_type.is_empty() {
                    return Err(QueryError::InvalidArgs("expected an event type".into()));
                }
                let n =
                    read_model::get(&format!("count/{event_type}")).unwrap_or_else(|| "0".into());
                Ok(n)
            }
            "all" => {
                let mut out = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let page = read_model::scan("count/", after.as_deref(), 2);
                    if page.is_empty() {
                        break;
                    }
                    after = page.last().map(|(k, _)| k.clone());
                    for (k, v) in page {
                        out.push(format!("\"{}\":{}", &k["count/".len()..], v));
                    }
                }
                Ok(format!("{{{}}}", out.join(",")))
            }
            "sneaky-put" => {
                read_model::put("count/Sneaky", "1");
                Ok("\"wrote\"".into())
            }
            "sneaky-delete" => {
                read_model::delete("last-position");
                Ok("\"deleted\"".into())
            }
            other => Err(QueryError::UnknownQuery(other.into())),
        }
    }
}

export!(Counter);
