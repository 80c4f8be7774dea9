//! The verifier (DESIGN §6): answers "is this key valid?" for gateways from an in-memory
//! index fed by a watch on the hash namespace. No API call per request; argon2 only where no
//! usable fast hash exists, bounded by a semaphore.
//!
//! Not yet here (next steps of the verifier issue): single-use pool keys, TLS, a success
//! and negative cache, Prometheus metrics of its own, flags for the usage flush timing.

pub mod check;
pub mod index;
pub mod ratelimit;
pub mod usage;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
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

use self::check::{Code, Verdict};
use self::index::Index;
use self::ratelimit::{Decision, Limiter};
use crate::crd::labels;
use crate::keys::Pepper;
use crate::record::HashRecord;

/// argon2 verifications the verifier may have queued or running at once.
const ARGON2_QUEUE: usize = 64;

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
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rate_limited_status: 429,
            hash_pool: None,
            usage: usage::UsageOptions::default(),
        }
    }
}

/// Shared verifier state.
pub struct Verifier {
    index: RwLock<Index>,
    pepper: RwLock<Option<Pepper>>,
    limiter: Limiter,
    ready: AtomicBool,
    /// The verifier's way into the hashing pool: its slow path queues here, apart from
    /// the controllers, and never waits when the queue is full.
    hashing: crate::hashing::Caller,
    options: Options,
    usage: usage::Usage,
}

impl Verifier {
    pub fn new(options: Options) -> Arc<Self> {
        let pool = options
            .hash_pool
            .clone()
            .unwrap_or_else(|| crate::hashing::HashPool::new(crate::hashing::default_workers()));
        Arc::new(Self {
            hashing: pool.caller("verifier", ARGON2_QUEUE),
            index: RwLock::new(Index::default()),
            pepper: RwLock::new(None),
            limiter: Limiter::default(),
            ready: AtomicBool::new(false),
            options,
            usage: usage::Usage::default(),
        })
    }

    /// Whether the index has seen the whole hash namespace once.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn pepper(&self) -> Option<Pepper> {
        self.pepper
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn quick(&self, key: &str) -> Verdict {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        check::check(
            key,
            &index,
            self.pepper().as_ref(),
            jiff::Timestamp::now(),
            None,
        )
    }

    /// Checks a key, then its rate limit.
    pub async fn verify(self: &Arc<Self>, key: &str) -> (Verdict, Option<Decision>) {
        let mut verdict = self.quick(key);
        let needs_argon2 = verdict.code == Code::NotFound && {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            index.has_foreign_pepper(&self.pepper().map(|p| p.id()).unwrap_or_default())
        };
        if needs_argon2 {
            let this = self.clone();
            let presented = key.to_string();
            let slow = self
                .hashing
                .try_run(move || {
                    let index = this.index.read().unwrap_or_else(|p| p.into_inner());
                    let verify = |k: &str, phc: &str| crate::keys::argon2_verify(k, phc);
                    check::check(
                        &presented,
                        &index,
                        this.pepper().as_ref(),
                        jiff::Timestamp::now(),
                        Some(&verify),
                    )
                })
                .await;
            if let Ok(v) = slow {
                verdict = v;
            }
        }
        let mut limit = None;
        if verdict.code == Code::Valid
            && let Some(entry) = &verdict.entry
            && let Some(per_minute) = entry.record.access.requests_per_minute
        {
            let decision = self
                .limiter
                .take(&entry.record.apikey.uid, per_minute, Instant::now());
            if !decision.allowed {
                verdict.code = Code::RateLimited;
            }
            limit = Some(decision);
        }
        if verdict.code == Code::Valid
            && let Some(entry) = &verdict.entry
        {
            let owner = &entry.record.apikey;
            self.usage.record(
                &owner.namespace,
                &owner.name,
                &owner.uid,
                jiff::Timestamp::now(),
            );
        }
        (verdict, limit)
    }

    /// Writes pending usage now (also done every `usage.flush_every`).
    pub async fn flush_usage(&self, client: &Client) {
        self.usage.flush(client, &self.options.usage).await;
    }

