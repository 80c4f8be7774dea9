//! The ApiKey controller (DESIGN §2, §3): observe → decide ([`plan`]) → write → status.
//!
//! Steps, each a separate write so a crash between two leaves a state the next pass
//! recognises: a new key's hash goes into the hash record as *pending* (the verifier already
//! accepts it), then the plain key into the workload Secret (a plain create the first time,
//! so a foreign Secret is never merged into), then pending is promoted to current. A pending
//! key that never reached the workload Secret is discarded, never promoted.

pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::DynamicObject;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use self::plan::{Import, KeyMatch, Observed, RotationView, Source, Step, Workload};
use super::activity::Activity;
use super::{Context, FIELD_MANAGER};
use crate::clock::rfc3339;
use crate::conditions;
use crate::crd::RestartTarget;
use crate::crd::{
    ApiKey, ApiKeyStatus, DeletionPolicy, Delivery, KeyFormat, RestartKind, annotations, labels,
};
use crate::history::{self, Action as HistoryAction, Entry};
use crate::keys::{self, PlainKey, format};
use crate::record::{self, Access, HashRecord, KeyHash, Owner, PreviousKey};
use crate::rotation::Policy;

/// The one finalizer: it removes the hash record, which lives in another namespace and so
/// cannot be garbage-collected by ownerReference.
pub const FINALIZER: &str = "keyward.dev/hash-record";
/// Set on the workload Secret when a ShowOnce key was revealed (or its window closed).
pub const REVEALED_AT: &str = "keyward.dev/revealed-at";
const DEFAULT_REVEAL_WINDOW: SignedDuration = SignedDuration::from_hours(1);
const DEFAULT_GRACE: SignedDuration = SignedDuration::from_hours(1);

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
    #[error("hashing the key: {0}")]
    Hash(#[from] keys::hash::HashError),
    #[error("generating a key: the operating system gave no randomness")]
    Random,
    #[error("reading the hash record: {0}")]
    Record(#[from] record::RecordError),
    #[error("hashing task failed: {0}")]
    Join(String),
}

impl Error {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NoIdentity => "identity",
            Self::Kube { step, .. } => step,
            Self::Hash(_) | Self::Join(_) => "hash",
            Self::Random => "random",
            Self::Record(_) => "record",
        }
    }
}

fn kube_err(step: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube {
        step,
        source: Box::new(source),
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Reconcile again when the spec, keyward's annotations, or deletion change; not on status
/// (verifier usage flushes) or unrelated metadata.
fn relevant_change(ak: &ApiKey) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    ak.metadata.generation.hash(&mut h);
    ak.metadata.deletion_timestamp.is_some().hash(&mut h);
    for a in [annotations::ROTATE, annotations::REVOKE_PREVIOUS] {
        ak.annotations().get(a).hash(&mut h);
    }
    Some(h.finish())
}

/// Runs the ApiKey controller for one namespace (or all, with `None`) until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let activity = ctx.activity.clone();
    let apikeys: Api<ApiKey> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    let main_watch = activity.watch::<ApiKey>(namespace.as_deref(), None);
    let seen = activity.clone();
    let triggered = activity.clone();
    let main = watcher(apikeys, watcher::Config::default())
        .default_backoff()
        .inspect(move |e| {
            if let Ok(e) = e {
                seen.saw(main_watch, e);
            }
        })
        .reflect(writer)
        .applied_objects()
        .predicate_filter(relevant_change, Default::default())
        .inspect(move |ak| {
            if let Ok(ak) = ak {
                triggered.triggered(ObjectRef::from_obj(ak).erase());
            }
        });
    let managed_watch =
        activity.watch::<Secret>(None, Some((labels::MANAGED_BY, labels::MANAGED_BY_VALUE)));
    let seen = activity.clone();
    let managed = watcher(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().labels(&format!(
            "{}={}",
            labels::MANAGED_BY,
            labels::MANAGED_BY_VALUE
        )),
    )
    .default_backoff()
    .inspect(move |e| {
        if let Ok(e) = e {
            seen.saw(managed_watch, e);
        }
    })
    .touched_objects();
    // Metadata only: memory grows by object metadata, never other Secrets' data.
    let references: Api<PartialObjectMeta<Secret>> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let referenced_watch = activity.watch::<Secret>(namespace.as_deref(), None);
    let seen = activity.clone();
    let referenced = watcher(references, watcher::Config::default())
        .default_backoff()
        .inspect(move |e| {
            if let Ok(e) = e {
                seen.saw(referenced_watch, e);
            }
        })
        .touched_objects();
    let store = reader.clone();
    activity.controller(reader.clone());
    let (on_managed, on_referenced, on_start) = (activity.clone(), activity.clone(), activity);
    Controller::for_stream(main, reader)
        .watches_stream(managed, move |secret: Secret| {
            let l = secret.labels();
            let name = l.get(labels::APIKEY)?;
            let ns = if l.get(labels::ROLE).map(String::as_str) == Some(labels::ROLE_HASH) {
                l.get(labels::NAMESPACE)?.clone()
            } else {
                secret.namespace()?
            };
            let target = ObjectRef::<ApiKey>::new(name).within(&ns);
            on_managed.triggered(target.clone().erase());
            Some(target)
        })
        .watches_stream(referenced, move |meta: PartialObjectMeta<Secret>| {
            // Secrets keyward does not manage but an ApiKey names: an import source, or a
            // Secret in the way of one (SecretConflict clears when it goes).
            let (ns, name) = (meta.namespace().unwrap_or_default(), meta.name_any());
            let targets = store
                .state()
                .into_iter()
                .filter(|ak| ak.namespace().as_deref() == Some(ns.as_str()))
                .filter(|ak| {
                    ak.spec
                        .import_from
                        .as_ref()
                        .is_some_and(|i| i.secret_ref.name == name)
                        || ak.spec.secret_name.as_deref().unwrap_or(&ak.name_any()) == name
                })
                .map(|ak| ObjectRef::from_obj(&*ak))
                .collect::<Vec<_>>();
            for t in &targets {
                on_referenced.triggered(t.clone().erase());
            }
            targets
        })
        .graceful_shutdown_on(shutdown)
        .run(
            move |ak, ctx| {
                on_start.started(ObjectRef::from_obj(&*ak).erase());
                reconcile(ak, ctx)
            },
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "apikey reconcile loop");
            }
        })
        .await;
}

