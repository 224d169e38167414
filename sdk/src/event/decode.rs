//! Decoding: an event's `(event_type, data)` fed to the enum's own `Deserialize` impl, and
//! the probes that read the enum's variants and fields from that impl.

use serde::de::{self, DeserializeSeed, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer};

use super::NOT_AN_ENUM;

/// Feeds `(event_type, data)` to an enum's `Deserialize` impl as if it were
/// `{"<event_type>": <data>}`.
pub(super) struct EventDeserializer<'de> {
    pub(super) event_type: &'de str,
    pub(super) content: Content<'de>,
}

/// The content of an event's variant: its stored `data`, or `data` merged with the personal
/// part.
pub(super) enum Content<'de> {
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
pub(super) struct VariantData<'de>(Content<'de>);

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
pub(super) struct VariantProbe(pub(super) Option<&'static [&'static str]>);

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
pub(super) struct FieldProbe<'v> {
    pub(super) variant: &'v str,
    pub(super) fields: Option<&'static [&'static str]>,
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
