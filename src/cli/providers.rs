//! `keyward validate NAME` and `keyward providers` (DESIGN §7, seed 004's "test this key"
//! button and provider dashboard).

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::crd::{Phase, ProviderCredential, annotations};

/// How long `keyward validate` waits for the verdict.
pub const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("ProviderCredential {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error(
        "no verdict for ProviderCredential {namespace}/{name} within 30s: is keyward running (keyward run, or the playground)?"
    )]
    NoVerdict { namespace: String, name: String },
    #[error("{step}: {source}")]
    Kube {
        step: &'static str,
        source: Box<kube::Error>,
    },
}

fn kube_err(step: &'static str) -> impl FnOnce(kube::Error) -> ValidateError {
    move |source| ValidateError::Kube {
        step,
        source: Box::new(source),
    }
}

/// Asks for a validation now (a new `keyward.dev/validate` value) and waits for its verdict.
pub async fn validate(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<ProviderCredential, ValidateError> {
    let api: Api<ProviderCredential> = Api::namespaced(client.clone(), namespace);
    let missing = || ValidateError::NotFound {
        namespace: namespace.into(),
        name: name.into(),
    };
    api.get_opt(name)
        .await
        .map_err(kube_err("reading the ProviderCredential"))?
        .ok_or_else(missing)?;
    let value = jiff::Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {annotations::VALIDATE: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_err("requesting the validation"))?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let pc = api
            .get_opt(name)
            .await
            .map_err(kube_err("reading the verdict"))?
            .ok_or_else(missing)?;
        let done = pc
            .status
            .as_ref()
            .is_some_and(|s| s.last_validation_request.as_deref() == Some(value.as_str()));
        if done {
            return Ok(pc);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ValidateError::NoVerdict {
                namespace: namespace.into(),
                name: name.into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One line for a verdict: phase, HTTP status, message.
pub fn describe(pc: &ProviderCredential) -> String {
    let s = pc.status.clone().unwrap_or_default();
    let phase = s
        .phase
        .map(|p| format!("{p:?}"))
        .unwrap_or("Unknown".into());
    let reason = crate::conditions::ready(&s.conditions)
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    let mut out = format!(
        "{}/{}: {phase} ({reason})",
        pc.namespace().unwrap_or_default(),
        pc.name_any()
    );
    if let Some(code) = s.http_status {
        out.push_str(&format!(", HTTP {code}"));
    }
    if let Some(m) = s.message.as_deref().filter(|m| !m.is_empty()) {
        out.push_str(&format!(": {m}"));
    }
    out
}

/// Whether the verdict is `Valid` (the exit status of `keyward validate`).
pub fn is_valid(pc: &ProviderCredential) -> bool {
    pc.status.as_ref().and_then(|s| s.phase) == Some(Phase::Valid)
}

/// The credentials to show: the namespace's, or every namespace's.
pub async fn list(
    client: &kube::Client,
    namespace: Option<&str>,
) -> Result<Vec<ProviderCredential>, kube::Error> {
    let api: Api<ProviderCredential> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut items = api.list(&ListParams::default()).await?.items;
    items.sort_by_key(|p| (p.namespace(), p.spec.priority, p.name_any()));
    Ok(items)
}

/// The dashboard: display name, provider, phase, masked key, last validated, capabilities.
pub fn table(items: &[ProviderCredential], all_namespaces: bool) -> String {
    let mut header = vec![
        "NAME",
        "DISPLAY NAME",
        "PROVIDER",
        "PHASE",
        "KEY",
        "LAST VALIDATED",
        "CAPABILITIES",
    ];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for pc in items {
        let s = pc.status.clone().unwrap_or_default();
        let provider = serde_json::to_value(pc.spec.provider)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut row = vec![
            pc.name_any(),
            pc.spec.display_name.clone().unwrap_or_else(|| "-".into()),
            provider,
            s.phase
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(|| "Pending".into()),
            s.key_preview.clone().unwrap_or_else(|| "-".into()),
            s.last_validated_at
                .map(|t| crate::clock::rfc3339(t.0))
                .unwrap_or_else(|| "-".into()),
            if s.capabilities.is_empty() {
                "-".into()
            } else {
                s.capabilities.join(",")
            },
        ];
        if all_namespaces {
            row.insert(0, pc.namespace().unwrap_or_default());
        }
        rows.push(row);
    }
    super::table::render(&rows)
}
