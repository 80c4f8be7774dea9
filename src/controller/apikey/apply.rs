//! The ApiKey pipeline's writing half: each step's writes, built by `build`, in the order
//! that keeps a crash between any two of them recoverable: a new key's hash goes into the
//! hash record as *pending* (the verifier already accepts it), then the plain key into the
//! workload Secret (a plain create the first time), then pending is promoted to current.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::observe::{Snapshot, target_api};
use super::plan::{Observed, Source, Workload};
use super::{ApiKeys, Error, REVEALED_AT, build, stale_or};
use crate::clock::rfc3339;
use crate::controller::events::Note;
use crate::crd::{ApiKey, DeletionPolicy, annotations};
use crate::history::{self, Action, Reason};
use crate::keys::{self, PlainKey};
use crate::record::{self, HashRecord};

impl ApiKeys {
    fn secrets(&self, ak: &ApiKey) -> Api<Secret> {
        Api::namespaced(self.ctx.client.clone(), &ak.namespace().unwrap_or_default())
    }

    fn records(&self) -> Api<Secret> {
        Api::namespaced(self.ctx.client.clone(), &self.ctx.config.hash_namespace)
    }

    /// Creates the record or updates it over `existing` (resourceVersion precondition).
    async fn write_record(
        &self,
        record: &HashRecord,
        existing: Option<&Secret>,
    ) -> Result<Secret, Error> {
        let secret = record.to_secret(&self.ctx.config.hash_namespace);
        let step = if existing.is_some() {
            "updating the hash record"
        } else {
            "creating the hash record"
        };
        self.ctx
            .create_or_apply(&self.records(), secret, existing)
            .await
            .map_err(stale_or(step))
    }

    /// Creates the workload Secret or applies over `existing` (a 409 means someone else's
    /// Secret appeared, or ours moved on: observe again).
    async fn write_workload(
        &self,
        ak: &ApiKey,
        desired: Secret,
        existing: Option<&Secret>,
    ) -> Result<Secret, Error> {
        let step = if existing.is_some() {
            "updating the workload Secret"
        } else {
            "creating the workload Secret"
        };
        self.ctx
            .create_or_apply(&self.secrets(ak), desired, existing)
            .await
            .map_err(stale_or(step))
    }

    /// Hashes a key for the record, on the hashing pool.
    async fn hash(
        &self,
        ak: &ApiKey,
        key: &PlainKey,
        imported_weak: (bool, bool),
        now: Timestamp,
    ) -> Result<record::KeyHash, Error> {
        let phc = self
            .ctx
            .argon2(&self.hashing, key)
            .await
            .map_err(Error::Hashing)??;
        Ok(build::key_hash(
            ak,
            key,
            phc,
            imported_weak,
            &self.ctx.peppers.current(),
            now,
        ))
    }

