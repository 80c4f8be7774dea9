//! The controllers and what they share: the client, configuration, clock, the live peppers
//! (`pepper`, with the task that follows the pepper Secret), Event counter, hashing pool,
//! shared watches (`cache`), the reconcile wrapper (`reconciler`), status, finalizer, Event
//! and Secret writers, and per-object retry backoff.

pub mod activity;
pub mod apikey;
pub mod cache;
pub mod events;
pub mod finalizer;
pub mod leader;
pub mod pepper;
pub mod pool;
pub mod provider;
pub mod reconciler;
pub mod secrets;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;

use self::activity::AnyRef;
use crate::clock::Clock;
use crate::hashing::HashPool;
use crate::keys::Argon2Params;

/// The field manager of every write keyward makes.
pub const FIELD_MANAGER: &str = "keyward";
pub use self::pepper::{PEPPER_KEY, PEPPER_SECRET, Peppers, ensure_pepper};

/// Operator settings (`keyward run` flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where hash records and the pepper live.
    pub hash_namespace: String,
    pub argon2: Argon2Params,
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Identifies this instance in Events.
    pub instance: String,
    /// argon2 runs at once, for the whole process (`--hash-workers`).
    pub hash_workers: usize,
    /// Hosts keyward may send credentials to besides the providers' own (`--allow-host`).
    pub allow_hosts: Vec<String>,
    /// Also allow loopback hosts (the playground).
    pub allow_loopback: bool,
    /// Pool webhook calls in flight at once, for the whole process.
    pub webhook_concurrency: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hash_namespace: "keyward-system".into(),
            argon2: Argon2Params::default(),
            namespaces: Vec::new(),
            instance: "keyward".into(),
            hash_workers: crate::hashing::default_workers(),
            allow_hosts: Vec::new(),
            allow_loopback: false,
            webhook_concurrency: 4,
        }
    }
}

impl Config {
    /// Where the controllers watch.
    pub fn scope(&self) -> cache::Scope {
        cache::Scope {
            namespaces: (!self.namespaces.is_empty()).then(|| self.namespaces.clone()),
            hash_namespace: self.hash_namespace.clone(),
        }
    }
}

