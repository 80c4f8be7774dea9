//! The verifier's in-memory index of hash records (DESIGN §6): generated keys by lookup id,
//! keys without structure (imported, or minted by a webhook) by keyed fast hash, and the
//! formats presented keys are split by. Fed by a watch; each record's change touches only
//! that record's entries. Answers without any API call.

use std::collections::HashMap;
use std::sync::Arc;

use crate::crd::KeyFormat;
use crate::record::{HashRecord, KeyHash, SingleUseRecord};

/// Which of an ApiKey record's keys an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Current,
    /// Written before delivery; accepted so the delivered key verifies at once.
    Pending,
    /// Replaced by a rotation; valid until this instant.
    Previous {
        valid_until: jiff::Timestamp,
    },
    /// A pool key: valid once.
    SingleUse,
}

/// Where an entry comes from.
// Always behind an Arc shared by its entries: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Source {
    ApiKey(HashRecord),
    /// A pool key's record, with its Secret's name and version (to consume it).
    Pool {
        record: SingleUseRecord,
        secret_name: String,
        resource_version: String,
    },
}

impl Source {
    /// `NAMESPACE/NAME` of the ApiKey or pool.
    pub fn owner(&self) -> (&str, &str) {
        match self {
            Self::ApiKey(r) => (&r.apikey.namespace, &r.apikey.name),
            Self::Pool { record, .. } => (&record.pool.namespace, &record.pool.name),
        }
    }

    fn format(&self) -> Option<&KeyFormat> {
        match self {
            Self::ApiKey(r) => r.format.as_ref(),
            Self::Pool { record, .. } => record.format.as_ref(),
        }
    }
}

/// One verifiable key.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name of the record Secret it came from.
    pub record: Arc<str>,
    pub source: Arc<Source>,
    pub key: KeyHash,
    pub role: Role,
}

fn entries(record: &Arc<str>, source: &Arc<Source>) -> Vec<Entry> {
    let entry = |key: &KeyHash, role: Role| Entry {
        record: record.clone(),
        source: source.clone(),
        key: key.clone(),
        role,
    };
    match &**source {
        Source::ApiKey(r) => {
            let mut out = Vec::new();
            if let Some(k) = &r.current {
                out.push(entry(k, Role::Current));
            }
            if let Some(k) = &r.pending {
                out.push(entry(k, Role::Pending));
            }
            for p in &r.previous {
                out.push(entry(
                    &p.key,
                    Role::Previous {
                        valid_until: p.valid_until,
                    },
                ));
            }
            out
        }
        Source::Pool { record, .. } => vec![entry(&record.key, Role::SingleUse)],
    }
}

/// Counts of things shared by many records (formats, peppers): kept incrementally.
#[derive(Debug, Default, Clone)]
struct Multiset<T: std::hash::Hash + Eq + Clone>(HashMap<T, usize>);

impl<T: std::hash::Hash + Eq + Clone> Multiset<T> {
    /// Adds one; `true` when it was new.
    fn add(&mut self, t: &T) -> bool {
        let n = self.0.entry(t.clone()).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Removes one; `true` when it is gone.
    fn remove(&mut self, t: &T) -> bool {
        match self.0.get_mut(t) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.0.remove(t);
                true
            }
            None => false,
        }
    }
}

/// The index over all records, keyed by record Secret name.
#[derive(Debug, Default, Clone)]
pub struct Index {
    records: HashMap<String, Vec<Entry>>,
    by_lookup: HashMap<String, Vec<Entry>>,
    by_fast_hash: HashMap<String, Entry>,
    format_counts: Multiset<KeyFormat>,
    /// Distinct formats in use, longest prefix first.
    formats: Vec<KeyFormat>,
    peppers: Multiset<String>,
}

fn same_entry(a: &Entry, b: &Entry) -> bool {
    Arc::ptr_eq(&a.source, &b.source) && a.key.key_id == b.key.key_id
}

impl Index {
    /// Adds or replaces the record stored in Secret `name`.
    pub fn upsert(&mut self, name: &str, source: Source) {
        self.remove(name);
        let source = Arc::new(source);
        let new = entries(&Arc::from(name), &source);
        if let Some(f) = source.format()
            && self.format_counts.add(f)
        {
            self.formats.push(f.clone());
            self.formats
                .sort_by_key(|f| std::cmp::Reverse(f.prefix.len()));
        }
        for e in &new {
            self.peppers.add(&e.key.pepper_id);
            match &e.key.lookup_id {
                Some(lookup) => self
                    .by_lookup
                    .entry(lookup.clone())
                    .or_default()
                    .push(e.clone()),
                None => {
                    self.by_fast_hash.insert(e.key.fast_hash.clone(), e.clone());
                }
            }
        }
        self.records.insert(name.to_string(), new);
    }

