//! Deciding whether a presented key is valid (DESIGN §6), in order: format and checksum (no
//! hashing) → lookup id → keyed fast hash → argon2 only where no usable fast hash exists →
//! disabled / expired / grace. Pure but for the argon2 callback.

use jiff::Timestamp;
use serde::Serialize;

use super::index::{Entry, Index, Role};
use crate::keys::Pepper;
use crate::keys::format;

/// The verifier's answer codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    Valid,
    NotFound,
    Disabled,
    Expired,
    RateLimited,
    UsageExceeded,
    Malformed,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "VALID",
            Self::NotFound => "NOT_FOUND",
            Self::Disabled => "DISABLED",
            Self::Expired => "EXPIRED",
            Self::RateLimited => "RATE_LIMITED",
            Self::UsageExceeded => "USAGE_EXCEEDED",
            Self::Malformed => "MALFORMED",
        }
    }
}

/// The outcome of a check: a code, and the key it matched, if any.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub code: Code,
    pub entry: Option<Entry>,
    /// Whether answering needed argon2 (no usable fast hash).
    pub used_argon2: bool,
}

fn verdict(code: Code, entry: Option<&Entry>, used_argon2: bool) -> Verdict {
    Verdict {
        code,
        entry: entry.cloned(),
        used_argon2,
    }
}

/// The state of a matched key.
fn evaluate(entry: &Entry, now: Timestamp, used_argon2: bool) -> Verdict {
    let expired_previous =
        matches!(entry.role, Role::Previous { valid_until } if valid_until <= now);
    let expired = entry.key.expires_at.is_some_and(|t| t <= now);
    let code = if entry.record.access.disabled {
        Code::Disabled
    } else if expired_previous || expired {
        Code::Expired
    } else {
        Code::Valid
    };
    verdict(code, Some(entry), used_argon2)
}

/// `argon2(key, phc)`: the slow, portable check.
pub type Argon2Check<'a> = &'a dyn Fn(&str, &str) -> bool;

