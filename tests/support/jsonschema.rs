//! A small JSON Schema validator for the keywords our documented schemas use (type, enum,
//! required, properties, additionalProperties, items, prefixItems, minItems, maxItems, minimum).
//! It refuses any other keyword, so a schema change that needs more fails loudly here.

use serde_json::Value;

const KNOWN: &[&str] = &[
    "$schema",
    "$id",
    "title",
    "description",
    "type",
    "enum",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "minimum",
];

/// Validate `v` against `schema`; Err lists every violation with its JSON path.
pub fn validate(schema: &Value, v: &Value) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    check(schema, v, "$", &mut errs);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        _ => false,
    }
}

fn check(s: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    let Some(obj) = s.as_object() else {
        errs.push(format!("{path}: schema is not an object"));
        return;
    };
    for k in obj.keys() {
        if !KNOWN.contains(&k.as_str()) {
            errs.push(format!(
                "{path}: schema keyword {k} is not supported by this validator"
            ));
        }
    }
    if let Some(t) = obj.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| type_ok(t, v)),
            _ => false,
        };
        if !ok {
            errs.push(format!("{path}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(Value::Array(allowed)) = obj.get("enum") {
        if !allowed.contains(v) {
            errs.push(format!("{path}: {v} is not one of {allowed:?}"));
        }
    }
    if let Some(min) = obj.get("minimum").and_then(Value::as_f64) {
        if v.as_f64().is_some_and(|x| x < min) {
            errs.push(format!("{path}: {v} < {min}"));
        }
    }
    if let Value::Object(o) = v {
        if let Some(Value::Array(req)) = obj.get("required") {
            for r in req.iter().filter_map(Value::as_str) {
                if !o.contains_key(r) {
                    errs.push(format!("{path}: missing required {r}"));
                }
            }
        }
        let props = obj.get("properties").and_then(Value::as_object);
        for (k, val) in o {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => check(ps, val, &format!("{path}.{k}"), errs),
                None => {
                    if obj.get("additionalProperties") == Some(&Value::Bool(false)) {
                        errs.push(format!("{path}: unexpected property {k}"));
                    }
                }
            }
        }
    }
    if let Value::Array(a) = v {
        if let Some(n) = obj.get("minItems").and_then(Value::as_u64) {
            if (a.len() as u64) < n {
                errs.push(format!("{path}: fewer than {n} items"));
            }
        }
        if let Some(n) = obj.get("maxItems").and_then(Value::as_u64) {
            if (a.len() as u64) > n {
                errs.push(format!("{path}: more than {n} items"));
            }
        }
        let prefix = obj.get("prefixItems").and_then(Value::as_array);
        for (i, item) in a.iter().enumerate() {
            if let Some(ps) = prefix.and_then(|p| p.get(i)) {
                check(ps, item, &format!("{path}[{i}]"), errs);
            } else if let Some(is) = obj.get("items") {
                check(is, item, &format!("{path}[{i}]"), errs);
            }
        }
    }
}
