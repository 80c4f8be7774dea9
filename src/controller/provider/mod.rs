//! The ProviderCredential controller (DESIGN §7, seed 004): validates each credential with
//! one read-only request to its provider — at once when it is new, its spec or Secret
//! changes, or `keyward.dev/validate` asks; otherwise on a spread-out schedule — and writes
//! the verdict to status, the label `keyward.dev/phase`, and Events on phase changes. The
//! fallback lists (`fallback.rs`) follow the statuses.
//!
//! observe (caches: the credential, its Secret's metadata) → decide (`plan.rs`, pure) →
//! validate (`validate.rs`: the Secret read from the API, one request) → status
//! (`status.rs`, pure) → write.

pub mod fallback;
pub mod plan;
pub mod status;
pub mod validate;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::cache::Caches;
use super::events::Note;
use super::reconciler::{self, Failure, Next, Reconciler};
use super::{Context, FIELD_MANAGER};
use crate::crd::{Phase, ProviderCredential, annotations, labels};
use plan::{Attempts, Decision};

/// Validations in flight in the process at most (DESIGN §7).
pub const MAX_IN_FLIGHT: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{step}: {source}")]
    Kube {
        step: &'static str,
        source: Box<kube::Error>,
    },
    #[error("stale cache: {0}")]
    Stale(&'static str),
}

impl Failure for Error {
    fn label(&self) -> &'static str {
        match self {
            Self::Kube { step, .. } => step,
            Self::Stale(_) => "stale cache",
        }
    }

    fn is_stale(&self) -> bool {
        matches!(self, Self::Stale(_))
    }
}

fn kube_err(step: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| {
        if reconciler::is_conflict(&source) {
            Error::Stale(step)
        } else {
            Error::Kube {
                step,
                source: Box::new(source),
            }
        }
    }
}

pub struct Providers {
    ctx: Arc<Context>,
    caches: Arc<Caches>,
    attempts: Mutex<HashMap<ObjectRef<ProviderCredential>, Attempts>>,
}

/// What of a credential asks for a new pass: its spec, the validate annotation, deletion.
fn relevant_change(pc: &ProviderCredential) -> u64 {
    let mut h = DefaultHasher::new();
    pc.metadata.generation.hash(&mut h);
    pc.annotations().get(annotations::VALIDATE).hash(&mut h);
    pc.metadata.deletion_timestamp.is_some().hash(&mut h);
    h.finish()
}

/// The credentials reading this Secret (credentials per namespace are few: a scan).
fn reading(
    store: &Store<ProviderCredential>,
    secret: &PartialObjectMeta<k8s_openapi::api::core::v1::Secret>,
) -> Vec<ObjectRef<ProviderCredential>> {
    let (ns, name) = (secret.namespace(), secret.name_any());
    store
        .state()
        .iter()
        .filter(|pc| pc.namespace() == ns && pc.spec.secret_ref.name == name)
        .map(|pc| ObjectRef::from_obj(&**pc))
        .collect()
}

/// Runs the controller and the fallback writer until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    caches: Arc<Caches>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = Box::pin(shutdown).shared();
    if !caches.ready_unless(shutdown.clone()).await {
        return;
    }
    let store = caches.pcreds.store().clone();
    let triggers = futures::stream::select_all([
        reconciler::own_changes(&caches.pcreds, relevant_change).boxed(),
        reconciler::related_changes(
            &caches.pcreds,
            &caches.secret_meta,
            &ctx.activity,
            move |s| reading(&store, s),
        )
        .boxed(),
    ]);
    let lists = tokio::spawn(fallback::run(ctx.clone(), caches.clone(), shutdown.clone()));
    let controller = Arc::new(Providers {
        ctx,
        caches: caches.clone(),
        attempts: Mutex::new(HashMap::new()),
    });
    reconciler::run(controller, &caches.pcreds, triggers, shutdown).await;
    lists.abort();
}

impl Providers {
    fn attempts_of(&self, pc: &ProviderCredential) -> Attempts {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ObjectRef::from_obj(pc))
            .cloned()
            .unwrap_or_default()
    }

    fn remember(&self, pc: &ProviderCredential, attempts: Attempts) {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ObjectRef::from_obj(pc), attempts);
    }

    fn secret_version(&self, pc: &ProviderCredential) -> Option<String> {
        self.caches
            .secret_meta(
                &pc.namespace().unwrap_or_default(),
                &pc.spec.secret_ref.name,
            )
            .and_then(|m| m.metadata.resource_version.clone())
    }

    fn interval(pc: &ProviderCredential) -> Duration {
        pc.spec
            .validation
            .as_ref()
            .and_then(|v| crate::duration::parse(&v.interval).ok())
            .unwrap_or(Duration::from_secs(3600))
            .max(Duration::from_secs(60))
    }

    /// Sets the label `keyward.dev/phase` (server-side apply of that label alone).
    async fn label(&self, pc: &ProviderCredential, phase: Phase) -> Result<(), Error> {
        let value = format!("{phase:?}");
        if pc.labels().get(labels::PHASE) == Some(&value) {
            return Ok(());
        }
        let api: Api<ProviderCredential> =
            Api::namespaced(self.ctx.client.clone(), &pc.namespace().unwrap_or_default());
        let patch = json!({
            "apiVersion": ProviderCredential::api_version(&()),
            "kind": ProviderCredential::kind(&()),
            "metadata": {"labels": {labels::PHASE: value}},
        });
        let written = api
            .patch(
                &pc.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(kube_err("labelling the phase"))?;
        self.ctx.activity.wrote(&written);
        Ok(())
    }
}