fn object_key(ak: &ApiKey) -> String {
    format!(
        "apikey/{}/{}",
        ak.namespace().unwrap_or_default(),
        ak.name_any()
    )
}

fn error_policy(ak: Arc<ApiKey>, error: &Error, ctx: Arc<Context>) -> Action {
    let wait = ctx.backoff(&object_key(&ak));
    tracing::warn!(apikey = %object_key(&ak), step = error.label(), error = %error, retry_in = ?wait, "reconcile failed");
    // The reconcile ends here (kube-runtime calls this as the failed future resolves).
    ctx.activity
        .finished(&ObjectRef::from_obj(&*ak).erase(), Some(wait));
    Action::requeue(wait)
}

/// One reconcile of one ApiKey.
pub async fn reconcile(ak: Arc<ApiKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let target = ObjectRef::from_obj(&*ak).erase();
    let deleting = ak.metadata.deletion_timestamp.is_some();
    let result = reconcile_inner(ak, ctx.clone()).await;
    ctx.reconciles
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    ctx.metrics.reconciled(
        "apikey",
        started.elapsed(),
        result.as_ref().err().map(Error::label),
    );
    result.map(|wakeup| {
        ctx.activity.finished(&target, wakeup);
        if deleting {
            ctx.activity.forget(&target);
        }
        match wakeup {
            Some(after) => Action::requeue(after),
            None => Action::await_change(),
        }
    })
}

