//! The ApiKeyPool controller (DESIGN §5): keeps `size` single-use keys available, each in
//! its own Secret, topped up as soon as one is taken; with `verification`, a hash record
//! per key that the verifier consumes exactly once.
//!
//! One pass: [`observe`] (from the caches) → [`plan`] (pure) → [`apply`] (records moved
//! forward, keys removed, keys generated: record *pending* → key Secret → record
//! *available*) → again until nothing is left to do → [`status`] (coalesced).

pub mod apply;
pub mod build;
pub mod observe;
pub mod plan;
pub mod status;
pub mod webhook;

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;

use super::Context;
use super::activity::AnyRef;
use super::cache::Caches;
use super::reconciler::{self, Failure, Next, Reconciler, is_conflict};
use crate::crd::{ApiKeyPool, labels};
use crate::hashing::{Caller, HashPoolError};

/// The finalizer of pools with `verification`: their records live in the hash namespace.
pub const FINALIZER: &str = "keyward.dev/pool-records";
/// Keys hashed at once for one pool's top-up (the hashing pool bounds the process).
const HASH_QUEUE: usize = 1024;

/// What failed, named by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the ApiKeyPool has no namespace or uid")]
    NoIdentity,
    #[error("{step}: {source}")]
    Kube {
        step: &'static str,
        source: Box<kube::Error>,
    },
    #[error("stale cache: {0}")]
    Stale(&'static str),
    #[error("hashing a key: {0}")]
    Hash(#[from] crate::keys::hash::HashError),
    #[error("hashing pool: {0}")]
    Hashing(HashPoolError),
    #[error("no randomness from the operating system")]
    Random,
}

impl Failure for Error {
    fn label(&self) -> &'static str {
        match self {
            Self::NoIdentity => "identity",
            Self::Kube { step, .. } => step,
            Self::Stale(_) => "stale cache",
            Self::Hash(_) | Self::Hashing(_) => "hash",
            Self::Random => "random",
        }
    }

    fn is_stale(&self) -> bool {
        matches!(self, Self::Stale(_))
    }
}

/// Maps a failed call to its step; a 409 on a guarded write means a stale cache.
pub fn stale_or(step: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| {
        if is_conflict(&source) {
            Error::Stale(step)
        } else {
            Error::Kube {
                step,
                source: Box::new(source),
            }
        }
    }
}

/// The generator's recent failures, for backoff and the `GeneratorFailing` condition.
#[derive(Debug, Clone, Default)]
pub struct GeneratorState {
    pub failures: u32,
    pub message: Option<String>,
    pub host_not_allowed: bool,
    pub retry_at: Option<Instant>,
}

/// What this process remembers about one pool between passes.
#[derive(Debug, Default)]
pub struct Memo {
    /// Counters were read from the status once.
    pub initialized: bool,
    pub generated: u64,
    pub consumed: u64,
    /// Key names seen in the pool at the end of the last pass.
    pub known: HashSet<String>,
    /// Key names keyward deleted (expired, surplus, consumed), until the cache drops them.
    pub deleted_by_us: HashSet<String>,
    /// Suffixes whose key Secret create failed (their pending records are discarded).
    pub failed_creates: HashSet<String>,
    /// Objects written in the last pass: the next waits until the cache shows them.
    pub written: Vec<AnyRef>,
    pub last_status_write: Option<Instant>,
    pub depleted_since: Option<Instant>,
    pub generator: GeneratorState,
}

/// The ApiKeyPool controller.
pub struct Pools {
    pub ctx: Arc<Context>,
    pub caches: Arc<Caches>,
    pub hashing: Caller,
    memos: Mutex<HashMap<ObjectRef<ApiKeyPool>, Arc<tokio::sync::Mutex<Memo>>>>,
}

impl Pools {
    fn memo(&self, pool: &ApiKeyPool) -> Arc<tokio::sync::Mutex<Memo>> {
        self.memos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(ObjectRef::from_obj(pool))
            .or_default()
            .clone()
    }

    fn forget(&self, pool: &ApiKeyPool) {
        self.memos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ObjectRef::from_obj(pool));
    }
}

fn relevant_change(pool: &ApiKeyPool) -> u64 {
    let mut h = DefaultHasher::new();
    pool.metadata.generation.hash(&mut h);
    pool.metadata.deletion_timestamp.is_some().hash(&mut h);
    h.finish()
}

