//! The ApiKey pipeline's building half: from the spec, what was observed and the time, the
//! objects keyward wants (workload Secret, hash record at each step, history entries,
//! Events). Pure: no I/O, time and hashes are inputs.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::{Resource, ResourceExt};

use super::plan::{self, Observed, Source, Workload};
use super::{DEFAULT_GRACE, REVEALED_AT};
use crate::clock::ms;
use crate::controller::events::Note;
use crate::crd::{ApiKey, DeletionPolicy, KeyFormat, annotations, labels};
use crate::history::{self, Action, Entry, Reason};
use crate::keys::{self, Pepper, PlainKey, format};
use crate::record::{self, Access, HashRecord, KeyHash, Owner, PreviousKey};
use crate::rotation::Policy;

/// The workload Secret's name the spec asks for.
pub fn desired_secret(ak: &ApiKey) -> String {
    ak.spec.secret_name.clone().unwrap_or_else(|| ak.name_any())
}

pub fn format_of(ak: &ApiKey) -> KeyFormat {
    ak.spec.format.clone().unwrap_or_default()
}

pub fn history_limit(ak: &ApiKey) -> usize {
    ak.spec
        .rotation
        .as_ref()
        .map_or(history::DEFAULT_LIMIT, |r| r.history_limit as usize)
}

pub fn policy(ak: &ApiKey) -> Option<Policy> {
    Policy::from_spec(ak.spec.rotation.as_ref()).ok()
}

pub fn grace(ak: &ApiKey) -> SignedDuration {
    policy(ak).map_or(DEFAULT_GRACE, |p| p.grace)
}

/// Problems with the spec that admission would normally refuse, checked again here for
/// objects admitted elsewhere (or before a CRD upgrade).
pub fn spec_problem(ak: &ApiKey) -> Option<String> {
    let spec = &ak.spec;
    let mut problems = Vec::new();
    if spec.import_from.is_none()
        && let Err(e) = plan::check_format(&format_of(ak))
    {
        problems.push(format!("format: {e}"));
    }
    if let Some(at) = &spec.expires_at
        && let Err(e) = plan::parse_instant("expiresAt", at)
    {
        problems.push(e);
    }
    for (field, value) in [
        ("expiresAfter", &spec.expires_after),
        ("revealWindow", &spec.reveal_window),
    ] {
        if let Some(v) = value
            && let Err(e) = plan::parse_duration(field, v)
        {
            problems.push(e);
        }
    }
    if let Err(e) = Policy::from_spec(spec.rotation.as_ref()) {
        problems.push(e);
    }
    if ak.name_any().len() > 63 {
        problems.push(
            "metadata.name must be at most 63 characters: keyward puts it in label values".into(),
        );
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// When a key issued at `issued` stops verifying.
pub fn expiry(ak: &ApiKey, issued: Timestamp) -> Option<Timestamp> {
    let at = ak
        .spec
        .expires_at
        .as_deref()
        .and_then(|v| v.parse::<Timestamp>().ok());
    let after = ak
        .spec
        .expires_after
        .as_deref()
        .and_then(|v| plan::parse_duration("expiresAfter", v).ok())
        .and_then(|d| issued.checked_add(d).ok());
    [at, after].into_iter().flatten().min()
}

pub fn access(ak: &ApiKey) -> Access {
    let spec = &ak.spec;
    Access {
        owner: spec.owner.clone(),
        scopes: spec.scopes.clone(),
        disabled: spec.disabled,
        requests_per_minute: spec.rate_limit.as_ref().map(|r| r.requests_per_minute),
    }
}

pub fn owner(ak: &ApiKey) -> Owner {
    Owner {
        namespace: ak.namespace().unwrap_or_default(),
        name: ak.name_any(),
        uid: ak.uid().unwrap_or_default(),
    }
}

/// The plain key in a Secret's data key, if any.
pub fn secret_key_of(ak: &ApiKey, secret: &Secret) -> Option<PlainKey> {
    let bytes = secret.data.as_ref()?.get(&ak.spec.secret_key)?;
    let text = String::from_utf8(bytes.0.clone()).ok()?;
    (!text.is_empty()).then(|| PlainKey::new(text))
}

/// Whether a Secret is this ApiKey's: keyward's labels naming this ApiKey, and no
/// controller other than this ApiKey; `Ok(true)` when it was retained (no owner). `Err`
/// says why not.
pub fn ownership(ak: &ApiKey, secret: &Secret) -> Result<bool, String> {
    let name = secret.name_any();
    let uid = ak.uid().unwrap_or_default();
    let l = secret.labels();
    let managed = l.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGED_BY_VALUE);
    let ours_by_label =
        managed && l.get(labels::APIKEY) == Some(&ak.name_any()) && l.get(labels::ROLE).is_none();
    if !ours_by_label {
        return Err(match l.get(labels::APIKEY) {
            Some(other) if managed => format!(
                "Secret {name:?} already holds the key of ApiKey {other:?}; choose another spec.secretName"
            ),
            _ => format!(
                "Secret {name:?} already exists and is not managed by keyward; keyward never modifies or deletes it. Choose another spec.secretName, or delete that Secret"
            ),
        });
    }
    if let Some(other) = secret
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.uid != uid)
    {
        return Err(format!(
            "Secret {name:?} is controlled by {} {:?} (uid {})",
            other.kind, other.name, other.uid
        ));
    }
    Ok(!secret.owner_references().iter().any(|o| o.uid == uid))
}

