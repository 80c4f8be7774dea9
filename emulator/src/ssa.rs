//! Field ownership: server-side apply and the `managedFields` every write records.
//!
//! As in structured-merge-diff: an apply declares the full set of fields a manager wants;
//! fields it owned before and no longer declares are removed (unless another manager owns
//! them); a field owned by another manager with a different value is a conflict unless
//! `force`. Updates (create, PUT, non-apply PATCH) move the fields they change to the
//! updating manager.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::resources::{ListType, ResourceType};

/// One step of a field path, as in FieldsV1: `f:name`, `k:{"name":"x"}`, `v:"value"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    Field(String),
    Key(String),
    Value(String),
}

impl Step {
    /// The FieldsV1 key: `f:name`, `k:{...}`, `v:...`.
    pub fn encode(&self) -> String {
        match self {
            Step::Field(f) => format!("f:{f}"),
            Step::Key(k) => format!("k:{k}"),
            Step::Value(v) => format!("v:{v}"),
        }
    }

    /// Reads a FieldsV1 key; `None` for anything else (such as the `.` marker).
    pub fn decode(key: &str) -> Option<Self> {
        if let Some(f) = key.strip_prefix("f:") {
            Some(Step::Field(f.to_string()))
        } else if let Some(k) = key.strip_prefix("k:") {
            Some(Step::Key(k.to_string()))
        } else {
            key.strip_prefix("v:").map(|v| Step::Value(v.to_string()))
        }
    }
}

pub type FieldPath = Vec<Step>;
pub type FieldSet = BTreeSet<FieldPath>;

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub fields: FieldSet,
}

/// A field owned by another manager with a different value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    pub manager: String,
    /// `Apply` or `Update`: the apiserver names Update managers with their API version.
    pub operation: String,
    pub subresource: String,
    pub api_version: String,
    pub path: String,
}

impl Conflict {
    /// The manager as the apiserver prints it: `"name"`, `"name" with subresource "status"`,
    /// and `using VERSION` for Update managers
    /// (staging/src/k8s.io/apimachinery/pkg/util/managedfields/internal/conflict.go).
    pub fn manager_label(&self) -> String {
        let mut label = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            label.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == "Update" {
            label.push_str(&format!(" using {}", self.api_version));
        }
        label
    }
}

/// The applier whose server-side applies may take over what client-side apply recorded.
/// kube-apiserver grants this to kubectl's default server-side field manager only
/// (staging/src/k8s.io/apimachinery/pkg/util/managedfields/internal/lastappliedmanager.go
/// and lastappliedupdater.go); any other manager name opts out, as there.
pub const CLIENT_SIDE_UPGRADER: &str = "kubectl";

/// The annotation client-side apply keeps its last applied configuration in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Which part of the object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main resource: everything but `status` where a status subresource exists.
    Main,
    /// The `/status` subresource.
    Status,
}

const UNTRACKED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// The tracked part of an object for a write to `part`.
pub fn tracked(object: &Value, rt: &ResourceType, part: Part) -> Value {
    let mut out = Map::new();
    let Some(map) = object.as_object() else {
        return Value::Object(out);
    };
    for (key, value) in map {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "status" if rt.status_subresource => {
                if part == Part::Status {
                    out.insert(key.clone(), value.clone());
                }
            }
            _ if part == Part::Status => {}
            "metadata" => {
                let meta: Map<String, Value> = value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| !UNTRACKED_META.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !meta.is_empty() {
                    out.insert(key.clone(), Value::Object(meta));
                }
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(out)
}

fn key_step(item: &Value, keys: &[String]) -> Step {
    let mut key = BTreeMap::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            key.insert(k.clone(), v.clone());
        }
    }
    Step::Key(serde_json::to_string(&key).unwrap_or_default())
}

/// Every owned path of `value` (leaves, atomic lists, empty maps and list elements).
pub fn field_set(value: &Value, rt: &ResourceType) -> FieldSet {
    let mut out = FieldSet::new();
    collect(value, rt, &mut Vec::new(), &mut Vec::new(), &mut out);
    out
}

