//! The OpenAPI 3.1 document of [`ROUTES`], with the schemas of the wire contract
//! ([`eshost_api`]) generated from its types.

use std::collections::BTreeMap;

use eshost_api::ErrorBody;
use serde_json::{Map, Value, json};

use crate::routes::{Access, Answer, Body, ROUTES, Schema, schema};

const ERROR: Schema = schema::<ErrorBody>();

/// A `$ref` to a component schema, registering it (and what it refers to) on the way.
fn reference(schema: &Schema, components: &mut BTreeMap<String, Value>) -> Value {
    let mut collected = Vec::new();
    schema.collect(&mut collected);
    for (name, schema) in collected {
        components
            .entry(name)
            .or_insert_with(|| serde_json::to_value(schema).unwrap_or(Value::Null));
    }
    json!({"$ref": format!("#/components/schemas/{}", schema.name())})
}

fn request_body(body: Body, components: &mut BTreeMap<String, Value>) -> Option<Value> {
    match body {
        Body::None => None,
        Body::Json(schema) | Body::OptionalJson(schema) => Some(json!({
            "required": matches!(body, Body::Json(_)),
            "content": {"application/json": {"schema": reference(&schema, components)}}
        })),
        Body::Wasm => Some(json!({
            "required": true,
            "content": {"application/wasm": {"schema": {"type": "string", "contentMediaType": "application/wasm"}}}
        })),
    }
}

fn answer(answer: Answer, components: &mut BTreeMap<String, Value>) -> Value {
    match answer {
        Answer::Json(schema) => json!({
            "description": "success",
            "content": {"application/json": {"schema": reference(&schema, components)}}
        }),
        Answer::EventStream(schema) => json!({
            "description": "server-sent events: `id` is the position, `event` the type, `data` the event",
            "content": {"text/event-stream": {
                "schema": {"type": "string"},
                "x-eshost-item-schema": reference(&schema, components)
            }}
        }),
        Answer::Text => json!({
            "description": "Prometheus text exposition",
            "content": {"text/plain": {"schema": {"type": "string"}}}
        }),
        Answer::Document => json!({
            "description": "this document",
            "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["openapi", "info", "paths"]
            }}}
        }),
    }
}

/// The document.
pub fn document() -> Value {
    let mut components = BTreeMap::new();
    let error = reference(&ERROR, &mut components);
    let mut paths = Map::new();
    for route in ROUTES {
        let mut parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if let Some(query) = route.query {
            parameters.extend(
                query
                    .parameters()
                    .into_iter()
                    .map(|p| serde_json::to_value(p).unwrap_or(Value::Null)),
            );
        }
        parameters.extend(route.headers.iter().map(|(name, meaning)| {
            json!({"name": name, "in": "header", "required": false, "description": meaning,
                   "schema": {"type": "string"}})
        }));
        let mut responses = Map::new();
        let success = answer(route.answer, &mut components);
        for status in route.statuses {
            responses.insert(status.to_string(), success.clone());
        }
        responses.insert(
            "default".into(),
            json!({
                "description": "an error",
                "content": {"application/json": {"schema": error.clone()}}
            }),
        );
        let mut operation = json!({
            "summary": route.summary,
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(body) = request_body(route.body, &mut components) {
            operation["requestBody"] = body;
        }
        match route.access {
            Access::Public => operation["security"] = json!([]),
            Access::Role(role) => {
                operation["security"] = json!([{"bearer": []}]);
                operation["x-eshost-role"] = role.as_str().into();
            }
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.as_str().to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "eshost", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": components,
        }
    })
}
