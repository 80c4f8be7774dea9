//! Protobuf request bodies. `kubectl create secret|configmap|namespace` sends
//! `application/vnd.kubernetes.protobuf` and never falls back to JSON, so the emulator
//! decodes the envelope (`k8s\0` + runtime.Unknown) and the object with k8s-pb, then
//! continues in JSON like every other request, defaults included. Which kinds decode is
//! each kind's row in `crate::kinds`.

use base64::Engine;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\x00";

fn metadata(m: Option<meta::ObjectMeta>) -> Value {
    let m = m.unwrap_or_default();
    let mut out = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.insert(k.into(), json!(v));
        }
    };
    put("name", m.name);
    put("generateName", m.generate_name);
    put("namespace", m.namespace);
    put("resourceVersion", m.resource_version);
    put("uid", m.uid);
    if !m.labels.is_empty() {
        out.insert("labels".into(), json!(m.labels));
    }
    if !m.annotations.is_empty() {
        out.insert("annotations".into(), json!(m.annotations));
    }
    if !m.finalizers.is_empty() {
        out.insert("finalizers".into(), json!(m.finalizers));
    }
    if !m.owner_references.is_empty() {
        let refs: Vec<Value> = m
            .owner_references
            .into_iter()
            .map(|r| {
                json!({
                    "apiVersion": r.api_version, "kind": r.kind, "name": r.name, "uid": r.uid,
                    "controller": r.controller, "blockOwnerDeletion": r.block_owner_deletion,
                })
            })
            .collect();
        out.insert("ownerReferences".into(), Value::Array(refs));
    }
    Value::Object(out)
}

/// Decodes a protobuf body into the JSON form of the object, with the decoder the kind's
/// row names; kinds without one get a clear error.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let raw = body
        .strip_prefix(MAGIC)
        .ok_or("protobuf body lacks the k8s\\0 envelope prefix")?;
    let unknown = Unknown::decode(raw).map_err(|e| format!("protobuf envelope: {e}"))?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let bytes = unknown.raw.unwrap_or_default();
    let decoder = crate::kinds::BUILTINS
        .iter()
        .find(|k| k.api_version() == api_version && k.kind == kind)
        .and_then(|k| k.protobuf)
        .ok_or_else(|| {
            format!(
                "protobuf bodies for {api_version} {kind} are not supported by the emulator; send JSON"
            )
        })?;
    let mut object = decoder(&bytes)?;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

fn b64(bytes: Vec<u8>) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
}

pub fn secret(bytes: &[u8]) -> Result<Value, String> {
    let s = core::Secret::decode(bytes).map_err(|e| format!("Secret: {e}"))?;
    let data: Map<String, Value> = s.data.into_iter().map(|(k, v)| (k, b64(v))).collect();
    let mut o = json!({"metadata": metadata(s.metadata), "data": data});
    if !s.string_data.is_empty() {
        o["stringData"] = json!(s.string_data);
    }
    if let Some(t) = s.r#type {
        o["type"] = json!(t);
    }
    if let Some(i) = s.immutable {
        o["immutable"] = json!(i);
    }
    Ok(o)
}

pub fn config_map(bytes: &[u8]) -> Result<Value, String> {
    let c = core::ConfigMap::decode(bytes).map_err(|e| format!("ConfigMap: {e}"))?;
    let mut o = json!({"metadata": metadata(c.metadata)});
    if !c.data.is_empty() {
        o["data"] = json!(c.data);
    }
    if !c.binary_data.is_empty() {
        let bin: Map<String, Value> = c
            .binary_data
            .into_iter()
            .map(|(k, v)| (k, b64(v)))
            .collect();
        o["binaryData"] = Value::Object(bin);
    }
    if let Some(i) = c.immutable {
        o["immutable"] = json!(i);
    }
    Ok(o)
}

pub fn namespace(bytes: &[u8]) -> Result<Value, String> {
    let n = core::Namespace::decode(bytes).map_err(|e| format!("Namespace: {e}"))?;
    Ok(json!({"metadata": metadata(n.metadata)}))
}

pub fn service_account(bytes: &[u8]) -> Result<Value, String> {
    let s = core::ServiceAccount::decode(bytes).map_err(|e| format!("ServiceAccount: {e}"))?;
    Ok(json!({"metadata": metadata(s.metadata)}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;

    #[test]
    fn decodes_a_secret_as_kubectl_sends_it() {
        let secret = core::Secret {
            metadata: Some(meta::ObjectMeta {
                name: Some("s".into()),
                ..Default::default()
            }),
            data: [("k".to_string(), b"v".to_vec())].into_iter().collect(),
            r#type: Some("Opaque".into()),
            ..Default::default()
        };
        let envelope = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
            }),
            raw: Some(secret.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut body = MAGIC.to_vec();
        body.extend(envelope.encode_to_vec());
        let v = decode(&body).expect("decodes");
        assert_eq!(v["metadata"]["name"], "s");
        assert_eq!(v["data"]["k"], "dg==");
        assert_eq!(v["kind"], "Secret");
        assert!(decode(b"{}").is_err());
    }
}
