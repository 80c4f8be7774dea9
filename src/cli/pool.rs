//! `keyward pool take` and `keyward pool status` (DESIGN §5, seed 000's flow).
//!
//! Taking a key, exactly once and oldest first: list the pool's key Secrets (metadata
//! only), then for the oldest (ties by name) GET it and DELETE it under preconditions on
//! its uid and resourceVersion. Only one caller's DELETE can succeed; a 404 or 409 means
//! another taker (or keyward) won, so move on to the next-oldest.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::core::PartialObjectMeta;

use crate::conditions;
use crate::controller::pool::build::key_of;
use crate::crd::{ApiKeyPool, annotations, labels};
use crate::keys::PlainKey;

/// Why no key was taken.
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    #[error("pool empty: ApiKeyPool {namespace}/{pool} has no key to take right now")]
    Empty { namespace: String, pool: String },
    #[error("ApiKeyPool {namespace}/{pool} not found")]
    NoPool { namespace: String, pool: String },
    #[error("{step}: {source}")]
    Kube {
        step: &'static str,
        source: Box<kube::Error>,
    },
}

fn kube_err(step: &'static str) -> impl FnOnce(kube::Error) -> TakeError {
    move |source| TakeError::Kube {
        step,
        source: Box::new(source),
    }
}

/// The pool's key Secrets, oldest first (ties by name), as metadata.
async fn candidates(
    client: &kube::Client,
    namespace: &str,
    pool: &str,
) -> Result<Vec<PartialObjectMeta<Secret>>, TakeError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "{}={},{}={pool}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_VALUE,
        labels::POOL
    );
    let mut keys: Vec<PartialObjectMeta<Secret>> = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_err("listing the pool's keys"))?
        .items
        .into_iter()
        .filter(|m| m.labels().get(labels::ROLE).is_none())
        .collect();
    let created = |m: &PartialObjectMeta<Secret>| {
        m.annotations()
            .get(annotations::CREATED_AT)
            .cloned()
            .unwrap_or_default()
    };
    keys.sort_by_key(|m| (created(m), m.name_any()));
    Ok(keys)
}

/// Takes the oldest key of `pool`: it is deleted from the pool and returned.
pub async fn take(
    client: &kube::Client,
    namespace: &str,
    pool: &str,
) -> Result<PlainKey, TakeError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for candidate in candidates(client, namespace, pool).await? {
        let name = candidate.name_any();
        let Some(secret) = api
            .get_opt(&name)
            .await
            .map_err(kube_err("reading a pool key"))?
        else {
            continue;
        };
        let Some(key) = key_of(&secret) else {
            continue;
        };
        let guarded = DeleteParams {
            preconditions: Some(Preconditions {
                uid: secret.uid(),
                resource_version: secret.resource_version(),
            }),
            ..Default::default()
        };
        match api.delete(&name, &guarded).await {
            Ok(_) => return Ok(key),
            // Another taker (or keyward) got there first: the next-oldest.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => continue,
            Err(e) => return Err(kube_err("taking a pool key")(e)),
        }
    }
    let pools: Api<ApiKeyPool> = Api::namespaced(client.clone(), namespace);
    match pools.get_opt(pool).await {
        Ok(None) => Err(TakeError::NoPool {
            namespace: namespace.into(),
            pool: pool.into(),
        }),
        _ => Err(TakeError::Empty {
            namespace: namespace.into(),
            pool: pool.into(),
        }),
    }
}

/// `keyward pool status`: one row per pool.
pub fn table(pools: &[ApiKeyPool], all_namespaces: bool) -> String {
    let mut header = vec![
        "NAME",
        "READY",
        "AVAILABLE",
        "SIZE",
        "GENERATED",
        "CONSUMED",
        "OLDEST KEY",
    ];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for p in pools {
        let status = p.status.clone().unwrap_or_default();
        let ready = conditions::ready(&status.conditions)
            .map(|c| format!("{:?} ({})", c.status, c.reason))
            .unwrap_or_else(|| "Unknown".into());
        let mut row = vec![
            p.name_any(),
            ready,
            status.available.to_string(),
            p.spec.size.to_string(),
            status.generated_total.to_string(),
            status.consumed_total.to_string(),
            status
                .oldest_key_created_at
                .map(|t| crate::clock::rfc3339(t.0))
                .unwrap_or_else(|| "-".into()),
        ];
        if all_namespaces {
            row.insert(0, p.namespace().unwrap_or_default());
        }
        rows.push(row);
    }
    super::table::render(&rows)
}

/// The pools to show: one by name, the namespace's, or every namespace's.
pub async fn list(
    client: &kube::Client,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<Vec<ApiKeyPool>, kube::Error> {
    let api: Api<ApiKeyPool> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut items = match name {
        Some(n) => vec![api.get(n).await?],
        None => api.list(&ListParams::default()).await?.items,
    };
    items.sort_by_key(|p| (p.namespace(), p.name_any()));
    Ok(items)
}
