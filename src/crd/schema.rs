//! Schema helpers for types whose derived schema lacks what §1 asks of every field.

use schemars::{Schema, SchemaGenerator, json_schema};

/// An RFC 3339 timestamp (`metav1.Time`), with a length bound.
pub fn timestamp(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "date-time",
        "maxLength": 64,
    })
}

/// An optional RFC 3339 timestamp.
pub fn optional_timestamp(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "date-time",
        "maxLength": 64,
        "nullable": true,
    })
}

fn string_map(max_properties: u32, max_value_length: u32) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": max_properties,
        "additionalProperties": {"type": "string", "maxLength": max_value_length},
    })
}

/// Labels: at most 64, values at most 63 characters as the apiserver allows.
pub fn label_map(_: &mut SchemaGenerator) -> Schema {
    string_map(64, 63)
}

/// Annotations: at most 64, values bounded so CEL cost estimation passes.
pub fn annotation_map(_: &mut SchemaGenerator) -> Schema {
    string_map(64, 4096)
}

/// Extra HTTP headers.
pub fn header_map(_: &mut SchemaGenerator) -> Schema {
    string_map(32, 1024)
}
