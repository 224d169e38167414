// Just enough JSON for the fixtures' flat objects, so that they need no dependency but
// wit-bindgen (small components, quick to rebuild): `{"type":"Add","amount":5}`.

/// The raw text of `key`'s value in a flat JSON object: a number, or a string without its
/// quotes (no escapes).
fn field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":");
    let start = json.find(&pattern)? + pattern.len();
    let rest = json[start..].trim_start();
    if let Some(string) = rest.strip_prefix('"') {
        return string.split('"').next();
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// `key`'s value as an unsigned number.
fn number(json: &str, key: &str) -> Option<u64> {
    field(json, key)?.parse().ok()
}
