//! The ApiKey's status: conditions and fields computed from what was observed and the step
//! taken (pure), written only when they changed, with an Event when Ready changes reason.

use jiff::Timestamp;
use kube::Resource;

use super::plan::{Observed, Step, Workload};
use super::{ApiKeys, Error, Snapshot, build, stale_or};
use crate::conditions::{self, Reason, Wanted};
use crate::controller::events::Note;
use crate::crd::{ApiKey, ApiKeyStatus, ConditionStatus, Delivery};

/// Advisories: conditions that never make Ready false (reason, message).
pub fn advisories(ak: &ApiKey, o: &Observed, snap: &Snapshot) -> Vec<(Reason, String)> {
    let mut advisories = Vec::new();
    if !o.rotation.missing_targets.is_empty() {
        advisories.push((
            Reason::RestartTargetMissing,
            format!(
                "restart targets not found: {}; rotations still happen",
                o.rotation.missing_targets.join(", ")
            ),
        ));
    }
    if snap.weak_import {
        advisories.push((
            Reason::WeakKey,
            "the imported key has fewer than 128 bits of estimated entropy; prefer a generated key"
                .into(),
        ));
    }
    if let Some(message) = build::policy(ak).and_then(|p| p.grace_advisory(o.now)) {
        advisories.push((Reason::GracePeriodExceedsInterval, message));
    }
    if o.disabled && o.rotation.next_at.is_some() {
        advisories.push((
            Reason::RotationPaused,
            "the key is disabled: scheduled rotation is paused (manual rotation and revoke-previous still act); once enabled it rotates at most once to catch up"
                .into(),
        ));
    }
    advisories
}

/// The Ready (and Advisory) conditions for a step's outcome. `advisories` are
/// (reason, message) pairs that never make Ready false; the first reason names the
/// condition, all messages are kept.
pub fn conditions_for(step: &Step, o: &Observed, advisories: &[(Reason, String)]) -> Vec<Wanted> {
    let record = o.record.as_ref();
    let current = record.and_then(|r| r.current.as_ref());
    let mut wanted = match step {
        Step::Invalid { message } => vec![Wanted::not_ready(Reason::InvalidSpec, message.clone())],
        Step::Conflict { message } => {
            vec![Wanted::not_ready(Reason::SecretConflict, message.clone())]
        }
        Step::ImportFailed { message } => {
            vec![Wanted::not_ready(Reason::ImportFailed, message.clone())]
        }
        Step::Converged => {
            let preview = current.map(|c| c.preview.clone()).unwrap_or_default();
            if o.disabled {
                vec![Wanted::not_ready(
                    Reason::Disabled,
                    format!("key {preview} is disabled: the verifier refuses it"),
                )]
            } else if o.expires_at.is_some_and(|t| t <= o.now) {
                vec![Wanted::not_ready(
                    Reason::Expired,
                    format!(
                        "key {preview} expired at {}",
                        crate::clock::rfc3339(o.expires_at.unwrap_or(o.now))
                    ),
                )]
            } else if let Workload::Ours {
                revealed_at: Some(at),
                ..
            } = &o.workload
            {
                vec![Wanted::ready(
                    Reason::Revealed,
                    format!("key {preview} was revealed at {at}; only its hash remains"),
                )]
            } else if o.delivery == Delivery::ShowOnce {
                let until = o
                    .reveal_deadline
                    .map(crate::clock::rfc3339)
                    .unwrap_or_default();
                vec![Wanted::ready(
                    Reason::KeyIssued,
                    format!(
                        "key {preview} is waiting to be revealed once with `keyward reveal` (until {until})"
                    ),
                )]
            } else if record.is_some_and(|r| r.rotation.count > 0) {
                vec![Wanted::ready(
                    Reason::Rotated,
                    format!(
                        "key {preview} is current after {} rotation(s)",
                        record.map_or(0, |r| r.rotation.count)
                    ),
                )]
            } else {
                let how = if current.is_some_and(|c| c.imported) {
                    "imported"
                } else {
                    "issued"
                };
                vec![Wanted::ready(
                    Reason::KeyIssued,
                    format!("key {preview} {how} to Secret {}", o.desired_secret),
                )]
            }
        }
        // Steps that write: not ready until they converge.
        _ => vec![Wanted::new(
            conditions::READY,
            ConditionStatus::False,
            Reason::Progressing,
            "delivering the key",
        )],
    };
    if let Some((reason, _)) = advisories.first() {
        let message = advisories
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        wanted.push(Wanted::advisory(*reason, message));
    }
    wanted
}