/// Errors of the shared setup steps.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("hash namespace {0:?} does not exist: create it or pass --hash-namespace")]
    NoHashNamespace(String),
    #[error("reading or creating the pepper Secret {namespace}/{PEPPER_SECRET}: {source}")]
    Pepper {
        namespace: String,
        source: Box<kube::Error>,
    },
    #[error(
        "the pepper Secret {namespace}/{PEPPER_SECRET} has no {PEPPER_KEY:?} data of at least 32 bytes"
    )]
    BadPepper { namespace: String },
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    #[error("argon2 parameters: {0}")]
    Argon2(#[from] crate::keys::hash::HashError),
    #[error(transparent)]
    AllowHost(#[from] crate::allowlist::BadEntry),
    #[error(transparent)]
    Http(#[from] crate::outbound::ClientError),
}

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    /// The peppers as the pepper task last loaded them: read them at the time of use.
    pub peppers: pepper::Live,
    /// Events recorded so far (part of each Event's name).
    pub events_sent: std::sync::atomic::AtomicU64,
    /// The process's hashing pool; each controller asks through its own caller.
    pub hash_pool: HashPool,
    /// Hosts credentials may be sent to (`--allow-host`, loopback in the playground).
    pub allowlist: crate::allowlist::Allowlist,
    /// The one outbound HTTP client (webhooks, providers); each request sets its timeout.
    pub http: reqwest::Client,
    /// Webhook calls in flight, for the whole process.
    pub webhooks: Arc<tokio::sync::Semaphore>,
    /// Provider validations in flight, for the whole process (DESIGN §7: at most 8).
    pub validations: Arc<tokio::sync::Semaphore>,
    failures: Mutex<HashMap<AnyRef, u32>>,
    /// Reconciles finished, successful or not (metrics, and tests that wait for a pass).
    pub reconciles: std::sync::atomic::AtomicU64,
    /// Prometheus metrics; replace before sharing the Context to use a process-wide set.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What the controllers are doing (idle or not, for tests and benchmarks).
    pub activity: Arc<activity::Activity>,
    /// The last status written per object, with the resourceVersion it was based on: while
    /// the cache still shows that version, the memo is the truth (no second write with a
    /// fresh transition time).
    status_memo: Mutex<status::StatusMemo>,
}

impl Context {
    /// A context with its own hashing pool of `config.hash_workers` threads.
    pub fn new(client: Client, config: Config, clock: Arc<dyn Clock>, peppers: Peppers) -> Self {
        let pool = HashPool::new(config.hash_workers);
        Self::with_hash_pool(client, config, clock, peppers, pool)
    }

    /// A context sharing the process's hashing pool (with the verifier, say).
    pub fn with_hash_pool(
        client: Client,
        config: Config,
        clock: Arc<dyn Clock>,
        peppers: Peppers,
        hash_pool: HashPool,
    ) -> Self {
        // Entries were checked where the configuration was read (`keyward run`).
        let allowlist =
            crate::allowlist::Allowlist::new(&config.allow_hosts, config.allow_loopback)
                .unwrap_or_default();
        let http =
            crate::outbound::client(None, None).expect("an HTTP client with bundled roots builds");
        let webhooks = Arc::new(tokio::sync::Semaphore::new(
            config.webhook_concurrency.max(1),
        ));
        Self {
            allowlist,
            http,
            webhooks,
            validations: Arc::new(tokio::sync::Semaphore::new(provider::MAX_IN_FLIGHT)),
            client,
            config,
            clock,
            peppers: pepper::Live::new(peppers),
            events_sent: std::sync::atomic::AtomicU64::new(0),
            hash_pool,
            failures: Mutex::new(HashMap::new()),
            reconciles: std::sync::atomic::AtomicU64::new(0),
            metrics: Arc::new(crate::metrics::Metrics::default()),
            activity: Arc::new(activity::Activity::default()),
            status_memo: Mutex::new(status::StatusMemo::default()),
        }
    }

    /// Exponential backoff per object: 1s, 2s, 4s … capped at 5 minutes.
    pub fn backoff(&self, key: &AnyRef) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(1u64 << (*n - 1).min(8)).min(Duration::from_secs(300))
    }

    /// The argon2 PHC string of `key` at the configured parameters, computed on the hashing
    /// pool through `caller` (each controller its own caller).
    pub async fn argon2(
        &self,
        caller: &crate::hashing::Caller,
        key: &crate::keys::PlainKey,
    ) -> Result<Result<String, crate::keys::hash::HashError>, crate::hashing::HashPoolError> {
        let params = self.config.argon2;
        let key = key.clone();
        caller
            .run(move || crate::keys::argon2_hash(&key, &params))
            .await
    }

    /// Forgets everything kept about a deleted object.
    pub fn forget(&self, key: &AnyRef) {
        self.succeeded(key);
        self.status_memo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Forgets an object's failures after a successful reconcile.
    pub fn succeeded(&self, key: &AnyRef) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// Tasks aborted when dropped.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Runs every controller until `shutdown` resolves, over watches they share.
pub async fn run_all(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stop = move || {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    };
    let caches = Arc::new(cache::Caches::start(
        &ctx.client,
        &ctx.config.scope(),
        &ctx.activity,
    ));
    ctx.activity.expect_controllers(3);
    // Aborting this future (a crash, in tests) aborts the controllers with it.
    let mut tasks = AbortOnDrop(vec![
        tokio::spawn(apikey::run(ctx.clone(), caches.clone(), stop())),
        tokio::spawn(pool::run(ctx.clone(), caches.clone(), stop())),
        tokio::spawn(provider::run(ctx.clone(), caches.clone(), stop())),
        tokio::spawn(pepper::run(ctx.clone(), caches.clone(), stop())),
    ]);
    shutdown.await;
    let _ = tx.send(true);
    // In-flight reconciles get a moment to finish; every step is crash-safe, so what is
    // still running after that is stopped as a crash would stop it. (kube-runtime 5's
    // applier never finishes a graceful shutdown that arrives before its store's first list
    // completed: it waits for a "store ready" that its cut-off input can no longer bring.)
    for task in &mut tasks.0 {
        if tokio::time::timeout(Duration::from_secs(2), &mut *task)
            .await
            .is_err()
        {
            tracing::info!(
                "a controller was still busy 2s after shutdown; stopping it as a crash would"
            );
            task.abort();
        }
    }
    caches.stop();
}
