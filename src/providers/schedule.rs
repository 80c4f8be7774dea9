//! When a credential is validated next (DESIGN §7): every `interval`, at a phase within the
//! interval fixed per credential (from its uid), so credentials created together spread
//! evenly over the interval instead of calling providers in bursts; while a provider is
//! unreachable, with a backoff from 10 s doubling up to the interval; after a 429, no sooner
//! than its `Retry-After`.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// First retry after the provider was unreachable.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(10);

/// The credential's fixed offset within `interval`, from its uid.
pub fn phase(uid: &str, interval: Duration) -> Duration {
    // FNV-1a: stable across processes and versions, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uid.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(h % ms)
}

/// The next regular validation after one at `last`: the first instant of the credential's
/// phase at least half an interval after `last` (so between 0.5 and 1.5 intervals after a
/// first, unphased validation, and exactly one interval apart after that).
pub fn next_regular(last: Timestamp, interval: Duration, uid: &str) -> Timestamp {
    let interval_ms = interval.as_millis().max(1) as i64;
    let phase_ms = phase(uid, interval).as_millis() as i64;
    let earliest = last.as_millisecond() + interval_ms / 2;
    // The smallest t >= earliest with t ≡ phase (mod interval).
    let offset = (phase_ms - earliest).rem_euclid(interval_ms);
    Timestamp::from_millisecond(earliest + offset).unwrap_or(last)
}

/// The wait before retrying after `failures` unreachable answers in a row (1 for the first).
pub fn backoff(failures: u32, interval: Duration) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    doubled.min(interval.max(FIRST_BACKOFF))
}

/// When to validate next.
pub fn next(
    last: Timestamp,
    interval: Duration,
    uid: &str,
    unreachable_in_a_row: u32,
    retry_after: Option<Duration>,
) -> Timestamp {
    let at = if unreachable_in_a_row > 0 {
        last + SignedDuration::try_from(backoff(unreachable_in_a_row, interval))
            .unwrap_or(SignedDuration::ZERO)
    } else {
        next_regular(last, interval, uid)
    };
    match retry_after.and_then(|r| SignedDuration::try_from(r).ok()) {
        Some(r) if last + r > at => last + r,
        _ => at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(ms).expect("instant")
    }

    #[test]
    fn two_hundred_credentials_spread_over_the_interval() {
        // All created (and first validated) at the same instant.
        let start = t(1_800_000_000_000);
        let uids: Vec<String> = (0..200)
            .map(|i| format!("uid-{i:04}-{}", i * 7919))
            .collect();
        let mut buckets = vec![0u32; 10];
        for uid in &uids {
            let mut at = next_regular(start, MINUTE, uid);
            // Over ten intervals after the first.
            for _ in 0..10 {
                let since = (at.as_millisecond() - start.as_millisecond()) % 60_000;
                buckets[(since / 6_000) as usize] += 1;
                let later = next_regular(at, MINUTE, uid);
                assert_eq!(later.as_millisecond() - at.as_millisecond(), 60_000);
                at = later;
            }
        }
        let mean = buckets.iter().sum::<u32>() / 10;
        assert!(
            buckets.iter().all(|b| *b <= 2 * mean),
            "6-second buckets {buckets:?}, mean {mean}"
        );
    }

    #[test]
    fn the_first_regular_check_comes_half_to_one_and_a_half_intervals_later() {
        for i in 0..100 {
            let uid = format!("u{i}");
            let last = t(1_000_000 + i * 1234);
            let next = next_regular(last, MINUTE, &uid);
            let gap = next.as_millisecond() - last.as_millisecond();
            assert!((30_000..90_000).contains(&gap), "{gap}");
        }
    }

    #[test]
    fn unreachable_providers_are_retried_with_growing_gaps_at_most_fifteen_in_ten_minutes() {
        let mut at = t(0);
        let mut requests = 1;
        let mut gaps = Vec::new();
        for failures in 1.. {
            let next = next(at, MINUTE, "u", failures, None);
            if next.as_millisecond() > 600_000 {
                break;
            }
            gaps.push(next.as_millisecond() - at.as_millisecond());
            at = next;
            requests += 1;
        }
        assert!(requests <= 15, "{requests} requests: {gaps:?}");
        assert!(gaps.windows(2).all(|w| w[1] >= w[0]), "{gaps:?}");
        assert_eq!(gaps[0], 10_000);
    }

    #[test]
    fn retry_after_postpones_but_never_hurries() {
        let last = t(0);
        let regular = next(last, MINUTE, "u", 0, None);
        assert_eq!(
            next(last, MINUTE, "u", 0, Some(Duration::from_secs(1))),
            regular
        );
        assert_eq!(
            next(last, MINUTE, "u", 0, Some(Duration::from_secs(3600))),
            t(3_600_000)
        );
    }
}
