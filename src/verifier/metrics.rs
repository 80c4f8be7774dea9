//! The verifier's Prometheus metrics on its own `/metrics`: answers by code, latency, the
//! index, argon2 work, connections, usage flushing. Labels are answer codes only: never a
//! key, a lookup id or an owner.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: &'static str,
}

/// Values read at scrape time.
pub struct Snapshot {
    pub index_records: usize,
    pub index_down_seconds: f64,
    pub argon2_running: usize,
    pub argon2_queued: usize,
    pub argon2_started: u64,
    pub open_connections: usize,
    pub cache_hits: u64,
}

pub struct VerifierMetrics {
    registry: Registry,
    answers: Family<CodeLabels, Counter>,
    latency: Histogram,
    pub usage_writes: Counter,
    pub usage_failures: Counter,
    index_records: Gauge,
    index_down: Gauge<f64, std::sync::atomic::AtomicU64>,
    argon2_running: Gauge,
    argon2_queued: Gauge,
    argon2_runs: Counter,
    open_connections: Gauge,
    cache_hits: Counter,
    /// What the counters fed from elsewhere last showed (they only move forward).
    seen: Mutex<(u64, u64)>,
}

impl Default for VerifierMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keyward_verifier");
        let answers = Family::<CodeLabels, Counter>::default();
        let latency = Histogram::new([
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]);
        let m = Self {
            answers,
            latency,
            usage_writes: Counter::default(),
            usage_failures: Counter::default(),
            index_records: Gauge::default(),
            index_down: Gauge::default(),
            argon2_running: Gauge::default(),
            argon2_queued: Gauge::default(),
            argon2_runs: Counter::default(),
            open_connections: Gauge::default(),
            cache_hits: Counter::default(),
            seen: Mutex::new((0, 0)),
            registry: Registry::default(),
        };
        registry.register(
            "answers",
            "Answers by code (VALID, NOT_FOUND, ...)",
            m.answers.clone(),
        );
        registry.register(
            "answer_duration_seconds",
            "Time from a request's head to its answer",
            m.latency.clone(),
        );
        registry.register(
            "index_records",
            "Hash records in the index",
            m.index_records.clone(),
        );
        registry.register(
            "index_sync_age_seconds",
            "How long the index's watch has been cut off from the API server (0 while it is not)",
            m.index_down.clone(),
        );
        registry.register(
            "argon2_running",
            "argon2 runs in progress on the hashing pool",
            m.argon2_running.clone(),
        );
        registry.register(
            "argon2_queued",
            "argon2 runs waiting for a hashing worker",
            m.argon2_queued.clone(),
        );
        registry.register(
            "argon2_runs",
            "argon2 runs started on the hashing pool",
            m.argon2_runs.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open now",
            m.open_connections.clone(),
        );
        registry.register(
            "success_cache_hits",
            "Answers for keys proven before, served without hashing",
            m.cache_hits.clone(),
        );
        registry.register(
            "usage_flush_writes",
            "ApiKey status writes made to flush usage",
            m.usage_writes.clone(),
        );
        registry.register(
            "usage_flush_failures",
            "Usage flushes of one key that failed (kept for the next flush)",
            m.usage_failures.clone(),
        );
        Self { registry, ..m }
    }
}

impl VerifierMetrics {
    /// One answer.
    pub fn answered(&self, code: &'static str, seconds: f64) {
        self.answers.get_or_create(&CodeLabels { code }).inc();
        self.latency.observe(seconds);
    }

    /// The text exposition, with the scrape-time values in.
    pub fn encode(&self, now: Snapshot) -> String {
        self.index_records.set(now.index_records as i64);
        self.index_down.set(now.index_down_seconds);
        self.argon2_running.set(now.argon2_running as i64);
        self.argon2_queued.set(now.argon2_queued as i64);
        self.open_connections.set(now.open_connections as i64);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            self.argon2_runs
                .inc_by(now.argon2_started.saturating_sub(seen.0));
            self.cache_hits
                .inc_by(now.cache_hits.saturating_sub(seen.1));
            *seen = (now.argon2_started.max(seen.0), now.cache_hits.max(seen.1));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
