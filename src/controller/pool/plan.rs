//! The pool pipeline's pure half (DESIGN §5): from the pool's key Secrets, its hash
//! records, what this process remembers and the time, what to do now. No I/O.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::{SignedDuration, Timestamp};

use crate::record::{SingleUseRecord, UseState};

/// One key Secret of the pool, as the cache shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySecret {
    pub name: String,
    pub suffix: String,
    pub created_at: Timestamp,
    pub uid: String,
    pub resource_version: String,
    /// The fingerprint of the key it holds, read only when its record names a pepper other
    /// than the current one (to re-key that record).
    pub fingerprint: Option<String>,
}

/// One hash record, with the version an update must be conditioned on.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordView {
    pub record: SingleUseRecord,
    pub resource_version: String,
}

/// Everything the decision depends on.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub now: Timestamp,
    pub size: u32,
    pub key_ttl: Option<SignedDuration>,
    pub verification: bool,
    /// Present keys, oldest first (ties by name).
    pub keys: Vec<KeySecret>,
    /// Records by suffix.
    pub records: BTreeMap<String, RecordView>,
    /// Key names this process saw in the pool last time (to notice takes without records).
    pub known: HashSet<String>,
    /// Key names this process deleted itself (not takes).
    pub deleted_by_us: HashSet<String>,
    /// Suffixes whose key Secret this process failed to create (their pending records go).
    pub failed_creates: HashSet<String>,
    /// The id of the pepper new fast hashes are made under.
    pub pepper_id: String,
}

/// What happens to a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordChange {
    /// pending → available: its key Secret exists.
    Promote,
    /// → taken at this instant: its key Secret is gone.
    Take(Timestamp),
    /// A consumed record whose key Secret is gone gets its `takenAt` (state unchanged).
    AddTakenAt(Timestamp),
    /// Expired, discarded, or no longer wanted.
    Delete,
    /// Its fast hash again, under the current pepper, from the key still in the pool.
    Rekey,
}

/// Why a key Secret is deleted by keyward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Unused for longer than `keyTTL`.
    Expired,
    /// `size` shrank: the newest go.
    Surplus,
    /// It was presented at a verifier before anyone took it.
    Consumed,
}

/// The decision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub records: Vec<(String, RecordChange)>,
    pub removals: Vec<(KeySecret, Removal)>,
    /// Keys to hash and record because verification is on and they have no record.
    pub unrecorded: Vec<KeySecret>,
    /// New keys to generate.
    pub create: usize,
    /// Keys that left the pool by being taken since last time.
    pub taken: u64,
    /// Keys available once this plan is carried out.
    pub available: usize,
    /// The next instant something changes by itself (a key's TTL, a record's expiry).
    pub wake_at: Option<Timestamp>,
}

impl Plan {
    /// Whether carrying it out writes anything.
    pub fn writes(&self) -> bool {
        !self.records.is_empty()
            || !self.removals.is_empty()
            || !self.unrecorded.is_empty()
            || self.create > 0
    }
}