/// The reconcile; `Ok(Some(d))` asks to run again after `d`, `Ok(None)` only on a change.
async fn reconcile_inner(ak: Arc<ApiKey>, ctx: Arc<Context>) -> Result<Option<Duration>, Error> {
    let mut io = Io::new(&ak, &ctx)?;
    if ak.metadata.deletion_timestamp.is_some() {
        io.cleanup().await?;
        ctx.forget(&object_key(&ak));
        ctx.metrics.key_times(&io.namespace, &io.name, None, None);
        return Ok(None);
    }
    io.ensure_finalizer().await?;
    // Each step is one write; run them until converged (normally 1–3 passes).
    for _ in 0..8 {
        let (observed, snapshot) = io.observe().await?;
        let step = plan::decide(&observed);
        tracing::debug!(apikey = %io.key, step = ?step, "decided");
        match &step {
            Step::Invalid { .. } | Step::Conflict { .. } | Step::ImportFailed { .. } => {
                io.write_status(&observed, &step, &snapshot).await?;
                ctx.succeeded(&io.key);
                return Ok(match step {
                    // Secrets that are not ours are watched by metadata; time also heals.
                    Step::Conflict { .. } | Step::ImportFailed { .. } => {
                        Some(Duration::from_secs(60))
                    }
                    _ => None,
                });
            }
            Step::DiscardPending => io.discard_pending(&snapshot).await?,
            Step::Promote => io.promote(&snapshot, None).await?,
            Step::Issue {
                source,
                action,
                reason,
            } => {
                io.issue(&observed, &snapshot, *source, *action, reason)
                    .await?
            }
            Step::Move { from } => io.move_secret(&snapshot, from).await?,
            Step::CloseRevealWindow => io.close_reveal_window(&snapshot).await?,
            Step::RestartTargets => io.restart_targets(&observed, &snapshot).await?,
            Step::Revoke { request } => io.revoke(&snapshot, request).await?,
            Step::Converged => {
                io.sync(&observed, &snapshot).await?;
                let (observed, snapshot) = io.observe().await?;
                io.write_status(&observed, &Step::Converged, &snapshot)
                    .await?;
                ctx.succeeded(&io.key);
                let issued = observed
                    .record
                    .as_ref()
                    .is_some_and(|r| r.current.is_some());
                ctx.metrics.key_times(
                    &io.namespace,
                    &io.name,
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

/// Requeue at the next instant something changes by itself (expiry, reveal window); no polling.
fn next_wakeup(o: &Observed) -> Option<Duration> {
    let instants = [o.expires_at, o.reveal_deadline, o.rotation.next_at]
        .into_iter()
        .flatten()
        .filter(|t| *t > o.now);
    let previous = o
        .record
        .iter()
        .flat_map(|r| r.previous.iter())
        .filter_map(|p| p.valid_until.parse::<Timestamp>().ok());
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

/// What was read, beyond the decision inputs: the objects and plain keys the steps need.
struct Snapshot {
    workload: Option<Secret>,
    workload_key: Option<PlainKey>,
    record_secret: Option<Secret>,
    record: Option<HashRecord>,
    import_key: Option<PlainKey>,
    weak_import: bool,
    moving_from: Option<(Secret, PlainKey)>,
    format: KeyFormat,
}

struct Io<'a> {
    ak: &'a ApiKey,
    ctx: &'a Context,
    key: String,
    namespace: String,
    name: String,
    uid: String,
    secrets: Api<Secret>,
    records: Api<Secret>,
    apikeys: Api<ApiKey>,
    /// The ApiKey's resourceVersion as this reconcile last knows it (after its own
    /// finalizer patch): the base a status write is remembered against.
    base_rv: Option<String>,
}

impl<'a> Io<'a> {
    fn new(ak: &'a ApiKey, ctx: &'a Context) -> Result<Self, Error> {
        let namespace = ak.namespace().ok_or(Error::NoIdentity)?;
        let uid = ak.uid().ok_or(Error::NoIdentity)?;
        Ok(Self {
            key: object_key(ak),
            name: ak.name_any(),
            secrets: Api::namespaced(ctx.client.clone(), &namespace),
            records: Api::namespaced(ctx.client.clone(), &ctx.config.hash_namespace),
            apikeys: Api::namespaced(ctx.client.clone(), &namespace),
            namespace,
            uid,
            base_rv: ak.metadata.resource_version.clone(),
            ak,
            ctx,
        })
    }

    fn record_name(&self) -> String {
        record::name_for(&self.uid)
    }

    fn desired_secret(&self) -> String {
        self.ak
            .spec
            .secret_name
            .clone()
            .unwrap_or_else(|| self.name.clone())
    }

    fn format(&self) -> KeyFormat {
        self.ak.spec.format.clone().unwrap_or_default()
    }

    fn history_limit(&self) -> usize {
        self.ak
            .spec
            .rotation
            .as_ref()
            .map_or(history::DEFAULT_LIMIT, |r| r.history_limit as usize)
    }

    fn policy(&self) -> Option<Policy> {
        Policy::from_spec(self.ak.spec.rotation.as_ref()).ok()
    }

    fn grace(&self) -> SignedDuration {
        self.policy().map_or(DEFAULT_GRACE, |p| p.grace)
    }

    fn event(
        &self,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> impl Future<Output = ()> + '_ {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        let reference = self.ak.object_ref(&());
        async move {
            if let Err(e) = self.ctx.recorder.publish(&event, &reference).await {
                tracing::warn!(apikey = %self.key, error = %e, "recording an Event failed");
            }
        }
    }

    async fn ensure_finalizer(&mut self) -> Result<(), Error> {
        let finalizers = self.ak.finalizers();
        if finalizers.iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        let ops = if self.ak.metadata.finalizers.is_none() {
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": self.ak.resource_version()},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ])
        } else {
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
                {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
            ])
        };
        let patch: json_patch::Patch = serde_json::from_value(ops).expect("static JSON patch");
        let patched = self
            .apikeys
            .patch(
                &self.name,
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await
            .map_err(kube_err("adding the finalizer"))?;
        self.ctx.activity.wrote(&patched);
        self.base_rv = patched.metadata.resource_version;
        Ok(())
    }

    /// Deletion: remove the hash record (so the key stops verifying), make sure a Retain
    /// Secret carries no ownerReference, then release the finalizer.
    async fn cleanup(&self) -> Result<(), Error> {
        if !self.ak.finalizers().iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        match self
            .records
            .delete(&self.record_name(), &DeleteParams::default())
            .await
        {
            Ok(deleted) => self.ctx.activity.deleted_either(
                deleted,
                &self.ctx.config.hash_namespace,
                &self.record_name(),
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_err("deleting the hash record")(e)),
        }
        if self.ak.spec.deletion_policy == DeletionPolicy::Retain
            && let Some(secret) = self
                .secrets
                .get_opt(&self.desired_secret())
                .await
                .map_err(kube_err("reading the workload Secret"))?
            && secret.owner_references().iter().any(|o| o.uid == self.uid)
        {
            let refs: Vec<&OwnerReference> = secret
                .owner_references()
                .iter()
                .filter(|o| o.uid != self.uid)
                .collect();
            let patch = json!({"metadata": {"resourceVersion": secret.resource_version(), "ownerReferences": refs}});
            let released = self
                .secrets
                .patch(
                    &secret.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(kube_err("releasing the retained Secret"))?;
            self.ctx.activity.wrote(&released);
        }
        let remaining: Vec<String> = self
            .ak
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        let ops = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": self.ak.finalizers()},
            {"op": "replace", "path": "/metadata/finalizers", "value": remaining},
        ]);
        let patch: json_patch::Patch = serde_json::from_value(ops).expect("static JSON patch");
        match self
            .apikeys
            .patch(
                &self.name,
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await
        {
            Ok(released) => {
                self.ctx.activity.wrote(&released);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(kube_err("removing the finalizer")(e)),
        }
    }

    /// Problems with the spec that admission would normally refuse, checked again here for
    /// objects admitted elsewhere (or before a CRD upgrade).
    fn spec_problem(&self) -> Option<String> {
        let spec = &self.ak.spec;
        let mut problems = Vec::new();
        if spec.import_from.is_none()
            && let Err(e) = plan::check_format(&self.format())
        {
            problems.push(format!("format: {e}"));
        }
        if let Some(at) = &spec.expires_at
            && let Err(e) = plan::parse_instant("expiresAt", at)
        {
            problems.push(e);
        }
        for (field, value) in [
            ("expiresAfter", &spec.expires_after),
            ("revealWindow", &spec.reveal_window),
        ] {
            if let Some(v) = value
                && let Err(e) = plan::parse_duration(field, v)
            {
                problems.push(e);
            }
        }
        if let Err(e) = Policy::from_spec(spec.rotation.as_ref()) {
            problems.push(e);
        }
        if self.ak.name_any().len() > 63 {
            problems.push(
                "metadata.name must be at most 63 characters: keyward puts it in label values"
                    .into(),
            );
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }

    /// When a key issued at `issued` stops verifying.
    fn expiry(&self, issued: Timestamp) -> Option<Timestamp> {
        let at = self
            .ak
            .spec
            .expires_at
            .as_deref()
            .and_then(|v| v.parse::<Timestamp>().ok());
        let after = self
            .ak
            .spec
            .expires_after
            .as_deref()
            .and_then(|v| plan::parse_duration("expiresAfter", v).ok())
            .and_then(|d| issued.checked_add(d).ok());
        [at, after].into_iter().flatten().min()
    }

    fn matches(&self, key: &str, hash: &KeyHash) -> bool {
        if hash.pepper_id == self.ctx.pepper.id() {
            self.ctx.pepper.matches(key, &hash.fast_hash)
        } else {
            keys::argon2_verify(key, &hash.hash)
        }
    }

    fn secret_key_of(&self, secret: &Secret) -> Option<PlainKey> {
        let bytes = secret.data.as_ref()?.get(&self.ak.spec.secret_key)?;
        let text = String::from_utf8(bytes.0.clone()).ok()?;
        (!text.is_empty()).then(|| PlainKey::new(text))
    }

    /// Whether a Secret is this ApiKey's: keyward's labels naming this ApiKey, and no
    /// controller other than this ApiKey. `Err` says why not.
    fn ownership(&self, secret: &Secret) -> Result<bool, String> {
        let name = secret.name_any();
        let l = secret.labels();
        let ours_by_label = l.get(labels::MANAGED_BY).map(String::as_str)
            == Some(labels::MANAGED_BY_VALUE)
            && l.get(labels::APIKEY) == Some(&self.name)
            && l.get(labels::ROLE).is_none();
        if !ours_by_label {
            return Err(match l.get(labels::APIKEY) {
                Some(other)
                    if l.get(labels::MANAGED_BY).map(String::as_str)
                        == Some(labels::MANAGED_BY_VALUE) =>
                {
                    format!(
                        "Secret {name:?} already holds the key of ApiKey {other:?}; choose another spec.secretName"
                    )
                }
                _ => format!(
                    "Secret {name:?} already exists and is not managed by keyward; keyward never modifies or deletes it. Choose another spec.secretName, or delete that Secret"
                ),
            });
        }
        if let Some(other) = secret
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.uid != self.uid)
        {
            return Err(format!(
                "Secret {name:?} is controlled by {} {:?} (uid {})",
                other.kind, other.name, other.uid
            ));
        }
        let retained = !secret.owner_references().iter().any(|o| o.uid == self.uid);
        Ok(retained)
    }

    async fn observe(&self) -> Result<(Observed, Snapshot), Error> {
        let now = self.ctx.clock.now();
        let desired = self.desired_secret();
        let record_secret = self
            .records
            .get_opt(&self.record_name())
            .await
            .map_err(kube_err("reading the hash record"))?;
        let record = record_secret
            .as_ref()
            .map(HashRecord::from_secret)
            .transpose()?;
        let workload_secret = self
            .secrets
            .get_opt(&desired)
            .await
            .map_err(kube_err("reading the workload Secret"))?;
        let mut workload_key = None;
        let workload = match &workload_secret {
            None => Workload::Missing,
            Some(secret) => match self.ownership(secret) {
                Err(why) => Workload::Foreign { why },
                Ok(retained) => {
                    let key = self.secret_key_of(secret);
                    let matched = match (&key, &record) {
                        (None, _) => KeyMatch::Absent,
                        (Some(k), Some(r))
                            if r.current
                                .as_ref()
                                .is_some_and(|c| self.matches(k.expose(), c)) =>
                        {
                            KeyMatch::Current
                        }
                        (Some(k), Some(r))
                            if r.pending
                                .as_ref()
                                .is_some_and(|p| self.matches(k.expose(), p)) =>
                        {
                            KeyMatch::Pending
                        }
                        (Some(_), _) => KeyMatch::Other,
                    };
                    // Revealed means the key is gone; an annotation left from an earlier
                    // key's reveal does not hide a newly delivered one.
                    let revealed_at = if key.is_none() {
                        secret.annotations().get(REVEALED_AT).cloned()
                    } else {
                        None
                    };
                    workload_key = key;
                    Workload::Ours {
                        key: matched,
                        revealed_at,
                        retained,
                    }
                }
            },
        };
        let mut moving_from = None;
        if let Some(old) = self
            .ak
            .status
            .as_ref()
            .and_then(|s| s.secret_name.clone())
            .filter(|old| *old != desired)
            && let Some(current) = record.as_ref().and_then(|r| r.current.as_ref())
            && let Some(secret) = self
                .secrets
                .get_opt(&old)
                .await
                .map_err(kube_err("reading the previous workload Secret"))?
            && self.ownership(&secret).is_ok()
            && let Some(key) = self.secret_key_of(&secret)
            && self.matches(key.expose(), current)
        {
            moving_from = Some((secret, key));
        }
        let (import, import_key, weak_import) = self.observe_import(record.as_ref()).await?;
        let current = record.as_ref().and_then(|r| r.current.as_ref());
        let issued = current.and_then(|c| c.issued_at.parse::<Timestamp>().ok());
        let expires_at = match current {
            Some(c) => c.expires_at.as_deref().and_then(|e| e.parse().ok()),
            None => self.expiry(now),
        };
        let reveal_window = self
            .ak
            .spec
            .reveal_window
            .as_deref()
            .and_then(|w| plan::parse_duration("revealWindow", w).ok())
            .unwrap_or(DEFAULT_REVEAL_WINDOW);
        let rotation = self.observe_rotation(record.as_ref(), now).await?;
        let observed = Observed {
            rotation,
            now,
            generation: self.ak.metadata.generation,
            spec_problem: self.spec_problem(),
            desired_secret: desired,
            workload,
            moving_from: moving_from.as_ref().map(|(s, _)| s.name_any()),
            record: record.clone(),
            import,
            delivery: self.ak.spec.delivery,
            reveal_deadline: issued
                .filter(|_| self.ak.spec.delivery == Delivery::ShowOnce)
                .and_then(|t| t.checked_add(reveal_window).ok()),
            disabled: self.ak.spec.disabled,
            expires_at,
        };
        let snapshot = Snapshot {
            workload: workload_secret,
            workload_key,
            record_secret,
            record,
            import_key,
            weak_import,
            moving_from,
            format: self.format(),
        };
        Ok((observed, snapshot))
    }

    async fn observe_import(
        &self,
        record: Option<&HashRecord>,
    ) -> Result<(Import, Option<PlainKey>, bool), Error> {
        let Some(import) = &self.ak.spec.import_from else {
            return Ok((Import::NotConfigured, None, false));
        };
        let source = &import.secret_ref;
        let Some(secret) = self
            .secrets
            .get_opt(&source.name)
            .await
            .map_err(kube_err("reading the importFrom Secret"))?
        else {
            return Ok((
                Import::SecretMissing {
                    secret: source.name.clone(),
                },
                None,
                false,
            ));
        };
        let key = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&source.key))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .filter(|s| !s.is_empty());
        let Some(key) = key.map(PlainKey::new) else {
            return Ok((
                Import::KeyMissing {
                    secret: source.name.clone(),
                    key: source.key.clone(),
                },
                None,
                false,
            ));
        };
        let weak = format::estimated_bits(&key) < 128.0;
        let matches_current = record
            .and_then(|r| r.current.as_ref())
            .is_some_and(|c| c.imported && self.matches(key.expose(), c));
        Ok((
            Import::Present {
                matches_current,
                weak,
            },
            Some(key),
            weak,
        ))
    }

    fn access(&self) -> Access {
        let spec = &self.ak.spec;
        Access {
            owner: spec.owner.clone(),
            scopes: spec.scopes.clone(),
            disabled: spec.disabled,
            requests_per_minute: spec.rate_limit.as_ref().map(|r| r.requests_per_minute),
        }
    }

    fn owner(&self) -> Owner {
        Owner {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }

    /// Hashes a key for the record (argon2 off the async threads).
    async fn hash(
        &self,
        key: &PlainKey,
        imported: bool,
        weak: bool,
        now: Timestamp,
    ) -> Result<KeyHash, Error> {
        let params = self.ctx.config.argon2;
        let to_hash = key.clone();
        let phc = tokio::task::spawn_blocking(move || keys::argon2_hash(&to_hash, &params))
            .await
            .map_err(|e| Error::Join(e.to_string()))??;
        let format = self.format();
        let (lookup_id, fingerprint, preview) = if imported {
            let fp = if weak {
                self.ctx.pepper.keyed_fingerprint(key)
            } else {
                keys::fingerprint(key)
            };
            (None, fp, format::imported_preview(key))
        } else {
            let lookup = format::parse(key.expose(), &format).map(|p| p.lookup_id.to_string());
            (lookup, keys::fingerprint(key), keys::preview(key, &format))
        };
        Ok(KeyHash {
            key_id: uuid::Uuid::new_v4().to_string(),
            hash: phc,
            fast_hash: self.ctx.pepper.fast_hash(key.expose()),
            pepper_id: self.ctx.pepper.id(),
            lookup_id,
            fingerprint,
            preview,
            issued_at: rfc3339(now),
            expires_at: self.expiry(now).map(rfc3339),
            imported,
        })
    }

    /// Creates or updates the record (resourceVersion precondition on update).
    async fn write_record(
        &self,
        record: &HashRecord,
        existing: Option<&Secret>,
    ) -> Result<(), Error> {
        let mut secret = record.to_secret(&self.ctx.config.hash_namespace);
        secret.metadata.labels = Some(record::record_labels(&record.apikey));
        let steps = ("creating the hash record", "updating the hash record");
        create_or_apply(&self.ctx.activity, &self.records, secret, existing, steps).await
    }

    /// The workload Secret as keyward wants it: key (unless revealed), labels, annotations,
    /// ownerReference by deletion policy.
    fn workload_secret(
        &self,
        name: &str,
        key: Option<&PlainKey>,
        current: &KeyHash,
        history: &[Entry],
        revealed_at: Option<&str>,
    ) -> Secret {
        let template = self.ak.spec.secret_template.clone().unwrap_or_default();
        let mut labels_map: BTreeMap<String, String> = template.labels.clone();
        labels_map.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
        labels_map.insert(labels::APIKEY.into(), self.name.clone());
        let mut annotations_map: BTreeMap<String, String> = template.annotations.clone();
        annotations_map.insert(annotations::KEY_ID.into(), current.key_id.clone());
        annotations_map.insert(annotations::FINGERPRINT.into(), current.fingerprint.clone());
        annotations_map.insert(annotations::ISSUED_AT.into(), current.issued_at.clone());
        annotations_map.insert(annotations::HISTORY.into(), history::render(history));
        if let Some(at) = revealed_at {
            annotations_map.insert(REVEALED_AT.into(), at.to_string());
        }
        let owner_references = match self.ak.spec.deletion_policy {
            DeletionPolicy::Delete => Some(vec![
                self.ak
                    .controller_owner_ref(&())
                    .expect("an ApiKey from the API has a uid"),
            ]),
            DeletionPolicy::Retain => None,
        };
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels_map),
                annotations: Some(annotations_map),
                owner_references,
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: key.map(|k| {
                BTreeMap::from([(
                    self.ak.spec.secret_key.clone(),
                    ByteString(k.expose().as_bytes().to_vec()),
                )])
            }),
            ..Default::default()
        }
    }

    /// Writes the workload Secret: a plain create when it does not exist (a 409 means
    /// someone else's Secret appeared), otherwise an apply guarded by its resourceVersion.
    async fn write_workload(
        &self,
        desired: Secret,
        existing: Option<&Secret>,
    ) -> Result<(), Error> {
        let steps = (
            "creating the workload Secret",
            "updating the workload Secret",
        );
        create_or_apply(&self.ctx.activity, &self.secrets, desired, existing, steps).await
    }

    async fn discard_pending(&self, snap: &Snapshot) -> Result<(), Error> {
        let Some(mut record) = snap.record.clone() else {
            return Ok(());
        };
        record.pending = None;
        record.pending_request = None;
        tracing::info!(apikey = %self.key, "discarding a pending key that was never delivered");
        self.write_record(&record, snap.record_secret.as_ref())
            .await
    }

    /// Pending → current; the old current joins the previous keys until its grace ends.
    /// The rotation count and consumed request are recorded in this same write.
    async fn promote(&self, snap: &Snapshot, history: Option<Vec<Entry>>) -> Result<(), Error> {
        let Some(mut record) = snap.record.clone() else {
            return Ok(());
        };
        let Some(pending) = record.pending.take() else {
            return Ok(());
        };
        let now = self.ctx.clock.now();
        if let Some(old) = record.current.take() {
            let grace = self.grace();
            if grace > SignedDuration::ZERO
                && let Ok(until) = now.checked_add(grace)
            {
                record.previous.push(PreviousKey {
                    key: old,
                    valid_until: rfc3339(until),
                });
            }
            record.rotation.count += 1;
            record.rotation.last_rotated_at = Some(rfc3339(now));
        }
        if let Some(request) = record.pending_request.take() {
            record.rotation.last_request = Some(request);
        }
        record
            .previous
            .retain(|p| p.valid_until.parse::<Timestamp>().is_ok_and(|t| t > now));
        record.current = Some(pending);
        record.history = match history {
            Some(h) => h,
            None => snap
                .workload
                .as_ref()
                .map(|w| {
                    history::parse(
                        w.annotations()
                            .get(annotations::HISTORY)
                            .map(String::as_str),
                    )
                })
                .unwrap_or(record.history),
        };
        self.write_record(&record, snap.record_secret.as_ref())
            .await
    }

    /// pending → deliver → promote, for a new, imported or adopted key.
    async fn issue(
        &self,
        o: &Observed,
        snap: &Snapshot,
        source: Source,
        action: HistoryAction,
        reason: &str,
    ) -> Result<(), Error> {
        let now = self.ctx.clock.now();
        let key = match source {
            Source::Generate => keys::generate(&snap.format).map_err(|_| Error::Random)?,
            Source::Import => snap.import_key.clone().ok_or(Error::NoIdentity)?,
            Source::Adopt => snap.workload_key.clone().ok_or(Error::NoIdentity)?,
        };
        let imported = source == Source::Import;
        let hashed = self.hash(&key, imported, snap.weak_import, now).await?;
        // 1. pending
        let mut record = snap.record.clone().unwrap_or_else(|| HashRecord {
            apikey: self.owner(),
            ..Default::default()
        });
        let previous = record.current.clone();
        record.pending = Some(hashed.clone());
        record.pending_request = o.rotation.manual_request.clone();
        record.format = (!imported).then(|| snap.format.clone());
        record.access = self.access();
        self.write_record(&record, snap.record_secret.as_ref())
            .await?;
        // 2. deliver, with the history entry that records it
        let entry = Entry {
            at: rfc3339(now),
            action,
            reason: reason.to_string(),
            fingerprint: hashed.fingerprint.clone(),
            preview: hashed.preview.clone(),
            previous_fingerprint: previous.as_ref().map(|p| p.fingerprint.clone()),
        };
        let history = history::append(record.history.clone(), entry, self.history_limit());
        let desired = self.workload_secret(&o.desired_secret, Some(&key), &hashed, &history, None);
        let existing = match &o.workload {
            Workload::Ours { .. } => snap.workload.as_ref(),
            _ => None,
        };
        if let Err(e) = self.write_workload(desired, existing).await {
            if matches!(&e, Error::Kube { source, .. } if is_conflict(source)) {
                // Someone else's Secret appeared, or ours moved on: observe again.
                tracing::info!(apikey = %self.key, "workload Secret changed underneath; retrying");
                return Ok(());
            }
            return Err(e);
        }
        // 3. promote
        let record_secret = self
            .records
            .get_opt(&self.record_name())
            .await
            .map_err(kube_err("reading the hash record"))?;
        let promoted = Snapshot {
            record: record_secret
                .as_ref()
                .map(HashRecord::from_secret)
                .transpose()?,
            record_secret,
            workload: None,
            workload_key: None,
            import_key: None,
            weak_import: false,
            moving_from: None,
            format: snap.format.clone(),
        };
        self.promote(&promoted, Some(history)).await?;
        let (event_type, event_reason, verb) = match reason {
            "SecretLost" => (
                EventType::Warning,
                "SecretLost",
                "the workload Secret was deleted; issued a new key",
            ),
            "SecretTampered" => (
                EventType::Warning,
                "SecretTampered",
                "the workload Secret no longer held the issued key; issued a new key",
            ),
            "Adopted" => (
                EventType::Normal,
                "KeyAdopted",
                "adopted the key retained in the workload Secret",
            ),
            _ if imported => (EventType::Normal, "KeyImported", "imported the key"),
            _ if previous.is_some() => (EventType::Normal, "Rotated", "rotated the key"),
            _ => (EventType::Normal, "KeyIssued", "issued a new key"),
        };
        self.event(
            event_type,
            event_reason,
            "Issue",
            format!(
                "{verb}: {} (fingerprint {}) in Secret {}",
                hashed.preview, hashed.fingerprint, o.desired_secret
            ),
        )
        .await;
        Ok(())
    }

    /// `spec.secretName` changed: the same key moves to the new Secret; the old one goes.
    async fn move_secret(&self, snap: &Snapshot, from: &str) -> Result<(), Error> {
        let (Some((old, key)), Some(record)) = (&snap.moving_from, &snap.record) else {
            return Ok(());
        };
        let Some(current) = &record.current else {
            return Ok(());
        };
        let history = history::parse(
            old.annotations()
                .get(annotations::HISTORY)
                .map(String::as_str),
        );
        let desired =
            self.workload_secret(&self.desired_secret(), Some(key), current, &history, None);
        match self.write_workload(desired, None).await {
            Err(Error::Kube { source, .. }) if is_conflict(&source) => return Ok(()),
            other => other?,
        }
        let precondition = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: old.uid(),
                resource_version: old.resource_version(),
            }),
            ..Default::default()
        };
        match self.secrets.delete(from, &precondition).await {
            Ok(deleted) => self
                .ctx
                .activity
                .deleted_either(deleted, &self.namespace, from),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(kube_err("deleting the previous workload Secret")(e)),
        }
        self.event(
            EventType::Normal,
            "SecretMoved",
            "Move",
            format!(
                "moved key {} from Secret {from} to {}",
                current.preview,
                self.desired_secret()
            ),
        )
        .await;
        Ok(())
    }

    /// A ShowOnce key nobody revealed in time: only the hash remains.
    async fn close_reveal_window(&self, snap: &Snapshot) -> Result<(), Error> {
        let (Some(secret), Some(record)) = (&snap.workload, &snap.record) else {
            return Ok(());
        };
        let Some(current) = &record.current else {
            return Ok(());
        };
        let now = rfc3339(self.ctx.clock.now());
        let desired = self.workload_secret(
            &secret.name_any(),
            None,
            current,
            &record.history,
            Some(&now),
        );
        self.write_workload(desired, Some(secret)).await?;
        self.event(
            EventType::Normal,
            "RevealWindowClosed",
            "Reveal",
            format!(
                "key {} was not revealed within its window; only its hash remains",
                current.preview
            ),
        )
        .await;
        Ok(())
    }

    /// Converged: bring the record's access data and history, and the workload Secret's
    /// metadata, in line with the spec. Writes only what differs.
    async fn sync(&self, o: &Observed, snap: &Snapshot) -> Result<(), Error> {
        let (Some(record), Some(secret)) = (&snap.record, &snap.workload) else {
            return Ok(());
        };
        let Some(current) = &record.current else {
            return Ok(());
        };
        let now = o.now;
        let mut desired = record.clone();
        desired.access = self.access();
        if !current.imported {
            desired.format = Some(snap.format.clone());
        }
        let issued = current.issued_at.parse::<Timestamp>().unwrap_or(now);
        let mut current_desired = current.clone();
        current_desired.expires_at = self.expiry(issued).map(rfc3339);
        // The pepper was replaced: re-key the fast hash from the delivered key (the key
        // verified against argon2 in observe, or it would not be Current here).
        if current.pepper_id != self.ctx.pepper.id()
            && let Some(key) = &snap.workload_key
        {
            current_desired.fast_hash = self.ctx.pepper.fast_hash(key.expose());
            current_desired.pepper_id = self.ctx.pepper.id();
        }
        desired.current = Some(current_desired.clone());
        desired
            .previous
            .retain(|p| p.valid_until.parse::<Timestamp>().is_ok_and(|t| t > now));
        let entry = |action: HistoryAction, reason: &str| Entry {
            at: rfc3339(now),
            action,
            reason: reason.into(),
            fingerprint: current.fingerprint.clone(),
            preview: current.preview.clone(),
            previous_fingerprint: None,
        };
        let limit = self.history_limit();
        if record.access.disabled != self.ak.spec.disabled {
            let action = if self.ak.spec.disabled {
                HistoryAction::Disabled
            } else {
                HistoryAction::Enabled
            };
            desired.history = history::append(desired.history, entry(action, "Manual"), limit);
        }
        let expired = current_desired
            .expires_at
            .as_deref()
            .and_then(|e| e.parse::<Timestamp>().ok())
            .is_some_and(|t| t <= now);
        let recorded_expiry = desired
            .history
            .iter()
            .rev()
            .find(|e| {
                e.fingerprint == current.fingerprint
                    && matches!(
                        e.action,
                        HistoryAction::Expired
                            | HistoryAction::Rotated
                            | HistoryAction::Generated
                            | HistoryAction::Imported
                    )
            })
            .is_some_and(|e| e.action == HistoryAction::Expired);
        if expired && !recorded_expiry {
            desired.history = history::append(
                desired.history,
                entry(HistoryAction::Expired, "Expired"),
                limit,
            );
        }
        let revealed_at = match &o.workload {
            Workload::Ours { revealed_at, .. } => revealed_at.clone(),
            _ => None,
        };
        let key = if revealed_at.is_some() {
            None
        } else {
            snap.workload_key.as_ref()
        };
        let wanted_secret = self.workload_secret(
            &secret.name_any(),
            key,
            &current_desired,
            &desired.history,
            revealed_at.as_deref(),
        );
        if workload_differs(&wanted_secret, secret, &self.ak.spec.secret_key) {
            self.write_workload(wanted_secret, Some(secret)).await?;
        }
        if desired != *record {
            self.write_record(&desired, snap.record_secret.as_ref())
                .await?;
        }
        Ok(())
    }

    /// What rotation asks for now: the next scheduled instant, unconsumed requests, a
    /// format change, and restart targets not yet rolled for the current key.
    async fn observe_rotation(
        &self,
        record: Option<&HashRecord>,
        now: Timestamp,
    ) -> Result<RotationView, Error> {
        let requested = self.ak.annotations().get(annotations::ROTATE).cloned();
        let mut view = RotationView::default();
        let Some((record, current)) = record.and_then(|r| r.current.as_ref().map(|c| (r, c)))
        else {
            // The first issue consumes a request committed with the ApiKey.
            view.manual_request = requested;
            return Ok(view);
        };
        view.manual_request =
            requested.filter(|v| record.rotation.last_request.as_ref() != Some(v));
        view.revoke_request = self
            .ak
            .annotations()
            .get(annotations::REVOKE_PREVIOUS)
            .filter(|v| record.rotation.last_revocation.as_ref() != Some(*v))
            .cloned();
        if !current.imported {
            let issued = current.issued_at.parse::<Timestamp>().unwrap_or(now);
            view.next_at = self.policy().and_then(|p| p.next_rotation(issued));
            view.format_changed = record.format.as_ref().is_some_and(|f| *f != self.format());
        }
        for (target, label) in self.restart_targets_labelled() {
            match self
                .target_api(target.kind)
                .get_opt(&target.name)
                .await
                .map_err(kube_err("reading a restart target"))?
            {
                None => view.missing_targets.push(label),
                Some(workload) => {
                    let rolled_for = workload.data["spec"]["template"]["metadata"]["annotations"]
                        [annotations::RESTARTED_AT]
                        .as_str();
                    if record.rotation.count > 0 && rolled_for != Some(current.fingerprint.as_str())
                    {
                        view.stale_targets.push(label);
                    }
                }
            }
        }
        Ok(view)
    }

    /// The spec's restart targets, each with its label (`Deployment/web`).
    fn restart_targets_labelled(&self) -> impl Iterator<Item = (&RestartTarget, String)> {
        self.ak
            .spec
            .rotation
            .iter()
            .flat_map(|r| r.restart_targets.iter())
            .map(|t| (t, format!("{:?}/{}", t.kind, t.name)))
    }

    fn target_api(&self, kind: RestartKind) -> Api<DynamicObject> {
        let (kind_name, plural) = match kind {
            RestartKind::Deployment => ("Deployment", "deployments"),
            RestartKind::StatefulSet => ("StatefulSet", "statefulsets"),
            RestartKind::DaemonSet => ("DaemonSet", "daemonsets"),
        };
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apps", "v1", kind_name),
            plural,
        );
        Api::namespaced_with(self.ctx.client.clone(), &self.namespace, &resource)
    }

    /// Rolls each stale restart target as `kubectl rollout restart` does; the annotation
    /// names the key it rolled for, so resyncs and restarts never roll twice.
    async fn restart_targets(&self, o: &Observed, snap: &Snapshot) -> Result<(), Error> {
        let Some(current) = snap.record.as_ref().and_then(|r| r.current.as_ref()) else {
            return Ok(());
        };
        for (target, label) in self.restart_targets_labelled() {
            if !o.rotation.stale_targets.contains(&label) {
                continue;
            }
            let patch = json!({"spec": {"template": {"metadata": {"annotations": {annotations::RESTARTED_AT: current.fingerprint}}}}});
            match self
                .target_api(target.kind)
                .patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.event(
                        EventType::Normal,
                        "RestartedWorkload",
                        "Restart",
                        format!("rolled {label} for key {}", current.preview),
                    )
                    .await;
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(kube_err("rolling a restart target")(e)),
            }
        }
        Ok(())
    }

    /// Emergency revocation: every previous key stops verifying now.
    async fn revoke(&self, snap: &Snapshot, request: &str) -> Result<(), Error> {
        let Some(mut record) = snap.record.clone() else {
            return Ok(());
        };
        let revoked = std::mem::take(&mut record.previous);
        record.rotation.last_revocation = Some(request.to_string());
        if let Some(current) = &record.current
            && !revoked.is_empty()
        {
            let entry = Entry {
                at: rfc3339(self.ctx.clock.now()),
                action: HistoryAction::Revoked,
                reason: "Manual".into(),
                fingerprint: current.fingerprint.clone(),
                preview: current.preview.clone(),
                previous_fingerprint: revoked.last().map(|p| p.key.fingerprint.clone()),
            };
            record.history = history::append(record.history, entry, self.history_limit());
        }
        self.write_record(&record, snap.record_secret.as_ref())
            .await?;
        let fingerprints: Vec<&str> = revoked.iter().map(|p| p.key.fingerprint.as_str()).collect();
        self.event(
            EventType::Warning,
            "Revoked",
            "Revoke",
            format!(
                "revoked {} previous key(s) at once: {}",
                revoked.len(),
                fingerprints.join(", ")
            ),
        )
        .await;
        Ok(())
    }

    /// Writes the status if it changed, and records an Event when Ready changes reason.
    async fn write_status(&self, o: &Observed, step: &Step, snap: &Snapshot) -> Result<(), Error> {
        let mut advisories: Vec<(&str, String)> = Vec::new();
        if !o.rotation.missing_targets.is_empty() {
            advisories.push((
                "RestartTargetMissing",
                format!(
                    "restart targets not found: {}; rotations still happen",
                    o.rotation.missing_targets.join(", ")
                ),
            ));
        }
        if snap.weak_import && snap.import_key.is_some() {
            advisories.push(("WeakKey", "the imported key has fewer than 128 bits of estimated entropy; prefer a generated key".into()));
        }
        if let Some(message) = self.policy().and_then(|p| p.grace_advisory(o.now)) {
            advisories.push(("GracePeriodExceedsInterval", message));
        }
        let advisory_before = existing_advisory(self.ak);
        let wanted = plan::conditions_for(step, o, &advisories);
        let existing = self
            .ctx
            .status_baseline(
                &self.key,
                self.ak.metadata.resource_version.as_deref(),
                self.ak.status.clone(),
            )
            .unwrap_or_default();
        let mut status = plan::status(&existing, o, &wanted, &self.record_name());
        let before = conditions::ready(&existing.conditions).map(|c| (c.status, c.reason.clone()));
        let after = conditions::ready(&status.conditions).map(|c| (c.status, c.reason.clone()));
        if same_status(&existing, &status) {
            return Ok(());
        }
        // Usage belongs to the verifier: never part of keyward's apply.
        status.usage = None;
        let patch =
            json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey", "status": status});
        let written = self
            .apikeys
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(kube_err("writing the status"))?;
        self.ctx.activity.wrote(&written);
        self.ctx
            .remember_status(&self.key, self.base_rv.clone(), &status);
        if before != after
            && let Some(ready) = conditions::ready(&status.conditions)
        {
            let was_disabled = before
                .as_ref()
                .is_some_and(|(_, reason)| reason == "Disabled");
            let event = match ready.reason.as_str() {
                "InvalidSpec" | "SecretConflict" | "ImportFailed" | "Expired" => {
                    Some((EventType::Warning, ready.reason.as_str()))
                }
                "Revealed" | "Disabled" => Some((EventType::Normal, ready.reason.as_str())),
                _ if was_disabled && ready.status == crate::crd::ConditionStatus::True => {
                    Some((EventType::Normal, "Enabled"))
                }
                _ => None,
            };
            if let Some((type_, reason)) = event {
                self.event(type_, reason, "Reconcile", ready.message.clone())
                    .await;
            }
        }
        let advisory_after = status
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::ADVISORY)
            .map(|c| c.reason.clone());
        if advisory_after != advisory_before
            && advisory_after.as_deref() == Some("RestartTargetMissing")
        {
            let message = advisories
                .iter()
                .find(|(r, _)| *r == "RestartTargetMissing")
                .map(|(_, m)| m.clone())
                .unwrap_or_default();
            self.event(
                EventType::Warning,
                "RestartTargetMissing",
                "Restart",
                message,
            )
            .await;
        }
        Ok(())
    }
}

