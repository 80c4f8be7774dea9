//! The pool's status: counts, the oldest key's age, and conditions `Ready`, `Depleted` and
//! `GeneratorFailing`. Writes are coalesced: at most one per status window, so a burst of
//! takes costs a few writes, and `Ready` turns False only when no key has been available
//! for a whole window (it does not flap on every take).

use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::Resource;

use super::{Error, Memo, Pools, stale_or};
use crate::conditions::{self, Reason, Wanted};
use crate::controller::events::Note;
use crate::crd::{ApiKeyPool, ApiKeyPoolStatus, ConditionStatus};

/// The status window.
pub const WINDOW: Duration = Duration::from_secs(1);

/// What the last observation showed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub available: usize,
    pub oldest: Option<Timestamp>,
}

/// The conditions for these counts and this memory of the pool. Pure.
pub fn conditions_for(
    pool: &ApiKeyPool,
    counts: Counts,
    memo: &Memo,
    spec_problem: Option<&str>,
    now: Instant,
) -> Vec<Wanted> {
    let size = pool.spec.size;
    let depleted_long = memo
        .depleted_since
        .is_some_and(|since| now.duration_since(since) >= WINDOW);
    let ready = if let Some(problem) = spec_problem {
        Wanted::not_ready(Reason::InvalidSpec, problem)
    } else if let Some(message) = &memo.generator.message {
        let reason = if memo.generator.host_not_allowed {
            Reason::HostNotAllowed
        } else {
            Reason::GeneratorFailing
        };
        Wanted::not_ready(reason, message.clone())
    } else if counts.available == 0 && depleted_long {
        Wanted::not_ready(
            Reason::Depleted,
            format!("no key available (size {size}); keyward is generating more"),
        )
    } else {
        Wanted::ready(
            Reason::KeysAvailable,
            format!("{} of {size} keys available", counts.available),
        )
    };
    let depleted = if counts.available == 0 {
        Wanted::new(
            "Depleted",
            ConditionStatus::True,
            Reason::Depleted,
            "no key available to take",
        )
    } else {
        Wanted::new(
            "Depleted",
            ConditionStatus::False,
            Reason::KeysAvailable,
            format!("{} keys available", counts.available),
        )
    };
    let generator = match &memo.generator.message {
        Some(message) => Wanted::new(
            "GeneratorFailing",
            ConditionStatus::True,
            if memo.generator.host_not_allowed {
                Reason::HostNotAllowed
            } else {
                Reason::GeneratorFailing
            },
            message.clone(),
        ),
        None => Wanted::new(
            "GeneratorFailing",
            ConditionStatus::False,
            Reason::GeneratorWorking,
            "the generator makes keys",
        ),
    };
    vec![ready, depleted, generator]
}

