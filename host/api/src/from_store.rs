//! From the store's events to the wire's (feature `store`): one conversion for the HTTP API
//! and the admin UI, which cannot depend on each other's crates.

use eshost_store::RecordedEvent;
use serde_json::Value;

use crate::Event;

/// JSON text as a value; text that is not JSON as a string.
fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::from(text))
}

/// An event as the API shows it. `personal_data` is shown as the event holds it: the caller
/// decides beforehand whether it is revealed.
impl From<&RecordedEvent> for Event {
    fn from(event: &RecordedEvent) -> Event {
        let personal = event.subject_id.is_some();
        Event {
            position: event.position,
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            recorded_at: event.recorded_at,
            data: json(&event.data),
            metadata: json(&event.metadata),
            subject_id: event.subject_id.clone(),
            shredded: personal.then_some(event.shredded),
            personal_data: event
                .personal_data
                .as_deref()
                .filter(|_| personal)
                .map(json),
        }
    }
}