/// The status from the record and the outcome, merged onto the existing status so that
/// unchanged conditions keep their transition times and verifier usage stays.
pub fn status(
    existing: &ApiKeyStatus,
    o: &Observed,
    wanted: &[Wanted],
    hash_secret: &str,
) -> ApiKeyStatus {
    let existing = existing.clone();
    let record = o.record.as_ref();
    let current = record.and_then(|r| r.current.as_ref());
    let serving_secret = match &o.workload {
        Workload::Ours { .. } => Some(o.desired_secret.clone()),
        _ => existing.secret_name.clone(),
    };
    ApiKeyStatus {
        observed_generation: o.generation,
        conditions: conditions::merge(&existing.conditions, wanted, o.generation, o.now),
        key_id: current.map(|c| c.key_id.clone()),
        preview: current.map(|c| c.preview.clone()),
        fingerprint: current.map(|c| c.fingerprint.clone()),
        secret_name: serving_secret,
        hash_secret_name: record.map(|_| hash_secret.to_string()),
        issued_at: current.map(|c| crate::clock::kube_time(c.issued_at)),
        expires_at: o
            .expires_at
            .map(crate::clock::kube_time)
            .filter(|_| current.is_some()),
        last_rotated_at: record
            .and_then(|r| r.rotation.last_rotated_at.map(crate::clock::kube_time)),
        next_rotation_at: o
            .rotation
            .next_at
            .filter(|_| current.is_some())
            .map(crate::clock::kube_time),
        rotation_count: record.map_or(0, |r| r.rotation.count),
        last_rotation_request: record.and_then(|r| r.rotation.last_request.clone()),
        last_revocation_request: record.and_then(|r| r.rotation.last_revocation.clone()),
        revealed_at: match &o.workload {
            Workload::Ours {
                revealed_at: Some(at),
                ..
            } => at.parse::<Timestamp>().ok().map(crate::clock::kube_time),
            _ => None,
        },
        usage: existing.usage,
    }
}

/// Status equality that ignores verifier usage (not keyward's to write).
fn same_status(a: &ApiKeyStatus, b: &ApiKeyStatus) -> bool {
    let strip = |s: &ApiKeyStatus| ApiKeyStatus {
        usage: None,
        ..s.clone()
    };
    strip(a) == strip(b)
}

fn advisory_reason(status: &ApiKeyStatus) -> Option<Reason> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::ADVISORY)
        .and_then(Reason::of)
}

/// The Event a change of Ready announces, if any (the Event reason is the condition's).
fn ready_event(before: Option<Reason>, after: &crate::crd::Condition) -> Option<Note> {
    let message = after.message.clone();
    let reason = Reason::of(after)?;
    match reason {
        Reason::InvalidSpec | Reason::SecretConflict | Reason::ImportFailed | Reason::Expired => {
            Some(Note::warning(reason.as_str(), "Reconcile", message))
        }
        Reason::Revealed | Reason::Disabled => {
            Some(Note::normal(reason.as_str(), "Reconcile", message))
        }
        _ if before == Some(Reason::Disabled) && after.status == ConditionStatus::True => {
            Some(Note::normal("Enabled", "Reconcile", message))
        }
        _ => None,
    }
}

/// Writes the status if it changed, and records an Event when Ready changes reason.
pub async fn write(
    r: &ApiKeys,
    ak: &ApiKey,
    base_rv: Option<String>,
    o: &Observed,
    step: &Step,
    snap: &Snapshot,
) -> Result<(), Error> {
    let ctx = &r.ctx;
    let advisories = advisories(ak, o, snap);
    let wanted = conditions_for(step, o, &advisories);
    let existing = ctx
        .status_baseline(ak, ak.status.clone())
        .unwrap_or_default();
    let mut status = status(
        &existing,
        o,
        &wanted,
        &crate::record::name_for(&build::owner(ak).uid),
    );
    if same_status(&existing, &status) {
        return Ok(());
    }
    let before = conditions::ready(&existing.conditions).map(|c| (c.status, c.reason.clone()));
    let after = conditions::ready(&status.conditions).map(|c| (c.status, c.reason.clone()));
    // Usage belongs to the verifier: never part of keyward's apply.
    status.usage = None;
    ctx.apply_status(ak, base_rv, &status)
        .await
        .map_err(stale_or("writing the status"))?;
    let about = ak.object_ref(&());
    if before != after
        && let Some(ready) = conditions::ready(&status.conditions)
        && let Some(note) = ready_event(
            conditions::ready(&existing.conditions).and_then(Reason::of),
            ready,
        )
    {
        ctx.publish(&about, note).await;
    }
    let missing = Reason::RestartTargetMissing;
    let advisory_after = advisory_reason(&status);
    if advisory_after != advisory_reason(&existing)
        && advisory_after == Some(missing)
        && let Some((_, message)) = advisories.iter().find(|(r, _)| *r == missing)
    {
        ctx.publish(
            &about,
            Note::warning(missing.as_str(), "Restart", message.clone()),
        )
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::plan::KeyMatch;
    use super::super::plan::fixtures::*;
    use super::*;

    #[test]
    fn ready_reasons() {
        let o = observed(ours(KeyMatch::Current), Some(record(true, false)));
        assert_eq!(
            conditions_for(&Step::Converged, &o, &[])[0].reason,
            Reason::KeyIssued
        );
        let mut d = o.clone();
        d.disabled = true;
        let c = conditions_for(&Step::Converged, &d, &[]);
        assert_eq!(
            (c[0].status, c[0].reason),
            (ConditionStatus::False, Reason::Disabled)
        );
        let mut e = o.clone();
        e.expires_at = Some(now());
        assert_eq!(
            conditions_for(&Step::Converged, &e, &[])[0].reason,
            Reason::Expired
        );
        let weak = conditions_for(&Step::Converged, &o, &[(Reason::WeakKey, "weak".into())]);
        assert_eq!(
            (weak[1].type_, weak[1].reason),
            ("Advisory", Reason::WeakKey)
        );
        assert_eq!(
            weak[0].status,
            ConditionStatus::True,
            "an advisory never makes Ready false"
        );
    }
}
