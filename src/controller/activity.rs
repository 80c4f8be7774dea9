//! What the controllers are doing right now, so a caller can tell "busy" from "idle" by a
//! condition instead of a sleep: reconciles in flight, triggers not yet reconciled, requeues
//! coming due, and the controllers' own writes whose watch events have not arrived yet.
//!
//! Triggers are counted at the moment kube-runtime takes them from a trigger stream, and a
//! reconcile counts as started when kube-runtime creates its future (both happen inside the
//! same poll of its runner), so a trigger is either covered by a run that started after it,
//! or it is still pending. A write is "unseen" until every registered watch that will
//! deliver it has done so (exact resourceVersion, a deletion, or a relist that began after
//! the write).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use either::Either;
use kube::api::DynamicObject;
use kube::core::Status;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

/// An object of any kind.
pub type AnyRef = ObjectRef<DynamicObject>;

/// A watch's identity within one [`Activity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WatchId(usize);

/// Which objects a watch delivers.
#[derive(Debug, Clone)]
struct Scope {
    kind: String,
    namespace: Option<String>,
    /// `key=value` the objects carry, if the watch is label-selected.
    label: Option<(String, String)>,
}

impl Scope {
    fn delivers(
        &self,
        kind: &str,
        namespace: Option<&str>,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        self.kind == kind
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| Some(ns) == namespace)
            && self
                .label
                .as_ref()
                .is_none_or(|(k, v)| labels.get(k) == Some(v))
    }
}

#[derive(Debug, Default)]
struct ObjectState {
    last_trigger: u64,
    last_start: u64,
    running: usize,
    due: Option<Instant>,
}

#[derive(Debug)]
struct Unseen {
    /// The resourceVersion written; `None` when the write was a deletion.
    resource_version: Option<String>,
    written: Instant,
}

/// A watch event, summarised: what [`Activity`] needs of it.
#[derive(Debug, Clone)]
pub enum Note {
    Init,
    InitDone,
    Applied(AnyRef, Option<String>),
    Deleted(AnyRef),
}

impl Note {
    pub fn of<K: Resource<DynamicType = ()>>(event: &watcher::Event<K>) -> Self {
        match event {
            watcher::Event::Init => Self::Init,
            watcher::Event::InitDone => Self::InitDone,
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                Self::Applied(erase(o), o.resource_version())
            }
            watcher::Event::Delete(o) => Self::Deleted(erase(o)),
        }
    }
}

/// The resourceVersion of an object in its controller's store, if it is there
/// (kube-runtime skips triggers for objects that are not).
type InStore = Box<dyn Fn(&AnyRef) -> Option<String> + Send + Sync>;

#[derive(Default)]
struct State {
    stores: HashMap<String, InStore>,
    /// Controllers the process runs; until each has registered, the process is not idle.
    expected_controllers: usize,
    /// Changes shared watches have yet to hand to every subscriber.
    fan_outs: Vec<Box<dyn Fn() -> usize + Send + Sync>>,
    seq: u64,
    objects: HashMap<AnyRef, ObjectState>,
    watches: Vec<Scope>,
    relist_started: HashMap<WatchId, Instant>,
    /// Watches whose (re)list has completed and not restarted since.
    synced: std::collections::HashSet<WatchId>,
    /// Per object, the watches still to echo a write of the controllers.
    unseen: HashMap<AnyRef, Vec<(WatchId, Unseen)>>,
    /// The version each live object was last written at by the controllers (by
    /// [`Slot`]: one entry per object ever written, so kept small).
    written: HashMap<Slot, String>,
    writes: u64,
    /// Objects a write of the controllers may or may not have changed (the answer was
    /// lost): the cache cannot tell, so the next read of each goes to the API.
    uncertain: std::collections::HashSet<AnyRef>,
    /// Recent events per object (a watch event can arrive before the write's own answer),
    /// and the order they came in, for forgetting them.
    recent: HashMap<Slot, Recent>,
    recent_order: std::collections::VecDeque<(Instant, Slot)>,
}

/// An object's identity (kind, namespace, name) as a 64-bit hash: the bookkeeping kept for
/// every object written or seen lately needs no copy of its names (a collision would only
/// make one idle check wait or return early, never change what is written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Slot(u64);

impl Slot {
    fn of(obj: &AnyRef) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        obj.hash(&mut h);
        Self(h.finish())
    }
}

/// The last few versions watches delivered for one object.
#[derive(Debug, Default)]
struct Recent {
    at: Option<Instant>,
    seen: std::collections::VecDeque<(WatchId, Option<String>)>,
}

