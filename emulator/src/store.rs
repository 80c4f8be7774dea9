//! The object store and every write's pipeline: admission (schema, built-in rules),
//! metadata bookkeeping, resourceVersion preconditions, status split, generation, field
//! ownership, finalizers, garbage collection, and the event history watches are served from.
//!
//! One `resourceVersion` counter spans all objects, as etcd's revision does.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::events;
use crate::kinds::NameRule;
use crate::limits;
use crate::names;
use crate::resources::{self, ResourceType};
use crate::schema::{self, FieldValidation};
use crate::ssa::{self, Part};

/// Kinds of watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and sent to watchers.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    /// The object before a MODIFIED change, so selector watches can tell objects that left
    /// the selection (sent as DELETED) from ones that entered it (ADDED).
    pub previous: Option<Value>,
    pub kind: EventType,
    pub storage: String,
    pub namespace: String,
    pub object: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    storage: String,
    namespace: String,
    name: String,
}

/// Options common to writes.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub field_manager: Option<String>,
    pub field_validation: FieldValidation,
    pub dry_run: bool,
    pub force: bool,
    /// Used to name the manager of non-apply writes when no fieldManager is given.
    pub user_agent: String,
}

impl WriteOptions {
    fn manager(&self) -> String {
        self.field_manager.clone().unwrap_or_else(|| {
            let agent = self.user_agent.split('/').next().unwrap_or_default().trim();
            if agent.is_empty() {
                "unknown".to_string()
            } else {
                agent.to_string()
            }
        })
    }
}

/// Options of a DELETE.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// The deprecated `orphanDependents`, as given.
    pub orphan_dependents: Option<bool>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub propagation: Option<String>,
    pub dry_run: bool,
}

/// What a DELETE did.
#[derive(Debug, Clone)]
pub enum Deleted {
    /// Removed now; the last state of the object.
    Gone(Value),
    /// Marked for deletion; waits for finalizers.
    Pending(Value),
}

/// The result of a successful write: the stored object and any warnings.
#[derive(Debug, Clone)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
    pub created: bool,
}

/// Changes a resumed watch missed, and the receiver for the ones that follow.
pub type Resumed = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

/// A page of a list.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Value>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

/// How a non-apply patch is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// Recent changes, oldest first, with when they were made.
    history: VecDeque<(Instant, Arc<Change>)>,
    /// The newest resourceVersion no longer in the history: watches from before it are
    /// answered 410 Gone.
    compacted: u64,
    /// How long changes stay in the history.
    window: Duration,
    /// Shared with every request (copied on write when a CRD changes what is served).
    resources: Arc<Vec<ResourceType>>,
}

/// The emulator's state, shared by every request.
pub struct Store {
    state: Mutex<State>,
    changes: broadcast::Sender<Arc<Change>>,
    history_limit: usize,
}

/// The current time as metav1.Time (seconds).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The current time as metav1.MicroTime.
pub fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

fn meta(object: &Value) -> &Value {
    &object["metadata"]
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn str_at<'a>(object: &'a Value, field: &str) -> &'a str {
    meta(object)[field].as_str().unwrap_or_default()
}

fn random_suffix() -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4();
    bytes
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| CHARS[*b as usize % CHARS.len()] as char)
        .collect()
}

/// How long a change stays in the watch history unless told otherwise: what etcd keeps
/// between the apiserver's compactions (its `--etcd-compaction-interval` defaults to 5m).
pub const DEFAULT_WATCH_WINDOW: Duration = Duration::from_secs(5 * 60);

impl Store {
    /// A store keeping at most `history_limit` changes for watches, for
    /// [`DEFAULT_WATCH_WINDOW`].
    pub fn new(history_limit: usize) -> Self {
        Self::with_watch_window(history_limit, DEFAULT_WATCH_WINDOW)
    }

