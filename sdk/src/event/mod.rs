//! Events: the stored form, and the mapping between it and a plugin's plain serde enum.
//!
//! An event enum is externally tagged (serde's default): the variant name is the stored
//! `event_type`, and the variant's content is the stored `data` (a JSON object for struct
//! variants, `{}` for unit variants). Decoding drives the enum's own `Deserialize` impl with a
//! small [`serde::de::EnumAccess`] that hands serde the event type as the variant name and
//! `data` as the variant content, parsed in place: no JSON is re-built per event.

mod decode;
mod encode;
#[cfg(test)]
mod tests;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use decode::{Content, EventDeserializer, FieldProbe, VariantProbe};
use encode::EventSerializer;

/// Why an event type cannot be used: what both directions say about an unusable enum.
const NOT_AN_ENUM: &str = "event types must be plain externally tagged enums \
    (no #[serde(tag)], #[serde(untagged)] or non-enum types)";

/// A plain serde enum whose variants are the events of one domain.
///
/// Every variant is an event type, named after the variant (serde's `rename` applies). Event
/// types are at schema version 1 unless [`DomainEvent::SCHEMA_VERSIONS`] says otherwise:
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum CartEvent {
///     ItemAdded { sku: String, quantity: u32 },
///     CartCleared,
/// }
///
/// impl eshost_sdk::DomainEvent for CartEvent {
///     const SCHEMA_VERSIONS: &'static [(&'static str, u32)] = &[("ItemAdded", 2)];
/// }
/// ```
///
/// The enum must stay externally tagged: no `#[serde(tag = ...)]` or `#[serde(untagged)]`.
///
/// # Personal data
///
/// Fields listed in [`DomainEvent::PERSONAL_FIELDS`] are personal data of the subject that
/// [`DomainEvent::subject_id`] names. On encoding the SDK moves them out of `data` into the
/// event's personal part, which the host stores encrypted under the subject's key; on decoding
/// it merges them back. Once the subject is forgotten the host erases the key: the event then
/// reads as `shredded`, without its personal part, so **personal fields must decode when
/// missing**: make them `Option<..>` or give them `#[serde(default)]`.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum CustomerEvent {
///     Registered {
///         customer_id: String,
///         #[serde(default)]
///         name: Option<String>,
///         #[serde(default)]
///         email: Option<String>,
///     },
///     Closed,
/// }
///
/// impl eshost_sdk::DomainEvent for CustomerEvent {
///     const PERSONAL_FIELDS: &'static [(&'static str, &'static [&'static str])] =
///         &[("Registered", &["name", "email"])];
///
///     fn subject_id(&self) -> Option<String> {
///         match self {
///             Self::Registered { customer_id, .. } => Some(customer_id.clone()),
///             Self::Closed => None,
///         }
///     }
/// }
///
/// let e = eshost_sdk::encode(&CustomerEvent::Registered {
///     customer_id: "customer-1".into(),
///     name: Some("Ann".into()),
///     email: None,
/// })
/// .unwrap();
/// assert_eq!(e.data, r#"{"customer_id":"customer-1"}"#);
/// assert_eq!(e.subject_id.as_deref(), Some("customer-1"));
/// assert_eq!(e.personal_data.as_deref(), Some(r#"{"name":"Ann"}"#));
/// ```
///
/// Personal fields must belong to struct variants, and names are JSON keys (after serde's
/// `rename`). Null fields are left out; an event none of whose personal fields has a value
/// carries no personal part (and no subject). Encoding an event that has personal data but no
/// subject, or whose `PERSONAL_FIELDS` names a field the variant does not have, fails: a bug in
/// the plugin (a command handler traps), never personal data stored in the clear. Upcasters
/// see `data` only; the personal part passes through them unchanged.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event enum",
    note = "derive `Serialize` and `Deserialize` for it and add `impl eshost_sdk::DomainEvent for {Self} {{}}`"
)]
pub trait DomainEvent: Serialize + DeserializeOwned + 'static {
    /// The schema version of each event type that is past version 1, as
    /// `(event type, version)`. Types not listed are at version 1.
    const SCHEMA_VERSIONS: &'static [(&'static str, u32)] = &[];

    /// The fields of each event type that are personal data, as `(event type, field names)`:
    /// stored apart from `data`, encrypted, and erased when their subject is forgotten. Types
    /// not listed carry none.
    const PERSONAL_FIELDS: &'static [(&'static str, &'static [&'static str])] = &[];

    /// The data subject whose personal data this event carries, e.g. the customer's id.
    /// Needed by every event that has a value in one of its [`PERSONAL_FIELDS`](Self::PERSONAL_FIELDS);
    /// not consulted for the others.
    fn subject_id(&self) -> Option<String> {
        None
    }
}

