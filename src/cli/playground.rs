//! `keyward playground`: keyward with no cluster. Starts the Kubernetes API emulator on
//! loopback, installs the CRDs, runs the controllers, writes a kubeconfig, optionally applies
//! a folder of YAML and summarises what keyward did, then serves until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keyward_emulator::Emulator;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;

use super::signals::Signals;
use crate::apply::{self, Applied};
use crate::clock::SystemClock;
use crate::conditions::Reason;
use crate::controller::{self, Context};
use crate::crd;

use crate::controller::FIELD_MANAGER;

/// The hash namespace of the playground.
pub const HASH_NAMESPACE: &str = "keyward-system";
/// The field manager `--apply` uses, as a person's `kubectl apply` would.
const APPLY_MANAGER: &str = "keyward-playground";

#[derive(clap::Args, Debug)]
pub struct PlaygroundArgs {
    /// Address of the Kubernetes API emulator (default: an ephemeral loopback port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// Address of the verifier (8180, not 8080: kubectl without a kubeconfig falls back to
    /// localhost:8080, and must not reach the verifier).
    #[arg(long, default_value = "127.0.0.1:8180")]
    pub verifier_addr: SocketAddr,
    /// Where to write the kubeconfig for kubectl.
    #[arg(long, default_value = "./playground.kubeconfig")]
    pub kubeconfig: PathBuf,
    /// Apply the YAML files of this folder (or this file) once the API is up.
    #[arg(long, value_name = "DIR")]
    pub apply: Option<PathBuf>,
}