/// Why a Secret that is not in keyward's cache is in the way.
pub fn foreign(name: &str) -> String {
    format!(
        "Secret {name:?} already exists and is not managed by keyward; keyward never modifies or deletes it. Choose another spec.secretName, or delete that Secret"
    )
}

/// A new key's record entry, given its argon2id PHC string.
pub fn key_hash(
    ak: &ApiKey,
    key: &PlainKey,
    phc: String,
    (imported, weak): (bool, bool),
    pepper: &Pepper,
    now: Timestamp,
) -> KeyHash {
    let format = format_of(ak);
    let (lookup_id, fingerprint, preview) = if imported {
        let fp = if weak {
            pepper.keyed_fingerprint(key)
        } else {
            keys::fingerprint(key)
        };
        (None, fp, format::imported_preview(key))
    } else {
        let lookup = format::parse(key.expose(), &format).map(|p| p.lookup_id.to_string());
        (lookup, keys::fingerprint(key), keys::preview(key, &format))
    };
    KeyHash {
        key_id: uuid::Uuid::new_v4().to_string(),
        hash: phc,
        fast_hash: pepper.fast_hash(key.expose()),
        pepper_id: pepper.id(),
        lookup_id,
        fingerprint,
        preview,
        issued_at: ms(now),
        expires_at: expiry(ak, now).map(ms),
        imported,
        weak: imported && weak,
    }
}

/// Step 1 of an issue: the record with the new key pending.
pub fn with_pending(
    ak: &ApiKey,
    record: Option<&HashRecord>,
    hashed: KeyHash,
    request: Option<String>,
) -> HashRecord {
    let mut record = record.cloned().unwrap_or_else(|| HashRecord {
        apikey: owner(ak),
        ..Default::default()
    });
    let imported = hashed.imported;
    record.pending = Some(hashed);
    record.pending_request = request;
    record.format = (!imported).then(|| format_of(ak));
    record.access = access(ak);
    record
}

/// The history entry that records an issue.
pub fn issue_entry(
    hashed: &KeyHash,
    previous: Option<&KeyHash>,
    action: Action,
    reason: Reason,
    now: Timestamp,
) -> Entry {
    Entry {
        at: ms(now),
        action,
        reason,
        fingerprint: hashed.fingerprint.clone(),
        preview: hashed.preview.clone(),
        previous_fingerprint: previous.map(|p| p.fingerprint.clone()),
    }
}

/// Pending → current; the old current joins the previous keys until its grace ends. The
/// rotation count and the consumed request are recorded in this same write.
pub fn promoted(
    mut record: HashRecord,
    grace: SignedDuration,
    history: Option<Vec<Entry>>,
    import_source: Option<record::ImportSource>,
    now: Timestamp,
) -> Option<HashRecord> {
    let pending = record.pending.take()?;
    if let Some(old) = record.current.take() {
        if grace > SignedDuration::ZERO
            && let Ok(until) = now.checked_add(grace)
        {
            record.previous.push(PreviousKey {
                key: old,
                valid_until: ms(until),
            });
        }
        record.rotation.count += 1;
        record.rotation.last_rotated_at = Some(ms(now));
    }
    if let Some(request) = record.pending_request.take() {
        record.rotation.last_request = Some(request);
    }
    record.previous.retain(|p| p.valid_until > now);
    record.import_source = if pending.imported {
        import_source
    } else {
        None
    };
    record.current = Some(pending);
    if let Some(history) = history {
        record.history = history;
    }
    Some(record)
}

