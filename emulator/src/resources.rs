//! The resource types the emulator serves: the built-in kinds keyward and kubectl use, and
//! the custom resources of every established CustomResourceDefinition.

use serde_json::{Value, json};

use crate::kinds::{BUILTINS, Kind};

/// How a list field merges under server-side apply and strategic merge patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole.
    Atomic,
    /// Elements identified by these key fields.
    Map(Vec<String>),
    /// Scalar elements, merged as a set.
    Set,
}

/// A CRD version's schema, with its CEL rules compiled once.
#[derive(Debug)]
pub struct CrdSchema {
    pub value: Value,
    pub compiled: kube_cel::CompiledSchema,
}

impl CrdSchema {
    pub fn new(value: Value) -> Self {
        let compiled = kube_cel::compile_schema(&value);
        Self { value, compiled }
    }
}

/// One served resource (a group/version/plural), with what the emulator needs to serve it.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `/status` subresource (spec and status written separately).
    pub status_subresource: bool,
    /// Objects carry `metadata.generation`, bumped on spec changes.
    pub has_generation: bool,
    /// The CRD's `openAPIV3Schema`, enforced on writes; shared, since a resource type is
    /// copied into every request.
    pub schema: Option<std::sync::Arc<CrdSchema>>,
    /// `additionalPrinterColumns` of the CRD.
    pub printer_columns: Vec<Value>,
    /// `selectableFields` of the CRD plus the built-in extras.
    pub extra_field_selectors: Vec<String>,
    /// Objects of resources that share a store (core and events.k8s.io Events) share a key.
    pub storage: String,
    /// Served from a CustomResourceDefinition.
    pub custom: bool,
    /// A built-in kind's defaults, validation, columns and schema.
    pub builtin: Option<&'static Kind>,
}

