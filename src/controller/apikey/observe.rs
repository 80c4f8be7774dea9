//! The ApiKey pipeline's reading half: what the decision needs, from the shared caches. A
//! converged key costs no API request; the only reads are the GET of an import source whose
//! version changed, and existence checks of restart targets not known to exist. argon2
//! (to match a key whose fast hash was made under a pepper that is neither the current
//! nor the previous one) runs on the hashing pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::reflector::ObjectRef;

use super::plan::{Import, KeyMatch, Observed, RotationView, Workload};
use super::{ApiKeys, Error, REVEALED_AT, build, kube_err};
use crate::crd::{ApiKey, Delivery, RestartKind, annotations, labels};
use crate::keys::{PlainKey, format};
use crate::record::{HashRecord, ImportSource, KeyHash, RestartState};

const DEFAULT_REVEAL_WINDOW: SignedDuration = SignedDuration::from_hours(1);
/// How long a reconcile waits for its own last writes to reach the cache.
const CACHE_PATIENCE: Duration = Duration::from_secs(2);

/// What was read, beyond the decision inputs: the objects and plain keys the steps need.
pub struct Snapshot {
    pub workload: Option<Arc<Secret>>,
    pub workload_key: Option<PlainKey>,
    pub record_secret: Option<Arc<Secret>>,
    pub record: Option<HashRecord>,
    /// The import source's key, when it was read.
    pub import_key: Option<PlainKey>,
    /// The import source as now seen, when it holds the current key (or the key read).
    pub import_source: Option<ImportSource>,
    pub weak_import: bool,
    pub moving_from: Option<(Arc<Secret>, PlainKey)>,
}

impl ApiKeys {
    /// Whether `key` is the key `hash` records: the fast hash under the current or the
    /// previous pepper, or argon2 on the hashing pool when the fast hash was made under a
    /// pepper the operator no longer holds.
    pub async fn matches(&self, key: &PlainKey, hash: &KeyHash) -> Result<bool, Error> {
        if let Some(pepper) = self.ctx.peppers.get().by_id(&hash.pepper_id) {
            return Ok(pepper.matches(key.expose(), &hash.fast_hash));
        }
        let (key, phc) = (key.clone(), hash.hash.clone());
        self.hashing
            .run(move || crate::keys::argon2_verify(key.expose(), &phc))
            .await
            .map_err(Error::Hashing)
    }

