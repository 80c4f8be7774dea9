//! The pool pipeline's writing half. Records are written only by plain create and by
//! update under a resourceVersion precondition (never server-side apply: the verifier
//! writes them too); key Secrets by plain create and guarded delete. A new key: record
//! *pending* → key Secret → record *available*, so a crash anywhere leaves nothing a
//! verifier would accept twice and nothing delivered that it does not know.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::observe::Snapshot;
use super::plan::{KeySecret, Observed, Plan, RecordChange, Removal};
use super::webhook::{self, GeneratorError};
use super::{Error, Memo, Pools, build, stale_or};
use crate::controller::FIELD_MANAGER;
use crate::controller::activity::AnyRef;
use crate::controller::events::Note;
use crate::controller::secrets::{Deleted, outcome_unknown};
use crate::crd::{ApiKeyPool, labels};
use crate::keys::{self, PlainKey};
use crate::record::{SingleUseRecord, UseState};

/// New keys started in one round (the rest follow in the next).
const BATCH: usize = 256;

/// What generating one key came to: its suffix and the objects written, or why not.
type Made = Result<(String, Vec<AnyRef>), (String, Failed)>;

/// One key that could not be made.
enum Failed {
    /// The generator (webhook) gave nothing usable: back off.
    Generator(GeneratorError),
    /// A write failed.
    Write(Error),
}

impl Pools {
    fn keys_api(&self, pool: &ApiKeyPool) -> Api<Secret> {
        Api::namespaced(
            self.ctx.client.clone(),
            &pool.namespace().unwrap_or_default(),
        )
    }

    fn records_api(&self) -> Api<Secret> {
        Api::namespaced(self.ctx.client.clone(), &self.ctx.config.hash_namespace)
    }