    /// Deletion: remove the hash record (so the key stops verifying), make sure a Retain
    /// Secret carries no ownerReference, then release the finalizer.
    pub async fn cleanup(&self, ak: &ApiKey) -> Result<(), Error> {
        if !ak.finalizers().iter().any(|f| f == super::FINALIZER) {
            return Ok(());
        }
        let uid = ak.uid().ok_or(Error::NoIdentity)?;
        let hash_ns = self.ctx.config.hash_namespace.clone();
        self.ctx
            .delete_secret(&self.records(), &hash_ns, &record::name_for(&uid))
            .await
            .map_err(stale_or("deleting the hash record"))?;
        let namespace = ak.namespace().unwrap_or_default();
        if ak.spec.deletion_policy == DeletionPolicy::Retain
            && let Some(secret) = self
                .caches
                .managed_secret(&namespace, &build::desired_secret(ak))
            && secret.owner_references().iter().any(|o| o.uid == uid)
        {
            let refs: Vec<&OwnerReference> = secret
                .owner_references()
                .iter()
                .filter(|o| o.uid != uid)
                .collect();
            let patch = json!({"metadata": {"resourceVersion": secret.resource_version(), "ownerReferences": refs}});
            let released = self
                .secrets(ak)
                .patch(
                    &secret.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(stale_or("releasing the retained Secret"))?;
            self.ctx.activity.wrote(&released);
        }
        crate::controller::finalizer::release(&self.ctx, ak, super::FINALIZER)
            .await
            .map_err(super::finalizer_err("removing the finalizer"))
    }

    /// pending → deliver → promote, for a new, imported or adopted key.
    pub async fn issue(
        &self,
        ak: &ApiKey,
        o: &Observed,
        snap: &Snapshot,
        (source, action, reason): (Source, Action, &Reason),
    ) -> Result<(), Error> {
        let now = self.ctx.clock.now();
        let (key, import_source) = match source {
            Source::Generate => (
                keys::generate(&build::format_of(ak)).map_err(|_| Error::Random)?,
                None,
            ),
            Source::Import => match (&snap.import_key, &snap.import_source) {
                (Some(key), source) => (key.clone(), source.clone()),
                // The cache said the source holds the current key; the workload Secret lost
                // it: read it once to deliver it again.
                _ => return self.redeliver_import(ak, o, snap, reason).await,
            },
            Source::Adopt => (snap.workload_key.clone().ok_or(Error::NoIdentity)?, None),
        };
        let imported = source == Source::Import;
        let hashed = self
            .hash(ak, &key, (imported, imported && snap.weak_import), now)
            .await?;
        // 1. pending
        let previous = snap.record.as_ref().and_then(|r| r.current.clone());
        let pending = build::with_pending(
            ak,
            snap.record.as_ref(),
            hashed.clone(),
            o.rotation.manual_request.clone(),
        );
        let written = self
            .write_record(&pending, snap.record_secret.as_deref())
            .await?;
        // 2. deliver, with the history entry that records it
        let entry = build::issue_entry(&hashed, previous.as_ref(), action, reason.clone(), now);
        let history = history::append(pending.history.clone(), entry, build::history_limit(ak));
        let desired =
            build::workload_secret(ak, &o.desired_secret, Some(&key), &hashed, &history, None);
        let existing = match &o.workload {
            Workload::Ours { .. } => snap.workload.as_deref(),
            _ => None,
        };
        self.write_workload(ak, desired, existing).await?;
        // 3. promote, over the record as step 1 left it
        if let Some(promoted) =
            build::promoted(pending, build::grace(ak), Some(history), import_source, now)
        {
            self.write_record(&promoted, Some(&written)).await?;
        }
        let note = build::issue_event(
            reason,
            source,
            previous.is_some(),
            &hashed,
            &o.desired_secret,
        );
        self.ctx.publish(&ak.object_ref(&()), note).await;
        Ok(())
    }

    /// The workload Secret lost the imported key that the cache says is unchanged at its
    /// source: read the source and deliver it again (as a fresh issue of that key).
    async fn redeliver_import(
        &self,
        ak: &ApiKey,
        o: &Observed,
        snap: &Snapshot,
        reason: &Reason,
    ) -> Result<(), Error> {
        let Some(import) = &ak.spec.import_from else {
            return Ok(());
        };
        let source = &import.secret_ref;
        let secret = self
            .secrets(ak)
            .get_opt(&source.name)
            .await
            .map_err(super::kube_err("reading the importFrom Secret"))?;
        let key = secret
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(&source.key))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .filter(|s| !s.is_empty());
        let Some(key) = key else {
            // Gone meanwhile: the next observation says so.
            return Err(Error::Stale("the import source changed"));
        };
        let read = Snapshot {
            workload: snap.workload.clone(),
            workload_key: snap.workload_key.clone(),
            record_secret: snap.record_secret.clone(),
            record: snap.record.clone(),
            import_key: Some(PlainKey::new(key)),
            import_source: secret.map(|s| record::ImportSource {
                name: source.name.clone(),
                key: source.key.clone(),
                resource_version: s.resource_version().unwrap_or_default(),
            }),
            weak_import: snap.weak_import,
            moving_from: None,
        };
        Box::pin(self.issue(ak, o, &read, (Source::Import, Action::Imported, reason))).await
    }

    /// The workload Secret holds the pending key: make it current.
    pub async fn promote(&self, ak: &ApiKey, snap: &Snapshot) -> Result<(), Error> {
        let Some(record) = snap.record.clone() else {
            return Ok(());
        };
        let history = snap.workload.as_ref().map(|w| {
            history::parse(
                w.annotations()
                    .get(annotations::HISTORY)
                    .map(String::as_str),
            )
        });
        let import_source = snap.import_source.clone();
        if let Some(promoted) = build::promoted(
            record,
            build::grace(ak),
            history,
            import_source,
            self.ctx.clock.now(),
        ) {
            self.write_record(&promoted, snap.record_secret.as_deref())
                .await?;
        }
        Ok(())
    }

    pub async fn discard_pending(&self, snap: &Snapshot) -> Result<(), Error> {
        let Some(record) = snap.record.clone() else {
            return Ok(());
        };
        tracing::info!(apikey = %format!("{}/{}", record.apikey.namespace, record.apikey.name), "discarding a pending key that was never delivered");
        self.write_record(&build::discarded(record), snap.record_secret.as_deref())
            .await?;
        Ok(())
    }

    /// `spec.secretName` changed: the same key moves to the new Secret; the old one goes.
    pub async fn move_secret(&self, ak: &ApiKey, snap: &Snapshot, from: &str) -> Result<(), Error> {
        let (Some((old, key)), Some(record)) = (&snap.moving_from, &snap.record) else {
            return Ok(());
        };
        let Some(current) = &record.current else {
            return Ok(());
        };
        let history = history::parse(
            old.annotations()
                .get(annotations::HISTORY)
                .map(String::as_str),
        );
        let to = build::desired_secret(ak);
        let desired = build::workload_secret(ak, &to, Some(key), current, &history, None);
        self.write_workload(ak, desired, None).await?;
        self.ctx
            .delete_guarded(&self.secrets(ak), old)
            .await
            .map_err(stale_or("deleting the previous workload Secret"))?;
        let note = Note::normal(
            "SecretMoved",
            "Move",
            format!("moved key {} from Secret {from} to {to}", current.preview),
        );
        self.ctx.publish(&ak.object_ref(&()), note).await;
        Ok(())
    }

