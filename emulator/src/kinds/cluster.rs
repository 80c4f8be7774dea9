//! The remaining groups: events.k8s.io Events, coordination Leases, policy
//! PodDisruptionBudgets, networking NetworkPolicies and apiextensions CRDs.

use serde_json::{Value, json};

use super::{
    AGE, Cause, Column, Kind, NameRule, child, default_field, each, format_selector, schema_of,
};

/// Events print no Name: when, what and about which object (shared by both Event APIs;
/// events.k8s.io ones are converted to the core form first).
pub const EVENT_COLUMNS: &[Column] = &[
    Column::new("Last Seen", "string", |o| {
        let core = as_core(o);
        [
            &core["lastTimestamp"],
            &core["eventTime"],
            &core["metadata"]["creationTimestamp"],
        ]
        .into_iter()
        .find(|v| !v.is_null())
        .map(crate::table::age_of)
        .unwrap_or(Value::Null)
    }),
    Column::new("Type", "string", |o| as_core(o)["type"].clone()),
    Column::new("Reason", "string", |o| as_core(o)["reason"].clone()),
    Column::new("Object", "string", |o| {
        let core = as_core(o);
        json!(format!(
            "{}/{}",
            core["involvedObject"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_lowercase(),
            core["involvedObject"]["name"].as_str().unwrap_or_default()
        ))
    }),
    Column::new("Message", "string", |o| as_core(o)["message"].clone()),
];

fn as_core(o: &Value) -> Value {
    if o["apiVersion"] == "events.k8s.io/v1" {
        crate::events::to_core(o)
    } else {
        o.clone()
    }
}

pub const EVENT_V1: Kind = Kind {
    short_names: &["ev"],
    field_selectors: &[
        "regarding.kind",
        "regarding.name",
        "regarding.namespace",
        "regarding.uid",
        "reason",
        "type",
        "reportingController",
    ],
    storage: Some("events"),
    name_rule: NameRule::Any,
    columns: EVENT_COLUMNS,
    name_column: false,
    schema: Some(schema_of::<k8s_openapi::api::events::v1::Event>),
    ..Kind::plain("events.k8s.io", "events", "Event", true)
};

pub const LEASE: Kind = Kind {
    columns: &[
        Column::new("Holder", "string", |o| o["spec"]["holderIdentity"].clone()),
        AGE,
    ],
    schema: Some(schema_of::<k8s_openapi::api::coordination::v1::Lease>),
    ..Kind::plain("coordination.k8s.io", "leases", "Lease", true)
};

pub const POD_DISRUPTION_BUDGET: Kind = Kind {
    short_names: &["pdb"],
    status_subresource: true,
    has_generation: true,
    columns: &[
        Column::new("Min Available", "string", |o| {
            or_na(&o["spec"]["minAvailable"])
        }),
        Column::new("Max Unavailable", "string", |o| {
            or_na(&o["spec"]["maxUnavailable"])
        }),
        Column::new("Allowed Disruptions", "integer", |o| {
            json!(o["status"]["disruptionsAllowed"].as_i64().unwrap_or(0))
        }),
        AGE,
    ],
    schema: Some(schema_of::<k8s_openapi::api::policy::v1::PodDisruptionBudget>),
    ..Kind::plain(
        "policy",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
    )
};

fn or_na(v: &Value) -> Value {
    match v {
        Value::Null => json!("N/A"),
        Value::String(s) => json!(s),
        other => json!(other.to_string()),
    }
}

pub const NETWORK_POLICY: Kind = Kind {
    short_names: &["netpol"],
    has_generation: true,
    defaults: network_policy_defaults,
    columns: &[
        Column::new("Pod-Selector", "string", |o| {
            let s = format_selector(&o["spec"]["podSelector"]);
            if s == "<none>" { json!("<none>") } else { s }
        }),
        AGE,
    ],
    schema: Some(schema_of::<k8s_openapi::api::networking::v1::NetworkPolicy>),
    ..Kind::plain(
        "networking.k8s.io",
        "networkpolicies",
        "NetworkPolicy",
        true,
    )
};

/// SetDefaults_NetworkPolicy: port protocols TCP; policyTypes from the rules given.
fn network_policy_defaults(object: &mut Value, _old: Option<&Value>) {
    let spec = child(object, "spec");
    for direction in ["ingress", "egress"] {
        each(spec, direction, |rule| {
            each(rule, "ports", |port| {
                default_field(port, "protocol", json!("TCP"));
            });
        });
    }
    if spec["policyTypes"].as_array().is_none_or(Vec::is_empty) {
        let mut types = vec![json!("Ingress")];
        if spec["egress"].as_array().is_some_and(|e| !e.is_empty()) {
            types.push(json!("Egress"));
        }
        spec["policyTypes"] = Value::Array(types);
    }
}

pub const CUSTOM_RESOURCE_DEFINITION: Kind = Kind {
    short_names: &["crd", "crds"],
    status_subresource: true,
    has_generation: true,
    validate: crd_validate,
    columns: &[Column::new("Created At", "date", |o| {
        o["metadata"]["creationTimestamp"].clone()
    })],
    ..Kind::plain(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
    )
};

fn crd_validate(object: &Value, _old: Option<&Value>) -> Vec<Cause> {
    crate::resources::check_crd(object)
        .into_iter()
        .map(|p| (String::new(), "FieldValueInvalid", p))
        .collect()
}
