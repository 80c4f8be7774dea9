//! The pool pipeline's building half: key Secrets, hash records, suffixes and timestamps.
//! Pure, but for the randomness of suffixes.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::{Resource, ResourceExt};

use crate::crd::{ApiKeyPool, GeneratorType, KeyFormat, annotations, labels};
use crate::keys::{self, Pepper, PlainKey, format};
use crate::record::{KeyHash, Owner, SingleUseRecord, UseState};

/// The data key holding a pool key (DESIGN §5).
pub const KEY_DATA: &str = "api-key";
/// How long a taken key stays presentable when `issuedTTL` is not set.
const DEFAULT_ISSUED_TTL: Duration = Duration::from_secs(24 * 3600);
const SUFFIX_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A fresh key Secret suffix: 10 random characters (about 52 bits), so names are never
/// reused.
pub fn suffix() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes)?;
    Ok(bytes
        .iter()
        .map(|b| SUFFIX_ALPHABET[*b as usize % SUFFIX_ALPHABET.len()] as char)
        .collect())
}

/// `keyward.dev/created-at`: RFC 3339 with nanoseconds, fixed width, so it sorts as text.
pub fn created_at(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string()
}

pub fn format_of(pool: &ApiKeyPool) -> KeyFormat {
    pool.spec.format.clone().unwrap_or_default()
}

pub fn is_webhook(pool: &ApiKeyPool) -> bool {
    pool.spec
        .generator
        .as_ref()
        .is_some_and(|g| g.type_ == GeneratorType::Webhook)
}

pub fn owner(pool: &ApiKeyPool) -> Owner {
    Owner {
        namespace: pool.namespace().unwrap_or_default(),
        name: pool.name_any(),
        uid: pool.uid().unwrap_or_default(),
    }
}

/// `issuedTTL`, or 24h.
pub fn issued_ttl(pool: &ApiKeyPool) -> Duration {
    pool.spec
        .issued_ttl
        .as_deref()
        .and_then(|v| crate::duration::parse(v).ok())
        .unwrap_or(DEFAULT_ISSUED_TTL)
}

/// The key Secret `<pool>-<suffix>`: label, creation time, ownerReference, `data.api-key`.
pub fn key_secret(pool: &ApiKeyPool, suffix: &str, key: &PlainKey, at: Timestamp) -> Secret {
    let template = pool.spec.secret_template.clone().unwrap_or_default();
    let mut l: BTreeMap<String, String> = template.labels;
    l.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
    l.insert(labels::POOL.into(), pool.name_any());
    let mut a: BTreeMap<String, String> = template.annotations;
    a.insert(annotations::CREATED_AT.into(), created_at(at));
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{}-{suffix}", pool.name_any())),
            namespace: pool.namespace(),
            labels: Some(l),
            annotations: Some(a),
            owner_references: pool.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            KEY_DATA.to_string(),
            ByteString(key.expose().as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// A pool key's record entry, given its argon2id PHC string. Generated keys are found by
/// lookup id; webhook keys (no structure) by their keyed fast hash.
pub fn key_hash(
    pool: &ApiKeyPool,
    key: &PlainKey,
    phc: String,
    pepper: &Pepper,
    now: Timestamp,
) -> KeyHash {
    let webhook = is_webhook(pool);
    let format = format_of(pool);
    let (lookup_id, preview) = if webhook {
        (None, format::imported_preview(key))
    } else {
        (
            format::parse(key.expose(), &format).map(|p| p.lookup_id.to_string()),
            keys::preview(key, &format),
        )
    };
    KeyHash {
        key_id: uuid::Uuid::new_v4().to_string(),
        hash: phc,
        fast_hash: pepper.fast_hash(key.expose()),
        pepper_id: pepper.id(),
        lookup_id,
        fingerprint: keys::fingerprint(key),
        preview,
        issued_at: crate::clock::ms(now),
        expires_at: None,
        imported: webhook,
        weak: false,
    }
}

/// A recorded key's entry with its fast hash made again under `pepper` (the argon2 hash
/// and everything else stay).
pub fn rekeyed(hash: &KeyHash, key: &PlainKey, pepper: &Pepper) -> KeyHash {
    KeyHash {
        fast_hash: pepper.fast_hash(key.expose()),
        pepper_id: pepper.id(),
        ..hash.clone()
    }
}

/// A new record in `state`.
pub fn record(pool: &ApiKeyPool, suffix: &str, key: KeyHash, state: UseState) -> SingleUseRecord {
    SingleUseRecord {
        pool: owner(pool),
        suffix: suffix.to_string(),
        format: (!is_webhook(pool)).then(|| format_of(pool)),
        key,
        state,
        taken_at: None,
        consumed_at: None,
        issued_ttl: issued_ttl(pool),
    }
}

/// The key in a key Secret.
pub fn key_of(secret: &Secret) -> Option<PlainKey> {
    let bytes = secret.data.as_ref()?.get(KEY_DATA)?;
    let text = String::from_utf8(bytes.0.clone()).ok()?;
    (!text.is_empty()).then(|| PlainKey::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_at_sorts_as_text_to_the_nanosecond() {
        let a: Timestamp = "2026-06-01T12:00:00.000000005Z".parse().expect("ts");
        let b: Timestamp = "2026-06-01T12:00:00.00000004Z".parse().expect("ts");
        let c: Timestamp = "2026-06-01T12:00:01Z".parse().expect("ts");
        let texts: Vec<String> = [a, b, c].into_iter().map(created_at).collect();
        assert_eq!(
            texts,
            [
                "2026-06-01T12:00:00.000000005Z",
                "2026-06-01T12:00:00.000000040Z",
                "2026-06-01T12:00:01.000000000Z"
            ]
        );
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(sorted, texts);
        assert_eq!(texts[0].parse::<Timestamp>().expect("reads back"), a);
    }

    #[test]
    fn suffixes_are_random_lowercase_names() {
        let a = suffix().expect("random");
        let b = suffix().expect("random");
        assert_eq!(a.len(), 10);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
}
