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

use super::activity::AnyRef;
use super::{Context, FIELD_MANAGER};

/// How long a written status stays remembered: long enough for any watch to echo the write
/// (the observe steps also wait for that echo), short enough that the memo stays a handful
/// of entries at any scale.
const MEMO_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// The statuses keyward wrote lately, each with the resourceVersion it was based on.
#[derive(Default)]
pub(super) struct StatusMemo {
    entries: std::collections::HashMap<AnyRef, (String, String, std::time::Instant)>,
    order: std::collections::VecDeque<(std::time::Instant, AnyRef)>,
}

impl StatusMemo {
    fn get(&self, key: &AnyRef, rv: Option<&String>) -> Option<&str> {
        self.entries
            .get(key)
            .filter(|(base, _, _)| Some(base) == rv)
            .map(|(_, status, _)| status.as_str())
    }

    fn insert(&mut self, key: AnyRef, rv: String, status: String) {
        let now = std::time::Instant::now();
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < MEMO_TTL {
                break;
            }
            let Some((at, old)) = self.order.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&old)
                .is_some_and(|(_, _, written)| *written == at)
            {
                self.entries.remove(&old);
            }
        }
        self.order.push_back((now, key.clone()));
        self.entries.insert(key, (rv, status, now));
    }

    pub(super) fn remove(&mut self, key: &AnyRef) {
        self.entries.remove(key);
    }
}

impl Context {
    /// The status to compare against for `obj` (whose cached status is `cached`).
    pub fn status_baseline<K, S>(&self, obj: &K, cached: Option<S>) -> Option<S>
    where
        K: Resource<DynamicType = ()>,
        S: DeserializeOwned,
    {
        let key = ObjectRef::from_obj(obj).erase();
        let memo = self.status_memo.lock().unwrap_or_else(|p| p.into_inner());
        match memo.get(&key, obj.resource_version().as_ref()) {
            Some(status) => serde_json::from_str(status).ok().or(cached),
            None => cached,
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
                .insert(ObjectRef::from_obj(obj).erase(), rv, value);
        }
        Ok(Arc::new(written))
    }
}
