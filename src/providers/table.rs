//! The providers keyward knows, as data (DESIGN §7): one row each, with the base URL their
//! official SDK uses, the one authenticated read-only request that validates a key without
//! spending anything, how the key is sent, and what the provider offers. Adding a provider
//! is adding a row. Each row cites the provider's own API reference.

use std::collections::BTreeMap;

use crate::crd::{CustomMethod, CustomProvider, Provider};

/// What a provider offers, for the fallback lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    Chat,
    Embeddings,
    Images,
    Video,
    Audio,
    Search,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embeddings => "embeddings",
            Self::Images => "images",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Search => "search",
        }
    }
}

/// The validation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub method: reqwest::Method,
    /// Appended to the base URL.
    pub path: String,
    /// The header that carries the key, and what comes before the key in it.
    pub auth_header: String,
    pub auth_prefix: String,
    /// Other headers the provider requires.
    pub headers: BTreeMap<String, String>,
    /// Statuses that mean the key is valid; empty: any 2xx.
    pub success: Vec<u16>,
    /// Error codes or types (in `error.code`, `error.type`, `error.details.error_code`)
    /// that mean the account is out of credit, whatever the status.
    pub quota_codes: Vec<String>,
    /// Whether the provider documents this request as free; when not, validating needs
    /// `validation.allowPaidRequest: true`.
    pub free: bool,
}

impl Check {
    pub fn succeeded(&self, status: u16) -> bool {
        if self.success.is_empty() {
            (200..300).contains(&status)
        } else {
            self.success.contains(&status)
        }
    }
}

/// One provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub provider: Provider,
    /// The base URL the provider's official SDK uses; `baseURL` replaces it.
    pub base_url: &'static str,
    /// Other hosts the provider documents for its API (its base URL's host is official too).
    pub other_hosts: &'static [&'static str],
    /// How a key is validated; `None` for `custom` (it comes from the spec).
    pub check: Option<Check>,
    pub capabilities: &'static [Capability],
}

fn check(
    path: &str,
    auth_header: &str,
    auth_prefix: &str,
    headers: &[(&str, &str)],
    quota_codes: &[&str],
    free: bool,
) -> Check {
    Check {
        method: reqwest::Method::GET,
        path: path.into(),
        auth_header: auth_header.into(),
        auth_prefix: auth_prefix.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        success: Vec::new(),
        quota_codes: quota_codes.iter().map(|c| c.to_string()).collect(),
        free,
    }
}

const BEARER: (&str, &str) = ("Authorization", "Bearer ");

