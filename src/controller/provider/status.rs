//! A ProviderCredential's status after a validation (DESIGN §7), pure: the phase and its
//! reason, the last conclusive verdict kept while the provider is unreachable, the masked
//! key, when the provider last gave a verdict, and the `Ready` condition.

use jiff::Timestamp;

use crate::conditions::{self, Reason, Wanted};
use crate::crd::{Phase, ProviderCredentialStatus};

use super::validate::Tested;

/// The `Ready` condition for a verdict.
pub fn ready(phase: Phase, reason: Reason, message: &str) -> Wanted {
    let said = |default: &str| {
        if message.is_empty() {
            default.to_string()
        } else {
            message.to_string()
        }
    };
    match phase {
        Phase::Valid if reason == Reason::RateLimited => Wanted::ready(
            reason,
            said("the provider accepted the key and is rate limiting it"),
        ),
        Phase::Valid => Wanted::ready(reason, "the provider accepted the key"),
        Phase::Invalid => Wanted::not_ready(reason, said("the provider refused the key")),
        Phase::Unreachable => Wanted::not_ready(reason, said("the provider could not be reached")),
        Phase::NotConfigured => Wanted::not_ready(reason, said("not configured")),
    }
}

/// The status after `tested`, from the previous one.
pub fn after(
    prev: &ProviderCredentialStatus,
    tested: &Tested,
    generation: Option<i64>,
    request: Option<&str>,
    now: Timestamp,
) -> ProviderCredentialStatus {
    let v = &tested.verdict;
    let conclusive = matches!(v.phase, Phase::Valid | Phase::Invalid);
    let previous_conclusive = prev
        .phase
        .filter(|p| matches!(p, Phase::Valid | Phase::Invalid));
    ProviderCredentialStatus {
        observed_generation: generation,
        conditions: conditions::merge(
            &prev.conditions,
            &[ready(v.phase, v.reason, &v.message)],
            generation,
            now,
        ),
        phase: Some(v.phase),
        last_verdict: if conclusive {
            Some(v.phase)
        } else {
            prev.last_verdict.or(previous_conclusive)
        },
        key_preview: tested.preview.clone(),
        last_validated_at: if conclusive {
            Some(crate::clock::kube_time(crate::clock::ms(now)))
        } else {
            prev.last_validated_at.clone()
        },
        http_status: v.http_status,
        message: (!v.message.is_empty()).then(|| v.message.clone()),
        capabilities: tested.capabilities.clone(),
        validated_secret_version: tested.secret_version.clone(),
        last_validation_request: request
            .map(str::to_string)
            .or_else(|| prev.last_validation_request.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::classify::Verdict;

    fn tested(phase: Phase, reason: Reason, status: Option<u16>) -> Tested {
        Tested {
            verdict: Verdict {
                phase,
                reason,
                http_status: status,
                message: if phase == Phase::Valid {
                    String::new()
                } else {
                    "said so".into()
                },
                retry_after: None,
            },
            preview: Some("sk-…abcd".into()),
            secret_version: Some("7".into()),
            capabilities: vec!["chat".into()],
        }
    }

    #[test]
    fn an_unreachable_provider_keeps_the_last_verdict_and_its_time() {
        let t0 = Timestamp::from_second(1_800_000_000).expect("t");
        let t1 = Timestamp::from_second(1_800_000_600).expect("t");
        let valid = after(
            &ProviderCredentialStatus::default(),
            &tested(Phase::Valid, Reason::Validated, Some(200)),
            Some(1),
            None,
            t0,
        );
        assert_eq!(
            (valid.phase, valid.last_verdict, valid.message.as_deref()),
            (Some(Phase::Valid), Some(Phase::Valid), None)
        );
        let down = after(
            &valid,
            &tested(Phase::Unreachable, Reason::ProviderError, Some(503)),
            Some(1),
            Some("r1"),
            t1,
        );
        assert_eq!(down.phase, Some(Phase::Unreachable));
        assert_eq!(down.last_verdict, Some(Phase::Valid));
        assert_eq!(down.last_validated_at, valid.last_validated_at);
        assert_eq!(down.http_status, Some(503));
        assert_eq!(down.last_validation_request.as_deref(), Some("r1"));
        let ready = conditions::ready(&down.conditions).expect("Ready");
        assert_eq!(
            (ready.status, ready.reason.as_str(), ready.message.as_str()),
            (
                crate::crd::ConditionStatus::False,
                "ProviderError",
                "said so"
            )
        );
        // Recomputing the same verdict keeps the transition time.
        let again = after(
            &down,
            &tested(Phase::Unreachable, Reason::ProviderError, Some(503)),
            Some(1),
            None,
            t1 + jiff::SignedDuration::from_secs(60),
        );
        assert_eq!(again.conditions, down.conditions);
        assert_eq!(again.last_validation_request.as_deref(), Some("r1"));
    }
}