fn collect(
    value: &Value,
    rt: &ResourceType,
    names: &mut Vec<String>,
    path: &mut FieldPath,
    out: &mut FieldSet,
) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                names.push(k.clone());
                path.push(Step::Field(k.clone()));
                collect(v, rt, names, path, out);
                path.pop();
                names.pop();
            }
        }
        Value::Array(items) => {
            let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
            match rt.list_type(&name_refs) {
                ListType::Atomic => {
                    out.insert(path.clone());
                }
                ListType::Set => {
                    for item in items {
                        let mut p = path.clone();
                        p.push(Step::Value(item.to_string()));
                        out.insert(p);
                    }
                    if items.is_empty() {
                        out.insert(path.clone());
                    }
                }
                ListType::Map(keys) => {
                    for item in items {
                        path.push(key_step(item, &keys));
                        out.insert(path.clone());
                        if let Value::Object(fields) = item {
                            for (k, v) in fields {
                                names.push(k.clone());
                                path.push(Step::Field(k.clone()));
                                collect(v, rt, names, path, out);
                                path.pop();
                                names.pop();
                            }
                        }
                        path.pop();
                    }
                    if items.is_empty() {
                        out.insert(path.clone());
                    }
                }
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

fn step_matches(step: &Step, item: &Value) -> bool {
    match step {
        Step::Key(key) => {
            let key: BTreeMap<String, Value> = serde_json::from_str(key).unwrap_or_default();
            !key.is_empty() && key.iter().all(|(k, v)| item.get(k) == Some(v))
        }
        Step::Value(v) => serde_json::from_str::<Value>(v).ok().as_ref() == Some(item),
        Step::Field(_) => false,
    }
}

/// The value at a path, if present.
pub fn get<'a>(value: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut node = value;
    for step in path {
        node = match step {
            Step::Field(f) => node.get(f)?,
            other => node
                .as_array()?
                .iter()
                .find(|item| step_matches(other, item))?,
        };
    }
    Some(node)
}

fn remove(value: &mut Value, path: &[Step]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut node = value;
    for step in parent_path {
        node = match step {
            Step::Field(f) => match node.get_mut(f) {
                Some(n) => n,
                None => return,
            },
            other => match node
                .as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| step_matches(other, i)))
            {
                Some(n) => n,
                None => return,
            },
        };
    }
    match last {
        Step::Field(f) => {
            if let Some(m) = node.as_object_mut() {
                m.remove(f);
            }
        }
        other => {
            if let Some(a) = node.as_array_mut() {
                a.retain(|i| !step_matches(other, i));
            }
        }
    }
}

fn render_path(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Step::Key(k) => {
                let key: BTreeMap<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            Step::Value(v) => out.push_str(&format!("[={v}]")),
        }
    }
    out
}

/// Encodes a field set as FieldsV1.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for step in path {
            let key = step.encode();
            node = node
                .entry(key)
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("trie nodes are objects");
        }
    }
    // A path that is in the set and also has children carries the "." marker.
    fn mark(node: &mut Map<String, Value>, prefix: &mut FieldPath, set: &FieldSet) {
        let keys: Vec<String> = node.keys().cloned().collect();
        for key in keys {
            let Some(step) = Step::decode(key.as_str()) else {
                continue;
            };
            prefix.push(step);
            if let Some(Value::Object(child)) = node.get_mut(&key) {
                if !child.is_empty() && set.contains(prefix) {
                    child.insert(".".into(), json!({}));
                }
                mark(child, prefix, set);
            }
            prefix.pop();
        }
    }
    mark(&mut root, &mut Vec::new(), set);
    Value::Object(root)
}

