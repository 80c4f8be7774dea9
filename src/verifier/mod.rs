//! The verifier (DESIGN §6): answers "is this key valid?" for gateways from an in-memory
//! index fed by a watch on the hash namespace. No API call per request, except consuming a
//! single-use pool key (an update of its record). argon2 only for keys whose pepper is
//! lost, on the process's hashing pool, never while holding the index lock, and never
//! twice for the same wrong key (a bounded negative cache).

pub mod check;
pub mod consume;
pub mod index;
pub mod metrics;
pub mod ratelimit;
pub mod server;
pub mod tls;
pub mod usage;

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

use self::check::{Code, Outcome, Peppers, Verdict};
use self::index::{Index, Source};
use self::ratelimit::{Decision, Limiter};
use crate::crd::labels;
use crate::keys::pepper_secret::PEPPER_SECRET;
use crate::record::{HashRecord, SingleUseRecord};

/// argon2 verifications the verifier may have queued or running at once.
const ARGON2_QUEUE: usize = 64;
/// Wrong keys remembered so they never cost a second argon2 run.
const NEGATIVE_CACHE: usize = 4096;
/// Keys whose secret was proven, remembered so their next presentation skips the keyed
/// hash (and, under a lost pepper, argon2).
const SUCCESS_CACHE: usize = 10_000;
/// Largest body of `POST /v1/keys/verify`.
pub const MAX_JSON_BODY: usize = 4096;
/// Default for how long the index may go without its watch before `/readyz` fails.
pub const MAX_INDEX_AGE: Duration = Duration::from_secs(300);
/// While the index's watch is failing, how often a one-item list checks whether the API
/// server answers again (a re-established watch with nothing new delivers no event).
const RECOVERY_PROBE: Duration = Duration::from_secs(2);

/// Verifier settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// How usage reaches `ApiKey.status.usage`.
    pub usage: usage::UsageOptions,
    /// HTTP status for rate-limited requests on `/verify`: 429, or 403 for proxies such as
    /// nginx `auth_request` that only understand 2xx/401/403.
    pub rate_limited_status: u16,
    /// The process's hashing pool (a new one of default size when `None`).
    pub hash_pool: Option<crate::hashing::HashPool>,
    /// Connection limits and timeouts of the HTTP server.
    pub limits: server::Limits,
    /// How long the index may go without its watch before `/readyz` fails.
    pub max_index_age: Duration,
    /// Serve over TLS with this pair, reloaded when the files change.
    pub tls: Option<tls::TlsFiles>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rate_limited_status: 429,
            hash_pool: None,
            usage: usage::UsageOptions::default(),
            limits: server::Limits::default(),
            max_index_age: MAX_INDEX_AGE,
            tls: None,
        }
    }
}

/// Hashes of wrong keys that needed argon2, oldest forgotten first; cleared whenever the
/// index changes (a key wrong before may be right now).
#[derive(Default)]
struct Negative {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl Negative {
    fn digest(key: &str) -> [u8; 32] {
        Sha256::digest(key.as_bytes()).into()
    }

    fn contains(&self, key: &str) -> bool {
        self.set.contains(&Self::digest(key))
    }

