//! Test hooks: make chosen requests fail, hang or answer late, drop open watches, and count
//! requests by verb and resource (for "zero writes when nothing changed"). Faults are either
//! rules for the nth request of a verb ([`Fault`]) or a seeded random fraction of requests
//! ([`RandomFaults`], also selectable on the served emulator's command line).

mod random;
mod spec;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::error::ApiError;
pub use random::{FaultKind, RandomFaults, all_kinds, is_write};
pub use spec::{SpecError, parse_duration};

/// What happens to a request a fault matches.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Answer with this status code (and a Status body with the apiserver's reason for it)
    /// without doing anything; 429 carries `Retry-After: 1`.
    Fail(u16),
    /// Answer 429 Too Many Requests with `Retry-After` of this many seconds, as the
    /// apiserver's priority and fairness does, without doing anything.
    Throttle(u32),
    /// Do the request, then answer with this status code as if it had failed: the client
    /// never learns its write happened (a crash right after the write).
    FailAfter(u16),
    /// Wait this long, then serve the request normally.
    Delay(Duration),
    /// Never answer (nor do anything); the client's timeout decides. Ends with 503 when the
    /// emulator stops, or 504 after the hang timeout ([`Hooks::set_hang_timeout`]).
    Hang,
    /// Do the request, then never answer, as [`FaultAction::Hang`].
    HangAfter,
    /// Serve the watch, then cut its connection mid-stream after this long.
    CutWatch(Duration),
    /// Answer the watch with 410 Gone (an `ERROR` event), as for a resourceVersion already
    /// compacted: the client must list again.
    ExpireWatch,
}

impl FaultAction {
    /// The name it is counted under in [`Hooks::injected`].
    pub fn label(&self) -> String {
        match self {
            Self::Fail(429) | Self::Throttle(_) => "429".into(),
            Self::Fail(code) => code.to_string(),
            Self::FailAfter(_) => "fail-after".into(),
            Self::Delay(_) => "latency".into(),
            Self::Hang => "hang".into(),
            Self::HangAfter => "hang-after".into(),
            Self::CutWatch(_) => "cut-watch".into(),
            Self::ExpireWatch => "expire-watch".into(),
        }
    }
}

