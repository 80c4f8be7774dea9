//! The ApiKey pipeline's pure half: from what was observed (spec, workload Secret, hash
//! record, import source, now) decide the one next step, and compute the status. No I/O;
//! time is an input.

use jiff::{SignedDuration, Timestamp};

use crate::crd::{Delivery, KeyFormat};
use crate::history::{Action, Reason};
use crate::record::HashRecord;

/// How the key in the workload Secret relates to the hash record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMatch {
    /// It is the record's current key.
    Current,
    /// It is the record's pending key (delivered, not yet promoted).
    Pending,
    /// It is neither: the Secret was edited.
    Other,
    /// The data key is empty or missing.
    Absent,
}

/// The workload Secret at the name the spec asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    Missing,
    /// Exists and is not this ApiKey's; never touched.
    Foreign {
        why: String,
    },
    /// Exists and belongs to this ApiKey (or was retained for an ApiKey of this name).
    Ours {
        key: KeyMatch,
        revealed_at: Option<String>,
        retained: bool,
    },
}

/// The source of an imported key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Import {
    NotConfigured,
    SecretMissing {
        secret: String,
    },
    KeyMissing {
        secret: String,
        key: String,
    },
    /// The source holds a key; whether it is the record's current one, and whether it is weak.
    Present {
        matches_current: bool,
        weak: bool,
    },
}

/// Rotation inputs (DESIGN §4), read by the I/O half.
#[derive(Debug, Clone, Default)]
pub struct RotationView {
    /// When the current key is scheduled to rotate.
    pub next_at: Option<Timestamp>,
    /// A `keyward.dev/rotate` value not yet acted on.
    pub manual_request: Option<String>,
    /// A `keyward.dev/revoke-previous` value not yet acted on.
    pub revoke_request: Option<String>,
    /// The spec's format differs from the current key's.
    pub format_changed: bool,
    /// Restart targets not yet rolled for the current key (`Deployment/web`).
    pub stale_targets: Vec<String>,
    /// Restart targets that do not exist.
    pub missing_targets: Vec<String>,
    /// Every restart target of the spec as now known (what the record should say).
    pub restarts: std::collections::BTreeMap<String, crate::record::RestartState>,
}

/// Everything the decision depends on.
#[derive(Debug, Clone)]
pub struct Observed {
    pub now: Timestamp,
    pub generation: Option<i64>,
    /// Why the spec cannot be acted on, if it cannot.
    pub spec_problem: Option<String>,
    pub desired_secret: String,
    pub workload: Workload,
    /// The Secret named in `status.secretName`, when the spec now names another and it
    /// still holds the current key.
    pub moving_from: Option<String>,
    pub record: Option<HashRecord>,
    pub import: Import,
    pub delivery: Delivery,
    /// With ShowOnce: when an unrevealed key's window closes.
    pub reveal_deadline: Option<Timestamp>,
    pub disabled: bool,
    /// The instant the current key stops verifying, if any.
    pub expires_at: Option<Timestamp>,
    pub rotation: RotationView,
}

/// Where the key of an issuance comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Fresh from the CSPRNG.
    Generate,
    /// From the import source Secret.
    Import,
    /// The key already in a retained workload Secret.
    Adopt,
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The spec cannot be acted on; status only.
    Invalid { message: String },
    /// The target Secret belongs to someone else; status only.
    Conflict { message: String },
    /// The import source is unusable; status only (a key already served stays served).
    ImportFailed { message: String },
    /// A pending key was never delivered: drop it.
    DiscardPending,
    /// The workload Secret holds the pending key: make it current.
    Promote,
    /// Deliver a new key: pending → workload Secret → promote.
    Issue {
        source: Source,
        action: Action,
        reason: Reason,
    },
    /// Copy the current key to the newly named Secret and delete the old one.
    Move { from: String },
    /// ShowOnce window passed unrevealed: empty the workload Secret.
    CloseRevealWindow,
    /// Roll the restart targets so pods pick up the current key.
    RestartTargets,
    /// End every previous key's grace now.
    Revoke { request: String },
    /// Everything matches; keep metadata, record and status in line.
    Converged,
}