impl ResourceType {
    fn builtin(kind: &'static Kind) -> Self {
        let strings = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        Self {
            group: kind.group.into(),
            version: kind.version.into(),
            plural: kind.plural.into(),
            singular: kind.kind.to_lowercase(),
            kind: kind.kind.into(),
            namespaced: kind.namespaced,
            short_names: strings(kind.short_names),
            categories: strings(kind.categories),
            status_subresource: kind.status_subresource,
            has_generation: kind.has_generation,
            schema: None,
            printer_columns: Vec::new(),
            extra_field_selectors: strings(kind.field_selectors),
            storage: kind
                .storage
                .map(String::from)
                .unwrap_or_else(|| format!("{}/{}", kind.group, kind.plural)),
            custom: false,
            builtin: Some(kind),
        }
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `secrets` or `apikeys.keyward.dev`, as used in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Secret` or `ApiKey.keyward.dev`, as used in messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// How the list at `path` (field names from the object root, no indexes) merges.
    pub fn list_type(&self, path: &[&str]) -> ListType {
        match path {
            ["metadata", "finalizers"] => return ListType::Set,
            ["metadata", "ownerReferences"] => return ListType::Map(vec!["uid".into()]),
            ["metadata", "managedFields"] => return ListType::Atomic,
            _ => {}
        }
        if let Some(schema) = &self.schema {
            return schema_list_type(&schema.value, path);
        }
        builtin_list_type(path)
    }

    /// Whether `/status` or the main resource owns this top-level field.
    pub fn is_status_field(&self, field: &str) -> bool {
        self.status_subresource && field == "status"
    }
}

fn schema_list_type(schema: &Value, path: &[&str]) -> ListType {
    let mut node = schema;
    for (i, part) in path.iter().enumerate() {
        let next = node
            .get("properties")
            .and_then(|p| p.get(*part))
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()));
        match next {
            Some(n) => node = n,
            None => return ListType::Atomic,
        }
        // Fields below a list are fields of its items.
        let last = i + 1 == path.len();
        if !last && node.get("type").and_then(Value::as_str) == Some("array") {
            node = node.get("items").unwrap_or(node);
        }
    }
    match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => ListType::Map(
            node.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| {
                    k.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Some("set") => ListType::Set,
        _ => ListType::Atomic,
    }
}

/// Merge keys of the built-in lists keyward and kubectl touch (from the Go types' tags).
fn builtin_list_type(path: &[&str]) -> ListType {
    let last = path.last().copied().unwrap_or_default();
    let key = |k: &str| ListType::Map(vec![k.to_string()]);
    if path == ["spec", "versions"] {
        // CustomResourceDefinition versions.
        return key("name");
    }
    match last {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "env" => key("name"),
        "volumeMounts" => key("mountPath"),
        "volumeDevices" => key("devicePath"),
        "ports" if path.contains(&"containers") || path.contains(&"initContainers") => {
            ListType::Map(vec!["containerPort".into(), "protocol".into()])
        }
        // Service ports.
        "ports" if path == ["spec", "ports"] => {
            ListType::Map(vec!["port".into(), "protocol".into()])
        }
        "conditions" => key("type"),
        "finalizers" => ListType::Set,
        _ => ListType::Atomic,
    }
}

/// The resources served from the start, as a fresh kube-apiserver serves them.
pub fn builtins() -> Vec<ResourceType> {
    BUILTINS.iter().map(|k| ResourceType::builtin(k)).collect()
}

/// Problems with a CustomResourceDefinition that a real apiserver refuses.
pub fn check_crd(crd: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    if group.is_empty() {
        problems.push("spec.group: Required value".to_string());
    }
    if plural.is_empty() {
        problems.push("spec.names.plural: Required value".to_string());
    }
    if spec["names"]["kind"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        problems.push("spec.names.kind: Required value".to_string());
    }
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if name != format!("{plural}.{group}") {
        problems.push(format!(
            "metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"
        ));
    }
    if !matches!(spec["scope"].as_str(), Some("Namespaced" | "Cluster")) {
        problems.push(
            "spec.scope: Unsupported value: supported values: \"Cluster\", \"Namespaced\""
                .to_string(),
        );
    }
    let versions = spec["versions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if versions.is_empty() {
        problems.push(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
                .into(),
        );
    }
    if versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count()
        != 1
    {
        problems.push(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
                .into(),
        );
    }
    for (i, v) in versions.iter().enumerate() {
        if v["schema"]["openAPIV3Schema"].is_null() {
            problems.push(format!(
                "spec.versions[{i}].schema.openAPIV3Schema: Required value: schemas are required"
            ));
        }
    }
    problems
}

/// The served resources of a CRD, one per served version.
pub fn from_crd(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool() != Some(false))
        .map(|v| ResourceType {
            group: group.clone(),
            version: v["name"].as_str().unwrap_or_default().to_string(),
            plural: plural.clone(),
            singular: names["singular"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| kind.to_lowercase()),
            kind: kind.clone(),
            namespaced: spec["scope"].as_str() == Some("Namespaced"),
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status_subresource: !v["subresources"]["status"].is_null(),
            has_generation: true,
            schema: Some(std::sync::Arc::new(CrdSchema::new(
                v["schema"]["openAPIV3Schema"].clone(),
            ))),
            printer_columns: v["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            extra_field_selectors: v["selectableFields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["jsonPath"].as_str())
                .map(|p| p.trim_start_matches('.').to_string())
                .collect(),
            storage: format!("{group}/{plural}"),
            custom: true,
            builtin: None,
        })
        .collect()
}

/// The `status` a real apiserver gives an accepted CRD.
pub fn crd_status(crd: &Value, now: &str) -> Value {
    let names = crd["spec"]["names"].clone();
    let condition = |ty: &str, reason: &str, message: &str| json!({"type": ty, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now});
    json!({
        "acceptedNames": names,
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": crd["spec"]["versions"].as_array().into_iter().flatten()
            .filter(|v| v["storage"].as_bool() == Some(true))
            .filter_map(|v| v["name"].as_str())
            .collect::<Vec<_>>(),
    })
}
