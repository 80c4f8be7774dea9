//! `meta.k8s.io/v1` Table responses for `kubectl get`: a CRD's printer columns (evaluated
//! with the JSONPath subset CRDs use) and the columns kube-apiserver prints for built-ins.

use serde_json::{Value, json};

use crate::resources::ResourceType;

/// Evaluates the JSONPath subset of printer columns: `.a.b`, `.a[0]`, `.a[*].b` and
/// `.a[?(@.k=="v")].b`. Returns every match.
pub fn json_path<'a>(object: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut nodes = vec![object];
    let mut rest = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let field = &r[..end];
            nodes = nodes.into_iter().filter_map(|n| n.get(field)).collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = find_closing(r) else {
                return Vec::new();
            };
            let inner = &r[..end];
            rest = &r[end + 1..];
            nodes = if inner == "*" {
                nodes
                    .into_iter()
                    .flat_map(|n| n.as_array().into_iter().flatten())
                    .collect()
            } else if let Ok(i) = inner.parse::<usize>() {
                nodes.into_iter().filter_map(|n| n.get(i)).collect()
            } else if let Some(filter) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')'))
            {
                let (lhs, op, rhs) = match (filter.split_once("=="), filter.split_once("!=")) {
                    (_, Some((l, r))) => (l, false, r),
                    (Some((l, r)), None) => (l, true, r),
                    _ => return Vec::new(),
                };
                let field = lhs.trim().trim_start_matches('@').trim_start_matches('.');
                let want = rhs.trim().trim_matches(|c| c == '"' || c == '\'');
                nodes
                    .into_iter()
                    .flat_map(|n| n.as_array().into_iter().flatten())
                    .filter(|item| {
                        let got = match item.get(field) {
                            Some(Value::String(s)) => s.clone(),
                            Some(v) => v.to_string(),
                            None => String::new(),
                        };
                        (got == want) == op
                    })
                    .collect()
            } else {
                return Vec::new();
            };
        } else {
            return Vec::new();
        }
    }
    nodes
}

fn find_closing(s: &str) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' | '(' => depth += 1,
            ')' => depth -= 1,
            ']' if depth == 0 => return Some(i),
            ']' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// kube-apiserver's `duration.HumanDuration`, which it applies to `date` columns.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// A timestamp as the age the apiserver prints for it.
pub(crate) fn age_of(value: &Value) -> Value {
    match value
        .as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    {
        Some(t) => json!(human_duration(
            jiff::Timestamp::now().as_second() - t.as_second()
        )),
        None => Value::Null,
    }
}

fn cell(value: Option<&Value>, ty: &str) -> Value {
    match value {
        None | Some(Value::Null) => Value::Null,
        Some(v) if ty == "date" => age_of(v),
        Some(v) if ty == "integer" || ty == "number" || ty == "boolean" => v.clone(),
        Some(Value::String(s)) => json!(s),
        Some(other) => json!(other.to_string()),
    }
}

fn column(name: &str, ty: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

/// The columns and cells for a list of objects of `rt`.
pub fn table(
    rt: &ResourceType,
    objects: &[Value],
    resource_version: u64,
    continue_token: Option<&str>,
) -> Value {
    let name_col = column(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
        0,
    );
    let (columns, rows): (Vec<Value>, Vec<Vec<Value>>) = if rt.custom {
        let mut cols = vec![name_col];
        let printer = if rt.printer_columns.is_empty() {
            vec![json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})]
        } else {
            rt.printer_columns.clone()
        };
        for c in &printer {
            cols.push(column(
                c["name"].as_str().unwrap_or_default(),
                c["type"].as_str().unwrap_or("string"),
                c["format"].as_str().unwrap_or_default(),
                c["description"].as_str().unwrap_or_default(),
                c["priority"].as_i64().unwrap_or(0),
            ));
        }
        let rows = objects
            .iter()
            .map(|o| {
                let mut cells = vec![o["metadata"]["name"].clone()];
                for c in &printer {
                    let found = json_path(o, c["jsonPath"].as_str().unwrap_or_default());
                    cells.push(cell(
                        found.first().copied(),
                        c["type"].as_str().unwrap_or("string"),
                    ));
                }
                cells
            })
            .collect();
        (cols, rows)
    } else {
        builtin_table(rt, objects, name_col)
    };
    let rows: Vec<Value> = objects
        .iter()
        .zip(rows)
        .map(|(o, cells)| {
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                },
            })
        })
        .collect();
    let mut meta = json!({"resourceVersion": resource_version.to_string()});
    if let Some(token) = continue_token {
        meta["continue"] = json!(token);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns, "rows": rows})
}

/// A built-in kind's columns, from its row in `crate::kinds`; kinds without a row print
/// Name and Age.
fn builtin_table(
    rt: &ResourceType,
    objects: &[Value],
    name_col: Value,
) -> (Vec<Value>, Vec<Vec<Value>>) {
    let (columns, with_name) = rt.builtin.map_or((&[crate::kinds::AGE][..], true), |k| {
        (k.columns, k.name_column)
    });
    let mut defs: Vec<Value> = Vec::new();
    if with_name {
        defs.push(name_col);
    }
    defs.extend(
        columns
            .iter()
            .map(|c| column(c.name, c.ty, c.format, "", c.priority)),
    );
    let rows = objects
        .iter()
        .map(|o| {
            let mut cells = Vec::with_capacity(defs.len());
            if with_name {
                cells.push(o["metadata"]["name"].clone());
            }
            cells.extend(columns.iter().map(|c| (c.cell)(o)));
            cells
        })
        .collect();
    (defs, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (0, "0s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (50 * 3600, "2d2h"),
            (30 * 86400, "30d"),
            (800 * 86400, "2y70d"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn printer_column_paths() {
        let o = json!({"status": {"conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}], "n": 3}, "spec": {"owner": "team"}});
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![&json!("True")]
        );
        assert_eq!(
            json_path(&o, ".status.conditions[0].type"),
            vec![&json!("Other")]
        );
        assert_eq!(json_path(&o, ".status.conditions[*].type").len(), 2);
        assert_eq!(json_path(&o, ".spec.owner"), vec![&json!("team")]);
        assert!(json_path(&o, ".spec.missing").is_empty());
    }
}
