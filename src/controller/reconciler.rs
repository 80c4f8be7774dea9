//! What every controller runs under: kube-runtime's controller fed by shared watches, and a
//! wrapper around each reconcile that times it, counts it, reports what the controller is
//! doing, and applies one error policy (per-object exponential backoff keyed by
//! `ObjectRef`). A write refused because the cache was stale (409 on a resourceVersion
//! precondition) is not a failure: the reconcile runs again shortly on a fresher cache,
//! with no error metric and no backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use serde::de::DeserializeOwned;

use super::Context;
use super::cache::{Seen, Shared};

/// What a reconcile asks for next: `None` waits for a change, `Some(d)` runs again after
/// `d` (the next instant something happens by itself).
pub type Next = Option<Duration>;

/// How soon a reconcile that met a stale cache runs again.
const STALE_RETRY: Duration = Duration::from_millis(200);

/// Reconciles of one controller in flight at once. The rest wait in kube-runtime's
/// scheduler as object references: a reconcile in flight is a future of several KiB, and
/// with thousands of keys waiting for the hashing pool, unbounded concurrency held
/// thousands of them (tens of MB) for no gain, hashing being the bottleneck.
const CONCURRENCY: u16 = 64;

/// A reconcile failure, as the wrapper needs to see it.
pub trait Failure: std::error::Error + Send + Sync + 'static {
    /// The failed step, short, for metrics and logs.
    fn label(&self) -> &'static str;
    /// Whether the failure only means a write met a newer object than the cache showed.
    fn is_stale(&self) -> bool;
}

/// One controller's reconcile.
pub trait Reconciler: Send + Sync + 'static {
    type Kind: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static;
    type Error: Failure;
    /// The controller's name in metrics and logs.
    const NAME: &'static str;

    fn context(&self) -> &Arc<Context>;

    fn reconcile(
        self: Arc<Self>,
        obj: Arc<Self::Kind>,
    ) -> impl Future<Output = Result<Next, Self::Error>> + Send;
}

/// Whether a kube error is a 409 Conflict.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Runs `reconciler` over the objects of `main` until `shutdown`, reconciling on `triggers`.
pub async fn run<R: Reconciler>(
    reconciler: Arc<R>,
    main: &Shared<R::Kind>,
    triggers: impl Stream<Item = ObjectRef<R::Kind>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let activity = reconciler.context().activity.clone();
    let store: Store<R::Kind> = main.store().clone();
    activity.controller(store.clone());
    let counted = triggers.inspect(move |r| activity.triggered(r.clone().erase()));
    Controller::for_shared_stream(futures::stream::empty(), store)
        .with_config(ControllerConfig::default().concurrency(CONCURRENCY))
        .reconcile_on(counted)
        .graceful_shutdown_on(shutdown)
        .run(
            |obj, r: Arc<R>| {
                // Synchronously, as the runner takes the request: see `Activity`.
                r.context()
                    .activity
                    .started(ObjectRef::from_obj(&*obj).erase());
                wrapped(obj, r)
            },
            error_policy::<R>,
            reconciler,
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(controller = R::NAME, error = %e, "reconcile loop");
            }
        })
        .await;
}

async fn wrapped<R: Reconciler>(obj: Arc<R::Kind>, r: Arc<R>) -> Result<Action, R::Error> {
    let started = Instant::now();
    let key = ObjectRef::from_obj(&*obj).erase();
    let deleting = obj.meta().deletion_timestamp.is_some();
    let result = r.clone().reconcile(obj).await;
    let ctx = r.context().clone();
    ctx.reconciles
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let next = match result {
        Ok(next) => next,
        Err(e) if e.is_stale() => {
            tracing::debug!(controller = R::NAME, object = %key, step = e.label(), "stale cache; again shortly");
            Some(STALE_RETRY)
        }
        Err(e) => {
            ctx.metrics
                .reconciled(R::NAME, started.elapsed(), Some(e.label()));
            // The error policy finishes the activity (it runs as this future resolves).
            return Err(e);
        }
    };
    ctx.metrics.reconciled(R::NAME, started.elapsed(), None);
    ctx.succeeded(&key);
    ctx.activity.finished(&key, next);
    if deleting && next.is_none() {
        ctx.forget(&key);
        ctx.activity.forget(&key);
    }
    Ok(match next {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

fn error_policy<R: Reconciler>(obj: Arc<R::Kind>, error: &R::Error, r: Arc<R>) -> Action {
    let ctx = r.context();
    let key = ObjectRef::from_obj(&*obj).erase();
    let wait = ctx.backoff(&key);
    tracing::warn!(controller = R::NAME, object = %key, step = error.label(), error = %error, retry_in = ?wait, "reconcile failed");
    ctx.activity.finished(&key, Some(wait));
    Action::requeue(wait)
}

/// Triggers from a controller's own kind: every object as it changes in a way `relevant`
/// tells apart (a hash of what the controller acts on), everything again after a missed
/// change.
pub fn own_changes<K>(
    main: &Shared<K>,
    relevant: impl Fn(&K) -> u64 + Send + 'static,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let store = main.store().clone();
    let mut last: std::collections::HashMap<ObjectRef<K>, u64> = Default::default();
    main.subscribe().flat_map(move |seen| {
        let refs: Vec<ObjectRef<K>> = match seen {
            Seen::Change(super::cache::Change::Applied(obj)) => {
                let r = ObjectRef::from_obj(&*obj);
                let hash = relevant(&obj);
                if last.insert(r.clone(), hash) == Some(hash) {
                    Vec::new()
                } else {
                    vec![r]
                }
            }
            Seen::Change(super::cache::Change::Deleted(obj)) => {
                last.remove(&ObjectRef::from_obj(&*obj));
                Vec::new()
            }
            Seen::Missed => {
                last.clear();
                store
                    .state()
                    .iter()
                    .map(|o| ObjectRef::from_obj(&**o))
                    .collect()
            }
        };
        futures::stream::iter(refs)
    })
}

/// Triggers from another kind: `map` names the objects of `K` a change concerns; after a
/// missed change, every object of `K` in `main`. The echo of the controllers' own write
/// wakes nobody: the reconcile that wrote it went on from there.
pub fn related_changes<K, O>(
    main: &Shared<K>,
    other: &Shared<O>,
    activity: &Arc<super::activity::Activity>,
    map: impl Fn(&O) -> Vec<ObjectRef<K>> + Send + 'static,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    O: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let store = main.store().clone();
    let activity = activity.clone();
    other.subscribe().flat_map(move |seen| {
        let refs = match seen {
            Seen::Change(super::cache::Change::Applied(o)) if activity.is_own_echo(&*o) => {
                Vec::new()
            }
            Seen::Change(super::cache::Change::Applied(o) | super::cache::Change::Deleted(o)) => {
                map(&o)
            }
            Seen::Missed => store
                .state()
                .iter()
                .map(|o| ObjectRef::from_obj(&**o))
                .collect(),
        };
        futures::stream::iter(refs)
    })
}

/// Triggers every object of `main` each time `signal` yields: a change that concerns them
/// all (a new pepper re-keys every record keyward can).
pub fn all_on<K>(
    main: &Shared<K>,
    signal: impl Stream<Item = ()> + Send + 'static,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let store = main.store().clone();
    signal.flat_map(move |()| {
        let refs: Vec<ObjectRef<K>> = store
            .state()
            .iter()
            .map(|o| ObjectRef::from_obj(&**o))
            .collect();
        futures::stream::iter(refs)
    })
}
