//! Checks that run on the caller's thread, so bad input never reaches the writer.

use std::collections::HashSet;

use serde::de::IgnoredAny;

use super::error::ValidationError;
use super::event::AppendRequest;

/// Size limits applied to appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest event (type + data + metadata), in bytes.
    pub max_event_bytes: usize,
    /// The most events one append may carry.
    pub max_events_per_append: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 1024 * 1024,
            max_events_per_append: 10_000,
        }
    }
}

/// Longest stream id, in bytes.
pub const MAX_STREAM_ID_BYTES: usize = 256;
/// Longest event type, in bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 256;

/// Stream ids are non-empty, bounded, free of control characters, and may not start with `$`
/// (reserved for system streams such as `$all`).
pub fn stream_id(stream_id: &str) -> Result<(), ValidationError> {
    let reason = if stream_id.is_empty() {
        Some("it is empty")
    } else if stream_id.len() > MAX_STREAM_ID_BYTES {
        Some("it is longer than 256 bytes")
    } else if stream_id.chars().any(char::is_control) {
        Some("it contains control characters")
    } else if stream_id.starts_with('$') {
        Some("ids starting with '$' are reserved")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ValidationError::StreamId {
            stream_id: stream_id.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The id of a stream that may exist: the client rules, except that the host's own system
/// streams (such as `$erasures`) start with `$`. Reads and imports accept these.
pub fn stored_stream_id(id: &str) -> Result<(), ValidationError> {
    match id.strip_prefix('$') {
        Some(rest) if !rest.is_empty() && !rest.starts_with('$') => stream_id(rest),
        _ => stream_id(id),
    }
}

/// Everything about an append that can be checked without the store.
pub fn append(request: &AppendRequest, limits: &Limits) -> Result<(), ValidationError> {
    append_checked(request, limits, stream_id)
}

/// [`append`] for the host's own system streams.
pub fn append_system(request: &AppendRequest, limits: &Limits) -> Result<(), ValidationError> {
    append_checked(request, limits, stored_stream_id)
}

fn append_checked(
    request: &AppendRequest,
    limits: &Limits,
    stream_rule: fn(&str) -> Result<(), ValidationError>,
) -> Result<(), ValidationError> {
    let stream = &request.stream_id;
    stream_rule(stream)?;
    let count = request.events.len();
    if count == 0 || count > limits.max_events_per_append {
        return Err(ValidationError::EventCount {
            stream_id: stream.clone(),
            count,
            limit: limits.max_events_per_append,
        });
    }
    let mut seen = HashSet::with_capacity(if count > 1 { count } else { 0 });
    for event in &request.events {
        if count > 1 && !seen.insert(event.event_id) {
            return Err(ValidationError::RepeatedEventId {
                stream_id: stream.clone(),
                event_id: event.event_id,
            });
        }
        fields(
            stream,
            event.event_id,
            &event.event_type,
            &event.data,
            &event.metadata,
            limits,
        )?;
        personal(
            stream,
            event.event_id,
            event.subject_id.as_deref(),
            event.personal_data.as_deref(),
            event.event_type.len() + event.data.len() + event.metadata.len(),
            limits,
        )?;
    }
    Ok(())
}

/// Personal data comes with a valid subject id, is JSON, and counts toward the size limit;
/// a subject id without personal data is refused, as nothing would be erased with it.
pub fn personal(
    stream: &str,
    event_id: uuid::Uuid,
    subject_id: Option<&str>,
    personal_data: Option<&str>,
    other_bytes: usize,
    limits: &Limits,
) -> Result<(), ValidationError> {
    let refuse = |reason: String| ValidationError::Personal {
        stream_id: stream.to_owned(),
        event_id,
        reason,
    };
    match (subject_id, personal_data) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(refuse("personal_data needs a subject_id".into())),
        (Some(_), None) => Err(refuse(
            "subject_id is only stored with personal_data".into(),
        )),
        (Some(subject), Some(data)) => {
            super::keys::check_subject(subject).map_err(refuse)?;
            let size = other_bytes + subject.len() + data.len();
            if size > limits.max_event_bytes {
                return Err(ValidationError::TooLarge {
                    stream_id: stream.to_owned(),
                    event_id,
                    size,
                    limit: limits.max_event_bytes,
                });
            }
            serde_json::from_str::<IgnoredAny>(data)
                .map(|_| ())
                .map_err(|error| refuse(format!("personal_data is not valid JSON: {error}")))
        }
    }
}

/// The checks every stored event passes: its type, size, and JSON.
pub fn fields(
    stream: &str,
    event_id: uuid::Uuid,
    event_type: &str,
    data: &str,
    metadata: &str,
    limits: &Limits,
) -> Result<(), ValidationError> {
    let type_reason = if event_type.is_empty() {
        Some("it is empty")
    } else if event_type.len() > MAX_EVENT_TYPE_BYTES {
        Some("it is longer than 256 bytes")
    } else if event_type.chars().any(char::is_control) {
        Some("it contains control characters")
    } else {
        None
    };
    if let Some(reason) = type_reason {
        return Err(ValidationError::EventType {
            stream_id: stream.to_owned(),
            event_id,
            event_type: event_type.to_owned(),
            reason,
        });
    }
    let size = event_type.len() + data.len() + metadata.len();
    if size > limits.max_event_bytes {
        return Err(ValidationError::TooLarge {
            stream_id: stream.to_owned(),
            event_id,
            size,
            limit: limits.max_event_bytes,
        });
    }
    let json_error = |field: &'static str, reason: String| ValidationError::Json {
        stream_id: stream.to_owned(),
        event_id,
        field,
        reason,
    };
    serde_json::from_str::<IgnoredAny>(data)
        .map_err(|error| json_error("data", error.to_string()))?;
    if !metadata.trim_start().starts_with('{') {
        return Err(json_error("metadata", "it must be a JSON object".into()));
    }
    serde_json::from_str::<IgnoredAny>(metadata)
        .map_err(|error| json_error("metadata", error.to_string()))?;
    Ok(())
}

/// Drop whitespace around the JSON texts, so that what is stored is exactly the JSON value
/// (and survives an NDJSON export and import byte for byte).
pub fn trim_json(request: &mut AppendRequest) {
    for event in &mut request.events {
        let personal = event.personal_data.as_mut();
        for text in [&mut event.data, &mut event.metadata]
            .into_iter()
            .chain(personal)
        {
            let trimmed = text.trim();
            if trimmed.len() != text.len() {
                *text = trimmed.to_owned();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ExpectedVersion, ProposedEvent};

    fn request(stream: &str, events: Vec<ProposedEvent>) -> AppendRequest {
        AppendRequest::new(stream, ExpectedVersion::Any, events)
    }

    #[test]
    fn stream_ids_follow_the_rules() {
        assert!(stream_id("account-42").is_ok());
        assert!(stream_id("").is_err());
        assert!(stream_id("$all").is_err());
        assert!(stream_id("a\nb").is_err());
        assert!(stream_id(&"x".repeat(257)).is_err());
        assert!(stream_id(&"x".repeat(256)).is_ok());
    }

    #[test]
    fn json_is_checked_and_metadata_must_be_an_object() {
        let limits = Limits::default();
        let good = ProposedEvent::new("Opened", r#"{"a":1}"#);
        assert!(append(&request("s", vec![good.clone()]), &limits).is_ok());
        let bad_data = ProposedEvent::new("Opened", "{not json");
        assert!(matches!(
            append(&request("s", vec![bad_data]), &limits),
            Err(ValidationError::Json { field: "data", .. })
        ));
        let array_metadata = good.clone().with_metadata("[1]");
        assert!(matches!(
            append(&request("s", vec![array_metadata]), &limits),
            Err(ValidationError::Json {
                field: "metadata",
                ..
            })
        ));
        let trailing = ProposedEvent::new("Opened", r#"{"a":1} x"#);
        assert!(append(&request("s", vec![trailing]), &limits).is_err());
    }

    #[test]
    fn sizes_counts_and_repeated_ids_are_refused() {
        let limits = Limits {
            max_event_bytes: 64,
            max_events_per_append: 2,
        };
        let big = ProposedEvent::new("Big", format!("\"{}\"", "x".repeat(100)));
        assert!(matches!(
            append(&request("s", vec![big]), &limits),
            Err(ValidationError::TooLarge { .. })
        ));
        assert!(matches!(
            append(&request("s", vec![]), &limits),
            Err(ValidationError::EventCount { count: 0, .. })
        ));
        let event = ProposedEvent::new("A", "1");
        assert!(matches!(
            append(&request("s", vec![event.clone(); 3]), &limits),
            Err(ValidationError::EventCount { count: 3, .. })
        ));
        assert!(matches!(
            append(&request("s", vec![event.clone(), event]), &limits),
            Err(ValidationError::RepeatedEventId { .. })
        ));
    }
}
