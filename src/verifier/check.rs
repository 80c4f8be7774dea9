//! Deciding whether a presented key is valid (DESIGN §6), in order: format and checksum (no
//! hashing) → lookup id → keyed fast hash → argon2 only for keys whose pepper is lost →
//! disabled / expired / grace / used. Pure.
//!
//! Only a holder of the key learns anything about it: every failure after the format check
//! is `NOT_FOUND`, and the work is the same whether the lookup id exists or not — one HMAC
//! per usable pepper, computed up front, compared in constant time.

use jiff::Timestamp;
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::index::{Entry, Index, Role, Source};
use crate::keys::Pepper;
use crate::keys::format;
use crate::record::UseState;

/// Longest key accepted; anything longer is `MALFORMED` without any work.
pub const MAX_KEY: usize = 1024;
/// Keys under lost peppers tried with argon2 for one presentation, at most.
pub const MAX_ARGON2_CANDIDATES: usize = 16;

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
    Unavailable,
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
            Self::Unavailable => "UNAVAILABLE",
        }
    }
}

/// The outcome of a check: a code, and the key it matched, if any.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub code: Code,
    pub entry: Option<Entry>,
}

impl Verdict {
    pub fn code(code: Code) -> Self {
        Self { code, entry: None }
    }

    /// Whether a VALID answer still has to consume a single-use key.
    pub fn consumes(&self) -> bool {
        self.code == Code::Valid
            && self
                .entry
                .as_ref()
                .is_some_and(|e| e.role == Role::SingleUse)
    }
}

/// The peppers keys' fast hashes may be made under: the current one and, during a change,
/// the previous one.
#[derive(Debug, Clone, Default)]
pub struct Peppers {
    pub current: Option<Pepper>,
    pub previous: Option<Pepper>,
}

impl Peppers {
    /// Takes in what the pepper Secret holds now (`pepper`, `pepper-previous`; `None` where
    /// absent or unusable). When `pepper` changed and the Secret has no `pepper-previous`
    /// yet, the pepper loaded until now stays usable as the previous one, so keys recorded
    /// under it keep their fast path until the operator has filled the slot.
    pub fn load(&mut self, pepper: Option<Pepper>, previous: Option<Pepper>) {
        let Some(pepper) = pepper else {
            // A missing or short `pepper` is a mistake being made: keep the one we have.
            self.previous = previous;
            return;
        };
        let id = pepper.id();
        let replaced = self.current.replace(pepper).filter(|old| old.id() != id);
        self.previous = previous.or(replaced);
    }

    fn usable(&self) -> impl Iterator<Item = &Pepper> {
        self.current.iter().chain(self.previous.iter())
    }

    /// Their ids.
    pub fn ids(&self) -> Vec<String> {
        self.usable().map(Pepper::id).collect()
    }
}

/// A check's result: decided, or argon2 needed on these candidates (outside any lock).
// Returned once per request and consumed at once: not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outcome {
    Decided(Verdict),
    Argon2 {
        candidates: Vec<Entry>,
        /// What to answer when none matches.
        otherwise: Code,
    },
}

/// The state of a matched key.
pub fn evaluate(entry: &Entry, now: Timestamp) -> Verdict {
    let code = match (&*entry.source, &entry.role) {
        (Source::ApiKey(record), role) => {
            let previous_over =
                matches!(role, Role::Previous { valid_until } if *valid_until <= now);
            if record.access.disabled {
                Code::Disabled
            } else if previous_over || entry.key.expires_at.is_some_and(|t| t <= now) {
                Code::Expired
            } else {
                Code::Valid
            }
        }
        (Source::Pool { record, .. }, _) => {
            if record.state == UseState::Consumed {
                Code::UsageExceeded
            } else if record.expires_at().is_some_and(|t| t <= now) {
                Code::Expired
            } else {
                Code::Valid
            }
        }
    };
    Verdict {
        code,
        entry: Some(entry.clone()),
    }
}

