//! `keyward verifier`: the verifier alone (it scales horizontally; each replica keeps its
//! own index and its own rate-limit buckets).

use std::net::SocketAddr;
use std::time::Duration;

use super::connect::ConnectArgs;
use super::signals::Signals;

#[derive(clap::Args, Debug)]
pub struct VerifierArgs {
    /// Where to listen.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub addr: SocketAddr,
    /// Namespace of the hash records (default: the namespace it runs in).
    #[arg(long, env = "KEYWARD_HASH_NAMESPACE")]
    pub hash_namespace: Option<String>,
    /// HTTP status of rate-limited answers on /verify: 429, or 403 for nginx auth_request.
    #[arg(long, default_value_t = 429, value_parser = super::verifier::rate_limited_status)]
    pub rate_limited_status: u16,
    /// argon2 runs at once (only keys whose fast hash cannot be checked need one).
    /// Default: the number of cores.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub hash_workers: Option<u16>,
    #[command(flatten)]
    pub defences: DefenceArgs,
}

/// How the verifier serves: its defences against the network (DESIGN §6), TLS and usage
/// flushing.
#[derive(clap::Args, Debug, Clone)]
pub struct DefenceArgs {
    /// Time a client has to send a request's head (and a JSON body), from its first byte.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub header_read_timeout: Duration,
    /// A connection with no request in progress closes after this long.
    #[arg(long, default_value = "60s", value_parser = positive_duration)]
    pub idle_timeout: Duration,
    /// Connections open at once; at the limit the oldest idle one closes to make room.
    /// Default: min(4096, half the open-file limit).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: Option<u32>,
    /// `/readyz` fails once the index's watch has been down this long.
    #[arg(long, default_value = "5m", value_parser = positive_duration)]
    pub max_index_age: Duration,
    /// Serve TLS with this PEM certificate (chain); reloaded when the file changes.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert; reloaded when the file changes.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// How often usage counts are added to ApiKey.status.usage.
    #[arg(long, default_value = "60s", value_parser = positive_duration)]
    pub usage_flush_interval: Duration,
    /// Status writes per second at most when flushing usage, across all keys.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub usage_flush_max_writes_per_second: u32,
}

impl DefenceArgs {
    /// Applies the flags to verifier options.
    pub fn apply(&self, options: &mut crate::verifier::Options) {
        options.limits = crate::verifier::server::Limits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self
                .max_connections
                .map_or_else(crate::verifier::server::default_max_connections, |n| {
                    n as usize
                }),
        };
        options.max_index_age = self.max_index_age;
        options.tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::verifier::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        options.usage = crate::verifier::usage::UsageOptions {
            flush_every: self.usage_flush_interval,
            writes_per_second: self.usage_flush_max_writes_per_second,
        };
    }
}

/// Parses a duration flag such as `10s` or `5m`; zero is refused.
pub fn positive_duration(value: &str) -> Result<Duration, String> {
    match crate::duration::parse(value) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses `--rate-limited-status`: 429, or 403 for proxies that only know 2xx/401/403.
pub fn rate_limited_status(value: &str) -> Result<u16, String> {
    match value {
        "429" => Ok(429),
        "403" => Ok(403),
        other => Err(format!("{other:?}: must be 429 or 403")),
    }
}

/// Why `keyward verifier` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Connect(#[from] super::connect::ConnectError),
    #[error("starting the verifier on {addr}: {source} (choose another address with --addr)")]
    Start {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("waiting for a signal: {0}")]
    Signal(#[source] std::io::Error),
}

pub async fn run(args: VerifierArgs, connect: ConnectArgs) -> Result<(), VerifierError> {
    let mut signals = Signals::install().map_err(VerifierError::Signals)?;
    let (client, namespace) = connect.connect(None).await?;
    let hash_namespace = args.hash_namespace.unwrap_or(namespace);
    let workers = args
        .hash_workers
        .map_or_else(crate::hashing::default_workers, usize::from);
    let mut options = crate::verifier::Options {
        rate_limited_status: args.rate_limited_status,
        hash_pool: Some(crate::hashing::HashPool::new(workers)),
        ..Default::default()
    };
    args.defences.apply(&mut options);
    let running = crate::verifier::start(args.addr, client, &hash_namespace, options)
        .await
        .map_err(|source| VerifierError::Start {
            addr: args.addr,
            source,
        })?;
    tracing::info!(addr = %running.addr, hash_namespace = %hash_namespace, "verifier serving");
    signals.recv().await.map_err(VerifierError::Signal)?;
    tracing::info!("draining");
    running.drain(crate::verifier::DRAIN_GRACE).await;
    tracing::info!("stopped");
    Ok(())
}
