//! `keyward reveal NAME`: print a ShowOnce key once, then empty its Secret so only the hash
//! remains (DESIGN §3, seeds 001/002).

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::lookup::{self, LookupError};
use crate::clock::rfc3339;
use crate::controller::apikey::REVEALED_AT;
use crate::controller::secrets::pointer_escape;
use crate::crd::Delivery;
use crate::keys::PlainKey;

/// Why a key could not be revealed.
#[derive(Debug, thiserror::Error)]
pub enum RevealError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("ApiKey {0} uses delivery: Secret; its key stays in Secret {1} (read it there)")]
    NotShowOnce(String, String),
    #[error("ApiKey {0} has no key yet: wait until it is Ready")]
    NotIssued(String),
    #[error(
        "the key of ApiKey {name} was already revealed (or its window closed) at {at}; only its hash remains. Rotate it to get a new key: keyward rotate {name}"
    )]
    AlreadyRevealed { name: String, at: String },
    #[error(
        "someone else revealed or changed the key of ApiKey {0} at the same moment; nothing was printed"
    )]
    Raced(String),
    #[error("{step}: {source}")]
    Kube {
        step: &'static str,
        source: Box<kube::Error>,
    },
}

/// Reads the key and empties the Secret in one guarded write; returns the key only if this
/// caller's write won.
pub async fn reveal(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<PlainKey, RevealError> {
    let kube_err = |step: &'static str| {
        move |source| RevealError::Kube {
            step,
            source: Box::new(source),
        }
    };
    let (ak, secret) = lookup::with_secret(client, namespace, name).await?;
    let secret_name = secret.name_any();
    if ak.spec.delivery != Delivery::ShowOnce {
        return Err(RevealError::NotShowOnce(name.into(), secret_name));
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let key = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&ak.spec.secret_key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|k| !k.is_empty())
        .map(PlainKey::new);
    let Some(key) = key else {
        return Err(match secret.annotations().get(REVEALED_AT) {
            Some(at) => RevealError::AlreadyRevealed {
                name: name.into(),
                at: at.clone(),
            },
            None => RevealError::NotIssued(name.into()),
        });
    };
    let ops = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": secret.resource_version()},
        {"op": "remove", "path": format!("/data/{}", pointer_escape(&ak.spec.secret_key))},
                {"op": "add", "path": format!("/metadata/annotations/{}", pointer_escape(REVEALED_AT)), "value": rfc3339(jiff::Timestamp::now())},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(ops).expect("static JSON patch");
    match secrets
        .patch(
            &secret_name,
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(_) => Ok(key),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => {
            Err(RevealError::Raced(name.into()))
        }
        Err(e) => Err(kube_err("emptying the Secret")(e)),
    }
}
