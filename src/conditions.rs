//! Conditions: set one while keeping `lastTransitionTime` when its status did not change, so
//! recomputing status every pass writes nothing new (STYLE anti-pattern 1).

use jiff::Timestamp;

use crate::clock::kube_time;
use crate::crd::{Condition, ConditionStatus};

pub const READY: &str = "Ready";
pub const ADVISORY: &str = "Advisory";

/// A condition to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub type_: &'static str,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
}

impl Wanted {
    pub fn new(
        type_: &'static str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    pub fn ready(reason: &str, message: impl Into<String>) -> Self {
        Self::new(READY, ConditionStatus::True, reason, message)
    }

    pub fn not_ready(reason: &str, message: impl Into<String>) -> Self {
        Self::new(READY, ConditionStatus::False, reason, message)
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
                reason: w.reason.clone(),
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
    fn transition_time_moves_only_with_status() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let t1: Timestamp = "2026-01-01T01:00:00Z".parse().expect("time");
        let first = merge(&[], &[Wanted::ready("KeyIssued", "issued")], Some(1), t0);
        let same = merge(
            &first,
            &[Wanted::ready("KeyIssued", "issued again")],
            Some(2),
            t1,
        );
        assert_eq!(same[0].last_transition_time, first[0].last_transition_time);
        assert_eq!(same[0].message, "issued again");
        let flipped = merge(&same, &[Wanted::not_ready("Disabled", "off")], Some(3), t1);
        assert_eq!(flipped[0].last_transition_time, kube_time(t1));
    }
}
