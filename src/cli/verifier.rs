//! `keyward verifier`: the verifier alone (it scales horizontally; each replica keeps its
//! own index and its own rate-limit buckets).

use std::net::SocketAddr;

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
}

/// Parses `--rate-limited-status`: 429, or 403 for proxies that only know 2xx/401/403.
pub fn rate_limited_status(value: &str) -> Result<u16, String> {
    match value {
        "429" => Ok(429),
        "403" => Ok(403),
        other => Err(format!("{other:?}: must be 429 or 403")),
    }
}

pub async fn run(args: VerifierArgs, connect: ConnectArgs) -> Result<(), String> {
    let mut signals = Signals::install().map_err(|e| format!("installing signal handlers: {e}"))?;
    let (client, namespace) = connect.connect(None).await.map_err(|e| e.to_string())?;
    let hash_namespace = args.hash_namespace.unwrap_or(namespace);
    let workers = args
        .hash_workers
        .map_or_else(crate::hashing::default_workers, usize::from);
    let options = crate::verifier::Options {
        rate_limited_status: args.rate_limited_status,
        hash_pool: Some(crate::hashing::HashPool::new(workers)),
        ..Default::default()
    };
    let running = crate::verifier::start(args.addr, client, &hash_namespace, options)
        .await
        .map_err(|e| format!("starting the verifier on {}: {e}", args.addr))?;
    tracing::info!(addr = %running.addr, hash_namespace = %hash_namespace, "verifier serving");
    signals
        .recv()
        .await
        .map_err(|e| format!("waiting for a signal: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}
