//! The expected version of a stream, with one encoding on the wire: `"any"`, `"no_stream"`,
//! `"stream_exists"` or a version number. In JSON the number is a number; in a query string
//! or on the command line, where everything is text, it is its digits.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

/// What a stream's version must be for a write to go ahead; a mismatch is a 409 `conflict`
/// with the actual version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// Whatever the stream's version.
    #[default]
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must exist (have at least one event).
    StreamExists,
    /// The stream's last version must be exactly this (0: the stream must not exist).
    Exact(u64),
}

const ANY: &str = "any";
const NO_STREAM: &str = "no_stream";
const STREAM_EXISTS: &str = "stream_exists";

impl ExpectedVersion {
    fn named(text: &str) -> Option<ExpectedVersion> {
        match text {
            ANY => Some(ExpectedVersion::Any),
            NO_STREAM => Some(ExpectedVersion::NoStream),
            STREAM_EXISTS => Some(ExpectedVersion::StreamExists),
            _ => None,
        }
    }
}

/// The text form: `any`, `no_stream`, `stream_exists` or the version's digits.
impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str(ANY),
            ExpectedVersion::NoStream => f.write_str(NO_STREAM),
            ExpectedVersion::StreamExists => f.write_str(STREAM_EXISTS),
            ExpectedVersion::Exact(version) => write!(f, "{version}"),
        }
    }
}

/// Parses the text form (query strings, the command line).
impl std::str::FromStr for ExpectedVersion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(named) = ExpectedVersion::named(text) {
            return Ok(named);
        }
        // Digits only: `u64::from_str` would also take a leading `+`.
        if !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && let Ok(version) = text.parse()
        {
            return Ok(ExpectedVersion::Exact(version));
        }
        Err(format!(
            "expected version {text:?} is not one of any, no_stream, stream_exists or a version number"
        ))
    }
}

impl Serialize for ExpectedVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ExpectedVersion::Exact(version) => serializer.serialize_u64(*version),
            named => serializer.collect_str(named),
        }
    }
}

/// In JSON: one of the three names, or a non-negative integer (not a numeric string).
impl<'de> Deserialize<'de> for ExpectedVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Expected;

        impl Visitor<'_> for Expected {
            type Value = ExpectedVersion;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"any\", \"no_stream\", \"stream_exists\" or a version number")
            }

            fn visit_u64<E: de::Error>(self, version: u64) -> Result<ExpectedVersion, E> {
                Ok(ExpectedVersion::Exact(version))
            }

            fn visit_i64<E: de::Error>(self, version: i64) -> Result<ExpectedVersion, E> {
                u64::try_from(version)
                    .map(ExpectedVersion::Exact)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(version), &self))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<ExpectedVersion, E> {
                ExpectedVersion::named(text)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(text), &self))
            }
        }

        deserializer.deserialize_any(Expected)
    }
}

/// Reads an optional expected version from text (a query parameter).
pub(crate) fn from_text<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<ExpectedVersion>, D::Error> {
    let text: Option<String> = Option::deserialize(deserializer)?;
    text.map(|text| text.parse().map_err(de::Error::custom))
        .transpose()
}

impl PartialSchema for ExpectedVersion {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "what the stream's version must be: any, no_stream, stream_exists, or exactly \
                 this version (0: the stream must not exist)",
            ))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([ANY, NO_STREAM, STREAM_EXISTS])),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .into()
    }
}

impl ToSchema for ExpectedVersion {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ExpectedVersion")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_encoding_in_json_and_its_text_form() {
        for (value, json) in [
            (ExpectedVersion::Any, "\"any\""),
            (ExpectedVersion::NoStream, "\"no_stream\""),
            (ExpectedVersion::StreamExists, "\"stream_exists\""),
            (ExpectedVersion::Exact(7), "7"),
        ] {
            assert_eq!(serde_json::to_string(&value).unwrap(), json);
            assert_eq!(
                serde_json::from_str::<ExpectedVersion>(json).unwrap(),
                value
            );
            assert_eq!(value.to_string().parse::<ExpectedVersion>().unwrap(), value);
        }
        for refused in [
            "\"7\"",
            "\"no-stream\"",
            "-1",
            "1.5",
            "null",
            "{\"exact\":1}",
        ] {
            assert!(
                serde_json::from_str::<ExpectedVersion>(refused).is_err(),
                "{refused}"
            );
        }
        for refused in [
            "",
            "-1",
            "+1",
            "no-stream",
            "sometimes",
            "99999999999999999999",
        ] {
            assert!(refused.parse::<ExpectedVersion>().is_err(), "{refused}");
        }
    }
}
