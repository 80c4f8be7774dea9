//! 5-field cron (`minute hour day-of-month month day-of-week`) evaluated in an IANA time zone.
//!
//! Syntax: `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b`, month names
//! `JAN`–`DEC`, weekday names `SUN`–`SAT` (0 and 7 are Sunday). As in Vixie cron, when both
//! day-of-month and day-of-week are restricted, a day matching either fires.
//! Daylight saving: a time that does not exist (spring forward) fires as soon as the clock
//! reaches the equivalent instant after the gap; a time that occurs twice (fall back) fires
//! once, at the first occurrence.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("schedule {0:?} must have 5 fields: minute hour day-of-month month day-of-week")]
    FieldCount(String),
    #[error("schedule field {field} ({value:?}): {why}")]
    Field {
        field: &'static str,
        value: String,
        why: String,
    },
    #[error("unknown time zone {0:?}: use an IANA name such as Europe/Berlin or America/New_York")]
    TimeZone(String),
    #[error("schedule {0:?} never fires (no such date)")]
    Never(String),
}

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    dom_restricted: bool,
    dow_restricted: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A run of ASCII digits (leading zeros allowed, no sign), as a number.
fn digits(raw: &str) -> Option<u32> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = raw.trim_start_matches('0');
    if significant.is_empty() {
        return Some(0);
    }
    significant.parse::<u32>().ok()
}

/// Largest step.
const MAX_STEP: u32 = 99;

fn parse_value(
    field: &'static str,
    raw: &str,
    names: &[&str],
    base: u32,
) -> Result<u32, CronError> {
    let upper = raw.to_ascii_uppercase();
    if let Some(i) = names.iter().position(|n| *n == upper) {
        return Ok(i as u32 + base);
    }
    digits(raw).ok_or_else(|| CronError::Field {
        field,
        value: raw.into(),
        why: "not a number or name".into(),
    })
}

