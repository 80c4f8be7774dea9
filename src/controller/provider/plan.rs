//! Whether to validate a credential now (DESIGN §7): at once when it was never validated,
//! its spec changed, its Secret changed (bypassing any backoff) or a new
//! `keyward.dev/validate` value asks; otherwise when its schedule says so. Pure, with time
//! injected.

use std::time::Duration;

use jiff::Timestamp;

use crate::crd::{Phase, ProviderCredentialStatus};
use crate::providers::schedule;

/// Why a validation runs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    First,
    SpecChanged,
    SecretChanged,
    Requested,
    Due,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Validate(Cause),
    /// Nothing now; look again at this instant.
    WaitUntil(Timestamp),
    /// Nothing until the spec, the Secret or the annotation changes (a verdict that sent
    /// nothing: a missing Secret, a host not allowed, and so on).
    WaitForChange,
}

/// What the decision reads, besides the status.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub generation: Option<i64>,
    pub status: &'a ProviderCredentialStatus,
    /// The value of `keyward.dev/validate`, if set.
    pub request: Option<&'a str>,
    /// The referenced Secret's resourceVersion, `None` when it does not exist.
    pub secret_version: Option<&'a str>,
    pub interval: Duration,
    pub uid: &'a str,
    /// This process's memory of the last attempts (empty after a restart).
    pub memo: &'a Attempts,
    pub now: Timestamp,
}

/// What the process remembers between validations of one credential.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempts {
    /// When the last request was sent.
    pub last: Option<Timestamp>,
    /// Unreachable answers in a row.
    pub unreachable: u32,
    /// A 429's `Retry-After`.
    pub retry_after: Option<Duration>,
}

pub fn decide(i: &Inputs<'_>) -> Decision {
    let s = i.status;
    if s.phase.is_none() {
        return Decision::Validate(Cause::First);
    }
    if let Some(request) = i.request
        && s.last_validation_request.as_deref() != Some(request)
    {
        return Decision::Validate(Cause::Requested);
    }
    if s.validated_secret_version.as_deref() != i.secret_version {
        return Decision::Validate(Cause::SecretChanged);
    }
    if s.observed_generation != i.generation {
        return Decision::Validate(Cause::SpecChanged);
    }
    let due = match s.phase {
        Some(Phase::Unreachable) => match i.memo.last {
            Some(last) => schedule::next(last, i.interval, i.uid, i.memo.unreachable.max(1), None),
            // After a restart: the provider was down when last asked; ask again.
            None => i.now,
        },
        Some(Phase::Valid | Phase::Invalid) => match &s.last_validated_at {
            Some(last) => schedule::next(
                last.0,
                i.interval,
                i.uid,
                0,
                i.memo.retry_after.filter(|_| i.memo.last.is_some()),
            ),
            None => i.now,
        },
        Some(Phase::NotConfigured) | None => return Decision::WaitForChange,
    };
    if due <= i.now {
        Decision::Validate(Cause::Due)
    } else {
        Decision::WaitUntil(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("instant")
    }

    fn valid_at(s: i64) -> ProviderCredentialStatus {
        ProviderCredentialStatus {
            observed_generation: Some(1),
            phase: Some(Phase::Valid),
            last_validated_at: Some(crate::clock::kube_time(t(s))),
            validated_secret_version: Some("10".into()),
            ..Default::default()
        }
    }

    fn inputs<'a>(
        status: &'a ProviderCredentialStatus,
        memo: &'a Attempts,
        now: i64,
    ) -> Inputs<'a> {
        Inputs {
            generation: Some(1),
            status,
            request: None,
            secret_version: Some("10"),
            interval: MINUTE,
            uid: "uid-1",
            memo,
            now: t(now),
        }
    }

    #[test]
    fn changes_validate_at_once_and_the_schedule_otherwise() {
        let memo = Attempts::default();
        let fresh = ProviderCredentialStatus::default();
        assert_eq!(
            decide(&inputs(&fresh, &memo, 0)),
            Decision::Validate(Cause::First)
        );
        let s = valid_at(0);
        // Within the interval after a restart: nothing now.
        let Decision::WaitUntil(at) = decide(&inputs(&s, &memo, 1)) else {
            panic!("waits");
        };
        assert!(at > t(1) && at <= t(90));
        assert_eq!(
            decide(&inputs(&s, &memo, 91)),
            Decision::Validate(Cause::Due)
        );
        let mut i = inputs(&s, &memo, 1);
        i.secret_version = Some("11");
        assert_eq!(decide(&i), Decision::Validate(Cause::SecretChanged));
        i.secret_version = None;
        assert_eq!(decide(&i), Decision::Validate(Cause::SecretChanged));
        let mut i = inputs(&s, &memo, 1);
        i.generation = Some(2);
        assert_eq!(decide(&i), Decision::Validate(Cause::SpecChanged));
    }

    #[test]
    fn each_request_value_validates_once() {
        let memo = Attempts::default();
        let mut s = valid_at(0);
        let mut i = inputs(&s, &memo, 1);
        i.request = Some("2026-11-30T10:00:00Z");
        assert_eq!(decide(&i), Decision::Validate(Cause::Requested));
        s.last_validation_request = Some("2026-11-30T10:00:00Z".into());
        let mut i = inputs(&s, &memo, 1);
        i.request = Some("2026-11-30T10:00:00Z");
        assert!(matches!(decide(&i), Decision::WaitUntil(_)));
    }

    #[test]
    fn unreachable_backs_off_and_not_configured_waits_for_a_change() {
        let mut s = valid_at(0);
        s.phase = Some(Phase::Unreachable);
        let memo = Attempts {
            last: Some(t(100)),
            unreachable: 3,
            retry_after: None,
        };
        assert_eq!(decide(&inputs(&s, &memo, 101)), Decision::WaitUntil(t(140)));
        let restarted = Attempts::default();
        assert_eq!(
            decide(&inputs(&s, &restarted, 101)),
            Decision::Validate(Cause::Due)
        );
        s.phase = Some(Phase::NotConfigured);
        assert_eq!(decide(&inputs(&s, &memo, 10_000)), Decision::WaitForChange);
    }

    #[test]
    fn rate_limited_keys_wait_for_retry_after() {
        let s = valid_at(0);
        let memo = Attempts {
            last: Some(t(0)),
            unreachable: 0,
            retry_after: Some(Duration::from_secs(600)),
        };
        assert_eq!(decide(&inputs(&s, &memo, 100)), Decision::WaitUntil(t(600)));
    }
}
