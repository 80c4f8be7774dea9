//! The verifier's in-memory index of hash records (DESIGN §6): generated keys by lookup id,
//! imported keys by keyed fast hash, and the prefixes presented keys are split by. Fed by a
//! watch; answers without any API call.

use std::collections::HashMap;
use std::sync::Arc;

use crate::crd::KeyFormat;
use crate::record::{HashRecord, KeyHash};

/// Which of a record's keys an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Current,
    /// Written before delivery; accepted so the delivered key verifies at once.
    Pending,
    /// Replaced by a rotation; valid until this instant.
    Previous {
        valid_until: jiff::Timestamp,
    },
}

/// One verifiable key.
#[derive(Debug, Clone)]
pub struct Entry {
    pub record: Arc<HashRecord>,
    pub key: KeyHash,
    pub role: Role,
}

/// The index over all records.
#[derive(Debug, Default, Clone)]
pub struct Index {
    records: HashMap<String, Arc<HashRecord>>,
    by_lookup: HashMap<String, Vec<Entry>>,
    by_fast_hash: HashMap<String, Entry>,
    /// Distinct formats in use, longest prefix first.
    formats: Vec<KeyFormat>,
    /// Peppers the entries' fast hashes were made under.
    pepper_ids: std::collections::BTreeSet<String>,
}

fn entries(record: &Arc<HashRecord>) -> Vec<Entry> {
    let mut out = Vec::new();
    if let Some(k) = &record.current {
        out.push(Entry {
            record: record.clone(),
            key: k.clone(),
            role: Role::Current,
        });
    }
    if let Some(k) = &record.pending {
        out.push(Entry {
            record: record.clone(),
            key: k.clone(),
            role: Role::Pending,
        });
    }
    for p in &record.previous {
        out.push(Entry {
            record: record.clone(),
            key: p.key.clone(),
            role: Role::Previous {
                valid_until: p.valid_until,
            },
        });
    }
    out
}

impl Index {
    /// Adds or replaces the record of ApiKey `uid`.
    pub fn upsert(&mut self, record: HashRecord) {
        let uid = record.apikey.uid.clone();
        self.records.insert(uid, Arc::new(record));
        self.rebuild();
    }

    /// Forgets the record of ApiKey `uid`.
    pub fn remove(&mut self, uid: &str) {
        if self.records.remove(uid).is_some() {
            self.rebuild();
        }
    }

    /// Replaces everything (a relist).
    pub fn replace_all(&mut self, records: impl IntoIterator<Item = HashRecord>) {
        self.records = records
            .into_iter()
            .map(|r| (r.apikey.uid.clone(), Arc::new(r)))
            .collect();
        self.rebuild();
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn rebuild(&mut self) {
        self.by_lookup.clear();
        self.by_fast_hash.clear();
        self.pepper_ids.clear();
        let mut formats: Vec<KeyFormat> = Vec::new();
        for record in self.records.values() {
            if let Some(f) = &record.format
                && !formats.contains(f)
            {
                formats.push(f.clone());
            }
            for entry in entries(record) {
                self.pepper_ids.insert(entry.key.pepper_id.clone());
                match &entry.key.lookup_id {
                    Some(lookup) => self
                        .by_lookup
                        .entry(lookup.clone())
                        .or_default()
                        .push(entry),
                    None => {
                        self.by_fast_hash.insert(entry.key.fast_hash.clone(), entry);
                    }
                }
            }
        }
        formats.sort_by_key(|f| std::cmp::Reverse(f.prefix.len()));
        self.formats = formats;
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

    /// The imported key with this fast hash.
    pub fn by_fast_hash(&self, fast_hash: &str) -> Option<&Entry> {
        self.by_fast_hash.get(fast_hash)
    }

    /// Whether some entry's fast hash was made under another pepper than `pepper_id`, so a
    /// miss may need argon2 to be sure.
    pub fn has_foreign_pepper(&self, pepper_id: &str) -> bool {
        self.pepper_ids.iter().any(|p| p != pepper_id)
    }

    /// Imported keys whose fast hash was made under another pepper (argon2 only).
    pub fn imported_without_fast_hash(&self, pepper_id: &str) -> impl Iterator<Item = &Entry> {
        self.by_fast_hash
            .values()
            .filter(move |e| e.key.pepper_id != pepper_id)
    }
}
