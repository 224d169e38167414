//! Events: the stored form, and the mapping between it and a plugin's plain serde enum.
//!
//! An event enum is externally tagged (serde's default): the variant name is the stored
//! `event_type`, and the variant's content is the stored `data` (a JSON object for struct
//! variants, `{}` for unit variants). Decoding drives the enum's own `Deserialize` impl with a
//! small [`serde::de::EnumAccess`] that hands serde the event type as the variant name and
//! `data` as the variant content, parsed in place: no JSON is re-built per event.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer, Serialize, ser};

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

// ---- decoding -------------------------------------------------------------------------------

const NOT_AN_ENUM: &str = "event types must be plain externally tagged enums \
    (no #[serde(tag)], #[serde(untagged)] or non-enum types)";

/// Feeds `(event_type, data)` to an enum's `Deserialize` impl as if it were
/// `{"<event_type>": <data>}`.
struct EventDeserializer<'de> {
    event_type: &'de str,
    content: Content<'de>,
}

/// The content of an event's variant: its stored `data`, or `data` merged with the personal
/// part.
enum Content<'de> {
    Text(&'de str),
    Value(serde_json::Value),
}

impl<'de> Deserializer<'de> for EventDeserializer<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom(NOT_AN_ENUM))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

impl<'de> de::EnumAccess<'de> for EventDeserializer<'de> {
    type Error = serde_json::Error;
    type Variant = VariantData<'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), Self::Error> {
        let name = de::value::BorrowedStrDeserializer::<serde_json::Error>::new(self.event_type);
        let variant = seed.deserialize(name)?;
        Ok((variant, VariantData(self.content)))
    }
}

/// The content of one event, parsed in place (or read from the merged value) as the content
/// of the chosen variant.
struct VariantData<'de>(Content<'de>);

/// Runs `$f` on a deserializer over the content: a JSON parser over the text (which must hold
/// nothing after the value), or the merged value itself.
macro_rules! with_content {
    ($content:expr, |$de:ident| $f:expr) => {
        match $content {
            Content::Text(text) => {
                let mut parser = serde_json::Deserializer::from_str(text);
                let $de = &mut parser;
                let value = $f?;
                parser.end()?;
                Ok(value)
            }
            Content::Value($de) => $f,
        }
    };
}

impl<'de> de::VariantAccess<'de> for VariantData<'de> {
    type Error = serde_json::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        // Unit events are stored as `{}`; tolerate any well-formed payload, as serde does for
        // unknown fields.
        with_content!(self.0, |de| IgnoredAny::deserialize(de).map(drop))
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        with_content!(self.0, |de| seed.deserialize(de))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        with_content!(self.0, |de| de.deserialize_tuple(len, visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        with_content!(self.0, |de| de.deserialize_struct("", fields, visitor))
    }
}

/// Records the variant names an enum's `Deserialize` impl declares, then fails.
struct VariantProbe(Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for &mut VariantProbe {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom(NOT_AN_ENUM))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = Some(variants);
        Err(de::Error::custom("probe"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

/// Records the fields of one struct variant, named by `variant`, then fails.
struct FieldProbe<'v> {
    variant: &'v str,
    fields: Option<&'static [&'static str]>,
}

impl<'de> Deserializer<'de> for &mut FieldProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom(NOT_AN_ENUM))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

impl<'de> de::EnumAccess<'de> for &mut FieldProbe<'_> {
    type Error = de::value::Error;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), Self::Error> {
        let name = de::value::StrDeserializer::<Self::Error>::new(self.variant);
        let variant = seed.deserialize(name)?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut FieldProbe<'_> {
    type Error = de::value::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        Err(de::Error::custom("probe"))
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        _seed: T,
    ) -> Result<T::Value, Self::Error> {
        Err(de::Error::custom("probe"))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("probe"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.fields = Some(fields);
        Err(de::Error::custom("probe"))
    }
}

// ---- encoding -------------------------------------------------------------------------------

/// Error of [`EventSerializer`].
#[derive(Debug)]
struct EncodeError(String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

impl From<serde_json::Error> for EncodeError {
    fn from(e: serde_json::Error) -> Self {
        Self(e.to_string())
    }
}

fn not_an_enum<T>() -> Result<T, EncodeError> {
    Err(EncodeError(NOT_AN_ENUM.to_owned()))
}

/// Serialises an enum value into its variant name and content as JSON, the fields that
/// `personal` lists for the variant written apart.
struct EventSerializer {
    personal: &'static [(&'static str, &'static [&'static str])],
}