/// Whether the live workload Secret lacks anything keyward wants on it (other managers'
/// labels, annotations and data keys are left alone).
fn workload_differs(wanted: &Secret, live: &Secret, secret_key: &str) -> bool {
    let contains = |want: &Option<BTreeMap<String, String>>, have: &BTreeMap<String, String>| {
        want.iter().flatten().all(|(k, v)| have.get(k) == Some(v))
    };
    let owners = |s: &Secret| {
        s.owner_references()
            .iter()
            .map(|o| o.uid.clone())
            .collect::<Vec<_>>()
    };
    let key_of = |s: &Secret| s.data.as_ref().and_then(|d| d.get(secret_key)).cloned();
    !contains(&wanted.metadata.labels, live.labels())
        || !contains(&wanted.metadata.annotations, live.annotations())
        || owners(wanted) != owners(live)
        || key_of(wanted) != key_of(live)
}

/// A plain create when `existing` is `None` (so a Secret that appeared meanwhile is a 409,
/// never merged into), else a server-side apply guarded by `existing`'s resourceVersion.
async fn create_or_apply(
    activity: &Activity,
    api: &Api<Secret>,
    mut desired: Secret,
    existing: Option<&Secret>,
    (create_step, update_step): (&'static str, &'static str),
) -> Result<(), Error> {
    match existing {
        None => {
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            let created = api
                .create(&params, &desired)
                .await
                .map_err(kube_err(create_step))?;
            activity.wrote(&created);
        }
        Some(current) => {
            desired.metadata.resource_version = current.resource_version();
            let name = desired.metadata.name.clone().unwrap_or_default();
            let applied = api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&desired),
                )
                .await
                .map_err(kube_err(update_step))?;
            activity.wrote(&applied);
        }
    }
    Ok(())
}

fn existing_advisory(ak: &ApiKey) -> Option<String> {
    ak.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::ADVISORY)
        .map(|c| c.reason.clone())
}

/// Status equality that ignores verifier usage (not keyward's to write).
fn same_status(a: &ApiKeyStatus, b: &ApiKeyStatus) -> bool {
    let strip = |s: &ApiKeyStatus| ApiKeyStatus {
        usage: None,
        ..s.clone()
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ak.status = Some(ApiKeyStatus {
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