    /// A Secret keyward manages: from the cache, or from the API after a write to it whose
    /// outcome is unknown (the cache cannot tell whether that write happened).
    async fn read_managed(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Secret>>, Error> {
        let obj = ObjectRef::<Secret>::new(name).within(namespace).erase();
        if !self.ctx.activity.is_uncertain(&obj) {
            return Ok(self.caches.managed_secret(namespace, name));
        }
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), namespace);
        let fresh = api
            .get_opt(name)
            .await
            .map_err(kube_err("reading a Secret after an unanswered write"))?;
        self.ctx.activity.settled(&obj);
        Ok(fresh.map(Arc::new))
    }

    /// Reads everything the decision needs.
    pub async fn observe(&self, ak: &ApiKey) -> Result<(Observed, Snapshot), Error> {
        let now = self.ctx.clock.now();
        let namespace = ak.namespace().ok_or(Error::NoIdentity)?;
        let uid = ak.uid().ok_or(Error::NoIdentity)?;
        let hash_ns = &self.ctx.config.hash_namespace;
        let record_name = crate::record::name_for(&uid);
        let desired = build::desired_secret(ak);
        let previous_name = ak
            .status
            .as_ref()
            .and_then(|s| s.secret_name.clone())
            .filter(|old| *old != desired);
        // Never act on a cache older than this controller's own last writes.
        let mut ours = vec![
            ObjectRef::<Secret>::new(&record_name)
                .within(hash_ns)
                .erase(),
            ObjectRef::<Secret>::new(&desired)
                .within(&namespace)
                .erase(),
        ];
        if let Some(old) = &previous_name {
            ours.push(ObjectRef::<Secret>::new(old).within(&namespace).erase());
        }
        if !self.ctx.activity.wait_seen(&ours, CACHE_PATIENCE).await {
            return Err(Error::Stale(
                "waiting for the cache to show keyward's last write",
            ));
        }

        let record_secret = self.read_managed(hash_ns, &record_name).await?;
        let record = record_secret
            .as_deref()
            .map(HashRecord::from_secret)
            .transpose()?;
        let workload_secret = self.read_managed(&namespace, &desired).await?;
        let mut workload_key = None;
        let workload = match &workload_secret {
            None => match self.caches.secret_meta(&namespace, &desired) {
                None => Workload::Missing,
                Some(meta)
                    if meta.labels().get(labels::MANAGED_BY).map(String::as_str)
                        == Some(labels::MANAGED_BY_VALUE) =>
                {
                    // Two watches, two paces: the managed one has not shown it yet.
                    return Err(Error::Stale("the managed-Secret cache lags"));
                }
                Some(_) => Workload::Foreign {
                    why: build::foreign(&desired),
                },
            },
            Some(secret) => match build::ownership(ak, secret) {
                Err(why) => Workload::Foreign { why },
                Ok(retained) => {
                    let key = build::secret_key_of(ak, secret);
                    let matched = match (&key, &record) {
                        (None, _) => KeyMatch::Absent,
                        (Some(k), Some(r)) => {
                            if let Some(c) = &r.current
                                && self.matches(k, c).await?
                            {
                                KeyMatch::Current
                            } else if let Some(p) = &r.pending
                                && self.matches(k, p).await?
                            {
                                KeyMatch::Pending
                            } else {
                                KeyMatch::Other
                            }
                        }
                        (Some(_), None) => KeyMatch::Other,
                    };
                    // Revealed means the key is gone; an annotation left from an earlier
                    // key's reveal does not hide a newly delivered one.
                    let revealed_at = if key.is_none() {
                        secret.annotations().get(REVEALED_AT).cloned()
                    } else {
                        None
                    };
                    workload_key = key;
                    Workload::Ours {
                        key: matched,
                        revealed_at,
                        retained,
                    }
                }
            },
        };
        let mut moving_from = None;
        if let Some(old) = &previous_name
            && let Some(current) = record.as_ref().and_then(|r| r.current.as_ref())
            && let Some(secret) = self.read_managed(&namespace, old).await?
            && build::ownership(ak, &secret).is_ok()
            && let Some(key) = build::secret_key_of(ak, &secret)
            && self.matches(&key, current).await?
        {
            moving_from = Some((secret, key));
        }
        let (import, import_key, import_source, weak_import) =
            self.observe_import(ak, &namespace, record.as_ref()).await?;
        let current = record.as_ref().and_then(|r| r.current.as_ref());
        let issued = current.map(|c| c.issued_at);
        let expires_at = match current {
            Some(c) => c.expires_at,
            None => build::expiry(ak, now),
        };
        let reveal_window = ak
            .spec
            .reveal_window
            .as_deref()
            .and_then(|w| super::plan::parse_duration("revealWindow", w).ok())
            .unwrap_or(DEFAULT_REVEAL_WINDOW);
        let rotation = self
            .observe_rotation(ak, &namespace, record.as_ref())
            .await?;
        let observed = Observed {
            rotation,
            now,
            generation: ak.metadata.generation,
            spec_problem: build::spec_problem(ak),
            desired_secret: desired,
            workload,
            moving_from: moving_from.as_ref().map(|(s, _)| s.name_any()),
            record: record.clone(),
            import,
            delivery: ak.spec.delivery,
            reveal_deadline: issued
                .filter(|_| ak.spec.delivery == Delivery::ShowOnce)
                .and_then(|t| t.checked_add(reveal_window).ok()),
            disabled: ak.spec.disabled,
            expires_at,
        };
        let snapshot = Snapshot {
            workload: workload_secret,
            workload_key,
            record_secret,
            record,
            import_key,
            import_source,
            weak_import,
            moving_from,
        };
        Ok((observed, snapshot))
    }

    /// The import source: from the metadata cache while it still shows the version the
    /// current key was read from; read (GET) only when it changed.
    async fn observe_import(
        &self,
        ak: &ApiKey,
        namespace: &str,
        record: Option<&HashRecord>,
    ) -> Result<(Import, Option<PlainKey>, Option<ImportSource>, bool), Error> {
        let Some(import) = &ak.spec.import_from else {
            return Ok((Import::NotConfigured, None, None, false));
        };
        let source = &import.secret_ref;
        let Some(meta) = self.caches.secret_meta(namespace, &source.name) else {
            return Ok((
                Import::SecretMissing {
                    secret: source.name.clone(),
                },
                None,
                None,
                false,
            ));
        };
        let seen = ImportSource {
            name: source.name.clone(),
            key: source.key.clone(),
            resource_version: meta.resource_version().unwrap_or_default(),
        };
        let current = record.and_then(|r| r.current.as_ref());
        if let Some(c) = current
            && c.imported
            && record.and_then(|r| r.import_source.as_ref()) == Some(&seen)
        {
            let import = Import::Present {
                matches_current: true,
                weak: c.weak,
            };
            return Ok((import, None, Some(seen), c.weak));
        }
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), namespace);
        let Some(secret) = secrets
            .get_opt(&source.name)
            .await
            .map_err(kube_err("reading the importFrom Secret"))?
        else {
            return Ok((
                Import::SecretMissing {
                    secret: source.name.clone(),
                },
                None,
                None,
                false,
            ));
        };
        let seen = ImportSource {
            resource_version: secret.resource_version().unwrap_or_default(),
            ..seen
        };
        let key = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&source.key))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .filter(|s| !s.is_empty());
        let Some(key) = key.map(PlainKey::new) else {
            return Ok((
                Import::KeyMissing {
                    secret: source.name.clone(),
                    key: source.key.clone(),
                },
                None,
                None,
                false,
            ));
        };
        let weak = format::estimated_bits(&key) < 128.0;
        let matches_current = match current {
            Some(c) if c.imported => self.matches(&key, c).await?,
            _ => false,
        };
        Ok((
            Import::Present {
                matches_current,
                weak,
            },
            Some(key),
            Some(seen),
            weak,
        ))
    }

    /// What rotation asks for now: the next scheduled instant, unconsumed requests, a
    /// format change, and restart targets not yet rolled for the current key. Restart
    /// targets are read only while keyward does not know them to exist.
    async fn observe_rotation(
        &self,
        ak: &ApiKey,
        namespace: &str,
        record: Option<&HashRecord>,
    ) -> Result<RotationView, Error> {
        let requested = ak.annotations().get(annotations::ROTATE).cloned();
        let mut view = RotationView::default();
        let Some((record, current)) = record.and_then(|r| r.current.as_ref().map(|c| (r, c)))
        else {
            // The first issue consumes a request committed with the ApiKey.
            view.manual_request = requested;
            return Ok(view);
        };
        view.manual_request =
            requested.filter(|v| record.rotation.last_request.as_ref() != Some(v));
        view.revoke_request = ak
            .annotations()
            .get(annotations::REVOKE_PREVIOUS)
            .filter(|v| record.rotation.last_revocation.as_ref() != Some(*v))
            .cloned();
        if !current.imported {
            view.next_at = build::policy(ak).and_then(|p| p.next_rotation(current.issued_at));
            view.format_changed = record
                .format
                .as_ref()
                .is_some_and(|f| *f != build::format_of(ak));
        }
        let mut restarts = BTreeMap::new();
        for target in ak
            .spec
            .rotation
            .iter()
            .flat_map(|r| r.restart_targets.iter())
        {
            let label = format!("{:?}/{}", target.kind, target.name);
            let state = match record.restarts.get(&label) {
                Some(known) if !known.missing => known.clone(),
                known => {
                    let live = target_api(&self.ctx.client, namespace, target.kind)
                        .get_opt(&target.name)
                        .await
                        .map_err(kube_err("reading a restart target"))?;
                    match live {
                        None => RestartState {
                            rolled_for: known.and_then(|k| k.rolled_for.clone()),
                            missing: true,
                        },
                        // First sight: what it was last rolled for is on the workload.
                        Some(w) => RestartState {
                            rolled_for: known.and_then(|k| k.rolled_for.clone()).or_else(|| {
                                w.data["spec"]["template"]["metadata"]["annotations"]
                                    [annotations::RESTARTED_AT]
                                    .as_str()
                                    .map(String::from)
                            }),
                            missing: false,
                        },
                    }
                }
            };
            if state.missing {
                view.missing_targets.push(label.clone());
            } else if record.rotation.count > 0
                && state.rolled_for.as_deref() != Some(current.fingerprint.as_str())
            {
                view.stale_targets.push(label.clone());
            }
            restarts.insert(label, state);
        }
        view.restarts = restarts;
        Ok(view)
    }
}

/// The API of a restart target's kind in `namespace`.
pub fn target_api(client: &kube::Client, namespace: &str, kind: RestartKind) -> Api<DynamicObject> {
    let (kind_name, plural) = match kind {
        RestartKind::Deployment => ("Deployment", "deployments"),
        RestartKind::StatefulSet => ("StatefulSet", "statefulsets"),
        RestartKind::DaemonSet => ("DaemonSet", "daemonsets"),
    };
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("apps", "v1", kind_name), plural);
    Api::namespaced_with(client.clone(), namespace, &resource)
}
