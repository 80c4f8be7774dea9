//! Go-style durations (`90s`, `1h30m`, `1.5h`), parsed exactly as Go's `time.ParseDuration`
//! and therefore as CEL's `duration()` on the apiserver, so a value admitted by a schema rule
//! means the same thing to the operator.
//!
//! `kube::core::Duration` is close but not identical: it accepts the empty string, rounds
//! every component through `f64` and does not check overflow, so a value the apiserver
//! refuses could parse here and the reverse. The API's contract is Go's grammar.

use std::fmt;
use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?}: expected a Go duration such as 90s, 15m or 1h30m")]
    Syntax(String),
    #[error("invalid duration {0:?}: missing unit (one of ns, us, ms, s, m, h)")]
    MissingUnit(String),
    #[error("invalid duration {0:?}: unknown unit {1:?} (one of ns, us, ms, s, m, h)")]
    UnknownUnit(String, String),
    #[error("invalid duration {0:?}: out of range")]
    Overflow(String),
    #[error("invalid duration {0:?}: must not be negative")]
    Negative(String),
}

const NANOS_PER_UNIT: &[(&str, u64)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{00b5}s", 1_000), // MICRO SIGN, as Go accepts
    ("\u{03bc}s", 1_000), // GREEK SMALL LETTER MU, as Go accepts
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
];

/// Parses a Go duration into signed nanoseconds, with Go's grammar, rounding and range
/// (±(2^63 − 1) ns, about 292 years).
pub fn parse_nanos(input: &str) -> Result<i64, DurationError> {
    let syntax = || DurationError::Syntax(input.to_string());
    let overflow = || DurationError::Overflow(input.to_string());
    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(syntax());
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        let first = s.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(syntax());
        }
        let int_digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let mut whole: u64 = 0;
        for b in s[..int_digits].bytes() {
            whole = whole
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(b - b'0')))
                .filter(|v| *v <= 1 << 63)
                .ok_or_else(overflow)?;
        }
        s = &s[int_digits..];
        // Fraction: digits beyond what fits are dropped, as Go does.
        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut frac_digits = 0;
        if let Some(rest) = s.strip_prefix('.') {
            s = rest;
            frac_digits = s.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflowed = false;
            for b in s[..frac_digits].bytes() {
                if overflowed {
                    continue;
                }
                match frac
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(b - b'0')))
                    .filter(|v| *v <= 1 << 63)
                {
                    Some(v) => {
                        frac = v;
                        scale *= 10.0;
                    }
                    None => overflowed = true,
                }
            }
            s = &s[frac_digits..];
        }
        if int_digits == 0 && frac_digits == 0 {
            return Err(syntax());
        }
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(input.to_string()));
        }
        let unit_name = &s[..unit_len];
        let unit = NANOS_PER_UNIT
            .iter()
            .find(|(name, _)| *name == unit_name)
            .map(|(_, n)| *n)
            .ok_or_else(|| DurationError::UnknownUnit(input.to_string(), unit_name.to_string()))?;
        s = &s[unit_len..];
        if whole > (1u64 << 63) / unit {
            return Err(overflow());
        }
        let mut value = whole * unit;
        if frac > 0 {
            // Go computes this in float64 and truncates; do the same to round alike.
            let extra = (frac as f64 * (unit as f64 / scale)) as u64;
            value = value
                .checked_add(extra)
                .filter(|v| *v <= 1 << 63)
                .ok_or_else(overflow)?;
        }
        total = total
            .checked_add(value)
            .filter(|v| *v <= 1 << 63)
            .ok_or_else(overflow)?;
    }
    if negative {
        // -2^63 is representable.
        return Ok((total as i128).wrapping_neg() as i64);
    }
    i64::try_from(total).map_err(|_| overflow())
}

/// Parses a duration that must not be negative (every duration in keyward's API).
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let nanos = parse_nanos(input)?;
    if nanos < 0 {
        return Err(DurationError::Negative(input.to_string()));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Formats a duration the way Go's `Duration.String` does (`1h30m0s`, `1.5s`, `250ms`), so
/// what the operator prints reads like what users write.
pub fn format(d: Duration) -> String {
    GoDuration(d).to_string()
}

struct GoDuration(Duration);

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.0.as_nanos();
        if total == 0 {
            return f.write_str("0s");
        }
        if total < 1_000_000_000 {
            // Sub-second: the largest unit that keeps a whole part.
            let (unit, div) = if total < 1_000 {
                ("ns", 1u128)
            } else if total < 1_000_000 {
                ("µs", 1_000)
            } else {
                ("ms", 1_000_000)
            };
            return write!(f, "{}{unit}", decimal(total, div));
        }
        let hours = total / 3_600_000_000_000;
        let minutes = (total / 60_000_000_000) % 60;
        let secs = total % 60_000_000_000;
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if hours > 0 || minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        write!(f, "{}s", decimal(secs, 1_000_000_000))
    }
}

/// `value / div` with the fraction's trailing zeros dropped.
fn decimal(value: u128, div: u128) -> String {
    let whole = value / div;
    let frac = value % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Cases from Go's own time.ParseDuration table.
    #[test]
    fn parses_like_go() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5_000_000_000),
            ("30s", 30_000_000_000),
            ("1478s", 1_478_000_000_000),
            ("-5s", -5_000_000_000),
            ("+5s", 5_000_000_000),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5_000_000_000),
            ("5.6s", 5_600_000_000),
            ("5.s", 5_000_000_000),
            (".5s", 500_000_000),
            ("1.0s", 1_000_000_000),
            ("1.00s", 1_000_000_000),
            ("1.004s", 1_004_000_000),
            ("1.0040s", 1_004_000_000),
            ("100.00100s", 100_001_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12µs", 12_000),
            ("12μs", 12_000),
            ("13ms", 13_000_000),
            ("14s", 14_000_000_000),
            ("15m", 900_000_000_000),
            ("16h", 57_600_000_000_000),
            ("3h30m", 12_600_000_000_000),
            ("10.5s4m", 250_500_000_000),
            ("-2m3.4s", -123_400_000_000),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("39h9m14.425s", 140_954_425_000_000),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 1_200_000_000_000),
            ("9007199254740993ns", 9_007_199_254_740_993),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("0.100000000000000000000h", 360_000_000_000),
            ("0.830103483285477580700h", 2_988_372_539_827),
        ];
        for (input, want) in cases {
            assert_eq!(parse_nanos(input), Ok(*want), "{input}");
        }
    }

    #[test]
    fn refuses_what_go_refuses() {
        for input in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "\u{0}",
            "3000000h",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            "1h 30m",
            " 1h",
        ] {
            assert!(parse_nanos(input).is_err(), "{input:?} should fail");
        }
    }

    #[test]
    fn api_durations_are_never_negative() {
        assert_eq!(parse("-1s"), Err(DurationError::Negative("-1s".into())));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (3_300_000_000, "3.3s"),
            (240_000_000_000, "4m0s"),
            (245_000_000_000, "4m5s"),
            (245_001_000_000, "4m5.001s"),
            (18_245_001_000_000, "5h4m5.001s"),
            (5_400_000_000_000, "1h30m0s"),
        ];
        for (nanos, want) in cases {
            assert_eq!(format(Duration::from_nanos(*nanos)), *want);
        }
    }
}
