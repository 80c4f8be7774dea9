//! Prometheus metrics of the controllers (DESIGN §8, §10): reconciles, failures by step,
//! durations, leadership, and each key's expiry and next rotation as timestamps to alert on.
//! Labels are object names, never keys.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub controller: String,
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub namespace: String,
    pub name: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
}

/// The metrics, registered once per process.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    durations: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    expiry: Family<KeyLabels, Gauge<f64, AtomicU64>>,
    next_rotation: Family<KeyLabels, Gauge<f64, AtomicU64>>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keyward");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let durations =
            Family::<ControllerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let expiry = Family::<KeyLabels, Gauge<f64, AtomicU64>>::default();
        let next_rotation = Family::<KeyLabels, Gauge<f64, AtomicU64>>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciles finished, by controller",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by controller and failed step",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciles took",
            durations.clone(),
        );
        registry.register(
            "apikey_expiry_timestamp_seconds",
            "When each ApiKey's current key stops verifying (Unix seconds)",
            expiry.clone(),
        );
        registry.register(
            "apikey_next_rotation_timestamp_seconds",
            "When each ApiKey next rotates (Unix seconds)",
            next_rotation.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica runs the controllers",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            durations,
            expiry,
            next_rotation,
            leader,
        }
    }
}

impl Metrics {
    /// Records one finished reconcile.
    pub fn reconciled(&self, controller: &str, took: Duration, failed_step: Option<&str>) {
        let labels = ControllerLabels {
            controller: controller.into(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Some(step) = failed_step {
            self.failures
                .get_or_create(&FailureLabels {
                    controller: controller.into(),
                    step: step.into(),
                })
                .inc();
        }
    }

    /// Sets (or clears, with `None`) a key's expiry and next-rotation timestamps.
    pub fn key_times(
        &self,
        namespace: &str,
        name: &str,
        expires: Option<jiff::Timestamp>,
        next_rotation: Option<jiff::Timestamp>,
    ) {
        let labels = KeyLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        for (family, at) in [
            (&self.expiry, expires),
            (&self.next_rotation, next_rotation),
        ] {
            match at {
                Some(t) => {
                    family
                        .get_or_create(&labels)
                        .set(t.as_millisecond() as f64 / 1000.0);
                }
                None => {
                    family.remove(&labels);
                }
            }
        }
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_reconciles_failures_and_key_times() {
        let m = Metrics::default();
        m.reconciled("apikey", Duration::from_millis(12), None);
        m.reconciled(
            "apikey",
            Duration::from_millis(30),
            Some("writing the status"),
        );
        m.key_times(
            "shop",
            "billing",
            Some("2026-01-01T00:00:00Z".parse().expect("ts")),
            None,
        );
        m.set_leader(true);
        let text = m.encode();
        assert!(
            text.contains("keyward_reconciles_total{controller=\"apikey\"} 2"),
            "{text}"
        );
        assert!(text.contains("keyward_reconcile_failures_total{controller=\"apikey\",step=\"writing the status\"} 1"), "{text}");
        assert!(text.contains("keyward_apikey_expiry_timestamp_seconds{namespace=\"shop\",name=\"billing\"} 1767225600"), "{text}");
        assert!(
            !text.contains("keyward_apikey_next_rotation_timestamp_seconds{"),
            "{text}"
        );
        assert!(text.contains("keyward_leader 1"), "{text}");
        m.key_times("shop", "billing", None, None);
        assert!(!m.encode().contains("namespace=\"shop\""));
    }
}
