//! A small checker of JSON values against the OpenAPI-style schemas of
//! `openapi.yaml` and `asyncapi.yaml` (types, required fields, enums,
//! nullability, bounds, array sizes, and fields a schema does not name).

use serde_json::Value;

/// Follows local `$ref`s.
pub fn resolve<'a>(doc: &'a Value, mut node: &'a Value) -> &'a Value {
    while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("only local refs: {reference}"));
        node = doc.pointer(pointer).unwrap_or_else(|| panic!("{reference} points nowhere"));
    }
    node
}

/// Whether `value` fits `schema` as far as these tests need: types,
/// required fields, enums, nullability, bounds and array sizes.
pub fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if value.is_null() {
        return match schema.get("nullable") {
            Some(Value::Bool(true)) => Ok(()),
            _ => Err(format!("{at} is null")),
        };
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{at} = {value} is not one of {allowed:?}"));
        }
    }
    let bound = |name: &str| schema.get(name).and_then(|b| b.as_i64().map(i128::from).or(b.as_u64().map(i128::from)));
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let object = value.as_object().ok_or_else(|| format!("{at} is not an object"))?;
            for field in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                let field = field.as_str().expect("required names are strings");
                if !object.contains_key(field) {
                    return Err(format!("{at}.{field} is required but missing"));
                }
            }
            for (name, property) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
                if let Some(inner) = object.get(name) {
                    conforms(doc, property, inner, &format!("{at}.{name}"))?;
                }
            }
        }
        Some("array") => {
            let items = value.as_array().ok_or_else(|| format!("{at} is not an array"))?;
            let len = items.len() as i128;
            if bound("minItems").is_some_and(|min| len < min) || bound("maxItems").is_some_and(|max| len > max) {
                return Err(format!("{at} has {len} items"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    conforms(doc, item_schema, item, &format!("{at}[{i}]"))?;
                }
            }
        }
        Some("integer") => {
            let n = value.as_i64().map(i128::from).or(value.as_u64().map(i128::from));
            let n = n.ok_or_else(|| format!("{at} = {value} is not an integer"))?;
            if bound("minimum").is_some_and(|min| n < min) || bound("maximum").is_some_and(|max| n > max) {
                return Err(format!("{at} = {n} is out of bounds"));
            }
        }
        Some("string") if !value.is_string() => return Err(format!("{at} is not a string")),
        Some("boolean") if !value.is_boolean() => return Err(format!("{at} is not a boolean")),
        _ => {}
    }
    Ok(())
}

/// The fields of `value`, at any depth, that `schema` does not name.
pub fn undocumented(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let schema = resolve(doc, schema);
    match value {
        Value::Object(object) => {
            let Some(properties) = schema.get("properties").and_then(Value::as_object) else { return Vec::new() };
            object
                .iter()
                .flat_map(|(name, inner)| match properties.get(name) {
                    Some(property) => undocumented(doc, property, inner, &format!("{at}.{name}")),
                    None => vec![format!("{at}.{name}")],
                })
                .collect()
        }
        Value::Array(items) => match schema.get("items") {
            Some(item) => {
                items.iter().enumerate().flat_map(|(i, v)| undocumented(doc, item, v, &format!("{at}[{i}]"))).collect()
            }
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}
