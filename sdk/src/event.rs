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
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event enum",
    note = "derive `Serialize` and `Deserialize` for it and add `impl eshost_sdk::DomainEvent for {Self} {{}}`"
)]
pub trait DomainEvent: Serialize + DeserializeOwned + 'static {
    /// The schema version of each event type that is past version 1, as
    /// `(event type, version)`. Types not listed are at version 1.
    const SCHEMA_VERSIONS: &'static [(&'static str, u32)] = &[];
}

/// The schema version `E` writes for `event_type` (1 unless [`DomainEvent::SCHEMA_VERSIONS`]
/// lists it).
pub fn schema_version<E: DomainEvent>(event_type: &str) -> u32 {
    E::SCHEMA_VERSIONS
        .iter()
        .find(|(ty, _)| *ty == event_type)
        .map_or(1, |(_, v)| *v)
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
    /// A failure to decode an older schema version says which version the plugin expected,
    /// since a missing upcaster is the usual cause.
    pub fn decode<E: DomainEvent>(&self) -> Result<E, String> {
        E::deserialize(EventDeserializer {
            event_type: self.event_type,
            data: self.data,
        })
        .map_err(|e| {
            let expected = schema_version::<E>(self.event_type);
            if self.schema_version < expected {
                format!(
                    "cannot decode {} (schema version {}; this plugin reads version {expected}, \
                     is an upcaster missing?): {e}",
                    self.event_type, self.schema_version
                )
            } else {
                format!("cannot decode {} event: {e}", self.event_type)
            }
        })
    }
}

/// An event in its stored form, ready to append: what a command handler's events become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    /// The variant name.
    pub event_type: &'static str,
    /// The schema version from [`DomainEvent::SCHEMA_VERSIONS`].
    pub schema_version: u32,
    /// The variant's content as JSON (an object for struct variants, `{}` for unit ones).
    pub data: String,
}

/// Encodes an event enum value into its stored form.
///
/// Fails only when the enum is not a plain externally tagged enum, or a field's `Serialize`
/// impl fails.
pub fn encode<E: DomainEvent>(event: &E) -> Result<EncodedEvent, String> {
    let (event_type, data) = event
        .serialize(EventSerializer)
        .map_err(|e| format!("cannot encode event: {e}"))?;
    Ok(EncodedEvent {
        event_type,
        schema_version: schema_version::<E>(event_type),
        data,
    })
}

// ---- decoding -------------------------------------------------------------------------------

const NOT_AN_ENUM: &str = "event types must be plain externally tagged enums \
    (no #[serde(tag)], #[serde(untagged)] or non-enum types)";

/// Feeds `(event_type, data)` to an enum's `Deserialize` impl as if it were
/// `{"<event_type>": <data>}`.
struct EventDeserializer<'de> {
    event_type: &'de str,
    data: &'de str,
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
        Ok((variant, VariantData(self.data)))
    }
}

/// The `data` of one event, parsed in place as the content of the chosen variant.
struct VariantData<'de>(&'de str);

impl<'de> VariantData<'de> {
    fn parse<T>(
        self,
        f: impl FnOnce(
            &mut serde_json::Deserializer<serde_json::de::StrRead<'de>>,
        ) -> serde_json::Result<T>,
    ) -> serde_json::Result<T> {
        let mut de = serde_json::Deserializer::from_str(self.0);
        let value = f(&mut de)?;
        de.end()?;
        Ok(value)
    }
}

impl<'de> de::VariantAccess<'de> for VariantData<'de> {
    type Error = serde_json::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        // Unit events are stored as `{}`; tolerate any well-formed payload, as serde does for
        // unknown fields.
        self.parse(|de| IgnoredAny::deserialize(de).map(drop))
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        self.parse(|de| seed.deserialize(de))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.parse(|de| de.deserialize_tuple(len, visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.parse(|de| de.deserialize_struct("", fields, visitor))
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

/// Serialises an enum value into `(variant name, content as JSON)`.
struct EventSerializer;

/// Writes the fields of a struct or tuple variant straight into the JSON buffer.
struct VariantWriter {
    variant: &'static str,
    buf: Vec<u8>,
    first: bool,
    close: u8,
}

impl VariantWriter {
    fn new(variant: &'static str, open: u8, close: u8) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.push(open);
        Self {
            variant,
            buf,
            first: true,
            close,
        }
    }

    fn separator(&mut self) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
    }

    fn finish(mut self) -> Result<(&'static str, String), EncodeError> {
        self.buf.push(self.close);
        let data = String::from_utf8(self.buf).map_err(|e| EncodeError(e.to_string()))?;
        Ok((self.variant, data))
    }
}

impl ser::SerializeStructVariant for VariantWriter {
    type Ok = (&'static str, String);
    type Error = EncodeError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
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
    type Ok = (&'static str, String);
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
    type Ok = (&'static str, String);
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
        Ok((variant, "{}".to_owned()))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Self::Ok, Self::Error> {
        Ok((variant, serde_json::to_string(value)?))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Self::Error> {
        Ok(VariantWriter::new(variant, b'[', b']'))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Self::Error> {
        Ok(VariantWriter::new(variant, b'{', b'}'))
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
}
