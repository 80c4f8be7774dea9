//! The ApiKey controller (DESIGN §2–§4), one pass at a time:
//! [`observe`] (from the shared caches) → decide ([`plan`], pure) → [`build`] (pure) →
//! [`apply`] (one step's writes) → … until converged → [`status`].
//!
//! Each step is one write, so a crash between two leaves a state the next pass recognises;
//! before each observation the pass waits until the cache shows its own last writes.

pub mod apply;
pub mod build;
pub mod observe;
pub mod plan;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;

pub use self::observe::Snapshot;
use self::plan::{Observed, Step};
use super::Context;
use super::cache::{Caches, Change, Seen};
use super::reconciler::{self, Failure, Next, Reconciler, is_conflict};
use crate::crd::{ApiKey, annotations, labels};
use crate::hashing::{Caller, HashPoolError};
use crate::keys;
use crate::record;

/// The one finalizer: it removes the hash record, which lives in another namespace and so
/// cannot be garbage-collected by ownerReference.
pub const FINALIZER: &str = "keyward.dev/hash-record";
/// Set on the workload Secret when a ShowOnce key was revealed (or its window closed).
pub const REVEALED_AT: &str = "keyward.dev/revealed-at";
const DEFAULT_GRACE: SignedDuration = SignedDuration::from_hours(1);
/// Keys waiting for argon2 at once, at most (each is one pending reconcile).
const HASH_QUEUE: usize = 4096;

