//! Faults at random: a seeded fraction of the requests of chosen verbs on chosen resources
//! get one of the chosen kinds of fault.
//!
//! Reproducible by construction: what a request gets depends only on the seed, its verb,
//! resource, namespace and name, and how many requests with those same four came before it
//! (not on the interleaving of unrelated requests, which concurrent clients vary from run
//! to run). The generator is SplitMix64, written out here because `rand`'s `StdRng` does
//! not promise the same stream across versions, and a seed printed by a failing run must
//! replay the same faults after a dependency update.

use std::collections::HashMap;
use std::time::Duration;

use super::FaultAction;

/// One kind of fault the random mode can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer this status code (409 or 5xx) without doing anything.
    Status(u16),
    /// Answer 429 with `Retry-After` of this many seconds, without doing anything.
    Throttle(u32),
    /// Do the write, then answer 500: the client never learns it happened.
    FailAfter,
    /// Never answer, and do nothing (the request is lost on the way).
    Hang,
    /// Do the write, then never answer (the reply is lost on the way).
    HangAfter,
    /// Answer this much later.
    Latency(Duration),
    /// Serve the watch, then cut its connection mid-stream within this long.
    CutWatch(Duration),
    /// Answer the watch with 410 Gone, as for a resourceVersion already compacted.
    ExpireWatch,
}

impl FaultKind {
    /// The name it is counted under (see [`super::Hooks::injected`]), and its word in the
    /// `faults=` list without the parameter: `500`, `429`, `fail-after`, `cut-watch`, ...
    pub fn label(&self) -> String {
        match self {
            Self::Status(code) => code.to_string(),
            Self::Throttle(_) => "429".into(),
            Self::FailAfter => "fail-after".into(),
            Self::Hang => "hang".into(),
            Self::HangAfter => "hang-after".into(),
            Self::Latency(_) => "latency".into(),
            Self::CutWatch(_) => "cut-watch".into(),
            Self::ExpireWatch => "expire-watch".into(),
        }
    }

    /// Whether it means anything for this verb: watch faults only on watches; conflicts and
    /// applied-but-unanswered writes only on writes; a watch is never hung (an idle watch
    /// already looks like that) nor refused with 409.
    pub fn applies_to(&self, verb: &str) -> bool {
        let watch = verb == "watch";
        let write = is_write(verb);
        match self {
            Self::Status(409) => write,
            Self::Status(_) | Self::Throttle(_) | Self::Latency(_) => true,
            Self::FailAfter | Self::HangAfter => write,
            Self::Hang => !watch,
            Self::CutWatch(_) | Self::ExpireWatch => watch,
        }
    }
}

/// Whether a verb changes state.
pub fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// The random mode's settings (see the `spec` syntax in `examples/serve.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct RandomFaults {
    /// Share of matching requests that get a fault, 0 to 1.
    pub fraction: f64,
    pub seed: u64,
    /// Verbs that may get faults (get, list, watch, create, update, patch, delete,
    /// deletecollection); empty: every verb.
    pub verbs: Vec<String>,
    /// Plural resources that may get faults; `apikeys` covers `apikeys/status` too, while
    /// `apikeys/status` names only the subresource. Empty: every resource.
    pub resources: Vec<String>,
    /// The kinds drawn from, uniformly among those that apply to the request's verb.
    pub kinds: Vec<FaultKind>,
    /// Hung requests are answered 504 after this long, as kube-apiserver answers requests
    /// that outlive its `--request-timeout`; `None`: never (until the emulator stops).
    pub hang_timeout: Option<Duration>,
}

impl RandomFaults {
    /// Every kind of fault, on every verb and resource.
    pub fn new(fraction: f64, seed: u64) -> Self {
        Self {
            fraction,
            seed,
            verbs: Vec::new(),
            resources: Vec::new(),
            kinds: all_kinds(),
            hang_timeout: None,
        }
    }

