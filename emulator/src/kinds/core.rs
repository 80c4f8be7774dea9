//! core/v1 kinds: Namespace, Secret, ConfigMap, ServiceAccount, Service, Pod, Event.

use base64::Engine;
use serde_json::{Value, json};

use super::{
    AGE, Cause, Column, Kind, NameRule, child, default_field, each, int_or_zero, schema_of,
};
use crate::{names, protobuf};

/// Secret and ConfigMap data: at most 1 MiB (corev1.MaxSecretSize).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// The label the server keeps equal to a namespace's name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub const NAMESPACE: Kind = Kind {
    short_names: &["ns"],
    field_selectors: &["status.phase"],
    status_subresource: true,
    name_rule: NameRule::Label,
    defaults: namespace_defaults,
    columns: &[
        Column::new("Status", "string", |o| o["status"]["phase"].clone()),
        AGE,
    ],
    protobuf: Some(protobuf::namespace),
    schema: Some(schema_of::<k8s_openapi::api::core::v1::Namespace>),
    ..Kind::plain("", "namespaces", "Namespace", false)
};

fn namespace_defaults(object: &mut Value, old: Option<&Value>) {
    let name = object["metadata"]["name"].clone();
    child(child(object, "metadata"), "labels")[NAMESPACE_NAME_LABEL] = name;
    if old.is_none() {
        default_field(object, "spec", json!({"finalizers": ["kubernetes"]}));
        default_field(object, "status", json!({"phase": "Active"}));
    }
}

pub const SECRET: Kind = Kind {
    field_selectors: &["type"],
    defaults: secret_defaults,
    validate: secret_validate,
    columns: &[
        Column::new("Type", "string", |o| o["type"].clone()),
        Column::new("Data", "string", |o| json!(count(&o["data"]))),
        AGE,
    ],
    protobuf: Some(protobuf::secret),
    schema: Some(schema_of::<k8s_openapi::api::core::v1::Secret>),
    ..Kind::plain("", "secrets", "Secret", true)
};

fn count(map: &Value) -> usize {
    map.as_object().map_or(0, |m| m.len())
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// `stringData` folds into `data` and the type defaults to Opaque, whatever the encoding
/// of the request (Go's zero value, an empty string, counts as unset).
fn secret_defaults(object: &mut Value, _old: Option<&Value>) {
    if let Some(Value::Object(string_data)) = object.get("stringData").cloned() {
        let data = child(object, "data");
        for (k, v) in string_data {
            data[k] = json!(b64().encode(v.as_str().unwrap_or_default()));
        }
    }
    if let Some(map) = object.as_object_mut() {
        map.remove("stringData");
    }
    if object["type"].as_str().is_none_or(str::is_empty) {
        object["type"] = json!("Opaque");
    }
}

fn secret_validate(object: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut total = 0;
    for (k, v) in object["data"].as_object().into_iter().flatten() {
        match v.as_str().map(|s| b64().decode(s)) {
            Some(Ok(bytes)) => total += bytes.len(),
            _ => causes.push((
                format!("data[{k}]"),
                "FieldValueInvalid",
                format!("data[{k}]: Invalid value: illegal base64 data"),
            )),
        }
        if !names::is_data_key(k) {
            causes.push((format!("data[{k}]"), "FieldValueInvalid", format!("data[{k}]: Invalid value: {k:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'")));
        }
    }
    if total > MAX_DATA_BYTES {
        causes.push((
            "data".into(),
            "FieldValueTooLong",
            format!("data: Too long: must have at most {MAX_DATA_BYTES} bytes"),
        ));
    }
    if let Some(old) = old {
        if old["type"] != object["type"] {
            causes.push((
                "type".into(),
                "FieldValueInvalid",
                "type: Invalid value: field is immutable".into(),
            ));
        }
        causes.extend(immutable_data(object, old));
    }
    causes
}

fn immutable_data(object: &Value, old: &Value) -> Option<Cause> {
    let frozen = old["immutable"].as_bool() == Some(true);
    let changed = old["data"] != object["data"]
        || old["binaryData"] != object["binaryData"]
        || object["immutable"].as_bool() != Some(true);
    (frozen && changed).then(|| {
        (
            "data".into(),
            "FieldValueForbidden",
            "data: Forbidden: field is immutable when `immutable` is set".into(),
        )
    })
}

pub const CONFIG_MAP: Kind = Kind {
    short_names: &["cm"],
    validate: config_map_validate,
    columns: &[
        Column::new("Data", "string", |o| {
            json!(count(&o["data"]) + count(&o["binaryData"]))
        }),
        AGE,
    ],
    protobuf: Some(protobuf::config_map),
    schema: Some(schema_of::<k8s_openapi::api::core::v1::ConfigMap>),
    ..Kind::plain("", "configmaps", "ConfigMap", true)
};

fn config_map_validate(object: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let text: usize = object["data"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, v)| v.as_str().map_or(0, str::len))
        .sum();
    let binary: usize = object["binaryData"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, v)| {
            v.as_str()
                .and_then(|s| b64().decode(s).ok())
                .map_or(0, |b| b.len())
        })
        .sum();
    if text + binary > MAX_DATA_BYTES {
        // The apiserver reports the whole object, whose path prints as `[]`.
        causes.push((
            "[]".into(),
            "FieldValueTooLong",
            format!("[]: Too long: must have at most {MAX_DATA_BYTES} bytes"),
        ));
    }
    if let Some(old) = old {
        causes.extend(immutable_data(object, old));
    }
    causes
}