impl Reconciler for Providers {
    type Kind = ProviderCredential;
    type Error = Error;
    const NAME: &'static str = "provider";

    fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    async fn reconcile(self: Arc<Self>, pc: Arc<ProviderCredential>) -> Result<Next, Error> {
        if pc.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let now = self.ctx.clock.now();
        let uid = pc.uid().unwrap_or_default();
        let interval = Self::interval(&pc);
        let request = pc.annotations().get(annotations::VALIDATE).cloned();
        let status = self
            .ctx
            .status_baseline(&*pc, pc.status.clone())
            .unwrap_or_default();
        let secret_version = self.secret_version(&pc);
        let mut attempts = self.attempts_of(&pc);
        let decide = |status: &crate::crd::ProviderCredentialStatus, memo: &Attempts, now| {
            plan::decide(&plan::Inputs {
                generation: pc.metadata.generation,
                status,
                request: request.as_deref(),
                secret_version: secret_version.as_deref(),
                interval,
                uid: &uid,
                memo,
                now,
            })
        };
        let cause = match decide(&status, &attempts, now) {
            Decision::Validate(cause) => cause,
            Decision::WaitUntil(at) => return Ok(Some(wait(now, at))),
            Decision::WaitForChange => return Ok(None),
        };
        tracing::debug!(credential = %format!("{}/{}", pc.namespace().unwrap_or_default(), pc.name_any()), ?cause, "validating");
        let mut tested = validate::validate(&self.ctx, &pc)
            .await
            .map_err(kube_err("reading the credential's Secret"))?;
        if tested.secret_version.is_none()
            && tested.verdict.reason != crate::conditions::Reason::SecretNotFound
        {
            // Judged without reading the Secret (a host not allowed, no free request): the
            // verdict stands for the Secret as the cache shows it.
            tested.secret_version = secret_version.clone();
        }
        let now = self.ctx.clock.now();
        attempts = Attempts {
            last: Some(now),
            unreachable: if tested.verdict.phase == Phase::Unreachable {
                attempts.unreachable.saturating_add(1)
            } else {
                0
            },
            retry_after: tested.verdict.retry_after,
        };
        self.remember(&pc, attempts.clone());
        // A verdict for a Secret version older than the one already judged never replaces
        // it: the Secret changed during the request, and its new version was judged.
        let current = self.secret_version(&pc);
        let superseded = tested.secret_version != current
            && current.is_some()
            && status.validated_secret_version == current;
        let next = if superseded {
            status
        } else {
            let next = status::after(
                &status,
                &tested,
                pc.metadata.generation,
                request.as_deref(),
                now,
            );
            // The label first: whoever sees the new phase in status finds the label too.
            if let Some(phase) = next.phase {
                self.label(&pc, phase).await?;
            }
            if next != status {
                self.ctx
                    .apply_status(&*pc, pc.resource_version(), &next)
                    .await
                    .map_err(kube_err("writing status"))?;
                if next.phase != status.phase {
                    let v = &tested.verdict;
                    let message = format!(
                        "{}{}",
                        format_args!("{:?}", v.phase),
                        if v.message.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", v.message)
                        }
                    );
                    let note = if v.phase == Phase::Valid {
                        Note::normal(v.reason.as_str(), "Validate", message)
                    } else {
                        Note::warning(v.reason.as_str(), "Validate", message)
                    };
                    self.ctx.publish(&pc.object_ref(&()), note).await;
                }
            }
            next
        };
        Ok(match decide(&next, &attempts, now) {
            Decision::Validate(_) => Some(Duration::from_millis(200)),
            Decision::WaitUntil(at) => Some(wait(now, at)),
            Decision::WaitForChange => None,
        })
    }
}

fn wait(now: jiff::Timestamp, at: jiff::Timestamp) -> Duration {
    Duration::from_millis(
        (at.as_millisecond() - now.as_millisecond()).clamp(0, i64::MAX) as u64 + 5,
    )
}
