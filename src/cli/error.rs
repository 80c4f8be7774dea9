//! What can go wrong in a `keyward` command, typed: each variant names the failed step, and
//! its message says in one line what is wrong and, where the user can act, how to fix it.

use std::path::PathBuf;

use super::connect::ConnectError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Playground(#[from] super::playground::PlaygroundError),
    #[error(transparent)]
    Run(#[from] super::run::RunError),
    #[error(transparent)]
    Verifier(#[from] super::verifier::VerifierError),
    #[error(transparent)]
    Verify(#[from] super::verify::VerifyError),
    #[error(transparent)]
    Reveal(#[from] super::reveal::RevealError),
    #[error(transparent)]
    Rotate(#[from] super::rotate::RotateError),
    #[error(transparent)]
    Lookup(#[from] super::lookup::LookupError),
    #[error(transparent)]
    Take(#[from] super::pool::TakeError),
    #[error(transparent)]
    Validate(#[from] super::providers::ValidateError),
    #[error("listing {what}: {source}")]
    List {
        what: &'static str,
        source: kube::Error,
    },
    #[error("writing {what}: {source}")]
    Output {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding the history as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl CliError {
    /// A failure to write to stdout.
    pub fn output(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Output { what, source }
    }

    /// A failure to list objects.
    pub fn list(what: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::List { what, source }
    }
}