fn parse_field(
    field: &'static str,
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<(Vec<bool>, bool), CronError> {
    let mut set = vec![false; max as usize + 1];
    let err = |why: String| CronError::Field {
        field,
        value: text.into(),
        why,
    };
    let restricted = text != "*" && text != "?";
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                digits(s).ok_or_else(|| err(format!("step {s:?} is not a number")))?,
            ),
            None => (part, 1),
        };
        if step == 0 || step > MAX_STEP {
            return Err(err(format!("step must be between 1 and {MAX_STEP}")));
        }
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                parse_value(field, a, names, name_base)?,
                parse_value(field, b, names, name_base)?,
            )
        } else {
            let v = parse_value(field, range, names, name_base)?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(err(format!("{range:?} is outside {min}-{max}")));
        }
        let mut v = lo;
        while v <= hi {
            set[v as usize] = true;
            v += step;
        }
    }
    Ok((set, restricted))
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Self, CronError> {
        let fields: Vec<&str> = text.split_ascii_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields.as_slice() else {
            return Err(CronError::FieldCount(text.into()));
        };
        let (minutes, _) = parse_field("minute", minute, 0, 59, &[], 0)?;
        let (hours, _) = parse_field("hour", hour, 0, 23, &[], 0)?;
        let (days, dom_restricted) = parse_field("day-of-month", dom, 1, 31, &[], 0)?;
        let (months, _) = parse_field("month", month, 1, 12, &MONTHS, 1)?;
        let (mut weekdays, dow_restricted) = parse_field("day-of-week", dow, 0, 7, &WEEKDAYS, 0)?;
        if weekdays[7] {
            weekdays[0] = true;
        }
        Ok(Self {
            text: text.into(),
            minutes,
            hours,
            days,
            months,
            weekdays,
            dom_restricted,
            dow_restricted,
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        if !self.months[d.month() as usize] {
            return false;
        }
        let dom = self.days[d.day() as usize];
        let dow = self.weekdays[d.weekday().to_sunday_zero_offset() as usize];
        match (self.dom_restricted, self.dow_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The first firing strictly after `after`, in `tz`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Result<Timestamp, CronError> {
        let start = after.to_zoned(tz.clone()).date();
        // Cron dates repeat within 28 years; 5 years covers every real schedule (Feb 29 too).
        for offset in 0..(366 * 5) {
            let Ok(date) = start.checked_add(offset.days()) else {
                break;
            };
            if !self.day_matches(date) {
                continue;
            }
            for hour in (0..24).filter(|h| self.hours[*h as usize]) {
                for minute in (0..60).filter(|m| self.minutes[*m as usize]) {
                    let civil =
                        DateTime::new(date.year(), date.month(), date.day(), hour, minute, 0, 0)
                            .expect("valid civil time");
                    // `compatible`: gaps move forward by the gap, folds take the earlier time.
                    let Ok(zoned) = tz.to_ambiguous_zoned(civil).compatible() else {
                        continue;
                    };
                    let at = zoned.timestamp();
                    if at > after {
                        return Ok(at);
                    }
                }
            }
        }
        Err(CronError::Never(self.text.clone()))
    }
}

/// Looks up an IANA time zone (`UTC` when absent).
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, CronError> {
    match name {
        None | Some("UTC") | Some("Etc/UTC") => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(n).map_err(|_| CronError::TimeZone(n.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn next(schedule: &str, after: &str, tz: &str) -> String {
        let tz = time_zone(Some(tz)).expect("zone");
        Schedule::parse(schedule)
            .expect("parses")
            .next_after(ts(after), &tz)
            .expect("fires")
            .to_string()
    }

    #[test]
    fn basic_fields() {
        assert_eq!(
            next("0 3 * * *", "2026-03-01T00:00:00Z", "UTC"),
            "2026-03-01T03:00:00Z"
        );
        assert_eq!(
            next("0 3 * * *", "2026-03-01T03:00:00Z", "UTC"),
            "2026-03-02T03:00:00Z",
            "strictly after"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-03-01T00:07:00Z", "UTC"),
            "2026-03-01T00:15:00Z"
        );
        assert_eq!(
            next("0 0 1 JAN *", "2026-03-01T00:00:00Z", "UTC"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("30 9 * * MON-FRI", "2026-03-07T10:00:00Z", "UTC"),
            "2026-03-09T09:30:00Z",
            "Saturday → Monday"
        );
        assert_eq!(
            next("0 0 * * 7", "2026-03-02T00:00:00Z", "UTC"),
            "2026-03-08T00:00:00Z",
            "7 is Sunday"
        );
        assert_eq!(
            next("0 0 29 2 *", "2026-03-01T00:00:00Z", "UTC"),
            "2028-02-29T00:00:00Z"
        );
        // Vixie: day-of-month OR day-of-week when both are restricted.
        assert_eq!(
            next("0 0 15 * MON", "2026-03-10T00:00:00Z", "UTC"),
            "2026-03-15T00:00:00Z"
        );
        assert_eq!(
            next("0 0 15 * SUN", "2026-03-02T00:00:00Z", "UTC"),
            "2026-03-08T00:00:00Z"
        );
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        // Europe/Berlin: 2026-03-29 02:00 CET → 03:00 CEST; 2026-10-25 03:00 CEST → 02:00 CET.
        assert_eq!(
            next("0 3 * * *", "2026-03-01T00:00:00Z", "Europe/Berlin"),
            "2026-03-01T02:00:00Z"
        );
        assert_eq!(
            next("0 3 * * *", "2026-03-29T00:00:00Z", "Europe/Berlin"),
            "2026-03-29T01:00:00Z",
            "after the switch: UTC+2"
        );
        // 02:30 does not exist on 2026-03-29: it fires at 03:30 CEST (01:30Z), once.
        assert_eq!(
            next("30 2 * * *", "2026-03-28T12:00:00Z", "Europe/Berlin"),
            "2026-03-29T01:30:00Z"
        );
        assert_eq!(
            next("30 2 * * *", "2026-03-29T01:30:00Z", "Europe/Berlin"),
            "2026-03-30T00:30:00Z"
        );
        // 02:30 happens twice on 2026-10-25: it fires once, at the first (CEST, 00:30Z).
        assert_eq!(
            next("30 2 * * *", "2026-10-24T12:00:00Z", "Europe/Berlin"),
            "2026-10-25T00:30:00Z"
        );
        assert_eq!(
            next("30 2 * * *", "2026-10-25T00:30:00Z", "Europe/Berlin"),
            "2026-10-26T01:30:00Z"
        );
        // Hourly across the fall-back fold: 02:00 local fires once.
        let tz = time_zone(Some("Europe/Berlin")).expect("zone");
        let hourly = Schedule::parse("0 * * * *").expect("parses");
        let mut at = ts("2026-10-24T22:30:00Z");
        let mut fired = Vec::new();
        for _ in 0..5 {
            at = hourly.next_after(at, &tz).expect("fires");
            fired.push(at.to_string());
        }
        assert_eq!(
            fired,
            [
                "2026-10-24T23:00:00Z",
                "2026-10-25T00:00:00Z",
                "2026-10-25T02:00:00Z",
                "2026-10-25T03:00:00Z",
                "2026-10-25T04:00:00Z"
            ]
        );
        assert_eq!(
            next("0 9 * * *", "2026-07-01T00:00:00Z", "America/New_York"),
            "2026-07-01T13:00:00Z"
        );
    }

    #[test]
    fn bad_schedules_are_refused_with_the_field_named() {
        assert!(matches!(
            Schedule::parse("0 3 * *"),
            Err(CronError::FieldCount(_))
        ));
        assert!(matches!(
            Schedule::parse("60 3 * * *"),
            Err(CronError::Field {
                field: "minute",
                ..
            })
        ));
        assert!(matches!(
            Schedule::parse("0 24 * * *"),
            Err(CronError::Field { field: "hour", .. })
        ));
        assert!(matches!(
            Schedule::parse("0 0 0 * *"),
            Err(CronError::Field {
                field: "day-of-month",
                ..
            })
        ));
        assert!(matches!(
            Schedule::parse("0 0 * FOO *"),
            Err(CronError::Field { field: "month", .. })
        ));
        assert!(matches!(
            Schedule::parse("*/0 * * * *"),
            Err(CronError::Field { .. })
        ));
        assert!(matches!(
            Schedule::parse("0 0 31 2 *")
                .and_then(|s| s.next_after(ts("2026-01-01T00:00:00Z"), &TimeZone::UTC)),
            Err(CronError::Never(_))
        ));
        assert!(matches!(
            time_zone(Some("Mars/Olympus")),
            Err(CronError::TimeZone(_))
        ));
        assert!(time_zone(Some("Asia/Tokyo")).is_ok());
    }
}