/// The pool a keyward Secret belongs to: a key Secret, or a pool record.
fn pool_of(secret: &Secret) -> Vec<ObjectRef<ApiKeyPool>> {
    super::cache::owner_by_label(secret, labels::POOL)
}

/// Pools whose webhook reads its headers from this Secret (pools are few: a scan).
fn reading_headers(
    pools: &kube::runtime::reflector::Store<ApiKeyPool>,
    meta: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<ApiKeyPool>> {
    let (ns, name) = (meta.namespace().unwrap_or_default(), meta.name_any());
    pools
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| {
            p.spec
                .generator
                .as_ref()
                .and_then(|g| g.webhook.as_ref())
                .and_then(|w| w.headers_from.as_ref())
                .is_some_and(|h| h.secret_ref.name == name)
        })
        .map(|p| ObjectRef::from_obj(&**p))
        .collect()
}

/// Runs the pool controller until `shutdown`.
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
    let pools = caches.pools.store().clone();
    let triggers = futures::stream::select_all([
        reconciler::own_changes(&caches.pools, relevant_change).boxed(),
        reconciler::related_changes(&caches.pools, &caches.managed, &activity, pool_of).boxed(),
        reconciler::related_changes(&caches.pools, &caches.secret_meta, &activity, move |m| {
            reading_headers(&pools, m)
        })
        .boxed(),
        // A new pepper: records of keys still in the pool are re-keyed from their Secrets.
        reconciler::all_on(&caches.pools, ctx.peppers.changes()).boxed(),
    ]);
    let controller = Arc::new(Pools {
        hashing: ctx.hash_pool.caller("pool", HASH_QUEUE),
        ctx,
        caches: caches.clone(),
        memos: Mutex::new(HashMap::new()),
    });
    reconciler::run(controller, &caches.pools, triggers, shutdown).await;
}

impl Reconciler for Pools {
    type Kind = ApiKeyPool;
    type Error = Error;
    const NAME: &'static str = "pool";

    fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    async fn reconcile(self: Arc<Self>, pool: Arc<ApiKeyPool>) -> Result<Next, Error> {
        if pool.metadata.deletion_timestamp.is_some() {
            self.cleanup(&pool).await?;
            self.forget(&pool);
            return Ok(None);
        }
        let memo = self.memo(&pool);
        let mut memo = memo.lock().await;
        if pool.spec.verification {
            super::finalizer::ensure(&self.ctx, &*pool, FINALIZER)
                .await
                .map_err(finalizer_err("adding the finalizer"))?;
        }
        let mut wake = None;
        let mut counts = status::Counts::default();
        let problem = status::spec_problem(&pool);
        // Each round carries out one plan; a top-up of thousands takes a few rounds.
        for _ in 0..8 {
            let (observed, snapshot) = self.observe(&pool, &mut memo).await?;
            let plan = plan::decide(&observed);
            tracing::debug!(pool = %pool.name_any(), create = plan.create, removals = plan.removals.len(), records = plan.records.len(), "decided");
            wake = plan.wake_at;
            counts = status::Counts {
                available: plan.available,
                oldest: observed.keys.first().map(|k| k.created_at),
            };
            if !plan.writes() || problem.is_some() {
                memo.known = observed.keys.iter().map(|k| k.name.clone()).collect();
                memo.consumed += plan.taken;
                break;
            }
            let progressed = self
                .carry_out(&pool, &observed, &snapshot, &plan, &mut memo)
                .await?;
            if !progressed {
                break;
            }
        }
        let status_wake = self.write_status(&pool, counts, &mut memo).await?;
        let now = self.ctx.clock.now();
        let mut next: Option<Duration> = wake.map(|t| {
            let wait = t.duration_since(now).unsigned_abs();
            Duration::from_millis(wait.as_millis().min(u64::MAX as u128) as u64)
                + Duration::from_millis(5)
        });
        for extra in [
            status_wake,
            memo.generator
                .retry_at
                .map(|t| t.saturating_duration_since(Instant::now())),
        ]
        .into_iter()
        .flatten()
        {
            next = Some(next.map_or(extra, |n| n.min(extra)));
        }
        Ok(next)
    }
}

/// As [`stale_or`] for the finalizer's JSON patches, whose `test` fails with 422.
fn finalizer_err(step: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| match &source {
        kube::Error::Api(s) if s.code == 409 || s.code == 422 => Error::Stale(step),
        _ => Error::Kube {
            step,
            source: Box::new(source),
        },
    }
}