/// Constant-time equality of two fast hashes (hex).
fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Checks `key`.
pub fn check(key: &str, index: &Index, peppers: &Peppers, now: Timestamp) -> Outcome {
    if key.is_empty() || key.len() > MAX_KEY {
        return Outcome::Decided(Verdict::code(Code::Malformed));
    }
    // One HMAC per usable pepper, whatever follows.
    let fast: Vec<(String, String)> = peppers
        .usable()
        .map(|p| (p.id(), p.fast_hash(key)))
        .collect();
    let usable: Vec<String> = fast.iter().map(|(id, _)| id.clone()).collect();
    let matches = |entry: &Entry| {
        fast.iter()
            .any(|(id, fh)| *id == entry.key.pepper_id && same(fh, &entry.key.fast_hash))
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
        let candidates: Vec<&Entry> = index
            .by_lookup(parsed.lookup_id)
            .iter()
            .filter(|e| match &*e.source {
                Source::ApiKey(r) => r.format.as_ref() == Some(f),
                Source::Pool { record, .. } => record.format.as_ref() == Some(f),
            })
            .collect();
        if candidates.is_empty() {
            // The same comparison a known lookup id costs.
            let _ = same(
                &fast.first().map(|(_, h)| h.clone()).unwrap_or_default(),
                "",
            );
        }
        if let Some(hit) = candidates.iter().find(|e| matches(e)) {
            return Outcome::Decided(evaluate(hit, now));
        }
        let lost: Vec<Entry> = candidates
            .into_iter()
            .filter(|e| !usable.contains(&e.key.pepper_id))
            .take(MAX_ARGON2_CANDIDATES)
            .cloned()
            .collect();
        if !lost.is_empty() {
            return Outcome::Argon2 {
                candidates: lost,
                otherwise: Code::NotFound,
            };
        }
        return Outcome::Decided(Verdict::code(Code::NotFound));
    }
    // No keyward shape: a key without structure, found by its keyed hash.
    for (_, fh) in &fast {
        if let Some(entry) = index.by_fast_hash(fh) {
            return Outcome::Decided(evaluate(entry, now));
        }
    }
    let otherwise = if known_prefix {
        Code::Malformed
    } else {
        Code::NotFound
    };
    let lost = index.unstructured_under_other_peppers(&usable, MAX_ARGON2_CANDIDATES);
    if lost.is_empty() {
        Outcome::Decided(Verdict::code(otherwise))
    } else {
        Outcome::Argon2 {
            candidates: lost,
            otherwise,
        }
    }
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

    fn peppers(p: &Pepper) -> Peppers {
        Peppers {
            current: Some(p.clone()),
            previous: None,
        }
    }

    fn code(o: Outcome) -> Code {
        match o {
            Outcome::Decided(v) => v.code,
            Outcome::Argon2 { .. } => panic!("argon2 asked for"),
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
        index.upsert("a", Source::ApiKey(r.clone()));
        let run = |k: &str, index: &Index| code(check(k, index, &peppers(&pepper), now()));
        assert_eq!(run(key.expose(), &index), Code::Valid);
        assert_eq!(run(old.expose(), &index), Code::Valid, "inside its grace");
        let later: Timestamp = "2026-06-01T13:00:00Z".parse().expect("ts");
        assert_eq!(
            code(check(old.expose(), &index, &peppers(&pepper), later)),
            Code::Expired
        );
        // A typo fails the checksum: malformed, no lookup, no hashing.
        let mut typo = key.expose().to_string();
        typo.replace_range(12..13, if &typo[12..13] == "a" { "b" } else { "a" });
        assert_eq!(run(&typo, &index), Code::Malformed);
        assert_eq!(
            run(keys::generate(&f).expect("key").expose(), &index),
            Code::NotFound
        );
        assert_eq!(run("", &index), Code::Malformed);
        assert_eq!(run(&"x".repeat(MAX_KEY + 1), &index), Code::Malformed);
        assert_eq!(run("something-else-entirely", &index), Code::NotFound);
        r.access.disabled = true;
        index.upsert("a", Source::ApiKey(r));
        assert_eq!(run(key.expose(), &index), Code::Disabled);
    }

    #[test]
    fn imported_keys_and_lost_peppers() {
        let old_pepper = Pepper::new(vec![1; 32]);
        let new_pepper = Pepper::new(vec![2; 32]);
        let key = PlainKey::new("legacy-static-key-0123456789");
        let mut index = Index::default();
        index.upsert(
            "imp",
            Source::ApiKey(record("imp", None, hashed(&key, &old_pepper, None))),
        );
        assert_eq!(
            code(check(key.expose(), &index, &peppers(&old_pepper), now())),
            Code::Valid
        );
        // Under the previous pepper during a change: still the fast path.
        let both = Peppers {
            current: Some(new_pepper.clone()),
            previous: Some(old_pepper.clone()),
        };
        assert_eq!(code(check(key.expose(), &index, &both, now())), Code::Valid);
        // Lost pepper: argon2 candidates, never a decision from the fast hash.
        match check(key.expose(), &index, &peppers(&new_pepper), now()) {
            Outcome::Argon2 {
                candidates,
                otherwise,
            } => {
                assert_eq!(candidates.len(), 1);
                assert_eq!(otherwise, Code::NotFound);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn known_and_unknown_lookup_ids_cost_the_same_keyed_hashes() {
        let pepper = Pepper::new(vec![7; 32]);
        let previous = Pepper::new(vec![8; 32]);
        let f = KeyFormat {
            prefix: "sk_live_".into(),
            ..Default::default()
        };
        let key = keys::generate(&f).expect("key");
        let mut index = Index::default();
        index.upsert(
            "a",
            Source::ApiKey(record(
                "a",
                Some(f.clone()),
                hashed(&key, &pepper, Some(&f)),
            )),
        );
        let both = Peppers {
            current: Some(pepper),
            previous: Some(previous),
        };
        // The real lookup id with another secret, and a valid checksum.
        let keep = f.prefix.len() + format::LOOKUP_ID_LEN;
        let body_end = f.prefix.len() + f.length as usize;
        let mut forged = key.expose()[..keep].to_string();
        forged.push_str(&"Z".repeat(body_end - keep));
        forged.push_str(&format::checksum(&forged));
        let unknown = keys::generate(&f).expect("key");
        let cost = |k: &str| {
            let before = crate::keys::hash::hmacs_on_this_thread();
            let c = code(check(k, &index, &both, now()));
            (c, crate::keys::hash::hmacs_on_this_thread() - before)
        };
        assert_eq!(
            cost(&forged),
            (Code::NotFound, 2),
            "one HMAC per usable pepper"
        );
        assert_eq!(cost(unknown.expose()), (Code::NotFound, 2));
        assert_eq!(cost("not-a-keyward-key"), (Code::NotFound, 2));
        assert_eq!(cost(key.expose()), (Code::Valid, 2));
    }

    #[test]
    fn a_new_pepper_keeps_the_old_one_usable_until_the_slot_is_filled() {
        let (p0, p1, p2) = (
            Pepper::new(vec![1; 32]),
            Pepper::new(vec![2; 32]),
            Pepper::new(vec![3; 32]),
        );
        let mut peppers = Peppers::default();
        peppers.load(Some(p0.clone()), None);
        assert_eq!(peppers.ids(), [p0.id()]);
        // The new pepper arrives before the operator copied the old one.
        peppers.load(Some(p1.clone()), None);
        assert_eq!(peppers.ids(), [p1.id(), p0.id()]);
        peppers.load(Some(p1.clone()), Some(p0.clone()));
        assert_eq!(peppers.ids(), [p1.id(), p0.id()]);
        // The slot emptied: no record needs it any more.
        peppers.load(Some(p1.clone()), None);
        assert_eq!(peppers.ids(), [p1.id()]);
        // A second change: the slot names which one stays.
        peppers.load(Some(p2.clone()), Some(p0.clone()));
        assert_eq!(peppers.ids(), [p2.id(), p0.id()]);
        // An unusable `pepper` keeps the current one.
        peppers.load(None, Some(p1.clone()));
        assert_eq!(peppers.ids(), [p2.id(), p1.id()]);
    }
}
