//! From the store's types to the wire's and back (feature `store`): one conversion for the HTTP API,
//! the admin UI and the command line, which cannot depend on each other's crates.

use eshost_store::{Bounds, RecordedEvent};
use serde_json::Value;

use crate::{AllQuery, Event, ReadStreamQuery, Timestamp};

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

/// A stream read's range. `from` starts the read: the lowest version forward, the highest
/// backward.
impl From<&ReadStreamQuery> for Bounds {
    fn from(query: &ReadStreamQuery) -> Bounds {
        let (from_version, start_from_top) = if query.backward {
            (None, query.from)
        } else {
            (query.from, None)
        };
        Bounds {
            from_version,
            from_position: query.from_position,
            from_time: query.from_time.map(Timestamp::millis),
            until_version: [query.until_version, start_from_top]
                .into_iter()
                .flatten()
                .min(),
            until_position: query.until_position,
            until_time: query.until_time.map(Timestamp::millis),
        }
    }
}

/// A read of `$all`'s range.
impl From<&AllQuery> for Bounds {
    fn from(query: &AllQuery) -> Bounds {
        Bounds {
            from_position: query.from,
            from_time: query.from_time.map(Timestamp::millis),
            until_position: query.until_position,
            until_time: query.until_time.map(Timestamp::millis),
            ..Bounds::default()
        }
    }
}
