//! `compat-counter`, an aggregate built against `eshost:plugin@0.1.0` and committed as bytes
//! (`tests/compat/v0.1.0/aggregate.wasm`): later hosts must keep loading it unchanged.
//!
//! Commands: `{"type":"Add","amount":N}` adds N (an `Added` event, schema 2: `{"amount":N}`;
//! refused when N is 0 (invalid) or the total would pass 100 (rejected)), and
//! `{"type":"Name","name":"..."}` records a name as personal data of subject `<id>` (a
//! `Named` event). State: `{"id":...,"total":T,"events":E}`; snapshot: `T,E`.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    world: "aggregate-plugin",
    path: "../../../../wit/v0.1.0",
});

include!("../../json.rs");

use std::cell::Cell;

use eshost::plugin::types::PluginKind;
use exports::eshost::plugin::aggregate::{
    Command, CommandError, Event, EventError, Guest as AggregateGuest, GuestInstance, Instance,
    NewEvent,
};

const LIMIT: u64 = 100;

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "compat-counter".into(),
            kind: PluginKind::Aggregate,
            version: "1.0.0".into(),
            handles: vec!["Added".into(), "Named".into()],
            upcasts: vec![],
        }
    }
}

impl AggregateGuest for Plugin {
    type Instance = Counter;
}

struct Counter {
    id: String,
    total: Cell<u64>,
    events: Cell<u64>,
}

impl GuestInstance for Counter {
    fn new(id: String) -> Self {
        Counter {
            id,
            total: Cell::new(0),
            events: Cell::new(0),
        }
    }

    fn restore(id: String, snapshot: Vec<u8>) -> Result<Instance, String> {
        let text = String::from_utf8(snapshot).map_err(|_| "snapshot is not text".to_owned())?;
        let (total, events) = text
            .split_once(',')
            .and_then(|(t, e)| Some((t.parse().ok()?, e.parse().ok()?)))
            .ok_or_else(|| format!("snapshot {text:?} is not `total,events`"))?;
        Ok(Instance::new(Counter {
            id,
            total: Cell::new(total),
            events: Cell::new(events),
        }))
    }

    fn apply(&self, events: Vec<Event>) -> Result<(), EventError> {
        for event in &events {
            match (event.event_type.as_str(), event.schema_version) {
                ("Added", 2) => {
                    let amount = number(&event.data, "amount").ok_or_else(|| EventError {
                        position: event.position,
                        message: format!("Added v2 without an amount: {}", event.data),
                    })?;
                    self.total.set(self.total.get() + amount);
                }
                ("Named", 1) => {}
                (other, version) => {
                    return Err(EventError {
                        position: event.position,
                        message: format!("cannot apply {other} v{version}"),
                    });
                }
            }
            self.events.set(self.events.get() + 1);
        }
        Ok(())
    }

    fn handle(&self, command: Command) -> Result<Vec<NewEvent>, CommandError> {
        match field(&command.payload, "type") {
            Some("Add") => {
                let amount = number(&command.payload, "amount")
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        CommandError::Invalid("amount must be a positive number".into())
                    })?;
                let total = self.total.get();
                if total + amount > LIMIT {
                    return Err(CommandError::Rejected(format!(
                        "limit {LIMIT} exceeded: total {total}, adding {amount}"
                    )));
                }
                Ok(vec![NewEvent {
                    event_type: "Added".into(),
                    schema_version: 2,
                    data: format!("{{\"amount\":{amount}}}"),
                    subject_id: None,
                    personal_data: None,
                }])
            }
            Some("Name") => {
                let name = field(&command.payload, "name")
                    .ok_or_else(|| CommandError::Invalid("name is missing".into()))?;
                Ok(vec![NewEvent {
                    event_type: "Named".into(),
                    schema_version: 1,
                    data: "{}".into(),
                    subject_id: Some(self.id.clone()),
                    personal_data: Some(format!("{{\"name\":\"{name}\"}}")),
                }])
            }
            _ => Err(CommandError::Invalid(format!(
                "unknown command {}",
                command.payload
            ))),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        format!("{},{}", self.total.get(), self.events.get()).into_bytes()
    }

    fn state(&self) -> String {
        format!(
            "{{\"id\":\"{}\",\"total\":{},\"events\":{}}}",
            self.id,
            self.total.get(),
            self.events.get()
        )
    }
}

export!(Plugin);
