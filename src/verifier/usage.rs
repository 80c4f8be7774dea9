//! Verifier usage (DESIGN §6): successful verifications counted in memory per ApiKey and
//! flushed to `ApiKey.status.usage` in batches, only for keys used since the last flush, at
//! a capped rate of status writes. Each flush adds this replica's delta to the stored count
//! under a resourceVersion precondition, so concurrent replicas never lose counts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::crd::ApiKey;

/// Flush settings.
#[derive(Debug, Clone)]
pub struct UsageOptions {
    pub flush_every: Duration,
    /// Status writes per second at most, across all keys.
    pub writes_per_second: u32,
}

impl Default for UsageOptions {
    fn default() -> Self {
        Self {
            flush_every: Duration::from_secs(60),
            writes_per_second: 50,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Target {
    namespace: String,
    name: String,
    uid: String,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    count: u64,
    last_used: Timestamp,
}

/// Usage not yet flushed.
#[derive(Default)]
pub struct Usage {
    pending: Mutex<HashMap<Target, Pending>>,
}

impl Usage {
    /// Counts one successful verification.
    pub fn record(&self, namespace: &str, name: &str, uid: &str, at: Timestamp) {
        let target = Target {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let entry = pending.entry(target).or_insert(Pending {
            count: 0,
            last_used: at,
        });
        entry.count += 1;
        entry.last_used = entry.last_used.max(at);
    }

    fn take(&self) -> Vec<(Target, Pending)> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect()
    }

    fn put_back(&self, target: Target, delta: Pending) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let entry = pending.entry(target).or_insert(Pending {
            count: 0,
            last_used: delta.last_used,
        });
        entry.count += delta.count;
        entry.last_used = entry.last_used.max(delta.last_used);
    }

    /// Flushes every `flush_every` until the task is dropped.
    pub async fn flush_forever(
        &self,
        client: Client,
        options: UsageOptions,
        metrics: &super::metrics::VerifierMetrics,
    ) {
        loop {
            tokio::time::sleep(options.flush_every).await;
            self.flush(&client, &options, metrics).await;
        }
    }

    /// Writes each used key's delta; failures keep the delta for the next flush.
    pub async fn flush(
        &self,
        client: &Client,
        options: &UsageOptions,
        metrics: &super::metrics::VerifierMetrics,
    ) {
        let pause = Duration::from_secs(1) / options.writes_per_second.max(1);
        for (target, delta) in self.take() {
            let api: Api<ApiKey> = Api::namespaced(client.clone(), &target.namespace);
            let mut written = false;
            for _ in 0..5 {
                let Ok(Some(ak)) = api.get_opt(&target.name).await else {
                    break;
                };
                if ak.metadata.uid.as_deref() != Some(target.uid.as_str()) {
                    // Deleted (and perhaps recreated): the usage belonged to the old key.
                    written = true;
                    break;
                }
                let usage = ak
                    .status
                    .as_ref()
                    .and_then(|s| s.usage.clone())
                    .unwrap_or_default();
                let last = usage
                    .last_used_at
                    .map(|t| t.0)
                    .map_or(delta.last_used, |t| t.max(delta.last_used));
                let patch = json!({
                    "metadata": {"resourceVersion": ak.metadata.resource_version},
                    "status": {"usage": {"count": usage.count + delta.count, "lastUsedAt": crate::clock::kube_time(last)}},
                });
                match api
                    .patch_status(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        metrics.usage_writes.inc();
                        written = true;
                        break;
                    }
                    // Another replica or the controller wrote first: read again, add again.
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => {
                        tracing::warn!(apikey = %format!("{}/{}", target.namespace, target.name), error = %e, "flushing usage failed");
                        break;
                    }
                }
            }
            if !written {
                metrics.usage_failures.inc();
                self.put_back(target, delta);
            }
            tokio::time::sleep(pause).await;
        }
    }
}