/// Decides the next step.
pub fn decide(o: &Observed) -> Step {
    if let Some(problem) = &o.spec_problem {
        return Step::Invalid {
            message: problem.clone(),
        };
    }
    if let Workload::Foreign { why } = &o.workload {
        if o.record.as_ref().is_some_and(|r| r.pending.is_some()) {
            return Step::DiscardPending;
        }
        return Step::Conflict {
            message: why.clone(),
        };
    }
    let record = o.record.as_ref();
    let has_current = record.is_some_and(|r| r.current.is_some());
    let key = match &o.workload {
        Workload::Ours { key, .. } => Some(*key),
        _ => None,
    };
    if record.is_some_and(|r| r.pending.is_some()) {
        return if key == Some(KeyMatch::Pending) {
            Step::Promote
        } else {
            Step::DiscardPending
        };
    }
    match &o.import {
        Import::NotConfigured => {}
        Import::SecretMissing { secret } => {
            return Step::ImportFailed {
                message: format!("importFrom: Secret {secret:?} not found"),
            };
        }
        Import::KeyMissing { secret, key } => {
            return Step::ImportFailed {
                message: format!("importFrom: Secret {secret:?} has no data key {key:?}"),
            };
        }
        Import::Present {
            matches_current, ..
        } => {
            if !has_current {
                return Step::Issue {
                    source: Source::Import,
                    action: Action::Imported,
                    reason: Reason::Created,
                };
            }
            if !matches_current {
                return Step::Issue {
                    source: Source::Import,
                    action: Action::Imported,
                    reason: Reason::SourceChanged,
                };
            }
            return match key {
                // An emergency revocation ends imported previous keys as generated ones.
                Some(KeyMatch::Current) => match &o.rotation.revoke_request {
                    Some(request) => Step::Revoke {
                        request: request.clone(),
                    },
                    None => Step::Converged,
                },
                // The workload Secret lost or changed the imported key: deliver it again.
                _ => Step::Issue {
                    source: Source::Import,
                    action: Action::Imported,
                    reason: Reason::Redelivered,
                },
            };
        }
    }
    if !has_current {
        if o.expires_at.is_some_and(|t| t <= o.now) {
            return Step::Invalid {
                message: "expiresAt is in the past: no key would ever verify".into(),
            };
        }
        return match &o.workload {
            Workload::Ours {
                key: KeyMatch::Other,
                retained: true,
                ..
            } => Step::Issue {
                source: Source::Adopt,
                action: Action::Generated,
                reason: Reason::Adopted,
            },
            _ => Step::Issue {
                source: Source::Generate,
                action: Action::Generated,
                reason: Reason::Created,
            },
        };
    }
    match &o.workload {
        Workload::Ours {
            key: KeyMatch::Current,
            ..
        }
        | Workload::Ours {
            key: KeyMatch::Absent,
            revealed_at: Some(_),
            ..
        } => {
            let r = &o.rotation;
            if !r.stale_targets.is_empty() {
                return Step::RestartTargets;
            }
            let rotate = |reason| Step::Issue {
                source: Source::Generate,
                action: Action::Rotated,
                reason,
            };
            if r.manual_request.is_some() {
                return rotate(Reason::Manual);
            }
            if r.format_changed {
                return rotate(Reason::FormatChanged);
            }
            // A disabled key's schedule pauses: nobody can use what it would issue. Once
            // enabled, a rotation that fell due meanwhile happens once.
            if !o.disabled && r.next_at.is_some_and(|t| t <= o.now) {
                return rotate(Reason::Schedule);
            }
            if let Some(request) = &r.revoke_request {
                return Step::Revoke {
                    request: request.clone(),
                };
            }
            let revealed = matches!(
                &o.workload,
                Workload::Ours {
                    revealed_at: Some(_),
                    ..
                }
            );
            if o.delivery == Delivery::ShowOnce
                && !revealed
                && o.reveal_deadline.is_some_and(|d| d <= o.now)
            {
                return Step::CloseRevealWindow;
            }
            Step::Converged
        }
        Workload::Ours { .. } => Step::Issue {
            source: Source::Generate,
            action: Action::Rotated,
            reason: Reason::SecretTampered,
        },
        Workload::Missing => match &o.moving_from {
            Some(from) => Step::Move { from: from.clone() },
            None => Step::Issue {
                source: Source::Generate,
                action: Action::Rotated,
                reason: Reason::SecretLost,
            },
        },
        Workload::Foreign { .. } => unreachable!("handled above"),
    }
}

