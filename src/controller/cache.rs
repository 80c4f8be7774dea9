//! Shared watches: one watch per kind, label selector and scope for the whole process, each
//! feeding one in-memory store that every controller reads instead of GETting, and a
//! fan-out of its changes that every controller turns into triggers.
//!
//! Scope: cluster-wide when no `--namespace` is given; otherwise one watch per listed
//! namespace (plus the hash namespace for keyward's own Secrets), so Roles suffice. The
//! per-namespace watches feed one store: after the first full sync, a relist of one
//! namespace becomes the changes it implies (applies, and deletions of what is gone), so it
//! never disturbs the other namespaces' objects and no deletion passes unnoticed.
//!
//! Before an object enters a store, managedFields and `last-applied-configuration` are
//! dropped (a client-side `kubectl apply` copies a Secret's whole data into that
//! annotation); stores of objects keyward does not manage keep only `keyward.dev/*`
//! annotations.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::activity::{Activity, Note, WatchId};
use crate::crd::{ApiKey, ApiKeyPool, ProviderCredential, labels};

/// A change a shared watch saw, in order.
#[derive(Debug)]
pub enum Change<K> {
    Applied(Arc<K>),
    Deleted(Arc<K>),
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Self::Applied(o) => Self::Applied(o.clone()),
            Self::Deleted(o) => Self::Deleted(o.clone()),
        }
    }
}

/// What a subscriber receives.
#[derive(Debug)]
pub enum Seen<K> {
    Change(Change<K>),
    /// The subscriber fell behind and missed changes: treat everything as changed.
    Missed,
}

/// Bound on changes buffered for subscribers; one that falls further behind resyncs.
const FAN_OUT: usize = 16_384;

/// One shared watch: its store and its stream of changes.
pub struct Shared<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    changes: broadcast::Sender<Change<K>>,
    /// True once every scope has been listed. (kube-runtime's `Store::wait_until_ready`
    /// wakes only the last of several waiters.)
    synced: tokio::sync::watch::Receiver<bool>,
}

impl<K> Shared<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Every object in the store now, then every change from here on.
    pub fn subscribe(&self) -> impl Stream<Item = Seen<K>> + Send + 'static {
        let rx = self.changes.subscribe();
        let now: Vec<Seen<K>> = self
            .store
            .state()
            .into_iter()
            .map(|o| Seen::Change(Change::Applied(o)))
            .collect();
        let live = futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(change) => Some((Seen::Change(change), rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => Some((Seen::Missed, rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        futures::stream::iter(now).chain(live)
    }

    /// Waits until every scope has been listed once.
    pub async fn synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Changes not yet received by every subscriber (part of "idle").
    pub fn undelivered(&self) -> usize {
        self.changes.len()
    }
}

/// Where keyward works.
#[derive(Debug, Clone)]
pub struct Scope {
    /// `None`: every namespace.
    pub namespaces: Option<Vec<String>>,
    pub hash_namespace: String,
}

impl Scope {
    /// Watch scopes for objects users create: each namespace, or the whole cluster.
    pub fn user(&self) -> Vec<Option<String>> {
        match &self.namespaces {
            None => vec![None],
            Some(list) => list.iter().cloned().map(Some).collect(),
        }
    }

    /// Watch scopes for keyward's own Secrets: the user scopes plus the hash namespace.
    pub fn managed(&self) -> Vec<Option<String>> {
        let mut scopes = self.user();
        if self.namespaces.is_some() && !scopes.contains(&Some(self.hash_namespace.clone())) {
            scopes.push(Some(self.hash_namespace.clone()));
        }
        scopes
    }
}

/// Drops what no controller reads and could be large.
fn strip_meta(meta: &mut ObjectMeta, keep_foreign_annotations: bool) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| {
            k.starts_with("keyward.dev/")
                || (keep_foreign_annotations
                    && k != "kubectl.kubernetes.io/last-applied-configuration")
        });
    }
}