impl EventSerializer {
    /// Only struct variants can have personal fields.
    fn no_personal(&self, variant: &'static str) -> Result<(), EncodeError> {
        if personal_fields_in(self.personal, variant).is_empty() {
            Ok(())
        } else {
            Err(EncodeError(format!(
                "PERSONAL_FIELDS lists {variant:?}, which is not a struct variant: personal \
                 fields must be named fields"
            )))
        }
    }
}

/// An event serialised by [`EventSerializer`].
struct Serialized {
    event_type: &'static str,
    data: String,
    /// The personal fields with a value, as a JSON object.
    personal: Option<String>,
}

impl Serialized {
    fn plain(event_type: &'static str, data: String) -> Self {
        Self {
            event_type,
            data,
            personal: None,
        }
    }
}

/// Writes the fields of a struct or tuple variant straight into the JSON buffer, and the
/// personal ones into a second buffer.
struct VariantWriter {
    variant: &'static str,
    buf: Vec<u8>,
    first: bool,
    close: u8,
    /// The variant's personal fields (empty for most: then nothing below is touched).
    personal_fields: &'static [&'static str],
    /// The personal object being written; empty until a personal field has a value.
    personal: Vec<u8>,
}

impl VariantWriter {
    fn new(
        variant: &'static str,
        open: u8,
        close: u8,
        personal_fields: &'static [&'static str],
    ) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.push(open);
        Self {
            variant,
            buf,
            first: true,
            close,
            personal_fields,
            personal: Vec::new(),
        }
    }

    fn separator(&mut self) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
    }

    /// Writes a personal field into the personal object, unless it is null.
    fn personal_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        let mark = self.personal.len();
        self.personal.push(if mark == 0 { b'{' } else { b',' });
        serde_json::to_writer(&mut self.personal, key)?;
        self.personal.push(b':');
        let start = self.personal.len();
        serde_json::to_writer(&mut self.personal, value)?;
        if self.personal[start..] == *b"null" {
            self.personal.truncate(mark);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Serialized, EncodeError> {
        let utf8 =
            |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|e| EncodeError(e.to_string()));
        self.buf.push(self.close);
        let personal = if self.personal.is_empty() {
            None
        } else {
            self.personal.push(b'}');
            Some(utf8(self.personal)?)
        };
        Ok(Serialized {
            event_type: self.variant,
            data: utf8(self.buf)?,
            personal,
        })
    }
}

impl ser::SerializeStructVariant for VariantWriter {
    type Ok = Serialized;
    type Error = EncodeError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        if self.personal_fields.contains(&key) {
            return self.personal_field(key, value);
        }
        self.separator();
        serde_json::to_writer(&mut self.buf, key)?;
        self.buf.push(b':');
        serde_json::to_writer(&mut self.buf, value)?;
        Ok(())
    }

    fn end(self) -> Result<Self::Ok, Self::Error> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for VariantWriter {
    type Ok = Serialized;
    type Error = EncodeError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.separator();
        serde_json::to_writer(&mut self.buf, value)?;
        Ok(())
    }

    fn end(self) -> Result<Self::Ok, Self::Error> {
        self.finish()
    }
}

