//! The one way controllers write status: compute it from a baseline, compare, and only when
//! it changed, server-side apply `status` alone under keyward's field manager. The baseline
//! is the status keyward last wrote while the cache still shows the version it wrote over,
//! so a stale cache never causes a second write with fresh transition times.

use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{Context, FIELD_MANAGER};

impl Context {
    /// The status to compare against for `obj` (whose cached status is `cached`).
    pub fn status_baseline<K, S>(&self, obj: &K, cached: Option<S>) -> Option<S>
    where
        K: Resource<DynamicType = ()>,
        S: DeserializeOwned,
    {
        let key = ObjectRef::from_obj(obj).erase();
        let memo = self.status_memo.lock().unwrap_or_else(|p| p.into_inner());
        match memo.get(&key) {
            Some((base_rv, status)) if Some(base_rv) == obj.resource_version().as_ref() => {
                serde_json::from_str(status).ok().or(cached)
            }
            _ => cached,
        }
    }

    /// Writes `status` onto `obj` (server-side apply of the status subresource) and
    /// remembers it against `base_rv`, the version of `obj` this reconcile started from.
    pub async fn apply_status<K, S>(
        &self,
        obj: &K,
        base_rv: Option<String>,
        status: &S,
    ) -> Result<Arc<K>, kube::Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        S: Serialize,
    {
        let api: Api<K> =
            Api::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default());
        let patch = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        let written = api
            .patch_status(
                &obj.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        self.activity.wrote(&written);
        // Compact JSON text: one memo per object written, kept small.
        if let (Some(rv), Ok(value)) = (base_rv, serde_json::to_string(status)) {
            self.status_memo
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ObjectRef::from_obj(obj).erase(), (rv, value));
        }
        Ok(Arc::new(written))
    }
}
