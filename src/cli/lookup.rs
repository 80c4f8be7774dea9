//! Finding an ApiKey and the workload Secret it delivers to, for the commands that read it.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::crd::ApiKey;

/// Why the ApiKey or its Secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("ApiKey {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("ApiKey {0} has no key yet: wait until it is Ready")]
    NotIssued(String),
    #[error("{step}: {source}")]
    Kube {
        step: &'static str,
        source: Box<kube::Error>,
    },
}

fn kube_err(step: &'static str) -> impl FnOnce(kube::Error) -> LookupError {
    move |source| LookupError::Kube {
        step,
        source: Box::new(source),
    }
}

/// The ApiKey.
pub async fn apikey(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<ApiKey, LookupError> {
    Api::<ApiKey>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(kube_err("reading the ApiKey"))?
        .ok_or_else(|| LookupError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        })
}

/// The ApiKey and its workload Secret (from `status.secretName`).
pub async fn with_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<(ApiKey, Secret), LookupError> {
    let ak = apikey(client, namespace, name).await?;
    let secret_name = ak
        .status
        .as_ref()
        .and_then(|s| s.secret_name.clone())
        .ok_or_else(|| LookupError::NotIssued(name.into()))?;
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(&secret_name)
        .await
        .map_err(kube_err("reading the workload Secret"))?
        .ok_or_else(|| LookupError::NotIssued(name.into()))?;
    Ok((ak, secret))
}