/// The object a keyward Secret belongs to, named by its label `label` (`keyward.dev/apikey`,
/// `keyward.dev/pool`): in the Secret's namespace, or for a hash record in the namespace
/// its `keyward.dev/namespace` label names.
pub fn owner_by_label<K>(secret: &Secret, label: &str) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()>,
{
    let l = secret.labels();
    let Some(name) = l.get(label) else {
        return Vec::new();
    };
    let ns = if l.get(labels::ROLE).map(String::as_str) == Some(labels::ROLE_HASH) {
        l.get(labels::NAMESPACE).cloned()
    } else {
        secret.namespace()
    };
    ns.map(|ns| ObjectRef::new(name).within(&ns))
        .into_iter()
        .collect()
}

impl Caches {
    /// Waits until every store has been listed once, or `shutdown`; `false` on shutdown.
    /// Nothing is decided from a cache that has not been listed yet.
    pub async fn ready_unless(&self, shutdown: impl Future<Output = ()>) -> bool {
        tokio::select! {
            _ = self.ready() => true,
            _ = shutdown => false,
        }
    }
}

/// Keeps only what the controllers read of any Secret's metadata (identity, version, and
/// whether keyward manages it): the store holds every Secret in scope.
fn strip_to_identity(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
    if let Some(l) = meta.labels.as_mut() {
        l.retain(|k, _| k == labels::MANAGED_BY);
        if l.is_empty() {
            meta.labels = None;
        }
    }
}

/// The watches every controller shares.
pub struct Caches {
    pub apikeys: Shared<ApiKey>,
    pub pools: Shared<ApiKeyPool>,
    pub pcreds: Shared<ProviderCredential>,
    /// Secrets keyward manages (label `app.kubernetes.io/managed-by: keyward`), data
    /// included: workload Secrets, hash records, the pepper.
    pub managed: Shared<Secret>,
    /// Every Secret in scope, metadata only: import sources, Secrets in the way.
    pub secret_meta: Shared<PartialObjectMeta<Secret>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Caches {
    /// Starts the watches (each retries with backoff on its own).
    pub fn start(client: &Client, scope: &Scope, activity: &Arc<Activity>) -> Self {
        let mut tasks = Vec::new();
        let managed_label = (labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
        let apikeys = watch(
            client,
            &scope.user(),
            None,
            |ak: &mut ApiKey| strip_meta(&mut ak.metadata, false),
            activity,
            &mut tasks,
        );
        let pools = watch(
            client,
            &scope.user(),
            None,
            |p: &mut ApiKeyPool| strip_meta(&mut p.metadata, false),
            activity,
            &mut tasks,
        );
        let pcreds = watch(
            client,
            &scope.user(),
            None,
            |p: &mut ProviderCredential| strip_meta(&mut p.metadata, false),
            activity,
            &mut tasks,
        );
        let managed = watch(
            client,
            &scope.managed(),
            Some(managed_label),
            |s: &mut Secret| strip_meta(&mut s.metadata, true),
            activity,
            &mut tasks,
        );
        let secret_meta = watch(
            client,
            &scope.user(),
            None,
            |s: &mut PartialObjectMeta<Secret>| strip_to_identity(&mut s.metadata),
            activity,
            &mut tasks,
        );
        let caches = Self {
            apikeys,
            pools,
            pcreds,
            managed,
            secret_meta,
            tasks,
        };
        let undelivered = caches.undelivered_fn();
        activity.fan_out(undelivered);
        caches
    }

    fn undelivered_fn(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let senders = (
            self.apikeys.changes.clone(),
            self.pools.changes.clone(),
            self.pcreds.changes.clone(),
            self.managed.changes.clone(),
            self.secret_meta.changes.clone(),
        );
        move || {
            senders.0.len() + senders.1.len() + senders.2.len() + senders.3.len() + senders.4.len()
        }
    }

    /// Waits until every store has been listed once: until then a missing object may only
    /// be one the list has not reached yet.
    pub async fn ready(&self) {
        futures::join!(
            self.apikeys.synced(),
            self.pools.synced(),
            self.pcreds.synced(),
            self.managed.synced(),
            self.secret_meta.synced(),
        );
    }

    /// A Secret keyward manages, from the cache.
    pub fn managed_secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.managed
            .store
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// keyward's Secrets in `namespace` carrying label `key=value`, from the cache.
    pub fn managed_labelled(&self, namespace: &str, key: &str, value: &str) -> Vec<Arc<Secret>> {
        self.managed.store.state_filter(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.labels().get(key).map(String::as_str) == Some(value)
        })
    }

    /// Any Secret's metadata, from the cache.
    pub fn secret_meta(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<PartialObjectMeta<Secret>>> {
        self.secret_meta
            .store
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// Stops every watch.
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Caches {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts one shared watch over `scopes`, stripping objects with `strip`.
fn watch<K>(
    client: &Client,
    scopes: &[Option<String>],
    label: Option<(&str, &str)>,
    strip: fn(&mut K),
    activity: &Arc<Activity>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Shared<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, mut writer) = reflector::store::<K>();
    let (changes, _) = broadcast::channel(FAN_OUT);
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let mut config = watcher::Config::default();
    if let Some((k, v)) = label {
        config = config.labels(&format!("{k}={v}"));
    }
    let mut ids: Vec<WatchId> = Vec::new();
    let mut sources = Vec::new();
    for (index, scope) in scopes.iter().enumerate() {
        ids.push(activity.watch::<K>(scope.as_deref(), label));
        let api: Api<K> = match scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        sources.push(
            watcher(api, config.clone())
                .default_backoff()
                .modify(strip)
                .map(move |e| (index, e))
                .boxed(),
        );
    }
    let mut merge = Merge::new(scopes.to_vec(), store.clone());
    let tx = changes.clone();
    let activity = activity.clone();
    tasks.push(tokio::spawn(async move {
        let mut events = futures::stream::select_all(sources);
        while let Some((index, event)) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                    continue;
                }
            };
            let note = Note::of(&event);
            for out in merge.on(index, event) {
                writer.apply_watcher_event(&out);
                if matches!(out, watcher::Event::InitDone) {
                    synced_tx.send_replace(true);
                }
                let change = match out {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                        Change::Applied(Arc::new(o))
                    }
                    watcher::Event::Delete(o) => Change::Deleted(Arc::new(o)),
                    watcher::Event::Init | watcher::Event::InitDone => continue,
                };
                // No subscriber is not an error: changes are for whoever listens.
                let _ = tx.send(change);
            }
            // Only now is the change visible in the store.
            activity.note(ids[index], note);
        }
    }));
    Shared {
        store,
        changes,
        synced,
    }
}

