//! What the emulator knows about each built-in kind, in one row per kind: where it is
//! served, the defaults kube-apiserver sets, the validation it applies, the Table columns
//! it prints, how its protobuf body decodes and where its OpenAPI schema comes from. The
//! store, Table and protobuf code read the row; none of them names a kind. Serving a new
//! built-in kind is adding a row to [`BUILTINS`].

mod apps;
mod cluster;
mod core;
mod pod;
mod rbac;

use serde_json::{Value, json};

/// A validation failure: field path, Status cause reason, message (starting with the path).
pub type Cause = (String, &'static str, String);

/// Which name rule `metadata.name` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most kinds).
    Subdomain,
    /// RFC 1123 label (namespaces).
    Label,
    /// Not checked (events, whose names carry timestamps and dots).
    Any,
}

/// One Table column: its definition and how a cell is computed from an object.
#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    pub ty: &'static str,
    pub format: &'static str,
    /// 0 for the default view, 1 for `-o wide`.
    pub priority: i64,
    pub cell: fn(&Value) -> Value,
}

impl Column {
    pub const fn new(name: &'static str, ty: &'static str, cell: fn(&Value) -> Value) -> Self {
        Self {
            name,
            ty,
            format: "",
            priority: 0,
            cell,
        }
    }

    /// Shown with `-o wide` only.
    pub const fn wide(mut self) -> Self {
        self.priority = 1;
        self
    }

    pub const fn format(mut self, format: &'static str) -> Self {
        self.format = format;
        self
    }
}

/// The OpenAPI v3 schema of a kind and the schemas it refers to, keyed by their names.
pub type Schemas = (String, serde_json::Map<String, Value>);

/// Decodes a kind's protobuf bytes (without the envelope) into its JSON form.
pub type ProtobufDecoder = fn(&[u8]) -> Result<Value, String>;

/// One built-in kind.
#[derive(Debug)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Has a `/status` subresource.
    pub status_subresource: bool,
    /// Objects carry `metadata.generation`.
    pub has_generation: bool,
    /// Field selectors beyond `metadata.name` and `metadata.namespace`.
    pub field_selectors: &'static [&'static str],
    /// Objects of kinds sharing a store (core and events.k8s.io Events) share this key;
    /// `None` for `group/plural`.
    pub storage: Option<&'static str>,
    pub name_rule: NameRule,
    /// The server's defaulting and normalisation; `old` is the stored object on updates.
    pub defaults: fn(object: &mut Value, old: Option<&Value>),
    /// The server's validation, after defaulting.
    pub validate: fn(object: &Value, old: Option<&Value>) -> Vec<Cause>,
    /// Table columns after Name (events have no Name column: see `name_column`).
    pub columns: &'static [Column],
    pub name_column: bool,
    /// Decodes the protobuf form of the object (without the envelope) into JSON.
    pub protobuf: Option<ProtobufDecoder>,
    /// The kind's OpenAPI v3 schema, as kube-apiserver publishes it.
    pub schema: Option<fn() -> Schemas>,
}

fn no_defaults(_: &mut Value, _: Option<&Value>) {}

fn no_validation(_: &Value, _: Option<&Value>) -> Vec<Cause> {
    Vec::new()
}

/// The AGE column every kind ends with.
pub const AGE: Column = Column::new("Age", "string", age);

impl Kind {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// A row with no behaviour beyond storage, a Name and an Age column.
    pub const fn plain(
        group: &'static str,
        plural: &'static str,
        kind: &'static str,
        namespaced: bool,
    ) -> Self {
        Self {
            group,
            version: "v1",
            plural,
            kind,
            namespaced,
            short_names: &[],
            categories: &[],
            status_subresource: false,
            has_generation: false,
            field_selectors: &[],
            storage: None,
            name_rule: NameRule::Subdomain,
            defaults: no_defaults,
            validate: no_validation,
            columns: &[AGE],
            name_column: true,
            protobuf: None,
            schema: None,
        }
    }
}