impl ser::Serializer for EventSerializer {
    type Ok = Serialized;
    type Error = EncodeError;
    type SerializeSeq = ser::Impossible<Self::Ok, EncodeError>;
    type SerializeTuple = ser::Impossible<Self::Ok, EncodeError>;
    type SerializeTupleStruct = ser::Impossible<Self::Ok, EncodeError>;
    type SerializeTupleVariant = VariantWriter;
    type SerializeMap = ser::Impossible<Self::Ok, EncodeError>;
    type SerializeStruct = ser::Impossible<Self::Ok, EncodeError>;
    type SerializeStructVariant = VariantWriter;

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Self::Ok, Self::Error> {
        self.no_personal(variant)?;
        Ok(Serialized::plain(variant, "{}".to_owned()))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Self::Ok, Self::Error> {
        self.no_personal(variant)?;
        Ok(Serialized::plain(variant, serde_json::to_string(value)?))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Self::Error> {
        self.no_personal(variant)?;
        Ok(VariantWriter::new(variant, b'[', b']', &[]))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Self::Error> {
        let personal = personal_fields_in(self.personal, variant);
        Ok(VariantWriter::new(variant, b'{', b'}', personal))
    }

    fn serialize_bool(self, _v: bool) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_i8(self, _v: i8) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_i16(self, _v: i16) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_i32(self, _v: i32) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_i64(self, _v: i64) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_u8(self, _v: u8) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_u16(self, _v: u16) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_u32(self, _v: u32) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_u64(self, _v: u64) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_f32(self, _v: f32) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_f64(self, _v: f64) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_char(self, _v: char) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_str(self, _v: &str) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_none(self) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_unit(self) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _value: &T,
    ) -> Result<Self::Ok, Self::Error> {
        not_an_enum()
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
        not_an_enum()
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Self::Error> {
        not_an_enum()
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Self::Error> {
        not_an_enum()
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
        not_an_enum()
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Self::Error> {
        not_an_enum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Ev {
        Opened {
            owner: String,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            initial: Option<u64>,
        },
        Moved(Inner),
        Pair(u32, String),
        Closed,
        #[serde(rename = "Renamed")]
        WasRenamed {
            n: i64,
        },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Inner {
        amount: u64,
    }

    impl DomainEvent for Ev {
        const SCHEMA_VERSIONS: &'static [(&'static str, u32)] = &[("Moved", 3)];
    }

    fn stored<'a>(event_type: &'a str, schema_version: u32, data: &'a str) -> StoredEvent<'a> {
        StoredEvent {
            position: 7,
            stream_id: "s-1",
            stream_version: 1,
            event_id: "00000000-0000-0000-0000-000000000000",
            event_type,
            schema_version,
            recorded_at: 0,
            data,
            metadata: "{}",
            subject_id: None,
            personal_data: None,
            shredded: false,
        }
    }

    fn roundtrip(ev: Ev) -> (EncodedEvent, serde_json::Value) {
        let enc = encode(&ev).unwrap();
        let back: Ev = stored(enc.event_type, enc.schema_version, &enc.data)
            .decode()
            .unwrap();
        assert_eq!(back, ev);
        let data = serde_json::from_str(&enc.data).unwrap();
        (enc, data)
    }

    #[test]
    fn struct_variant_is_stored_as_an_object_named_by_the_variant() {
        let (enc, data) = roundtrip(Ev::Opened {
            owner: "Ann \"A\"".into(),
            initial: Some(5),
        });
        assert_eq!((enc.event_type, enc.schema_version), ("Opened", 1));
        assert_eq!(data, json!({"owner": "Ann \"A\"", "initial": 5}));

        let (_, data) = roundtrip(Ev::Opened {
            owner: "B".into(),
            initial: None,
        });
        assert_eq!(data, json!({"owner": "B"}));
    }

    #[test]
    fn other_variant_shapes_roundtrip() {
        let (enc, data) = roundtrip(Ev::Moved(Inner { amount: 3 }));
        assert_eq!((enc.event_type, enc.schema_version), ("Moved", 3));
        assert_eq!(data, json!({"amount": 3}));

        let (_, data) = roundtrip(Ev::Pair(1, "x".into()));
        assert_eq!(data, json!([1, "x"]));

        let (enc, data) = roundtrip(Ev::Closed);
        assert_eq!(enc.event_type, "Closed");
        assert_eq!(data, json!({}));

        let (enc, _) = roundtrip(Ev::WasRenamed { n: -1 });
        assert_eq!(enc.event_type, "Renamed");
    }

    #[test]
    fn decoding_ignores_unknown_fields_and_accepts_null_for_unit_events() {
        let ev: Ev = stored("Opened", 1, r#"{"owner":"x","extra":[1,2]}"#)
            .decode()
            .unwrap();
        assert_eq!(
            ev,
            Ev::Opened {
                owner: "x".into(),
                initial: None
            }
        );
        assert_eq!(
            stored("Closed", 1, "null").decode::<Ev>().unwrap(),
            Ev::Closed
        );
    }

    #[test]
    fn decoding_errors_name_the_problem() {
        let err = stored("Nope", 1, "{}").decode::<Ev>().unwrap_err();
        assert!(err.contains("unknown variant `Nope`"), "{err}");

        let err = stored("Opened", 1, r#"{"owner":"x"} trailing"#)
            .decode::<Ev>()
            .unwrap_err();
        assert!(err.contains("trailing characters"), "{err}");

        let err = stored("Moved", 2, r#"{}"#).decode::<Ev>().unwrap_err();
        assert!(err.contains("schema version 2"), "{err}");
        assert!(err.contains("reads version 3"), "{err}");
        assert!(err.contains("missing field `amount`"), "{err}");
    }

    #[test]
    fn event_types_lists_the_variants() {
        assert_eq!(
            event_types::<Ev>(),
            ["Opened", "Moved", "Pair", "Closed", "Renamed"]
        );
        assert_eq!(schema_version::<Ev>("Moved"), 3);
        assert_eq!(schema_version::<Ev>("Opened"), 1);
    }

    #[test]
    fn internally_tagged_enums_are_refused_clearly() {
        #[derive(Debug, Serialize, Deserialize)]
        #[serde(tag = "type")]
        enum Tagged {
            A { x: u8 },
        }
        impl DomainEvent for Tagged {}

        let err = encode(&Tagged::A { x: 1 }).unwrap_err();
        assert!(err.contains("externally tagged"), "{err}");
        let err = stored("A", 1, r#"{"x":1}"#).decode::<Tagged>().unwrap_err();
        assert!(err.contains("externally tagged"), "{err}");
    }

    // ---- personal data ----------------------------------------------------------------------

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Person {
        Registered {
            id: String,
            #[serde(default)]
            name: Option<String>,
            tier: u8,
            #[serde(default, rename = "mail")]
            email: Option<String>,
        },
        // Not listed in PERSONAL_FIELDS: never split, whatever subject_id says.
        Renamed {
            id: String,
            name: String,
        },
        Left,
    }

    impl DomainEvent for Person {
        const PERSONAL_FIELDS: &'static [(&'static str, &'static [&'static str])] =
            &[("Registered", &["name", "mail"])];

        fn subject_id(&self) -> Option<String> {
            match self {
                // An empty id stands for a plugin bug: no subject.
                Self::Registered { id, .. } | Self::Renamed { id, .. } => Some(id.clone()),
                Self::Left => None,
            }
        }
    }

    fn registered(id: &str, name: Option<&str>, email: Option<&str>) -> Person {
        Person::Registered {
            id: id.into(),
            name: name.map(Into::into),
            tier: 2,
            email: email.map(Into::into),
        }
    }

    fn with_personal<'a>(enc: &'a EncodedEvent) -> StoredEvent<'a> {
        StoredEvent {
            subject_id: enc.subject_id.as_deref(),
            personal_data: enc.personal_data.as_deref(),
            ..stored(enc.event_type, enc.schema_version, &enc.data)
        }
    }

    #[test]
    fn personal_fields_move_out_of_data_under_the_subject() {
        let enc = encode(&registered(
            "c-1",
            Some("Ann \"A\""),
            Some("ann@example.com"),
        ))
        .unwrap();
        assert_eq!(enc.event_type, "Registered");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&enc.data).unwrap(),
            json!({"id": "c-1", "tier": 2})
        );
        assert_eq!(enc.subject_id.as_deref(), Some("c-1"));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(enc.personal_data.as_deref().unwrap())
                .unwrap(),
            json!({"name": "Ann \"A\"", "mail": "ann@example.com"})
        );

        // Null personal fields are left out; with none left there is no part and no subject.
        let enc = encode(&registered("c-1", None, Some("a@b"))).unwrap();
        assert_eq!(enc.personal_data.as_deref(), Some(r#"{"mail":"a@b"}"#));
        assert_eq!(enc.data, r#"{"id":"c-1","tier":2}"#);
        let enc = encode(&registered("c-1", None, None)).unwrap();
        assert_eq!(enc.data, r#"{"id":"c-1","tier":2}"#);
        assert_eq!((enc.subject_id, enc.personal_data), (None, None));

        // Types without personal fields take the plain path, subject or not.
        let enc = encode(&Person::Renamed {
            id: "c-1".into(),
            name: "Bo".into(),
        })
        .unwrap();
        assert_eq!(enc.data, r#"{"id":"c-1","name":"Bo"}"#);
        assert_eq!((enc.subject_id, enc.personal_data), (None, None));
        assert_eq!(personal_fields::<Person>("Registered"), ["name", "mail"]);
        assert!(personal_fields::<Person>("Left").is_empty());
    }

    #[test]
    fn personal_data_merges_back_on_decode() {
        let event = registered("c-1", Some("Ann"), Some("ann@example.com"));
        let enc = encode(&event).unwrap();
        assert_eq!(with_personal(&enc).decode::<Person>().unwrap(), event);

        // The personal part wins over a data key of the same name (another writer's event).
        let stored_event = StoredEvent {
            subject_id: Some("c-1"),
            personal_data: Some(r#"{"name":"Ann"}"#),
            ..stored("Registered", 1, r#"{"id":"c-1","tier":1,"name":"stale"}"#)
        };
        assert_eq!(
            stored_event.decode::<Person>().unwrap(),
            Person::Registered {
                id: "c-1".into(),
                name: Some("Ann".into()),
                tier: 1,
                email: None
            }
        );
    }

    #[test]
    fn a_shredded_event_decodes_without_its_personal_fields() {
        let enc = encode(&registered("c-1", Some("Ann"), Some("ann@example.com"))).unwrap();
        let shredded = StoredEvent {
            subject_id: enc.subject_id.as_deref(),
            personal_data: None,
            shredded: true,
            ..stored(enc.event_type, enc.schema_version, &enc.data)
        };
        assert_eq!(
            shredded.decode::<Person>().unwrap(),
            registered("c-1", None, None)
        );

        // A plugin whose personal field is required cannot read the event any more: say why.
        #[derive(Debug, Serialize, Deserialize)]
        enum Strict {
            Registered { id: String, name: String },
        }
        impl DomainEvent for Strict {}
        let err = shredded.decode::<Strict>().unwrap_err();
        assert!(err.contains("missing field `name`"), "{err}");
        assert!(err.contains("personal data was erased"), "{err}");
    }

    #[test]
    fn personal_data_without_a_subject_is_refused() {
        let err = encode(&registered("", Some("Ann"), None)).unwrap_err();
        assert!(err.contains("cannot encode Registered event"), "{err}");
        assert!(err.contains("names no subject"), "{err}");
        // Without a value in a personal field there is nothing to protect.
        assert!(encode(&registered("", None, None)).is_ok());
    }

    #[test]
    fn misdeclared_personal_fields_are_refused() {
        #[derive(Debug, Serialize, Deserialize)]
        enum Typo {
            Registered { id: String, email: String },
            Tuple(String),
        }
        impl DomainEvent for Typo {
            const PERSONAL_FIELDS: &'static [(&'static str, &'static [&'static str])] =
                &[("Registered", &["emial"]), ("Tuple", &["0"])];
            fn subject_id(&self) -> Option<String> {
                Some("c-1".into())
            }
        }
        // The misspelt field would otherwise stay in `data`, in the clear.
        let err = encode(&Typo::Registered {
            id: "c-1".into(),
            email: "a@b".into(),
        })
        .unwrap_err();
        assert!(
            err.contains(r#""emial", which is not a field of Registered"#),
            "{err}"
        );
        let err = encode(&Typo::Tuple("x".into())).unwrap_err();
        assert!(err.contains("not a struct variant"), "{err}");
        assert!(check_personal_fields::<Typo>("Tuple", &["0"]).is_err());
        assert!(check_personal_fields::<Typo>("Registered", &["email"]).is_ok());
    }

    #[test]
    fn a_personal_part_that_is_not_an_object_is_a_decoding_error() {
        let event = StoredEvent {
            subject_id: Some("c-1"),
            personal_data: Some(r#""Ann""#),
            ..stored("Registered", 1, r#"{"id":"c-1","tier":1}"#)
        };
        let err = event.decode::<Person>().unwrap_err();
        assert!(err.contains("personal data is not a JSON object"), "{err}");
        let event = StoredEvent {
            personal_data: Some(r#"{"name":"Ann"}"#),
            ..stored("Left", 1, "null")
        };
        let err = event.decode::<Person>().unwrap_err();
        assert!(err.contains("is not a JSON object"), "{err}");
    }
}