    fn covers(&self, verb: &str, resource: &str) -> bool {
        let verb_ok = self.verbs.is_empty() || self.verbs.iter().any(|v| v == verb);
        let plural = resource.split('/').next().unwrap_or(resource);
        let resource_ok = self.resources.is_empty()
            || self.resources.iter().any(|r| r == resource || r == plural);
        verb_ok && resource_ok
    }
}

/// Every kind with its default parameter.
pub fn all_kinds() -> Vec<FaultKind> {
    vec![
        FaultKind::Status(500),
        FaultKind::Throttle(1),
        FaultKind::Status(409),
        FaultKind::FailAfter,
        FaultKind::Hang,
        FaultKind::HangAfter,
        FaultKind::Latency(Duration::from_millis(200)),
        FaultKind::CutWatch(Duration::from_secs(1)),
        FaultKind::ExpireWatch,
    ]
}

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, to fold a request's identity into the generator's state.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The draws for one request.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A request as the random mode identifies it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub verb: &'a str,
    /// Plural, with `/subresource` if any.
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// The random mode's state: its settings and how many requests each identity has had.
pub struct Selector {
    pub config: RandomFaults,
    seen: HashMap<(String, String, String, String), u64>,
}

impl Selector {
    pub fn new(config: RandomFaults) -> Self {
        Self {
            config,
            seen: HashMap::new(),
        }
    }

