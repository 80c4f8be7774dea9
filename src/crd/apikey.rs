//! `ApiKey`: one key, generated (or imported) by keyward, delivered in a Secret and
//! verified against its argon2 hash (DESIGN §3, §4).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, KeyFormat, SecretKeyRef, SecretTemplate, default_secret_key};
use super::rules;

/// An API key managed by keyward: generated from the OS CSPRNG (or imported), delivered in a
/// Secret that workloads mount, and stored for verification only as an argon2id hash.
// Several printer columns share attribute names, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "keyward.dev",
    version = "v1alpha1",
    kind = "ApiKey",
    plural = "apikeys",
    shortname = "ak",
    category = "keyward",
    namespaced,
    status = "ApiKeyStatus",
    doc = "An API key managed by keyward: generated (or imported), delivered in a Secret, verified against its argon2id hash, rotated on a schedule.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Owner", type_ = "string", json_path = ".spec.owner"),
    printcolumn(name = "Preview", type_ = "string", json_path = ".status.preview"),
        // A `string`, not a `date`: apiservers print date columns as ages, and a future
    // instant as `<invalid>`.
    printcolumn(name = "Next Rotation", type_ = "string", json_path = ".status.nextRotationAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.importFrom) && has(self.format))",
        "message": "format applies to generated keys; an imported key keeps the form it has",
    },
    {
        "rule": "!(has(self.importFrom) && has(self.rotation))",
        "message": "an imported key cannot be rotated by keyward: change the source Secret instead, or drop importFrom to let keyward generate keys",
    },
]))]
pub struct ApiKeySpec {
    /// Who the key is for: a customer, team or service. Returned to gateways by the verifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub owner: Option<String>,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// How generated keys look (prefix, length, alphabet, checksum). Changing it rotates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<KeyFormat>,
    /// Name of the workload Secret holding the plain key. Default: the ApiKey's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = rules::dns_subdomain()))]
    pub secret_name: Option<String>,
    /// Data key of the workload Secret that holds the plain key.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = rules::secret_data_key()))]
    pub secret_key: String,
    /// Labels and annotations copied onto the workload Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
    /// Permissions returned to gateways by the verifier (e.g. `read:models`), so they can
    /// authorize per key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    pub scopes: Vec<String>,
    /// `Secret`: the plain key stays in the workload Secret. `ShowOnce`: it stays only until
    /// `keyward reveal` reads it once or `revealWindow` passes; then only the hash exists.
    #[serde(default)]
    pub delivery: Delivery,
    /// With `delivery: ShowOnce`, how long an unrevealed key waits in the Secret. Default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = rules::positive_duration()))]
    pub reveal_window: Option<String>,
    /// Hash and serve an admin-supplied key from a Secret instead of generating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_from: Option<ImportFrom>,
    /// Requests per minute the verifier allows this key (per verifier replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// The verifier refuses the key (code `DISABLED`); the Secret stays, so re-enabling
    /// restores it.
    #[serde(default)]
    pub disabled: bool,
    /// RFC 3339 instant after which the key no longer verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("format" = "date-time"))]
    pub expires_at: Option<String>,
    /// Each key expires this long after it was issued (Go duration, e.g. `720h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = rules::positive_duration()))]
    pub expires_after: Option<String>,
    /// Scheduled rotation with a grace period for the previous key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
    /// `Delete`: the workload Secret goes with the ApiKey. `Retain`: it stays, unowned, and a
    /// new ApiKey of the same name adopts it. The hash record is removed either way.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// How the plain key reaches its user.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Delivery {
    /// The plain key lives in the workload Secret.
    #[default]
    Secret,
    /// The plain key can be read once (`keyward reveal`), then only its hash remains.
    ShowOnce,
}

/// What happens to the workload Secret when the ApiKey is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// The workload Secret is garbage-collected with the ApiKey.
    #[default]
    Delete,
    /// The workload Secret stays, with no ownerReference.
    Retain,
}

/// Where an imported key comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportFrom {
    /// The Secret and data key holding the key to import.
    pub secret_ref: SecretKeyRef,
}

/// Per-key rate limit enforced by the verifier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Requests allowed per minute.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests_per_minute: u32,
}

/// Rotation schedule and what happens around each rotation (DESIGN §4).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.schedule) && has(self.every))",
        "message": "set rotation.schedule or rotation.every, not both",
    },
    {
        "rule": "!has(self.timeZone) || has(self.schedule)",
        "message": "rotation.timeZone applies to rotation.schedule only",
    },
]))]
pub struct Rotation {
    /// 5-field cron expression (minute hour day-of-month month day-of-week).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), extend("x-kubernetes-validations" = rules::cron_schedule()))]
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in, e.g. `Europe/Berlin`. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), extend("x-kubernetes-validations" = rules::time_zone_shape()))]
    pub time_zone: Option<String>,
    /// Rotate this long after the last issue (Go duration, e.g. `720h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = rules::positive_duration()))]
    pub every: Option<String>,
    /// How long the previous key keeps verifying after a rotation. `0s` revokes at once.
    #[serde(default = "default_grace_period")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = rules::non_negative_duration()))]
    pub grace_period: String,
    /// Entries kept in the `keyward.dev/history` annotation.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: u32,
    /// Workloads in this namespace rolled after each rotation so pods pick up the new key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub restart_targets: Vec<RestartTarget>,
}

fn default_grace_period() -> String {
    "1h".to_string()
}

fn default_history_limit() -> u32 {
    10
}

/// A workload rolled after each rotation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartTarget {
    /// Kind of the workload.
    pub kind: RestartKind,
    /// Name of the workload, in the ApiKey's namespace.
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = rules::dns_subdomain()))]
    pub name: String,
}

/// Workload kinds keyward can roll.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestartKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// What keyward last did with the ApiKey. Safe to show anywhere: never a plain key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Advisory` and friends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Stable id (UUID) of the current key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub key_id: Option<String>,
    /// Prefix and lookup id of the current key, e.g. `sk_live_3fK9aQ2m…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub preview: Option<String>,
    /// First 16 hex characters of SHA-256 of the current key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub fingerprint: Option<String>,
    /// The workload Secret holding the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub secret_name: Option<String>,
    /// The hash record, in the hash namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub hash_secret_name: Option<String>,
    /// When the current key was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::optional_timestamp")]
    pub issued_at: Option<Time>,
    /// When the current key stops verifying, if it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::optional_timestamp")]
    pub expires_at: Option<Time>,
    /// When the key was last rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::optional_timestamp")]
    pub last_rotated_at: Option<Time>,
    /// When the next scheduled rotation happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::optional_timestamp")]
    pub next_rotation_at: Option<Time>,
    /// Rotations so far.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub rotation_count: u64,
    /// The last `keyward.dev/rotate` annotation value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub last_rotation_request: Option<String>,
    /// The last `keyward.dev/revoke-previous` annotation value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub last_revocation_request: Option<String>,
    /// With `delivery: ShowOnce`, when the key was revealed (or its window closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::optional_timestamp")]
    pub revealed_at: Option<Time>,
    /// Verifier usage, flushed in batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// Verifier usage of a key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Successful verifications.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub count: u64,
    /// Last successful verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::optional_timestamp")]
    pub last_used_at: Option<Time>,
}