/// Checks `key`. `argon2(key, phc)` is called only for keys whose fast hash was made under
/// another pepper (or when the verifier has none); `None` disables that fallback.
pub fn check(
    key: &str,
    index: &Index,
    pepper: Option<&Pepper>,
    now: Timestamp,
    argon2: Option<Argon2Check<'_>>,
) -> Verdict {
    if key.is_empty() || key.len() > 1024 {
        return verdict(Code::Malformed, None, false);
    }
    let mut used_argon2 = false;
    let mut matches = |entry: &Entry| -> bool {
        match pepper {
            Some(p) if p.id() == entry.key.pepper_id => p.matches(key, &entry.key.fast_hash),
            _ => match argon2 {
                Some(verify) => {
                    used_argon2 = true;
                    verify(key, &entry.key.hash)
                }
                None => false,
            },
        }
    };
    let mut known_prefix = false;
    for f in index.formats() {
        if !key.starts_with(f.prefix.as_str()) {
            continue;
        }
        known_prefix |= !f.prefix.is_empty();
        let Some(parsed) = format::parse(key, f) else {
            continue;
        };
        for entry in index.by_lookup(parsed.lookup_id) {
            if entry.record.format.as_ref() == Some(f) && matches(entry) {
                return evaluate(entry, now, used_argon2);
            }
        }
        return verdict(Code::NotFound, None, used_argon2);
    }
    // No keyward shape: an imported key, found by its keyed hash.
    if let Some(p) = pepper
        && let Some(entry) = index.by_fast_hash(&p.fast_hash(key))
    {
        return evaluate(entry, now, false);
    }
    let foreign: Vec<Entry> = index
        .imported_without_fast_hash(&pepper.map(Pepper::id).unwrap_or_default())
        .cloned()
        .collect();
    for entry in &foreign {
        if matches(entry) {
            return evaluate(entry, now, used_argon2);
        }
    }
    let code = if known_prefix {
        Code::Malformed
    } else {
        Code::NotFound
    };
    verdict(code, None, used_argon2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::KeyFormat;
    use crate::keys::{self, PlainKey};
    use crate::record::{Access, HashRecord, KeyHash, Owner, PreviousKey};

    fn now() -> Timestamp {
        "2026-06-01T12:00:00Z".parse().expect("ts")
    }

    /// Runs `f` where argon2 may run: on a hashing pool's thread.
    fn on_pool<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        crate::hashing::HashPool::new(1)
            .caller("test", 1)
            .run_blocking(f)
            .expect("hashing pool")
    }

    fn hashed(key: &PlainKey, pepper: &Pepper, format: Option<&KeyFormat>) -> KeyHash {
        let to_hash = key.clone();
        let phc = on_pool(move || {
            keys::argon2_hash(
                &to_hash,
                &keys::Argon2Params {
                    memory_kib: 1024,
                    iterations: 1,
                    parallelism: 1,
                },
            )
        });
        KeyHash {
            key_id: uuid::Uuid::new_v4().to_string(),
            hash: phc.expect("hash"),
            fast_hash: pepper.fast_hash(key.expose()),
            pepper_id: pepper.id(),
            lookup_id: format
                .and_then(|f| format::parse(key.expose(), f))
                .map(|p| p.lookup_id.to_string()),
            fingerprint: keys::fingerprint(key),
            preview: "…".into(),
            issued_at: "2026-06-01T00:00:00Z".parse().expect("ts"),
            expires_at: None,
            imported: format.is_none(),
            weak: false,
        }
    }

    fn record(uid: &str, format: Option<KeyFormat>, current: KeyHash) -> HashRecord {
        HashRecord {
            apikey: Owner {
                namespace: "shop".into(),
                name: uid.into(),
                uid: uid.into(),
            },
            format,
            current: Some(current),
            access: Access {
                owner: Some("team".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_check_order() {
        let pepper = Pepper::new(vec![7; 32]);
        let f = KeyFormat {
            prefix: "sk_live_".into(),
            ..Default::default()
        };
        let key = keys::generate(&f).expect("key");
        let old = keys::generate(&f).expect("key");
        let mut index = Index::default();
        let mut r = record("a", Some(f.clone()), hashed(&key, &pepper, Some(&f)));
        r.previous.push(PreviousKey {
            key: hashed(&old, &pepper, Some(&f)),
            valid_until: "2026-06-01T13:00:00Z".parse().expect("ts"),
        });
        index.upsert(r.clone());
        let run = |k: &str, index: &Index| check(k, index, Some(&pepper), now(), None).code;
        assert_eq!(run(key.expose(), &index), Code::Valid);
        assert_eq!(run(old.expose(), &index), Code::Valid, "inside its grace");
        assert_eq!(
            check(
                old.expose(),
                &index,
                Some(&pepper),
                "2026-06-01T13:00:00Z".parse().expect("ts"),
                None
            )
            .code,
            Code::Expired
        );
        // A typo fails the checksum: malformed, no lookup, no hashing.
        let mut typo = key.expose().to_string();
        typo.replace_range(12..13, if &typo[12..13] == "a" { "b" } else { "a" });
        assert_eq!(run(&typo, &index), Code::Malformed);
        // Well-formed but unknown: not found.
        assert_eq!(
            run(keys::generate(&f).expect("key").expose(), &index),
            Code::NotFound
        );
        assert_eq!(run("", &index), Code::Malformed);
        assert_eq!(run("something-else-entirely", &index), Code::NotFound);
        r.access.disabled = true;
        index.upsert(r);
        assert_eq!(run(key.expose(), &index), Code::Disabled);
    }

    #[test]
    fn imported_keys_and_a_replaced_pepper() {
        let old_pepper = Pepper::new(vec![1; 32]);
        let new_pepper = Pepper::new(vec![2; 32]);
        let key = PlainKey::new("legacy-static-key-0123456789");
        let mut index = Index::default();
        index.upsert(record("imp", None, hashed(&key, &old_pepper, None)));
        assert_eq!(
            check(key.expose(), &index, Some(&old_pepper), now(), None).code,
            Code::Valid
        );
        // Under another pepper the fast hash is useless: argon2 decides, and says so.
        let slow = |presented: &'static str| {
            let (index, pepper) = (index.clone(), new_pepper.clone());
            on_pool(move || {
                let verify = |k: &str, phc: &str| keys::argon2_verify(k, phc);
                let v = check(presented, &index, Some(&pepper), now(), Some(&verify));
                (v.code, v.used_argon2)
            })
        };
        assert_eq!(slow("legacy-static-key-0123456789"), (Code::Valid, true));
        assert_eq!(
            check(key.expose(), &index, Some(&new_pepper), now(), None).code,
            Code::NotFound
        );
        assert_eq!(slow("legacy-static-key-wrong").0, Code::NotFound);
    }
}