    /// The fault this request gets, if any, and the kind it is counted as.
    pub fn select(&mut self, request: Request<'_>) -> Option<(FaultKind, FaultAction)> {
        let config = &self.config;
        if !config.covers(request.verb, request.resource) {
            return None;
        }
        let namespace = request.namespace.unwrap_or_default();
        let name = request.name.unwrap_or_default();
        let n = {
            let counter = self
                .seen
                .entry((
                    request.verb.to_string(),
                    request.resource.to_string(),
                    namespace.to_string(),
                    name.to_string(),
                ))
                .or_default();
            *counter += 1;
            *counter
        };
        let identity = fnv1a(&[request.verb, request.resource, namespace, name]);
        let mut draws = Draws(mix(config.seed) ^ mix(identity ^ mix(n)));
        // Always the same number of draws, fired or not.
        let fires = draws.unit() < config.fraction;
        let pick = draws.next();
        let within = draws.unit();
        if !fires {
            return None;
        }
        let candidates: Vec<FaultKind> = config
            .kinds
            .iter()
            .filter(|k| k.applies_to(request.verb))
            .copied()
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let kind = candidates[(pick % candidates.len() as u64) as usize];
        let action = match kind {
            FaultKind::Status(code) => FaultAction::Fail(code),
            FaultKind::Throttle(secs) => FaultAction::Throttle(secs),
            FaultKind::FailAfter => FaultAction::FailAfter(500),
            FaultKind::Hang => FaultAction::Hang,
            FaultKind::HangAfter => FaultAction::HangAfter,
            FaultKind::Latency(d) => FaultAction::Delay(d),
            FaultKind::CutWatch(max) => FaultAction::CutWatch(max.mul_f64(within)),
            FaultKind::ExpireWatch => FaultAction::ExpireWatch,
        };
        Some((kind, action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(verb: &'a str, resource: &'a str, name: &'a str) -> Request<'a> {
        Request {
            verb,
            resource,
            namespace: Some("default"),
            name: Some(name),
        }
    }

    /// What 300 requests over a few verbs, resources and names get.
    fn run(config: RandomFaults) -> Vec<Option<FaultAction>> {
        let mut selector = Selector::new(config);
        let verbs = [
            "get", "list", "watch", "create", "patch", "update", "delete",
        ];
        let resources = ["secrets", "apikeys", "apikeys/status", "leases"];
        (0..300)
            .map(|i| {
                let name = format!("obj-{}", i % 5);
                selector
                    .select(request(verbs[i % 7], resources[i % 4], &name))
                    .map(|(_, a)| a)
            })
            .collect()
    }

    #[test]
    fn a_seed_gives_the_same_faults_and_another_seed_others() {
        let a = run(RandomFaults::new(0.3, 42));
        assert_eq!(a, run(RandomFaults::new(0.3, 42)));
        assert_ne!(a, run(RandomFaults::new(0.3, 43)));
        let fired = a.iter().filter(|f| f.is_some()).count();
        assert!(
            (50..130).contains(&fired),
            "about 30% of 300 fire, got {fired}"
        );
    }

    #[test]
    fn faults_follow_each_object_whatever_else_interleaves() {
        let config = RandomFaults::new(0.5, 7);
        let mut alone = Selector::new(config.clone());
        let mut busy = Selector::new(config);
        let mut seen_alone = Vec::new();
        let mut seen_busy = Vec::new();
        for i in 0..50 {
            seen_alone.push(alone.select(request("patch", "secrets", "a")));
            // Unrelated requests in between change nothing for "a".
            for other in 0..(i % 3) {
                busy.select(request("patch", "secrets", &format!("b{other}")));
            }
            seen_busy.push(busy.select(request("patch", "secrets", "a")));
        }
        assert_eq!(seen_alone, seen_busy);
    }

    #[test]
    fn fraction_zero_never_fires_and_one_always_does() {
        assert!(run(RandomFaults::new(0.0, 1)).iter().all(Option::is_none));
        assert!(run(RandomFaults::new(1.0, 1)).iter().all(Option::is_some));
    }

    #[test]
    fn only_the_named_verbs_and_resources_get_faults() {
        let mut config = RandomFaults::new(1.0, 9);
        config.verbs = vec!["create".into(), "patch".into()];
        config.resources = vec!["secrets".into(), "apikeys".into()];
        let mut selector = Selector::new(config);
        for (verb, resource, hit) in [
            ("create", "secrets", true),
            ("patch", "apikeys", true),
            ("patch", "apikeys/status", true),
            ("get", "secrets", false),
            ("watch", "apikeys", false),
            ("create", "leases", false),
            ("patch", "secretsx", false),
        ] {
            assert_eq!(
                selector.select(request(verb, resource, "x")).is_some(),
                hit,
                "{verb} {resource}"
            );
        }
        let mut config = RandomFaults::new(1.0, 9);
        config.resources = vec!["apikeys/status".into()];
        let mut selector = Selector::new(config);
        assert!(selector.select(request("patch", "apikeys", "x")).is_none());
        assert!(
            selector
                .select(request("patch", "apikeys/status", "x"))
                .is_some()
        );
    }

    #[test]
    fn each_kind_lands_only_where_it_means_something() {
        let mut counts: HashMap<(String, String), u64> = HashMap::new();
        let mut selector = Selector::new(RandomFaults::new(1.0, 3));
        for i in 0..2000 {
            for verb in ["get", "watch", "patch"] {
                let name = format!("o{i}");
                let (kind, action) = selector
                    .select(request(verb, "secrets", &name))
                    .expect("fraction 1 always fires");
                assert!(kind.applies_to(verb), "{kind:?} on {verb}");
                if let FaultAction::CutWatch(d) = action {
                    assert!(d <= Duration::from_secs(1));
                }
                *counts.entry((verb.into(), kind.label())).or_default() += 1;
            }
        }
        for (verb, label) in [
            ("watch", "cut-watch"),
            ("watch", "expire-watch"),
            ("watch", "429"),
            ("patch", "fail-after"),
            ("patch", "hang-after"),
            ("patch", "409"),
            ("get", "hang"),
            ("get", "latency"),
        ] {
            assert!(
                counts
                    .get(&(verb.into(), label.into()))
                    .is_some_and(|n| *n > 0),
                "{label} never drawn for {verb}: {counts:?}"
            );
        }
        for (verb, label) in [
            ("get", "409"),
            ("get", "fail-after"),
            ("watch", "hang"),
            ("patch", "cut-watch"),
        ] {
            assert!(!counts.contains_key(&(verb.into(), label.into())));
        }
    }
}