/// What failed, named by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the ApiKey has no namespace or uid")]
    NoIdentity,
    #[error("{step}: {source}")]
    Kube {
        step: &'static str,
        source: Box<kube::Error>,
    },
    /// The cache was older than what a write met: observe again shortly.
    #[error("stale cache: {0}")]
    Stale(&'static str),
    #[error("hashing the key: {0}")]
    Hash(#[from] keys::hash::HashError),
    #[error("hashing pool: {0}")]
    Hashing(HashPoolError),
    #[error("generating a key: the operating system gave no randomness")]
    Random,
    #[error("reading the hash record: {0}")]
    Record(#[from] record::RecordError),
}

impl Failure for Error {
    fn label(&self) -> &'static str {
        match self {
            Self::NoIdentity => "identity",
            Self::Kube { step, .. } => step,
            Self::Stale(_) => "stale cache",
            Self::Hash(_) | Self::Hashing(_) => "hash",
            Self::Random => "random",
            Self::Record(_) => "record",
        }
    }

    fn is_stale(&self) -> bool {
        matches!(self, Self::Stale(_))
    }
}

/// Maps a failed API call to the step that made it.
pub fn kube_err(step: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube {
        step,
        source: Box::new(source),
    }
}

/// As [`kube_err`], but a 409 on a guarded write means the cache was stale.
pub fn stale_or(step: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| {
        if is_conflict(&source) {
            Error::Stale(step)
        } else {
            kube_err(step)(source)
        }
    }
}

/// As [`stale_or`] for the finalizer's JSON patches, whose `test` fails with 422.
pub fn finalizer_err(step: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| match &source {
        kube::Error::Api(s) if s.code == 409 || s.code == 422 => Error::Stale(step),
        _ => kube_err(step)(source),
    }
}

/// The ApiKey controller.
pub struct ApiKeys {
    pub ctx: Arc<Context>,
    pub caches: Arc<Caches>,
    /// This controller's way into the process's hashing pool.
    pub hashing: Caller,
}

/// Reconcile again when the spec, keyward's annotations, or deletion change; not on status
/// (verifier usage flushes) or unrelated metadata.
fn relevant_change(ak: &ApiKey) -> u64 {
    let mut h = DefaultHasher::new();
    ak.metadata.generation.hash(&mut h);
    ak.metadata.deletion_timestamp.is_some().hash(&mut h);
    for a in [annotations::ROTATE, annotations::REVOKE_PREVIOUS] {
        ak.annotations().get(a).hash(&mut h);
    }
    h.finish()
}

/// The ApiKey a keyward Secret serves: its workload Secret, or its hash record.
fn served_by(secret: &Secret) -> Vec<ObjectRef<ApiKey>> {
    super::cache::owner_by_label(secret, labels::APIKEY)
}

/// Which ApiKeys name which Secrets (an import source, or the workload Secret a foreign
/// Secret may be in the way of), so a Secret's change finds its ApiKeys without a scan.
#[derive(Default)]
struct References {
    /// (namespace, Secret) → ApiKeys naming it.
    by_secret: HashMap<(String, String), HashSet<String>>,
    /// ApiKey (namespace, name) → the Secrets it names.
    by_apikey: HashMap<(String, String), Vec<String>>,
}

impl References {
    fn named_by(ak: &ApiKey) -> Vec<String> {
        let mut names = vec![build::desired_secret(ak)];
        if let Some(import) = &ak.spec.import_from {
            names.push(import.secret_ref.name.clone());
        }
        names
    }

    fn forget(&mut self, ns: &str, name: &str) {
        let key = (ns.to_string(), name.to_string());
        for secret in self.by_apikey.remove(&key).unwrap_or_default() {
            let entry = (ns.to_string(), secret);
            if let Some(set) = self.by_secret.get_mut(&entry) {
                set.remove(name);
                if set.is_empty() {
                    self.by_secret.remove(&entry);
                }
            }
        }
    }

    fn learn(&mut self, ak: &ApiKey) {
        let (ns, name) = (ak.namespace().unwrap_or_default(), ak.name_any());
        self.forget(&ns, &name);
        let secrets = Self::named_by(ak);
        for secret in &secrets {
            self.by_secret
                .entry((ns.clone(), secret.clone()))
                .or_default()
                .insert(name.clone());
        }
        self.by_apikey.insert((ns, name), secrets);
    }

    fn naming(&self, meta: &PartialObjectMeta<Secret>) -> Vec<ObjectRef<ApiKey>> {
        let ns = meta.namespace().unwrap_or_default();
        self.by_secret
            .get(&(ns.clone(), meta.name_any()))
            .into_iter()
            .flatten()
            .map(|name| ObjectRef::new(name).within(&ns))
            .collect()
    }
}

/// Runs the ApiKey controller until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    caches: Arc<Caches>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = Box::pin(shutdown).shared();
    if !caches.ready_unless(shutdown.clone()).await {
        return;
    }
    let activity = ctx.activity.clone();
    let references = Arc::new(Mutex::new(References::default()));
    let learning = references.clone();
    let all = caches.apikeys.store().clone();
    // Keeps the reference index current; yields no trigger of its own.
    let index = caches.apikeys.subscribe().filter_map(move |seen| {
        let mut refs = learning.lock().unwrap_or_else(|p| p.into_inner());
        match seen {
            Seen::Change(Change::Applied(ak)) => refs.learn(&ak),
            Seen::Change(Change::Deleted(ak)) => {
                refs.forget(&ak.namespace().unwrap_or_default(), &ak.name_any())
            }
            Seen::Missed => {
                *refs = References::default();
                for ak in all.state() {
                    refs.learn(&ak);
                }
            }
        }
        futures::future::ready(None)
    });
    let triggers = futures::stream::select_all([
        index.boxed(),
        reconciler::own_changes(&caches.apikeys, relevant_change).boxed(),
        reconciler::related_changes(&caches.apikeys, &caches.managed, &activity, served_by).boxed(),
        reconciler::related_changes(
            &caches.apikeys,
            &caches.secret_meta,
            &activity,
            move |meta| {
                references
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .naming(meta)
            },
        )
        .boxed(),
        // A new pepper: every current key is re-keyed from its workload Secret.
        reconciler::all_on(&caches.apikeys, ctx.peppers.changes()).boxed(),
    ]);
    let controller = Arc::new(ApiKeys {
        hashing: ctx.hash_pool.caller("apikey", HASH_QUEUE),
        ctx,
        caches: caches.clone(),
    });
    reconciler::run(controller, &caches.apikeys, triggers, shutdown).await;
}

use futures::{FutureExt, StreamExt};

impl Reconciler for ApiKeys {
    type Kind = ApiKey;
    type Error = Error;
    const NAME: &'static str = "apikey";

    fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    async fn reconcile(self: Arc<Self>, ak: Arc<ApiKey>) -> Result<Next, Error> {
        let (namespace, name) = (ak.namespace().unwrap_or_default(), ak.name_any());
        if ak.metadata.deletion_timestamp.is_some() {
            self.cleanup(&ak).await?;
            self.ctx.metrics.key_times(&namespace, &name, None, None);
            return Ok(None);
        }
        // The version of the ApiKey this pass works from (after its own finalizer patch).
        let base_rv = match super::finalizer::ensure(&self.ctx, &*ak, FINALIZER)
            .await
            .map_err(finalizer_err("adding the finalizer"))?
        {
            Some(rv) => Some(rv),
            None => ak.metadata.resource_version.clone(),
        };
        // Each step is one write; run them until converged (normally 1–3 passes).
        for _ in 0..8 {
            let (observed, snapshot) = self.observe(&ak).await?;
            let step = plan::decide(&observed);
            tracing::debug!(apikey = %format!("{namespace}/{name}"), step = ?step, "decided");
            match &step {
                Step::Invalid { .. } | Step::Conflict { .. } | Step::ImportFailed { .. } => {
                    status::write(&self, &ak, base_rv, &observed, &step, &snapshot).await?;
                    return Ok(match step {
                        // Secrets that are not ours are watched by metadata; time also heals.
                        Step::Conflict { .. } | Step::ImportFailed { .. } => {
                            Some(Duration::from_secs(60))
                        }
                        _ => None,
                    });
                }
                Step::DiscardPending => self.discard_pending(&snapshot).await?,
                Step::Promote => self.promote(&ak, &snapshot).await?,
                Step::Issue {
                    source,
                    action,
                    reason,
                } => {
                    self.issue(&ak, &observed, &snapshot, (*source, *action, reason))
                        .await?
                }
                Step::Move { from } => self.move_secret(&ak, &snapshot, from).await?,
                Step::CloseRevealWindow => self.close_reveal_window(&ak, &snapshot).await?,
                Step::RestartTargets => self.restart_targets(&ak, &observed, &snapshot).await?,
                Step::Revoke { request } => self.revoke(&ak, &snapshot, request).await?,
                Step::Converged => {
                    self.sync(&ak, &observed, &snapshot).await?;
                    let (observed, snapshot) = self.observe(&ak).await?;
                    status::write(&self, &ak, base_rv, &observed, &Step::Converged, &snapshot)
                        .await?;
                    let issued = observed
                        .record
                        .as_ref()
                        .is_some_and(|r| r.current.is_some());
                    self.ctx.metrics.key_times(
                        &namespace,
                        &name,
                        observed.expires_at.filter(|_| issued),
                        observed.rotation.next_at.filter(|_| issued),
                    );
                    return Ok(next_wakeup(&observed));
                }
            }
        }
        // Still moving (someone else is writing too): come back shortly.
        Ok(Some(Duration::from_secs(1)))
    }
}

/// Requeue at the next instant something changes by itself (expiry, reveal window,
/// rotation, a previous key's grace); no polling.
fn next_wakeup(o: &Observed) -> Next {
    let instants = [o.expires_at, o.reveal_deadline, o.rotation.next_at]
        .into_iter()
        .flatten()
        .filter(|t| *t > o.now);
    let previous = o
        .record
        .iter()
        .flat_map(|r| r.previous.iter())
        .map(|p| p.valid_until);
    match instants.chain(previous.filter(|t| *t > o.now)).min() {
        Some(at) => {
            let wait = at.duration_since(o.now).unsigned_abs();
            Some(
                Duration::from_millis(wait.as_millis().min(u64::MAX as u128) as u64)
                    + Duration::from_millis(5),
            )
        }
        // Missing restart targets are not watched: look again now and then.
        None if !o.rotation.missing_targets.is_empty() => Some(Duration::from_secs(60)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_only_changes_trigger_nothing() {
        let mut ak: ApiKey = serde_json::from_value(json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "k", "namespace": "ns", "generation": 1, "resourceVersion": "1"},
            "spec": {}
        }))
        .expect("ApiKey");
        let before = relevant_change(&ak);
        // A usage flush: status and resourceVersion change, nothing else.
        ak.metadata.resource_version = Some("2".into());
        ak.status = Some(crate::crd::ApiKeyStatus {
            usage: Some(crate::crd::Usage {
                count: 6,
                last_used_at: None,
            }),
            ..Default::default()
        });
        assert_eq!(relevant_change(&ak), before);
        // Unrelated metadata neither.
        ak.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
        assert_eq!(relevant_change(&ak), before);
        // A rotate request does.
        ak.metadata.annotations = Some([(annotations::ROTATE.to_string(), "1".to_string())].into());
        assert_ne!(relevant_change(&ak), before);
    }
}
