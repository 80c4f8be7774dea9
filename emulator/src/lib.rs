//! An in-memory Kubernetes API emulator, served over HTTP on loopback, for keyward's tests and
//! `keyward playground` (DESIGN §9). It exists because no kube-apiserver can run on the
//! machines keyward is built on; it must behave like one wherever keyward or kubectl depend
//! on it, and never agree with whatever a client sends.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let emulator = keyward_emulator::Emulator::start().await?;
//! println!("serving on {}", emulator.url());
//! emulator.write_kubeconfig(std::path::Path::new("test.kubeconfig"))?;
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod discovery;
pub mod error;
mod events;
pub mod faults;
mod http;
pub mod kinds;
mod limits;
mod names;
mod patch;
mod protobuf;
pub mod resources;
pub mod schema;
pub mod selectors;
pub mod ssa;
pub mod store;
mod table;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use faults::{Fault, FaultAction, FaultKind, Hooks, RandomFaults, Recorded};
pub use store::Store;

/// Tunables of an emulator instance.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen; port 0 picks a free one.
    pub addr: SocketAddr,
    /// Changes kept for watches that resume from an older resourceVersion; older ones get
    /// 410 Gone.
    pub history: usize,
    /// How long changes stay in that history: a watch from a version older than what is
    /// kept gets 410 Gone, as after etcd's periodic compaction.
    pub watch_window: Duration,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// Faults at random from the start (see [`Hooks::set_random_faults`]).
    pub faults: Option<RandomFaults>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            history: 10_000,
            watch_window: store::DEFAULT_WATCH_WINDOW,
            bookmark_interval: Duration::from_secs(5),
            faults: None,
        }
    }
}

/// A running emulator.
pub struct Emulator {
    shared: Arc<http::Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Starts an emulator on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// Starts an emulator with the given options.
    pub async fn start_with(options: Options) -> std::io::Result<Self> {
        let listener = TcpListener::bind(options.addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(http::Shared {
            store: Store::with_watch_window(options.history, options.watch_window),
            hooks: {
                let hooks = Hooks::default();
                hooks.set_random_faults(options.faults.clone());
                hooks
            },
            bookmark_interval: options.bookmark_interval,
            server_address: addr.to_string(),
        });
        let router = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "emulator server stopped");
            }
        });
        Ok(Self {
            shared,
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Fault injection, request counters and watch dropping.
    pub fn hooks(&self) -> &Hooks {
        &self.shared.hooks
    }

    /// The object store, for tests that inspect state without a client.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// A kube-rs client for this emulator (namespace `default`).
    #[cfg(feature = "client")]
    pub fn client(&self) -> kube::Client {
        let uri = self
            .url()
            .parse()
            .expect("the emulator's URL is a valid URI");
        kube::Client::try_from(kube::Config::new(uri)).expect("a plain-HTTP client always builds")
    }

    /// A kubeconfig that points kubectl and kube-rs at this emulator.
    pub fn kubeconfig_yaml(&self, namespace: &str) -> String {
        self.kubeconfig(namespace, "{}")
    }

    /// A kubeconfig whose requests the emulator's request log attributes to `user` (sent as
    /// the bearer token; the emulator does not authenticate, so any name works).
    pub fn kubeconfig_yaml_as(&self, namespace: &str, user: &str) -> String {
        self.kubeconfig(namespace, &format!("\n    token: {user}"))
    }

    fn kubeconfig(&self, namespace: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: keyward-emulator\n  cluster:\n    server: {url}\ncontexts:\n- name: keyward-emulator\n  context:\n    cluster: keyward-emulator\n    user: keyward-emulator\n    namespace: {namespace}\ncurrent-context: keyward-emulator\nusers:\n- name: keyward-emulator\n  user: {user}\npreferences: {{}}\n",
            url = self.url()
        )
    }

    /// Writes [`Self::kubeconfig_yaml`] to `path` (namespace `default`).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml("default"))
    }

    /// Stops serving: open watches and hung requests end, then the listener closes.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        self.shared.hooks.begin_shutdown();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.hooks.begin_shutdown();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
