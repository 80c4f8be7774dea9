//! `ApiKeyPool`: a pool of single-use keys kept topped up to `size` (DESIGN §5, seed 000).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, KeyFormat, SecretRef, SecretTemplate};
use super::rules;

/// A pool of single-use keys, each in its own Secret, taken exactly once (oldest first) and
/// replaced as soon as it is taken.
// Several printer columns share attribute names, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "keyward.dev",
    version = "v1alpha1",
    kind = "ApiKeyPool",
    plural = "apikeypools",
    shortname = "akp",
    category = "keyward",
    namespaced,
    status = "ApiKeyPoolStatus",
    doc = "A pool of single-use API keys kept topped up to spec.size; each key is taken exactly once.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Available", type_ = "integer", json_path = ".status.available"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".spec.size"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyPoolSpec {
    /// Number of available keys to keep in the pool.
    #[schemars(range(min = 1, max = 10000))]
    pub size: u32,
    /// How generated keys look (Random generator only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<KeyFormat>,
    /// Labels and annotations copied onto each key Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
    /// Unused keys older than this are replaced (Go duration).
    #[serde(default, rename = "keyTTL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = rules::positive_duration()))]
    pub key_ttl: Option<String>,
    /// Keep a hash of each key so the verifier accepts it exactly once (one-time tokens).
    #[serde(default)]
    pub verification: bool,
    /// With `verification`, how long a taken key stays presentable. Default 24h.
    #[serde(default, rename = "issuedTTL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = rules::positive_duration()))]
    pub issued_ttl: Option<String>,
    /// Where keys come from. Default: generated locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<Generator>,
}

/// Where pool keys come from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(self.type == 'Webhook') == has(self.webhook)",
    "message": "generator.webhook is required when generator.type is Webhook, and only then",
}]))]
pub struct Generator {
    /// `Random` (generated locally from the OS CSPRNG) or `Webhook`.
    #[serde(rename = "type", default)]
    pub type_: GeneratorType,
    /// The HTTP endpoint that mints keys, for `type: Webhook`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookGenerator>,
}

/// Kinds of pool generator.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum GeneratorType {
    #[default]
    Random,
    Webhook,
}

/// An HTTP endpoint that mints a key elsewhere (e.g. signs up at a provider). Its host must
/// be allowed by the operator's `--allow-host`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookGenerator {
    /// The endpoint.
    #[schemars(length(min = 1, max = 2048), extend("x-kubernetes-validations" = rules::http_url()))]
    pub url: String,
    /// HTTP method.
    #[serde(default)]
    pub method: WebhookMethod,
    /// Request headers, one per data key of a Secret (e.g. `Authorization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_from: Option<HeadersFrom>,
    /// Request body, sent as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16384))]
    pub body: Option<String>,
    /// JSON pointer (RFC 6901) to the key in a JSON response, e.g. `/data/key`. Default: the
    /// whole response body, trimmed, is the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^(/([^~]|~[01])*)*$')",
        "message": "keyJsonPointer must be a JSON pointer (RFC 6901): empty, or '/'-separated tokens where '~' is written ~0 and '/' ~1, e.g. /data/key",
    }]))]
    pub key_json_pointer: Option<String>,
    /// How long one request may take.
    #[serde(default = "default_timeout")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = rules::positive_duration()))]
    pub timeout: String,
}

pub(crate) fn default_timeout() -> String {
    "10s".to_string()
}

/// HTTP methods a webhook generator may use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WebhookMethod {
    GET,
    #[default]
    POST,
    PUT,
}

/// Headers taken from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeadersFrom {
    /// Each data key of this Secret becomes a header of that name.
    pub secret_ref: SecretRef,
}

/// The pool as keyward last saw it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyPoolStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Depleted`, `GeneratorFailing`, `Advisory`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Keys ready to be taken.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub available: u32,
    /// The target size last acted on.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub size: u32,
    /// Keys generated since the pool was created.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub generated_total: u64,
    /// Keys taken (or used at the verifier) since the pool was created.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub consumed_total: u64,
    /// Creation time of the oldest available key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::optional_timestamp")]
    pub oldest_key_created_at: Option<Time>,
}
