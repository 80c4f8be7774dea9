//! `ProviderCredential`: a third-party AI provider key, validated on a schedule with one
//! read-only request (DESIGN §7, seed 004).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, SecretKeyRef};
use super::pool::default_timeout;
use super::rules;

/// A credential for a third-party AI provider, kept in a Secret and validated with one
/// read-only request (never spending credits).
// Several printer columns share attribute names, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "keyward.dev",
    version = "v1alpha1",
    kind = "ProviderCredential",
    plural = "providercredentials",
    shortname = "pcred",
    category = "keyward",
    namespaced,
    status = "ProviderCredentialStatus",
    doc = "A third-party AI provider credential, validated on a schedule with one read-only request.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Last Validated",
        type_ = "date",
        json_path = ".status.lastValidatedAt"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(self.provider == 'custom') == has(self.custom)",
        "message": "spec.custom is required when provider is custom, and only then",
    },
    {
        "rule": "self.provider != 'custom' || has(self.baseURL)",
        "message": "provider custom needs spec.baseURL: there is no official endpoint to default to",
    },
]))]
pub struct ProviderCredentialSpec {
    /// Which provider the key is for.
    pub provider: Provider,
    /// The Secret and data key holding the provider's API key.
    pub secret_ref: SecretKeyRef,
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub display_name: Option<String>,
    /// Override the provider's API base URL (proxies, regional endpoints, tests). Its host
    /// must be an official provider host or allowed by the operator's `--allow-host`.
    #[serde(default, rename = "baseURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), extend("x-kubernetes-validations" = rules::http_url()))]
    pub base_url: Option<String>,
    /// The test request for `provider: custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomProvider>,
    /// How often and how patiently to validate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
    /// Order in the fallback lists of the `keyward-providers` ConfigMap: lower first.
    #[serde(default = "default_priority")]
    pub priority: i32,
}

fn default_priority() -> i32 {
    100
}

/// Providers keyward knows. Each is one row of data in the provider table.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Openai,
    Anthropic,
    Mistral,
    Deepinfra,
    Perplexity,
    Runway,
    Together,
    Custom,
}

/// The read-only test request for a provider keyward does not know.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomProvider {
    /// HTTP method of the test request; it must not spend credits.
    #[serde(default)]
    pub method: CustomMethod,
    /// Path below `baseURL`, e.g. `/v1/models`.
    #[schemars(length(min = 1, max = 2048), extend("x-kubernetes-validations" = [{
        "rule": "self.startsWith('/')",
        "message": "custom.path must start with '/'",
    }]))]
    pub path: String,
    /// Header that carries the key.
    #[serde(default = "default_auth_header")]
    #[schemars(length(min = 1, max = 256))]
    pub auth_header: String,
    /// Text before the key in that header (`Bearer ` by default; empty for raw keys).
    #[serde(default = "default_auth_prefix")]
    #[schemars(length(max = 64))]
    pub auth_prefix: String,
    /// Extra headers sent with the test request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "super::schema::header_map")]
    pub headers: BTreeMap<String, String>,
    /// Statuses that mean the key is valid. Default: any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 100, max = 599)))]
    pub success_statuses: Vec<u16>,
}

fn default_auth_header() -> String {
    "Authorization".to_string()
}

fn default_auth_prefix() -> String {
    "Bearer ".to_string()
}

/// Read-only HTTP methods for a custom test request.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CustomMethod {
    #[default]
    GET,
    HEAD,
}

/// Validation schedule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Validation {
    /// Time between validations; at least 1m.
    #[serde(default = "default_interval")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = rules::interval_at_least_a_minute()))]
    pub interval: String,
    /// How long one validation request may take.
    #[serde(default = "default_timeout")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = rules::positive_duration()))]
    pub timeout: String,
    /// Validate even where the provider documents no free authenticated request (the
    /// request may cost money). Without it such a credential is `NotConfigured`, reason
    /// `NoFreeValidation`, and nothing is sent.
    #[serde(default)]
    pub allow_paid_request: bool,
}

fn default_interval() -> String {
    "1h".to_string()
}

/// The outcome of the last validation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// The provider accepted the key (2xx, or 429: rate limited but genuine).
    Valid,
    /// The provider refused the key (401/403).
    Invalid,
    /// The provider could not be asked (5xx, timeout, DNS or TLS failure).
    Unreachable,
    /// The Secret or its key is missing, or the endpoint is not allowed.
    NotConfigured,
}

/// What the last validation found. Never contains the key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderCredentialStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Advisory`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Outcome of the last validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The last conclusive verdict (`Valid` or `Invalid`), kept while the provider is
    /// unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<Phase>,
    /// The key, masked: at most its first 3 and last 4 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub key_preview: Option<String>,
    /// When the provider last answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::optional_timestamp")]
    pub last_validated_at: Option<Time>,
    /// HTTP status of the last answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub http_status: Option<u16>,
    /// The provider's error code or text. Never the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
    /// The resourceVersion of the Secret the last verdict tested: a verdict for an older
    /// version never replaces one for a newer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub validated_secret_version: Option<String>,
    /// The last value of the annotation `keyward.dev/validate` acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub last_validation_request: Option<String>,
    /// What the provider offers: chat, images, video, search, embeddings, audio.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 32)))]
    pub capabilities: Vec<String>,
}