    fn params() -> PostParams {
        PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        }
    }

    /// Updates a record over the version read (PUT with resourceVersion).
    async fn update_record(
        &self,
        record: &SingleUseRecord,
        resource_version: &str,
        memo: &mut Memo,
    ) -> Result<(), Error> {
        let mut secret = record.to_secret(&self.ctx.config.hash_namespace);
        secret.metadata.resource_version = Some(resource_version.to_string());
        let written = self
            .records_api()
            .replace(&record.name(), &Self::params(), &secret)
            .await
            .map_err(stale_or("updating a pool record"))?;
        self.ctx.activity.wrote(&written);
        memo.written.push(ObjectRef::from_obj(&written).erase());
        Ok(())
    }

    /// Carries out one plan; `false` when nothing could be done (a failing generator).
    pub async fn carry_out(
        &self,
        pool: &ApiKeyPool,
        o: &Observed,
        snap: &Snapshot,
        plan: &Plan,
        memo: &mut Memo,
    ) -> Result<bool, Error> {
        memo.consumed += plan.taken;
        memo.known = o.keys.iter().map(|k| k.name.clone()).collect();
        for (suffix, change) in &plan.records {
            let Some(view) = o.records.get(suffix) else {
                continue;
            };
            let mut record = view.record.clone();
            match change {
                RecordChange::Promote => record.state = UseState::Available,
                RecordChange::Take(at) => {
                    record.state = UseState::Taken;
                    record.taken_at = Some(crate::clock::ms(*at));
                }
                RecordChange::AddTakenAt(at) => record.taken_at = Some(crate::clock::ms(*at)),
                RecordChange::Rekey => {
                    let Some(key) = snap.keys.get(suffix).and_then(|s| build::key_of(s)) else {
                        continue;
                    };
                    record.key = build::rekeyed(&record.key, &key, &self.ctx.peppers.current());
                }
                RecordChange::Delete => {
                    if let Some(secret) = snap.records.get(suffix) {
                        self.ctx
                            .delete_guarded(&self.records_api(), secret)
                            .await
                            .map_err(stale_or("deleting a pool record"))?;
                        memo.written.push(ObjectRef::from_obj(&**secret).erase());
                    }
                    memo.failed_creates.remove(suffix);
                    continue;
                }
            }
            self.update_record(&record, &view.resource_version, memo)
                .await?;
        }
        for (key, why) in &plan.removals {
            self.remove(pool, o, snap, key, *why, memo).await?;
        }
        for key in &plan.unrecorded {
            self.record_existing(pool, snap, key, memo).await?;
        }
        if plan.create == 0 {
            return Ok(true);
        }
        if let Some(retry) = memo.generator.retry_at
            && Instant::now() < retry
        {
            return Ok(false);
        }
        self.top_up(pool, plan.create.min(BATCH), memo).await
    }

    /// Removes one key Secret (guarded: a taker may win), then its record.
    async fn remove(
        &self,
        pool: &ApiKeyPool,
        o: &Observed,
        snap: &Snapshot,
        key: &KeySecret,
        why: Removal,
        memo: &mut Memo,
    ) -> Result<(), Error> {
        let Some(secret) = snap.keys.get(&key.suffix) else {
            return Ok(());
        };
        let outcome = self
            .ctx
            .delete_guarded(&self.keys_api(pool), secret)
            .await
            .map_err(stale_or("deleting a pool key"))?;
        memo.written.push(ObjectRef::from_obj(&**secret).erase());
        if outcome != Deleted::Now {
            // Someone took it first: the next pass sees it gone and counts the take.
            return Ok(());
        }
        memo.deleted_by_us.insert(key.name.clone());
        memo.known.remove(&key.name);
        if why == Removal::Consumed {
            memo.consumed += 1;
            return Ok(());
        }
        // Never handed out: its record goes too (unless a verifier just consumed it).
        if let (Some(record), Some(view)) =
            (snap.records.get(&key.suffix), o.records.get(&key.suffix))
            && view.record.state != UseState::Consumed
        {
            self.ctx
                .delete_guarded(&self.records_api(), record)
                .await
                .map_err(stale_or("deleting a pool record"))?;
            memo.written.push(ObjectRef::from_obj(&**record).erase());
        }
        Ok(())
    }

    /// Verification was turned on: records for the keys already in the pool.
    async fn record_existing(
        &self,
        pool: &ApiKeyPool,
        snap: &Snapshot,
        key: &KeySecret,
        memo: &mut Memo,
    ) -> Result<(), Error> {
        let Some(plain) = snap.keys.get(&key.suffix).and_then(|s| build::key_of(s)) else {
            return Ok(());
        };
        let hashed = self.hash(pool, &plain).await?;
        let record = build::record(pool, &key.suffix, hashed, UseState::Available);
        self.create_record(&record, memo).await.map(|_| ())
    }

    async fn hash(
        &self,
        pool: &ApiKeyPool,
        key: &PlainKey,
    ) -> Result<crate::record::KeyHash, Error> {
        let phc = self
            .ctx
            .argon2(&self.hashing, key)
            .await
            .map_err(Error::Hashing)??;
        Ok(build::key_hash(
            pool,
            key,
            phc,
            &self.ctx.peppers.current(),
            self.ctx.clock.now(),
        ))
    }

    async fn create_record(
        &self,
        record: &SingleUseRecord,
        memo: &mut Memo,
    ) -> Result<Secret, Error> {
        let secret = record.to_secret(&self.ctx.config.hash_namespace);
        let written = self
            .records_api()
            .create(&Self::params(), &secret)
            .await
            .map_err(stale_or("creating a pool record"))?;
        self.ctx.activity.wrote(&written);
        memo.written.push(ObjectRef::from_obj(&written).erase());
        Ok(written)
    }

    /// Generates up to `n` keys, several at a time; stops at the first generator failure.
    async fn top_up(&self, pool: &ApiKeyPool, n: usize, memo: &mut Memo) -> Result<bool, Error> {
        let webhook = pool
            .spec
            .generator
            .as_ref()
            .and_then(|g| g.webhook.clone())
            .filter(|_| build::is_webhook(pool));
        let headers = match &webhook {
            Some(w) => match self.webhook_headers(pool, w).await {
                Ok(h) => h,
                Err(Failed::Generator(e)) => {
                    self.generator_failed(pool, e, memo).await;
                    return Ok(false);
                }
                Err(Failed::Write(e)) => return Err(e),
            },
            None => reqwest::header::HeaderMap::new(),
        };
        // Keys already in the pool or minted in this batch (by fingerprint): a webhook
        // returning one of them again is refused, also when two calls in flight get one key.
        let held: Arc<std::sync::Mutex<std::collections::HashSet<String>>> =
            Arc::new(std::sync::Mutex::new(if webhook.is_some() {
                self.read_held(pool)
            } else {
                Default::default()
            }));
        let concurrency = if webhook.is_some() {
            self.ctx.config.webhook_concurrency.max(1)
        } else if pool.spec.verification {
            2 * self.ctx.config.hash_workers.max(1)
        } else {
            16
        };
        let stop = Arc::new(AtomicBool::new(false));
        let results: Vec<Made> = futures::stream::iter(0..n)
            .map(|_| {
                let (webhook, headers, held, stop) =
                    (webhook.clone(), headers.clone(), held.clone(), stop.clone());
                async move {
                    let suffix = build::suffix()
                        .map_err(|_| (String::new(), Failed::Write(Error::Random)))?;
                    if stop.load(Ordering::SeqCst) {
                        return Err((
                            suffix,
                            Failed::Generator(GeneratorError::Request(
                                "stopped after a failure".into(),
                            )),
                        ));
                    }
                    let key = match &webhook {
                        None => keys::generate(&build::format_of(pool))
                            .map_err(|_| (suffix.clone(), Failed::Write(Error::Random)))?,
                        Some(w) => {
                            let key = webhook::mint(&self.ctx, w, headers).await.and_then(|k| {
                                let fresh = held
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .insert(keys::fingerprint(&k));
                                if fresh {
                                    Ok(k)
                                } else {
                                    Err(GeneratorError::Duplicate)
                                }
                            });
                            match key {
                                Ok(k) => k,
                                Err(e) => {
                                    stop.store(true, Ordering::SeqCst);
                                    return Err((suffix, Failed::Generator(e)));
                                }
                            }
                        }
                    };
                    self.add_key(pool, &suffix, &key)
                        .await
                        .map(|w| (suffix.clone(), w))
                        .map_err(|e| (suffix, Failed::Write(e)))
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut generator_error = None;
        let mut write_error = None;
        let mut made = 0u64;
        for result in results {
            match result {
                Ok((suffix, written)) => {
                    made += 1;
                    memo.known.insert(format!("{}-{suffix}", pool.name_any()));
                    memo.written.extend(written);
                }
                Err((suffix, Failed::Write(e))) => {
                    if !suffix.is_empty() {
                        memo.failed_creates.insert(suffix);
                    }
                    write_error.get_or_insert(e);
                }
                Err((_, Failed::Generator(e))) => {
                    if !matches!(&e, GeneratorError::Request(m) if m == "stopped after a failure") {
                        generator_error.get_or_insert(e);
                    }
                }
            }
        }
        memo.generated += made;
        if let Some(e) = generator_error {
            self.generator_failed(pool, e, memo).await;
        } else if made > 0 {
            memo.generator = Default::default();
        }
        match write_error {
            Some(e) if made == 0 => Err(e),
            _ => Ok(made > 0),
        }
    }

    /// Fingerprints of the keys the pool holds or handed out (records, key Secrets).
    fn read_held(&self, pool: &ApiKeyPool) -> std::collections::HashSet<String> {
        let snap = self.read(pool);
        let mut held: std::collections::HashSet<String> = snap
            .keys
            .values()
            .filter_map(|s| build::key_of(s))
            .map(|k| keys::fingerprint(&k))
            .collect();
        held.extend(
            snap.records
                .values()
                .filter_map(|s| SingleUseRecord::from_secret(s).ok())
                .map(|r| r.key.fingerprint),
        );
        held
    }

    /// One new key: record pending → key Secret → record available (with verification).
    async fn add_key(
        &self,
        pool: &ApiKeyPool,
        suffix: &str,
        key: &PlainKey,
    ) -> Result<Vec<AnyRef>, Error> {
        // The writes of this key, for the next pass to wait on.
        let mut scratch = Memo::default();
        let pending = if pool.spec.verification {
            let hashed = self.hash(pool, key).await?;
            let record = build::record(pool, suffix, hashed, UseState::Pending);
            let secret = self.create_record(&record, &mut scratch).await?;
            Some((record, secret.resource_version().unwrap_or_default()))
        } else {
            None
        };
        let desired = build::key_secret(pool, suffix, key, self.ctx.clock.now());
        match self.keys_api(pool).create(&Self::params(), &desired).await {
            Ok(created) => {
                self.ctx.activity.wrote(&created);
                scratch.written.push(ObjectRef::from_obj(&created).erase());
            }
            Err(e) => {
                if outcome_unknown(&e) {
                    self.ctx.activity.uncertain(&desired);
                }
                return Err(stale_or("creating a pool key")(e));
            }
        }
        if let Some((mut record, rv)) = pending {
            record.state = UseState::Available;
            self.update_record(&record, &rv, &mut scratch).await?;
        }
        Ok(scratch.written)
    }

    /// The `headersFrom` Secret's data as headers (read when the generator runs).
    async fn webhook_headers(
        &self,
        pool: &ApiKeyPool,
        w: &crate::crd::WebhookGenerator,
    ) -> Result<reqwest::header::HeaderMap, Failed> {
        let Some(from) = &w.headers_from else {
            return Ok(reqwest::header::HeaderMap::new());
        };
        let name = &from.secret_ref.name;
        let secret = self
            .keys_api(pool)
            .get_opt(name)
            .await
            .map_err(|e| Failed::Write(stale_or("reading the headersFrom Secret")(e)))?
            .ok_or_else(|| Failed::Generator(GeneratorError::HeadersSecretMissing(name.clone())))?;
        webhook::headers(name, &secret.data.unwrap_or_default()).map_err(Failed::Generator)
    }

    /// Records a generator failure: backoff (1 s doubling to 5 min; none for a host off the
    /// allowlist), the condition, and an Event when it starts failing.
    async fn generator_failed(&self, pool: &ApiKeyPool, e: GeneratorError, memo: &mut Memo) {
        let first = memo.generator.failures == 0;
        memo.generator.failures = memo.generator.failures.saturating_add(1);
        let backoff = std::time::Duration::from_secs(1 << (memo.generator.failures - 1).min(8))
            .min(std::time::Duration::from_secs(300));
        memo.generator.host_not_allowed = e.host_not_allowed();
        // A host off the allowlist stays off it until the spec or the operator's flags
        // change (either brings a new pass): nothing to retry on a timer.
        memo.generator.retry_at =
            (!memo.generator.host_not_allowed).then(|| Instant::now() + backoff);
        let message = e.to_string();
        tracing::warn!(pool = %format!("{}/{}", pool.namespace().unwrap_or_default(), pool.name_any()), error = %message, retry_in = ?backoff, "pool generator failed");
        if first || memo.generator.message.as_deref() != Some(&message) {
            self.ctx
                .publish(
                    &pool.object_ref(&()),
                    Note::warning("GeneratorFailing", "Generate", message.clone()),
                )
                .await;
        }
        memo.generator.message = Some(message);
    }

    /// Deletes every record of the pool; `true` when none is left.
    pub async fn delete_records(&self, pool: &ApiKeyPool) -> Result<bool, Error> {
        let (ns, name) = (pool.namespace().unwrap_or_default(), pool.name_any());
        let selector = format!(
            "{}={name},{}={ns},{}=true",
            labels::POOL,
            labels::NAMESPACE,
            labels::SINGLE_USE
        );
        let records = self
            .records_api()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(stale_or("listing the pool's records"))?;
        let uid = pool.uid().unwrap_or_default();
        for record in records.items {
            let ours = SingleUseRecord::from_secret(&record).is_ok_and(|r| r.pool.uid == uid);
            if ours {
                let name = record.name_any();
                self.ctx
                    .delete_secret(&self.records_api(), &self.ctx.config.hash_namespace, &name)
                    .await
                    .map_err(stale_or("deleting a pool record"))?;
            }
        }
        Ok(true)
    }

    /// Deletion: the records go (taken-but-unused keys stop verifying); the key Secrets go
    /// with the pool by ownerReference.
    pub async fn cleanup(&self, pool: &ApiKeyPool) -> Result<(), Error> {
        if !pool.finalizers().iter().any(|f| f == super::FINALIZER) {
            return Ok(());
        }
        self.delete_records(pool).await?;
        crate::controller::finalizer::release(&self.ctx, pool, super::FINALIZER)
            .await
            .map_err(super::finalizer_err("removing the finalizer"))
    }
}