/// Decodes FieldsV1 into a field set.
pub fn from_fields_v1(fields: &Value) -> FieldSet {
    fn walk(node: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
        let Some(map) = node.as_object() else { return };
        if (map.is_empty() || map.contains_key(".")) && !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        for (key, child) in map {
            let Some(step) = Step::decode(key.as_str()) else {
                continue;
            };
            prefix.push(step);
            walk(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(fields, &mut Vec::new(), &mut out);
    out
}

/// Reads `metadata.managedFields`.
pub fn read_entries(object: &Value) -> Vec<Entry> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or_default().to_string(),
            operation: e["operation"].as_str().unwrap_or("Update").to_string(),
            api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
            time: e["time"].as_str().unwrap_or_default().to_string(),
            subresource: e["subresource"].as_str().unwrap_or_default().to_string(),
            fields: from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

/// Writes `metadata.managedFields`, dropping entries that own nothing.
pub fn write_entries(object: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn subresource_name(part: Part) -> &'static str {
    match part {
        Part::Main => "",
        Part::Status => "status",
    }
}

/// Merges `applied` into `base` the way apply does: maps recursively, keyed lists by key,
/// sets by union, atomic lists and scalars replaced.
fn merge_applied(base: &mut Value, applied: &Value, rt: &ResourceType, names: &mut Vec<String>) {
    match (base, applied) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, v) in a {
                names.push(k.clone());
                match b.get_mut(k) {
                    Some(existing) if !existing.is_null() => merge_applied(existing, v, rt, names),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
                names.pop();
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
            match rt.list_type(&name_refs) {
                ListType::Atomic => *b = a.clone(),
                ListType::Set => {
                    for item in a {
                        if !b.contains(item) {
                            b.push(item.clone());
                        }
                    }
                }
                ListType::Map(keys) => {
                    for item in a {
                        let step = key_step(item, &keys);
                        match b.iter_mut().find(|e| step_matches(&step, e)) {
                            Some(existing) => merge_applied(existing, item, rt, names),
                            None => b.push(item.clone()),
                        }
                    }
                }
            }
        }
        (base, applied) => *base = applied.clone(),
    }
}

/// Server-side apply of `applied` (the manager's whole intent) onto `live` (`None` when the
/// object does not exist yet). Returns the new object with `managedFields` updated, or the
/// conflicts.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    rt: &ResourceType,
    part: Part,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let sub = subresource_name(part);
    let empty = json!({});
    let live_value = live.unwrap_or(&empty);
    let mut entries = read_entries(live_value);
    let intent = tracked(applied, rt, part);
    let new_set = field_set(&intent, rt);
    let live_tracked = tracked(live_value, rt, part);

    // Fields other managers own with a different value, per entry.
    let mut clashes: Vec<(usize, Vec<FieldPath>)> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if entry.manager == manager && entry.subresource == sub && entry.operation == "Apply" {
            continue;
        }
        if entry.subresource != sub {
            continue;
        }
        let clashing: Vec<FieldPath> = entry
            .fields
            .intersection(&new_set)
            .filter(|p| {
                let leaf_in_intent = get(&intent, p)
                    .is_some_and(|v| !v.is_object() || v.as_object().is_some_and(Map::is_empty));
                let element_marker = matches!(p.last(), Some(Step::Key(_) | Step::Value(_)));
                leaf_in_intent && !element_marker && get(&live_tracked, p) != get(&intent, p)
            })
            .cloned()
            .collect();
        if !clashing.is_empty() {
            clashes.push((index, clashing));
        }
    }
    let mut conflicts: Vec<Conflict> = Vec::new();
    if !force {
        // Conflicts on fields the live object still holds as client-side apply last applied
        // them are taken over rather than refused, when every conflict is such a field.
        let allowed = if manager == CLIENT_SIDE_UPGRADER && part == Part::Main {
            live.map(|l| last_applied_fields(l, rt)).unwrap_or_default()
        } else {
            FieldSet::new()
        };
        for (index, clashing) in &clashes {
            let entry = &entries[*index];
            conflicts.extend(
                clashing
                    .iter()
                    .filter(|p| !allowed.contains(*p))
                    .map(|p| Conflict {
                        manager: entry.manager.clone(),
                        operation: entry.operation.clone(),
                        subresource: entry.subresource.clone(),
                        api_version: entry.api_version.clone(),
                        path: render_path(p),
                    }),
            );
        }
    }
    if !conflicts.is_empty() {
        conflicts.sort();
        return Err(conflicts);
    }
    for (index, clashing) in clashes {
        for p in &clashing {
            entries[index].fields.remove(p);
        }
    }

    let old_set = entries
        .iter()
        .find(|e| e.manager == manager && e.subresource == sub && e.operation == "Apply")
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    // A new object starts as the applied body itself (name, namespace and all).
    let mut result = if live.is_some() {
        live_value.clone()
    } else {
        applied.clone()
    };
    let others: FieldSet = entries
        .iter()
        .filter(|e| !(e.manager == manager && e.subresource == sub && e.operation == "Apply"))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    // Shallowest first: a dropped list element goes whole, while its key fields still
    // identify it (its own fields' paths then find nothing).
    let mut dropped: Vec<&FieldPath> = old_set.difference(&new_set).collect();
    dropped.sort_by_key(|p| p.len());
    for path in dropped {
        if !others.iter().any(|o| o.starts_with(path)) {
            remove(&mut result, path);
        }
    }
    merge_applied(&mut result, &intent, rt, &mut Vec::new());
    prune_empty_parents(&mut result);

    entries.retain(|e| !(e.manager == manager && e.subresource == sub && e.operation == "Apply"));
    entries.push(Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        api_version: rt.api_version(),
        time: now.to_string(),
        subresource: sub.to_string(),
        fields: new_set,
    });
    write_entries(&mut result, &entries);
    if manager == CLIENT_SIDE_UPGRADER && part == Part::Main {
        refresh_last_applied(&mut result, applied);
    }
    Ok(result)
}

