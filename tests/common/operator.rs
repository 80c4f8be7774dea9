//! The real controllers, in-process, against an emulator started by the test, or against
//! the cluster of `KEYWARD_TEST_KUBECONFIG` (kind, k3d, any cluster): then each test works
//! in its own namespace (labelled `keyward.dev/test=true`) with controllers scoped to it,
//! and tests that need the emulator's fault hooks or counters say so and skip.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use keyward::clock::SystemClock;
use keyward::controller::{self, Config, Context};
use keyward::crd::ApiKey;
use keyward::record::HashRecord;
use keyward_emulator::Emulator;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const HASH_NS: &str = "keyward-system";

/// How the test's operator is set up.
#[derive(Clone)]
pub struct Setup {
    /// What the controllers read time from.
    pub clock: Arc<dyn keyward::clock::Clock>,
    /// `--namespace` (emulator mode only; on a real cluster it is always the test's own).
    pub namespaces: Vec<String>,
    /// `--hash-workers`.
    pub hash_workers: Option<usize>,
    /// `--allow-host` entries.
    pub allow_hosts: Vec<String>,
    /// Whether loopback hosts are allowed (as in the playground).
    pub allow_loopback: bool,
    /// `--webhook-concurrency`.
    pub webhook_concurrency: Option<usize>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            namespaces: Vec::new(),
            hash_workers: None,
            allow_hosts: Vec::new(),
            allow_loopback: true,
            webhook_concurrency: None,
        }
    }
}

