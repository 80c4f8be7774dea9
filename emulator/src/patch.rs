//! The three non-apply patch types: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! strategic merge patch (built-in kinds only, with the Go types' merge keys).

use serde_json::{Map, Value};

use crate::resources::{ListType, ResourceType};

/// RFC 7386: objects merge recursively, `null` deletes, everything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else {
        return;
    };
    for (key, value) in patch_map {
        if value.is_null() {
            target_map.remove(key);
        } else {
            merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// RFC 6902 operations; the error names the failing operation.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(target, &ops).map_err(|e| e.to_string())
}

/// Strategic merge patch as kubectl sends it: maps merge, `null` deletes, lists with a merge
/// key merge by key, primitive sets union, other lists replace; `$patch`, `$retainKeys`,
/// `$setElementOrder/…` and `$deleteFromPrimitiveList/…` directives are honoured.
pub fn strategic_merge_patch(
    target: &mut Value,
    patch: &Value,
    rt: &ResourceType,
) -> Result<(), String> {
    smp_object(target, patch, rt, &mut Vec::new())
}

fn smp_object(
    target: &mut Value,
    patch: &Value,
    rt: &ResourceType,
    path: &mut Vec<String>,
) -> Result<(), String> {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match patch_map.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = patch_map.clone();
            replaced.remove("$patch");
            *target = Value::Object(replaced);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some(other) => return Err(format!("unknown patch type: {other}")),
        None => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else {
        return Ok(());
    };
    if let Some(keep) = patch_map.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        target_map.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch_map {
        if key.starts_with("$setElementOrder/") || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) =
                (target_map.get_mut(field), value.as_array())
            {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if value.is_null() {
            target_map.remove(key);
            continue;
        }
        path.push(key.clone());
        match value {
            Value::Object(_) => {
                let slot = target_map.entry(key.clone()).or_insert(Value::Null);
                smp_object(slot, value, rt, path)?;
                if slot.is_null() {
                    target_map.remove(key);
                }
            }
            Value::Array(items) => {
                let names: Vec<&str> = path.iter().map(String::as_str).collect();
                let merged = match rt.list_type(&names) {
                    ListType::Map(keys) => {
                        let existing = target_map
                            .get(key)
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        smp_keyed_list(existing, items, &keys, rt, path)?
                    }
                    ListType::Set => {
                        let mut existing = target_map
                            .get(key)
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        for item in items {
                            if !existing.contains(item) {
                                existing.push(item.clone());
                            }
                        }
                        existing
                    }
                    ListType::Atomic => items.clone(),
                };
                target_map.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                target_map.insert(key.clone(), scalar.clone());
            }
        }
        path.pop();
    }
    Ok(())
}

fn smp_keyed_list(
    mut existing: Vec<Value>,
    patch: &[Value],
    keys: &[String],
    rt: &ResourceType,
    path: &mut Vec<String>,
) -> Result<Vec<Value>, String> {
    // Strategic merge patch matches on the Go type's one patchMergeKey, the first of the
    // list-map keys (a container port by containerPort, a service port by port).
    let keys = &keys[..keys.len().min(1)];
    let key_of = |v: &Value| {
        keys.iter()
            .map(|k| v.get(k).cloned().unwrap_or(Value::Null))
            .collect::<Vec<_>>()
    };
    for item in patch {
        if item.get("$patch").and_then(Value::as_str) == Some("replace") {
            return Ok(patch
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect());
        }
        let k = key_of(item);
        let position = existing.iter().position(|e| key_of(e) == k);
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = position {
                existing.remove(i);
            }
            continue;
        }
        match position {
            Some(i) => smp_object(&mut existing[i], item, rt, path)?,
            None => {
                let mut fresh = Value::Object(Map::new());
                smp_object(&mut fresh, item, rt, path)?;
                existing.push(fresh);
            }
        }
    }
    Ok(existing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtins;
    use serde_json::json;

    fn deployments() -> ResourceType {
        builtins()
            .into_iter()
            .find(|r| r.plural == "deployments")
            .expect("deployments")
    }

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn strategic_merge_patch_merges_containers_by_name() {
        let mut doc = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}
        ]}}}});
        strategic_merge_patch(
            &mut doc,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}}),
            &deployments(),
        )
        .expect("patch applies");
        assert_eq!(
            doc["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}])
        );
    }

    #[test]
    fn strategic_merge_patch_directives() {
        let rt = deployments();
        let mut doc =
            json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}}});
        strategic_merge_patch(
            &mut doc,
            &json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"x": null}}}),
            &rt,
        )
        .expect("patch applies");
        assert_eq!(
            doc,
            json!({"metadata": {"finalizers": ["b", "c"], "labels": {"y": "2"}}})
        );
        let mut doc =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}}});
        strategic_merge_patch(
            &mut doc,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}}}),
            &rt,
        )
        .expect("patch applies");
        assert_eq!(
            doc["spec"]["template"]["spec"]["containers"],
            json!([{"name": "b"}])
        );
    }

    #[test]
    fn json_patch_reports_failures() {
        let mut doc = json!({"a": 1});
        json_patch(
            &mut doc,
            &json!([{"op": "replace", "path": "/a", "value": 2}]),
        )
        .expect("applies");
        assert_eq!(doc, json!({"a": 2}));
        assert!(json_patch(&mut doc, &json!([{"op": "test", "path": "/a", "value": 3}])).is_err());
        assert!(json_patch(&mut doc, &json!({"op": "nonsense"})).is_err());
    }
}
