//! Structural schema enforcement for custom resources, in the order kube-apiserver applies
//! it: prune or refuse unknown fields, apply defaults, check types and value constraints,
//! then evaluate the CEL rules (`x-kubernetes-validations`) with kube-cel.
//!
//! Error messages follow the apiserver's wording (`spec.size: Invalid value: 0: spec.size in
//! body should be greater than or equal to 1`), because users and tests read them.

use std::fmt;

use serde_json::{Map, Value};

/// How to treat fields the schema does not declare (the request's `fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Refuse the request.
    #[default]
    Strict,
    /// Drop them and warn.
    Warn,
    /// Drop them silently.
    Ignore,
}

impl FieldValidation {
    /// Parses the query parameter; unknown values are refused by the caller.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "Strict" => Some(Self::Strict),
            "Warn" => Some(Self::Warn),
            "Ignore" => Some(Self::Ignore),
            _ => None,
        }
    }
}

/// One invalid field, as the apiserver reports it in a Status `details.causes` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `spec.size`, `spec.scopes[2]`.
    pub field: String,
    /// `FieldValueInvalid`, `FieldValueRequired`, …
    pub reason: &'static str,
    /// The whole human message, field path included.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The outcome of checking one object against its schema.
#[derive(Debug, Default)]
pub struct Checked {
    /// The object after pruning and defaulting: what would be stored.
    pub object: Value,
    /// Paths of fields the schema does not declare (`spec.foo`), in document order.
    pub unknown_fields: Vec<String>,
    /// Every invalid field; empty when the object is valid.
    pub errors: Vec<FieldError>,
}

thread_local! {
    /// One CEL environment per thread: building it registers every Kubernetes function.
    static VALIDATOR: kube_cel::Validator = kube_cel::Validator::new();
}

/// Checks `object` against an `openAPIV3Schema`. `old` enables transition rules (updates).
/// Unknown fields are always pruned from [`Checked::object`]; the caller refuses them when
/// `fieldValidation` is Strict.
pub fn check(schema: &Value, object: &Value, old: Option<&Value>) -> Checked {
    check_with(schema, None, object, old)
}

/// [`check`] with the schema's CEL rules compiled beforehand (once per CRD).
pub fn check_compiled(
    schema: &Value,
    compiled: &kube_cel::CompiledSchema,
    object: &Value,
    old: Option<&Value>,
) -> Checked {
    check_with(schema, Some(compiled), object, old)
}

fn check_with(
    schema: &Value,
    compiled: Option<&kube_cel::CompiledSchema>,
    object: &Value,
    old: Option<&Value>,
) -> Checked {
    let mut unknown_fields = Vec::new();
    let pruned = prune(schema, object, "", true, &mut unknown_fields);
    let defaulted = kube_cel::apply_defaults(schema, &pruned);
    let mut errors = Vec::new();
    validate_node(schema, &defaulted, "", &mut errors);
    if errors.is_empty() {
        // CEL rules see well-typed data only, as on a real apiserver.
        let outcome = VALIDATOR.with(|v| match compiled {
            Some(c) => v.validate_compiled(c, &defaulted, old),
            None => v.validate(schema, &defaulted, old),
        });
        if let Err(failures) = outcome {
            for failure in failures.iter() {
                let field = failure.field_path.trim_start_matches('.').to_string();
                let shown = if field.is_empty() {
                    "<root>".to_string()
                } else {
                    field.clone()
                };
                let value = type_name_at(&defaulted, &field);
                errors.push(FieldError {
                    message: format!("{shown}: Invalid value: \"{value}\": {}", failure.message),
                    field,
                    reason: "FieldValueInvalid",
                });
            }
        }
    }
    Checked {
        object: defaulted,
        unknown_fields,
        errors,
    }
}

