//! `keyward run`: the controllers against a cluster, until SIGINT or SIGTERM.

use std::sync::Arc;

use crate::clock::SystemClock;
use crate::controller::leader::{Elector, LeaseConfig};
use crate::controller::{self, Config, Context};
use crate::keys::Argon2Params;

use super::connect::ConnectArgs;
use super::signals::Signals;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Namespace of the hash records and the pepper (default: the namespace keyward runs in).
    #[arg(long, env = "KEYWARD_HASH_NAMESPACE")]
    pub hash_namespace: Option<String>,
    /// Only watch these namespaces (repeatable); default all.
    #[arg(long = "namespace", short = 'n', value_name = "NAMESPACE")]
    pub namespaces: Vec<String>,
    /// argon2id memory cost in KiB.
    #[arg(long, default_value_t = 19_456)]
    pub argon2_memory_kib: u32,
    /// argon2id iterations.
    #[arg(long, default_value_t = 2)]
    pub argon2_iterations: u32,
    /// argon2id parallelism.
    #[arg(long, default_value_t = 1)]
    pub argon2_parallelism: u32,
    /// argon2 runs at once for the whole process (controllers and verifier); memory stays
    /// at this many × argon2 memory whatever the backlog. Default: the number of cores.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub hash_workers: Option<u16>,
    /// A host keyward may send credentials to, besides the AI providers' official hosts:
    /// provider `baseURL`s and pool webhooks (repeatable; `*.example.com` allows every
    /// host below example.com).
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_hosts: Vec<String>,
    /// Pool webhook calls in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub webhook_concurrency: u16,
    /// Run the controllers only while holding the Lease `keyward-controller`, so several
    /// replicas can run with one active.
    #[arg(long)]
    pub leader_elect: bool,
    /// Also serve the verifier here (it can run alone as `keyward verifier`).
    #[arg(long)]
    pub verifier_addr: Option<std::net::SocketAddr>,
    /// HTTP status of rate-limited answers on /verify: 429, or 403 for nginx auth_request.
    #[arg(long, default_value_t = 429, value_parser = super::verifier::rate_limited_status)]
    pub rate_limited_status: u16,
    #[command(flatten)]
    pub verifier_defences: super::verifier::DefenceArgs,
    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub metrics_addr: std::net::SocketAddr,
    /// Namespace of the leader Lease (default: the hash namespace).
    #[arg(long)]
    pub leader_election_namespace: Option<String>,
    /// This instance's name in Events and its leader-election identity; must differ
    /// between replicas (default: $HOSTNAME, the pod name).
    #[arg(long, env = "HOSTNAME", default_value = "keyward")]
    pub instance: String,
}

