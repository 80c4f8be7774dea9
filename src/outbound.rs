//! The one HTTP client for every outbound call keyward makes besides kube's own: `keyward
//! verify`, pool webhooks, provider validation. rustls with the bundled Mozilla roots (an
//! image needs no CA files), optional extra roots, a timeout on every request, and
//! redirects never followed (a redirect could carry a credential to another host).

use std::time::Duration;

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading the CA file {path}: {source}")]
    CaFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the CA file {0} holds no usable PEM certificate")]
    BadCa(std::path::PathBuf),
    #[error("building the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// A client with `timeout` per request (or each request's own), trusting the bundled roots
/// plus `extra_ca` (PEM).
pub fn client(
    timeout: Option<Duration>,
    extra_ca: Option<&std::path::Path>,
) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(
            timeout
                .unwrap_or(Duration::MAX)
                .min(Duration::from_secs(10)),
        )
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")));
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path).map_err(|source| ClientError::CaFile {
            path: path.into(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|_| ClientError::BadCa(path.into()))?;
        if certs.is_empty() {
            return Err(ClientError::BadCa(path.into()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(ClientError::Build)
}

/// A request error in one line, without the URL's query (which could carry a secret).
pub fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_redirect() {
        "redirected"
    } else if e.is_body() || e.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    let mut text = what.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
