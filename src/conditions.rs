//! Conditions: set one while keeping `lastTransitionTime` when its status did not change, so
//! recomputing status every pass writes nothing new (STYLE anti-pattern 1).

use jiff::Timestamp;

use crate::clock::kube_time;
use crate::crd::{Condition, ConditionStatus};

pub const READY: &str = "Ready";
pub const ADVISORY: &str = "Advisory";

/// The reasons keyward gives in conditions (DESIGN §3, §5, §7); the strings are public.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Ready: the key was issued (or imported) and is being served.
    KeyIssued,
    /// Ready: the current key replaced an earlier one.
    Rotated,
    /// Ready: a ShowOnce key was revealed; only its hash remains.
    Revealed,
    /// A write is under way.
    Progressing,
    Disabled,
    Expired,
    SecretConflict,
    InvalidSpec,
    ImportFailed,
    /// Advisory: an imported key below 128 bits of estimated entropy.
    WeakKey,
    /// Advisory: the grace period outlasts the rotation interval.
    GracePeriodExceedsInterval,
    /// Advisory: a restart target does not exist.
    RestartTargetMissing,
    /// Advisory: the key is disabled, so its scheduled rotation waits.
    RotationPaused,
    /// Pool Ready: keys are there to take.
    KeysAvailable,
    /// Pool: no key has been available for longer than the status window.
    Depleted,
    /// Pool: the generator could not make keys.
    GeneratorFailing,
    /// Pool Depleted=False / GeneratorFailing=False.
    GeneratorWorking,
    /// A URL names a host the operator does not allow.
    HostNotAllowed,
    /// Provider Ready: the provider accepted the key.
    Validated,
    /// Provider Ready: the provider accepted the key but is rate limiting it.
    RateLimited,
    /// Provider: the provider refused the key (401/403).
    InvalidKey,
    /// Provider: the account is out of credit (402, or a documented out-of-credit answer).
    QuotaExhausted,
    /// Provider: it answered 5xx.
    ProviderError,
    /// Provider: it answered a status its API does not document for this request.
    UnexpectedStatus,
    /// Provider: it answered with a redirect, which keyward never follows.
    Redirected,
    /// Provider: no answer within `validation.timeout`.
    Timeout,
    /// Provider: DNS, connection or TLS failure.
    ConnectionFailed,
    /// The referenced Secret does not exist.
    SecretNotFound,
    /// The referenced Secret has no such data key.
    KeyNotFound,
    /// The key cannot be sent (empty, too long, control characters).
    BadKey,
    /// The provider documents no free authenticated read and `allowPaidRequest` is off.
    NoFreeValidation,
}

impl Reason {
    pub const ALL: [Reason; 31] = [
        Self::KeyIssued,
        Self::Rotated,
        Self::Revealed,
        Self::Progressing,
        Self::Disabled,
        Self::Expired,
        Self::SecretConflict,
        Self::InvalidSpec,
        Self::ImportFailed,
        Self::WeakKey,
        Self::GracePeriodExceedsInterval,
        Self::RestartTargetMissing,
        Self::RotationPaused,
        Self::KeysAvailable,
        Self::Depleted,
        Self::GeneratorFailing,
        Self::GeneratorWorking,
        Self::HostNotAllowed,
        Self::Validated,
        Self::RateLimited,
        Self::InvalidKey,
        Self::QuotaExhausted,
        Self::ProviderError,
        Self::UnexpectedStatus,
        Self::Redirected,
        Self::Timeout,
        Self::ConnectionFailed,
        Self::SecretNotFound,
        Self::KeyNotFound,
        Self::BadKey,
        Self::NoFreeValidation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyIssued => "KeyIssued",
            Self::Rotated => "Rotated",
            Self::Revealed => "Revealed",
            Self::Progressing => "Progressing",
            Self::Disabled => "Disabled",
            Self::Expired => "Expired",
            Self::SecretConflict => "SecretConflict",
            Self::InvalidSpec => "InvalidSpec",
            Self::ImportFailed => "ImportFailed",
            Self::WeakKey => "WeakKey",
            Self::GracePeriodExceedsInterval => "GracePeriodExceedsInterval",
            Self::RestartTargetMissing => "RestartTargetMissing",
            Self::RotationPaused => "RotationPaused",
            Self::KeysAvailable => "KeysAvailable",
            Self::Depleted => "Depleted",
            Self::GeneratorFailing => "GeneratorFailing",
            Self::GeneratorWorking => "GeneratorWorking",
            Self::HostNotAllowed => "HostNotAllowed",
            Self::Validated => "Validated",
            Self::RateLimited => "RateLimited",
            Self::InvalidKey => "InvalidKey",
            Self::QuotaExhausted => "QuotaExhausted",
            Self::ProviderError => "ProviderError",
            Self::UnexpectedStatus => "UnexpectedStatus",
            Self::Redirected => "Redirected",
            Self::Timeout => "Timeout",
            Self::ConnectionFailed => "ConnectionFailed",
            Self::SecretNotFound => "SecretNotFound",
            Self::KeyNotFound => "KeyNotFound",
            Self::BadKey => "BadKey",
            Self::NoFreeValidation => "NoFreeValidation",
        }
    }

    /// The reason a condition carries, if keyward knows it.
    pub fn of(condition: &Condition) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == condition.reason)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A condition to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub type_: &'static str,
    pub status: ConditionStatus,
    pub reason: Reason,
    pub message: String,
}