/// A pending key that was never delivered is dropped, never promoted.
pub fn discarded(mut record: HashRecord) -> HashRecord {
    record.pending = None;
    record.pending_request = None;
    record
}

/// Emergency revocation: every previous key stops verifying now. Returns the record and
/// the revoked keys.
pub fn revoked(
    mut record: HashRecord,
    request: &str,
    limit: usize,
    now: Timestamp,
) -> (HashRecord, Vec<PreviousKey>) {
    let revoked = std::mem::take(&mut record.previous);
    record.rotation.last_revocation = Some(request.to_string());
    // One entry per revoked key, naming that key (not a rotation: the count is unchanged).
    for p in &revoked {
        let entry = Entry {
            at: ms(now),
            action: Action::Revoked,
            reason: Reason::Manual,
            fingerprint: p.key.fingerprint.clone(),
            preview: p.key.preview.clone(),
            previous_fingerprint: None,
        };
        record.history = history::append(record.history, entry, limit);
    }
    (record, revoked)
}

/// Converged: the record with the spec's access data, expiry, format, history entries for
/// disable/enable/expiry, the current key's fast hash under the current pepper (from the
/// delivered key, when it was made under another), previous keys past their grace
/// dropped, and restart targets as observed.
pub fn synced(
    ak: &ApiKey,
    o: &Observed,
    record: &HashRecord,
    delivered: Option<&PlainKey>,
    pepper: &Pepper,
) -> HashRecord {
    let now = o.now;
    let mut desired = record.clone();
    let Some(current) = &record.current else {
        return desired;
    };
    desired.access = access(ak);
    if !current.imported {
        desired.format = Some(format_of(ak));
    }
    let mut current_desired = current.clone();
    current_desired.expires_at = expiry(ak, current.issued_at).map(ms);
    if current.pepper_id != pepper.id()
        && let Some(key) = delivered
    {
        current_desired.fast_hash = pepper.fast_hash(key.expose());
        current_desired.pepper_id = pepper.id();
    }
    desired.previous.retain(|p| p.valid_until > now);
    let entry = |action: Action, reason: Reason| Entry {
        at: ms(now),
        action,
        reason,
        fingerprint: current.fingerprint.clone(),
        preview: current.preview.clone(),
        previous_fingerprint: None,
    };
    let limit = history_limit(ak);
    if record.access.disabled != ak.spec.disabled {
        let action = if ak.spec.disabled {
            Action::Disabled
        } else {
            Action::Enabled
        };
        desired.history = history::append(desired.history, entry(action, Reason::Manual), limit);
    }
    let expired = current_desired.expires_at.is_some_and(|t| t <= now);
    let recorded_expiry = desired
        .history
        .iter()
        .rev()
        .find(|e| {
            e.fingerprint == current.fingerprint
                && matches!(
                    e.action,
                    Action::Expired | Action::Rotated | Action::Generated | Action::Imported
                )
        })
        .is_some_and(|e| e.action == Action::Expired);
    if expired && !recorded_expiry {
        desired.history = history::append(
            desired.history,
            entry(Action::Expired, Reason::Expired),
            limit,
        );
    }
    desired.current = Some(current_desired);
    desired.restarts = o.rotation.restarts.clone();
    desired
}

/// The workload Secret as keyward wants it: key (unless revealed), labels, annotations,
/// ownerReference by deletion policy.
pub fn workload_secret(
    ak: &ApiKey,
    name: &str,
    key: Option<&PlainKey>,
    current: &KeyHash,
    history: &[Entry],
    revealed_at: Option<&str>,
) -> Secret {
    let template = ak.spec.secret_template.clone().unwrap_or_default();
    let mut labels_map: BTreeMap<String, String> = template.labels.clone();
    labels_map.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
    labels_map.insert(labels::APIKEY.into(), ak.name_any());
    let mut annotations_map: BTreeMap<String, String> = template.annotations.clone();
    annotations_map.insert(annotations::KEY_ID.into(), current.key_id.clone());
    annotations_map.insert(annotations::FINGERPRINT.into(), current.fingerprint.clone());
    annotations_map.insert(annotations::ISSUED_AT.into(), current.issued_at.to_string());
    annotations_map.insert(annotations::HISTORY.into(), history::render(history));
    if let Some(at) = revealed_at {
        annotations_map.insert(REVEALED_AT.into(), at.to_string());
    }
    let owner_references = match ak.spec.deletion_policy {
        DeletionPolicy::Delete => ak.controller_owner_ref(&()).map(|o| vec![o]),
        DeletionPolicy::Retain => None,
    };
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: ak.namespace(),
            labels: Some(labels_map),
            annotations: Some(annotations_map),
            owner_references,
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: key.map(|k| {
            BTreeMap::from([(
                ak.spec.secret_key.clone(),
                ByteString(k.expose().as_bytes().to_vec()),
            )])
        }),
        ..Default::default()
    }
}