/// The apiserver's Status reason for an injected code.
fn reason(code: u16) -> &'static str {
    match code {
        409 => "Conflict",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// The answer to a request refused by a fault: a Status with the code's reason, and for
/// 429 the `Retry-After` header and `details.retryAfterSeconds` the apiserver sends.
pub fn refusal(code: u16, retry_after: Option<u32>, message: String) -> Response {
    let mut error = ApiError::new(code, reason(code), message);
    let retry_after = retry_after.or((code == 429).then_some(1));
    if let Some(secs) = retry_after {
        error.details = Some(serde_json::json!({ "retryAfterSeconds": secs }));
    }
    let status = axum::http::StatusCode::from_u16(code)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        error.status().to_string(),
    )
        .into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// A rule: the `nth` (1-based, counted from when the rule was added) request with this verb
/// on this resource (and, if set, this object name) gets `action`, `times` times in a row.
#[derive(Debug, Clone)]
pub struct Fault {
    pub verb: String,
    pub resource: String,
    /// Only requests for the object of this name match (`None`: any).
    pub name: Option<String>,
    pub nth: u64,
    pub times: u64,
    pub action: FaultAction,
    seen: u64,
}

impl Fault {
    /// `verb` is get, list, watch, create, update, patch or delete; `resource` is a plural,
    /// optionally with a subresource (`apikeys/status`); `"*"` matches any.
    pub fn new(verb: &str, resource: &str, nth: u64, action: FaultAction) -> Self {
        Self {
            verb: verb.into(),
            resource: resource.into(),
            name: None,
            nth: nth.max(1),
            times: 1,
            action,
            seen: 0,
        }
    }

    /// Applies the action to this many consecutive matching requests.
    pub fn times(mut self, times: u64) -> Self {
        self.times = times.max(1);
        self
    }

    /// Matches only requests for the object `name` (one Secret among many, say).
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// One request as the emulator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Who asked: the request's bearer token, which names the user (tokens are not checked:
    /// the emulator attributes requests, it does not authenticate them); `""` without one.
    pub user: String,
    pub verb: String,
    /// API group (`""` for core).
    pub group: String,
    /// Plural resource name (`secrets`).
    pub resource: String,
    pub subresource: Option<String>,
    /// `None` for cluster-wide (or cluster-scoped) requests.
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// Requests kept in the log, newest last; older ones are dropped.
const LOG_LIMIT: usize = 200_000;

/// The emulator's hooks, shared by every request.
pub struct Hooks {
    faults: Mutex<Vec<Fault>>,
    random: Mutex<Option<random::Selector>>,
    counters: Mutex<BTreeMap<(String, String), u64>>,
    injected: Mutex<BTreeMap<String, u64>>,
    log: Mutex<std::collections::VecDeque<Recorded>>,
    drop_watches: watch::Sender<u64>,
    stopping: watch::Sender<bool>,
    hang_timeout: Mutex<Option<Duration>>,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            faults: Mutex::new(Vec::new()),
            random: Mutex::new(None),
            counters: Mutex::new(BTreeMap::new()),
            injected: Mutex::new(BTreeMap::new()),
            log: Mutex::new(std::collections::VecDeque::new()),
            drop_watches: watch::channel(0).0,
            stopping: watch::channel(false).0,
            hang_timeout: Mutex::new(None),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hooks {
    /// Adds a fault rule.
    pub fn add_fault(&self, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fault);
    }

    /// Removes every fault rule (not the random faults: see [`Hooks::set_random_faults`]).
    pub fn clear_faults(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Starts (or, with `None`, stops) faults at random; the count of requests per object
    /// the draws depend on starts again from zero. Its hang timeout becomes the hooks' own.
    pub fn set_random_faults(&self, config: Option<RandomFaults>) {
        if let Some(c) = &config {
            self.set_hang_timeout(c.hang_timeout);
        }
        *lock(&self.random) = config.map(random::Selector::new);
    }

    /// The random faults in force.
    pub fn random_faults(&self) -> Option<RandomFaults> {
        lock(&self.random).as_ref().map(|s| s.config.clone())
    }

    /// Hung requests get 504 Timeout after this long (as kube-apiserver answers requests
    /// that outlive its `--request-timeout`); `None`: they wait until the emulator stops.
    pub fn set_hang_timeout(&self, timeout: Option<Duration>) {
        *lock(&self.hang_timeout) = timeout;
    }

    /// Faults injected so far by kind (`500`, `429`, `409`, `fail-after`, `hang`,
    /// `hang-after`, `latency`, `cut-watch`, `expire-watch`), from rules and at random.
    pub fn injected(&self) -> BTreeMap<String, u64> {
        lock(&self.injected).clone()
    }

    /// Faults injected so far, all kinds together.
    pub fn injected_total(&self) -> u64 {
        lock(&self.injected).values().sum()
    }

    /// Tells hung requests the emulator is stopping, so they end and let it stop.
    pub(crate) fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
        self.drop_watches();
    }

    /// Waits as a hung request does: until the emulator stops (then 503), or the hang
    /// timeout passes (then 504). Returns the answer to give.
    pub(crate) async fn hang(&self, what: &str) -> Response {
        let timeout = *lock(&self.hang_timeout);
        let mut stopping = self.stopping.subscribe();
        let stopped = stopping.wait_for(|s| *s);
        match timeout {
            Some(t) => {
                if tokio::time::timeout(t, stopped).await.is_err() {
                    return refusal(
                        504,
                        None,
                        format!(
                            "Timeout: request did not complete within the allotted timeout ({what}, injected hang)"
                        ),
                    );
                }
            }
            None => {
                let _ = stopped.await;
            }
        }
        let mut response = refusal(503, None, format!("the emulator is stopping ({what})"));
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }

    /// Logs a request (see [`Hooks::requests`]).
    pub fn record(&self, request: Recorded) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() >= LOG_LIMIT {
            log.pop_front();
        }
        log.push_back(request);
    }

    /// The requests logged since the last [`Hooks::reset_counters`], oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Counts a request (for the object `name` in `namespace`, if it names one) and returns
    /// the fault action it gets, if any: a rule's first, else a random one.
    pub fn on_request(
        &self,
        verb: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Option<FaultAction> {
        *self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((verb.to_string(), resource.to_string()))
            .or_default() += 1;
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let mut action = None;
        for fault in faults.iter_mut() {
            let verb_ok = fault.verb == "*" || fault.verb == verb;
            let resource_ok = fault.resource == "*" || fault.resource == resource;
            let name_ok = fault.name.is_none() || fault.name.as_deref() == name;
            if verb_ok && resource_ok && name_ok {
                fault.seen += 1;
                if action.is_none()
                    && fault.seen >= fault.nth
                    && fault.seen < fault.nth + fault.times
                {
                    action = Some(fault.action.clone());
                }
            }
        }
        drop(faults);
        if action.is_none()
            && let Some(selector) = lock(&self.random).as_mut()
        {
            action = selector
                .select(random::Request {
                    verb,
                    resource,
                    namespace,
                    name,
                })
                .map(|(_, a)| a);
        }
        if let Some(a) = &action {
            *lock(&self.injected).entry(a.label()).or_default() += 1;
        }
        action
    }

    /// Requests so far with this verb on this resource (`secrets`, `apikeys/status`).
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Every counter, keyed by (verb, resource).
    pub fn counters(&self) -> BTreeMap<(String, String), u64> {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Writes (create, update, patch, delete) so far, on any resource.
    pub fn writes(&self) -> u64 {
        self.counters()
            .iter()
            .filter(|((verb, _), _)| {
                matches!(
                    verb.as_str(),
                    "create" | "update" | "patch" | "delete" | "deletecollection"
                )
            })
            .map(|(_, n)| n)
            .sum()
    }

    /// Resets every counter (injected faults too) to zero and empties the request log.
    pub fn reset_counters(&self) {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        lock(&self.injected).clear();
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Ends every open watch now (clients see the stream close and re-watch).
    pub fn drop_watches(&self) {
        self.drop_watches.send_modify(|g| *g += 1);
    }

    /// A receiver that changes whenever watches are dropped.
    pub fn watch_drops(&self) -> watch::Receiver<u64> {
        self.drop_watches.subscribe()
    }
}