/// Problems with the spec admission would normally refuse.
pub fn spec_problem(pool: &ApiKeyPool) -> Option<String> {
    let mut problems = Vec::new();
    if !super::build::is_webhook(pool)
        && let Err(e) = crate::keys::format::check(&super::build::format_of(pool))
    {
        problems.push(format!("format: {e}"));
    }
    for (field, value) in [
        ("keyTTL", &pool.spec.key_ttl),
        ("issuedTTL", &pool.spec.issued_ttl),
    ] {
        if let Some(v) = value
            && let Err(e) = crate::duration::parse(v)
        {
            problems.push(format!("{field}: {e}"));
        }
    }
    if let Some(generator) = &pool.spec.generator
        && generator.type_ == crate::crd::GeneratorType::Webhook
        && generator.webhook.is_none()
    {
        problems.push("generator.webhook is required for type Webhook".into());
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

impl Pools {
    /// Writes the status when it changed and the window allows; returns when to look again
    /// for a write the window deferred.
    pub async fn write_status(
        &self,
        pool: &ApiKeyPool,
        counts: Counts,
        memo: &mut Memo,
    ) -> Result<Option<Duration>, Error> {
        let now = Instant::now();
        if counts.available == 0 {
            memo.depleted_since.get_or_insert(now);
        } else {
            memo.depleted_since = None;
        }
        let problem = spec_problem(pool);
        let wanted = conditions_for(pool, counts, memo, problem.as_deref(), now);
        let existing = self
            .ctx
            .status_baseline(pool, pool.status.clone())
            .unwrap_or_default();
        let status = ApiKeyPoolStatus {
            observed_generation: pool.metadata.generation,
            conditions: conditions::merge(
                &existing.conditions,
                &wanted,
                pool.metadata.generation,
                self.ctx.clock.now(),
            ),
            available: counts.available as u32,
            size: pool.spec.size,
            generated_total: memo.generated,
            consumed_total: memo.consumed,
            oldest_key_created_at: counts.oldest.map(crate::clock::kube_time),
        };
        // A depletion not yet long enough to show comes back when it would.
        let depletion_due = memo
            .depleted_since
            .filter(|_| {
                !conditions::ready(&status.conditions)
                    .is_some_and(|c| Reason::of(c) == Some(Reason::Depleted))
            })
            .map(|since| since + WINDOW)
            // Once due, a Ready that still does not say Depleted says something weightier
            // (a failing generator, a host not allowed): nothing to come back for.
            .filter(|due| *due > now)
            .map(|due| due.saturating_duration_since(now));
        if status == existing {
            return Ok(depletion_due);
        }
        if let Some(last) = memo.last_status_write
            && now.duration_since(last) < WINDOW
        {
            let wait = (last + WINDOW).saturating_duration_since(now);
            return Ok(Some(depletion_due.map_or(wait, |d| d.min(wait))));
        }
        let base = pool.metadata.resource_version.clone();
        self.ctx
            .apply_status(pool, base, &status)
            .await
            .map_err(stale_or("writing the status"))?;
        memo.last_status_write = Some(now);
        let was_depleted = existing
            .conditions
            .iter()
            .any(|c| c.type_ == "Depleted" && c.status == ConditionStatus::True);
        let is_depleted = counts.available == 0;
        if is_depleted && !was_depleted {
            self.ctx
                .publish(
                    &pool.object_ref(&()),
                    Note::warning(
                        "Depleted",
                        "Take",
                        format!(
                            "no key available (size {}); keyward is generating more",
                            pool.spec.size
                        ),
                    ),
                )
                .await;
        }
        Ok(depletion_due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool() -> ApiKeyPool {
        serde_json::from_value(json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPool",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"size": 3},
        }))
        .expect("pool")
    }

    fn ready(w: &[Wanted]) -> (ConditionStatus, Reason) {
        (w[0].status, w[0].reason)
    }

    #[test]
    fn ready_does_not_flap_on_a_brief_depletion() {
        let now = Instant::now();
        let mut memo = Memo::default();
        let empty = Counts::default();
        memo.depleted_since = Some(now);
        let w = conditions_for(&pool(), empty, &memo, None, now);
        assert_eq!(ready(&w), (ConditionStatus::True, Reason::KeysAvailable));
        assert_eq!(
            w[1].status,
            ConditionStatus::True,
            "Depleted says so at once"
        );
        let later = now + WINDOW;
        let w = conditions_for(&pool(), empty, &memo, None, later);
        assert_eq!(ready(&w), (ConditionStatus::False, Reason::Depleted));
    }

    #[test]
    fn a_failing_generator_is_not_ready_and_says_why() {
        let mut memo = Memo::default();
        memo.generator.message = Some("the webhook answered 500".into());
        let counts = Counts {
            available: 2,
            oldest: None,
        };
        let w = conditions_for(&pool(), counts, &memo, None, Instant::now());
        assert_eq!(
            ready(&w),
            (ConditionStatus::False, Reason::GeneratorFailing)
        );
        assert_eq!(
            (w[2].type_, w[2].status, w[2].message.as_str()),
            (
                "GeneratorFailing",
                ConditionStatus::True,
                "the webhook answered 500"
            )
        );
        memo.generator.host_not_allowed = true;
        let w = conditions_for(&pool(), counts, &memo, None, Instant::now());
        assert_eq!(ready(&w).1, Reason::HostNotAllowed);
    }
}