    /// A store keeping at most `history_limit` changes, none older than `window`.
    pub fn with_watch_window(history_limit: usize, window: Duration) -> Self {
        let (changes, _) = broadcast::channel(65_536);
        let store = Self {
            state: Mutex::new(State {
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                compacted: 0,
                window,
                resources: Arc::new(resources::builtins()),
            }),
            changes,
            history_limit,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let rt = store
                .resource("", "v1", "namespaces")
                .expect("namespaces are built in");
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            store
                .create(&rt, "", body, &WriteOptions::default())
                .expect("built-in namespaces are valid");
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (each write replaces whole
        // objects), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every served resource.
    pub fn resources(&self) -> Arc<Vec<ResourceType>> {
        self.lock().resources.clone()
    }

    /// The resource served at group/version/plural.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.lock()
            .resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    /// The newest resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// Changes how long changes stay in the watch history (from now on).
    pub fn set_watch_window(&self, window: Duration) {
        let mut state = self.lock();
        state.window = window;
        self.trim(&mut state);
    }

    /// The newest resourceVersion a watch can no longer resume from (0 while nothing has
    /// been dropped from the history).
    pub fn compacted_rv(&self) -> u64 {
        let mut state = self.lock();
        self.trim(&mut state);
        state.compacted
    }

    /// Drops changes beyond the count limit or older than the window.
    fn trim(&self, state: &mut State) {
        let now = Instant::now();
        while let Some((at, change)) = state.history.front() {
            let too_many = state.history.len() > self.history_limit;
            let too_old = now.duration_since(*at) > state.window;
            if !(too_many || too_old) {
                break;
            }
            state.compacted = state.compacted.max(change.rv);
            state.history.pop_front();
        }
    }

    /// Whether a watch or list continuing from `rv` would miss dropped changes.
    fn expired(state: &State, rv: u64) -> bool {
        rv < state.compacted
    }

    fn key(rt: &ResourceType, ns: &str, name: &str) -> Key {
        Key {
            storage: rt.storage.clone(),
            namespace: if rt.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }

    /// Converts a stored object to what `rt` serves (events live in core/v1 form).
    pub fn present(rt: &ResourceType, stored: &Value) -> Value {
        Self::present_ref(rt, stored).into_owned()
    }

    /// [`Store::present`] without a copy when the stored object already reads that way.
    pub fn present_ref<'a>(rt: &ResourceType, stored: &'a Value) -> std::borrow::Cow<'a, Value> {
        if rt.storage == "events" && rt.group == "events.k8s.io" {
            return std::borrow::Cow::Owned(events::from_core(stored));
        }
        if stored["apiVersion"] == rt.api_version().as_str() && stored["kind"] == rt.kind.as_str() {
            return std::borrow::Cow::Borrowed(stored);
        }
        let mut out = stored.clone();
        out["apiVersion"] = json!(rt.api_version());
        out["kind"] = json!(rt.kind);
        std::borrow::Cow::Owned(out)
    }

    fn to_storage(rt: &ResourceType, object: Value) -> Value {
        if rt.storage == "events" && rt.group == "events.k8s.io" {
            events::to_core(&object)
        } else {
            object
        }
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        let state = self.lock();
        state
            .objects
            .get(&Self::key(rt, ns, name))
            .map(|o| Self::present(rt, o))
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Lists objects in `(namespace, name)` order, filtered, one page at a time.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        filter: &dyn Fn(&Value) -> bool,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<Page, ApiError> {
        let mut state = self.lock();
        self.trim(&mut state);
        let start_after = match continue_token {
            Some(token) => Some(decode_continue(token)?),
            None => None,
        };
        // Every page reports the first page's version, so a watch from it misses nothing
        // that changed while the later pages were read (it may replay some of it).
        let snapshot_rv = start_after.as_ref().map_or(state.rv, |s| s.2);
        if Self::expired(&state, snapshot_rv) {
            return Err(ApiError::new(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ));
        }
        let mut matching = state
            .objects
            .iter()
            .filter(|(k, _)| k.storage == rt.storage)
            .filter(|(k, _)| ns.is_none_or(|n| k.namespace == n))
            .filter(|(k, _)| {
                start_after
                    .as_ref()
                    .is_none_or(|s| (&k.namespace, &k.name) > (&s.0, &s.1))
            })
            .map(|(k, o)| (k, Self::present_ref(rt, o)))
            .filter(|(_, o)| filter(o));
        let mut items = Vec::new();
        let mut last = None;
        for (k, o) in matching.by_ref().take(limit.unwrap_or(usize::MAX)) {
            last = Some((k.namespace.clone(), k.name.clone()));
            items.push(o.into_owned());
        }
        let rest = matching.count() as u64;
        let (continue_token, remaining) = match (limit, last) {
            (Some(l), Some(last)) if items.len() >= l && rest > 0 => {
                (Some(encode_continue(&last, snapshot_rv)), Some(rest))
            }
            _ => (None, None),
        };
        Ok(Page {
            items,
            resource_version: snapshot_rv,
            continue_token,
            remaining,
        })
    }

    /// Subscribes to changes after `from_rv`: the missed ones from history, then a receiver
    /// for later ones. `Err` when the history no longer reaches back that far (410 Gone).
    pub fn watch_from(&self, storage: &str, from_rv: u64) -> Result<Resumed, ApiError> {
        let mut state = self.lock();
        self.trim(&mut state);
        let receiver = self.changes.subscribe();
        // The watch cache's wording: the version asked for, then the newest one dropped
        // (staging/src/k8s.io/apiserver/pkg/storage/cacher/watch_cache.go).
        if Self::expired(&state, from_rv) {
            return Err(ApiError::gone(format!(
                "too old resource version: {from_rv} ({})",
                state.compacted
            )));
        }
        let missed = state
            .history
            .iter()
            .map(|(_, c)| c)
            .filter(|c| c.rv > from_rv && c.storage == storage)
            .cloned()
            .collect();
        Ok((missed, receiver))
    }

    /// A consistent snapshot of current objects plus a receiver for what follows.
    pub fn snapshot_and_watch(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
    ) -> (Vec<Value>, u64, broadcast::Receiver<Arc<Change>>) {
        let state = self.lock();
        let receiver = self.changes.subscribe();
        let items = state
            .objects
            .iter()
            .filter(|(k, _)| k.storage == rt.storage && ns.is_none_or(|n| k.namespace == n))
            .map(|(_, o)| Self::present(rt, o))
            .collect();
        (items, state.rv, receiver)
    }

    fn record(
        &self,
        state: &mut State,
        kind: EventType,
        key: &Key,
        object: Value,
        previous: Option<Value>,
    ) {
        let change = Arc::new(Change {
            rv: state.rv,
            previous: previous.filter(|_| kind == EventType::Modified),
            kind,
            storage: key.storage.clone(),
            namespace: key.namespace.clone(),
            object,
        });
        state.history.push_back((Instant::now(), change.clone()));
        self.trim(state);
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(change);
    }

    /// One change: a new resourceVersion stamped on the object, the store updated (removed
    /// for DELETED), the change recorded for watches. Returns the object as stored.
    fn commit(&self, state: &mut State, kind: EventType, key: &Key, mut object: Value) -> Value {
        state.rv += 1;
        meta_mut(&mut object).insert("resourceVersion".into(), json!(state.rv.to_string()));
        // What the object was before this change: what selector watches compare against.
        let previous = match kind {
            EventType::Deleted => state.objects.remove(key),
            EventType::Added | EventType::Modified => {
                state.objects.insert(key.clone(), object.clone())
            }
        };
        self.record(state, kind, key, object.clone(), previous);
        object
    }

    /// Forgets history up to the current version, so watches from older versions get 410.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.history.clear();
        state.compacted = state.rv;
    }

    // ---- writes -------------------------------------------------------------------------

    pub fn create(
        &self,
        rt: &ResourceType,
        ns: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mut state = self.lock();
        self.create_locked(&mut state, rt, ns, body, opts, None)
    }

    fn create_locked(
        &self,
        state: &mut State,
        rt: &ResourceType,
        ns: &str,
        mut body: Value,
        opts: &WriteOptions,
        applied_by: Option<(&str, bool)>,
    ) -> Result<Written, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        let body_ns = str_at(&body, "namespace").to_string();
        if rt.namespaced {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            self.namespace_accepts_writes(state, rt, ns, &body)?;
        }
        let mut name = str_at(&body, "name").to_string();
        if name.is_empty() {
            let generate = str_at(&body, "generateName").to_string();
            if generate.is_empty() {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    vec![(
                        "metadata.name".into(),
                        "FieldValueRequired",
                        "metadata.name: Required value: name or generateName is required".into(),
                    )],
                ));
            }
            name = format!("{generate}{}", random_suffix());
        }
        {
            let m = meta_mut(&mut body);
            m.insert("name".into(), json!(name));
            if rt.namespaced {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
            for field in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "selfLink",
            ] {
                m.remove(field);
            }
        }
        body = Self::to_storage(rt, body);
        let key = Self::key(rt, ns, &name);
        if state.objects.contains_key(&key) {
            return Err(ApiError::already_exists(rt, &name));
        }
        let mut warnings = Vec::new();
        // An apply owns what it declared, not what defaulting added.
        let declared = body.clone();
        let mut object = self.admit(
            state,
            rt,
            &name,
            None,
            body,
            opts.field_validation,
            &mut warnings,
        )?;
        if rt.status_subresource && rt.custom {
            // Status is not writable through the main resource.
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
        }
        let now = now_rfc3339();
        {
            let m = meta_mut(&mut object);
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now));
            if rt.has_generation {
                m.insert("generation".into(), json!(1));
            }
        }
        match applied_by {
            Some((manager, force)) => {
                let owned = ssa::apply(None, &declared, rt, Part::Main, manager, force, &now)
                    .map_err(|c| ssa::conflict_error(&c))?;
                object["metadata"]["managedFields"] = owned["metadata"]["managedFields"].clone();
            }
            None => ssa::record_update(None, &mut object, rt, Part::Main, &opts.manager(), &now),
        }
        self.after_admission(state, rt, &mut object, &now);
        limits::check_object(&object)?;
        if opts.dry_run {
            return Ok(Written {
                object: Self::present(rt, &object),
                warnings,
                created: true,
            });
        }
        let object = self.commit(state, EventType::Added, &key, object);
        self.on_stored(state, rt, &object);
        Ok(Written {
            object: Self::present(rt, &object),
            warnings,
            created: true,
        })
    }

    /// The NamespaceLifecycle admission plugin: no content in a namespace that does not
    /// exist or is being terminated
    /// (plugin/pkg/admission/namespace/lifecycle/admission.go, whose Forbidden error
    /// admission.NewForbidden names the object, or its generateName, and the resource).
    fn namespace_accepts_writes(
        &self,
        state: &State,
        rt: &ResourceType,
        ns: &str,
        body: &Value,
    ) -> Result<(), ApiError> {
        let ns_key = Key {
            storage: "/namespaces".into(),
            namespace: String::new(),
            name: ns.to_string(),
        };
        match state.objects.get(&ns_key) {
            None => Err(ApiError {
                details: Some(json!({"name": ns, "kind": "namespaces"})),
                ..ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
            }),
            Some(n) if !meta(n)["deletionTimestamp"].is_null() => {
                let name = match (str_at(body, "name"), str_at(body, "generateName")) {
                    ("", "") => "Unknown",
                    ("", generate) => generate,
                    (name, _) => name,
                };
                let mut details = json!({
                    "name": name,
                    "kind": rt.plural,
                    "causes": [{
                        "reason": "NamespaceTerminating",
                        "message": format!("namespace {ns} is being terminated"),
                        "field": "metadata.namespace",
                    }],
                });
                if !rt.group.is_empty() {
                    details["group"] = json!(rt.group);
                }
                Err(ApiError {
                    details: Some(details),
                    ..ApiError::new(
                        403,
                        "Forbidden",
                        format!(
                            "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                            rt.qualified()
                        ),
                    )
                })
            }
            Some(_) => Ok(()),
        }
    }

    /// Schema and built-in validation, defaults and normalisation of a new object state.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        state: &State,
        rt: &ResourceType,
        name: &str,
        old: Option<&Value>,
        mut object: Value,
        validation: FieldValidation,
        warnings: &mut Vec<String>,
    ) -> Result<Value, ApiError> {
        object["apiVersion"] = json!(if rt.storage == "events" {
            "v1".to_string()
        } else {
            rt.api_version()
        });
        object["kind"] = json!(rt.kind);
        let name_ok = match rt.builtin.map_or(NameRule::Subdomain, |k| k.name_rule) {
            NameRule::Subdomain => names::is_dns_subdomain(name),
            NameRule::Label => names::is_dns_label(name),
            NameRule::Any => true,
        };
        if !name_ok {
            return Err(ApiError::invalid(
                rt,
                name,
                vec![(
                    "metadata.name".into(),
                    "FieldValueInvalid",
                    format!(
                        "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                    ),
                )],
            ));
        }
        self.check_metadata(rt, name, &object)?;
        if let Some(crd_schema) = &rt.schema {
            let checked =
                schema::check_compiled(&crd_schema.value, &crd_schema.compiled, &object, old);
            if !checked.unknown_fields.is_empty() {
                match validation {
                    FieldValidation::Strict => {
                        let fields: Vec<String> = checked
                            .unknown_fields
                            .iter()
                            .map(|f| format!("unknown field \"{f}\""))
                            .collect();
                        return Err(ApiError::bad_request(format!(
                            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                            rt.kind,
                            rt.version,
                            rt.kind,
                            fields.join(", ")
                        )));
                    }
                    FieldValidation::Warn => {
                        warnings.extend(
                            checked
                                .unknown_fields
                                .iter()
                                .map(|f| format!("unknown field \"{f}\"")),
                        );
                    }
                    FieldValidation::Ignore => {}
                }
            }
            if !checked.errors.is_empty() {
                let causes = checked
                    .errors
                    .into_iter()
                    .map(|e| (e.field, e.reason, e.message))
                    .collect();
                return Err(ApiError::invalid(rt, name, causes));
            }
            let mut stored = checked.object;
            // Pruning keeps metadata; keep the status the caller may not write separately.
            if let Some(status) = object.get("status").filter(|_| !rt.status_subresource) {
                stored["status"] = status.clone();
            }
            object = stored;
        }
        if let Some(kind) = rt.builtin {
            (kind.defaults)(&mut object, old);
            let causes = (kind.validate)(&object, old);
            if !causes.is_empty() {
                return Err(ApiError::invalid(rt, name, causes));
            }
        }
        if rt.storage == "apiextensions.k8s.io/customresourcedefinitions" {
            // What a CRD may not claim depends on what is served, which only the store knows.
            let spec = &object["spec"];
            let clash = state.resources.iter().any(|r| {
                r.group == spec["group"].as_str().unwrap_or_default()
                    && r.plural == spec["names"]["plural"].as_str().unwrap_or_default()
                    && !r.custom
            });
            if clash {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    vec![(
                        "spec.names.plural".into(),
                        "FieldValueInvalid",
                        "spec.names.plural: names clash with a built-in resource".into(),
                    )],
                ));
            }
        }
        Ok(object)
    }

    fn check_metadata(
        &self,
        rt: &ResourceType,
        name: &str,
        object: &Value,
    ) -> Result<(), ApiError> {
        let mut causes: Vec<crate::kinds::Cause> =
            limits::check_annotations(object).into_iter().collect();
        for (k, v) in meta(object)["labels"].as_object().into_iter().flatten() {
            let value = v.as_str().unwrap_or_default();
            if !names::is_label_key(k) {
                causes.push(("metadata.labels".to_string(), "FieldValueInvalid", format!("metadata.labels: Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.'")));
            }
            if !v.is_string() || !names::is_label_value(value) {
                causes.push(("metadata.labels".to_string(), "FieldValueInvalid", format!("metadata.labels: Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, at most 63 characters")));
            }
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(rt, name, causes))
        }
    }

    /// State the apiserver fills in for a CRD it accepts.
    fn after_admission(&self, _state: &State, rt: &ResourceType, object: &mut Value, now: &str) {
        if rt.storage == "apiextensions.k8s.io/customresourcedefinitions" {
            object["status"] = resources::crd_status(object, now);
        }
    }

    /// Side effects of storing an object: serving a CRD's resources.
    fn on_stored(&self, state: &mut State, rt: &ResourceType, object: &Value) {
        if rt.storage == "apiextensions.k8s.io/customresourcedefinitions" {
            let served = resources::from_crd(object);
            let group = object["spec"]["group"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let plural = object["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let resources = Arc::make_mut(&mut state.resources);
            resources.retain(|r| !(r.custom && r.group == group && r.plural == plural));
            resources.extend(served);
        }
    }

    /// PUT. `part` selects the main resource or `/status`.
    pub fn update(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        body: Value,
        part: Part,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mut state = self.lock();
        let key = Self::key(rt, ns, name);
        let Some(old) = state.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        let body_name = str_at(&body, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_rv = str_at(&body, "resourceVersion").to_string();
        if body_rv.is_empty() && rt.custom {
            return Err(ApiError::invalid(
                rt,
                name,
                vec![(
                    "metadata.resourceVersion".into(),
                    "FieldValueInvalid",
                    "metadata.resourceVersion: Invalid value: 0: must be specified for an update"
                        .into(),
                )],
            ));
        }
        if !body_rv.is_empty() && body_rv != str_at(&old, "resourceVersion") {
            return Err(ApiError::modified(rt, name));
        }
        let body = Self::to_storage(rt, body);
        self.write_locked(&mut state, rt, key, old, body, part, opts, None)
    }

    /// PATCH of any type. Server-side apply creates the object when it does not exist.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        patch_type: PatchType,
        patch: Value,
        part: Part,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mut state = self.lock();
        let key = Self::key(rt, ns, name);
        let existing = state.objects.get(&key).cloned();
        if patch_type == PatchType::Apply {
            let manager = opts
                .field_manager
                .clone()
                .filter(|m| !m.is_empty())
                .ok_or_else(|| ApiError::bad_request("PATCH, application/apply-patch+yaml: fieldManager is required for apply requests"))?;
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "error decoding YAML: apply patch must be an object",
                ));
            }
            for (field, want) in [("apiVersion", rt.api_version()), ("kind", rt.kind.clone())] {
                let got = patch[field].as_str().unwrap_or_default();
                if got.is_empty() {
                    return Err(ApiError::bad_request(format!(
                        "{field} must be set in an apply patch"
                    )));
                }
                if got != want && !(rt.storage == "events" && field == "apiVersion") {
                    return Err(ApiError::bad_request(format!(
                        "{field} {got:?} does not match the resource ({want})"
                    )));
                }
            }
            let body_name = str_at(&patch, "name");
            if !body_name.is_empty() && body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            // Ownership is the server's to record on apply (structuredmerge.go in
            // staging/src/k8s.io/apimachinery/pkg/util/managedfields/internal).
            if !meta(&patch)["managedFields"].is_null() {
                return Err(ApiError::bad_request("metadata.managedFields must be nil"));
            }
            let patch = Self::to_storage(rt, patch);
            return match existing {
                None if part == Part::Main => {
                    let mut body = patch.clone();
                    meta_mut(&mut body).insert("name".into(), json!(name));
                    self.create_locked(&mut state, rt, ns, body, opts, Some((&manager, opts.force)))
                }
                None => Err(ApiError::not_found(rt, name)),
                Some(old) => {
                    let rv_pre = str_at(&patch, "resourceVersion").to_string();
                    if !rv_pre.is_empty() && rv_pre != str_at(&old, "resourceVersion") {
                        return Err(ApiError::modified(rt, name));
                    }
                    let now = now_rfc3339();
                    let merged =
                        ssa::apply(Some(&old), &patch, rt, part, &manager, opts.force, &now)
                            .map_err(|c| ssa::conflict_error(&c))?;
                    self.write_locked(&mut state, rt, key, old, merged, part, opts, Some(()))
                }
            };
        }
        let Some(old) = existing else {
            return Err(ApiError::not_found(rt, name));
        };
        let mut target = Self::present(rt, &old);
        match patch_type {
            PatchType::Merge => crate::patch::merge_patch(&mut target, &patch),
            PatchType::Json => crate::patch::json_patch(&mut target, &patch)
                .map_err(|e| ApiError::new(422, "Invalid", e))?,
            PatchType::Strategic => {
                if rt.custom {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                    ));
                }
                crate::patch::strategic_merge_patch(&mut target, &patch, rt)
                    .map_err(ApiError::bad_request)?;
            }
            PatchType::Apply => unreachable!("handled above"),
        }
        let rv_after = str_at(&target, "resourceVersion").to_string();
        if !rv_after.is_empty() && rv_after != str_at(&old, "resourceVersion") {
            return Err(ApiError::modified(rt, name));
        }
        let target = Self::to_storage(rt, target);
        self.write_locked(&mut state, rt, key, old, target, part, opts, None)
    }

    /// The shared end of update and patch: status split, immutable metadata, admission,
    /// generation, ownership, no-op detection, finalization.
    #[allow(clippy::too_many_arguments)]
    fn write_locked(
        &self,
        state: &mut State,
        rt: &ResourceType,
        key: Key,
        old: Value,
        incoming: Value,
        part: Part,
        opts: &WriteOptions,
        applied: Option<()>,
    ) -> Result<Written, ApiError> {
        let name = key.name.clone();
        let mut object = match part {
            Part::Status => {
                // Only status changes through /status.
                let mut o = old.clone();
                o["status"] = incoming.get("status").cloned().unwrap_or(Value::Null);
                if o["status"].is_null() {
                    o.as_object_mut().map(|m| m.remove("status"));
                }
                if applied.is_some() {
                    o["metadata"]["managedFields"] = incoming["metadata"]["managedFields"].clone();
                }
                o
            }
            Part::Main => {
                let mut o = incoming;
                if rt.status_subresource {
                    match old.get("status") {
                        Some(s) => o["status"] = s.clone(),
                        None => {
                            o.as_object_mut().map(|m| m.remove("status"));
                        }
                    }
                }
                o
            }
        };
        // Fields the server owns.
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old["metadata"].get(field) {
                Some(v) => {
                    meta_mut(&mut object).insert(field.into(), v.clone());
                }
                None => {
                    meta_mut(&mut object).remove(field);
                }
            }
        }
        meta_mut(&mut object).insert(
            "resourceVersion".into(),
            old["metadata"]["resourceVersion"].clone(),
        );
        if !meta(&old)["deletionTimestamp"].is_null() {
            let old_finalizers: Vec<&Value> = meta(&old)["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .collect();
            let mut added: Vec<&str> = meta(&object)["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| !old_finalizers.contains(f))
                .filter_map(Value::as_str)
                .collect();
            added.sort_unstable();
            added.dedup();
            if !added.is_empty() {
                // ValidateNoNewFinalizers in
                // staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go prints the
                // new names as a Go string slice.
                let listed: Vec<String> = added.iter().map(|f| format!("{f:?}")).collect();
                return Err(ApiError::invalid(
                    rt,
                    &name,
                    vec![(
                        "metadata.finalizers".into(),
                        "FieldValueForbidden",
                        format!(
                            "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                            listed.join(", ")
                        ),
                    )],
                ));
            }
        }
        let mut warnings = Vec::new();
        let mut object = self.admit(
            state,
            rt,
            &name,
            Some(&old),
            object,
            opts.field_validation,
            &mut warnings,
        )?;
        if rt.has_generation && part == Part::Main {
            let spec_changed = strip_for_generation(&old) != strip_for_generation(&object);
            let generation = meta(&old)["generation"].as_i64().unwrap_or(1);
            meta_mut(&mut object).insert(
                "generation".into(),
                json!(if spec_changed {
                    generation + 1
                } else {
                    generation
                }),
            );
        }
        let now = now_rfc3339();
        if applied.is_none() {
            ssa::record_update(Some(&old), &mut object, rt, part, &opts.manager(), &now);
        }
        if rt.storage == "apiextensions.k8s.io/customresourcedefinitions" && part == Part::Main {
            object["status"] = old["status"].clone();
        }
        limits::check_object(&object)?;
        if same_ignoring_managed_times(&old, &object) {
            return Ok(Written {
                object: Self::present(rt, &old),
                warnings,
                created: false,
            });
        }
        if opts.dry_run {
            return Ok(Written {
                object: Self::present(rt, &object),
                warnings,
                created: false,
            });
        }
        let finalized = !meta(&object)["deletionTimestamp"].is_null()
            && meta(&object)["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty);
        if finalized {
            let object = self.commit(state, EventType::Deleted, &key, object);
            self.after_removal(state, rt, &object);
            return Ok(Written {
                object: Self::present(rt, &object),
                warnings,
                created: false,
            });
        }
        let object = self.commit(state, EventType::Modified, &key, object);
        self.on_stored(state, rt, &object);
        Ok(Written {
            object: Self::present(rt, &object),
            warnings,
            created: false,
        })
    }

    /// DELETE with preconditions and propagation.
    pub fn delete(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let mut state = self.lock();
        self.delete_locked(&mut state, rt, ns, name, opts)
    }

    fn delete_locked(
        &self,
        state: &mut State,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let key = Self::key(rt, ns, name);
        let Some(old) = state.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        if let Some(uid) = &opts.precondition_uid
            && uid != str_at(&old, "uid")
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    str_at(&old, "uid")
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && rv != str_at(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    str_at(&old, "resourceVersion")
                ),
            ));
        }
        if opts.dry_run {
            return Ok(Deleted::Gone(Self::present(rt, &old)));
        }
        let propagation = opts.propagation.as_deref().unwrap_or("Background");
        if !matches!(propagation, "Background" | "Foreground" | "Orphan") {
            return Err(ApiError::bad_request(format!(
                "unsupported propagation policy {propagation:?}"
            )));
        }
        let mut object = old.clone();
        let mut finalizers: Vec<Value> = meta(&object)["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let has_dependents = self.dependents(state, str_at(&old, "uid")).next().is_some();
        if propagation == "Foreground"
            && has_dependents
            && !finalizers.contains(&json!("foregroundDeletion"))
        {
            finalizers.push(json!("foregroundDeletion"));
        }
        if propagation == "Orphan" {
            self.orphan_dependents(state, str_at(&old, "uid"));
        }
        if rt.plural == "namespaces" && rt.group.is_empty() {
            return self.delete_namespace(state, rt, key, object);
        }
        if finalizers.is_empty() {
            let object = self.commit(state, EventType::Deleted, &key, object);
            self.after_removal(state, rt, &object);
            return Ok(Deleted::Gone(Self::present(rt, &object)));
        }
        if meta(&object)["deletionTimestamp"].is_null() {
            let m = meta_mut(&mut object);
            m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            m.insert("finalizers".into(), Value::Array(finalizers));
            let object = self.commit(state, EventType::Modified, &key, object);
            if propagation == "Foreground" {
                self.delete_dependents(state, str_at(&object, "uid"));
                self.finish_foreground(state);
            }
            let current = state.objects.get(&key).cloned().unwrap_or(object);
            return Ok(Deleted::Pending(Self::present(rt, &current)));
        }
        Ok(Deleted::Pending(Self::present(rt, &object)))
    }

    fn delete_namespace(
        &self,
        state: &mut State,
        rt: &ResourceType,
        key: Key,
        mut object: Value,
    ) -> Result<Deleted, ApiError> {
        if meta(&object)["deletionTimestamp"].is_null() {
            meta_mut(&mut object).insert("deletionTimestamp".into(), json!(now_rfc3339()));
            object["status"] = json!({"phase": "Terminating"});
            object = self.commit(state, EventType::Modified, &key, object);
        }
        let ns = key.name.clone();
        let contents: Vec<(ResourceType, String)> = state
            .objects
            .keys()
            .filter(|k| k.namespace == ns)
            .filter_map(|k| {
                state
                    .resources
                    .iter()
                    .find(|r| r.storage == k.storage)
                    .map(|r| (r.clone(), k.name.clone()))
            })
            .collect();
        for (crt, name) in contents {
            // Objects with finalizers stay until their controllers release them.
            let _ = self.delete_locked(state, &crt, &ns, &name, &DeleteOptions::default());
        }
        self.finish_namespaces(state);
        match state.objects.get(&key) {
            Some(o) => Ok(Deleted::Pending(Self::present(rt, o))),
            None => Ok(Deleted::Gone(Self::present(rt, &object))),
        }
    }

    fn finish_namespaces(&self, state: &mut State) {
        let terminating: Vec<Key> = state
            .objects
            .iter()
            .filter(|(k, o)| k.storage == "/namespaces" && !meta(o)["deletionTimestamp"].is_null())
            .map(|(k, _)| k.clone())
            .collect();
        for key in terminating {
            if !state.objects.keys().any(|k| k.namespace == key.name)
                && let Some(object) = state.objects.get(&key).cloned()
            {
                self.commit(state, EventType::Deleted, &key, object);
            }
        }
    }

    fn dependents<'a>(
        &self,
        state: &'a State,
        uid: &'a str,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        state.objects.iter().filter(move |(_, o)| {
            !uid.is_empty()
                && meta(o)["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["uid"].as_str() == Some(uid))
        })
    }

    fn orphan_dependents(&self, state: &mut State, uid: &str) {
        let keys: Vec<Key> = self
            .dependents(state, uid)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(mut object) = state.objects.get(&key).cloned() {
                if let Some(refs) = meta_mut(&mut object)
                    .get_mut("ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| r["uid"].as_str() != Some(uid));
                    if refs.is_empty() {
                        meta_mut(&mut object).remove("ownerReferences");
                    }
                }
                self.commit(state, EventType::Modified, &key, object);
            }
        }
    }

    /// Deletes every object owned by `uid` (background propagation for each).
    fn delete_dependents(&self, state: &mut State, uid: &str) {
        let keys: Vec<Key> = self
            .dependents(state, uid)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let Some(drt) = state
                .resources
                .iter()
                .find(|r| r.storage == key.storage)
                .cloned()
            else {
                continue;
            };
            // An object that still has other live owners stays.
            let other_owner_alive = state.objects.get(&key).is_some_and(|o| {
                meta(o)["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| {
                        let ruid = r["uid"].as_str().unwrap_or_default();
                        ruid != uid && state.objects.values().any(|x| str_at(x, "uid") == ruid)
                    })
            });
            if other_owner_alive {
                continue;
            }
            let _ = self.delete_locked(
                state,
                &drt,
                &key.namespace,
                &key.name,
                &DeleteOptions::default(),
            );
        }
    }

    /// Removes `foregroundDeletion` from owners whose dependents are all gone.
    fn finish_foreground(&self, state: &mut State) {
        loop {
            let ready: Vec<Key> = state
                .objects
                .iter()
                .filter(|(_, o)| {
                    meta(o)["finalizers"]
                        .as_array()
                        .is_some_and(|f| f.contains(&json!("foregroundDeletion")))
                })
                .filter(|(_, o)| self.dependents(state, str_at(o, "uid")).next().is_none())
                .map(|(k, _)| k.clone())
                .collect();
            if ready.is_empty() {
                return;
            }
            for key in ready {
                let Some(mut object) = state.objects.get(&key).cloned() else {
                    continue;
                };
                let Some(rt) = state
                    .resources
                    .iter()
                    .find(|r| r.storage == key.storage)
                    .cloned()
                else {
                    continue;
                };
                if let Some(f) = meta_mut(&mut object)
                    .get_mut("finalizers")
                    .and_then(Value::as_array_mut)
                {
                    f.retain(|x| x != "foregroundDeletion");
                }
                if meta(&object)["finalizers"]
                    .as_array()
                    .is_none_or(Vec::is_empty)
                {
                    let object = self.commit(state, EventType::Deleted, &key, object);
                    self.after_removal(state, &rt, &object);
                } else {
                    self.commit(state, EventType::Modified, &key, object);
                }
            }
        }
    }

    /// What follows an object's removal: garbage collection of its dependents, a CRD's
    /// resources leaving, a terminating namespace completing.
    fn after_removal(&self, state: &mut State, rt: &ResourceType, object: &Value) {
        if rt.storage == "apiextensions.k8s.io/customresourcedefinitions" {
            let group = object["spec"]["group"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let plural = object["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let storage = format!("{group}/{plural}");
            let keys: Vec<Key> = state
                .objects
                .keys()
                .filter(|k| k.storage == storage)
                .cloned()
                .collect();
            for key in keys {
                if let Some(o) = state.objects.get(&key).cloned() {
                    self.commit(state, EventType::Deleted, &key, o);
                }
            }
            Arc::make_mut(&mut state.resources)
                .retain(|r| !(r.custom && r.group == group && r.plural == plural));
        }
        let uid = str_at(object, "uid").to_string();
        self.delete_dependents(state, &uid);
        self.finish_foreground(state);
        self.finish_namespaces(state);
    }
}

fn strip_for_generation(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

/// Two states are the same write when only managedFields timestamps differ.
fn same_ignoring_managed_times(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(entries) = v["metadata"]["managedFields"].as_array_mut() {
            for e in entries {
                e.as_object_mut().map(|m| m.remove("time"));
            }
        }
        v
    };
    strip(a) == strip(b)
}

/// A continue token: where the next page starts, and the resourceVersion of the list's
/// first page, which every later page reports (as the apiserver's paged lists do).
fn encode_continue(last: &(String, String), rv: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&json!({"ns": last.0, "name": last.1, "rv": rv})).unwrap_or_default(),
    )
}

fn decode_continue(token: &str) -> Result<(String, String, u64), ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid: invalid continue token");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((
        v["ns"].as_str().ok_or_else(bad)?.to_string(),
        v["name"].as_str().ok_or_else(bad)?.to_string(),
        v["rv"].as_u64().ok_or_else(bad)?,
    ))
}