/// Why the playground could not start.
#[derive(Debug, thiserror::Error)]
pub enum PlaygroundError {
    #[error(
        "starting the Kubernetes API emulator on {addr}: {source} (choose another address with --addr)"
    )]
    Emulator {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the emulator's address is not a valid URL: {0}")]
    Url(String),
    #[error("connecting to the emulator: {0}")]
    Client(#[source] kube::Error),
    #[error("installing the CRDs: {0}")]
    InstallCrds(#[source] kube::Error),
    #[error("waiting for the CRDs to be established: {0}")]
    CrdsNotEstablished(String),
    #[error("writing the kubeconfig to {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("applying {0}")]
    Apply(#[from] apply::ApplyError),
    #[error("signal handling: {0}")]
    Signal(#[source] std::io::Error),
    #[error(transparent)]
    Setup(#[from] controller::SetupError),
    #[error(
        "starting the verifier on {addr}: {source} (choose another address with --verifier-addr, e.g. --verifier-addr 127.0.0.1:0 for any free port)"
    )]
    Verifier {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Installs (server-side applies) keyward's CRDs and waits until they are served.
pub async fn install_crds(client: &Client) -> Result<(), PlaygroundError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for definition in crd::crds() {
        let name = definition.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&definition))
            .await
            .map_err(PlaygroundError::InstallCrds)?;
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .map_err(|_| {
                PlaygroundError::CrdsNotEstablished(format!("{name} not established after 30s"))
            })?
            .map_err(|e| PlaygroundError::CrdsNotEstablished(e.to_string()))?;
    }
    Ok(())
}

/// Runs the playground until SIGINT or SIGTERM.
pub async fn run(args: PlaygroundArgs) -> Result<(), PlaygroundError> {
    let started = Instant::now();
    let mut signals = Signals::install().map_err(PlaygroundError::Signal)?;
    let options = keyward_emulator::Options {
        addr: args.addr,
        ..Default::default()
    };
    let emulator =
        Emulator::start_with(options)
            .await
            .map_err(|source| PlaygroundError::Emulator {
                addr: args.addr,
                source,
            })?;
    let url = emulator.url();
    let uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| PlaygroundError::Url(e.to_string()))?;
    let config = Config::new(uri);
    let client = Client::try_from(config).map_err(PlaygroundError::Client)?;
    install_crds(&client).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": HASH_NAMESPACE}});
    namespaces
        .patch(
            HASH_NAMESPACE,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&ns),
        )
        .await
        .map_err(PlaygroundError::Client)?;
    let config = controller::Config {
        hash_namespace: HASH_NAMESPACE.into(),
        instance: "playground".into(),
        // A local sandbox: webhooks and provider baseURLs on loopback are allowed.
        allow_loopback: true,
        ..Default::default()
    };
    let pepper = controller::ensure_pepper(&client, HASH_NAMESPACE).await?;
    let hash_pool = crate::hashing::HashPool::new(config.hash_workers);
    let ctx = Arc::new(Context::with_hash_pool(
        client.clone(),
        config,
        Arc::new(SystemClock),
        pepper,
        hash_pool.clone(),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controllers = tokio::spawn(controller::run_all(ctx, async move {
        let _ = stop_rx.await;
    }));
    let verifier = crate::verifier::start(
        args.verifier_addr,
        client.clone(),
        HASH_NAMESPACE,
        crate::verifier::Options {
            hash_pool: Some(hash_pool),
            ..Default::default()
        },
    )
    .await
    .map_err(|source| PlaygroundError::Verifier {
        addr: args.verifier_addr,
        source,
    })?;
    let verifier_addr = verifier.addr;
    emulator
        .write_kubeconfig(&args.kubeconfig)
        .map_err(|source| PlaygroundError::Kubeconfig {
            path: args.kubeconfig.clone(),
            source,
        })?;
    let applied = match &args.apply {
        Some(dir) => {
            let files = apply::manifest_files(dir)?;
            apply::apply_files(&client, &files, "default", APPLY_MANAGER).await?
        }
        None => Vec::new(),
    };
    // The absolute path, so the export line works from any directory.
    let kubeconfig = std::fs::canonicalize(&args.kubeconfig)
        .unwrap_or_else(|_| args.kubeconfig.clone())
        .display()
        .to_string();
    println!(
        "keyward playground is running (ready in {} ms)",
        started.elapsed().as_millis()
    );
    println!("  Kubernetes API:  {url}  (in-memory emulator; state is lost on exit)");
    println!("  kubeconfig:      {kubeconfig}");
    println!(
        "  verifier:        http://{verifier_addr}  (POST /v1/keys/verify, /verify with Authorization: Bearer KEY)"
    );
    println!("  controllers:     ApiKey, ApiKeyPool (hash records in namespace {HASH_NAMESPACE})");
    if let Some(dir) = &args.apply {
        println!();
        println!("Applied {} ({} objects):", dir.display(), applied.len());
        for line in summary(&client, &applied).await {
            println!("  {line}");
        }
    }
    // After the summary, which waited for each applied object to settle.
    let example = verifiable_apikey(&client, &applied).await;
    println!();
    for line in try_lines(&kubeconfig, verifier_addr, example.as_ref()) {
        println!("{line}");
    }
    println!();
    println!("Press Ctrl-C to stop.");
    signals.recv().await.map_err(PlaygroundError::Signal)?;
    tracing::info!("stopping");
    let _ = stop_tx.send(());
    // Requests in flight finish while the controllers stop; then nothing may keep
    // reconnecting while the emulator drains its connections.
    let (_, _) = tokio::join!(
        verifier.drain(crate::verifier::DRAIN_GRACE),
        tokio::time::timeout(Duration::from_secs(5), controllers)
    );
    emulator.shutdown().await;
    Ok(())
}

/// An applied ApiKey whose key can be read from its Secret: (namespace, name, Secret, data
/// key).
async fn verifiable_apikey(
    client: &Client,
    applied: &[Applied],
) -> Option<(String, String, String, String)> {
    for object in applied.iter().filter(|o| o.kind == "ApiKey") {
        let ns = object.namespace.clone().unwrap_or_else(|| "default".into());
        let Ok(ak) = Api::<crd::ApiKey>::namespaced(client.clone(), &ns)
            .get(&object.name)
            .await
        else {
            continue;
        };
        if ak.spec.delivery == crd::Delivery::ShowOnce {
            continue;
        }
        let secret = ak
            .spec
            .secret_name
            .clone()
            .unwrap_or_else(|| object.name.clone());
        let has_key = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
            .get_opt(&secret)
            .await
            .ok()
            .flatten()
            .and_then(|s| s.data)
            .is_some_and(|d| d.contains_key(&ak.spec.secret_key));
        if has_key {
            return Some((ns, object.name.clone(), secret, ak.spec.secret_key.clone()));
        }
    }
    None
}

/// What to try next, ready to paste: the kubeconfig export, kubectl and keyward commands,
/// and (when `example` names an ApiKey) verifying its key with keyward and with curl, the
/// key piped from its Secret. Never a key.
fn try_lines(
    kubeconfig: &str,
    verifier: SocketAddr,
    example: Option<&(String, String, String, String)>,
) -> Vec<String> {
    let default_verifier: SocketAddr = ([127, 0, 0, 1], 8180).into();
    let url_flag = if verifier == default_verifier {
        String::new()
    } else {
        format!(" --url http://{verifier}")
    };
    let mut lines = vec![
        "Try, in another terminal:".to_string(),
        format!("  export KUBECONFIG={kubeconfig}"),
        "  kubectl get keyward".to_string(),
        "  kubectl apply --server-side -f examples/".to_string(),
        "  keyward status".to_string(),
    ];
    match example {
        Some((ns, name, secret, data_key)) => {
            let n = if ns == "default" {
                String::new()
            } else {
                format!(" -n {ns}")
            };
            let read = format!(
                "kubectl get secret {secret}{n} -o jsonpath='{{.data.{data_key}}}' | base64 -d"
            );
            lines.push(format!("  {read} | keyward verify{url_flag}"));
            lines.push(format!(
                "  printf '{{\"key\":\"%s\"}}' \"$({read})\" | curl -s -d @- http://{verifier}/v1/keys/verify"
            ));
            lines.push(format!("  keyward rotate {name}{n}"));
            lines.push(format!("  keyward history {name}{n}"));
        }
        None => {
            lines.push("  keyward rotate NAME".to_string());
            lines.push("  keyward history NAME".to_string());
        }
    }
    lines
}

/// One line per applied object: what keyward made of it. Never a key.
async fn summary(client: &Client, applied: &[Applied]) -> Vec<String> {
    let mut lines = Vec::new();
    for object in applied {
        let place = match &object.namespace {
            Some(ns) => format!("{ns}/{}", object.name),
            None => object.name.clone(),
        };
        let state = match object.kind.as_str() {
            "ApiKey" => converged_state(client, object).await,
            "ApiKeyPool" => pool_state(client, object).await,
            "ProviderCredential" => provider_state(client, object).await,
            _ => "applied".to_string(),
        };
        lines.push(format!("{:<20} {place:<32} {state}", object.kind));
    }
    lines
}

/// Waits (up to 30 s) until the credential has a verdict for its current spec, then
/// describes it: phase, reason, and the message when not Valid. Never a key.
async fn provider_state(client: &Client, object: &Applied) -> String {
    let Some(ns) = object.namespace.as_deref() else {
        return "applied".into();
    };
    let api: Api<crate::crd::ProviderCredential> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(pc) = api.get(&object.name).await {
            let status = pc.status.clone().unwrap_or_default();
            let settled = status.observed_generation == pc.metadata.generation;
            if (settled && status.phase.is_some()) || Instant::now() >= deadline {
                let Some(phase) = status.phase else {
                    return "not validated yet".into();
                };
                let reason = crate::conditions::ready(&status.conditions)
                    .map(|c| c.reason.clone())
                    .unwrap_or_default();
                let mut text = format!("{phase:?} ({reason})");
                if let Some(m) = status.message.as_deref().filter(|m| !m.is_empty()) {
                    text.push_str(&format!(": {m}"));
                }
                return text;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 30 s) until the pool is full or says why not, then describes it: Ready,
/// keys available of size, and the reason's message when not Ready. Never a key.
async fn pool_state(client: &Client, object: &Applied) -> String {
    let Some(ns) = object.namespace.as_deref() else {
        return "applied".into();
    };
    let api: Api<crate::crd::ApiKeyPool> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(pool) = api.get(&object.name).await {
            let status = pool.status.clone().unwrap_or_default();
            let ready = crate::conditions::ready(&status.conditions);
            let current = status.observed_generation == pool.metadata.generation;
            let settled = current
                && ready.is_some_and(|r| {
                    r.status != crate::crd::ConditionStatus::True
                        || status.available >= pool.spec.size
                });
            if settled || Instant::now() >= deadline {
                return match ready {
                    Some(r) if r.status == crate::crd::ConditionStatus::True => format!(
                        "Ready=True {}  {}/{} keys available",
                        r.reason, status.available, pool.spec.size
                    ),
                    Some(r) => format!("Ready={:?} {}: {}", r.status, r.reason, r.message),
                    None => "not reconciled yet".into(),
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 30 s) until keyward has acted on the object's current generation, then
/// describes the result: Ready, preview, Secret names. Never a key.
async fn converged_state(client: &Client, object: &Applied) -> String {
    let Some(ns) = object.namespace.as_deref() else {
        return "applied".into();
    };
    let api: Api<crate::crd::ApiKey> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(ak) = api.get(&object.name).await {
            let status = ak.status.clone().unwrap_or_default();
            let ready = crate::conditions::ready(&status.conditions);
            let settled = status.observed_generation == ak.metadata.generation
                && ready.is_some_and(|r| Reason::of(r) != Some(Reason::Progressing));
            if settled || Instant::now() >= deadline {
                return match ready {
                    Some(r) => {
                        let mut text = format!("Ready={:?} {}", r.status, r.reason);
                        if let Some(p) = &status.preview {
                            text.push_str(&format!("  preview {p}"));
                        }
                        if let Some(secret) = &status.secret_name {
                            text.push_str(&format!("  Secret {secret}"));
                        }
                        if !matches!(Reason::of(r), Some(Reason::KeyIssued | Reason::Rotated)) {
                            text.push_str(&format!("  ({})", r.message));
                        }
                        text
                    }
                    None => "not reconciled yet".into(),
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_says_what_to_paste_and_never_a_key() {
        let ex = (
            "default".to_string(),
            "billing-api".to_string(),
            "billing-api".to_string(),
            "api-key".to_string(),
        );
        let lines = try_lines(
            "/tmp/pg/playground.kubeconfig",
            ([127, 0, 0, 1], 8180).into(),
            Some(&ex),
        );
        assert!(lines.contains(&"  export KUBECONFIG=/tmp/pg/playground.kubeconfig".to_string()));
        assert!(lines.contains(
            &"  kubectl get secret billing-api -o jsonpath='{.data.api-key}' | base64 -d | keyward verify"
                .to_string()
        ));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("| curl -s -d @- http://127.0.0.1:8180/v1/keys/verify"))
        );
        assert!(lines.contains(&"  keyward history billing-api".to_string()));
        // Another verifier address is passed on; other namespaces are named.
        let ex = ("shop".into(), "k".into(), "k-secret".into(), "token".into());
        let lines = try_lines("/k", ([127, 0, 0, 1], 9999).into(), Some(&ex));
        assert!(lines.iter().any(|l| l.ends_with(
            "kubectl get secret k-secret -n shop -o jsonpath='{.data.token}' | base64 -d | keyward verify --url http://127.0.0.1:9999"
        )));
        // Nothing applied: no curl line.
        let lines = try_lines("/k", ([127, 0, 0, 1], 8180).into(), None);
        assert!(!lines.iter().any(|l| l.contains("curl")));
    }
}