impl Wanted {
    pub fn new(
        type_: &'static str,
        status: ConditionStatus,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }

    pub fn ready(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(READY, ConditionStatus::True, reason, message)
    }

    pub fn not_ready(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(READY, ConditionStatus::False, reason, message)
    }

    /// An advisory: never makes Ready false.
    pub fn advisory(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(ADVISORY, ConditionStatus::True, reason, message)
    }
}

/// The conditions after setting `wanted` (in that order) and dropping types not wanted.
pub fn merge(
    existing: &[Condition],
    wanted: &[Wanted],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    wanted
        .iter()
        .map(|w| {
            let previous = existing.iter().find(|c| c.type_ == w.type_);
            let since = match previous {
                Some(p) if p.status == w.status => p.last_transition_time.clone(),
                _ => kube_time(now),
            };
            Condition {
                type_: w.type_.to_string(),
                status: w.status,
                reason: w.reason.as_str().to_string(),
                message: w.message.clone(),
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect()
}

/// The Ready condition, if any.
pub fn ready(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == READY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_the_public_strings() {
        let names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "KeyIssued",
                "Rotated",
                "Revealed",
                "Progressing",
                "Disabled",
                "Expired",
                "SecretConflict",
                "InvalidSpec",
                "ImportFailed",
                "WeakKey",
                "GracePeriodExceedsInterval",
                "RestartTargetMissing",
                "RotationPaused",
                "KeysAvailable",
                "Depleted",
                "GeneratorFailing",
                "GeneratorWorking",
                "HostNotAllowed",
                "Validated",
                "RateLimited",
                "InvalidKey",
                "QuotaExhausted",
                "ProviderError",
                "UnexpectedStatus",
                "Redirected",
                "Timeout",
                "ConnectionFailed",
                "SecretNotFound",
                "KeyNotFound",
                "BadKey",
                "NoFreeValidation",
            ]
        );
    }

    #[test]
    fn transition_time_moves_only_with_status() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let t1: Timestamp = "2026-01-01T01:00:00Z".parse().expect("time");
        let first = merge(
            &[],
            &[Wanted::ready(Reason::KeyIssued, "issued")],
            Some(1),
            t0,
        );
        let same = merge(
            &first,
            &[Wanted::ready(Reason::KeyIssued, "issued again")],
            Some(2),
            t1,
        );
        assert_eq!(same[0].last_transition_time, first[0].last_transition_time);
        assert_eq!(same[0].message, "issued again");
        let flipped = merge(
            &same,
            &[Wanted::not_ready(Reason::Disabled, "off")],
            Some(3),
            t1,
        );
        assert_eq!(flipped[0].last_transition_time, kube_time(t1));
    }
}
