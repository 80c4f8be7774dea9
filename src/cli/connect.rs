//! Kubeconfig and context resolution shared by the commands that talk to a cluster:
//! `--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`, else in-cluster.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Flags every cluster command takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// Path to the kubeconfig file.
    #[arg(long, global = true, env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
}

/// `-n/--namespace` of the commands that act on one namespace.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NamespaceArg {
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("reading kubeconfig {path}: {source}")]
    Read {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("using kubeconfig: {0}")]
    Config(#[from] kube::config::KubeconfigError),
    #[error(
        "no cluster configured: no kubeconfig ($KUBECONFIG, ~/.kube/config) and not running in a pod; start `keyward playground` and `export KUBECONFIG=$PWD/playground.kubeconfig`, or pass --kubeconfig PATH"
    )]
    Infer(#[source] kube::config::InferConfigError),
    #[error("creating the client: {0}")]
    Client(#[from] kube::Error),
}

impl ConnectArgs {
    /// A client and the namespace commands act in (`namespace`, else the context's).
    pub async fn connect(&self, namespace: Option<&str>) -> Result<(Client, String), ConnectError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|source| ConnectError::Read {
                        path: path.clone(),
                        source,
                    })?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await?
            }
            None if self.context.is_some() => Config::from_kubeconfig(&options).await?,
            None => Config::infer().await.map_err(ConnectError::Infer)?,
        };
        let namespace = namespace
            .map(String::from)
            .unwrap_or_else(|| config.default_namespace.clone());
        Ok((Client::try_from(config)?, namespace))
    }
}
