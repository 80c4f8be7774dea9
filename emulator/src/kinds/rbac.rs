//! rbac.authorization.k8s.io/v1: Roles, ClusterRoles and their bindings. Stored and served;
//! the emulator authorizes nothing.

use serde_json::{Value, json};

use super::{AGE, Column, Kind, schema_of};

const RBAC: &str = "rbac.authorization.k8s.io";

/// Roles print their creation time rather than an age.
const CREATED_AT: Column = Column::new("Created At", "string", |o| {
    o["metadata"]["creationTimestamp"].clone()
})
.format("date");

pub const ROLE: Kind = Kind {
    columns: &[CREATED_AT],
    schema: Some(schema_of::<k8s_openapi::api::rbac::v1::Role>),
    ..Kind::plain(RBAC, "roles", "Role", true)
};

pub const CLUSTER_ROLE: Kind = Kind {
    columns: &[CREATED_AT],
    schema: Some(schema_of::<k8s_openapi::api::rbac::v1::ClusterRole>),
    ..Kind::plain(RBAC, "clusterroles", "ClusterRole", false)
};

const BINDING_COLUMNS: &[Column] = &[
    Column::new("Role", "string", |o| {
        json!(format!(
            "{}/{}",
            o["roleRef"]["kind"].as_str().unwrap_or_default(),
            o["roleRef"]["name"].as_str().unwrap_or_default()
        ))
    }),
    AGE,
    Column::new("Users", "string", |o| subjects(o, "User")).wide(),
    Column::new("Groups", "string", |o| subjects(o, "Group")).wide(),
    Column::new("ServiceAccounts", "string", |o| {
        subjects(o, "ServiceAccount")
    })
    .wide(),
];

fn subjects(o: &Value, kind: &str) -> Value {
    let names: Vec<String> = o["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["kind"] == kind)
        .map(|s| {
            let name = s["name"].as_str().unwrap_or_default();
            match s["namespace"].as_str() {
                Some(ns) if kind == "ServiceAccount" => format!("{ns}/{name}"),
                _ => name.to_string(),
            }
        })
        .collect();
    json!(names.join(", "))
}

pub const ROLE_BINDING: Kind = Kind {
    columns: BINDING_COLUMNS,
    schema: Some(schema_of::<k8s_openapi::api::rbac::v1::RoleBinding>),
    ..Kind::plain(RBAC, "rolebindings", "RoleBinding", true)
};

pub const CLUSTER_ROLE_BINDING: Kind = Kind {
    columns: BINDING_COLUMNS,
    schema: Some(schema_of::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>),
    ..Kind::plain(RBAC, "clusterrolebindings", "ClusterRoleBinding", false)
};
