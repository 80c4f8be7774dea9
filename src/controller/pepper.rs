//! The pepper, live (DESIGN §6): the Secret `keyward-pepper` in the hash namespace holds
//! `pepper` and, during a change, `pepper-previous`. The operator keeps the peppers it
//! works with in memory ([`Live`]) and a task keeps them and the Secret in line:
//!
//! - a new `pepper` becomes the current pepper at once, and the one loaded before it goes
//!   into the single `pepper-previous` slot (dropping whatever older pepper was there), so
//!   verifiers keep checking previous keys by their fast hash;
//! - every ApiKey and pool is reconciled again when the current pepper changes, which
//!   re-keys the records whose key the operator can read (see [`Live::changes`]);
//! - the slot is emptied once no hash record's pepper id names it, and a deleted Secret is
//!   recreated from memory.
//!
//! What to write is decided by [`decide`] (pure); the task feeds it from the shared watch
//! of keyward's Secrets, which holds the pepper Secret and every hash record. Writes are a
//! merge patch under the resourceVersion the decision saw (a 409 means: decide again on a
//! fresher cache) or a plain create. Pepper bytes are never logged: only their public ids.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::cache::{Caches, Change, Seen};
use super::reconciler::is_conflict;
use super::{Context, FIELD_MANAGER, SetupError};
use crate::crd::labels;
use crate::keys::Pepper;

pub use crate::keys::pepper_secret::{MIN_PEPPER_BYTES, PEPPER_KEY, PEPPER_SECRET, PREVIOUS_KEY};

/// How soon a write refused because the cache was stale is decided again.
const STALE_RETRY: Duration = Duration::from_millis(200);

/// The peppers the operator works with: the one it last loaded from `pepper`, and the one
/// it keeps in `pepper-previous` while records still name it.
#[derive(Debug, Clone)]
pub struct Peppers {
    pub current: Pepper,
    pub previous: Option<Pepper>,
}

impl Peppers {
    /// The pepper with this id, if the operator holds it.
    pub fn by_id(&self, id: &str) -> Option<&Pepper> {
        std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find(|p| p.id() == id)
    }

    fn same(&self, other: &Self) -> bool {
        self.current.id() == other.current.id()
            && self.previous.as_ref().map(Pepper::id) == other.previous.as_ref().map(Pepper::id)
    }
}

/// The operator's peppers as they are now: read at the time of use, replaced by the pepper
/// task.
pub struct Live(tokio::sync::watch::Sender<Arc<Peppers>>);

impl Live {
    pub fn new(peppers: Peppers) -> Self {
        Self(tokio::sync::watch::Sender::new(Arc::new(peppers)))
    }

    /// Both peppers.
    pub fn get(&self) -> Arc<Peppers> {
        self.0.borrow().clone()
    }

    /// The pepper new fast hashes are made under.
    pub fn current(&self) -> Pepper {
        self.0.borrow().current.clone()
    }

    fn set(&self, peppers: Peppers) {
        self.0.send_if_modified(|now| {
            let changed = !now.same(&peppers);
            if changed {
                *now = Arc::new(peppers);
            }
            changed
        });
    }

    /// One item each time the current pepper changes (not the previous one): everything
    /// recorded under the old one is worth another look.
    pub fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        let seen = rx.borrow_and_update().current.id();
        futures::stream::unfold((rx, seen), |(mut rx, seen)| async move {
            loop {
                rx.changed().await.ok()?;
                let now = rx.borrow_and_update().current.id();
                if now != seen {
                    return Some(((), (rx, now)));
                }
            }
        })
    }
}

pub use crate::record::StoredPeppers as Stored;

/// A write to the pepper Secret.
#[derive(Debug, Clone)]
pub enum Write {
    Nothing,
    /// Put this pepper into `pepper-previous` (replacing what is there).
    SetPrevious(Pepper),
    /// Remove `pepper-previous`: no record names it.
    DeletePrevious,
    /// The Secret is gone: create it again from memory.
    Recreate {
        pepper: Pepper,
        previous: Option<Pepper>,
    },
}

/// What to do, and what the operator holds afterwards.
#[derive(Debug, Clone)]
pub struct Decision {
    pub write: Write,
    pub load: Peppers,
    /// The Secret's `pepper` is missing or too short: the operator keeps what it had.
    pub unusable: bool,
}