/// The row of `provider`.
pub fn row(provider: Provider) -> Option<Row> {
    use Capability::*;
    let (auth, prefix) = BEARER;
    Some(match provider {
        // List models: https://developers.openai.com/api/reference/resources/models/methods/list
        // (legacy https://platform.openai.com/docs/api-reference/models/list). Bearer auth and
        // out-of-quota answers (a 429 with `insufficient_quota`; `error.code` one of the
        // spend/credit codes below): https://developers.openai.com/api/docs/guides/error-codes
        Provider::Openai => Row {
            provider,
            base_url: "https://api.openai.com/v1",
            other_hosts: &[],
            check: Some(check(
                "/models",
                auth,
                prefix,
                &[],
                &[
                    "insufficient_quota",
                    "credit_balance_exhausted",
                    "organization_spend_limit_exceeded",
                    "project_spend_limit_exceeded",
                    "organization_usage_limit_exceeded",
                ],
                true,
            )),
            capabilities: &[Chat, Embeddings, Images, Audio, Search],
        },
        // List models: https://platform.claude.com/docs/en/api/models/list; `x-api-key` and the
        // required `anthropic-version`: https://platform.claude.com/docs/en/api/versioning;
        // 402 `billing_error`: https://platform.claude.com/docs/en/api/errors; a 429 with
        // `enforced_spend_limit_reached`: https://platform.claude.com/docs/en/api/rate-limits
        Provider::Anthropic => Row {
            provider,
            base_url: "https://api.anthropic.com",
            other_hosts: &[],
            check: Some(check(
                "/v1/models",
                "x-api-key",
                "",
                &[("anthropic-version", "2023-06-01")],
                &["billing_error", "enforced_spend_limit_reached"],
                true,
            )),
            capabilities: &[Chat, Search],
        },
        // List models (bearer required by the spec's global security):
        // https://docs.mistral.ai/api/endpoint/models; errors:
        // https://docs.mistral.ai/resources/error-glossary
        Provider::Mistral => Row {
            provider,
            base_url: "https://api.mistral.ai",
            other_hosts: &[],
            check: Some(check("/v1/models", auth, prefix, &[], &[], true)),
            capabilities: &[Chat, Embeddings, Audio],
        },
        // Account info, bearer-secured (`GET /models/list` is public and validates
        // nothing): https://api.deepinfra.com/openapi.json (`/v1/me`); auth:
        // https://deepinfra.com/docs/inference
        Provider::Deepinfra => Row {
            provider,
            base_url: "https://api.deepinfra.com",
            other_hosts: &[],
            check: Some(check("/v1/me", auth, prefix, &[], &[], true)),
            capabilities: &[Chat, Embeddings, Images, Audio, Video],
        },
        // `GET /v1/models` is public (`security: []`:
        // https://docs.perplexity.ai/api-reference/models-get), so it cannot validate. The
        // one bearer-secured read is the list of async jobs
        // (https://docs.perplexity.ai/api-reference/async-sonar-get), which the docs do not
        // state to be free: validating a Perplexity key needs allowPaidRequest.
        Provider::Perplexity => Row {
            provider,
            base_url: "https://api.perplexity.ai",
            other_hosts: &[],
            check: Some(check("/v1/async/sonar", auth, prefix, &[], &[], false)),
            capabilities: &[Chat, Search, Embeddings],
        },
        // Organization (tier and credit balance): https://docs.dev.runwayml.com/api/ ; the
        // required `X-Runway-Version`: https://docs.dev.runwayml.com/api-details/versioning/
        Provider::Runway => Row {
            provider,
            base_url: "https://api.dev.runwayml.com",
            other_hosts: &[],
            check: Some(check(
                "/v1/organization",
                auth,
                prefix,
                &[("X-Runway-Version", "2024-11-06")],
                &[],
                true,
            )),
            capabilities: &[Video, Images, Audio],
        },
        // List models, bearer (spec: https://github.com/togethercomputer/openapi); 401 and
        // 402: https://docs.together.ai/docs/error-codes
        Provider::Together => Row {
            provider,
            base_url: "https://api.together.xyz/v1",
            check: Some(check("/models", auth, prefix, &[], &[], true)),
            capabilities: &[Chat, Embeddings, Images, Video, Audio],
            // The OpenAPI spec names this host; the SDKs use api.together.xyz.
            other_hosts: &["api.together.ai"],
        },
        Provider::Custom => return None,
    })
}

impl Row {
    /// The hosts keyward may send this provider's keys to without `--allow-host`.
    pub fn official_hosts(&self) -> Vec<&'static str> {
        let base = self
            .base_url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ':']).next());
        base.into_iter()
            .chain(self.other_hosts.iter().copied())
            .collect()
    }
}

/// The check for a `custom` provider, from its spec.
pub fn custom_check(custom: &CustomProvider) -> Check {
    Check {
        method: match custom.method {
            CustomMethod::GET => reqwest::Method::GET,
            CustomMethod::HEAD => reqwest::Method::HEAD,
        },
        path: custom.path.clone(),
        auth_header: custom.auth_header.clone(),
        auth_prefix: custom.auth_prefix.clone(),
        headers: custom.headers.clone(),
        success: custom.success_statuses.clone(),
        quota_codes: Vec::new(),
        free: true,
    }
}

/// Every provider with a row, in the order of the spec's enum.
pub const KNOWN: [Provider; 7] = [
    Provider::Openai,
    Provider::Anthropic,
    Provider::Mistral,
    Provider::Deepinfra,
    Provider::Perplexity,
    Provider::Runway,
    Provider::Together,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_provider_has_one_read_only_check_on_an_https_base() {
        for p in KNOWN {
            let r = row(p).expect("a row");
            let c = r.check.expect("a check");
            assert_eq!(c.method, reqwest::Method::GET, "{p:?}");
            assert!(c.path.starts_with('/'), "{p:?}");
            assert!(r.base_url.starts_with("https://"), "{p:?}");
            assert!(!r.capabilities.is_empty(), "{p:?}");
        }
        assert!(row(Provider::Custom).is_none());
        assert_eq!(
            row(Provider::Together).expect("row").official_hosts(),
            ["api.together.xyz", "api.together.ai"]
        );
        assert_eq!(
            row(Provider::Openai).expect("row").official_hosts(),
            ["api.openai.com"]
        );
    }

    #[test]
    fn custom_checks_come_from_the_spec() {
        let c = custom_check(&CustomProvider {
            method: CustomMethod::HEAD,
            path: "/health/key".into(),
            auth_header: "X-Key".into(),
            auth_prefix: String::new(),
            headers: [("X-Env".to_string(), "prod".to_string())].into(),
            success_statuses: vec![204],
        });
        assert_eq!(c.method, reqwest::Method::HEAD);
        assert!(c.succeeded(204) && !c.succeeded(200));
    }
}