/// Decides.
pub fn decide(o: &Observed) -> Plan {
    let mut plan = Plan::default();
    let present: HashSet<&str> = o.keys.iter().map(|k| k.suffix.as_str()).collect();
    let fingerprints: HashMap<&str, &str> = o
        .keys
        .iter()
        .filter_map(|k| Some((k.suffix.as_str(), k.fingerprint.as_deref()?)))
        .collect();
    let present_names: HashSet<&str> = o.keys.iter().map(|k| k.name.as_str()).collect();
    let wake = |t: Timestamp, plan: &mut Plan| {
        if t > o.now {
            plan.wake_at = Some(plan.wake_at.map_or(t, |w| w.min(t)));
        }
    };
    // Keys that are leaving: presented before anyone took them.
    let mut leaving: HashSet<String> = HashSet::new();
    if o.verification {
        for (suffix, view) in &o.records {
            let r = &view.record;
            let here = present.contains(suffix.as_str());
            let name = format!("{}-{suffix}", r.pool.name);
            let change = match r.state {
                UseState::Pending if here => Some(RecordChange::Promote),
                UseState::Pending if o.failed_creates.contains(suffix) => {
                    Some(RecordChange::Delete)
                }
                // After a restart a never-created key cannot be told from a taken one.
                UseState::Pending => Some(RecordChange::Take(o.now)),
                // Still in the pool, so its key can be read: a new pepper re-keys it (only
                // when the key there is the one recorded).
                UseState::Available if here => (r.key.pepper_id != o.pepper_id
                    && fingerprints.get(suffix.as_str()) == Some(&r.key.fingerprint.as_str()))
                .then_some(RecordChange::Rekey),
                UseState::Available if o.deleted_by_us.contains(&name) => {
                    Some(RecordChange::Delete)
                }
                UseState::Available => {
                    plan.taken += 1;
                    Some(RecordChange::Take(o.now))
                }
                UseState::Consumed if here => {
                    leaving.insert(suffix.clone());
                    None
                }
                UseState::Consumed if r.taken_at.is_none() => Some(RecordChange::AddTakenAt(o.now)),
                UseState::Taken | UseState::Consumed => match r.expires_at() {
                    Some(t) if t <= o.now => Some(RecordChange::Delete),
                    Some(t) => {
                        wake(t, &mut plan);
                        None
                    }
                    None => None,
                },
            };
            if let Some(change) = change {
                plan.records.push((suffix.clone(), change));
            }
        }
        for key in &o.keys {
            if !o.records.contains_key(&key.suffix) {
                plan.unrecorded.push(key.clone());
            }
        }
    } else {
        // Verification turned off: records go (their taken keys stop verifying).
        for suffix in o.records.keys() {
            plan.records.push((suffix.clone(), RecordChange::Delete));
        }
        plan.taken = o
            .known
            .iter()
            .filter(|n| !present_names.contains(n.as_str()) && !o.deleted_by_us.contains(*n))
            .count() as u64;
    }
    let mut usable: Vec<&KeySecret> = Vec::new();
    for key in &o.keys {
        if leaving.contains(&key.suffix) {
            plan.removals.push((key.clone(), Removal::Consumed));
            continue;
        }
        if let Some(ttl) = o.key_ttl
            && let Ok(until) = key.created_at.checked_add(ttl)
        {
            if until <= o.now {
                plan.removals.push((key.clone(), Removal::Expired));
                continue;
            }
            wake(until, &mut plan);
        }
        usable.push(key);
    }
    let size = o.size as usize;
    if usable.len() > size {
        // Oldest first: the newest surplus goes.
        for key in usable.split_off(size).into_iter().rev() {
            plan.removals.push((key.clone(), Removal::Surplus));
        }
    }
    plan.available = usable.len();
    plan.create = size.saturating_sub(usable.len());
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{KeyHash, Owner};

    fn now() -> Timestamp {
        "2026-06-01T12:00:00Z".parse().expect("ts")
    }

    fn key(suffix: &str, age_secs: i64) -> KeySecret {
        KeySecret {
            name: format!("p-{suffix}"),
            suffix: suffix.into(),
            created_at: now() - SignedDuration::from_secs(age_secs),
            uid: format!("uid-{suffix}"),
            resource_version: "1".into(),
            fingerprint: None,
        }
    }

    fn record(suffix: &str, state: UseState) -> (String, RecordView) {
        let key = KeyHash {
            key_id: "id".into(),
            hash: "$argon2id$…".into(),
            fast_hash: "ff".into(),
            pepper_id: "p".into(),
            lookup_id: None,
            fingerprint: "f".into(),
            preview: "inv_…".into(),
            issued_at: now(),
            expires_at: None,
            imported: false,
            weak: false,
        };
        let record = SingleUseRecord {
            pool: Owner {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "pool-uid".into(),
            },
            suffix: suffix.into(),
            format: None,
            key,
            state,
            taken_at: None,
            consumed_at: None,
            issued_ttl: std::time::Duration::from_secs(3600),
        };
        (
            suffix.into(),
            RecordView {
                record,
                resource_version: "1".into(),
            },
        )
    }

    fn observed(size: u32, keys: Vec<KeySecret>) -> Observed {
        Observed {
            now: now(),
            size,
            keys,
            pepper_id: "p".into(),
            ..Default::default()
        }
    }

    #[test]
    fn tops_up_to_size_and_never_beyond() {
        let p = decide(&observed(5, vec![key("a", 10), key("b", 5)]));
        assert_eq!((p.create, p.available), (3, 2));
        assert!(!decide(&observed(2, vec![key("a", 10), key("b", 5)])).writes());
    }

    #[test]
    fn shrinking_removes_the_newest_surplus() {
        let p = decide(&observed(
            1,
            vec![key("old", 30), key("mid", 20), key("new", 10)],
        ));
        let removed: Vec<&str> = p.removals.iter().map(|(k, _)| k.suffix.as_str()).collect();
        assert_eq!(removed, ["new", "mid"]);
        assert!(p.removals.iter().all(|(_, r)| *r == Removal::Surplus));
        assert_eq!((p.create, p.available), (0, 1));
    }

    #[test]
    fn unused_keys_past_their_ttl_are_replaced_and_the_next_expiry_wakes_us() {
        let mut o = observed(2, vec![key("stale", 7200), key("fresh", 600)]);
        o.key_ttl = Some(SignedDuration::from_hours(1));
        let p = decide(&o);
        assert_eq!(p.removals, vec![(key("stale", 7200), Removal::Expired)]);
        assert_eq!(p.create, 1);
        assert_eq!(p.wake_at, Some(now() + SignedDuration::from_secs(3000)));
    }

    #[test]
    fn records_move_forward_with_their_keys() {
        let mut o = observed(3, vec![key("pend", 1), key("avail", 2)]);
        o.verification = true;
        o.records = [
            record("pend", UseState::Pending),
            record("avail", UseState::Available),
            record("gone", UseState::Available),
            record("lost", UseState::Pending),
        ]
        .into();
        let p = decide(&o);
        assert_eq!(
            p.records,
            vec![
                ("gone".into(), RecordChange::Take(now())),
                ("lost".into(), RecordChange::Take(now())),
                ("pend".into(), RecordChange::Promote),
            ]
        );
        assert_eq!(p.taken, 1, "a pending record was never handed out");
        // A create this process saw fail: its pending record is discarded at once.
        o.failed_creates.insert("lost".into());
        assert!(
            decide(&o)
                .records
                .contains(&("lost".into(), RecordChange::Delete))
        );
        // A key keyward deleted itself is not a take.
        o.deleted_by_us.insert("p-gone".into());
        let p = decide(&o);
        assert!(p.records.contains(&("gone".into(), RecordChange::Delete)));
        assert_eq!(p.taken, 0);
    }

    #[test]
    fn a_key_presented_before_anyone_took_it_leaves_the_pool() {
        let mut o = observed(2, vec![key("used", 3), key("fresh", 2)]);
        o.verification = true;
        o.records = [
            record("used", UseState::Consumed),
            record("fresh", UseState::Available),
        ]
        .into();
        let p = decide(&o);
        assert_eq!(p.removals, vec![(key("used", 3), Removal::Consumed)]);
        assert_eq!((p.available, p.create), (1, 1));
        // Once its Secret is gone, the record gets takenAt and keeps its state.
        o.keys.remove(0);
        let p = decide(&o);
        assert_eq!(
            p.records,
            vec![("used".into(), RecordChange::AddTakenAt(now()))]
        );
    }

    #[test]
    fn taken_and_consumed_records_expire_issued_ttl_after_they_left() {
        let mut o = observed(0, vec![]);
        o.verification = true;
        let (s, mut taken) = record("t", UseState::Taken);
        taken.record.taken_at = Some(now() - SignedDuration::from_mins(30));
        let (c, mut consumed) = record("c", UseState::Consumed);
        consumed.record.consumed_at = Some(now() - SignedDuration::from_hours(2));
        consumed.record.taken_at = Some(now() - SignedDuration::from_mins(1));
        o.records = [(s, taken), (c, consumed)].into();
        let p = decide(&o);
        assert_eq!(p.records, vec![("c".into(), RecordChange::Delete)]);
        assert_eq!(p.wake_at, Some(now() + SignedDuration::from_mins(30)));
    }

    #[test]
    fn without_verification_takes_are_noticed_by_absence() {
        let mut o = observed(2, vec![key("b", 1)]);
        o.known = ["p-a".to_string(), "p-b".to_string(), "p-c".to_string()].into();
        o.deleted_by_us = ["p-c".to_string()].into();
        let p = decide(&o);
        assert_eq!((p.taken, p.create), (1, 1));
        // Records left from when verification was on go.
        o.records = [record("x", UseState::Taken)].into();
        assert_eq!(decide(&o).records, vec![("x".into(), RecordChange::Delete)]);
    }

    #[test]
    fn a_new_pepper_rekeys_records_whose_key_is_still_in_the_pool() {
        let mut readable = key("here", 2);
        readable.fingerprint = Some("f".into());
        let mut tampered = key("odd", 2);
        tampered.fingerprint = Some("not-f".into());
        let mut o = observed(3, vec![readable, tampered, key("pend", 1)]);
        o.verification = true;
        o.pepper_id = "new".into();
        o.records = [
            record("here", UseState::Available),
            record("odd", UseState::Available),
            record("pend", UseState::Pending),
            record("gone", UseState::Taken),
        ]
        .into();
        let p = decide(&o);
        assert_eq!(
            p.records,
            vec![
                ("here".into(), RecordChange::Rekey),
                ("pend".into(), RecordChange::Promote),
            ],
            "a taken key cannot be read, a key that is not the one recorded is not re-keyed, a pending one is promoted first"
        );
        o.pepper_id = "p".into();
        assert!(
            !decide(&o)
                .records
                .contains(&("here".into(), RecordChange::Rekey))
        );
    }
}
