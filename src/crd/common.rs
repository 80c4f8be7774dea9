//! Types shared by the three kinds: key format, conditions, references and templates.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::rules;

/// How a generated key looks: `<prefix><body><checksum>` (DESIGN §2).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = rules::key_entropy()))]
pub struct KeyFormat {
    /// Fixed text in front of every key, 0–16 characters of letters, digits, `_` and `-`.
    /// Lets people and secret scanners recognise the key (e.g. `sk_live_`).
    #[serde(default = "default_prefix")]
    #[schemars(length(max = 16), extend("x-kubernetes-validations" = rules::prefix()))]
    pub prefix: String,
    /// Number of random characters in the body. The first 8 are a public lookup id, so the
    /// rest must carry at least 128 bits: base62 and base64url need 30 or more, hex 40.
    #[serde(default = "default_length")]
    #[schemars(range(min = 1, max = 256))]
    pub length: u32,
    /// Characters the body is drawn from.
    #[serde(default)]
    pub alphabet: Alphabet,
    /// Append 6 base62 characters of CRC32 over prefix and body, so verifiers reject typos
    /// without a lookup and secret scanners can tell a real key from noise.
    #[serde(default = "default_true")]
    pub checksum: bool,
}

impl Default for KeyFormat {
    fn default() -> Self {
        Self {
            prefix: default_prefix(),
            length: default_length(),
            alphabet: Alphabet::default(),
            checksum: true,
        }
    }
}

fn default_prefix() -> String {
    "kw_".to_string()
}

fn default_length() -> u32 {
    32
}

pub(crate) fn default_true() -> bool {
    true
}

/// The characters a key body is drawn from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Alphabet {
    /// `0-9A-Za-z` (about 5.95 bits a character).
    #[default]
    #[serde(rename = "base62")]
    Base62,
    /// `A-Za-z0-9-_` (6 bits a character).
    #[serde(rename = "base64url")]
    Base64Url,
    /// `0-9a-f` (4 bits a character).
    #[serde(rename = "hex")]
    Hex,
}

/// Labels and annotations copied onto the Secrets keyward writes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Labels added to the Secret (keyward's own labels win on a clash).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "super::schema::label_map")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the Secret (keyward's own annotations win on a clash).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "super::schema::annotation_map")]
    pub annotations: BTreeMap<String, String>,
}

/// A key in a Secret of the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = rules::dns_subdomain()))]
    pub name: String,
    /// Key within the Secret's data.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = rules::secret_data_key()))]
    pub key: String,
}

/// A Secret of the same namespace, as a whole.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = rules::dns_subdomain()))]
    pub name: String,
}

pub(crate) fn default_secret_key() -> String {
    "api-key".to_string()
}

/// Condition status, as in `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// A standard `metav1.Condition`, with the length limits the apiserver applies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type: `Ready`, `Advisory`, or a kind-specific one.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// One CamelCase word saying why.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// What happened, for people.
    #[schemars(length(max = 32768))]
    pub message: String,
    /// When `status` last changed.
    #[schemars(schema_with = "super::schema::timestamp")]
    pub last_transition_time: Time,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}
