//! The one writer of the `keyward-providers` ConfigMaps (DESIGN §7): it follows the
//! credentials' cache, recomputes the lists of each namespace whose credentials changed (a
//! few times a second at most), and server-side applies the ConfigMap only when its lists
//! differ from what it last wrote. A ConfigMap of that name keyward did not create is never
//! touched (a Warning Event on the namespace's credentials says so, once). A namespace's
//! ConfigMap goes when its last credential does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::super::cache::{Caches, Change, Seen};
use super::super::events::Note;
use super::super::{Context, FIELD_MANAGER};
use crate::conditions::{self, Reason};
use crate::crd::{ConditionStatus, ProviderCredential, labels};
use crate::providers::fallback::{CONFIGMAP, Candidate, lists};

/// How often dirty namespaces are written at most.
const TICK: Duration = Duration::from_millis(250);

/// What the writer knows of one namespace's ConfigMap.
#[derive(Default)]
struct Written {
    data: Option<BTreeMap<String, String>>,
    /// A ConfigMap of that name that keyward did not create.
    foreign: bool,
    uid: Option<String>,
}

fn candidate(pc: &ProviderCredential) -> Candidate {
    let status = pc.status.clone().unwrap_or_default();
    let rate_limited = conditions::ready(&status.conditions).is_some_and(|c| {
        c.status == ConditionStatus::True && Reason::of(c) == Some(Reason::RateLimited)
    });
    Candidate {
        name: pc.name_any(),
        provider: serde_json::to_value(pc.spec.provider)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        secret_name: pc.spec.secret_ref.name.clone(),
        secret_key: pc.spec.secret_ref.key.clone(),
        last_validated_at: status.last_validated_at.map(|t| crate::clock::rfc3339(t.0)),
        priority: pc.spec.priority,
        capabilities: status.capabilities.clone(),
        phase: status.phase,
        rate_limited,
    }
}

/// Follows the credentials until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    caches: Arc<Caches>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut changes = std::pin::pin!(caches.pcreds.subscribe());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut dirty: BTreeSet<String> = BTreeSet::new();
    let mut written: HashMap<String, Written> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            change = changes.next() => match change {
                None => return,
                Some(Seen::Change(Change::Applied(pc) | Change::Deleted(pc))) => {
                    dirty.insert(pc.namespace().unwrap_or_default());
                }
                Some(Seen::Missed) => {
                    dirty.extend(written.keys().cloned());
                    dirty.extend(caches.pcreds.store().state().iter().filter_map(|p| p.namespace()));
                }
            },
            _ = tick.tick(), if !dirty.is_empty() => {
                for ns in std::mem::take(&mut dirty) {
                    let entry = written.entry(ns.clone()).or_default();
                    if let Err(e) = write(&ctx, &caches, &ns, entry).await {
                        tracing::warn!(namespace = %ns, error = %e, "writing the keyward-providers ConfigMap; retrying");
                        *entry = Written::default();
                        dirty.insert(ns);
                    }
                }
            }
        }
    }
}

async fn write(
    ctx: &Context,
    caches: &Caches,
    ns: &str,
    written: &mut Written,
) -> Result<(), kube::Error> {
    let creds: Vec<Arc<ProviderCredential>> = caches
        .pcreds
        .store()
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns))
        .collect();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    if written.data.is_none() {
        // Not written yet (or blocked): whose is the ConfigMap of that name, if any?
        match api.get_opt(CONFIGMAP).await? {
            None => written.foreign = false,
            Some(existing) => {
                let ours = existing
                    .labels()
                    .get(labels::MANAGED_BY)
                    .map(String::as_str)
                    == Some(labels::MANAGED_BY_VALUE);
                written.uid = existing.uid();
                if ours {
                    written.foreign = false;
                    written.data = Some(existing.data.unwrap_or_default());
                } else {
                    if !written.foreign {
                        let message = format!(
                            "ConfigMap {ns}/{CONFIGMAP} exists and was not created by keyward; the fallback lists are not written (delete or rename it to have them)"
                        );
                        tracing::warn!(namespace = %ns, "{message}");
                        for pc in &creds {
                            ctx.publish(
                                &pc.object_ref(&()),
                                Note::warning(
                                    "FallbackListsBlocked",
                                    "WriteFallbackLists",
                                    message.clone(),
                                ),
                            )
                            .await;
                        }
                    }
                    written.foreign = true;
                    return Ok(());
                }
            }
        }
    }
    if creds.is_empty() {
        if written.data.is_some() {
            let guarded = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: written.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(CONFIGMAP, &guarded).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        *written = Written::default();
        return Ok(());
    }
    let candidates: Vec<Candidate> = creds.iter().map(|p| candidate(p)).collect();
    let data = lists(&candidates);
    if written.data.as_ref() == Some(&data) {
        return Ok(());
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIGMAP,
            "namespace": ns,
            "labels": {labels::MANAGED_BY: labels::MANAGED_BY_VALUE},
        },
        "data": data,
    });
    let applied = api
        .patch(
            CONFIGMAP,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    written.uid = applied.uid();
    written.data = Some(data);
    Ok(())
}