/// The fields of the live object's last-applied-configuration whose live value is still
/// the one last applied (fields changed, added or removed since are not in it).
fn last_applied_fields(live: &Value, rt: &ResourceType) -> FieldSet {
    let Some(text) = live["metadata"]["annotations"][LAST_APPLIED].as_str() else {
        return FieldSet::new();
    };
    let Ok(last) = serde_json::from_str::<Value>(text) else {
        return FieldSet::new();
    };
    if last["apiVersion"].as_str() != Some(rt.api_version().as_str()) {
        return FieldSet::new();
    }
    let last = tracked(&last, rt, Part::Main);
    let live = tracked(live, rt, Part::Main);
    field_set(&last, rt)
        .into_iter()
        .filter(|p| get(&live, p).is_some() && get(&live, p) == get(&last, p))
        .collect()
}

/// The total size of annotations (keys and values) the apiserver accepts.
pub const ANNOTATIONS_LIMIT: usize = 256 * 1024;

/// Replaces an existing last-applied-configuration with the applied configuration (less
/// that annotation), encoded as Go encodes it: sorted keys and a final newline. Dropped
/// when the annotations would outgrow their limit.
fn refresh_last_applied(result: &mut Value, applied: &Value) {
    let present = result["metadata"]["annotations"][LAST_APPLIED]
        .as_str()
        .is_some_and(|v| !v.is_empty());
    if !present {
        return;
    }
    let mut config = applied.clone();
    if let Some(annotations) = config["metadata"]
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(LAST_APPLIED);
    }
    let encoded = format!("{}\n", sorted(&config));
    let Some(annotations) = result["metadata"]["annotations"].as_object_mut() else {
        return;
    };
    annotations.insert(LAST_APPLIED.into(), Value::String(encoded));
    let size: usize = annotations
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    if size > ANNOTATIONS_LIMIT {
        annotations.remove(LAST_APPLIED);
    }
}

/// `value` with every map's keys in order, whatever serde_json's map preserves.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let ordered: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(ordered.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Drops `metadata.labels: {}` and the like left behind when their last key was removed.
fn prune_empty_parents(object: &mut Value) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in ["labels", "annotations"] {
            if meta
                .get(key)
                .and_then(Value::as_object)
                .is_some_and(Map::is_empty)
            {
                meta.remove(key);
            }
        }
    }
}

/// What a non-apply write's own `metadata.managedFields` asks for.
enum Requested {
    /// `[]` or `[{}]`: forget all ownership.
    Reset,
    /// Valid entries that own something: they replace the live ones.
    Entries(Vec<Entry>),
    /// Absent, owning nothing, or not decodable: keep the live object's.
    Live,
}

/// How the apiserver's field manager reads the managedFields a write carries
/// (decodeLiveOrNew and isResetManagedFields in
/// staging/src/k8s.io/apimachinery/pkg/util/managedfields/internal/fieldmanager.go);
/// writes to a subresource always keep the live ones.
fn requested_entries(new: &Value, part: Part) -> Requested {
    if part != Part::Main {
        return Requested::Live;
    }
    let Some(list) = new["metadata"].get("managedFields") else {
        return Requested::Live;
    };
    let Some(items) = list.as_array() else {
        return Requested::Live;
    };
    if items.is_empty() || (items.len() == 1 && items[0] == json!({})) {
        return Requested::Reset;
    }
    let valid = items.iter().all(|e| {
        e.is_object()
            && matches!(e["operation"].as_str(), Some("Apply" | "Update"))
            && (e["fieldsV1"].is_null() || e["fieldsV1"].is_object())
            && e["fieldsType"].as_str().is_none_or(|t| t == "FieldsV1")
    });
    if !valid {
        return Requested::Live;
    }
    let entries = read_entries(new);
    if entries.iter().all(|e| e.fields.is_empty()) {
        return Requested::Live;
    }
    Requested::Entries(entries)
}

