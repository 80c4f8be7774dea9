//! `keyward status`: the namespace's ApiKeys as a table (seed 003's key listing).

use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::conditions;
use crate::crd::ApiKey;

/// One row per ApiKey: name, owner, preview, ready, issued, next rotation, usage.
pub fn table(apikeys: &[ApiKey], all_namespaces: bool) -> String {
    let mut rows = vec![{
        let mut h = vec![
            "NAME",
            "OWNER",
            "PREVIEW",
            "READY",
            "ISSUED",
            "NEXT ROTATION",
            "USAGE",
        ];
        if all_namespaces {
            h.insert(0, "NAMESPACE");
        }
        h.into_iter().map(String::from).collect::<Vec<_>>()
    }];
    for ak in apikeys {
        let status = ak.status.clone().unwrap_or_default();
        let ready = conditions::ready(&status.conditions)
            .map(|c| format!("{:?} ({})", c.status, c.reason))
            .unwrap_or_else(|| "Unknown".into());
        let time = |t: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            t.map(|t| crate::clock::rfc3339(t.0))
                .unwrap_or_else(|| "-".into())
        };
        let mut row = vec![
            ak.name_any(),
            ak.spec.owner.clone().unwrap_or_else(|| "-".into()),
            status.preview.clone().unwrap_or_else(|| "-".into()),
            ready,
            time(status.issued_at.clone()),
            time(status.next_rotation_at.clone()),
            status
                .usage
                .as_ref()
                .map_or_else(|| "0".into(), |u| u.count.to_string()),
        ];
        if all_namespaces {
            row.insert(0, ak.namespace().unwrap_or_default());
        }
        rows.push(row);
    }
    super::table::render(&rows)
}

pub async fn list(
    client: &kube::Client,
    namespace: Option<&str>,
) -> Result<Vec<ApiKey>, kube::Error> {
    let api: Api<ApiKey> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut items = api.list(&ListParams::default()).await?.items;
    items.sort_by_key(|a| (a.namespace(), a.name_any()));
    Ok(items)
}