/// Checks a format before any key is generated in it.
pub fn check_format(format: &KeyFormat) -> Result<(), String> {
    crate::keys::format::check(format)
}

/// Parses an RFC 3339 instant from the spec.
pub fn parse_instant(field: &str, value: &str) -> Result<Timestamp, String> {
    value
        .parse::<Timestamp>()
        .map_err(|e| format!("{field} {value:?} is not an RFC 3339 time: {e}"))
}

/// Parses a non-negative Go duration from the spec.
pub fn parse_duration(field: &str, value: &str) -> Result<SignedDuration, String> {
    let d = crate::duration::parse(value).map_err(|e| format!("{field}: {e}"))?;
    SignedDuration::try_from(d).map_err(|_| format!("{field}: {value:?} is out of range"))
}

/// Observations for tests of the pipeline's pure parts.
#[cfg(test)]
pub mod fixtures {
    use super::*;
    use crate::record::{KeyHash, Owner};

    pub fn now() -> Timestamp {
        "2026-06-01T12:00:00Z".parse().expect("time")
    }

    pub fn key_hash(id: &str) -> KeyHash {
        KeyHash {
            key_id: id.into(),
            hash: "$argon2id$...".into(),
            fast_hash: "ff".into(),
            pepper_id: "p".into(),
            lookup_id: Some("abcdefgh".into()),
            fingerprint: "0123456789abcdef".into(),
            preview: "kw_abcdefgh…".into(),
            issued_at: "2026-06-01T00:00:00Z".parse().expect("ts"),
            expires_at: None,
            imported: false,
            weak: false,
        }
    }

    pub fn record(current: bool, pending: bool) -> HashRecord {
        HashRecord {
            apikey: Owner {
                namespace: "default".into(),
                name: "k".into(),
                uid: "u".into(),
            },
            current: current.then(|| key_hash("cur")),
            pending: pending.then(|| key_hash("pen")),
            ..Default::default()
        }
    }

    pub fn observed(workload: Workload, record: Option<HashRecord>) -> Observed {
        Observed {
            now: now(),
            generation: Some(1),
            spec_problem: None,
            desired_secret: "k".into(),
            workload,
            moving_from: None,
            record,
            import: Import::NotConfigured,
            delivery: Delivery::Secret,
            reveal_deadline: None,
            disabled: false,
            expires_at: None,
            rotation: RotationView::default(),
        }
    }