/// What kube-apiserver prints as the value of a failed CEL rule: the JSON type at that path.
fn type_name_at(root: &Value, path: &str) -> &'static str {
    let mut node = root;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let name = part.split('[').next().unwrap_or(part);
        match node.get(name) {
            Some(next) => node = next,
            None => return "object",
        }
    }
    match node {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "boolean",
        Value::Null => "null",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

/// Drops fields the schema does not declare, recording where they were. `metadata` at the
/// root and in embedded resources belongs to ObjectMeta and is left to the object layer.
fn prune(
    schema: &Value,
    value: &Value,
    path: &str,
    root: bool,
    unknown: &mut Vec<String>,
) -> Value {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let embedded = root
                || schema
                    .get("x-kubernetes-embedded-resource")
                    .and_then(Value::as_bool)
                    == Some(true);
            let mut out = Map::new();
            for (key, child) in map {
                let child_path = join(path, key);
                if embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    out.insert(key.clone(), child.clone());
                } else if let Some(child_schema) = props.and_then(|p| p.get(key)) {
                    out.insert(
                        key.clone(),
                        prune(child_schema, child, &child_path, false, unknown),
                    );
                } else if let Some(item_schema) = additional {
                    out.insert(
                        key.clone(),
                        prune(item_schema, child, &child_path, false, unknown),
                    );
                } else if preserves_unknown(schema)
                    || schema.get("additionalProperties").and_then(Value::as_bool) == Some(true)
                {
                    out.insert(key.clone(), child.clone());
                } else {
                    unknown.push(child_path);
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => match schema.get("items") {
            Some(item_schema) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        prune(item_schema, item, &format!("{path}[{i}]"), false, unknown)
                    })
                    .collect(),
            ),
            None => value.clone(),
        },
        _ => value.clone(),
    }
}

fn shown(path: &str) -> &str {
    if path.is_empty() { "<root>" } else { path }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn render(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".to_string(),
        Value::Array(_) => "\"array\"".to_string(),
        other => other.to_string(),
    }
}

fn invalid(errors: &mut Vec<FieldError>, path: &str, value: &Value, detail: String) {
    errors.push(FieldError {
        field: path.to_string(),
        reason: "FieldValueInvalid",
        message: format!(
            "{}: Invalid value: {}: {detail}",
            shown(path),
            render(value)
        ),
    });
}

fn validate_node(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        // Allowed where `nullable`; elsewhere the apiserver drops the null, and an absent
        // field is the `required` check's business.
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let got = json_type(value);
        let ok = got == want
            || (want == "number" && got == "integer")
            || (int_or_string && matches!(got, "integer" | "string"));
        if !ok {
            // The apiserver reports the value's type name as the invalid value, with
            // reason FieldValueTypeInvalid (kube-openapi's InvalidType, mapped by
            // apiextensions-apiserver/pkg/apiserver/validation/validation.go).
            errors.push(FieldError {
                field: path.to_string(),
                reason: "FieldValueTypeInvalid",
                message: format!(
                    "{}: Invalid value: {got:?}: {} in body must be of type {want}: {got:?}",
                    shown(path),
                    shown(path)
                ),
            });
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let supported: Vec<String> = options.iter().map(render).collect();
        errors.push(FieldError {
            field: path.to_string(),
            reason: "FieldValueNotSupported",
            message: format!(
                "{}: Unsupported value: {}: supported values: {}",
                shown(path),
                render(value),
                supported.join(", ")
            ),
        });
    }
    match value {
        Value::String(s) => validate_string(schema, s, value, path, errors),
        Value::Number(n) => validate_number(schema, n, value, path, errors),
        Value::Array(items) => validate_array(schema, items, value, path, errors),
        Value::Object(map) => validate_object(schema, map, value, path, errors),
        _ => {}
    }
}

fn validate_string(
    schema: &Value,
    s: &str,
    value: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let chars = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && chars > max
    {
        errors.push(FieldError {
            field: path.to_string(),
            reason: "FieldValueTooLong",
            message: format!(
                "{}: Too long: may not be more than {max} bytes",
                shown(path)
            ),
        });
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && chars < min
    {
        invalid(
            errors,
            path,
            value,
            format!(
                "{} in body should be at least {min} chars long",
                shown(path)
            ),
        );
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(s) => invalid(
                errors,
                path,
                value,
                format!("{} in body should match '{pattern}'", shown(path)),
            ),
            Ok(_) => {}
            Err(_) => invalid(
                errors,
                path,
                value,
                format!("schema pattern {pattern:?} does not compile"),
            ),
        }
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str)
        && let Some(problem) = check_format(format, s)
    {
        invalid(
            errors,
            path,
            value,
            format!(
                "{} in body must be of type {format}: {problem}",
                shown(path)
            ),
        );
        // A format failure is kube-openapi's InvalidType too.
        if let Some(last) = errors.last_mut() {
            last.reason = "FieldValueTypeInvalid";
        }
    }
}

