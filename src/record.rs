//! The hash record: a Secret in the hash namespace, one per ApiKey (`apikey-<uid>`), holding
//! everything the verifier needs and no plain key (DESIGN §3, §4). The operator writes it;
//! the verifier only reads it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::crd::{KeyFormat, labels};
use crate::history::Entry;

/// Secret type of hash records.
pub const SECRET_TYPE: &str = "keyward.dev/key-hash";
/// The data key holding the whole record as JSON.
pub const RECORD_KEY: &str = "record";

/// The hash record name for an ApiKey uid.
pub fn name_for(uid: &str) -> String {
    format!("apikey-{uid}")
}

/// One key as the verifier knows it: hashes and public facts only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeyHash {
    /// Stable UUID of this key.
    pub key_id: String,
    /// argon2id PHC string.
    pub hash: String,
    /// HMAC-SHA256 under the pepper, hex.
    pub fast_hash: String,
    /// Which pepper `fast_hash` was computed with.
    pub pepper_id: String,
    /// The public lookup id (generated keys); imported keys have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup_id: Option<String>,
    pub fingerprint: String,
    pub preview: String,
    pub issued_at: Timestamp,
    /// The key stops verifying then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub imported: bool,
    /// An imported key below the entropy floor (the `WeakKey` advisory).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub weak: bool,
}

/// A key replaced by a rotation, valid until its own grace ends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PreviousKey {
    #[serde(flatten)]
    pub key: KeyHash,
    pub valid_until: Timestamp,
}

/// What the verifier returns to gateways and enforces, copied from the ApiKey's spec.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Access {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
}

/// Rotation bookkeeping, written in the same update as the promotion it records, so a crash
/// never rotates twice (DESIGN §4).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RotationState {
    #[serde(default)]
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_revocation: Option<String>,
}

/// The Secret an imported key was read from, at the version it was read: while the source
/// shows that version, the key has not changed and need not be read again.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImportSource {
    pub name: String,
    pub key: String,
    pub resource_version: String,
}

/// A restart target as keyward last found it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestartState {
    /// The fingerprint of the key it was last rolled for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_for: Option<String>,
    /// It did not exist when last looked at.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
}

/// Which ApiKey a record serves.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The whole record.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HashRecord {
    pub apikey: Owner,
    /// How presented keys of this record look (generated keys only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<KeyFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<KeyHash>,
    /// A key written here before it is delivered; the verifier already accepts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<KeyHash>,
    /// The rotate request (annotation value) the pending key answers, recorded as consumed
    /// when it is promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_request: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<PreviousKey>,
    #[serde(default)]
    pub access: Access,
    #[serde(default)]
    pub rotation: RotationState,
    /// The history, mirrored from the workload Secret's annotation so it survives the loss
    /// of that Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Entry>,
    /// Where the current imported key was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_source: Option<ImportSource>,
    /// Restart targets (`Deployment/web`) and what keyward last did to them, so a
    /// converged key needs no read of any workload.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub restarts: BTreeMap<String, RestartState>,
}

/// Where a single-use record is in its life (DESIGN §5). It only moves forward.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub enum UseState {
    /// Written before the key Secret exists.
    Pending,
    /// The key Secret exists; nobody has taken it.
    Available,
    /// The key Secret is gone: someone took the key.
    Taken,
    /// The key was presented once at a verifier; every later presentation is refused.
    Consumed,
}

/// The hash record of one pool key (`pool-<pool uid>-<suffix>`): written by the operator
/// and, to consume it, by the verifier; always updated under a resourceVersion precondition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SingleUseRecord {
    pub pool: Owner,
    /// The suffix shared with the key Secret `<pool>-<suffix>`.
    pub suffix: String,
    /// How presented keys look (generated keys); keys from a webhook have no structure and
    /// are found by their keyed fast hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<KeyFormat>,
    pub key: KeyHash,
    pub state: UseState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed_at: Option<Timestamp>,
    /// How long a key stays presentable once it left the pool (`issuedTTL`).
    #[serde(with = "seconds")]
    pub issued_ttl: std::time::Duration,
}

mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        u64::deserialize(d).map(std::time::Duration::from_secs)
    }
}

impl SingleUseRecord {
    /// When the key stops verifying and the record goes: `issuedTTL` after it left the
    /// pool (taken, or consumed first); `None` while it is still in the pool.
    pub fn expires_at(&self) -> Option<Timestamp> {
        let start = match (self.taken_at, self.consumed_at) {
            (Some(t), Some(c)) => t.min(c),
            (t, c) => t.or(c)?,
        };
        let ttl = jiff::SignedDuration::try_from(self.issued_ttl).ok()?;
        start.checked_add(ttl).ok()
    }

    /// The record Secret's name.
    pub fn name(&self) -> String {
        pool_record_name(&self.pool.uid, &self.suffix)
    }

