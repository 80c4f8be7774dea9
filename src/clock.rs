//! Time, injected: controllers ask a `Clock`, so tests can run schedules with a fake one.

use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

/// A source of "now".
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock tests move by hand.
#[derive(Debug, Clone)]
pub struct FakeClock(Arc<Mutex<Timestamp>>);

impl FakeClock {
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now = now.checked_add(by).expect("fake clock stays in range");
    }

    pub fn set(&self, to: Timestamp) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An instant as records, annotations and history keep it: to the millisecond.
pub fn ms(t: Timestamp) -> Timestamp {
    t.round(jiff::Unit::Millisecond).unwrap_or(t)
}

/// RFC 3339 with millisecond precision (records, annotations and history, where rotation
/// timing is measured; `metav1.Time` status fields round to seconds).
pub fn rfc3339(t: Timestamp) -> String {
    t.round(jiff::Unit::Millisecond)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| t.to_string())
}

/// A `metav1.Time` for status fields.
pub fn kube_time(t: Timestamp) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t.round(jiff::Unit::Second).unwrap_or(t))
}
