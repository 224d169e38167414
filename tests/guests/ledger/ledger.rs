// The `ledger` test aggregate, shared by the `ledger-v1` and `ledger-trap` guests, which set
// the constants below and include this file. Command `{"type":"add","n":N}` emits `Added`
// `{"n":N}`; the state is `{"total":T,"count":C}`.
//
// A version with `TRAPS_ON` set panics while applying an `Added` of that `n` (a bug that
// only old history shows); one with `IGNORES` set leaves that `n` out of the total (a state
// that differs from version 1's).

wit_bindgen::generate!({
    world: "aggregate-plugin",
    path: "../../../wit/v0.1.0",
});

use std::cell::Cell;

use eshost::plugin::types::PluginKind;
use exports::eshost::plugin::aggregate::{
    Command, CommandError, Event, EventError, Guest as AggregateGuest, GuestInstance, NewEvent,
};

struct Ledger;

impl Guest for Ledger {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "ledger".into(),
            kind: PluginKind::Aggregate,
            version: VERSION.into(),
            handles: vec!["Added".into()],
            upcasts: vec![],
        }
    }
}

impl AggregateGuest for Ledger {
    type Instance = Instance;
}

struct Instance {
    total: Cell<u64>,
    count: Cell<u64>,
}

/// The number after `"n":` in a JSON object.
fn number(json: &str) -> Option<u64> {
    let at = json.find("\"n\":")? + 4;
    let digits: String = json[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl GuestInstance for Instance {
    fn new(_id: String) -> Self {
        Instance {
            total: Cell::new(0),
            count: Cell::new(0),
        }
    }

    fn restore(
        _id: String,
        snapshot: Vec<u8>,
    ) -> Result<exports::eshost::plugin::aggregate::Instance, String> {
        if snapshot.len() != 16 {
            return Err("a ledger snapshot is 16 bytes".into());
        }
        let word = |at: usize| u64::from_le_bytes(snapshot[at..at + 8].try_into().unwrap());
        Ok(exports::eshost::plugin::aggregate::Instance::new(Instance {
            total: Cell::new(word(0)),
            count: Cell::new(word(8)),
        }))
    }

    fn apply(&self, events: Vec<Event>) -> Result<(), EventError> {
        for e in &events {
            let Some(n) = number(&e.data) else {
                return Err(EventError {
                    position: e.position,
                    message: "an Added without n".into(),
                });
            };
            if TRAPS_ON == Some(n) {
                panic!("cannot apply n = {n} at position {}", e.position);
            }
            if IGNORES != Some(n) {
                self.total.set(self.total.get() + n);
            }
            self.count.set(self.count.get() + 1);
        }
        Ok(())
    }

    fn handle(&self, command: Command) -> Result<Vec<NewEvent>, CommandError> {
        let n = number(&command.payload)
            .ok_or_else(|| CommandError::Invalid("expected {\"type\":\"add\",\"n\":N}".into()))?;
        Ok(vec![NewEvent {
            event_type: "Added".into(),
            schema_version: 1,
            data: format!("{{\"n\":{n}}}"),
            subject_id: None,
            personal_data: None,
        }])
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut bytes = self.total.get().to_le_bytes().to_vec();
        bytes.extend_from_slice(&self.count.get().to_le_bytes());
        bytes
    }

    fn state(&self) -> String {
        format!(
            "{{\"total\":{},\"count\":{}}}",
            self.total.get(),
            self.count.get()
        )
    }
}

export!(Ledger);