    /// Reads a record from its Secret.
    pub fn from_secret(secret: &Secret) -> Result<Self, RecordError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(RECORD_KEY))
            .ok_or_else(|| RecordError::Missing { name: name.clone() })?;
        serde_json::from_slice(&bytes.0).map_err(|source| RecordError::Invalid { name, source })
    }

    /// The record Secret (without resourceVersion: callers set the one they update over).
    pub fn to_secret(&self, hash_namespace: &str) -> Secret {
        let mut data = BTreeMap::new();
        let json = serde_json::to_vec(self).expect("a record always serialises");
        data.insert(RECORD_KEY.to_string(), ByteString(json));
        data.insert(
            "hash".into(),
            ByteString(self.key.hash.clone().into_bytes()),
        );
        data.insert(
            "fast-hash".into(),
            ByteString(self.key.fast_hash.clone().into_bytes()),
        );
        data.insert(
            "fingerprint".into(),
            ByteString(self.key.fingerprint.clone().into_bytes()),
        );
        if let Some(lookup) = &self.key.lookup_id {
            data.insert("lookup-id".into(), ByteString(lookup.clone().into_bytes()));
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name()),
                namespace: Some(hash_namespace.to_string()),
                labels: Some(pool_record_labels(&self.pool)),
                ..Default::default()
            },
            type_: Some(SECRET_TYPE.to_string()),
            data: Some(data),
            ..Default::default()
        }
    }
}

/// The record name of pool key `suffix` of the pool with `pool_uid`.
pub fn pool_record_name(pool_uid: &str, suffix: &str) -> String {
    format!("pool-{pool_uid}-{suffix}")
}

/// Labels of a pool key's record Secret.
pub fn pool_record_labels(pool: &Owner) -> BTreeMap<String, String> {
    let mut l = hash_record_labels(labels::POOL, pool);
    l.insert(labels::SINGLE_USE.to_string(), "true".to_string());
    l
}

/// Why a record Secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("hash record {name} has no {RECORD_KEY:?} data")]
    Missing { name: String },
    #[error("hash record {name} is not valid JSON: {source}")]
    Invalid {
        name: String,
        source: serde_json::Error,
    },
}

impl HashRecord {
    /// Reads a record from its Secret.
    pub fn from_secret(secret: &Secret) -> Result<Self, RecordError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(RECORD_KEY))
            .ok_or_else(|| RecordError::Missing { name: name.clone() })?;
        serde_json::from_slice(&bytes.0).map_err(|source| RecordError::Invalid { name, source })
    }

    /// The data of the record Secret: the JSON record plus the fields DESIGN §3 names, for
    /// people and other tools.
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        let json = serde_json::to_vec(self).expect("a record always serialises");
        data.insert(RECORD_KEY.to_string(), ByteString(json));
        if let Some(current) = &self.current {
            data.insert("hash".into(), ByteString(current.hash.clone().into_bytes()));
            data.insert(
                "fast-hash".into(),
                ByteString(current.fast_hash.clone().into_bytes()),
            );
            data.insert(
                "fingerprint".into(),
                ByteString(current.fingerprint.clone().into_bytes()),
            );
            if let Some(lookup) = &current.lookup_id {
                data.insert("lookup-id".into(), ByteString(lookup.clone().into_bytes()));
            }
        }
        data
    }

    /// The full record Secret for the hash namespace.
    pub fn to_secret(&self, hash_namespace: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name_for(&self.apikey.uid)),
                namespace: Some(hash_namespace.to_string()),
                labels: Some(record_labels(&self.apikey)),
                ..Default::default()
            },
            type_: Some(SECRET_TYPE.to_string()),
            data: Some(self.to_data()),
            ..Default::default()
        }
    }
}

/// The pepper ids a record Secret's fast hashes were made under: the current, pending and
/// previous keys of an ApiKey's record, the key of a pool record. An unreadable record
/// names none.
pub fn pepper_ids(secret: &Secret) -> Vec<String> {
    // Only the ids are read, so one shape serves both kinds of record.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Named {
        pepper_id: String,
    }
    #[derive(Deserialize)]
    struct Keys {
        #[serde(default)]
        current: Option<Named>,
        #[serde(default)]
        pending: Option<Named>,
        #[serde(default)]
        previous: Vec<Named>,
        #[serde(default)]
        key: Option<Named>,
    }
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(RECORD_KEY)) else {
        return Vec::new();
    };
    let Ok(keys) = serde_json::from_slice::<Keys>(&bytes.0) else {
        return Vec::new();
    };
    keys.current
        .into_iter()
        .chain(keys.pending)
        .chain(keys.previous)
        .chain(keys.key)
        .map(|n| n.pepper_id)
        .collect()
}

/// Labels of a record Secret.
pub fn record_labels(owner: &Owner) -> BTreeMap<String, String> {
    hash_record_labels(labels::APIKEY, owner)
}