/// How long (and how many) recent events are kept to match writes answered late.
const RECENT_WINDOW: Duration = Duration::from_secs(10);
const RECENT_LIMIT: usize = 20_000;
/// Versions remembered per object (a few watches, a few quick changes).
const RECENT_PER_OBJECT: usize = 8;

/// Wakes `wait_seen` callers once an event has been recorded.
struct WakeOnDrop<'a>(&'a tokio::sync::Notify);

impl Drop for WakeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.notify_waiters();
    }
}

/// Writes older than this are assumed seen: a bound on memory if a watch never delivers.
const UNSEEN_LIMIT: Duration = Duration::from_secs(300);

/// The activity of one operator process (shared by all its controllers).
#[derive(Default)]
pub struct Activity {
    state: Mutex<State>,
    /// Woken on every watch event, for [`Activity::wait_seen`].
    events: tokio::sync::Notify,
}

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity").finish_non_exhaustive()
    }
}

impl State {
    fn remember(&mut self, id: WatchId, obj: &AnyRef, resource_version: Option<String>) {
        let now = Instant::now();
        while self.recent_order.len() >= RECENT_LIMIT
            || self
                .recent_order
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > RECENT_WINDOW)
        {
            let Some((t, old)) = self.recent_order.pop_front() else {
                break;
            };
            if self.recent.get(&old).is_some_and(|r| r.at <= Some(t)) {
                self.recent.remove(&old);
            }
        }
        let recent = self.recent.entry(Slot::of(obj)).or_default();
        recent.at = Some(now);
        if recent.seen.len() >= RECENT_PER_OBJECT {
            recent.seen.pop_front();
        }
        recent.seen.push_back((id, resource_version));
        self.recent_order.push_back((now, Slot::of(obj)));
    }

    fn recently_seen(&self, id: Option<WatchId>, obj: &AnyRef, rv: &Option<String>) -> bool {
        self.recent.get(&Slot::of(obj)).is_some_and(|r| {
            r.seen
                .iter()
                .any(|(w, v)| id.is_none_or(|id| *w == id) && v == rv)
        })
    }

    /// Drops unseen writes older than [`UNSEEN_LIMIT`] (a bound if a watch never echoes).
    fn prune_unseen(&mut self, now: Instant) {
        self.unseen.retain(|_, list| {
            list.retain(|(_, u)| now.duration_since(u.written) < UNSEEN_LIMIT);
            !list.is_empty()
        });
    }

    fn exists(&self, obj: &AnyRef) -> bool {
        self.stores
            .get(&obj.dyntype.kind)
            .is_none_or(|in_store| in_store(obj).is_some())
    }
}

fn erase<K: Resource<DynamicType = ()>>(obj: &K) -> AnyRef {
    ObjectRef::from_obj(obj).erase()
}

impl Activity {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a watch of `K` (in `namespace`, or all), label-selected by `label`.
    pub fn watch<K: Resource<DynamicType = ()>>(
        &self,
        namespace: Option<&str>,
        label: Option<(&str, &str)>,
    ) -> WatchId {
        let mut s = self.lock();
        s.watches.push(Scope {
            kind: K::kind(&()).into_owned(),
            namespace: namespace.map(String::from),
            label: label.map(|(k, v)| (k.to_string(), v.to_string())),
        });
        WatchId(s.watches.len() - 1)
    }