/// The schema version `E` writes for `event_type` (1 unless [`DomainEvent::SCHEMA_VERSIONS`]
/// lists it).
pub fn schema_version<E: DomainEvent>(event_type: &str) -> u32 {
    E::SCHEMA_VERSIONS
        .iter()
        .find(|(ty, _)| *ty == event_type)
        .map_or(1, |(_, v)| *v)
}

/// The fields of `event_type` that `E` stores as personal data ([`DomainEvent::PERSONAL_FIELDS`];
/// empty for most types).
pub fn personal_fields<E: DomainEvent>(event_type: &str) -> &'static [&'static str] {
    personal_fields_in(E::PERSONAL_FIELDS, event_type)
}

fn personal_fields_in(
    table: &'static [(&'static str, &'static [&'static str])],
    event_type: &str,
) -> &'static [&'static str] {
    table
        .iter()
        .find(|(ty, _)| *ty == event_type)
        .map_or(&[], |(_, fields)| *fields)
}

/// Checks that `event_type`'s personal fields are fields of a struct variant of `E`, so that
/// none is stored in the clear by a typo.
pub(crate) fn check_personal_fields<E: DomainEvent>(
    event_type: &str,
    personal: &[&str],
) -> Result<(), String> {
    let mut probe = FieldProbe {
        variant: event_type,
        fields: None,
    };
    // The probe always fails after recording the fields; the error carries no information.
    let _ = E::deserialize(&mut probe);
    let Some(fields) = probe.fields else {
        return Err(format!(
            "PERSONAL_FIELDS lists {event_type:?}, which is not a struct variant of {}: \
             personal fields must be named fields",
            std::any::type_name::<E>()
        ));
    };
    match personal.iter().find(|f| !fields.contains(f)) {
        Some(missing) => Err(format!(
            "PERSONAL_FIELDS names {missing:?}, which is not a field of {event_type} \
             (fields: {fields:?})"
        )),
        None => Ok(()),
    }
}

/// The event types of `E`: the names of its variants, in declaration order.
///
/// Read from the enum's `Deserialize` impl, which names its variants; nothing is listed twice.
pub fn event_types<E: DomainEvent>() -> &'static [&'static str] {
    let mut probe = VariantProbe(None);
    // The probe always fails after recording the variants; the error carries no information.
    let _ = E::deserialize(&mut probe);
    probe.0.unwrap_or(&[])
}

/// A stored event, borrowed: what the host hands a plugin, before the payload is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredEvent<'a> {
    /// Global position in the log (`$all`), from 1.
    pub position: u64,
    /// The stream the event belongs to, e.g. `account-42`.
    pub stream_id: &'a str,
    /// The event's version within its stream, from 1.
    pub stream_version: u64,
    /// The event's unique id (a hyphenated UUID).
    pub event_id: &'a str,
    /// What happened, e.g. `FundsDeposited`.
    pub event_type: &'a str,
    /// The version of the shape of `data`.
    pub schema_version: u32,
    /// Commit time, milliseconds since the Unix epoch (UTC).
    pub recorded_at: u64,
    /// The payload, JSON.
    pub data: &'a str,
    /// Event metadata, a JSON object (`correlation_id`, `causation_id`, `user`, ...).
    pub metadata: &'a str,
    /// The data subject whose personal data the event carries, if any.
    pub subject_id: Option<&'a str>,
    /// The personal data (JSON), when present and not shredded.
    pub personal_data: Option<&'a str>,
    /// True when the event's personal data has been erased.
    pub shredded: bool,
}