/// Turns the events of several per-scope watches into one consistent event sequence for a
/// single store: one initial sync covering every scope, and afterwards a relist of one
/// scope as the applies and deletions it implies.
struct Merge<K: Resource<DynamicType = ()> + 'static> {
    scopes: Vec<Option<String>>,
    store: Store<K>,
    /// Until every scope has listed once: the objects seen so far.
    initial: Option<HashMap<ObjectRef<K>, K>>,
    listed: HashSet<usize>,
    /// Scopes relisting after the first sync: the objects the relist showed.
    relisting: HashMap<usize, HashSet<ObjectRef<K>>>,
}

impl<K> Merge<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn new(scopes: Vec<Option<String>>, store: Store<K>) -> Self {
        Self {
            scopes,
            store,
            initial: Some(HashMap::new()),
            listed: HashSet::new(),
            relisting: HashMap::new(),
        }
    }

    fn in_scope(&self, index: usize, obj: &K) -> bool {
        match &self.scopes[index] {
            None => true,
            Some(ns) => obj.namespace().as_deref() == Some(ns.as_str()),
        }
    }

    fn on(&mut self, index: usize, event: watcher::Event<K>) -> Vec<watcher::Event<K>> {
        if let Some(initial) = self.initial.as_mut() {
            match event {
                watcher::Event::Init => {}
                watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                    initial.insert(ObjectRef::from_obj(&o), o);
                }
                watcher::Event::Delete(o) => {
                    initial.remove(&ObjectRef::from_obj(&o));
                }
                watcher::Event::InitDone => {
                    self.listed.insert(index);
                }
            }
            if self.listed.len() < self.scopes.len() {
                return Vec::new();
            }
            let objects = self.initial.take().unwrap_or_default();
            let mut out = vec![watcher::Event::Init];
            out.extend(objects.into_values().map(watcher::Event::InitApply));
            out.push(watcher::Event::InitDone);
            return out;
        }
        match event {
            watcher::Event::Init => {
                self.relisting.insert(index, HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(o) => {
                if let Some(seen) = self.relisting.get_mut(&index) {
                    seen.insert(ObjectRef::from_obj(&o));
                }
                vec![watcher::Event::Apply(o)]
            }
            watcher::Event::InitDone => {
                let seen = self.relisting.remove(&index).unwrap_or_default();
                self.store
                    .state()
                    .into_iter()
                    .filter(|o| self.in_scope(index, o))
                    .filter(|o| !seen.contains(&ObjectRef::from_obj(&**o)))
                    .map(|o| watcher::Event::Delete((*o).clone()))
                    .collect()
            }
            other => vec![other],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(ns: &str, name: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(events: &[watcher::Event<Secret>]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                watcher::Event::Init => "init".into(),
                watcher::Event::InitDone => "done".into(),
                watcher::Event::InitApply(o) => format!("list {}", o.name_any()),
                watcher::Event::Apply(o) => format!("apply {}", o.name_any()),
                watcher::Event::Delete(o) => format!("delete {}", o.name_any()),
            })
            .collect()
    }

    #[test]
    fn one_initial_sync_over_every_scope_then_relists_as_changes() {
        let (store, mut writer) = reflector::store::<Secret>();
        let mut merge = Merge::new(vec![Some("a".into()), Some("b".into())], store);
        let mut feed = |m: &mut Merge<Secret>, i, e| {
            let out = m.on(i, e);
            for e in &out {
                writer.apply_watcher_event(e);
            }
            names(&out)
        };
        assert!(feed(&mut merge, 0, watcher::Event::Init).is_empty());
        assert!(feed(&mut merge, 0, watcher::Event::InitApply(secret("a", "x"))).is_empty());
        assert!(feed(&mut merge, 0, watcher::Event::InitDone).is_empty());
        // Scope a is watching already while b still lists: nothing reaches the store yet.
        assert!(feed(&mut merge, 0, watcher::Event::Apply(secret("a", "y"))).is_empty());
        assert!(feed(&mut merge, 1, watcher::Event::Init).is_empty());
        let mut out = feed(&mut merge, 1, watcher::Event::InitApply(secret("b", "z")));
        assert!(out.is_empty());
        out = feed(&mut merge, 1, watcher::Event::InitDone);
        assert_eq!(out.first().map(String::as_str), Some("init"));
        assert_eq!(out.last().map(String::as_str), Some("done"));
        assert_eq!(out.len(), 5, "{out:?}");
        // A relist of a that no longer shows y: y is deleted, b's z is untouched.
        assert!(feed(&mut merge, 0, watcher::Event::Init).is_empty());
        assert_eq!(
            feed(&mut merge, 0, watcher::Event::InitApply(secret("a", "x"))),
            ["apply x"]
        );
        assert_eq!(feed(&mut merge, 0, watcher::Event::InitDone), ["delete y"]);
        assert_eq!(
            feed(&mut merge, 1, watcher::Event::Apply(secret("b", "w"))),
            ["apply w"]
        );
    }

    #[test]
    fn stores_of_foreign_objects_keep_only_keyward_annotations() {
        let mut meta = ObjectMeta {
            annotations: Some(
                [
                    ("kubectl.kubernetes.io/last-applied-configuration", "{…}"),
                    ("team", "a"),
                    ("keyward.dev/rotate", "1"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            managed_fields: Some(Vec::new()),
            ..Default::default()
        };
        let mut managed = meta.clone();
        strip_meta(&mut meta, false);
        assert_eq!(
            meta.annotations.map(|a| a.into_keys().collect::<Vec<_>>()),
            Some(vec!["keyward.dev/rotate".to_string()])
        );
        assert!(meta.managed_fields.is_none());
        strip_meta(&mut managed, true);
        assert_eq!(
            managed
                .annotations
                .map(|a| a.into_keys().collect::<Vec<_>>()),
            Some(vec!["keyward.dev/rotate".to_string(), "team".to_string()])
        );
    }
}