/// The string formats the apiserver checks; others are informational, as there.
fn check_format(format: &str, s: &str) -> Option<String> {
    match format {
        "date-time" => s.parse::<jiff::Timestamp>().err().map(|_| format!("{s:?}")),
        "date" => s
            .parse::<jiff::civil::Date>()
            .err()
            .map(|_| format!("{s:?}")),
        "byte" => {
            let ok = s.len().is_multiple_of(4)
                && s.trim_end_matches('=')
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
            (!ok).then(|| format!("{s:?}"))
        }
        "uuid" => {
            let ok = s.len() == 36
                && s.char_indices().all(|(i, c)| {
                    if matches!(i, 8 | 13 | 18 | 23) {
                        c == '-'
                    } else {
                        c.is_ascii_hexdigit()
                    }
                });
            (!ok).then(|| format!("{s:?}"))
        }
        _ => None,
    }
}

fn validate_number(
    schema: &Value,
    n: &serde_json::Number,
    value: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let Some(x) = n.as_f64() else { return };
    let exclusive_min = schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
    let exclusive_max = schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let bad = if exclusive_min { x <= min } else { x < min };
        if bad {
            let op = if exclusive_min {
                "greater than"
            } else {
                "greater than or equal to"
            };
            invalid(
                errors,
                path,
                value,
                format!("{} in body should be {op} {}", shown(path), trim(min)),
            );
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let bad = if exclusive_max { x >= max } else { x > max };
        if bad {
            let op = if exclusive_max {
                "less than"
            } else {
                "less than or equal to"
            };
            invalid(
                errors,
                path,
                value,
                format!("{} in body should be {op} {}", shown(path), trim(max)),
            );
        }
    }
}

fn trim(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

fn validate_array(
    schema: &Value,
    items: &[Value],
    value: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        errors.push(FieldError {
            field: path.to_string(),
            reason: "FieldValueTooMany",
            message: format!(
                "{}: Too many: {}: must have at most {max} items",
                shown(path),
                items.len()
            ),
        });
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        invalid(
            errors,
            path,
            value,
            format!("{} in body should have at least {min} items", shown(path)),
        );
    }
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    errors.push(FieldError {
                        field: format!("{path}[{i}]"),
                        reason: "FieldValueDuplicate",
                        message: format!("{path}[{i}]: Duplicate value: {}", render(item)),
                    });
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for (i, item) in items.iter().enumerate() {
                let key_of =
                    |v: &Value| keys.iter().map(|k| v.get(*k).cloned()).collect::<Vec<_>>();
                if items[..i]
                    .iter()
                    .any(|earlier| key_of(earlier) == key_of(item))
                {
                    let shown_keys: Vec<String> = keys
                        .iter()
                        .map(|k| {
                            format!("\"{k}\":{}", item.get(*k).map(render).unwrap_or_default())
                        })
                        .collect();
                    errors.push(FieldError {
                        field: format!("{path}[{i}]"),
                        reason: "FieldValueDuplicate",
                        message: format!(
                            "{path}[{i}]: Duplicate value: map[string]interface {{}}{{{}}}",
                            shown_keys.join(", ")
                        ),
                    });
                }
            }
        }
        _ => {}
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            validate_node(item_schema, item, &format!("{path}[{i}]"), errors);
        }
    }
}