pub struct Operator {
    emulator: Option<Emulator>,
    setup: Setup,
    pub client: Client,
    /// Where this test's objects live.
    pub namespace: String,
    kubeconfig: String,
    ctx: Option<Arc<Context>>,
    clock: Arc<dyn keyward::clock::Clock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Operator {
    /// Emulator + CRDs + hash namespace + controllers.
    pub async fn start() -> Self {
        Self::start_with(Setup::default()).await
    }

    /// The same, with the controllers reading time from `clock`.
    pub async fn start_with_clock(clock: Arc<dyn keyward::clock::Clock>) -> Self {
        Self::start_with(Setup {
            clock,
            ..Setup::default()
        })
        .await
    }

    /// The same, set up as `setup` says.
    pub async fn start_with(setup: Setup) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("KEYWARD_TEST_LOG"))
            .with_test_writer()
            .try_init();
        let (emulator, client, namespace, kubeconfig) =
            match std::env::var("KEYWARD_TEST_KUBECONFIG") {
                Ok(path) => external(&path).await,
                Err(_) => {
                    let emulator = Emulator::start().await.expect("emulator");
                    let client = emulator.client();
                    let kubeconfig = emulator.kubeconfig_yaml("default");
                    (Some(emulator), client, "default".to_string(), kubeconfig)
                }
            };
        keyward::cli::install_crds(&client)
            .await
            .expect("CRDs installed");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for (name, labels) in [
            (HASH_NS, json!({})),
            (namespace.as_str(), json!({"keyward.dev/test": "true"})),
        ] {
            let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}});
            if name != "default" {
                namespaces
                    .patch(
                        name,
                        &PatchParams::apply("keyward-tests"),
                        &Patch::Apply(&ns),
                    )
                    .await
                    .expect("namespace");
            }
        }
        let mut op = Self {
            clock: setup.clock.clone(),
            setup,
            emulator,
            namespace,
            kubeconfig,
            client,
            ctx: None,
            stop: None,
            task: None,
        };
        op.start_controllers().await;
        op
    }

    async fn start_controllers(&mut self) {
        let config = Config {
            hash_namespace: HASH_NS.into(),
            instance: "test".into(),
            namespaces: if self.emulator.is_some() {
                self.setup.namespaces.clone()
            } else {
                vec![self.namespace.clone()]
            },
            hash_workers: self
                .setup
                .hash_workers
                .unwrap_or_else(keyward::hashing::default_workers),
            allow_hosts: self.setup.allow_hosts.clone(),
            allow_loopback: self.setup.allow_loopback,
            webhook_concurrency: self.setup.webhook_concurrency.unwrap_or(4),
            ..Default::default()
        };
        let pepper = controller::ensure_pepper(&self.client, HASH_NS)
            .await
            .expect("pepper");
        let ctx = Arc::new(Context::new(
            self.client.clone(),
            config,
            self.clock.clone(),
            pepper,
        ));
        let (tx, rx) = oneshot::channel::<()>();
        self.task = Some(tokio::spawn(controller::run_all(ctx.clone(), async move {
            let _ = rx.await;
        })));
        self.ctx = Some(ctx);
        self.stop = Some(tx);
    }

    /// Stops the controllers (as a crash or a rollout would).
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// A fresh operator process: new caches, new watches, new context.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_controllers().await;
    }

    /// The emulator's hooks, or `None` (with a note) on a real cluster, which has none.
    pub fn hooks(&self, test: &str) -> Option<&keyward_emulator::Hooks> {
        if self.emulator.is_none() {
            eprintln!(
                "{test}: skipped on a real cluster: needs the emulator's request counters and fault hooks"
            );
        }
        self.emulator.as_ref().map(|e| e.hooks())
    }

    /// Whether this test may change what every operator in the cluster shares (the pepper
    /// Secret of the hash namespace): only on its own emulator; on a real cluster it says
    /// so and the test skips.
    pub fn owns_hash_namespace(&self, test: &str) -> bool {
        if self.emulator.is_none() {
            eprintln!(
                "{test}: skipped on a real cluster: it changes the pepper that every test's operator shares"
            );
        }
        self.emulator.is_some()
    }

    /// The emulator's hooks; only after [`Operator::hooks`] said they exist.
    pub fn h(&self) -> &keyward_emulator::Hooks {
        self.emulator
            .as_ref()
            .expect("emulator mode (checked with hooks())")
            .hooks()
    }

    /// A kubeconfig (YAML) for running the `keyward` binary against this test's namespace.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig.clone()
    }

    /// The controllers' context (activity, metrics, hashing pool).
    pub fn context(&self) -> &Arc<Context> {
        self.ctx.as_ref().expect("controllers running")
    }

    pub fn reconciles(&self) -> u64 {
        self.ctx
            .as_ref()
            .map_or(0, |c| c.reconciles.load(Ordering::SeqCst))
    }

    pub fn apikeys(&self) -> Api<ApiKey> {
        Api::default_namespaced(self.client.clone())
    }

    pub fn pools(&self) -> Api<keyward::crd::ApiKeyPool> {
        Api::default_namespaced(self.client.clone())
    }

    /// Server-side applies an ApiKeyPool in the test's namespace.
    pub async fn apply_pool(&self, name: &str, spec: Value) -> keyward::crd::ApiKeyPool {
        let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPool", "metadata": {"name": name}, "spec": spec});
        self.pools()
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&body),
            )
            .await
            .expect("ApiKeyPool applied")
    }

    /// Polls until the pool satisfies `done`.
    pub async fn wait_pool(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&keyward::crd::ApiKeyPool) -> bool,
    ) -> keyward::crd::ApiKeyPool {
        let pools = self.pools();
        super::eventually(&format!("pool {name}: {what}"), || {
            let pools = pools.clone();
            let done = &done;
            async move {
                pools
                    .get_opt(name)
                    .await
                    .expect("get pool")
                    .filter(|p| done(p))
            }
        })
        .await
    }

    /// Waits until the pool reports `available` keys for its current generation.
    pub async fn wait_pool_full(&self, name: &str, available: u32) -> keyward::crd::ApiKeyPool {
        self.wait_pool(name, &format!("{available} keys available"), |p| {
            p.status.as_ref().is_some_and(|s| {
                s.observed_generation == p.metadata.generation && s.available == available
            })
        })
        .await
    }

    /// The pool's key Secrets (name → key), as the API shows them now.
    pub async fn pool_keys(&self, pool: &str) -> std::collections::BTreeMap<String, String> {
        let list = self
            .secrets()
            .list(&kube::api::ListParams::default().labels(&format!("keyward.dev/pool={pool}")))
            .await
            .expect("list pool keys");
        list.items
            .into_iter()
            .filter_map(|s| {
                let name = s.metadata.name.clone()?;
                let key = s
                    .data?
                    .get("api-key")
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())?;
                Some((name, key))
            })
            .collect()
    }

    /// The pool's hash records, as the API shows them now.
    pub async fn pool_records(&self, pool: &str) -> Vec<keyward::record::SingleUseRecord> {
        let list = self
            .records()
            .list(&kube::api::ListParams::default().labels(&format!(
                "keyward.dev/pool={pool},keyward.dev/namespace={}",
                self.namespace
            )))
            .await
            .expect("list pool records");
        list.items
            .iter()
            .map(|s| keyward::record::SingleUseRecord::from_secret(s).expect("valid record"))
            .collect()
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::default_namespaced(self.client.clone())
    }

    pub fn records(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), HASH_NS)
    }

    /// Creates (server-side applies) an ApiKey in `default`.
    pub async fn apply(&self, name: &str, spec: Value) -> ApiKey {
        let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey", "metadata": {"name": name}, "spec": spec});
        self.apikeys()
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&body),
            )
            .await
            .expect("ApiKey applied")
    }

    /// Polls until `done` holds (for [`super::PATIENCE`] at most).
    pub async fn wait_for(&self, name: &str, what: &str, done: impl Fn(&ApiKey) -> bool) -> ApiKey {
        let mut last = None;
        let deadline = std::time::Instant::now() + super::PATIENCE;
        while std::time::Instant::now() < deadline {
            if let Some(ak) = self.apikeys().get_opt(name).await.expect("get ApiKey") {
                if done(&ak) {
                    return ak;
                }
                last = Some(ak);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "ApiKey {name} never reached {what}; last seen: {:#?}",
            last.map(|a| a.status)
        );
    }

    /// Waits until keyward acted on the current generation with Ready = `reason`.
    pub async fn wait_reason(&self, name: &str, reason: &str) -> ApiKey {
        self.wait_for(name, reason, |ak| {
            let status = ak.status.clone().unwrap_or_default();
            status.observed_generation == ak.metadata.generation
                && keyward::conditions::ready(&status.conditions)
                    .is_some_and(|c| c.reason == reason)
        })
        .await
    }

    pub async fn wait_ready(&self, name: &str) -> ApiKey {
        self.wait_for(name, "Ready=True", |ak| {
            let status = ak.status.clone().unwrap_or_default();
            status.observed_generation == ak.metadata.generation
                && keyward::conditions::ready(&status.conditions)
                    .is_some_and(|c| c.status == keyward::crd::ConditionStatus::True)
        })
        .await
    }

    /// Waits until the controllers are idle: no reconcile running, no trigger waiting, no
    /// requeue due within 10 s, and every write of theirs seen by their watches (30 s at
    /// most). Counts taken after this are not racing a pass still to come.
    pub async fn wait_idle(&self) {
        let activity = self
            .ctx
            .as_ref()
            .expect("controllers running")
            .activity
            .clone();
        let mut busy = Vec::new();
        let deadline = std::time::Instant::now() + super::PATIENCE;
        while std::time::Instant::now() < deadline {
            busy = activity.busy(Duration::from_secs(10));
            if busy.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the controllers never became idle: {busy:#?}");
    }

    /// Waits until the controller's ApiKey watch has delivered `ak`'s resourceVersion: the
    /// watch event of that change has been handed to the controller.
    pub async fn wait_seen(&self, ak: &ApiKey) {
        let activity = self
            .ctx
            .as_ref()
            .expect("controllers running")
            .activity
            .clone();
        let obj = kube::runtime::reflector::ObjectRef::from_obj(ak).erase();
        let version = ak.metadata.resource_version.clone().unwrap_or_default();
        let what = format!("the controller to see {obj} at {version:?}");
        super::eventually(&what, || {
            let seen = activity.has_seen(&obj, &version);
            async move { seen.then_some(()) }
        })
        .await;
    }

    /// The plain key in a Secret's data key.
    pub async fn key_in(&self, secret: &str, data_key: &str) -> Option<String> {
        let s = self.secrets().get_opt(secret).await.expect("get Secret")?;
        s.data.and_then(|d| {
            d.get(data_key)
                .map(|b| String::from_utf8(b.0.clone()).expect("utf-8 key"))
        })
    }

    pub async fn record(&self, ak: &ApiKey) -> Option<HashRecord> {
        let name = keyward::record::name_for(&ak.uid().expect("uid"));
        self.records()
            .get_opt(&name)
            .await
            .expect("get record")
            .map(|s| HashRecord::from_secret(&s).expect("valid record"))
    }
}

/// argon2 for the tests' own checks, on a hashing pool as keyward's are.
pub fn argon2_verify(key: &str, phc: &str) -> bool {
    static POOL: std::sync::OnceLock<keyward::hashing::Caller> = std::sync::OnceLock::new();
    let caller = POOL.get_or_init(|| keyward::hashing::HashPool::new(2).caller("tests", 256));
    let (key, phc) = (key.to_string(), phc.to_string());
    caller
        .run_blocking(move || keyward::keys::argon2_verify(&key, &phc))
        .expect("the tests' hashing pool")
}

/// Whether `key` verifies against a record right now (current, pending, or a previous key
/// inside its grace), by argon2 as any verifier could.
pub fn verifies(record: Option<&HashRecord>, key: &str) -> bool {
    let Some(r) = record else { return false };
    let now = jiff::Timestamp::now();
    r.current
        .iter()
        .chain(r.pending.iter())
        .any(|k| argon2_verify(key, &k.hash))
        || r.previous
            .iter()
            .any(|p| p.valid_until > now && argon2_verify(key, &p.key.hash))
}

impl Operator {
    /// Waits for an Event with this reason and type in the test's namespace.
    pub async fn wait_event(&self, reason: &str, type_: &str) -> k8s_openapi::api::core::v1::Event {
        self.wait_events(reason, type_, 1).await.remove(0)
    }

    /// Waits until there are `n` Events with this reason and type; returns them.
    pub async fn wait_events(
        &self,
        reason: &str,
        type_: &str,
        n: usize,
    ) -> Vec<k8s_openapi::api::core::v1::Event> {
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::default_namespaced(self.client.clone());
        super::eventually(&format!("{n} {type_} Event(s) {reason}"), || {
            let events = events.clone();
            async move {
                let list = events.list(&Default::default()).await.expect("events");
                let found: Vec<_> = list
                    .items
                    .into_iter()
                    .filter(|e| {
                        e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some(type_)
                    })
                    .collect();
                (found.len() >= n).then_some(found)
            }
        })
        .await
    }

    /// Waits until the Secret `name` is gone.
    pub async fn wait_secret_gone(&self, name: &str) {
        let secrets = self.secrets();
        super::eventually(&format!("Secret {name} to be deleted"), || {
            let secrets = secrets.clone();
            async move {
                secrets
                    .get_opt(name)
                    .await
                    .expect("get Secret")
                    .is_none()
                    .then_some(())
            }
        })
        .await;
    }
}

/// A client for the cluster of `path`, with a fresh namespace for this test as its default.
async fn external(path: &str) -> (Option<Emulator>, Client, String, String) {
    let mut kubeconfig =
        kube::config::Kubeconfig::read_from(path).expect("KEYWARD_TEST_KUBECONFIG is readable");
    let namespace = format!(
        "kw-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let current = kubeconfig
        .current_context
        .clone()
        .expect("the kubeconfig names a current context");
    for named in kubeconfig.contexts.iter_mut().filter(|c| c.name == current) {
        if let Some(context) = named.context.as_mut() {
            context.namespace = Some(namespace.clone());
        }
    }
    let yaml = serde_saphyr::to_string(&kubeconfig).expect("kubeconfig serialises");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig is usable");
    let client = Client::try_from(config).expect("client");
    (None, client, namespace, yaml)
}

/// An emulator with keyward's CRDs and the hash namespace, and a kubeconfig file for it:
/// for tests that run the `keyward` binary as the operator.
pub struct Cluster {
    pub emulator: Emulator,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub kubeconfig: std::path::PathBuf,
}

impl Cluster {
    pub async fn start() -> Self {
        let emulator = Emulator::start().await.expect("emulator");
        let client = emulator.client();
        keyward::cli::install_crds(&client).await.expect("CRDs");
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": HASH_NS}})).expect("ns");
        Api::<Namespace>::all(client.clone())
            .create(&Default::default(), &ns)
            .await
            .expect("hash namespace");
        let dir = tempfile::tempdir().expect("dir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, emulator.kubeconfig_yaml("default")).expect("kubeconfig");
        Self {
            emulator,
            client,
            dir,
            kubeconfig,
        }
    }
}

/// A verifier against the test's cluster (usage flushed every 100 ms); its address.
pub async fn start_verifier(op: &Operator, status: u16) -> String {
    verifier(op, status).await.addr.to_string()
}

/// A verifier against the test's cluster, ready; `stop()` ends it.
pub async fn verifier(op: &Operator, status: u16) -> keyward::verifier::Running {
    verifier_with(
        op,
        keyward::verifier::Options {
            rate_limited_status: status,
            ..Default::default()
        },
    )
    .await
}

/// [`verifier`] with these options (usage is flushed every 100 ms whatever they say).
pub async fn verifier_with(
    op: &Operator,
    options: keyward::verifier::Options,
) -> keyward::verifier::Running {
    let usage = keyward::verifier::usage::UsageOptions {
        flush_every: std::time::Duration::from_millis(100),
        writes_per_second: 100,
    };
    let options = keyward::verifier::Options { usage, ..options };
    let running = keyward::verifier::start(
        "127.0.0.1:0".parse().expect("addr"),
        op.client.clone(),
        HASH_NS,
        options,
    )
    .await
    .expect("verifier starts");
    let verifier = running.verifier.clone();
    super::eventually("the verifier's index to sync", || {
        let ready = verifier.is_ready();
        async move { ready.then_some(()) }
    })
    .await;
    running
}

pub fn verify_json(addr: &str, key: &str) -> Value {
    let (code, _, body) = super::http(
        addr,
        "POST",
        "/v1/keys/verify",
        &[("Content-Type", "application/json")],
        &json!({"key": key}).to_string(),
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

/// Polls until the verifier answers `code` for `key` (its index follows a watch).
pub async fn until_code(addr: &str, key: &str, code: &str) -> Value {
    super::eventually(&format!("the verifier to answer {code}"), || async {
        let answer = tokio::task::block_in_place(|| verify_json(addr, key));
        (answer["code"] == code).then_some(answer)
    })
    .await
}