pub const SERVICE_ACCOUNT: Kind = Kind {
    short_names: &["sa"],
    columns: &[
        Column::new("Secrets", "string", |o| json!(count_list(&o["secrets"]))),
        AGE,
    ],
    protobuf: Some(protobuf::service_account),
    schema: Some(schema_of::<k8s_openapi::api::core::v1::ServiceAccount>),
    ..Kind::plain("", "serviceaccounts", "ServiceAccount", true)
};

fn count_list(list: &Value) -> usize {
    list.as_array().map_or(0, Vec::len)
}

pub const SERVICE: Kind = Kind {
    short_names: &["svc"],
    categories: &["all"],
    status_subresource: true,
    defaults: service_defaults,
    columns: &[
        Column::new("Type", "string", |o| o["spec"]["type"].clone()),
        Column::new("Cluster-IP", "string", |o| {
            json!(o["spec"]["clusterIP"].as_str().unwrap_or("<none>"))
        }),
        Column::new("External-IP", "string", external_ips),
        Column::new("Port(s)", "string", service_ports),
        AGE,
        Column::new("Selector", "string", |o| {
            super::format_labels(&o["spec"]["selector"])
        })
        .wide(),
    ],
    schema: Some(schema_of::<k8s_openapi::api::core::v1::Service>),
    ..Kind::plain("", "services", "Service", true)
};

/// SetDefaults_Service and the cluster IP allocator: the IP is derived from the uid-free
/// name so that it is stable; later writes keep the one first given (it is immutable).
fn service_defaults(object: &mut Value, old: Option<&Value>) {
    let spec = child(object, "spec");
    default_field(spec, "type", json!("ClusterIP"));
    default_field(spec, "sessionAffinity", json!("None"));
    let ty = spec["type"].as_str().unwrap_or_default().to_string();
    each(spec, "ports", |port| {
        default_field(port, "protocol", json!("TCP"));
        let number = port["port"].clone();
        default_field(port, "targetPort", number);
    });
    if ty != "ExternalName" {
        default_field(spec, "internalTrafficPolicy", json!("Cluster"));
        default_field(spec, "ipFamilyPolicy", json!("SingleStack"));
        default_field(spec, "ipFamilies", json!(["IPv4"]));
        let kept = old.map(|o| o["spec"]["clusterIP"].clone());
        if let Some(ip) = kept.filter(|ip| !ip.is_null()) {
            default_field(spec, "clusterIP", ip);
        }
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
        let allocated = cluster_ip(ns, name);
        let spec = child(object, "spec");
        default_field(spec, "clusterIP", json!(allocated));
        let ip = spec["clusterIP"].clone();
        default_field(spec, "clusterIPs", json!([ip]));
    }
}

