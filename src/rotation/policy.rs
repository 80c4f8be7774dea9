//! When a key rotates (DESIGN §4): a cron schedule in a time zone, or an interval since the
//! last issue; and the advisories about a policy. Pure: time is an argument.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::cron::{self, Schedule};
use crate::crd::Rotation;

/// How often keys rotate.
#[derive(Debug, Clone)]
pub enum Cadence {
    /// Only when asked (`keyward.dev/rotate`).
    Manual,
    Schedule(Schedule, TimeZone),
    Every(SignedDuration),
}

/// A parsed rotation block.
#[derive(Debug, Clone)]
pub struct Policy {
    pub cadence: Cadence,
    pub grace: SignedDuration,
}

pub const DEFAULT_GRACE: SignedDuration = SignedDuration::from_hours(1);

fn duration(field: &str, value: &str) -> Result<SignedDuration, String> {
    let d = crate::duration::parse(value).map_err(|e| format!("{field}: {e}"))?;
    SignedDuration::try_from(d).map_err(|_| format!("{field}: {value:?} is out of range"))
}

impl Policy {
    /// Parses the spec's rotation block; the error is the InvalidSpec message.
    pub fn from_spec(rotation: Option<&Rotation>) -> Result<Self, String> {
        let Some(r) = rotation else {
            return Ok(Self {
                cadence: Cadence::Manual,
                grace: DEFAULT_GRACE,
            });
        };
        let grace = duration("rotation.gracePeriod", &r.grace_period)?;
        let cadence = match (&r.schedule, &r.every) {
            (Some(_), Some(_)) => {
                return Err("set rotation.schedule or rotation.every, not both".into());
            }
            (Some(s), None) => {
                let schedule = Schedule::parse(s).map_err(|e| format!("rotation.schedule: {e}"))?;
                let tz = cron::time_zone(r.time_zone.as_deref())
                    .map_err(|e| format!("rotation.timeZone: {e}"))?;
                schedule
                    .next_after(Timestamp::UNIX_EPOCH, &tz)
                    .map_err(|e| format!("rotation.schedule: {e}"))?;
                Cadence::Schedule(schedule, tz)
            }
            (None, Some(e)) => {
                let every = duration("rotation.every", e)?;
                if every <= SignedDuration::ZERO {
                    return Err("rotation.every must be longer than 0s".into());
                }
                Cadence::Every(every)
            }
            (None, None) => Cadence::Manual,
        };
        Ok(Self { cadence, grace })
    }

    /// The next scheduled rotation of a key issued at `issued`. A schedule missed while the
    /// operator was down is due once (the next firing after the issue), not once per slot.
    pub fn next_rotation(&self, issued: Timestamp) -> Option<Timestamp> {
        match &self.cadence {
            Cadence::Manual => None,
            Cadence::Every(every) => issued.checked_add(*every).ok(),
            Cadence::Schedule(schedule, tz) => schedule.next_after(issued, tz).ok(),
        }
    }

    /// An advisory when previous keys outlive the next rotation (allowed: several previous
    /// keys then verify at once).
    pub fn grace_advisory(&self, now: Timestamp) -> Option<String> {
        let interval = match &self.cadence {
            Cadence::Manual => return None,
            Cadence::Every(every) => *every,
            Cadence::Schedule(schedule, tz) => {
                let first = schedule.next_after(now, tz).ok()?;
                let second = schedule.next_after(first, tz).ok()?;
                second.duration_since(first)
            }
        };
        (self.grace > interval).then(|| {
            format!(
                "gracePeriod {} is longer than the rotation interval {}: several previous keys verify at once",
                crate::duration::format(self.grace.unsigned_abs()),
                crate::duration::format(interval.unsigned_abs())
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, FakeClock};

    fn rotation(
        schedule: Option<&str>,
        tz: Option<&str>,
        every: Option<&str>,
        grace: &str,
    ) -> Rotation {
        Rotation {
            schedule: schedule.map(String::from),
            time_zone: tz.map(String::from),
            every: every.map(String::from),
            grace_period: grace.into(),
            history_limit: 10,
            restart_targets: Vec::new(),
        }
    }

    #[test]
    fn intervals_count_from_the_last_issue() {
        let p = Policy::from_spec(Some(&rotation(None, None, Some("2s"), "1h"))).expect("valid");
        let issued: Timestamp = "2026-01-01T00:00:00.250Z".parse().expect("ts");
        assert_eq!(
            p.next_rotation(issued).expect("next").to_string(),
            "2026-01-01T00:00:02.25Z"
        );
        assert!(
            p.grace_advisory(issued)
                .expect("advisory")
                .contains("gracePeriod 1h0m0s is longer than the rotation interval 2s")
        );
    }

    #[test]
    fn a_missed_schedule_rotates_once_then_resumes() {
        // Fake clock: the operator was down across three daily slots.
        let clock = FakeClock::new("2026-03-01T12:00:00Z".parse().expect("ts"));
        let p = Policy::from_spec(Some(&rotation(
            Some("0 3 * * *"),
            Some("Europe/Berlin"),
            None,
            "1h",
        )))
        .expect("valid");
        let issued: Timestamp = "2026-02-26T12:00:00Z".parse().expect("ts");
        let due = p.next_rotation(issued).expect("next");
        assert!(due <= clock.now(), "due while down");
        // Rotating now makes the next one tomorrow's slot, not the missed ones.
        let next = p.next_rotation(clock.now()).expect("next");
        assert_eq!(next.to_string(), "2026-03-02T02:00:00Z");
        assert!(p.grace_advisory(clock.now()).is_none());
    }

    #[test]
    fn dst_days_keep_wall_clock_time() {
        let p = Policy::from_spec(Some(&rotation(
            Some("0 3 * * *"),
            Some("Europe/Berlin"),
            None,
            "1h",
        )))
        .expect("valid");
        let clock = FakeClock::new("2026-03-28T02:00:00Z".parse().expect("ts"));
        let mut seen = Vec::new();
        for _ in 0..3 {
            let next = p.next_rotation(clock.now()).expect("next");
            seen.push(next.to_string());
            clock.set(next);
        }
        assert_eq!(
            seen,
            [
                "2026-03-29T01:00:00Z",
                "2026-03-30T01:00:00Z",
                "2026-03-31T01:00:00Z"
            ]
        );
    }

    #[test]
    fn bad_policies_are_explained() {
        let err = |r: Rotation| Policy::from_spec(Some(&r)).expect_err("invalid");
        assert!(
            err(rotation(Some("0 25 * * *"), None, None, "1h"))
                .contains("rotation.schedule: schedule field hour")
        );
        assert!(
            err(rotation(Some("0 3 * * *"), Some("Moon/Base"), None, "1h"))
                .contains("unknown time zone \"Moon/Base\"")
        );
        assert!(err(rotation(Some("0 3 * * *"), None, Some("1h"), "1h")).contains("not both"));
        assert!(err(rotation(None, None, Some("-1h"), "1h")).contains("rotation.every"));
        assert!(err(rotation(Some("0 0 30 2 *"), None, None, "1h")).contains("never fires"));
    }
}