fn validate_object(
    schema: &Value,
    map: &Map<String, Value>,
    value: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if map.get(name).is_none_or(Value::is_null) {
                errors.push(FieldError {
                    field: join(path, name),
                    reason: "FieldValueRequired",
                    message: format!("{}: Required value", join(path, name)),
                });
            }
        }
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && map.len() as u64 > max
    {
        errors.push(FieldError {
            field: path.to_string(),
            reason: "FieldValueTooMany",
            message: format!(
                "{}: Too many: {}: must have at most {max} items",
                shown(path),
                map.len()
            ),
        });
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
        && (map.len() as u64) < min
    {
        invalid(
            errors,
            path,
            value,
            format!(
                "{} in body should have at least {min} properties",
                shown(path)
            ),
        );
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (key, child) in map {
        let child_path = join(path, key);
        if let Some(child_schema) = props.and_then(|p| p.get(key)) {
            validate_node(child_schema, child, &child_path, errors);
        } else if let Some(item_schema) = additional {
            validate_node(item_schema, child, &child_path, errors);
        }
    }
}

/// Joins field errors the way the apiserver's 422 message does: one error plain, several in
/// brackets.
pub fn summarize(errors: &[FieldError]) -> String {
    match errors {
        [one] => one.message.clone(),
        many => format!(
            "[{}]",
            many.iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer", "minimum": 1, "maximum": 10},
                        "mode": {"type": "string", "enum": ["A", "B"], "default": "A"},
                        "name": {"type": "string", "maxLength": 3, "pattern": "^[a-z]+$"},
                        "at": {"type": "string", "format": "date-time"},
                        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    },
                    "x-kubernetes-validations": [{"rule": "self.size != 7", "message": "not seven"}]
                }
            }
        })
    }

    fn messages(object: Value) -> Vec<String> {
        check(&schema(), &object, None)
            .errors
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    #[test]
    fn valid_objects_are_defaulted() {
        let checked = check(&schema(), &json!({"spec": {"size": 2}}), None);
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);
        assert_eq!(checked.object["spec"]["mode"], "A");
    }

    #[test]
    fn type_errors_name_the_field() {
        assert_eq!(
            messages(json!({"spec": {"size": "two"}})),
            vec![
                r#"spec.size: Invalid value: "string": spec.size in body must be of type integer: "string""#
            ]
        );
    }

    #[test]
    fn required_enum_bounds_length_pattern_format_items() {
        assert_eq!(
            messages(json!({"spec": {}})),
            vec!["spec.size: Required value"]
        );
        assert_eq!(
            messages(json!({"spec": {"size": 0}})),
            vec![
                "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"
            ]
        );
        assert_eq!(
            messages(json!({"spec": {"size": 11}})),
            vec![
                "spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10"
            ]
        );
        assert_eq!(
            messages(json!({"spec": {"size": 1, "mode": "C"}})),
            vec![r#"spec.mode: Unsupported value: "C": supported values: "A", "B""#]
        );
        assert_eq!(
            messages(json!({"spec": {"size": 1, "name": "abcd"}})),
            vec!["spec.name: Too long: may not be more than 3 bytes"]
        );
        assert_eq!(
            messages(json!({"spec": {"size": 1, "name": "A1"}})),
            vec![r#"spec.name: Invalid value: "A1": spec.name in body should match '^[a-z]+$'"#]
        );
        assert_eq!(
            messages(json!({"spec": {"size": 1, "at": "yesterday"}})).len(),
            1
        );
        assert!(messages(json!({"spec": {"size": 1, "at": "2026-01-02T03:04:05Z"}})).is_empty());
        assert_eq!(
            messages(json!({"spec": {"size": 1, "tags": ["a", "b", "c"]}})),
            vec!["spec.tags: Too many: 3: must have at most 2 items"]
        );
        assert_eq!(
            messages(json!({"spec": {"size": 1, "labels": {"a": 1}}})),
            vec![
                r#"spec.labels.a: Invalid value: "integer": spec.labels.a in body must be of type string: "integer""#
            ]
        );
    }

    #[test]
    fn cel_rules_run_after_structural_checks() {
        assert_eq!(
            messages(json!({"spec": {"size": 7}})),
            vec![r#"spec: Invalid value: "object": not seven"#]
        );
    }

    #[test]
    fn unknown_fields_are_pruned_and_reported() {
        let checked = check(
            &schema(),
            &json!({"metadata": {"name": "x"}, "spec": {"size": 1, "bogus": 1, "free": {"any": 1}}, "top": 2}),
            None,
        );
        assert_eq!(checked.unknown_fields, vec!["spec.bogus", "top"]);
        assert_eq!(checked.object["spec"]["free"]["any"], 1);
        assert!(checked.object["spec"].get("bogus").is_none());
        assert_eq!(checked.object["metadata"]["name"], "x");
    }
}
