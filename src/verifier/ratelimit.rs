//! Per-key rate limits (`rateLimit.requestsPerMinute`), a token bucket per ApiKey that refills
//! continuously. Limits hold per verifier replica.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// Until the next request would be allowed (when refused).
    pub retry_after: Duration,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    /// Takes one token for `key` (an ApiKey uid) with `per_minute` capacity.
    pub fn take(&self, key: &str, per_minute: u32, now: Instant) -> Decision {
        let capacity = f64::from(per_minute.max(1));
        let rate = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let reset = Duration::from_secs_f64((capacity - bucket.tokens) / rate);
        let retry_after = if allowed {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - bucket.tokens) / rate)
        };
        Decision {
            allowed,
            limit: per_minute,
            remaining: bucket.tokens.floor() as u32,
            reset,
            retry_after,
        }
    }

    /// Drops the bucket of a key that no longer exists.
    pub fn forget(&self, key: &str) {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_limit_then_refills() {
        let limiter = Limiter::default();
        let t0 = Instant::now();
        for i in 0..3 {
            let d = limiter.take("k", 3, t0);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 2 - i);
        }
        let refused = limiter.take("k", 3, t0);
        assert!(!refused.allowed);
        assert_eq!(
            refused.retry_after.as_secs(),
            20,
            "one token per 20s at 3/min"
        );
        assert!(limiter.take("k", 3, t0 + Duration::from_secs(20)).allowed);
        assert!(limiter.take("other", 3, t0).allowed, "per key");
    }
}
