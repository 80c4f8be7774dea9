//! The finalizer a kind needs when it owns something an ownerReference cannot clean up
//! (the hash records in another namespace). Both writes are JSON patches guarded by a
//! `test` of what they change, so they never drop another controller's finalizer.

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::Context;

fn api_for<K>(ctx: &Context, obj: &K) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default())
}

/// Adds `finalizer` to `obj` unless present; returns the new resourceVersion when it wrote.
pub async fn ensure<K>(
    ctx: &Context,
    obj: &K,
    finalizer: &str,
) -> Result<Option<String>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let finalizers = obj.finalizers();
    if finalizers.iter().any(|f| f == finalizer) {
        return Ok(None);
    }
    let ops = if obj.meta().finalizers.is_none() {
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": obj.resource_version()},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer},
        ])
    };
    let patch: json_patch::Patch = serde_json::from_value(ops).expect("static JSON patch");
    let patched = api_for(ctx, obj)
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await?;
    ctx.activity.wrote(&patched);
    Ok(patched.resource_version())
}

/// Removes `finalizer` from `obj` (a 404 means it is gone already).
pub async fn release<K>(ctx: &Context, obj: &K, finalizer: &str) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    if !obj.finalizers().iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let remaining: Vec<&String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .collect();
    let ops = json!([
        {"op": "test", "path": "/metadata/finalizers", "value": obj.finalizers()},
        {"op": "replace", "path": "/metadata/finalizers", "value": remaining},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(ops).expect("static JSON patch");
    match api_for(ctx, obj)
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(released) => {
            ctx.activity.wrote(&released);
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