/// Decides from what the operator last loaded, what the pepper Secret holds now (`None`:
/// it does not exist), and which pepper ids hash records name.
///
/// - Secret gone: recreate it with the current pepper, and the previous one while records
///   name it.
/// - `pepper` changed: it becomes current, and the slot must hold the pepper loaded until
///   now (a second change drops the older one; nothing to write if it is there already).
/// - otherwise the slot keeps the previous pepper the operator holds (or, holding none,
///   the one found there), but only while some record names it; else it is emptied.
pub fn decide(loaded: &Peppers, stored: Option<&Stored>, named: impl Fn(&str) -> bool) -> Decision {
    let Some(stored) = stored else {
        let previous = loaded.previous.clone().filter(|p| named(&p.id()));
        let load = Peppers {
            current: loaded.current.clone(),
            previous: previous.clone(),
        };
        return Decision {
            write: Write::Recreate {
                pepper: loaded.current.clone(),
                previous,
            },
            load,
            unusable: false,
        };
    };
    let Some(current) = stored.pepper.clone() else {
        return Decision {
            write: Write::Nothing,
            load: loaded.clone(),
            unusable: true,
        };
    };
    let wanted = if current.id() != loaded.current.id() {
        Some(loaded.current.clone())
    } else {
        loaded
            .previous
            .clone()
            .or_else(|| stored.previous.clone())
            .filter(|p| named(&p.id()))
    };
    let wanted = wanted.filter(|p| p.id() != current.id());
    let write = match (&wanted, &stored.previous) {
        (Some(w), Some(s)) if w.id() == s.id() => Write::Nothing,
        (Some(w), _) => Write::SetPrevious(w.clone()),
        (None, Some(_)) => Write::DeletePrevious,
        (None, None) => Write::Nothing,
    };
    Decision {
        write,
        load: Peppers {
            current,
            previous: wanted,
        },
        unusable: false,
    }
}

/// Reads the peppers, creating the Secret (create-only, never overwritten) on first start.
/// Makes no cluster-scoped request: a missing hash namespace shows as the create's 404.
pub async fn ensure_pepper(client: &Client, namespace: &str) -> Result<Peppers, SetupError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let pepper_err = |source| SetupError::Pepper {
        namespace: namespace.into(),
        source: Box::new(source),
    };
    if let Some(existing) = secrets.get_opt(PEPPER_SECRET).await.map_err(pepper_err)? {
        return loaded(&existing, namespace);
    }
    let fresh = Pepper::generate().map_err(|e| SetupError::Random(e.to_string()))?;
    let secret = pepper_secret(namespace, &fresh, None);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match secrets.create(&params, &secret).await {
        Ok(_) => Ok(Peppers {
            current: fresh,
            previous: None,
        }),
        // Another replica created it first: use theirs.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = secrets.get(PEPPER_SECRET).await.map_err(pepper_err)?;
            loaded(&existing, namespace)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {
            Err(SetupError::NoHashNamespace(namespace.to_string()))
        }
        Err(e) => Err(pepper_err(e)),
    }
}

fn loaded(secret: &Secret, namespace: &str) -> Result<Peppers, SetupError> {
    let stored = Stored::of(secret);
    let current = stored.pepper.ok_or_else(|| SetupError::BadPepper {
        namespace: namespace.into(),
    })?;
    let previous = stored.previous.filter(|p| p.id() != current.id());
    Ok(Peppers { current, previous })
}

