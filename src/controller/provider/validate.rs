//! One validation (DESIGN §7): the endpoint first (a host off the allowlist is never sent
//! anything, and the key is not even read), then the key from its Secret (read from the
//! API, never cached), then one request within the process's limit of validations in
//! flight, its answer read up to 64 KiB and classified. The key only travels in the
//! request header.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use reqwest::header::{HeaderName, HeaderValue};

use crate::conditions::Reason;
use crate::controller::Context;
use crate::crd::{Phase, ProviderCredential};
use crate::providers::classify::{self, Answer, Verdict};
use crate::providers::table::{self, Check};
use crate::providers::{endpoint, text};

/// Largest answer read from a provider.
pub const MAX_ANSWER: usize = 64 * 1024;

/// What one validation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tested {
    pub verdict: Verdict,
    /// The key's preview, when the key could be read.
    pub preview: Option<String>,
    /// The resourceVersion of the Secret tested (`None`: it does not exist).
    pub secret_version: Option<String>,
    pub capabilities: Vec<String>,
}

fn not_configured(reason: Reason, message: impl Into<String>) -> Verdict {
    Verdict {
        phase: Phase::NotConfigured,
        reason,
        http_status: None,
        message: message.into(),
        retry_after: None,
    }
}

/// The check and base URL for `pc`, and the hosts its keys may go to.
fn check_of(pc: &ProviderCredential) -> Option<(Check, String, Vec<&'static str>, Vec<String>)> {
    match table::row(pc.spec.provider) {
        Some(row) => Some((
            row.check.clone()?,
            pc.spec
                .base_url
                .clone()
                .unwrap_or_else(|| row.base_url.to_string()),
            row.official_hosts(),
            row.capabilities
                .iter()
                .map(|c| c.as_str().to_string())
                .collect(),
        )),
        None => Some((
            table::custom_check(pc.spec.custom.as_ref()?),
            pc.spec.base_url.clone()?,
            Vec::new(),
            Vec::new(),
        )),
    }
}

/// Validates `pc` once. Errors are only the API's (reading the Secret); every provider
/// outcome is a verdict.
pub async fn validate(ctx: &Context, pc: &ProviderCredential) -> Result<Tested, kube::Error> {
    let Some((check, base, official, capabilities)) = check_of(pc) else {
        return Ok(Tested {
            verdict: not_configured(
                Reason::InvalidSpec,
                "provider custom needs spec.custom and spec.baseURL",
            ),
            preview: None,
            secret_version: None,
            capabilities: Vec::new(),
        });
    };
    let tested = |verdict, preview, secret_version| Tested {
        verdict,
        preview,
        secret_version,
        capabilities: capabilities.clone(),
    };
    let allow_paid = pc
        .spec
        .validation
        .as_ref()
        .is_some_and(|v| v.allow_paid_request);
    if !check.free && !allow_paid {
        return Ok(tested(
            not_configured(
                Reason::NoFreeValidation,
                format!(
                    "{:?} documents no free authenticated request to validate a key with; set spec.validation.allowPaidRequest: true to validate with {} {} (it may cost money)",
                    pc.spec.provider, check.method, check.path
                ),
            ),
            None,
            None,
        ));
    }
    let url = match endpoint::resolve(&ctx.allowlist, &base, &check.path, &official) {
        Ok(url) => url,
        Err(e) => {
            let reason = if e.host_not_allowed() {
                Reason::HostNotAllowed
            } else {
                Reason::InvalidSpec
            };
            return Ok(tested(not_configured(reason, e.to_string()), None, None));
        }
    };
    let ns = pc.namespace().unwrap_or_default();
    let secret_ref = &pc.spec.secret_ref;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(secret) = secrets.get_opt(&secret_ref.name).await? else {
        return Ok(tested(
            not_configured(
                Reason::SecretNotFound,
                format!("Secret {ns}/{} not found", secret_ref.name),
            ),
            None,
            None,
        ));
    };
    let version = secret.meta().resource_version.clone();
    let Some(bytes) = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&secret_ref.key))
        .map(|b| b.0.clone())
    else {
        return Ok(tested(
            not_configured(
                Reason::KeyNotFound,
                format!(
                    "Secret {ns}/{} has no data key {:?}",
                    secret_ref.name, secret_ref.key
                ),
            ),
            None,
            version,
        ));
    };
    let key = match text::key_from_secret(&bytes) {
        Ok(k) => k,
        Err(problem) => {
            return Ok(tested(
                not_configured(
                    Reason::BadKey,
                    format!(
                        "Secret {ns}/{} key {:?}: {problem}",
                        secret_ref.name, secret_ref.key
                    ),
                ),
                None,
                version,
            ));
        }
    };
    let preview = Some(text::preview(&key));
    let timeout: Duration = pc
        .spec
        .validation
        .as_ref()
        .and_then(|v| crate::duration::parse(&v.timeout).ok())
        .unwrap_or(Duration::from_secs(10));
    let mut auth = match HeaderValue::from_str(&format!("{}{}", check.auth_prefix, key.expose())) {
        Ok(v) => v,
        Err(_) => {
            return Ok(tested(
                not_configured(Reason::BadKey, "the key cannot be sent in a header"),
                preview,
                version,
            ));
        }
    };
    auth.set_sensitive(true);
    let Ok(auth_name) = HeaderName::from_bytes(check.auth_header.as_bytes()) else {
        return Ok(tested(
            not_configured(
                Reason::InvalidSpec,
                format!(
                    "custom.authHeader {:?} is not a header name",
                    check.auth_header
                ),
            ),
            preview,
            version,
        ));
    };
    let mut request = ctx
        .http
        .request(check.method.clone(), url)
        .timeout(timeout)
        .header(auth_name, auth);
    for (k, v) in &check.headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let verdict = {
        let _slot = ctx
            .validations
            .acquire()
            .await
            .map_err(|_| kube::Error::Service("shutting down".into()))?;
        send(request, &check, &key, timeout, ctx.clock.now().as_second()).await
    };
    Ok(tested(verdict, preview, version))
}

async fn send(
    request: reqwest::RequestBuilder,
    check: &Check,
    key: &crate::keys::PlainKey,
    timeout: Duration,
    now_unix: i64,
) -> Verdict {
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return classify::no_answer(
                true,
                format!("no answer within {}", crate::duration::format(timeout)),
            );
        }
        Err(e) => {
            return classify::no_answer(false, text::scrub(&crate::outbound::describe(&e), key));
        }
    };
    let status = response.status().as_u16();
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let retry_after = header(reqwest::header::RETRY_AFTER);
    let location_host = header(reqwest::header::LOCATION)
        .and_then(|l| url::Url::parse(&l).ok())
        .and_then(|u| u.host_str().map(str::to_string));
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_ANSWER.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= MAX_ANSWER {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => {
                return classify::no_answer(true, "the answer did not finish in time".into());
            }
            // A cut-off body still has a status worth classifying.
            Err(_) => break,
        }
    }
    classify::classify(
        check,
        Answer {
            status,
            retry_after: retry_after.as_deref(),
            location_host: location_host.as_deref(),
            body: &body,
        },
        key,
        now_unix,
    )
}