/// An address in the default service range 10.96.0.0/12, stable for a namespace/name.
fn cluster_ip(ns: &str, name: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in ns.bytes().chain([b'/']).chain(name.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("10.96.{}.{}", (h >> 8) % 256, (h % 254) + 1)
}

fn external_ips(o: &Value) -> Value {
    let mut ips: Vec<String> = o["spec"]["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect();
    for ingress in o["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(ip) = ingress["ip"].as_str().or(ingress["hostname"].as_str()) {
            ips.push(ip.to_string());
        }
    }
    match (ips.is_empty(), o["spec"]["type"].as_str()) {
        (false, _) => json!(ips.join(",")),
        (true, Some("LoadBalancer")) => json!("<pending>"),
        (true, Some("ExternalName")) => o["spec"]["externalName"].clone(),
        (true, _) => json!("<none>"),
    }
}

fn service_ports(o: &Value) -> Value {
    let ports: Vec<String> = o["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(node) => format!("{}:{node}/{protocol}", p["port"]),
                None => format!("{}/{protocol}", p["port"]),
            }
        })
        .collect();
    if ports.is_empty() {
        json!("<none>")
    } else {
        json!(ports.join(","))
    }
}

pub const POD: Kind = Kind {
    short_names: &["po"],
    categories: &["all"],
    status_subresource: true,
    field_selectors: &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
    ],
    defaults: pod_defaults,
    columns: &[
        Column::new("Ready", "string", pod_ready),
        Column::new("Status", "string", |o| o["status"]["phase"].clone()),
        Column::new("Restarts", "string", pod_restarts),
        AGE,
        Column::new("IP", "string", |o| {
            json!(o["status"]["podIP"].as_str().unwrap_or("<none>"))
        })
        .wide(),
        Column::new("Node", "string", |o| {
            json!(o["spec"]["nodeName"].as_str().unwrap_or("<none>"))
        })
        .wide(),
        Column::new("Nominated Node", "string", |o| {
            json!(
                o["status"]["nominatedNodeName"]
                    .as_str()
                    .unwrap_or("<none>")
            )
        })
        .wide(),
        Column::new("Readiness Gates", "string", |o| {
            match count_list(&o["spec"]["readinessGates"]) {
                0 => json!("<none>"),
                n => json!(format!("0/{n}")),
            }
        })
        .wide(),
    ],
    schema: Some(schema_of::<k8s_openapi::api::core::v1::Pod>),
    ..Kind::plain("", "pods", "Pod", true)
};

/// A pod nobody schedules stays Pending, with the spec defaults a pod template gets.
fn pod_defaults(object: &mut Value, old: Option<&Value>) {
    super::pod::spec_defaults(child(object, "spec"));
    default_field(
        child(object, "spec"),
        "serviceAccountName",
        json!("default"),
    );
    if old.is_none() {
        default_field(
            object,
            "status",
            json!({"phase": "Pending", "qosClass": "BestEffort"}),
        );
    }
}

fn pod_ready(o: &Value) -> Value {
    let statuses = o["status"]["containerStatuses"].as_array();
    let ready = statuses
        .into_iter()
        .flatten()
        .filter(|s| s["ready"].as_bool() == Some(true))
        .count();
    json!(format!("{ready}/{}", count_list(&o["spec"]["containers"])))
}

fn pod_restarts(o: &Value) -> Value {
    let restarts: i64 = o["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["restartCount"].as_i64().unwrap_or(0))
        .sum();
    int_or_zero(&json!(restarts))
}

/// core/v1 Events share their store with events.k8s.io/v1 ones, kept in core form.
pub const EVENT: Kind = Kind {
    short_names: &["ev"],
    field_selectors: &[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ],
    storage: Some("events"),
    name_rule: NameRule::Any,
    columns: super::cluster::EVENT_COLUMNS,
    name_column: false,
    schema: Some(schema_of::<k8s_openapi::api::core::v1::Event>),
    ..Kind::plain("", "events", "Event", true)
};
