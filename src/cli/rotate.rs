//! `keyward rotate NAME [--revoke-previous]` and `keyward history NAME [-o json]` (seed 003's
//! manage-key script, made declarative): rotation is requested through the ApiKey's
//! annotations, so it works the same when the annotation is committed to git.

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::lookup::{self, LookupError};
use crate::crd::{ApiKey, annotations};
use crate::history::{self, Entry};

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("{step}: {source}")]
    Kube {
        step: &'static str,
        source: Box<kube::Error>,
    },
}

fn kube_err(step: &'static str) -> impl FnOnce(kube::Error) -> RotateError {
    move |source| RotateError::Kube {
        step,
        source: Box::new(source),
    }
}

/// A value no earlier request used: the time, to the nanosecond.
fn request_value() -> String {
    jiff::Timestamp::now().to_string()
}

/// Sets `keyward.dev/rotate` (and `keyward.dev/revoke-previous`) to a new value; returns it.
pub async fn request(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    revoke_previous: bool,
) -> Result<String, RotateError> {
    lookup::apikey(client, namespace, name).await?;
    let api: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
    let value = request_value();
    let mut wanted = serde_json::Map::new();
    wanted.insert(annotations::ROTATE.into(), json!(value));
    if revoke_previous {
        wanted.insert(annotations::REVOKE_PREVIOUS.into(), json!(value));
    }
    let patch = json!({"metadata": {"annotations": wanted}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_err("requesting the rotation"))?;
    Ok(value)
}

/// The history of an ApiKey's keys, oldest first.
pub async fn history(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<Entry>, LookupError> {
    let (_, secret) = lookup::with_secret(client, namespace, name).await?;
    Ok(history::parse(
        secret
            .annotations()
            .get(annotations::HISTORY)
            .map(String::as_str),
    ))
}

/// The history as a table.
pub fn history_table(entries: &[Entry]) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        [
            "AT",
            "ACTION",
            "REASON",
            "FINGERPRINT",
            "PREVIEW",
            "PREVIOUS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for e in entries {
        rows.push(vec![
            e.at.to_string(),
            format!("{:?}", e.action),
            e.reason.to_string(),
            e.fingerprint.clone(),
            e.preview.clone(),
            e.previous_fingerprint.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    super::table::render(&rows)
}