/// Records an update (create, PUT, non-apply PATCH): fields whose value changed move to
/// `manager`'s Update entry; fields that disappeared leave every entry.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    rt: &ResourceType,
    part: Part,
    manager: &str,
    now: &str,
) {
    let sub = subresource_name(part);
    let empty = json!({});
    let old_value = old.unwrap_or(&empty);
    let mut entries = match requested_entries(new, part) {
        Requested::Reset => Vec::new(),
        Requested::Entries(entries) => entries,
        Requested::Live => read_entries(old_value),
    };
    // An existing object nobody tracks (its managedFields were reset) stays untracked
    // until an apply (skipNonAppliedManager in the apiserver's field manager).
    if old.is_some() && entries.iter().all(|e| e.fields.is_empty()) {
        write_entries(new, &[]);
        return;
    }
    let old_tracked = tracked(old_value, rt, part);
    let new_tracked = tracked(new, rt, part);
    let old_set = field_set(&old_tracked, rt);
    let new_set = field_set(&new_tracked, rt);
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| !old_set.contains(*p) || get(&old_tracked, p) != get(&new_tracked, p))
        .cloned()
        .collect();
    for entry in entries.iter_mut().filter(|e| e.subresource == sub) {
        entry
            .fields
            .retain(|p| new_set.contains(p) && !changed.contains(p));
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.manager == manager && e.operation == "Update" && e.subresource == sub)
        {
            Some(entry) => {
                entry.fields.extend(changed);
                entry.time = now.to_string();
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: rt.api_version(),
                time: now.to_string(),
                subresource: sub.to_string(),
                fields: changed,
            }),
        }
    }
    write_entries(new, &entries);
}

/// The apiserver's 409 for apply conflicts: one cause per conflicting field and manager
/// (NewConflictError in
/// staging/src/k8s.io/apimachinery/pkg/util/managedfields/internal/conflict.go).
pub fn conflict_error(conflicts: &[Conflict]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {}", c.manager_label()),
                "field": c.path,
            })
        })
        .collect();
    ApiError {
        details: Some(json!({"causes": causes})),
        ..ApiError::new(409, "Conflict", conflict_message(conflicts))
    }
}

