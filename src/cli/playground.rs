//! `keyward playground`: keyward with no cluster. Starts the Kubernetes API emulator on
//! loopback, installs the CRDs, runs the controllers, writes a kubeconfig, optionally applies
//! a folder of YAML and summarises what keyward did, then serves until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keyward_emulator::Emulator;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

use crate::apply::{self, Applied};
use crate::crd;

/// The field manager keyward's own writes use.
pub const FIELD_MANAGER: &str = "keyward";
/// The field manager `--apply` uses, as a person's `kubectl apply` would.
const APPLY_MANAGER: &str = "keyward-playground";

#[derive(clap::Args, Debug)]
pub struct PlaygroundArgs {
    /// Address of the Kubernetes API emulator (default: an ephemeral loopback port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// Address of the verifier.
    #[arg(long, default_value = "127.0.0.1:8080")]
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
    #[error("starting the Kubernetes API emulator on {addr}: {source}")]
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
    #[error("waiting for a signal: {0}")]
    Signal(#[source] std::io::Error),
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
    let mut signals = Signals::install()?;
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
    let kubeconfig = args.kubeconfig.display().to_string();
    println!(
        "keyward playground is running (ready in {} ms)",
        started.elapsed().as_millis()
    );
    println!("  Kubernetes API:  {url}  (in-memory emulator; state is lost on exit)");
    println!("  kubeconfig:      {kubeconfig}");
    println!(
        "  verifier:        not started: the verifier is not built yet (--verifier-addr {})",
        args.verifier_addr
    );
    println!("  controllers:     none yet: objects are stored and validated, not reconciled");
    if let Some(dir) = &args.apply {
        println!();
        println!("Applied {} ({} objects):", dir.display(), applied.len());
        for line in summary(&client, &applied).await {
            println!("  {line}");
        }
    }
    println!();
    println!("Try:");
    println!("  kubectl --kubeconfig {kubeconfig} get keyward");
    println!("  kubectl --kubeconfig {kubeconfig} apply --server-side -f examples/");
    println!("  kubectl --kubeconfig {kubeconfig} explain apikey.spec.rotation");
    println!();
    println!("Press Ctrl-C to stop.");
    signals.recv().await?;
    tracing::info!("stopping");
    emulator.shutdown().await;
    Ok(())
}

/// One line per applied object: what keyward made of it. Never a key.
async fn summary(client: &Client, applied: &[Applied]) -> Vec<String> {
    let mut lines = Vec::new();
    for object in applied {
        let place = match &object.namespace {
            Some(ns) => format!("{ns}/{}", object.name),
            None => object.name.clone(),
        };
        let keyward_kind = matches!(
            object.kind.as_str(),
            "ApiKey" | "ApiKeyPool" | "ProviderCredential"
        );
        let state = if keyward_kind {
            match ready_of(client, object).await {
                Some(ready) => ready,
                None => "stored, not reconciled (no controller yet)".to_string(),
            }
        } else {
            "applied".to_string()
        };
        lines.push(format!("{:<20} {place:<40} {state}", object.kind));
    }
    lines
}

/// The Ready condition of a keyward object, if a controller has set one.
async fn ready_of(client: &Client, object: &Applied) -> Option<String> {
    let resource = crd::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == object.kind)
        .map(|c| kube::core::ApiResource {
            group: c.spec.group.clone(),
            version: crd::VERSION.into(),
            api_version: format!("{}/{}", c.spec.group, crd::VERSION),
            kind: c.spec.names.kind.clone(),
            plural: c.spec.names.plural.clone(),
        })?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), object.namespace.as_deref()?, &resource);
    let live = api.get(&object.name).await.ok()?;
    let conditions = live.data["status"]["conditions"].as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    Some(format!(
        "Ready={} ({}: {})",
        ready["status"].as_str().unwrap_or("Unknown"),
        ready["reason"].as_str().unwrap_or_default(),
        ready["message"].as_str().unwrap_or_default()
    ))
}

/// SIGINT and SIGTERM, registered when created: readiness is announced only after this
/// exists, so a signal sent right after the announcement stops the playground cleanly.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, PlaygroundError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).map_err(PlaygroundError::Signal)?,
                terminate: signal(SignalKind::terminate()).map_err(PlaygroundError::Signal)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(&mut self) -> Result<(), PlaygroundError> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
            Ok(())
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c()
            .await
            .map_err(PlaygroundError::Signal)
    }
}
