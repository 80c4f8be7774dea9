//! The one-line syntax of [`RandomFaults`], for command lines (`serve --faults SPEC`):
//!
//! ```text
//! fraction=0.1,seed=42,verbs=create|patch,resources=secrets|apikeys,faults=500|429:2s|latency:200ms
//! ```
//!
//! Comma-separated `key=value` settings; lists separated by `|`:
//! - `fraction` (required): share of matching requests that get a fault, 0 to 1.
//! - `seed`: the generator's seed (default: drawn from the clock; [`RandomFaults`]'s
//!   `Display` always prints it, so a run can be replayed).
//! - `verbs`: get, list, watch, create, update, patch, delete, deletecollection (default all).
//! - `resources`: plurals such as `secrets|apikeys|apikeys/status` (default all).
//! - `faults`: kinds to draw from (default all): a status code (`409`, or 500–599),
//!   `429[:SECONDS s]` (Retry-After, default 1s), `fail-after`, `hang`, `hang-after`,
//!   `latency[:DURATION]` (default 200ms), `cut-watch[:WITHIN]` (default 1s), `expire-watch`.
//! - `hang-timeout`: answer hung requests 504 after this long (default: never).
//!
//! Durations are a number and a unit: `ms`, `s` or `m` (`250ms`, `1.5s`, `2m`).

use std::fmt;
use std::time::Duration;

use super::random::{FaultKind, RandomFaults, all_kinds};

/// Why a fault spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("fault setting {0:?} is not key=value")]
    NotKeyValue(String),
    #[error(
        "unknown fault setting {0:?}: use fraction, seed, verbs, resources, faults, hang-timeout"
    )]
    UnknownKey(String),
    #[error("fault setting {0} is given twice")]
    Repeated(String),
    #[error("fault setting fraction is required (a number from 0 to 1)")]
    MissingFraction,
    #[error("fraction {0:?} must be a number from 0 to 1")]
    Fraction(String),
    #[error("seed {0:?} must be a whole number")]
    Seed(String),
    #[error(
        "unknown verb {0:?}: use get, list, watch, create, update, patch, delete, deletecollection"
    )]
    Verb(String),
    #[error("resource {0:?} must be a lowercase plural, optionally with /subresource")]
    Resource(String),
    #[error(
        "unknown fault {0:?}: use 409, 500-599, 429[:Ns], fail-after, hang, hang-after, latency[:D], cut-watch[:D], expire-watch"
    )]
    Kind(String),
    #[error("duration {0:?} must be a number with ms, s or m (250ms, 1.5s, 2m)")]
    Duration(String),
}

const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// `250ms`, `1.5s`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, SpecError> {
    let bad = || SpecError::Duration(text.to_string());
    let (number, unit) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        return Err(bad());
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(value * unit)
        .ok()
        .filter(|d| *d <= Duration::from_secs(24 * 3600))
        .ok_or_else(bad)
}

/// The shortest of `ms` or `s` that says `d` exactly (milliseconds are the finest grain).
fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn parse_kind(word: &str) -> Result<FaultKind, SpecError> {
    let (name, param) = match word.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (word, None),
    };
    let duration = |default: Duration| param.map_or(Ok(default), parse_duration);
    let kind = match name {
        "429" => {
            let d = duration(Duration::from_secs(1))?;
            if d.subsec_nanos() != 0 || d.as_secs() == 0 {
                return Err(SpecError::Kind(word.into()));
            }
            FaultKind::Throttle(
                u32::try_from(d.as_secs()).map_err(|_| SpecError::Kind(word.into()))?,
            )
        }
        "fail-after" | "hang" | "hang-after" | "expire-watch" if param.is_some() => {
            return Err(SpecError::Kind(word.into()));
        }
        "fail-after" => FaultKind::FailAfter,
        "hang" => FaultKind::Hang,
        "hang-after" => FaultKind::HangAfter,
        "expire-watch" => FaultKind::ExpireWatch,
        "latency" => FaultKind::Latency(duration(Duration::from_millis(200))?),
        "cut-watch" => FaultKind::CutWatch(duration(Duration::from_secs(1))?),
        code if param.is_none() => match code.parse::<u16>() {
            Ok(c) if c == 409 || (500..=599).contains(&c) => FaultKind::Status(c),
            _ => return Err(SpecError::Kind(word.into())),
        },
        _ => return Err(SpecError::Kind(word.into())),
    };
    Ok(kind)
}

