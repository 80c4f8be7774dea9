//! apps/v1 workloads: Deployments, StatefulSets, DaemonSets (stored; no controller runs them).

use serde_json::{Value, json};

use super::{
    AGE, Column, Kind, child, default_field, format_selector, int_or_zero, pod, schema_of,
};

const fn workload_row(plural: &'static str, kind: &'static str) -> Kind {
    Kind {
        categories: &["all"],
        status_subresource: true,
        has_generation: true,
        ..Kind::plain("apps", plural, kind, true)
    }
}

const fn containers() -> Column {
    Column::new("Containers", "string", |o| names_of(o, "name")).wide()
}

const fn images() -> Column {
    Column::new("Images", "string", |o| names_of(o, "image")).wide()
}

const fn selector() -> Column {
    Column::new("Selector", "string", |o| {
        format_selector(&o["spec"]["selector"])
    })
    .wide()
}

fn names_of(o: &Value, field: &str) -> Value {
    let names: Vec<&str> = o["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c[field].as_str())
        .collect();
    json!(names.join(","))
}

pub const DEPLOYMENT: Kind = Kind {
    short_names: &["deploy"],
    defaults: deployment_defaults,
    columns: &[
        Column::new("Ready", "string", |o| {
            json!(format!(
                "{}/{}",
                o["status"]["readyReplicas"].as_i64().unwrap_or(0),
                o["spec"]["replicas"].as_i64().unwrap_or(1)
            ))
        }),
        Column::new("Up-to-date", "integer", |o| {
            int_or_zero(&o["status"]["updatedReplicas"])
        }),
        Column::new("Available", "integer", |o| {
            int_or_zero(&o["status"]["availableReplicas"])
        }),
        AGE,
        containers(),
        images(),
        selector(),
    ],
    schema: Some(schema_of::<k8s_openapi::api::apps::v1::Deployment>),
    ..workload_row("deployments", "Deployment")
};

/// SetDefaults_Deployment (apps/v1).
fn deployment_defaults(object: &mut Value, _old: Option<&Value>) {
    let spec = child(object, "spec");
    default_field(spec, "replicas", json!(1));
    default_field(spec, "revisionHistoryLimit", json!(10));
    default_field(spec, "progressDeadlineSeconds", json!(600));
    let strategy = child(spec, "strategy");
    default_field(strategy, "type", json!("RollingUpdate"));
    if strategy["type"] == "RollingUpdate" {
        let rolling = child(strategy, "rollingUpdate");
        default_field(rolling, "maxUnavailable", json!("25%"));
        default_field(rolling, "maxSurge", json!("25%"));
    }
    pod::template_defaults(child(spec, "template"));
}

pub const STATEFUL_SET: Kind = Kind {
    short_names: &["sts"],
    defaults: stateful_set_defaults,
    columns: &[
        Column::new("Ready", "string", |o| {
            json!(format!(
                "{}/{}",
                o["status"]["readyReplicas"].as_i64().unwrap_or(0),
                o["spec"]["replicas"].as_i64().unwrap_or(1)
            ))
        }),
        AGE,
        containers(),
        images(),
    ],
    schema: Some(schema_of::<k8s_openapi::api::apps::v1::StatefulSet>),
    ..workload_row("statefulsets", "StatefulSet")
};

/// SetDefaults_StatefulSet (apps/v1).
fn stateful_set_defaults(object: &mut Value, _old: Option<&Value>) {
    let spec = child(object, "spec");
    default_field(spec, "replicas", json!(1));
    default_field(spec, "revisionHistoryLimit", json!(10));
    default_field(spec, "podManagementPolicy", json!("OrderedReady"));
    default_field(
        spec,
        "persistentVolumeClaimRetentionPolicy",
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
    );
    let strategy = child(spec, "updateStrategy");
    default_field(strategy, "type", json!("RollingUpdate"));
    if strategy["type"] == "RollingUpdate" {
        default_field(strategy, "rollingUpdate", json!({"partition": 0}));
    }
    pod::template_defaults(child(spec, "template"));
}

pub const DAEMON_SET: Kind = Kind {
    short_names: &["ds"],
    defaults: daemon_set_defaults,
    columns: &[
        Column::new("Desired", "integer", |o| {
            int_or_zero(&o["status"]["desiredNumberScheduled"])
        }),
        Column::new("Current", "integer", |o| {
            int_or_zero(&o["status"]["currentNumberScheduled"])
        }),
        Column::new("Ready", "integer", |o| {
            int_or_zero(&o["status"]["numberReady"])
        }),
        Column::new("Up-to-date", "integer", |o| {
            int_or_zero(&o["status"]["updatedNumberScheduled"])
        }),
        Column::new("Available", "integer", |o| {
            int_or_zero(&o["status"]["numberAvailable"])
        }),
        Column::new("Node Selector", "string", |o| {
            super::format_labels(&o["spec"]["template"]["spec"]["nodeSelector"])
        }),
        AGE,
        containers(),
        images(),
        selector(),
    ],
    schema: Some(schema_of::<k8s_openapi::api::apps::v1::DaemonSet>),
    ..workload_row("daemonsets", "DaemonSet")
};

/// SetDefaults_DaemonSet (apps/v1).
fn daemon_set_defaults(object: &mut Value, _old: Option<&Value>) {
    let spec = child(object, "spec");
    default_field(spec, "revisionHistoryLimit", json!(10));
    let strategy = child(spec, "updateStrategy");
    default_field(strategy, "type", json!("RollingUpdate"));
    if strategy["type"] == "RollingUpdate" {
        let rolling = child(strategy, "rollingUpdate");
        default_field(rolling, "maxUnavailable", json!(1));
        default_field(rolling, "maxSurge", json!(0));
    }
    pod::template_defaults(child(spec, "template"));
}