impl<'a> StoredEvent<'a> {
    /// Decodes the payload into `T` (any serde type), for upcasters and raw handling.
    pub fn data_as<T: Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.data)
    }

    /// Decodes `event_type` + `data` into the event enum `E` without copying the payload.
    ///
    /// When the event has personal data, its keys are merged into the `data` object first
    /// (see [`DomainEvent::PERSONAL_FIELDS`]); a shredded event decodes without them.
    ///
    /// A failure to decode an older schema version says which version the plugin expected,
    /// since a missing upcaster is the usual cause.
    pub fn decode<E: DomainEvent>(&self) -> Result<E, String> {
        let content = match self.personal_data {
            None => Content::Text(self.data),
            Some(personal) => Content::Value(self.merge_personal(personal)?),
        };
        E::deserialize(EventDeserializer {
            event_type: self.event_type,
            content,
        })
        .map_err(|e| {
            let expected = schema_version::<E>(self.event_type);
            let mut message = if self.schema_version < expected {
                format!(
                    "cannot decode {} (schema version {}; this plugin reads version {expected}, \
                     is an upcaster missing?): {e}",
                    self.event_type, self.schema_version
                )
            } else {
                format!("cannot decode {} event: {e}", self.event_type)
            };
            if self.shredded {
                message.push_str(
                    " (its personal data was erased: personal fields must be Option or \
                     #[serde(default)])",
                );
            }
            message
        })
    }

    /// `data` with the keys of the personal part added (they win over keys of the same name).
    fn merge_personal(&self, personal: &str) -> Result<serde_json::Value, String> {
        let object = |text: &str, what: &str| match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            Ok(_) => Err(format!(
                "cannot decode {} event: its {what} is not a JSON object",
                self.event_type
            )),
            Err(e) => Err(format!(
                "cannot decode {} event: its {what} is not JSON: {e}",
                self.event_type
            )),
        };
        let mut data = object(self.data, "data (which has a personal part)")?;
        data.extend(object(personal, "personal data")?);
        Ok(serde_json::Value::Object(data))
    }
}

/// An event in its stored form, ready to append: what a command handler's events become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    /// The variant name.
    pub event_type: &'static str,
    /// The schema version from [`DomainEvent::SCHEMA_VERSIONS`].
    pub schema_version: u32,
    /// The variant's content as JSON (an object for struct variants, `{}` for unit ones),
    /// without the personal fields.
    pub data: String,
    /// The data subject of `personal_data`, from [`DomainEvent::subject_id`]; set exactly when
    /// `personal_data` is.
    pub subject_id: Option<String>,
    /// The personal fields that have a value, as a JSON object; `None` when there are none.
    pub personal_data: Option<String>,
}

/// Encodes an event enum value into its stored form, its personal fields (if its type has
/// any) moved from `data` into `personal_data`.
///
/// Fails when the enum is not a plain externally tagged enum, a field's `Serialize` impl
/// fails, or the personal fields are misdeclared or have no subject (see
/// [`DomainEvent::PERSONAL_FIELDS`]).
pub fn encode<E: DomainEvent>(event: &E) -> Result<EncodedEvent, String> {
    let serialized = event
        .serialize(EventSerializer {
            personal: E::PERSONAL_FIELDS,
        })
        .map_err(|e| format!("cannot encode event: {e}"))?;
    let event_type = serialized.event_type;
    let mut encoded = EncodedEvent {
        event_type,
        schema_version: schema_version::<E>(event_type),
        data: serialized.data,
        subject_id: None,
        personal_data: None,
    };
    let personal = personal_fields::<E>(event_type);
    if !personal.is_empty() {
        check_personal_fields::<E>(event_type, personal)
            .map_err(|e| format!("cannot encode {event_type} event: {e}"))?;
    }
    if let Some(personal_data) = serialized.personal {
        match event.subject_id() {
            Some(subject) if !subject.is_empty() => {
                encoded.subject_id = Some(subject);
                encoded.personal_data = Some(personal_data);
            }
            _ => {
                return Err(format!(
                    "cannot encode {event_type} event: it carries personal data ({personal:?}) \
                     but subject_id() names no subject; the host stores personal data only \
                     under a subject"
                ));
            }
        }
    }
    Ok(encoded)
}