/// The workload Secret a converged key wants, if the live one lacks any of it.
pub fn synced_workload(
    ak: &ApiKey,
    o: &Observed,
    live: &Secret,
    delivered: Option<&PlainKey>,
    record: &HashRecord,
) -> Option<Secret> {
    let current = record.current.as_ref()?;
    let revealed_at = match &o.workload {
        Workload::Ours { revealed_at, .. } => revealed_at.clone(),
        _ => None,
    };
    let key = if revealed_at.is_some() {
        None
    } else {
        delivered
    };
    let wanted = workload_secret(
        ak,
        &live.name_any(),
        key,
        current,
        &record.history,
        revealed_at.as_deref(),
    );
    workload_differs(&wanted, live, &ak.spec.secret_key).then_some(wanted)
}

/// Whether the live workload Secret lacks anything keyward wants on it (other managers'
/// labels, annotations and data keys are left alone).
pub fn workload_differs(wanted: &Secret, live: &Secret, secret_key: &str) -> bool {
    let contains = |want: &Option<BTreeMap<String, String>>, have: &BTreeMap<String, String>| {
        want.iter().flatten().all(|(k, v)| have.get(k) == Some(v))
    };
    let owners = |s: &Secret| {
        s.owner_references()
            .iter()
            .map(|o| o.uid.clone())
            .collect::<Vec<_>>()
    };
    let key_of = |s: &Secret| s.data.as_ref().and_then(|d| d.get(secret_key)).cloned();
    !contains(&wanted.metadata.labels, live.labels())
        || !contains(&wanted.metadata.annotations, live.annotations())
        || owners(wanted) != owners(live)
        || key_of(wanted) != key_of(live)
}

