//! Discovery (`/version`, `/api`, `/apis`, resource lists) and OpenAPI documents, generated
//! from the served resources. kubectl needs `/openapi/v3` PATCH operations carrying
//! `x-kubernetes-group-version-kind` and the `fieldValidation` parameter before it sends
//! `apply` or `replace` with server-side validation.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::resources::ResourceType;

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0+keyward-emulator",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn core_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    })
}

fn groups(resources: &[ResourceType]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in resources.iter().filter(|r| !r.group.is_empty()) {
        let versions = out.entry(r.group.clone()).or_default();
        if !versions.contains(&r.version) {
            versions.push(r.version.clone());
        }
    }
    out
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

pub fn group_list(resources: &[ResourceType]) -> Value {
    let groups: Vec<Value> = groups(resources)
        .iter()
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(resources: &[ResourceType], name: &str) -> Option<Value> {
    groups(resources).get(name).map(|vs| {
        let mut g = group_json(name, vs);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

pub fn resource_list(resources: &[ResourceType], group: &str, version: &str) -> Option<Value> {
    let served: Vec<&ResourceType> = resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in served {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        list.push(entry);
        if r.status_subresource {
            list.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per group-version.
pub fn openapi_v3_index(resources: &[ResourceType]) -> Value {
    let mut paths = serde_json::Map::new();
    for r in resources {
        let path = gv_path(&r.group, &r.version);
        if paths.contains_key(&path) {
            continue;
        }
        let hash = format!(
            "{:016x}",
            fingerprint(&openapi_v3_document(resources, &r.group, &r.version))
        );
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

fn fingerprint(v: &Value) -> u64 {
    // FNV-1a: stable across runs, enough to change the URL when the document changes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn schema_name(r: &ResourceType) -> String {
    let group = if r.group.is_empty() {
        "core".to_string()
    } else {
        r.group.split('.').rev().collect::<Vec<_>>().join(".")
    };
    format!("{group}.{}.{}", r.version, r.kind)
}

fn query_params() -> Value {
    let p = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    json!([
        p("dryRun"),
        p("fieldManager"),
        p("fieldValidation"),
        p("force"),
        p("pretty")
    ])
}

/// `/openapi/v3/apis/GROUP/VERSION`: paths with their operations and the kinds' schemas.
pub fn openapi_v3_document(resources: &[ResourceType], group: &str, version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for r in resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let builtin = r.builtin.and_then(crate::kinds::schemas);
        let name = builtin.map_or_else(|| schema_name(r), |(name, _)| name.clone());
        let reference = json!({"$ref": format!("#/components/schemas/{name}")});
        let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}});
        let op = |action: &str| {
            json!({
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": query_params(),
                "responses": ok,
            })
        };
        let base = format!("/{}", gv_path(&r.group, &r.version));
        let collection = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        paths.insert(
            collection.clone(),
            json!({"get": op("list"), "post": op("post")}),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
        if r.status_subresource {
            paths.insert(
                format!("{collection}/{{name}}/status"),
                json!({"get": op("get"), "put": op("put"), "patch": op("patch")}),
            );
        }
        if let Some((_, defs)) = builtin {
            // The kind's real schema and the ones it refers to, as the apiserver publishes
            // them; `kubectl explain` walks these.
            for (def, schema) in defs {
                schemas.entry(def.clone()).or_insert_with(|| schema.clone());
            }
            schemas[&name]["x-kubernetes-group-version-kind"] = json!([gvk]);
            continue;
        }
        let mut schema = r.schema.as_ref().map(|s| s.value.clone()).unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        schemas.insert(name, schema);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// `/openapi/v2` in JSON: the same paths and definitions, swagger-shaped.
pub fn openapi_v2(resources: &[ResourceType]) -> Value {
    let mut definitions = serde_json::Map::new();
    let mut paths = serde_json::Map::new();
    for r in resources {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let params = json!([
            {"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true},
            {"name": "fieldManager", "in": "query", "type": "string", "uniqueItems": true},
            {"name": "dryRun", "in": "query", "type": "string", "uniqueItems": true},
        ]);
        let base = format!("/{}", gv_path(&r.group, &r.version));
        let item = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        paths.insert(
            item,
            json!({"patch": {"x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": {"200": {"description": "OK"}}}}),
        );
        if r.builtin.is_some() {
            // No v2 model for built-in kinds: kubectl then builds strategic merge patches
            // from its compiled-in Go types, which carry the real merge keys, where a
            // schemaless model would make it diff lists and maps it cannot see into.
            continue;
        }
        let mut schema = r
            .schema
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_else(|| json!({"type": "object"}));
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        definitions.insert(schema_name(r), schema);
    }
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": paths, "definitions": definitions})
}
