//! A small JSON Schema check for the OpenAPI document's schemas: the keywords utoipa writes,
//! and no others (an unknown keyword fails the check rather than being skipped). Objects are
//! checked strictly: a property the schema does not name is an error, so an answer cannot
//! carry an undocumented field.

use serde_json::{Map, Value};

/// Checks values against the schemas of one document's `components.schemas`.
pub struct Validator<'a> {
    components: &'a Map<String, Value>,
}

/// Keywords that only describe.
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "default",
    "example",
    "examples",
    "deprecated",
    "contentMediaType",
];

impl<'a> Validator<'a> {
    /// A validator of `document`'s component schemas.
    pub fn new(document: &'a Value) -> Self {
        Validator {
            components: document["components"]["schemas"]
                .as_object()
                .expect("the document has component schemas"),
        }
    }

    /// The schema a `$ref` points to.
    pub fn resolve(&self, reference: &str) -> Result<&'a Value, String> {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .ok_or_else(|| format!("a $ref outside the components: {reference}"))?;
        self.components
            .get(name)
            .ok_or_else(|| format!("a $ref to no schema: {reference}"))
    }

    /// Whether `value` is valid under `schema`; the error says where it is not.
    pub fn check(&self, schema: &Value, value: &Value) -> Result<(), String> {
        self.at(schema, value, "$")
    }

    fn at(&self, schema: &Value, value: &Value, path: &str) -> Result<(), String> {
        let schema = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return Err(format!("{path}: nothing is allowed here")),
            Value::Object(schema) => schema,
            other => return Err(format!("{path}: a schema that is not one: {other}")),
        };
        let describes_object = ["properties", "required", "additionalProperties"]
            .iter()
            .any(|keyword| schema.contains_key(*keyword));
        if describes_object && value.is_object() {
            self.object(schema, value, path)?;
        }
        for (keyword, argument) in schema {
            match keyword.as_str() {
                "$ref" => {
                    let target = self.resolve(argument.as_str().unwrap_or_default())?;
                    self.at(target, value, path)?;
                }
                "type" => {
                    let allowed: Vec<&str> = match argument {
                        Value::String(one) => vec![one.as_str()],
                        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                        other => return Err(format!("{path}: a type that is not one: {other}")),
                    };
                    if !allowed.iter().any(|t| is_type(value, t)) {
                        return Err(format!("{path}: {value} is not of type {allowed:?}"));
                    }
                }
                "properties" | "required" | "additionalProperties" => {}
                "items" => {
                    if let Value::Array(items) = value {
                        for (index, item) in items.iter().enumerate() {
                            self.at(argument, item, &format!("{path}[{index}]"))?;
                        }
                    }
                }
                "enum" => {
                    let options = argument.as_array().ok_or("enum without a list")?;
                    if !options.contains(value) {
                        return Err(format!("{path}: {value} is not one of {argument}"));
                    }
                }
                "const" => {
                    if argument != value {
                        return Err(format!("{path}: {value} is not {argument}"));
                    }
                }
                "minimum" => {
                    if let (Some(n), Some(min)) = (value.as_f64(), argument.as_f64())
                        && n < min
                    {
                        return Err(format!("{path}: {n} is below the minimum {min}"));
                    }
                }
                "format" => self.format(argument.as_str().unwrap_or_default(), value, path)?,
                "oneOf" => {
                    let options = argument.as_array().ok_or("oneOf without a list")?;
                    let matching = options
                        .iter()
                        .filter(|option| self.at(option, value, path).is_ok())
                        .count();
                    if matching != 1 {
                        return Err(format!(
                            "{path}: {value} matches {matching} of the oneOf options {argument}"
                        ));
                    }
                }
                "anyOf" => {
                    let options = argument.as_array().ok_or("anyOf without a list")?;
                    if !options
                        .iter()
                        .any(|option| self.at(option, value, path).is_ok())
                    {
                        return Err(format!("{path}: {value} matches no anyOf option"));
                    }
                }
                "allOf" => {
                    for option in argument.as_array().ok_or("allOf without a list")? {
                        self.at(option, value, path)?;
                    }
                }
                annotation if ANNOTATIONS.contains(&annotation) => {}
                unknown => return Err(format!("{path}: the check does not know {unknown:?}")),
            }
        }
        Ok(())
    }

    fn object(&self, schema: &Map<String, Value>, value: &Value, path: &str) -> Result<(), String> {
        let object = value.as_object().expect("checked by the caller");
        let empty = Map::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = required.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                return Err(format!("{path}: the required {name:?} is missing"));
            }
        }
        for (name, field) in object {
            let field_path = format!("{path}.{name}");
            match (properties.get(name), schema.get("additionalProperties")) {
                (Some(property), _) => self.at(property, field, &field_path)?,
                (None, Some(additional)) => self.at(additional, field, &field_path)?,
                // A free-form object takes anything; a described one only what it describes.
                (None, None) if properties.is_empty() => {}
                (None, None) => return Err(format!("{field_path}: not in the schema")),
            }
        }
        Ok(())
    }

    fn format(&self, format: &str, value: &Value, path: &str) -> Result<(), String> {
        match (format, value) {
            ("uuid", Value::String(text)) => uuid::Uuid::parse_str(text)
                .map(drop)
                .map_err(|e| format!("{path}: {text:?} is not a uuid: {e}")),
            ("int32" | "int64" | "uint32" | "uint64", Value::Number(n)) if !n.is_f64() => {
                let fits = match format {
                    "int32" => n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                    "uint32" => n.as_u64().is_some_and(|n| u32::try_from(n).is_ok()),
                    "uint64" => n.as_u64().is_some(),
                    _ => n.as_i64().is_some() || n.as_u64().is_some(),
                };
                fits.then_some(())
                    .ok_or_else(|| format!("{path}: {n} is out of {format}"))
            }
            ("double" | "float", Value::Number(_)) => Ok(()),
            // A format applies to its own type; other types are the `type` keyword's business.
            ("uuid", _) | ("int32" | "int64" | "uint32" | "uint64" | "double" | "float", _) => {
                Ok(())
            }
            (unknown, _) => Err(format!(
                "{path}: the check does not know format {unknown:?}"
            )),
        }
    }
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_u64() || value.is_i64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    }
}