    /// A ShowOnce key nobody revealed in time: only the hash remains.
    pub async fn close_reveal_window(&self, ak: &ApiKey, snap: &Snapshot) -> Result<(), Error> {
        let (Some(secret), Some(record)) = (&snap.workload, &snap.record) else {
            return Ok(());
        };
        let Some(current) = &record.current else {
            return Ok(());
        };
        let now = rfc3339(self.ctx.clock.now());
        self.ctx
            .empty_secret(
                &self.secrets(ak),
                secret,
                &ak.spec.secret_key,
                REVEALED_AT,
                &now,
            )
            .await
            .map_err(super::finalizer_err("emptying the workload Secret"))?;
        let note = Note::normal(
            "RevealWindowClosed",
            "Reveal",
            format!(
                "key {} was not revealed within its window; only its hash remains",
                current.preview
            ),
        );
        self.ctx.publish(&ak.object_ref(&()), note).await;
        Ok(())
    }

    /// Rolls each stale restart target as `kubectl rollout restart` does, then records
    /// what it rolled for in the hash record. The annotation names the key it rolled for,
    /// so repeating a roll after a crash changes nothing.
    pub async fn restart_targets(
        &self,
        ak: &ApiKey,
        o: &Observed,
        snap: &Snapshot,
    ) -> Result<(), Error> {
        let Some(record) = &snap.record else {
            return Ok(());
        };
        let Some(current) = &record.current else {
            return Ok(());
        };
        let namespace = ak.namespace().unwrap_or_default();
        let mut updated = record.clone();
        updated.restarts = o.rotation.restarts.clone();
        for target in ak
            .spec
            .rotation
            .iter()
            .flat_map(|r| r.restart_targets.iter())
        {
            let label = format!("{:?}/{}", target.kind, target.name);
            if !o.rotation.stale_targets.contains(&label) {
                continue;
            }
            let patch = json!({"spec": {"template": {"metadata": {"annotations": {annotations::RESTARTED_AT: current.fingerprint}}}}});
            let state = updated.restarts.entry(label.clone()).or_default();
            match target_api(&self.ctx.client, &namespace, target.kind)
                .patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    state.rolled_for = Some(current.fingerprint.clone());
                    let note = Note::normal(
                        "RestartedWorkload",
                        "Restart",
                        format!("rolled {label} for key {}", current.preview),
                    );
                    self.ctx.publish(&ak.object_ref(&()), note).await;
                }
                Err(kube::Error::Api(s)) if s.code == 404 => state.missing = true,
                Err(e) => return Err(super::kube_err("rolling a restart target")(e)),
            }
        }
        self.write_record(&updated, snap.record_secret.as_deref())
            .await?;
        Ok(())
    }

    /// Emergency revocation: every previous key stops verifying now.
    pub async fn revoke(&self, ak: &ApiKey, snap: &Snapshot, request: &str) -> Result<(), Error> {
        let Some(record) = snap.record.clone() else {
            return Ok(());
        };
        let (record, revoked) = build::revoked(
            record,
            request,
            build::history_limit(ak),
            self.ctx.clock.now(),
        );
        self.write_record(&record, snap.record_secret.as_deref())
            .await?;
        let fingerprints: Vec<&str> = revoked.iter().map(|p| p.key.fingerprint.as_str()).collect();
        let note = Note::warning(
            "Revoked",
            "Revoke",
            format!(
                "revoked {} previous key(s) at once: {}",
                revoked.len(),
                fingerprints.join(", ")
            ),
        );
        self.ctx.publish(&ak.object_ref(&()), note).await;
        Ok(())
    }

    /// Converged: bring the record's access data and history, and the workload Secret's
    /// metadata, in line with the spec. Writes only what differs.
    pub async fn sync(&self, ak: &ApiKey, o: &Observed, snap: &Snapshot) -> Result<(), Error> {
        let (Some(record), Some(secret)) = (&snap.record, &snap.workload) else {
            return Ok(());
        };
        let pepper = self.ctx.peppers.current();
        let mut desired = build::synced(ak, o, record, snap.workload_key.as_ref(), &pepper);
        if desired.current.as_ref().is_some_and(|c| c.imported) && snap.import_source.is_some() {
            desired.import_source = snap.import_source.clone();
        }
        if let Some(wanted) =
            build::synced_workload(ak, o, secret, snap.workload_key.as_ref(), &desired)
        {
            self.write_workload(ak, wanted, Some(secret)).await?;
        }
        if desired != *record {
            self.write_record(&desired, snap.record_secret.as_deref())
                .await?;
        }
        Ok(())
    }
}
