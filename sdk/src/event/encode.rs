//! Encoding: an enum value serialised into its variant name and content as JSON, the personal
//! fields written apart.

use std::fmt;

use serde::{Serialize, ser};

use super::{NOT_AN_ENUM, personal_fields_in};

/// Error of [`EventSerializer`].
#[derive(Debug)]
pub(super) struct EncodeError(String);

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
pub(super) struct EventSerializer {
    pub(super) personal: &'static [(&'static str, &'static [&'static str])],
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
pub(super) struct Serialized {
    pub(super) event_type: &'static str,
    pub(super) data: String,
    /// The personal fields with a value, as a JSON object.
    pub(super) personal: Option<String>,
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
pub(super) struct VariantWriter {
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
