// The `tally` test projection, shared by the `tally-v1`, `tally-v2` and `tally-bad` guests,
// which set the constants below and include this file. It counts events per stream
// (`stream/<id>`) and in all (`total`), and records its version in each answer.
//
// `Poison` events trap in a version with `POISON_TRAPS` (a plugin bug); `Refused` events are
// refused with an event error in a version with `REFUSES`. A version with `DESCRIBE_TRAPS`
// traps in `describe()`. Queries: `summary` → `{"version","total","sum"}` where `sum` adds
// the per-stream counts from a scan (equal to `total` in any committed state); `stream`
// (args: the stream id as a JSON string) → its count.

wit_bindgen::generate!({
    world: "projection-plugin",
    path: "../../../wit/v0.1.0",
});

use eshost::plugin::read_model;
use eshost::plugin::types::PluginKind;
use exports::eshost::plugin::projection::{
    Event, EventError, Guest as ProjectionGuest, QueryError,
};

struct Tally;

fn count(key: &str) -> u64 {
    read_model::get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Guest for Tally {
    fn describe() -> PluginInfo {
        if DESCRIBE_TRAPS {
            panic!("this version cannot describe itself");
        }
        PluginInfo {
            name: "tally".into(),
            kind: PluginKind::Projection,
            version: VERSION.into(),
            handles: vec![],
            upcasts: vec![],
        }
    }
}

impl ProjectionGuest for Tally {
    fn handle(events: Vec<Event>) -> Result<(), EventError> {
        for e in &events {
            if POISON_TRAPS && e.event_type == "Poison" {
                panic!("poison at position {}", e.position);
            }
            if REFUSES && e.event_type == "Refused" {
                return Err(EventError {
                    position: e.position,
                    message: "refused event".into(),
                });
            }
            let key = format!("stream/{}", e.stream_id);
            read_model::put(&key, &(count(&key) + 1).to_string());
            read_model::put("total", &(count("total") + 1).to_string());
        }
        Ok(())
    }

    fn query(name: String, args: String) -> Result<String, QueryError> {
        match name.as_str() {
            "summary" => {
                let mut sum = 0u64;
                let mut after: Option<String> = None;
                loop {
                    let page = read_model::scan("stream/", after.as_deref(), 50);
                    if page.is_empty() {
                        break;
                    }
                    after = page.last().map(|(k, _)| k.clone());
                    sum += page.iter().map(|(_, v)| v.parse::<u64>().unwrap_or(0)).sum::<u64>();
                }
                Ok(format!(
                    r#"{{"version":"{VERSION}","total":{},"sum":{sum}}}"#,
                    count("total")
                ))
            }
            "stream" => {
                let stream = args.trim().trim_matches('"');
                Ok(count(&format!("stream/{stream}")).to_string())
            }
            other => Err(QueryError::UnknownQuery(other.into())),
        }
    }
}

export!(Tally);