    pub fn ours(key: KeyMatch) -> Workload {
        Workload::Ours {
            key,
            revealed_at: None,
            retained: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn first_issue_then_promote_then_converge() {
        assert_eq!(
            decide(&observed(Workload::Missing, None)),
            Step::Issue {
                source: Source::Generate,
                action: Action::Generated,
                reason: Reason::Created
            }
        );
        assert_eq!(
            decide(&observed(
                ours(KeyMatch::Pending),
                Some(record(false, true))
            )),
            Step::Promote
        );
        assert_eq!(
            decide(&observed(
                ours(KeyMatch::Current),
                Some(record(true, false))
            )),
            Step::Converged
        );
    }

    #[test]
    fn undelivered_pending_keys_are_discarded_never_promoted() {
        assert_eq!(
            decide(&observed(Workload::Missing, Some(record(false, true)))),
            Step::DiscardPending
        );
        assert_eq!(
            decide(&observed(ours(KeyMatch::Current), Some(record(true, true)))),
            Step::DiscardPending
        );
        assert_eq!(
            decide(&observed(
                Workload::Foreign { why: "x".into() },
                Some(record(false, true))
            )),
            Step::DiscardPending
        );
    }

    #[test]
    fn foreign_secrets_are_conflicts() {
        let step = decide(&observed(
            Workload::Foreign {
                why: "Secret k is not managed by keyward".into(),
            },
            None,
        ));
        assert_eq!(
            step,
            Step::Conflict {
                message: "Secret k is not managed by keyward".into()
            }
        );
    }

    #[test]
    fn lost_and_tampered_secrets_get_new_keys() {
        assert_eq!(
            decide(&observed(Workload::Missing, Some(record(true, false)))),
            Step::Issue {
                source: Source::Generate,
                action: Action::Rotated,
                reason: Reason::SecretLost
            }
        );
        assert_eq!(
            decide(&observed(ours(KeyMatch::Other), Some(record(true, false)))),
            Step::Issue {
                source: Source::Generate,
                action: Action::Rotated,
                reason: Reason::SecretTampered
            }
        );
        assert_eq!(
            decide(&observed(ours(KeyMatch::Absent), Some(record(true, false)))),
            Step::Issue {
                source: Source::Generate,
                action: Action::Rotated,
                reason: Reason::SecretTampered
            }
        );
    }

    #[test]
    fn retained_secrets_are_adopted_and_renamed_secrets_moved() {
        let retained = Workload::Ours {
            key: KeyMatch::Other,
            revealed_at: None,
            retained: true,
        };
        assert_eq!(
            decide(&observed(retained, None)),
            Step::Issue {
                source: Source::Adopt,
                action: Action::Generated,
                reason: Reason::Adopted
            }
        );
        let mut o = observed(Workload::Missing, Some(record(true, false)));
        o.moving_from = Some("old".into());
        assert_eq!(decide(&o), Step::Move { from: "old".into() });
    }

    #[test]
    fn invalid_specs_and_import_failures_write_nothing() {
        let mut o = observed(Workload::Missing, None);
        o.spec_problem = Some("bad".into());
        assert_eq!(
            decide(&o),
            Step::Invalid {
                message: "bad".into()
            }
        );
        let mut o = observed(Workload::Missing, None);
        o.expires_at = Some(now() - SignedDuration::from_secs(1));
        assert!(matches!(decide(&o), Step::Invalid { .. }));
        let mut o = observed(Workload::Missing, None);
        o.import = Import::SecretMissing {
            secret: "src".into(),
        };
        assert_eq!(
            decide(&o),
            Step::ImportFailed {
                message: "importFrom: Secret \"src\" not found".into()
            }
        );
        o.import = Import::KeyMissing {
            secret: "src".into(),
            key: "k".into(),
        };
        assert!(matches!(decide(&o), Step::ImportFailed { .. }));
    }

    #[test]
    fn imports_follow_their_source() {
        let mut o = observed(Workload::Missing, None);
        o.import = Import::Present {
            matches_current: false,
            weak: false,
        };
        assert_eq!(
            decide(&o),
            Step::Issue {
                source: Source::Import,
                action: Action::Imported,
                reason: Reason::Created
            }
        );
        let mut o = observed(ours(KeyMatch::Current), Some(record(true, false)));
        o.import = Import::Present {
            matches_current: false,
            weak: false,
        };
        assert_eq!(
            decide(&o),
            Step::Issue {
                source: Source::Import,
                action: Action::Imported,
                reason: Reason::SourceChanged
            }
        );
        o.import = Import::Present {
            matches_current: true,
            weak: true,
        };
        assert_eq!(decide(&o), Step::Converged);
    }

    #[test]
    fn show_once_windows_close_and_revealed_keys_stay_converged() {
        let mut o = observed(ours(KeyMatch::Current), Some(record(true, false)));
        o.delivery = Delivery::ShowOnce;
        o.reveal_deadline = Some(now() + SignedDuration::from_secs(60));
        assert_eq!(decide(&o), Step::Converged);
        o.reveal_deadline = Some(now() - SignedDuration::from_secs(1));
        assert_eq!(decide(&o), Step::CloseRevealWindow);
        let o = observed(
            Workload::Ours {
                key: KeyMatch::Absent,
                revealed_at: Some("2026-06-01T11:00:00Z".into()),
                retained: false,
            },
            Some(record(true, false)),
        );
        assert_eq!(decide(&o), Step::Converged);
    }

    #[test]
    fn revoke_previous_acts_on_imported_keys() {
        let mut o = observed(ours(KeyMatch::Current), Some(record(true, false)));
        o.import = Import::Present {
            matches_current: true,
            weak: false,
        };
        assert_eq!(decide(&o), Step::Converged);
        o.rotation.revoke_request = Some("leak-1".into());
        assert_eq!(
            decide(&o),
            Step::Revoke {
                request: "leak-1".into()
            }
        );
    }

    #[test]
    fn a_disabled_key_pauses_its_schedule_but_not_manual_requests() {
        let mut o = observed(ours(KeyMatch::Current), Some(record(true, false)));
        o.disabled = true;
        o.rotation.next_at = Some(now() - SignedDuration::from_secs(3600));
        assert_eq!(decide(&o), Step::Converged, "paused while disabled");
        let mut manual = o.clone();
        manual.rotation.manual_request = Some("1".into());
        assert!(matches!(
            decide(&manual),
            Step::Issue {
                reason: Reason::Manual,
                ..
            }
        ));
        let mut revoke = o.clone();
        revoke.rotation.revoke_request = Some("1".into());
        assert!(matches!(decide(&revoke), Step::Revoke { .. }));
        // Enabled again: the rotation that fell due happens (once: the next one is
        // scheduled from the new key's issue time).
        o.disabled = false;
        assert!(matches!(
            decide(&o),
            Step::Issue {
                reason: Reason::Schedule,
                ..
            }
        ));
    }

    #[test]
    fn rotation_order_restart_manual_format_schedule_revoke() {
        let base = observed(ours(KeyMatch::Current), Some(record(true, false)));
        let with = |f: &dyn Fn(&mut RotationView)| {
            let mut o = base.clone();
            f(&mut o.rotation);
            decide(&o)
        };
        let rotated = |reason| Step::Issue {
            source: Source::Generate,
            action: Action::Rotated,
            reason,
        };
        assert_eq!(
            with(&|r| r.next_at = Some(now() + SignedDuration::from_secs(1))),
            Step::Converged,
            "not due yet"
        );
        assert_eq!(
            with(&|r| r.next_at = Some(now())),
            rotated(Reason::Schedule),
            "due at the exact instant"
        );
        assert_eq!(
            with(&|r| r.manual_request = Some("1".into())),
            rotated(Reason::Manual)
        );
        assert_eq!(
            with(&|r| r.format_changed = true),
            rotated(Reason::FormatChanged)
        );
        assert_eq!(
            with(&|r| r.revoke_request = Some("x".into())),
            Step::Revoke {
                request: "x".into()
            }
        );
        // A rotation's workload restarts come before anything else, so each rotation rolls
        // them exactly once.
        assert_eq!(
            with(&|r| {
                r.stale_targets = vec!["Deployment/web".into()];
                r.manual_request = Some("2".into());
            }),
            Step::RestartTargets
        );
        // Rotation and revocation together: rotate first, revoke on the next pass.
        assert_eq!(
            with(&|r| {
                r.manual_request = Some("3".into());
                r.revoke_request = Some("3".into());
            }),
            rotated(Reason::Manual)
        );
        // A revealed ShowOnce key still rotates on schedule.
        let mut revealed = observed(
            Workload::Ours {
                key: KeyMatch::Absent,
                revealed_at: Some("2026-06-01T00:00:00Z".into()),
                retained: false,
            },
            Some(record(true, false)),
        );
        revealed.rotation.next_at = Some(now());
        assert_eq!(decide(&revealed), rotated(Reason::Schedule));
    }
}
