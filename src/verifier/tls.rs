//! The verifier's optional TLS (`--tls-cert`, `--tls-key`), reloaded when the files change.
//!
//! The files are read again every second and compared by content, so every way a file can
//! change is seen: written in place, renamed over, or swapped with the directory behind a
//! mounted Secret (Kubernetes replaces the `..data` symlink). A new pair that does not load
//! (unreadable, not PEM, key and certificate that do not match) is reported and the old
//! pair keeps serving; cert-manager renewals need no restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// How often the files are read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Why a certificate/key pair did not load.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    #[error("{0}: no PEM private key in it")]
    NoKey(PathBuf),
    #[error("{cert} and {key} do not make a TLS identity: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// Where the pair lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        Ok((read(&self.cert)?, read(&self.key)?))
    }
}

fn digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((cert.len() as u64).to_be_bytes());
    h.update(cert);
    h.update(key);
    h.finalize().into()
}

/// A server configuration from PEM bytes (HTTP/1.1 only, as the verifier serves).
fn config(files: &TlsFiles, cert: &[u8], key: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| TlsError::NoKey(files.key.clone()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|source| TlsError::Pair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The pair being served, replaced when the files change and the new pair loads.
pub struct Reloading {
    files: TlsFiles,
    current: RwLock<(Arc<ServerConfig>, [u8; 32])>,
    /// The last content that failed to load: reported once, not every second.
    failed: RwLock<Option<[u8; 32]>>,
    reloads: AtomicU64,
    failures: AtomicU64,
}

impl Reloading {
    /// Loads the pair; an error when it does not load (nothing to serve yet).
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let (cert, key) = files.read()?;
        let loaded = config(&files, &cert, &key)?;
        Ok(Arc::new(Self {
            current: RwLock::new((loaded, digest(&cert, &key))),
            files,
            failed: RwLock::new(None),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }))
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Pairs loaded after the first.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::SeqCst)
    }

    /// Changed files that did not load (the old pair kept serving).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    /// Reads the files once; swaps the pair when they changed and load.
    pub fn check(&self) {
        let read = self.files.read();
        let (cert, key) = match read {
            Ok(pair) => pair,
            Err(e) => {
                // Mid-swap a file can be missing for a moment: retried next second, and
                // reported once per distinct problem.
                self.failed_once(Some(digest(e.to_string().as_bytes(), b"")), &e);
                return;
            }
        };
        let d = digest(&cert, &key);
        if self.current.read().unwrap_or_else(|p| p.into_inner()).1 == d {
            return;
        }
        if *self.failed.read().unwrap_or_else(|p| p.into_inner()) == Some(d) {
            return;
        }
        match config(&self.files, &cert, &key) {
            Ok(loaded) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (loaded, d);
                *self.failed.write().unwrap_or_else(|p| p.into_inner()) = None;
                self.reloads.fetch_add(1, Ordering::SeqCst);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => self.failed_once(Some(d), &e),
        }
    }

    fn failed_once(&self, content: Option<[u8; 32]>, e: &TlsError) {
        let mut failed = self.failed.write().unwrap_or_else(|p| p.into_inner());
        if *failed == content {
            return;
        }
        *failed = content;
        self.failures.fetch_add(1, Ordering::SeqCst);
        tracing::warn!(error = %e, "TLS files changed but do not load; still serving the previous pair");
    }

    /// Checks the files every [`RELOAD_EVERY`] until the task is dropped.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let this = self.clone();
            // File reads block: off the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || this.check()).await;
        }
    }
}