    fn insert(&mut self, key: &str) {
        let d = Self::digest(key);
        if self.set.insert(d) {
            self.order.push_back(d);
            while self.order.len() > NEGATIVE_CACHE {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn clear(&mut self) {
        self.set.clear();
        self.order.clear();
    }
}

/// Entries of keys whose secret a presentation proved, by a hash of the whole presented
/// key, oldest forgotten first. An entry counts only while the index still holds its
/// record unchanged; its state (disabled, expiry, grace) is evaluated again each time, and
/// the rate limit applies after. Single-use keys are never cached.
#[derive(Default)]
struct Success {
    map: std::collections::HashMap<[u8; 32], index::Entry>,
    order: VecDeque<[u8; 32]>,
    hits: u64,
}

impl Success {
    fn insert(&mut self, digest: [u8; 32], entry: index::Entry) {
        if self.map.insert(digest, entry).is_none() {
            self.order.push_back(digest);
            while self.order.len() > SUCCESS_CACHE {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

/// Whether the index's watch is down, and since when.
#[derive(Default)]
struct FeedHealth {
    down_since: Option<Instant>,
}

impl FeedHealth {
    fn failed(&mut self, now: Instant) {
        self.down_since.get_or_insert(now);
    }

    fn succeeded(&mut self) {
        self.down_since = None;
    }

    fn is_down(&self) -> bool {
        self.down_since.is_some()
    }

    /// How long the watch has been down.
    fn down_for(&self, now: Instant) -> Duration {
        self.down_since
            .map_or(Duration::ZERO, |since| now.duration_since(since))
    }
}

/// Shared verifier state.
pub struct Verifier {
    index: RwLock<Index>,
    peppers: RwLock<Peppers>,
    limiter: Limiter,
    ready: AtomicBool,
    /// Set on SIGTERM: `/readyz` fails at once while requests in flight drain.
    draining: AtomicBool,
    feed_health: Mutex<FeedHealth>,
    /// The verifier's way into the hashing pool: its slow path queues here, apart from
    /// the controllers, and never waits when the queue is full.
    hashing: crate::hashing::Caller,
    negative: Mutex<Negative>,
    success: Mutex<Success>,
    metrics: metrics::VerifierMetrics,
    /// The HTTP server's handle, once serving (for `/metrics`).
    server: std::sync::OnceLock<server::Handle>,
    turns: consume::Turns,
    options: Options,
    usage: usage::Usage,
    records: Api<Secret>,
    hash_namespace: String,
}

impl Verifier {
    pub fn new(client: Client, hash_namespace: &str, options: Options) -> Arc<Self> {
        let pool = options
            .hash_pool
            .clone()
            .unwrap_or_else(|| crate::hashing::HashPool::new(crate::hashing::default_workers()));
        Arc::new(Self {
            hashing: pool.caller("verifier", ARGON2_QUEUE),
            index: RwLock::new(Index::default()),
            peppers: RwLock::new(Peppers::default()),
            limiter: Limiter::default(),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            feed_health: Mutex::new(FeedHealth::default()),
            negative: Mutex::new(Negative::default()),
            success: Mutex::new(Success::default()),
            metrics: metrics::VerifierMetrics::default(),
            server: std::sync::OnceLock::new(),
            turns: consume::Turns::default(),
            options,
            usage: usage::Usage::default(),
            records: Api::namespaced(client, hash_namespace),
            hash_namespace: hash_namespace.to_string(),
        })
    }

    /// The state and resourceVersion at which the index holds the pool record `name`.
    pub fn pool_record_state(&self, name: &str) -> Option<(crate::record::UseState, String)> {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .pool_record(name)
            .map(|(record, rv)| (record.state, rv))
    }

    /// Whether the index has seen the whole hash namespace once.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Why `/readyz` fails, if it does: not synced yet, draining, or the index's watch
    /// down for longer than `max_index_age`.
    pub fn unready(&self) -> Option<String> {
        if self.draining.load(Ordering::SeqCst) {
            return Some("draining: shutting down".into());
        }
        if !self.is_ready() {
            return Some("syncing: the index has not listed the hash records yet".into());
        }
        let down = self
            .feed_health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .down_for(Instant::now());
        (down > self.options.max_index_age).then(|| {
            format!(
                "stale: the index has not heard from the API server for {}s (limit {}s)",
                down.as_secs(),
                self.options.max_index_age.as_secs()
            )
        })
    }

    /// Marks the verifier as shutting down: `/readyz` fails from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn peppers(&self) -> Peppers {
        self.peppers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Decides a key from the index alone, or says which entries need argon2.
    fn quick(&self, key: &str) -> Outcome {
        let peppers = self.peppers();
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        check::check(key, &index, &peppers, jiff::Timestamp::now())
    }

    /// argon2 over the candidates of a lost pepper, on the hashing pool, with no lock held.
    async fn slow(&self, key: &str, candidates: Vec<index::Entry>, otherwise: Code) -> Verdict {
        if self
            .negative
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
        {
            return Verdict::code(otherwise);
        }
        let presented = key.to_string();
        let found = self
            .hashing
            .try_run(move || {
                candidates
                    .into_iter()
                    .find(|e| crate::keys::argon2_verify(&presented, &e.key.hash))
            })
            .await;
        match found {
            Ok(Some(entry)) => check::evaluate(&entry, jiff::Timestamp::now()),
            Ok(None) => {
                self.negative
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key);
                Verdict::code(otherwise)
            }
            // The slow path is saturated: try again later (never a guess).
            Err(_) => Verdict::code(Code::Unavailable),
        }
    }

    /// Consumes a single-use key the check found valid.
    async fn consume(&self, verdict: Verdict) -> Verdict {
        let Some(entry) = &verdict.entry else {
            return verdict;
        };
        let Some((record, name, rv)) = consume::pool_record(&entry.source) else {
            return verdict;
        };
        let current = || {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            index.pool_record(name)
        };
        let done = consume::consume(
            &self.records,
            &self.hash_namespace,
            &self.turns,
            name,
            record,
            rv,
            current,
        )
        .await;
        if let Some((record, rv)) = done.now {
            self.index
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .upsert(
                    name,
                    Source::Pool {
                        record,
                        secret_name: name.to_string(),
                        resource_version: rv,
                    },
                );
        }
        Verdict {
            code: done.code,
            entry: verdict.entry.clone(),
        }
    }

    /// The metrics text, as `/metrics` serves it.
    pub fn metrics_text(&self) -> String {
        let stats = self.hashing.pool().stats();
        let (hits, _) = self.success_cache();
        let down = self
            .feed_health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .down_for(Instant::now());
        let index_records = self.index.read().unwrap_or_else(|p| p.into_inner()).len();
        self.metrics.encode(metrics::Snapshot {
            index_records,
            index_down_seconds: down.as_secs_f64(),
            argon2_running: stats.running,
            argon2_queued: stats.queued,
            argon2_started: stats.started,
            open_connections: self
                .server
                .get()
                .map_or(0, server::Handle::open_connections),
            cache_hits: hits,
        })
    }

    /// Answers served from the success cache so far, and its size.
    pub fn success_cache(&self) -> (u64, usize) {
        let cache = self.success.lock().unwrap_or_else(|p| p.into_inner());
        (cache.hits, cache.map.len())
    }

    /// The cached entry of `digest`, if its record is unchanged.
    fn cached(&self, digest: &[u8; 32]) -> Option<index::Entry> {
        let entry = self
            .success
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .get(digest)
            .cloned()?;
        let current = self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .still_current(&entry);
        let mut cache = self.success.lock().unwrap_or_else(|p| p.into_inner());
        if current {
            cache.hits += 1;
            Some(entry)
        } else {
            cache.map.remove(digest);
            None
        }
    }

    /// Checks a key, then its rate limit.
    pub async fn verify(self: &Arc<Self>, key: &str) -> (Verdict, Option<Decision>) {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut verdict = match self.cached(&digest) {
            Some(entry) => check::evaluate(&entry, jiff::Timestamp::now()),
            None => {
                let verdict = match self.quick(key) {
                    Outcome::Decided(v) => v,
                    Outcome::Argon2 {
                        candidates,
                        otherwise,
                    } => self.slow(key, candidates, otherwise).await,
                };
                // The secret was proven: remember it (never a single-use key).
                if let Some(entry) = &verdict.entry
                    && entry.role != index::Role::SingleUse
                {
                    self.success
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(digest, entry.clone());
                }
                verdict
            }
        };
        if verdict.consumes() {
            verdict = self.consume(verdict).await;
        }
        let mut limit = None;
        if verdict.code == Code::Valid
            && let Some(entry) = &verdict.entry
            && let Source::ApiKey(record) = &*entry.source
        {
            if let Some(per_minute) = record.access.requests_per_minute {
                let decision = self
                    .limiter
                    .take(&record.apikey.uid, per_minute, Instant::now());
                if !decision.allowed {
                    verdict.code = Code::RateLimited;
                }
                limit = Some(decision);
            }
            if verdict.code == Code::Valid {
                let owner = &record.apikey;
                self.usage.record(
                    &owner.namespace,
                    &owner.name,
                    &owner.uid,
                    jiff::Timestamp::now(),
                );
            }
        }
        (verdict, limit)
    }

    /// Writes pending usage now (also done every `usage.flush_every`).
    pub async fn flush_usage(&self, client: &Client) {
        self.usage
            .flush(client, &self.options.usage, &self.metrics)
            .await;
    }

    /// What a Secret of the hash namespace means to the index, if anything.
    fn source_of(secret: &Secret) -> Option<Source> {
        let l = secret.labels();
        if l.get(labels::ROLE).map(String::as_str) != Some(labels::ROLE_HASH) {
            return None;
        }
        let parsed = if l.get(labels::SINGLE_USE).map(String::as_str) == Some("true") {
            SingleUseRecord::from_secret(secret).map(|record| Source::Pool {
                record,
                secret_name: secret.name_any(),
                resource_version: secret.resource_version().unwrap_or_default(),
            })
        } else {
            HashRecord::from_secret(secret).map(Source::ApiKey)
        };
        match parsed {
            Ok(source) => Some(source),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an unreadable hash record");
                None
            }
        }
    }

    /// The pepper Secret, trusted by name only.
    fn apply_pepper(&self, secret: &Secret) {
        let stored = crate::record::StoredPeppers::of(secret);
        let mut peppers = self.peppers.write().unwrap_or_else(|p| p.into_inner());
        let before = peppers.ids();
        peppers.load(stored.pepper, stored.previous);
        let after = peppers.ids();
        if after != before {
            tracing::info!(peppers = ?after, "verifier peppers (current first)");
        }
    }

    /// The ids of the peppers fast hashes are checked under, current first.
    pub fn pepper_ids(&self) -> Vec<String> {
        self.peppers().ids()
    }

    fn changed(&self) {
        self.negative
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn apply_secret(&self, secret: &Secret) {
        if secret.name_any() == PEPPER_SECRET {
            self.apply_pepper(secret);
            self.changed();
            return;
        }
        if let Some(source) = Self::source_of(secret) {
            self.index
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .upsert(&secret.name_any(), source);
            self.changed();
        }
    }

    fn remove_secret(&self, secret: &Secret) {
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&secret.name_any());
        if let Ok(record) = HashRecord::from_secret(secret) {
            self.limiter.forget(&record.apikey.uid);
        }
        self.changed();
    }

    /// Feeds the index from a watch on keyward's Secrets in the hash namespace, until the
    /// stream ends (it retries with backoff on its own).
    pub async fn feed(self: Arc<Self>, client: Client, hash_namespace: String) {
        let api: Api<Secret> = Api::namespaced(client, &hash_namespace);
        let selector = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
        let mut stream = std::pin::pin!(
            watcher(api.clone(), watcher::Config::default().labels(&selector)).default_backoff()
        );
        let probe_params = kube::api::ListParams::default().labels(&selector).limit(1);
        let mut probe = tokio::time::interval(RECOVERY_PROBE);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut relist: Vec<Secret> = Vec::new();
        loop {
            let down = self
                .feed_health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_down();
            let event = tokio::select! {
                event = stream.next() => match event {
                    Some(event) => event,
                    None => break,
                },
                _ = probe.tick(), if down => {
                    if api.list_metadata(&probe_params).await.is_ok() {
                        self.feed_health
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .succeeded();
                    }
                    continue;
                }
            };
            {
                let mut health = self.feed_health.lock().unwrap_or_else(|p| p.into_inner());
                match &event {
                    Ok(_) => health.succeeded(),
                    Err(_) => health.failed(Instant::now()),
                }
            }
            match event {
                Ok(watcher::Event::Init) => relist.clear(),
                Ok(watcher::Event::InitApply(s)) => relist.push(s),
                Ok(watcher::Event::InitDone) => {
                    let sources: Vec<(String, Source)> = relist
                        .iter()
                        .filter_map(|s| Some((s.name_any(), Self::source_of(s)?)))
                        .collect();
                    if let Some(pepper) = relist.iter().find(|s| s.name_any() == PEPPER_SECRET) {
                        self.apply_pepper(pepper);
                    }
                    self.index
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .replace_all(sources);
                    self.changed();
                    relist.clear();
                    self.ready.store(true, Ordering::SeqCst);
                }
                Ok(watcher::Event::Apply(s)) => self.apply_secret(&s),
                Ok(watcher::Event::Delete(s)) => self.remove_secret(&s),
                Err(e) => tracing::warn!(error = %e, "verifier watch"),
            }
        }
    }
}

/// Why no key could be read from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoKey {
    Missing,
    /// Present, but not visible ASCII (keys never contain anything else).
    Unreadable,
}

impl NoKey {
    fn message(self) -> &'static str {
        match self {
            Self::Missing => "missing API key: send Authorization: Bearer KEY or X-API-Key: KEY",
            Self::Unreadable => "the API key is not printable ASCII",
        }
    }
}

/// The key from `Authorization: Bearer` (first) or `X-API-Key`.
fn presented_key(headers: &HeaderMap) -> Result<String, NoKey> {
    fn read(v: &HeaderValue) -> Result<&str, NoKey> {
        v.to_str().map(str::trim).map_err(|_| NoKey::Unreadable)
    }
    let bearer = headers.get(header::AUTHORIZATION).map(|v| {
        read(v).map(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .map(str::trim)
        })
    });
    let found = match bearer {
        Some(Ok(Some(key))) => Ok(key),
        Some(Err(e)) => Err(e),
        // Not a bearer credential: try X-API-Key.
        Some(Ok(None)) | None => match headers.get("x-api-key") {
            Some(v) => read(v),
            None => Err(NoKey::Missing),
        },
    };
    match found {
        Ok("") => Err(NoKey::Missing),
        Ok(k) if k.bytes().any(|b| !b.is_ascii_graphic()) => Err(NoKey::Unreadable),
        Ok(k) => Ok(k.to_string()),
        Err(e) => Err(e),
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// `/verify` and any path under it, any method (Envoy ext_authz, Traefik forwardAuth).
async fn verify_forward(State(verifier): State<Arc<Verifier>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let key = match presented_key(&headers) {
        Ok(key) => key,
        Err(no) => {
            verifier
                .metrics
                .answered(Code::Malformed.as_str(), started.elapsed().as_secs_f64());
            return no_key(no);
        }
    };
    let (verdict, limit) = verifier.verify(&key).await;
    verifier
        .metrics
        .answered(verdict.code.as_str(), started.elapsed().as_secs_f64());
    let status = match verdict.code {
        Code::Valid => StatusCode::OK,
        Code::Disabled => StatusCode::FORBIDDEN,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::RateLimited => StatusCode::from_u16(verifier.options.rate_limited_status)
            .unwrap_or(StatusCode::TOO_MANY_REQUESTS),
        _ => StatusCode::UNAUTHORIZED,
    };
    let mut response = (status, verdict.code.as_str()).into_response();
    let h = response.headers_mut();
    set(h, "x-keyward-code", verdict.code.as_str());
    if status == StatusCode::UNAUTHORIZED {
        set(h, "www-authenticate", "Bearer");
    }
    if let Some(entry) = &verdict.entry
        && matches!(verdict.code, Code::Valid | Code::RateLimited)
    {
        let (namespace, name) = entry.source.owner();
        set(h, "x-keyward-key", &format!("{namespace}/{name}"));
        // Pool keys have no owner or scopes: a gateway sees the pool only.
        if let Source::ApiKey(record) = &*entry.source {
            set(
                h,
                "x-keyward-owner",
                record.access.owner.as_deref().unwrap_or_default(),
            );
            set(h, "x-keyward-scopes", &record.access.scopes.join(" "));
        }
    }
    if let Some(d) = limit {
        set(h, "x-ratelimit-limit", &d.limit.to_string());
        set(h, "x-ratelimit-remaining", &d.remaining.to_string());
        if !d.allowed {
            set(
                h,
                "retry-after",
                &d.retry_after.as_secs_f64().ceil().max(1.0).to_string(),
            );
        }
    }
    response
}

/// A refusal on `/verify` when no key could be read: 401 with `MALFORMED`.
fn no_key(no: NoKey) -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, no.message()).into_response();
    set(r.headers_mut(), "x-keyward-code", Code::Malformed.as_str());
    set(r.headers_mut(), "www-authenticate", "Bearer");
    r
}

/// The body of `POST /v1/keys/verify`. Fields other than `key` are ignored; a second
/// `key` is refused (a filter in front that reads the first must see what is checked).
#[derive(serde::Deserialize)]
struct VerifyRequest {
    key: String,
}

fn bad_request(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Reads the JSON body: at most [`MAX_JSON_BODY`] bytes, within the header-read timeout.
async fn read_verify_request(body: Body, within: Duration) -> Result<VerifyRequest, Response> {
    let limited = http_body_util::Limited::new(body, MAX_JSON_BODY);
    let bytes = match tokio::time::timeout(within, http_body_util::BodyExt::collect(limited)).await
    {
        Err(_) => {
            return Err(bad_request(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            ));
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(bad_request(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is larger than {MAX_JSON_BODY} bytes"),
            ));
        }
        Ok(Err(_)) => {
            return Err(bad_request(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            ));
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    serde_json::from_slice::<VerifyRequest>(&bytes).map_err(|e| {
        // serde_json's message names the problem (duplicate field, wrong type, syntax)
        // and never quotes the input.
        bad_request(
            StatusCode::BAD_REQUEST,
            &format!("expected a JSON body {{\"key\": \"...\"}}: {e}"),
        )
    })
}

/// `POST /v1/keys/verify {"key": "..."}`: always 200 with the verdict (like Unkey).
async fn verify_json(State(verifier): State<Arc<Verifier>>, body: Body) -> Response {
    let started = Instant::now();
    let within = verifier.options.limits.header_read_timeout;
    let key = match read_verify_request(body, within).await {
        Ok(request) => request.key,
        Err(refusal) => {
            verifier
                .metrics
                .answered("REFUSED", started.elapsed().as_secs_f64());
            return refusal;
        }
    };
    let (verdict, limit) = verifier.verify(&key).await;
    verifier
        .metrics
        .answered(verdict.code.as_str(), started.elapsed().as_secs_f64());
    let mut answer = json!({"valid": verdict.code == Code::Valid, "code": verdict.code});
    // Only a holder of the key learns whose it is (the check proved the secret first).
    if let Some(entry) = &verdict.entry {
        answer["key"] = match &*entry.source {
            Source::ApiKey(r) => {
                json!({"namespace": r.apikey.namespace, "name": r.apikey.name, "owner": r.access.owner, "scopes": r.access.scopes})
            }
            Source::Pool { record, .. } => {
                json!({"namespace": record.pool.namespace, "name": record.pool.name})
            }
        };
    }
    if let Some(d) = limit {
        answer["ratelimit"] = json!({"limit": d.limit, "remaining": d.remaining, "resetMs": d.reset.as_millis() as u64});
    }
    Json(answer).into_response()
}

/// The verifier's routes, with `/healthz` and `/readyz` (ready once the index synced).
pub fn router(verifier: Arc<Verifier>) -> Router {
    Router::new()
        .route("/verify", any(verify_forward))
        .route("/verify/{*rest}", any(verify_forward))
        // The catch-all needs a segment; Envoy asks about `/` as `/verify/`.
        .route("/verify/", any(verify_forward))
        .route("/v1/keys/verify", post(verify_json))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|State(v): State<Arc<Verifier>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    v.metrics_text(),
                )
            }),
        )
        .route(
            "/readyz",
            get(|State(v): State<Arc<Verifier>>| async move {
                match v.unready() {
                    None => (StatusCode::OK, "ok".to_string()),
                    Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                }
            }),
        )
        .with_state(verifier)
}

/// A running verifier.
pub struct Running {
    pub addr: SocketAddr,
    pub verifier: Arc<Verifier>,
    pub server: server::Handle,
    /// The TLS pair being served, when serving TLS.
    pub tls: Option<Arc<tls::Reloading>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How long requests in flight may take to finish once shutdown begins.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

impl Running {
    /// Shuts down cleanly: `/readyz` fails at once, new connections are refused, idle
    /// ones close, and requests in flight get `grace` to finish; then everything stops.
    pub async fn drain(&self, grace: Duration) {
        self.verifier.start_draining();
        self.server.drain(grace).await;
        self.stop();
    }

