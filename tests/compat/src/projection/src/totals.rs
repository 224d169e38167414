// `compat-totals`, the projection of the compatibility fixtures, shared by `projection`
// (built against `eshost:plugin@0.1.0`) and `projection-v0.1.1` (against a 0.1.1 copy), which
// set `VERSION` and call `generate!` before including this file.
//
// It sums `Added` v2 amounts per stream in its read model (`total/<stream>`) and counts the
// events it saw (`events`). An `Added` that is not v2 (not upcast) is an event error.
// Queries: `total` (args `{"stream":"<id>"}`) → `{"stream":"<id>","total":T}`; `streams` →
// `{"<id>":T,...}` from a scan; `events` → the count.

include!("../../json.rs");

use eshost::plugin::read_model;
use eshost::plugin::types::PluginKind;
use exports::eshost::plugin::projection::{
    Event, EventError, Guest as ProjectionGuest, QueryError,
};

struct Plugin;

fn stored(key: &str) -> u64 {
    read_model::get(key)
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "compat-totals".into(),
            kind: PluginKind::Projection,
            version: VERSION.into(),
            handles: vec!["Added".into()],
            upcasts: vec![],
        }
    }
}

impl ProjectionGuest for Plugin {
    fn handle(events: Vec<Event>) -> Result<(), EventError> {
        for event in &events {
            let amount = match (event.schema_version, number(&event.data, "amount")) {
                (2, Some(amount)) => amount,
                _ => {
                    return Err(EventError {
                        position: event.position,
                        message: format!(
                            "expected Added v2 with an amount, got v{} {}",
                            event.schema_version, event.data
                        ),
                    });
                }
            };
            let key = format!("total/{}", event.stream_id);
            read_model::put(&key, &(stored(&key) + amount).to_string());
            read_model::put("events", &(stored("events") + 1).to_string());
        }
        Ok(())
    }

    fn query(name: String, args: String) -> Result<String, QueryError> {
        match name.as_str() {
            "total" => {
                let stream = field(&args, "stream").ok_or_else(|| {
                    QueryError::InvalidArgs("expected {\"stream\":\"<id>\"}".into())
                })?;
                let total = stored(&format!("total/{stream}"));
                Ok(format!("{{\"stream\":\"{stream}\",\"total\":{total}}}"))
            }
            "streams" => {
                let mut entries = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let page = read_model::scan("total/", after.as_deref(), 2);
                    let Some((last, _)) = page.last() else { break };
                    after = Some(last.clone());
                    for (key, value) in page {
                        entries.push(format!("\"{}\":{value}", &key["total/".len()..]));
                    }
                }
                Ok(format!("{{{}}}", entries.join(",")))
            }
            "events" => Ok(stored("events").to_string()),
            other => Err(QueryError::UnknownQuery(format!("no query named {other}"))),
        }
    }
}

export!(Plugin);