/// The message of [`conflict_error`]: one conflict inline, several grouped by manager.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [one] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.manager_label(),
            one.path
        );
    }
    let mut by_manager: BTreeMap<(String, String, String), Vec<&Conflict>> = BTreeMap::new();
    for c in conflicts {
        by_manager
            .entry((
                c.manager.clone(),
                c.operation.clone(),
                c.subresource.clone(),
            ))
            .or_default()
            .push(c);
    }
    let mut lines = Vec::new();
    for group in by_manager.values() {
        lines.push(format!("conflicts with {}:", group[0].manager_label()));
        lines.extend(group.iter().map(|c| format!("- {}", c.path)));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtins;

    fn configmaps() -> ResourceType {
        builtins()
            .into_iter()
            .find(|r| r.plural == "configmaps")
            .expect("configmaps")
    }

    const NOW: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn apply_creates_and_records_ownership() {
        let rt = configmaps();
        let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "1"}});
        let obj =
            apply(None, &applied, &rt, Part::Main, "alice", false, NOW).expect("no conflicts");
        let entries = read_entries(&obj);
        assert_eq!(entries.len(), 1);
        assert_eq!(
            to_fields_v1(&entries[0].fields),
            json!({"f:data": {"f:x": {}}, "f:metadata": {"f:labels": {"f:a": {}}}})
        );
    }

    #[test]
    fn other_managers_conflict_unless_forced_and_equal_values_share() {
        let rt = configmaps();
        let base = json!({"metadata": {"name": "c"}, "data": {"x": "1", "y": "1"}});
        let obj = apply(None, &base, &rt, Part::Main, "alice", false, NOW).expect("first apply");
        // Same value: shared, no conflict.
        let same = json!({"metadata": {"name": "c"}, "data": {"x": "1"}});
        let obj = apply(Some(&obj), &same, &rt, Part::Main, "bob", false, NOW)
            .expect("same value shares");
        // Different value: conflict naming alice.
        let different = json!({"metadata": {"name": "c"}, "data": {"y": "2"}});
        let err = apply(Some(&obj), &different, &rt, Part::Main, "bob", false, NOW)
            .expect_err("conflict");
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"alice\": .data.y"
        );
        // Forced: bob takes y; alice keeps x.
        let obj = apply(Some(&obj), &different, &rt, Part::Main, "bob", true, NOW).expect("forced");
        assert_eq!(obj["data"], json!({"x": "1", "y": "2"}));
        let entries = read_entries(&obj);
        let alice = entries
            .iter()
            .find(|e| e.manager == "alice")
            .expect("alice");
        assert!(
            !alice
                .fields
                .contains(&vec![Step::Field("data".into()), Step::Field("y".into())])
        );
    }

    #[test]
    fn fields_dropped_from_an_apply_are_removed_unless_others_own_them() {
        let rt = configmaps();
        let obj = apply(
            None,
            &json!({"metadata": {"name": "c"}, "data": {"x": "1", "y": "1"}}),
            &rt,
            Part::Main,
            "alice",
            false,
            NOW,
        )
        .expect("apply");
        let obj = apply(
            Some(&obj),
            &json!({"metadata": {"name": "c"}, "data": {"y": "1"}}),
            &rt,
            Part::Main,
            "bob",
            false,
            NOW,
        )
        .expect("bob shares y");
        let obj = apply(
            Some(&obj),
            &json!({"metadata": {"name": "c"}, "data": {}}),
            &rt,
            Part::Main,
            "alice",
            false,
            NOW,
        )
        .expect("alice drops both");
        assert_eq!(obj["data"], json!({"y": "1"}), "x removed, y kept for bob");
    }

    #[test]
    fn dropping_a_keyed_list_element_removes_it_whole() {
        let rt = builtins()
            .into_iter()
            .find(|r| r.plural == "deployments")
            .expect("deployments");
        let two = json!({"metadata": {"name": "d"}, "status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "Advisory", "status": "True", "reason": "WeakKey"}]}});
        let obj = apply(None, &two, &rt, Part::Status, "keyward", false, NOW).expect("apply");
        let one = json!({"metadata": {"name": "d"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let obj = apply(Some(&obj), &one, &rt, Part::Status, "keyward", false, NOW).expect("apply");
        assert_eq!(
            obj["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}])
        );
    }

    #[test]
    fn updates_take_ownership_of_changed_fields() {
        let rt = configmaps();
        let obj = apply(
            None,
            &json!({"metadata": {"name": "c"}, "data": {"x": "1"}}),
            &rt,
            Part::Main,
            "alice",
            false,
            NOW,
        )
        .expect("apply");
        let mut updated = obj.clone();
        updated["data"]["x"] = json!("2");
        record_update(
            Some(&obj),
            &mut updated,
            &rt,
            Part::Main,
            "kubectl-edit",
            NOW,
        );
        let entries = read_entries(&updated);
        assert!(
            entries.iter().all(|e| e.manager != "alice"),
            "alice owned only x, which moved"
        );
        let err = apply(
            Some(&updated),
            &json!({"metadata": {"name": "c"}, "data": {"x": "1"}}),
            &rt,
            Part::Main,
            "alice",
            false,
            NOW,
        )
        .expect_err("x now belongs to kubectl-edit");
        assert_eq!(err[0].manager, "kubectl-edit");
    }

    #[test]
    fn fields_v1_round_trips_with_element_markers() {
        let rt = builtins()
            .into_iter()
            .find(|r| r.plural == "deployments")
            .expect("deployments");
        let obj = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}, "metadata": {"finalizers": ["f"]}});
        let set = field_set(&obj, &rt);
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"a\"}"],
            json!({".": {}, "f:image": {}, "f:name": {}})
        );
        assert_eq!(v1["f:metadata"]["f:finalizers"], json!({"v:\"f\"": {}}));
        assert_eq!(from_fields_v1(&v1), set);
    }
}