    /// Stops the feed and the server.
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts the verifier on `addr`: the feed and the HTTP server run in the background.
pub async fn start(
    addr: SocketAddr,
    client: Client,
    hash_namespace: &str,
    options: Options,
) -> std::io::Result<Running> {
    let tls = match &options.tls {
        Some(files) => Some(
            tls::Reloading::load(files.clone())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        ),
        None => None,
    };
    let verifier = Verifier::new(client.clone(), hash_namespace, options);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let feed = tokio::spawn(
        verifier
            .clone()
            .feed(client.clone(), hash_namespace.to_string()),
    );
    let flusher = {
        let verifier = verifier.clone();
        tokio::spawn(async move {
            verifier
                .usage
                .flush_forever(client, verifier.options.usage.clone(), &verifier.metrics)
                .await
        })
    };
    let app = router(verifier.clone());
    let (handle, serving) = server::serve(listener, app, verifier.options.limits, tls.clone());
    let _ = verifier.server.set(handle.clone());
    let server = tokio::spawn(serving);
    let mut tasks = vec![feed, server, flusher];
    if let Some(t) = &tls {
        tasks.push(tokio::spawn(t.clone().watch()));
    }
    Ok(Running {
        addr: bound,
        verifier,
        server: handle,
        tls,
        tasks,
    })
}