/// Why `keyward run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Connect(#[from] super::connect::ConnectError),
    #[error(transparent)]
    Setup(#[from] controller::SetupError),
    #[error("installing signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    #[error("serving metrics on {addr}: {source} (choose another address with --metrics-addr)")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "starting the verifier on {addr}: {source} (choose another address with --verifier-addr)"
    )]
    Verifier {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

pub async fn run(args: RunArgs, connect: ConnectArgs) -> Result<(), RunError> {
    let mut signals = Signals::install().map_err(RunError::Signal)?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bound = super::serve::serve(args.metrics_addr, metrics.clone(), ready.clone())
        .await
        .map_err(|source| RunError::Metrics {
            addr: args.metrics_addr,
            source,
        })?;
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    let (client, namespace) = connect.connect(None).await?;
    let argon2 = Argon2Params {
        memory_kib: args.argon2_memory_kib,
        iterations: args.argon2_iterations,
        parallelism: args.argon2_parallelism,
    };
    argon2.validate().map_err(controller::SetupError::from)?;
    let config = Config {
        hash_namespace: args.hash_namespace.unwrap_or(namespace),
        argon2,
        namespaces: args.namespaces,
        instance: args.instance,
        hash_workers: args
            .hash_workers
            .map_or_else(crate::hashing::default_workers, usize::from),
        allow_hosts: args.allow_hosts,
        allow_loopback: false,
        webhook_concurrency: usize::from(args.webhook_concurrency),
    };
    crate::allowlist::Allowlist::new(&config.allow_hosts, false)
        .map_err(controller::SetupError::from)?;
    let hash_pool = crate::hashing::HashPool::new(config.hash_workers);
    let pepper = controller::ensure_pepper(&client, &config.hash_namespace).await?;
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut verifier = None;
    if let Some(addr) = args.verifier_addr {
        let mut options = crate::verifier::Options {
            rate_limited_status: args.rate_limited_status,
            hash_pool: Some(hash_pool.clone()),
            ..Default::default()
        };
        args.verifier_defences.apply(&mut options);
        let running = crate::verifier::start(addr, client.clone(), &config.hash_namespace, options)
            .await
            .map_err(|source| RunError::Verifier { addr, source })?;
        tracing::info!(verifier = %running.addr, "serving the verifier");
        verifier = Some(running);
    }
    let context = {
        let metrics = metrics.clone();
        let client = client.clone();
        let config = config.clone();
        move |peppers: controller::Peppers| {
            let mut ctx = Context::with_hash_pool(
                client.clone(),
                config.clone(),
                Arc::new(SystemClock),
                peppers,
                hash_pool.clone(),
            );
            ctx.metrics = metrics.clone();
            Arc::new(ctx)
        }
    };
    // One signal ends everything: the election, the current term, the process.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The verifier drains beside the controllers' shutdown: `/readyz` fails at once and
    // requests in flight finish.
    let drained = tokio::spawn(async move {
        let _ = signals.recv().await;
        let _ = stop_tx.send(true);
        if let Some(v) = verifier {
            v.drain(crate::verifier::DRAIN_GRACE).await;
        }
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let outcome: Result<(), RunError> = async {
        if !args.leader_elect {
            tracing::info!(hash_namespace = %config.hash_namespace, pepper = %pepper.current.id(), "keyward controllers starting");
            metrics.set_leader(true);
            controller::run_all(context(pepper), stopped()).await;
            tracing::info!("stopped");
            return Ok(());
        }
        let lease_ns = args
            .leader_election_namespace
            .unwrap_or_else(|| config.hash_namespace.clone());
        let elector = Arc::new(Elector::new(
            client.clone(),
            LeaseConfig::new(&lease_ns, &config.instance),
        ));
        loop {
            tracing::info!(identity = %config.instance, lease = %format!("{lease_ns}/keyward-controller"), "waiting to become the leader");
            tokio::select! {
                _ = elector.acquire() => {}
                _ = stopped() => {
                    tracing::info!("stopped");
                    return Ok(());
                }
            }
            tracing::info!(identity = %config.instance, "became the leader; controllers starting");
            // The pepper may have changed while another replica led: start from what the Secret
            // holds now, as that replica left it.
            let peppers = match controller::ensure_pepper(&client, &config.hash_namespace).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the pepper Secret; starting from the peppers read at start-up");
                    pepper.clone()
                }
            };
            let ctx = context(peppers);
            metrics.set_leader(true);
            let term = elector.clone();
            let stop = stopped();
            let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<bool>();
            controller::run_all(ctx, async move {
                let signalled = tokio::select! {
                    _ = stop => true,
                    _ = term.keep() => false,
                };
                let _ = lost_tx.send(signalled);
            })
            .await;
            metrics.set_leader(false);
            if lost_rx.await.unwrap_or(true) {
                elector.release().await;
                tracing::info!("released the leader Lease; stopped");
                return Ok(());
            }
            tracing::warn!("lost the leader Lease; controllers stopped, campaigning again");
        }
    }
    .await;
    if outcome.is_ok() {
        let _ = drained.await;
    } else {
        drained.abort();
    }
    outcome
}
