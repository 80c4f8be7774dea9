//! Leader election over a `coordination.k8s.io/v1` Lease (`keyward run --leader-elect`):
//! kube-rs 5 has none built in. One replica holds the Lease and runs the controllers; the
//! others wait. Every change of the Lease is guarded by its resourceVersion, so two
//! candidates can never both believe they took it. A stopping leader releases the Lease so a
//! successor takes over at once instead of after the lease duration.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};

/// Lease timings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// A holder that has not renewed for this long has lost the Lease.
    pub duration: Duration,
    /// How often the holder renews (and candidates retry).
    pub renew_every: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: "keyward-controller".into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

/// Outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Yes,
    No,
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Who holds a Lease, if its holder is still live at `now`.
pub fn live_holder(lease: &Lease, now: Timestamp) -> Option<String> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref().map(|t| t.0)?;
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    (renewed.checked_add(duration).ok()? > now).then_some(holder)
}

/// The elector: try to take or renew the Lease; release it when stopping.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    fn spec(&self, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.duration.as_secs() as i32),
            acquire_time: acquire,
            renew_time: Some(now_micro()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt to acquire or renew. Conflicts mean someone else moved first: not held.
    pub async fn try_hold(&self) -> Result<Held, kube::Error> {
        let now = Timestamp::now();
        match self.api.get_opt(&self.config.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(Some(now_micro()), 0)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Held::Yes),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(Held::No),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let holder = live_holder(&lease, now);
                let ours = holder.as_deref() == Some(self.config.identity.as_str());
                if holder.is_some() && !ours {
                    return Ok(Held::No);
                }
                let previous = lease.spec.clone().unwrap_or_default();
                let transitions = previous.lease_transitions.unwrap_or(0) + i32::from(!ours);
                let acquire = if ours {
                    previous.acquire_time
                } else {
                    Some(now_micro())
                };
                lease.spec = Some(self.spec(acquire, transitions));
                // `replace` carries the resourceVersion we read: a competing write wins, not both.
                match self
                    .api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(Held::Yes),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(Held::No),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Gives the Lease up (if still ours) so a successor need not wait for it to expire.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await
            && lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.config.identity.as_str())
        {
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
                spec.renew_time = None;
            }
            if let Err(e) = self
                .api
                .replace(&lease.name_any(), &PostParams::default(), &lease)
                .await
            {
                tracing::warn!(error = %e, "releasing the leader Lease failed; a successor waits for it to expire");
            }
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_hold().await {
                Ok(Held::Yes) => return,
                Ok(Held::No) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: reading or writing the Lease failed")
                }
            }
            tokio::time::sleep(self.config.renew_every).await;
        }
    }

    /// Renews until a renewal cannot be made within the lease duration; returns then (the
    /// leadership is lost and the controllers must stop).
    pub async fn keep(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_every).await;
            match self.try_hold().await {
                Ok(Held::Yes) => last_renewed = tokio::time::Instant::now(),
                Ok(Held::No) => {
                    tracing::warn!("leader Lease taken by another replica");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the leader Lease failed");
                    // Stop before the Lease can expire and someone else start.
                    if last_renewed.elapsed() + self.config.renew_every >= self.config.duration {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_expire_after_the_lease_duration() {
        let renewed: Timestamp = "2026-01-01T00:00:00Z".parse().expect("ts");
        let lease = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some("a".into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..Default::default()
            }),
        };
        assert_eq!(
            live_holder(&lease, renewed + SignedDuration::from_secs(14)),
            Some("a".into())
        );
        assert_eq!(
            live_holder(&lease, renewed + SignedDuration::from_secs(15)),
            None
        );
        let released = Lease {
            spec: Some(LeaseSpec {
                holder_identity: None,
                ..lease.spec.clone().expect("spec")
            }),
            ..lease
        };
        assert_eq!(live_holder(&released, renewed), None);
    }
}