/// The Event that announces an issue.
pub fn issue_event(
    reason: &Reason,
    source: Source,
    rotated: bool,
    hashed: &KeyHash,
    secret: &str,
) -> Note {
    let (warning, event, verb) = match reason {
        Reason::SecretLost => (
            true,
            "SecretLost",
            "the workload Secret was deleted; issued a new key",
        ),
        Reason::SecretTampered => (
            true,
            "SecretTampered",
            "the workload Secret no longer held the issued key; issued a new key",
        ),
        Reason::Adopted => (
            false,
            "KeyAdopted",
            "adopted the key retained in the workload Secret",
        ),
        _ if source == Source::Import => (false, "KeyImported", "imported the key"),
        _ if rotated => (false, "Rotated", "rotated the key"),
        _ => (false, "KeyIssued", "issued a new key"),
    };
    let message = format!(
        "{verb}: {} (fingerprint {}) in Secret {secret}",
        hashed.preview, hashed.fingerprint
    );
    if warning {
        Note::warning(event, "Issue", message)
    } else {
        Note::normal(event, "Issue", message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apikey(spec: serde_json::Value) -> ApiKey {
        serde_json::from_value(json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "billing", "namespace": "shop", "uid": "u-1"},
            "spec": spec,
        }))
        .expect("ApiKey")
    }

    fn hashed(fp: &str) -> KeyHash {
        KeyHash {
            key_id: "id".into(),
            hash: "$argon2id$…".into(),
            fast_hash: "ff".into(),
            pepper_id: "p".into(),
            lookup_id: Some("abcdefgh".into()),
            fingerprint: fp.into(),
            preview: "kw_abcdefgh…".into(),
            issued_at: "2026-06-01T00:00:00Z".parse().expect("ts"),
            expires_at: None,
            imported: false,
            weak: false,
        }
    }

    #[test]
    fn the_workload_secret_follows_the_spec() {
        let ak = apikey(
            json!({"secretKey": "token", "secretTemplate": {"labels": {"team": "a"}, "annotations": {"note": "x"}}, "deletionPolicy": "Retain"}),
        );
        let key = PlainKey::new("kw_secret");
        let s = workload_secret(&ak, "billing", Some(&key), &hashed("fp"), &[], None);
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(s.labels().get("team").map(String::as_str), Some("a"));
        assert_eq!(
            s.labels().get(labels::APIKEY).map(String::as_str),
            Some("billing")
        );
        assert_eq!(
            s.annotations()
                .get(annotations::FINGERPRINT)
                .map(String::as_str),
            Some("fp")
        );
        assert!(s.owner_references().is_empty(), "Retain: no owner");
        assert_eq!(
            s.data
                .as_ref()
                .and_then(|d| d.get("token"))
                .map(|b| b.0.clone()),
            Some(b"kw_secret".to_vec())
        );
        let owned = workload_secret(
            &apikey(json!({})),
            "billing",
            None,
            &hashed("fp"),
            &[],
            None,
        );
        assert_eq!(owned.owner_references().len(), 1, "Delete: owned");
        assert!(owned.data.is_none(), "no key: nothing delivered");
    }

    #[test]
    fn revocation_records_each_revoked_key_and_is_no_rotation() {
        let now: Timestamp = "2026-06-01T12:00:00Z".parse().expect("ts");
        let mut record = HashRecord {
            current: Some(hashed("current")),
            ..Default::default()
        };
        record.rotation.count = 2;
        for fp in ["first", "second"] {
            let mut key = hashed(fp);
            key.preview = format!("kw_{fp}…");
            record.previous.push(PreviousKey {
                key,
                valid_until: "2026-06-01T13:00:00Z".parse().expect("ts"),
            });
        }
        let (after, gone) = revoked(record, "r1", 10, now);
        assert_eq!(gone.len(), 2);
        assert!(after.previous.is_empty());
        assert_eq!(after.rotation.count, 2, "a revocation is not a rotation");
        let entries: Vec<(Action, &str, &str, Option<&str>)> = after
            .history
            .iter()
            .map(|e| {
                (
                    e.action,
                    e.fingerprint.as_str(),
                    e.preview.as_str(),
                    e.previous_fingerprint.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                (Action::Revoked, "first", "kw_first…", None),
                (Action::Revoked, "second", "kw_second…", None)
            ],
            "one entry per revoked key, naming that key, never the current one"
        );
        let (again, none) = revoked(after.clone(), "r2", 10, now);
        assert!(none.is_empty());
        assert_eq!(
            again.history, after.history,
            "nothing revoked, nothing recorded"
        );
    }

    #[test]
    fn promotion_moves_the_old_key_into_its_grace_and_records_the_request() {
        let now: Timestamp = "2026-06-01T12:00:00Z".parse().expect("ts");
        let mut record = HashRecord {
            current: Some(hashed("old")),
            pending: Some(hashed("new")),
            pending_request: Some("r1".into()),
            ..Default::default()
        };
        record.previous.push(PreviousKey {
            key: hashed("ancient"),
            valid_until: "2026-06-01T11:00:00Z".parse().expect("ts"),
        });
        let next =
            promoted(record, SignedDuration::from_hours(1), None, None, now).expect("pending");
        assert_eq!(next.current.expect("current").fingerprint, "new");
        assert_eq!(next.rotation.count, 1);
        assert_eq!(next.rotation.last_request.as_deref(), Some("r1"));
        assert_eq!(
            next.previous
                .iter()
                .map(|p| (p.key.fingerprint.as_str(), p.valid_until.to_string()))
                .collect::<Vec<_>>(),
            [("old", "2026-06-01T13:00:00Z".to_string())],
            "the expired one is dropped"
        );
        assert!(next.pending.is_none() && next.pending_request.is_none());
        assert!(
            promoted(HashRecord::default(), SignedDuration::ZERO, None, None, now).is_none(),
            "nothing pending"
        );
    }

    #[test]
    fn ownership_names_the_reason() {
        let ak = apikey(json!({}));
        let mut s = workload_secret(&ak, "billing", None, &hashed("fp"), &[], None);
        assert_eq!(ownership(&ak, &s), Ok(false));
        s.metadata.owner_references = None;
        assert_eq!(ownership(&ak, &s), Ok(true), "retained");
        s.labels_mut().insert(labels::APIKEY.into(), "other".into());
        assert!(
            ownership(&ak, &s)
                .expect_err("another ApiKey's")
                .contains("ApiKey \"other\"")
        );
    }
}
