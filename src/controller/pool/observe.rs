//! The pool pipeline's reading half: the pool's key Secrets and hash records from the
//! shared caches (never older than this controller's own last writes), and what this
//! process remembers about the pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::plan::{KeySecret, Observed, RecordView};
use super::{Error, Memo, Pools, build};
use crate::crd::{ApiKeyPool, annotations, labels};
use crate::keys;
use crate::record::SingleUseRecord;

/// How long a pass waits for its own last writes to reach the cache.
const CACHE_PATIENCE: Duration = Duration::from_secs(2);

/// The objects behind the observation, for the writes.
#[derive(Default)]
pub struct Snapshot {
    pub keys: BTreeMap<String, Arc<Secret>>,
    pub records: BTreeMap<String, Arc<Secret>>,
}

impl Pools {
    /// The pool's key Secrets (by suffix), and its records (by suffix).
    pub(super) fn read(&self, pool: &ApiKeyPool) -> Snapshot {
        let (ns, name, uid) = (
            pool.namespace().unwrap_or_default(),
            pool.name_any(),
            pool.uid().unwrap_or_default(),
        );
        let prefix = format!("{name}-");
        let keys = self
            .caches
            .managed_labelled(&ns, labels::POOL, &name)
            .into_iter()
            .filter(|s| s.labels().get(labels::ROLE).is_none())
            .filter(|s| s.owner_references().iter().any(|o| o.uid == uid))
            .filter_map(|s| {
                let suffix = s.name_any().strip_prefix(&prefix)?.to_string();
                Some((suffix, s))
            })
            .collect();
        let records = self
            .caches
            .managed_labelled(&self.ctx.config.hash_namespace, labels::POOL, &name)
            .into_iter()
            .filter(|s| s.labels().get(labels::NAMESPACE) == Some(&ns))
            .filter(|s| s.labels().get(labels::SINGLE_USE).map(String::as_str) == Some("true"))
            .filter_map(|s| {
                let record = SingleUseRecord::from_secret(&s).ok()?;
                (record.pool.uid == uid).then(|| (record.suffix.clone(), s))
            })
            .collect();
        Snapshot { keys, records }
    }

    /// Reads everything the decision needs.
    pub async fn observe(
        &self,
        pool: &ApiKeyPool,
        memo: &mut Memo,
    ) -> Result<(Observed, Snapshot), Error> {
        if !self
            .ctx
            .activity
            .wait_seen(&memo.written, CACHE_PATIENCE)
            .await
        {
            return Err(Error::Stale(
                "waiting for the cache to show keyward's last writes",
            ));
        }
        memo.written.clear();
        let snapshot = self.read(pool);
        let now = self.ctx.clock.now();
        let pepper_id = self.ctx.peppers.current().id();
        let records: BTreeMap<String, RecordView> = snapshot
            .records
            .iter()
            .filter_map(|(suffix, s)| {
                let record = SingleUseRecord::from_secret(s).ok()?;
                Some((
                    suffix.clone(),
                    RecordView {
                        record,
                        resource_version: s.resource_version().unwrap_or_default(),
                    },
                ))
            })
            .collect();
        let mut keys: Vec<KeySecret> = snapshot
            .keys
            .iter()
            .map(|(suffix, s)| KeySecret {
                name: s.name_any(),
                suffix: suffix.clone(),
                created_at: s
                    .annotations()
                    .get(annotations::CREATED_AT)
                    .and_then(|v| v.parse::<Timestamp>().ok())
                    .or_else(|| s.metadata.creation_timestamp.as_ref().map(|t| t.0))
                    .unwrap_or(now),
                uid: s.uid().unwrap_or_default(),
                resource_version: s.resource_version().unwrap_or_default(),
                fingerprint: records
                    .get(suffix)
                    .filter(|r| r.record.key.pepper_id != pepper_id)
                    .and_then(|_| build::key_of(s))
                    .map(|k| keys::fingerprint(&k)),
            })
            .collect();
        keys.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        let present: std::collections::HashSet<&str> =
            keys.iter().map(|k| k.name.as_str()).collect();
        // A key keyward deleted is remembered until nothing refers to it any more.
        let known = memo.known.clone();
        let prefix = format!("{}-", pool.name_any());
        memo.deleted_by_us.retain(|n| {
            present.contains(n.as_str())
                || known.contains(n)
                || n.strip_prefix(&prefix)
                    .is_some_and(|suffix| records.contains_key(suffix))
        });
        if !memo.initialized {
            let status = pool.status.clone().unwrap_or_default();
            memo.generated = status.generated_total;
            memo.consumed = status.consumed_total;
            // Without records, keys taken while keyward was down show only as fewer keys.
            if !pool.spec.verification {
                memo.consumed += u64::from(status.available).saturating_sub(keys.len() as u64);
            }
            memo.known = present.iter().map(|n| n.to_string()).collect();
            memo.initialized = true;
        }
        let observed = Observed {
            now,
            size: pool.spec.size,
            key_ttl: pool
                .spec
                .key_ttl
                .as_deref()
                .and_then(|v| crate::duration::parse(v).ok())
                .and_then(|d| SignedDuration::try_from(d).ok()),
            verification: pool.spec.verification,
            keys,
            records,
            known: memo.known.clone(),
            deleted_by_us: memo.deleted_by_us.clone(),
            failed_creates: memo.failed_creates.clone(),
            pepper_id,
        };
        Ok((observed, snapshot))
    }
}