fn show_kind(kind: &FaultKind) -> String {
    match kind {
        FaultKind::Throttle(secs) => format!("429:{secs}s"),
        FaultKind::Latency(d) => format!("latency:{}", show_duration(*d)),
        FaultKind::CutWatch(d) => format!("cut-watch:{}", show_duration(*d)),
        other => other.label(),
    }
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

impl std::str::FromStr for RandomFaults {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let mut config = RandomFaults::new(0.0, 0);
        let mut given: Vec<&str> = Vec::new();
        for setting in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| SpecError::NotKeyValue(setting.into()))?;
            let (key, value) = (key.trim(), value.trim());
            if given.contains(&key) {
                return Err(SpecError::Repeated(key.into()));
            }
            let list = || value.split('|').map(str::trim).filter(|w| !w.is_empty());
            match key {
                "fraction" => {
                    config.fraction = value
                        .parse::<f64>()
                        .ok()
                        .filter(|f| (0.0..=1.0).contains(f))
                        .ok_or_else(|| SpecError::Fraction(value.into()))?;
                }
                "seed" => {
                    config.seed = value.parse().map_err(|_| SpecError::Seed(value.into()))?;
                }
                "verbs" => {
                    config.verbs = list()
                        .map(|v| {
                            VERBS
                                .contains(&v)
                                .then(|| v.to_string())
                                .ok_or_else(|| SpecError::Verb(v.into()))
                        })
                        .collect::<Result<_, _>>()?;
                }
                "resources" => {
                    config.resources = list()
                        .map(|r| {
                            let ok = r.split('/').count() <= 2
                                && r.split('/').all(|part| {
                                    !part.is_empty()
                                        && part.bytes().all(|b| {
                                            b.is_ascii_lowercase()
                                                || b == b'-'
                                                || b.is_ascii_digit()
                                        })
                                });
                            ok.then(|| r.to_string())
                                .ok_or_else(|| SpecError::Resource(r.into()))
                        })
                        .collect::<Result<_, _>>()?;
                }
                "faults" => {
                    config.kinds = list().map(parse_kind).collect::<Result<_, _>>()?;
                    if config.kinds.is_empty() {
                        config.kinds = all_kinds();
                    }
                }
                "hang-timeout" => config.hang_timeout = Some(parse_duration(value)?),
                other => return Err(SpecError::UnknownKey(other.into())),
            }
            given.push(key);
        }
        if !given.contains(&"fraction") {
            return Err(SpecError::MissingFraction);
        }
        if !given.contains(&"seed") {
            config.seed = seed_from_clock();
        }
        Ok(config)
    }
}

/// The spec that parses back to the same settings, seed included.
impl fmt::Display for RandomFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fraction={},seed={}", self.fraction, self.seed)?;
        if !self.verbs.is_empty() {
            write!(f, ",verbs={}", self.verbs.join("|"))?;
        }
        if !self.resources.is_empty() {
            write!(f, ",resources={}", self.resources.join("|"))?;
        }
        let kinds: Vec<String> = self.kinds.iter().map(show_kind).collect();
        write!(f, ",faults={}", kinds.join("|"))?;
        if let Some(d) = self.hang_timeout {
            write!(f, ",hang-timeout={}", show_duration(d))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_spec_parses_and_prints_back() {
        let spec = "fraction=0.1,seed=42,verbs=create|patch|update,resources=secrets|apikeys/status,faults=500|429:2s|409|fail-after|hang|hang-after|latency:250ms|cut-watch:1.5s|expire-watch,hang-timeout=1m";
        let config: RandomFaults = spec.parse().expect("parses");
        assert_eq!(config.fraction, 0.1);
        assert_eq!(config.seed, 42);
        assert_eq!(config.verbs, ["create", "patch", "update"]);
        assert_eq!(config.resources, ["secrets", "apikeys/status"]);
        assert_eq!(
            config.kinds,
            [
                FaultKind::Status(500),
                FaultKind::Throttle(2),
                FaultKind::Status(409),
                FaultKind::FailAfter,
                FaultKind::Hang,
                FaultKind::HangAfter,
                FaultKind::Latency(Duration::from_millis(250)),
                FaultKind::CutWatch(Duration::from_millis(1500)),
                FaultKind::ExpireWatch,
            ]
        );
        assert_eq!(config.hang_timeout, Some(Duration::from_secs(60)));
        let printed = config.to_string();
        assert_eq!(printed.parse::<RandomFaults>().expect("reparses"), config);
    }

    #[test]
    fn defaults_cover_everything_and_print_the_seed() {
        let config: RandomFaults = "fraction=0.5".parse().expect("parses");
        assert!(config.verbs.is_empty() && config.resources.is_empty());
        assert_eq!(config.kinds, all_kinds());
        assert_eq!(config.hang_timeout, None);
        assert!(
            config
                .to_string()
                .contains(&format!("seed={}", config.seed))
        );
        assert_eq!(config.to_string().parse::<RandomFaults>(), Ok(config));
    }

    #[test]
    fn mistakes_are_refused_with_what_to_write() {
        for (spec, error) in [
            ("seed=1", SpecError::MissingFraction),
            ("fraction=2", SpecError::Fraction("2".into())),
            ("fraction=0.1,seed=x", SpecError::Seed("x".into())),
            ("fraction=0.1,verbs=post", SpecError::Verb("post".into())),
            (
                "fraction=0.1,resources=Secrets",
                SpecError::Resource("Secrets".into()),
            ),
            ("fraction=0.1,faults=404", SpecError::Kind("404".into())),
            (
                "fraction=0.1,faults=hang:1s",
                SpecError::Kind("hang:1s".into()),
            ),
            (
                "fraction=0.1,faults=429:500ms",
                SpecError::Kind("429:500ms".into()),
            ),
            (
                "fraction=0.1,faults=latency:fast",
                SpecError::Duration("fast".into()),
            ),
            (
                "fraction=0.1,kinds=secrets",
                SpecError::UnknownKey("kinds".into()),
            ),
            (
                "fraction=0.1,fraction=0.2",
                SpecError::Repeated("fraction".into()),
            ),
            ("fraction", SpecError::NotKeyValue("fraction".into())),
        ] {
            assert_eq!(spec.parse::<RandomFaults>(), Err(error), "{spec}");
        }
    }
}