    /// Registers the store a controller of `K` reconciles from: triggers for objects not
    /// in it are dropped by kube-runtime, so they do not count as pending.
    pub fn controller<K>(&self, store: Store<K>)
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let present = store.state();
        let in_store = move |obj: &AnyRef| {
            let mut r = ObjectRef::<K>::new(&obj.name);
            r.namespace = obj.namespace.clone();
            store
                .get(&r)
                .map(|o| o.resource_version().unwrap_or_default())
        };
        self.lock()
            .stores
            .insert(K::kind(&()).into_owned(), Box::new(in_store));
        // The controller will reconcile every object its store holds now; until its
        // trigger stream hands them over, they count as triggered.
        for obj in present {
            self.triggered(erase(&*obj));
        }
    }

    /// Notes how many controllers the process runs: the process is busy until each has
    /// registered with [`Activity::controller`].
    pub fn expect_controllers(&self, n: usize) {
        self.lock().expected_controllers = n;
    }

    /// Whether a watch of the controllers has delivered `obj` at `resource_version` (in the
    /// last 10 s, or it is what a controller's store holds now): the controller has seen
    /// that change, and triggered on it or not.
    pub fn has_seen(&self, obj: &AnyRef, resource_version: &str) -> bool {
        let s = self.lock();
        let in_store = s
            .stores
            .get(&obj.dyntype.kind)
            .and_then(|in_store| in_store(obj));
        in_store.as_deref() == Some(resource_version)
            || s.recently_seen(None, obj, &Some(resource_version.to_string()))
    }

    /// Registers a count of changes not yet handed to every subscriber of shared watches.
    pub fn fan_out(&self, undelivered: impl Fn() -> usize + Send + Sync + 'static) {
        self.lock().fan_outs.push(Box::new(undelivered));
    }

    /// Whether a write of the controllers to `obj` has not yet come back through every
    /// watch that delivers it: a cache read of `obj` may still show an older version.
    pub fn has_unseen(&self, obj: &AnyRef) -> bool {
        let s = self.lock();
        let now = Instant::now();
        s.unseen.get(obj).is_some_and(|list| {
            list.iter()
                .any(|(_, u)| now.duration_since(u.written) < UNSEEN_LIMIT)
        })
    }

    /// Waits (at most `patience`) until the controllers' own writes to `objs` have come back
    /// through their watches; `false` if some have not.
    pub async fn wait_seen(&self, objs: &[AnyRef], patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let notified = self.events.notified();
            if !objs.iter().any(|o| self.has_unseen(o)) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return !objs.iter().any(|o| self.has_unseen(o));
            }
        }
    }

    /// Notes a raw event of watch `id`, once the controllers can see its effect (the
    /// store has applied it).
    pub fn saw<K: Resource<DynamicType = ()>>(&self, id: WatchId, event: &watcher::Event<K>) {
        self.note(id, Note::of(event));
    }

    /// [`Activity::saw`] with the event already summarised (for callers that hand the event
    /// itself on first).
    pub fn note(&self, id: WatchId, note: Note) {
        let _wake = WakeOnDrop(&self.events);
        let mut s = self.lock();
        match note {
            Note::Init => {
                s.relist_started.insert(id, Instant::now());
                s.synced.remove(&id);
            }
            Note::InitDone => {
                s.synced.insert(id);
                if let Some(started) = s.relist_started.remove(&id) {
                    s.unseen.retain(|_, list| {
                        list.retain(|(w, u)| *w != id || u.written > started);
                        !list.is_empty()
                    });
                }
            }
            Note::Applied(obj, rv) => {
                s.remember(id, &obj, rv.clone());
                if let Some(list) = s.unseen.get_mut(&obj) {
                    list.retain(|(w, u)| {
                        !(*w == id && u.resource_version.is_some() && u.resource_version == rv)
                    });
                    if list.is_empty() {
                        s.unseen.remove(&obj);
                    }
                }
            }
            Note::Deleted(obj) => {
                s.written.remove(&Slot::of(&obj));
                s.remember(id, &obj, None);
                if let Some(list) = s.unseen.get_mut(&obj) {
                    list.retain(|(w, _)| *w != id);
                    if list.is_empty() {
                        s.unseen.remove(&obj);
                    }
                }
            }
        }
    }

    /// Notes a write the controller made; `written` is the object the API returned, or
    /// `None` with `deleted` for a deletion that removed the object.
    pub fn wrote<K: Resource<DynamicType = ()>>(&self, written: &K) {
        let rv = written.resource_version();
        if let Some(v) = &rv {
            self.lock()
                .written
                .insert(Slot::of(&erase(written)), v.clone());
        }
        self.expect(written, rv);
    }

    /// Notes a write to `obj` whose outcome is unknown (an error that is not a refusal:
    /// 5xx, timeout, lost connection).
    pub fn uncertain<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        self.lock().uncertain.insert(erase(obj));
    }

    /// Whether `obj` must be read from the API rather than the cache; reading it clears
    /// this (call [`Activity::settled`]).
    pub fn is_uncertain(&self, obj: &AnyRef) -> bool {
        self.lock().uncertain.contains(obj)
    }

    /// `obj` was read from the API after an uncertain write.
    pub fn settled(&self, obj: &AnyRef) {
        self.lock().uncertain.remove(obj);
    }

    /// Notes a deletion that removed `obj`.
    pub fn deleted<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        self.expect(obj, None);
    }

    /// Notes the answer to a DELETE of `namespace/name`: the object still there (finalizers
    /// pending, a new version) or gone.
    pub fn deleted_either<K>(&self, answer: Either<K, Status>, namespace: &str, name: &str)
    where
        K: Resource<DynamicType = ()> + Default,
    {
        match answer {
            Either::Left(still_there) => self.wrote(&still_there),
            Either::Right(_) => {
                let mut gone = K::default();
                gone.meta_mut().name = Some(name.to_string());
                gone.meta_mut().namespace = Some(namespace.to_string());
                self.deleted(&gone);
            }
        }
    }

    fn expect<K: Resource<DynamicType = ()>>(&self, obj: &K, resource_version: Option<String>) {
        let kind = K::kind(&());
        let namespace = obj.namespace();
        let key = erase(obj);
        let now = Instant::now();
        let mut s = self.lock();
        s.writes += 1;
        if s.writes.is_multiple_of(1024) {
            s.prune_unseen(now);
        }
        let ids: Vec<WatchId> = s
            .watches
            .iter()
            .enumerate()
            .filter(|(_, w)| w.delivers(&kind, namespace.as_deref(), obj.labels()))
            .map(|(i, _)| WatchId(i))
            .collect();
        for id in ids {
            if s.recently_seen(Some(id), &key, &resource_version) {
                continue;
            }
            let list = s.unseen.entry(key.clone()).or_default();
            list.retain(|(w, _)| *w != id);
            list.push((
                id,
                Unseen {
                    resource_version: resource_version.clone(),
                    written: now,
                },
            ));
        }
    }

    /// Whether `obj` is at exactly the version the controllers last wrote: its watch event
    /// is the echo of their own write, which the writing reconcile has already accounted
    /// for, so it need not wake anyone.
    pub fn is_own_echo<K: Resource<DynamicType = ()>>(&self, obj: &K) -> bool {
        let Some(rv) = obj.resource_version() else {
            return false;
        };
        self.lock().written.get(&Slot::of(&erase(obj))) == Some(&rv)
    }

    /// Notes that a trigger for `obj` was handed to the controller.
    pub fn triggered(&self, obj: AnyRef) {
        let mut s = self.lock();
        if !s.exists(&obj) {
            return;
        }
        s.seq += 1;
        let seq = s.seq;
        s.objects.entry(obj).or_default().last_trigger = seq;
    }

    /// Notes that a reconcile of `obj` was started (call synchronously when the runner
    /// creates the reconcile, not inside its future).
    pub fn started(&self, obj: AnyRef) {
        let mut s = self.lock();
        s.seq += 1;
        let seq = s.seq;
        let o = s.objects.entry(obj).or_default();
        o.last_start = seq;
        o.running += 1;
        o.due = None;
    }

    /// Notes that a reconcile of `obj` ended, asking to run again after `requeue`.
    pub fn finished(&self, obj: &AnyRef, requeue: Option<Duration>) {
        let mut s = self.lock();
        if let Some(o) = s.objects.get_mut(obj) {
            o.running = o.running.saturating_sub(1);
            o.due = requeue.map(|d| Instant::now() + d);
        }
    }

    /// Forgets a deleted object.
    pub fn forget(&self, obj: &AnyRef) {
        let mut s = self.lock();
        if s.objects.get(obj).is_some_and(|o| o.running == 0) {
            s.objects.remove(obj);
        }
    }

    /// Why the controllers are not idle (empty when they are): a watch still listing, a
    /// reconcile running, a trigger not yet reconciled, a requeue due within `horizon`, or
    /// an unseen own write.
    pub fn busy(&self, horizon: Duration) -> Vec<String> {
        let s = self.lock();
        let now = Instant::now();
        let mut why = Vec::new();
        if s.watches.is_empty() {
            why.push("no controller has started watching yet".to_string());
        }
        if s.stores.len() < s.expected_controllers {
            why.push(format!(
                "{} of {} controllers not yet started",
                s.expected_controllers - s.stores.len(),
                s.expected_controllers
            ));
        }
        let undelivered: usize = s.fan_outs.iter().map(|f| f()).sum();
        if undelivered > 0 {
            why.push(format!(
                "{undelivered} change(s) not yet handed to the controllers"
            ));
        }
        for (i, w) in s.watches.iter().enumerate() {
            if !s.synced.contains(&WatchId(i)) {
                why.push(format!(
                    "watch of {} in {:?} still listing",
                    w.kind, w.namespace
                ));
            }
        }
        for (obj, o) in &s.objects {
            if o.running == 0 && !s.exists(obj) {
                continue;
            }
            if o.running > 0 {
                why.push(format!("reconciling {obj}"));
            } else if o.last_trigger > o.last_start {
                why.push(format!("{obj} triggered, not yet reconciled"));
            } else if o.due.is_some_and(|d| d <= now + horizon) {
                why.push(format!("{obj} requeued within {horizon:?}"));
            }
        }
        for (obj, list) in &s.unseen {
            for (id, u) in list {
                if now.duration_since(u.written) < UNSEEN_LIMIT {
                    why.push(format!(
                        "own write of {obj} not yet seen by watch of {}",
                        s.watches[id.0].kind
                    ));
                }
            }
        }
        why.sort();
        why
    }

    /// Whether nothing is running, pending, or due within `horizon`.
    pub fn is_idle(&self, horizon: Duration) -> bool {
        self.busy(horizon).is_empty()
    }

    /// Triggers handed to the controllers for `obj` so far.
    pub fn triggers_of(&self, obj: &AnyRef) -> u64 {
        // Counted by the sequence, so only "changed or not" is meaningful to callers.
        self.lock().objects.get(obj).map_or(0, |o| o.last_trigger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::ObjectMeta;

    fn secret(name: &str, rv: &str, managed: bool) -> Secret {
        let mut labels = std::collections::BTreeMap::new();
        if managed {
            labels.insert("app.kubernetes.io/managed-by".into(), "keyward".into());
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_trigger_is_pending_until_a_reconcile_starts_after_it() {
        let a = Activity::default();
        assert!(!a.is_idle(Duration::from_secs(10)), "nothing started yet");
        let w = a.watch::<Secret>(None, None);
        a.saw::<Secret>(w, &watcher::Event::Init);
        a.saw::<Secret>(w, &watcher::Event::InitDone);
        let obj = erase(&secret("s", "1", false));
        assert!(a.is_idle(Duration::from_secs(10)));
        a.triggered(obj.clone());
        assert!(!a.is_idle(Duration::from_secs(10)));
        a.started(obj.clone());
        assert!(!a.is_idle(Duration::from_secs(10)), "running");
        a.triggered(obj.clone()); // arrives while running: kube-runtime reruns
        a.finished(&obj, None);
        assert!(
            !a.is_idle(Duration::from_secs(10)),
            "the rerun is still due"
        );
        a.started(obj.clone());
        a.finished(&obj, Some(Duration::from_secs(5)));
        assert!(!a.is_idle(Duration::from_secs(10)), "requeued soon");
        assert!(
            a.is_idle(Duration::from_secs(1)),
            "requeued later than the horizon"
        );
    }

    #[test]
    fn own_writes_are_unseen_until_each_watch_that_delivers_them_did() {
        let a = Activity::default();
        let managed = a.watch::<Secret>(None, Some(("app.kubernetes.io/managed-by", "keyward")));
        let all = a.watch::<Secret>(Some("ns"), None);
        let other_ns = a.watch::<Secret>(Some("elsewhere"), None);
        assert_eq!(a.busy(Duration::ZERO).len(), 3, "nothing listed yet");
        for w in [managed, all, other_ns] {
            a.saw::<Secret>(w, &watcher::Event::Init);
            a.saw::<Secret>(w, &watcher::Event::InitDone);
        }
        let written = secret("s", "7", true);
        a.wrote(&written);
        assert_eq!(
            a.busy(Duration::ZERO).len(),
            2,
            "{:?}",
            a.busy(Duration::ZERO)
        );
        // An event that overtook the write's answer counts as seen.
        let early = secret("u", "8", true);
        a.saw(managed, &watcher::Event::Apply(early.clone()));
        a.wrote(&early);
        assert_eq!(
            a.busy(Duration::ZERO).len(),
            3,
            "only the other watch is still due"
        );
        a.saw(all, &watcher::Event::Apply(early));
        a.saw(managed, &watcher::Event::Apply(secret("s", "6", true)));
        assert_eq!(
            a.busy(Duration::ZERO).len(),
            2,
            "an older version is not ours"
        );
        a.saw(managed, &watcher::Event::Apply(written.clone()));
        a.saw(other_ns, &watcher::Event::Apply(written.clone()));
        assert_eq!(a.busy(Duration::ZERO).len(), 1);
        // A relist that started after the write shows it (or something later).
        a.saw::<Secret>(all, &watcher::Event::Init);
        a.saw::<Secret>(all, &watcher::Event::InitDone);
        assert!(a.is_idle(Duration::ZERO));
        // Unlabelled writes are not expected from the label-selected watch.
        a.deleted(&secret("t", "9", false));
        assert_eq!(a.busy(Duration::ZERO).len(), 1);
        a.saw(all, &watcher::Event::Delete(secret("t", "9", false)));
        assert!(a.is_idle(Duration::ZERO));
    }
}