/// The labels every hash record carries: keyward's, the hash role, its owner by
/// `owner_label` and the owner's namespace.
fn hash_record_labels(owner_label: &str, owner: &Owner) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
        (labels::ROLE.to_string(), labels::ROLE_HASH.to_string()),
        (owner_label.to_string(), owner.name.clone()),
        (labels::NAMESPACE.to_string(), owner.namespace.clone()),
    ])
}

/// What the pepper Secret holds, as far as keyward can use it (values shorter than
/// [`MIN_PEPPER_BYTES`](crate::keys::pepper_secret::MIN_PEPPER_BYTES) count as absent).
#[derive(Debug, Clone, Default)]
pub struct StoredPeppers {
    pub pepper: Option<crate::keys::Pepper>,
    pub previous: Option<crate::keys::Pepper>,
}

impl StoredPeppers {
    pub fn of(secret: &Secret) -> Self {
        let read = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .filter(|b| b.0.len() >= crate::keys::pepper_secret::MIN_PEPPER_BYTES)
                .map(|b| crate::keys::Pepper::new(b.0.clone()))
        };
        Self {
            pepper: read(crate::keys::pepper_secret::PEPPER_KEY),
            previous: read(crate::keys::pepper_secret::PREVIOUS_KEY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record is read by other replicas and other versions of keyward: its JSON is a
    /// contract, pinned here as text.
    #[test]
    fn the_record_keeps_its_json_shape() {
        let key = KeyHash {
            key_id: "7d4c7f0e-0000-4000-8000-000000000000".into(),
            hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            fast_hash: "ab".into(),
            pepper_id: "0011aabb".into(),
            lookup_id: Some("3fK9aQ2m".into()),
            fingerprint: "0123456789abcdef".into(),
            preview: "kw_3fK9aQ2m…".into(),
            issued_at: "2026-06-01T12:00:00.250Z".parse().expect("ts"),
            expires_at: None,
            imported: false,
            weak: false,
        };
        let record = HashRecord {
            apikey: Owner {
                namespace: "shop".into(),
                name: "billing".into(),
                uid: "u-1".into(),
            },
            current: Some(key.clone()),
            previous: vec![PreviousKey {
                key,
                valid_until: "2026-06-01T13:00:00Z".parse().expect("ts"),
            }],
            rotation: RotationState {
                count: 1,
                last_rotated_at: Some("2026-06-01T12:00:00.250Z".parse().expect("ts")),
                ..Default::default()
            },
            restarts: [(
                "Deployment/web".to_string(),
                RestartState {
                    rolled_for: Some("0123456789abcdef".into()),
                    missing: false,
                },
            )]
            .into(),
            ..Default::default()
        };
        let key_json = r#"{"keyId":"7d4c7f0e-0000-4000-8000-000000000000","hash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA","fastHash":"ab","pepperId":"0011aabb","lookupId":"3fK9aQ2m","fingerprint":"0123456789abcdef","preview":"kw_3fK9aQ2m…","issuedAt":"2026-06-01T12:00:00.25Z","imported":false"#;
        let expected = format!(
            r#"{{"apikey":{{"namespace":"shop","name":"billing","uid":"u-1"}},"current":{key_json}}},"previous":[{key_json},"validUntil":"2026-06-01T13:00:00Z"}}],"access":{{"disabled":false}},"rotation":{{"count":1,"lastRotatedAt":"2026-06-01T12:00:00.25Z"}},"restarts":{{"Deployment/web":{{"rolledFor":"0123456789abcdef"}}}}}}"#
        );
        assert_eq!(
            serde_json::to_string(&record).expect("serialises"),
            expected
        );
        let back: HashRecord = serde_json::from_str(&expected).expect("reads back");
        assert_eq!(back, record);
    }

    #[test]
    fn every_key_of_a_record_names_its_pepper() {
        let key = |pepper: &str| KeyHash {
            key_id: "k".into(),
            hash: "h".into(),
            fast_hash: "f".into(),
            pepper_id: pepper.into(),
            lookup_id: None,
            fingerprint: "fp".into(),
            preview: "p".into(),
            issued_at: "2026-06-01T12:00:00Z".parse().expect("ts"),
            expires_at: None,
            imported: false,
            weak: false,
        };
        let record = HashRecord {
            current: Some(key("cur")),
            pending: Some(key("pen")),
            previous: vec![PreviousKey {
                key: key("old"),
                valid_until: "2026-06-01T13:00:00Z".parse().expect("ts"),
            }],
            ..Default::default()
        };
        assert_eq!(pepper_ids(&record.to_secret("ns")), ["cur", "pen", "old"]);
        let pool = SingleUseRecord {
            pool: Owner::default(),
            suffix: "s".into(),
            format: None,
            key: key("pool"),
            state: UseState::Available,
            taken_at: None,
            consumed_at: None,
            issued_ttl: std::time::Duration::from_secs(60),
        };
        assert_eq!(pepper_ids(&pool.to_secret("ns")), ["pool"]);
        assert!(pepper_ids(&Secret::default()).is_empty());
    }
}
