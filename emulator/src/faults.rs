//! Test hooks: make chosen requests fail, hang or answer late, drop open watches, and count
//! requests by verb and resource (for "zero writes when nothing changed").

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

/// What happens to a request a fault matches.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Answer with this status code (and a Status body) without doing anything.
    Fail(u16),
    /// Do the request, then answer with this status code as if it had failed: the client
    /// never learns its write happened (a crash right after the write).
    FailAfter(u16),
    /// Wait this long, then serve the request normally.
    Delay(Duration),
    /// Never answer; the client's timeout decides.
    Hang,
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
    counters: Mutex<BTreeMap<(String, String), u64>>,
    log: Mutex<std::collections::VecDeque<Recorded>>,
    drop_watches: watch::Sender<u64>,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            faults: Mutex::new(Vec::new()),
            counters: Mutex::new(BTreeMap::new()),
            log: Mutex::new(std::collections::VecDeque::new()),
            drop_watches: watch::channel(0).0,
        }
    }
}

impl Hooks {
    /// Adds a fault rule.
    pub fn add_fault(&self, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fault);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
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

    /// Counts a request (for the object `name`, if it names one) and returns the fault
    /// action it gets, if any.
    pub fn on_request(
        &self,
        verb: &str,
        resource: &str,
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

    /// Resets every counter to zero and empties the request log.
    pub fn reset_counters(&self) {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
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