/// The pepper Secret as keyward creates it.
fn pepper_secret(namespace: &str, pepper: &Pepper, previous: Option<&Pepper>) -> Secret {
    let mut data = std::collections::BTreeMap::from([(
        PEPPER_KEY.to_string(),
        ByteString(pepper.bytes().to_vec()),
    )]);
    if let Some(p) = previous {
        data.insert(PREVIOUS_KEY.to_string(), ByteString(p.bytes().to_vec()));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(PEPPER_SECRET.into()),
            namespace: Some(namespace.into()),
            labels: Some(
                [
                    (
                        labels::MANAGED_BY.to_string(),
                        labels::MANAGED_BY_VALUE.to_string(),
                    ),
                    (labels::ROLE.to_string(), "pepper".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// Which pepper ids the hash records name, kept up to date from the watch's changes
/// (parsing only the record that changed).
#[derive(Default)]
struct Named {
    by_record: HashMap<String, Vec<String>>,
    counts: HashMap<String, usize>,
}

impl Named {
    /// From everything the store holds now.
    fn of(store: &Store<Secret>, hash_namespace: &str) -> Self {
        let mut named = Self::default();
        for s in store.state().iter().filter(|s| concerns(s, hash_namespace)) {
            named.learn(s);
        }
        named
    }

    fn contains(&self, id: &str) -> bool {
        self.counts.contains_key(id)
    }

    fn forget(&mut self, name: &str) {
        for id in self.by_record.remove(name).unwrap_or_default() {
            if let Some(n) = self.counts.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&id);
                }
            }
        }
    }

    fn learn(&mut self, secret: &Secret) {
        let name = secret.name_any();
        self.forget(&name);
        let ids = crate::record::pepper_ids(secret);
        for id in &ids {
            *self.counts.entry(id.clone()).or_default() += 1;
        }
        self.by_record.insert(name, ids);
    }
}

/// Whether a Secret of the watch is the pepper Secret or a hash record.
fn concerns(secret: &Secret, hash_namespace: &str) -> bool {
    secret.namespace().as_deref() == Some(hash_namespace)
        && (secret.name_any() == PEPPER_SECRET
            || secret.labels().get(labels::ROLE).map(String::as_str) == Some(labels::ROLE_HASH))
}

/// Why a write to the pepper Secret failed.
enum Failed {
    /// The Secret changed since the cache showed it.
    Stale,
    Api(kube::Error),
}

/// Keeps the operator's peppers and the pepper Secret in line until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    caches: Arc<Caches>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    if !caches.ready_unless(&mut shutdown).await {
        return;
    }
    let hash_ns = ctx.config.hash_namespace.clone();
    let store = caches.managed.store().clone();
    let mut changes = std::pin::pin!(caches.managed.subscribe().ready_chunks(1024));
    // Every record before the first decision: the subscription's first chunks show only
    // part of the store, and a record missed there could lose the slot its pepper needs.
    let mut named = Named::of(&store, &hash_ns);
    let mut retry: Option<tokio::time::Instant> = None;
    let mut failures = 0u32;
    let mut warned_unusable = false;
    loop {
        let mut relevant = false;
        tokio::select! {
            _ = &mut shutdown => return,
            batch = changes.next() => {
                let Some(batch) = batch else { return };
                for seen in batch {
                    match seen {
                        Seen::Change(Change::Applied(s)) if concerns(&s, &hash_ns) => {
                            named.learn(&s);
                            relevant = true;
                        }
                        Seen::Change(Change::Deleted(s)) if concerns(&s, &hash_ns) => {
                            named.forget(&s.name_any());
                            relevant = true;
                        }
                        Seen::Change(_) => {}
                        Seen::Missed => {
                            named = Named::of(&store, &hash_ns);
                            relevant = true;
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(retry.unwrap_or_else(tokio::time::Instant::now)), if retry.is_some() => {
                relevant = true;
            }
        }
        // While backing off from a failure, only the timer decides again.
        if !relevant || retry.is_some_and(|t| t > tokio::time::Instant::now()) {
            continue;
        }
        retry = None;
        let secret = caches.managed_secret(&hash_ns, PEPPER_SECRET);
        let stored = secret.as_deref().map(Stored::of);
        let decision = decide(&ctx.peppers.get(), stored.as_ref(), |id| named.contains(id));
        if decision.unusable {
            if !warned_unusable {
                tracing::warn!(secret = %format!("{hash_ns}/{PEPPER_SECRET}"), "the pepper Secret has no {PEPPER_KEY:?} of at least {MIN_PEPPER_BYTES} bytes; keeping the pepper loaded before");
                warned_unusable = true;
            }
        } else {
            warned_unusable = false;
        }
        let before = ctx.peppers.get();
        if before.current.id() != decision.load.current.id() {
            tracing::info!(pepper = %decision.load.current.id(), previous = %before.current.id(), "the pepper changed; re-keying what keyward can read");
        }
        ctx.peppers.set(decision.load.clone());
        match write(&ctx, &hash_ns, secret.as_deref(), &decision.write).await {
            Ok(()) => failures = 0,
            Err(Failed::Stale) => retry = Some(tokio::time::Instant::now() + STALE_RETRY),
            Err(Failed::Api(e)) => {
                failures = failures.saturating_add(1);
                let wait = Duration::from_secs(1u64 << (failures - 1).min(6));
                tracing::warn!(error = %e, retry_in = ?wait, "writing the pepper Secret failed");
                retry = Some(tokio::time::Instant::now() + wait);
            }
        }
    }
}

/// Carries out one decision's write.
async fn write(
    ctx: &Context,
    hash_ns: &str,
    seen: Option<&Secret>,
    write: &Write,
) -> Result<(), Failed> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), hash_ns);
    let failed = |e: kube::Error| {
        if is_conflict(&e) {
            Failed::Stale
        } else {
            Failed::Api(e)
        }
    };
    let slot = match write {
        Write::Nothing => return Ok(()),
        Write::Recreate { pepper, previous } => {
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            let desired = pepper_secret(hash_ns, pepper, previous.as_ref());
            let created = api.create(&params, &desired).await.map_err(failed)?;
            ctx.activity.wrote(&created);
            tracing::info!(pepper = %pepper.id(), previous = ?previous.as_ref().map(Pepper::id), "recreated the deleted pepper Secret");
            return Ok(());
        }
        Write::SetPrevious(p) => json!(ByteString(p.bytes().to_vec())),
        Write::DeletePrevious => serde_json::Value::Null,
    };
    let Some(rv) = seen.and_then(|s| s.resource_version()) else {
        return Err(Failed::Stale);
    };
    let patch = json!({
        "metadata": {"resourceVersion": rv},
        "data": {PREVIOUS_KEY: slot},
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let written = api
        .patch(PEPPER_SECRET, &params, &Patch::Merge(&patch))
        .await
        .map_err(failed)?;
    ctx.activity.wrote(&written);
    match write {
        Write::SetPrevious(p) => {
            tracing::info!(previous = %p.id(), "kept the pepper loaded before in {PREVIOUS_KEY}")
        }
        _ => tracing::info!("no record names the previous pepper any more: removed {PREVIOUS_KEY}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> Pepper {
        Pepper::new(vec![n; 32])
    }

    fn loaded(current: u8, previous: Option<u8>) -> Peppers {
        Peppers {
            current: p(current),
            previous: previous.map(p),
        }
    }

    fn stored(pepper: Option<u8>, previous: Option<u8>) -> Stored {
        Stored {
            pepper: pepper.map(p),
            previous: previous.map(p),
        }
    }

    /// A decision in pepper bytes: the write (kind, the pepper written, the previous one
    /// written with it) and the peppers held afterwards (current, previous).
    type Outcome = (&'static str, Option<u8>, Option<u8>, (u8, Option<u8>));

    fn run(loaded: Peppers, stored: Option<Stored>, named: &[u8]) -> Outcome {
        let ids: Vec<String> = named.iter().map(|n| p(*n).id()).collect();
        let d = decide(&loaded, stored.as_ref(), |id| ids.iter().any(|i| i == id));
        let byte = |pepper: &Pepper| pepper.bytes()[0];
        let (kind, a, b) = match &d.write {
            Write::Nothing => ("nothing", None, None),
            Write::SetPrevious(x) => ("set previous", Some(byte(x)), None),
            Write::DeletePrevious => ("delete previous", None, None),
            Write::Recreate { pepper, previous } => {
                ("recreate", Some(byte(pepper)), previous.as_ref().map(byte))
            }
        };
        (
            kind,
            a,
            b,
            (byte(&d.load.current), d.load.previous.as_ref().map(byte)),
        )
    }

    #[test]
    fn nothing_changed_nothing_written() {
        assert_eq!(
            run(loaded(1, None), Some(stored(Some(1), None)), &[1]),
            ("nothing", None, None, (1, None))
        );
    }

    #[test]
    fn a_new_pepper_puts_the_one_loaded_before_into_the_empty_slot() {
        assert_eq!(
            run(loaded(1, None), Some(stored(Some(2), None)), &[1]),
            ("set previous", Some(1), None, (2, Some(1)))
        );
    }

    #[test]
    fn the_slot_already_holding_the_pepper_loaded_before_needs_no_write() {
        assert_eq!(
            run(loaded(1, None), Some(stored(Some(2), Some(1))), &[1]),
            ("nothing", None, None, (2, Some(1)))
        );
    }

    #[test]
    fn a_second_change_drops_the_older_pepper() {
        // Loaded 2 (with 1 as previous); 3 arrives while the slot holds 1.
        assert_eq!(
            run(loaded(2, Some(1)), Some(stored(Some(3), Some(1))), &[1, 2]),
            ("set previous", Some(2), None, (3, Some(2)))
        );
    }

    #[test]
    fn after_a_change_the_slot_holds_the_pepper_loaded_before_whatever_was_written_there() {
        assert_eq!(
            run(loaded(1, None), Some(stored(Some(2), Some(7))), &[1, 7]),
            ("set previous", Some(1), None, (2, Some(1)))
        );
    }

    #[test]
    fn the_slot_goes_once_no_record_names_it() {
        assert_eq!(
            run(loaded(2, Some(1)), Some(stored(Some(2), Some(1))), &[2]),
            ("delete previous", None, None, (2, None))
        );
        // Still named: it stays.
        assert_eq!(
            run(loaded(2, Some(1)), Some(stored(Some(2), Some(1))), &[1, 2]),
            ("nothing", None, None, (2, Some(1)))
        );
    }

    #[test]
    fn a_slot_emptied_while_still_named_is_filled_from_memory() {
        assert_eq!(
            run(loaded(2, Some(1)), Some(stored(Some(2), None)), &[1, 2]),
            ("set previous", Some(1), None, (2, Some(1)))
        );
        // Not named any more: memory lets it go too.
        assert_eq!(
            run(loaded(2, Some(1)), Some(stored(Some(2), None)), &[2]),
            ("nothing", None, None, (2, None))
        );
    }

    #[test]
    fn a_slot_found_while_holding_none_is_kept_only_while_named() {
        assert_eq!(
            run(loaded(2, None), Some(stored(Some(2), Some(1))), &[1]),
            ("nothing", None, None, (2, Some(1)))
        );
        assert_eq!(
            run(loaded(2, None), Some(stored(Some(2), Some(1))), &[2]),
            ("delete previous", None, None, (2, None))
        );
    }

    #[test]
    fn a_deleted_secret_is_recreated_from_memory() {
        assert_eq!(
            run(loaded(2, Some(1)), None, &[1, 2]),
            ("recreate", Some(2), Some(1), (2, Some(1)))
        );
        // A previous pepper no record names is not brought back.
        assert_eq!(
            run(loaded(2, Some(1)), None, &[2]),
            ("recreate", Some(2), None, (2, None))
        );
    }

    #[test]
    fn an_unusable_pepper_keeps_what_was_loaded() {
        let d = decide(&loaded(1, Some(9)), Some(&stored(None, Some(9))), |_| true);
        assert!(d.unusable);
        assert!(matches!(d.write, Write::Nothing));
        assert_eq!(d.load.current.id(), p(1).id());
    }

    #[test]
    fn back_to_the_previous_pepper_swaps_the_two() {
        assert_eq!(
            run(loaded(2, Some(1)), Some(stored(Some(1), Some(1))), &[1, 2]),
            ("set previous", Some(2), None, (1, Some(2)))
        );
    }

    #[test]
    fn the_live_cell_signals_changes_of_the_current_pepper_only() {
        use futures::FutureExt;
        let live = Live::new(loaded(1, None));
        let mut changes = Box::pin(live.changes());
        live.set(loaded(1, Some(9)));
        assert_eq!(
            changes.next().now_or_never(),
            None,
            "a new previous pepper only"
        );
        live.set(loaded(2, Some(1)));
        assert_eq!(changes.next().now_or_never(), Some(Some(())));
        assert_eq!(live.current().id(), p(2).id());
        assert_eq!(
            live.get().by_id(&p(1).id()).map(Pepper::id),
            Some(p(1).id())
        );
        assert!(live.get().by_id(&p(9).id()).is_none());
    }
}