    fn apply_secret(&self, secret: &Secret) {
        match secret.labels().get(labels::ROLE).map(String::as_str) {
            Some("pepper") => {
                if let Some(bytes) = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get("pepper"))
                    .filter(|b| b.0.len() >= 32)
                {
                    *self.pepper.write().unwrap_or_else(|p| p.into_inner()) =
                        Some(Pepper::new(bytes.0.clone()));
                }
            }
            Some(labels::ROLE_HASH) => match HashRecord::from_secret(secret) {
                Ok(record) => self
                    .index
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .upsert(record),
                Err(e) => tracing::warn!(error = %e, "ignoring an unreadable hash record"),
            },
            _ => {}
        }
    }

    fn remove_secret(&self, secret: &Secret) {
        if secret.labels().get(labels::ROLE).map(String::as_str) == Some(labels::ROLE_HASH)
            && let Ok(record) = HashRecord::from_secret(secret)
        {
            self.index
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&record.apikey.uid);
            self.limiter.forget(&record.apikey.uid);
        }
    }

    /// Feeds the index from a watch on keyward's Secrets in the hash namespace, until the
    /// stream ends (it retries with backoff on its own).
    pub async fn feed(self: Arc<Self>, client: Client, hash_namespace: String) {
        let api: Api<Secret> = Api::namespaced(client, &hash_namespace);
        let selector = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
        let mut stream = std::pin::pin!(
            watcher(api, watcher::Config::default().labels(&selector)).default_backoff()
        );
        let mut relist: Vec<Secret> = Vec::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => relist.clear(),
                Ok(watcher::Event::InitApply(s)) => relist.push(s),
                Ok(watcher::Event::InitDone) => {
                    let records: Vec<HashRecord> = relist
                        .iter()
                        .filter(|s| {
                            s.labels().get(labels::ROLE).map(String::as_str)
                                == Some(labels::ROLE_HASH)
                        })
                        .filter_map(|s| HashRecord::from_secret(s).ok())
                        .collect();
                    for s in relist.iter().filter(|s| {
                        s.labels().get(labels::ROLE).map(String::as_str) == Some("pepper")
                    }) {
                        self.apply_secret(s);
                    }
                    self.index
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .replace_all(records);
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

fn presented_key(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    bearer
        .or(api_key)
        .filter(|k| !k.is_empty())
        .map(String::from)
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// `/verify` and any path under it, any method (Envoy ext_authz, Traefik forwardAuth).
async fn verify_forward(State(verifier): State<Arc<Verifier>>, headers: HeaderMap) -> Response {
    let Some(key) = presented_key(&headers) else {
        let mut r = (StatusCode::UNAUTHORIZED, "missing API key").into_response();
        set(r.headers_mut(), "x-keyward-code", Code::Malformed.as_str());
        set(r.headers_mut(), "www-authenticate", "Bearer");
        return r;
    };
    let (verdict, limit) = verifier.verify(&key).await;
    let status = match verdict.code {
        Code::Valid => StatusCode::OK,
        Code::Disabled => StatusCode::FORBIDDEN,
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
        let record = &entry.record;
        set(
            h,
            "x-keyward-key",
            &format!("{}/{}", record.apikey.namespace, record.apikey.name),
        );
        set(
            h,
            "x-keyward-owner",
            record.access.owner.as_deref().unwrap_or_default(),
        );
        set(h, "x-keyward-scopes", &record.access.scopes.join(" "));
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

/// `POST /v1/keys/verify {"key": "..."}`: always 200 with the verdict (like Unkey).
async fn verify_json(State(verifier): State<Arc<Verifier>>, body: Bytes) -> Response {
    let key = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["key"].as_str().map(String::from));
    let Some(key) = key else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "expected a JSON body {\"key\": \"...\"}"})),
        )
            .into_response();
    };
    let (verdict, limit) = verifier.verify(&key).await;
    let mut answer = json!({"valid": verdict.code == Code::Valid, "code": verdict.code});
    if let Some(entry) = &verdict.entry {
        let r = &entry.record;
        answer["key"] = json!({"namespace": r.apikey.namespace, "name": r.apikey.name, "owner": r.access.owner, "scopes": r.access.scopes});
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
        .route("/v1/keys/verify", post(verify_json))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(v): State<Arc<Verifier>>| async move {
                if v.is_ready() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "syncing")
                }
            }),
        )
        .with_state(verifier)
}

/// A running verifier.
pub struct Running {
    pub addr: SocketAddr,
    pub verifier: Arc<Verifier>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
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
    let verifier = Verifier::new(options);
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
                .flush_forever(client, verifier.options.usage.clone())
                .await
        })
    };
    let app = router(verifier.clone());
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "verifier stopped");
        }
    });
    Ok(Running {
        addr: bound,
        verifier,
        tasks: vec![feed, server, flusher],
    })
}