    /// Forgets the record stored in Secret `name`.
    pub fn remove(&mut self, name: &str) {
        let Some(old) = self.records.remove(name) else {
            return;
        };
        if let Some(e) = old.first()
            && let Some(f) = e.source.format()
            && self.format_counts.remove(f)
        {
            self.formats.retain(|x| x != f);
        }
        for e in &old {
            self.peppers.remove(&e.key.pepper_id);
            match &e.key.lookup_id {
                Some(lookup) => {
                    if let Some(list) = self.by_lookup.get_mut(lookup) {
                        list.retain(|x| !same_entry(x, e));
                        if list.is_empty() {
                            self.by_lookup.remove(lookup);
                        }
                    }
                }
                None => {
                    if self
                        .by_fast_hash
                        .get(&e.key.fast_hash)
                        .is_some_and(|x| same_entry(x, e))
                    {
                        self.by_fast_hash.remove(&e.key.fast_hash);
                    }
                }
            }
        }
    }

    /// Replaces everything (a relist).
    pub fn replace_all(&mut self, records: impl IntoIterator<Item = (String, Source)>) {
        *self = Self::default();
        for (name, source) in records {
            self.upsert(&name, source);
        }
    }

    /// A pool record as the index holds it now, with its version.
    pub fn pool_record(&self, name: &str) -> Option<(SingleUseRecord, String)> {
        match &*self.records.get(name)?.first()?.source {
            Source::Pool {
                record,
                resource_version,
                ..
            } => Some((record.clone(), resource_version.clone())),
            Source::ApiKey(_) => None,
        }
    }

    /// Whether `entry` is still what the index holds for its record (the record has not
    /// changed or gone since the entry was read).
    pub fn still_current(&self, entry: &Entry) -> bool {
        self.records
            .get(&*entry.record)
            .and_then(|entries| entries.first())
            .is_some_and(|e| Arc::ptr_eq(&e.source, &entry.source))
    }

    /// Records indexed.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Formats presented keys may have, longest prefix first.
    pub fn formats(&self) -> &[KeyFormat] {
        &self.formats
    }

    /// Generated keys whose lookup id is `lookup`.
    pub fn by_lookup(&self, lookup: &str) -> &[Entry] {
        self.by_lookup
            .get(lookup)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The key without structure whose fast hash is `fast_hash`.
    pub fn by_fast_hash(&self, fast_hash: &str) -> Option<&Entry> {
        self.by_fast_hash.get(fast_hash)
    }

    /// Pepper ids the entries' fast hashes were made under.
    pub fn pepper_ids(&self) -> impl Iterator<Item = &String> {
        self.peppers.0.keys()
    }

    /// Keys without structure whose fast hash was made under none of `usable` (argon2
    /// only), at most `limit` of them.
    pub fn unstructured_under_other_peppers(&self, usable: &[String], limit: usize) -> Vec<Entry> {
        self.by_fast_hash
            .values()
            .filter(|e| !usable.contains(&e.key.pepper_id))
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Owner;

    fn key(id: &str, lookup: Option<&str>, pepper: &str) -> KeyHash {
        KeyHash {
            key_id: id.into(),
            hash: "$argon2id$…".into(),
            fast_hash: format!("fh-{id}"),
            pepper_id: pepper.into(),
            lookup_id: lookup.map(String::from),
            fingerprint: "f".into(),
            preview: "p".into(),
            issued_at: "2026-06-01T00:00:00Z".parse().expect("ts"),
            expires_at: None,
            imported: lookup.is_none(),
            weak: false,
        }
    }

    fn apikey(name: &str, current: KeyHash, format: Option<KeyFormat>) -> Source {
        Source::ApiKey(HashRecord {
            apikey: Owner {
                namespace: "ns".into(),
                name: name.into(),
                uid: name.into(),
            },
            format,
            current: Some(current),
            ..Default::default()
        })
    }

    #[test]
    fn a_change_touches_only_its_own_record() {
        let f = KeyFormat::default();
        let mut index = Index::default();
        index.upsert(
            "a",
            apikey("a", key("ka", Some("LOOKUP01"), "p1"), Some(f.clone())),
        );
        index.upsert(
            "b",
            apikey("b", key("kb", Some("LOOKUP01"), "p1"), Some(f.clone())),
        );
        index.upsert("c", apikey("c", key("kc", None, "p2"), None));
        assert_eq!(index.by_lookup("LOOKUP01").len(), 2);
        assert_eq!(index.formats(), std::slice::from_ref(&f));
        let mut peppers: Vec<&String> = index.pepper_ids().collect();
        peppers.sort();
        assert_eq!(peppers, ["p1", "p2"]);
        // a rotates: its old entry goes, b's stays.
        index.upsert(
            "a",
            apikey("a", key("ka2", Some("LOOKUP02"), "p1"), Some(f.clone())),
        );
        assert_eq!(index.by_lookup("LOOKUP01").len(), 1);
        assert_eq!(index.by_lookup("LOOKUP02").len(), 1);
        index.remove("c");
        assert!(index.by_fast_hash("fh-kc").is_none());
        assert_eq!(index.pepper_ids().count(), 1, "p2 no longer used");
        index.remove("a");
        index.remove("b");
        assert!(index.formats().is_empty() && index.is_empty());
    }
}