/// Every built-in kind, in discovery order.
pub static BUILTINS: &[&Kind] = &[
    &core::NAMESPACE,
    &core::SECRET,
    &core::CONFIG_MAP,
    &core::SERVICE_ACCOUNT,
    &core::SERVICE,
    &core::POD,
    &core::EVENT,
    &cluster::EVENT_V1,
    &cluster::LEASE,
    &apps::DEPLOYMENT,
    &apps::STATEFUL_SET,
    &apps::DAEMON_SET,
    &rbac::ROLE,
    &rbac::CLUSTER_ROLE,
    &rbac::ROLE_BINDING,
    &rbac::CLUSTER_ROLE_BINDING,
    &cluster::POD_DISRUPTION_BUDGET,
    &cluster::NETWORK_POLICY,
    &cluster::CUSTOM_RESOURCE_DEFINITION,
];

// ---- helpers the rows share ------------------------------------------------------------

/// Sets `object[field]` to `value` when it is absent or null.
pub(crate) fn default_field(object: &mut Value, field: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        let slot = map.entry(field.to_string()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// The object at `object[field]`, created empty when absent.
pub(crate) fn child<'a>(object: &'a mut Value, field: &str) -> &'a mut Value {
    if !object[field].is_object() {
        object[field] = json!({});
    }
    &mut object[field]
}

/// Applies `f` to every element of the list at `object[field]`.
pub(crate) fn each(object: &mut Value, field: &str, f: impl Fn(&mut Value)) {
    if let Some(items) = object.get_mut(field).and_then(Value::as_array_mut) {
        items.iter_mut().for_each(f);
    }
}

/// The AGE cell: how long ago the object was created, as the apiserver prints it.
pub fn age(object: &Value) -> Value {
    crate::table::age_of(&object["metadata"]["creationTimestamp"])
}

/// An integer field's cell, 0 when unset (Go's zero value).
pub(crate) fn int_or_zero(value: &Value) -> Value {
    json!(value.as_i64().unwrap_or(0))
}

/// `a=b,c=d` from a map of strings, `<none>` when empty (labels.FormatLabels).
pub(crate) fn format_labels(map: &Value) -> Value {
    let pairs: Vec<String> = map
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if pairs.is_empty() {
        json!("<none>")
    } else {
        json!(pairs.join(","))
    }
}

/// A label selector's string form (metav1.FormatLabelSelector), `<none>` when empty.
pub(crate) fn format_selector(selector: &Value) -> Value {
    let mut parts: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for expr in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = expr["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = expr["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match expr["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    if parts.is_empty() {
        json!("<none>")
    } else {
        json!(parts.join(","))
    }
}

/// The schema of `T` as k8s-openapi generates it (from the same Go documentation the
/// apiserver publishes), with the schemas it refers to under `#/components/schemas/`.
pub(crate) fn schema_of<T: schemars::JsonSchema>() -> Schemas {
    let generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let root = generator.into_root_schema_for::<T>();
    let mut value = root.to_value();
    let mut defs = value
        .pointer_mut("/components/schemas")
        .map(Value::take)
        .and_then(|v| match v {
            Value::Object(map) => Some(map),
            _ => None,
        })
        .unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("components");
        map.remove("$schema");
        map.remove("title");
    }
    let name = T::schema_name().into_owned();
    defs.insert(name.clone(), value);
    (name, defs)
}

/// The OpenAPI schemas of every built-in kind, generated once: the kind's own schema name
/// and everything under `#/components/schemas/` it needs.
pub fn schemas(kind: &Kind) -> Option<&'static Schemas> {
    static ALL: std::sync::OnceLock<Vec<(String, Option<Schemas>)>> = std::sync::OnceLock::new();
    let all = ALL.get_or_init(|| {
        BUILTINS
            .iter()
            .map(|k| (key(k), k.schema.map(|generate| generate())))
            .collect()
    });
    let wanted = key(kind);
    all.iter()
        .find(|(k, _)| *k == wanted)
        .and_then(|(_, s)| s.as_ref())
}

fn key(kind: &Kind) -> String {
    format!("{}/{}/{}", kind.group, kind.version, kind.plural)
}
