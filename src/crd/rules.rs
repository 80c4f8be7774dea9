//! CEL rules (`x-kubernetes-validations`) shared by the three kinds, so the same invariant
//! is written once and refused at admission with the same message everywhere.

use serde_json::{Value, json};

/// Go's duration grammar without a sign and with ASCII units only (Go also reads `µs`, some
/// CEL implementations do not): a subset every implementation reads alike. Matching first
/// keeps `duration()` from raising an evaluation error on garbage.
const DURATION_RE: &str = "^(0|(([0-9]+([.][0-9]*)?|[.][0-9]+)(ns|us|ms|s|m|h))+)$";

/// Go's largest duration, rounded down to whole hours: beyond it Go's parser overflows, so the
/// bound keeps CEL implementations that do not overflow from admitting what Go refuses.
const MAX_DURATION: &str = "2562047h";

fn duration_rule(comparison: &str, bound: &str, what: &str) -> Value {
    json!([{
        "rule": format!("self.matches('{DURATION_RE}') && duration(self) {comparison} duration('{bound}') && duration(self) <= duration('{MAX_DURATION}')"),
        "message": format!("must be a Go duration such as 90s, 15m or 1h30m (no sign), {what}"),
    }])
}

/// A duration that must be longer than zero (intervals, TTLs, timeouts).
pub fn positive_duration() -> Value {
    duration_rule(">", "0s", "longer than 0s")
}

/// A duration that may be zero (a grace period of 0 revokes at once).
pub fn non_negative_duration() -> Value {
    duration_rule(">=", "0s", "0s or longer")
}

/// `validation.interval`: providers rate-limit, so no faster than once a minute.
pub fn interval_at_least_a_minute() -> Value {
    duration_rule(">=", "1m", "at least 1m")
}

/// Key prefix: the characters a verifier can split on and a secret scanner can match.
pub fn prefix() -> Value {
    json!([{
        "rule": "self.matches('^[A-Za-z0-9_-]*$')",
        "message": "prefix may only contain letters, digits, '_' and '-' (at most 16 characters)",
    }])
}

/// §2: the body beyond the public 8-character lookup id must carry at least 128 bits.
/// (length − 8) × log2(alphabet) ≥ 128: base62 (5.95 bits) and base64url (6 bits) need
/// length ≥ 30, hex (4 bits) needs length ≥ 40.
pub fn key_entropy() -> Value {
    json!([{
        "rule": "(has(self.alphabet) && self.alphabet == 'hex') ? (!has(self.length) || self.length >= 40) : (!has(self.length) || self.length >= 30)",
        "messageExpression": "'length ' + string(self.length) + ' leaves fewer than 128 random bits after the 8-character public lookup id; ' + ((has(self.alphabet) && self.alphabet == 'hex') ? 'hex needs length >= 40' : (has(self.alphabet) ? self.alphabet : 'base62') + ' needs length >= 30')",
        "reason": "FieldValueInvalid",
        "fieldPath": ".length",
    }])
}

/// A DNS-1123 subdomain (Secret names).
pub fn dns_subdomain() -> Value {
    json!([{
        "rule": "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
        "message": "must be a valid Kubernetes object name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
    }])
}

/// A key of a Secret's `data` map.
pub fn secret_data_key() -> Value {
    json!([{
        "rule": "self.matches('^[-._a-zA-Z0-9]+$')",
        "message": "must be a valid Secret data key: letters, digits, '-', '_' and '.'",
    }])
}

/// An http(s) URL.
pub fn http_url() -> Value {
    json!([{
        "rule": "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",
        "message": "must be an absolute http:// or https:// URL with a host",
    }])
}

/// Whitespace between cron fields: the ASCII whitespace the operator's parser splits on
/// (RE2's and Rust's `\s` differ beyond ASCII, so it is spelled out).
const CRON_SPACE: &str = "[ \\t\\n\\f\\r]";
/// Each field's values, leading zeros allowed, bounds as the parser checks them.
const CRON_MINUTE: &str = "0*([0-9]|[1-5][0-9])";
const CRON_HOUR: &str = "0*([0-9]|1[0-9]|2[0-3])";
const CRON_DAY: &str = "0*([1-9]|[12][0-9]|3[01])";
const CRON_MONTH: &str = "(0*([1-9]|1[0-2])|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))";
const CRON_WEEKDAY: &str = "(0*[0-7]|(?i:sun|mon|tue|wed|thu|fri|sat))";
/// A step: 1 to 99.
const CRON_STEP: &str = "0*[1-9][0-9]?";
/// Names as numbers, for comparing the ends of ranges.
const CRON_NAMES: &str = "{'jan': 1, 'feb': 2, 'mar': 3, 'apr': 4, 'may': 5, 'jun': 6, 'jul': 7, 'aug': 8, 'sep': 9, 'oct': 10, 'nov': 11, 'dec': 12, 'sun': 0, 'mon': 1, 'tue': 2, 'wed': 3, 'thu': 4, 'fri': 5, 'sat': 6}";

/// The regular expression of the cron grammar `crate::rotation::cron` parses: five fields,
/// each a list of `*`, `?`, a value or a range `a-b`, optionally with a step `/n`.
pub fn cron_pattern() -> String {
    let list = |value: &str| {
        let item = format!("([*?]|{value}(-{value})?)(/{CRON_STEP})?");
        format!("{item}(,{item})*")
    };
    let fields = [CRON_MINUTE, CRON_HOUR, CRON_DAY, CRON_MONTH, CRON_WEEKDAY]
        .map(list)
        .join(&format!("{CRON_SPACE}+"));
    format!("^{CRON_SPACE}*{fields}{CRON_SPACE}*$")
}

/// A 5-field cron expression, checked at admission exactly as the operator parses it: the
/// grammar and each field's range, then that every range runs from low to high. (Whether
/// the date ever exists, e.g. 30 February, is the operator's to say.)
pub fn cron_schedule() -> Value {
    let pattern = cron_pattern();
    let value =
        |t: &str| format!("({t}.matches('^[0-9]+$') ? int({t}) : {CRON_NAMES}[{t}.lowerAscii()])");
    json!([
        {
            "rule": format!("self.matches('{pattern}')"),
            "message": "schedule must be a 5-field cron expression: minute (0-59) hour (0-23) day-of-month (1-31) month (1-12 or JAN-DEC) day-of-week (0-7 or SUN-SAT), each *, a value, a range a-b or a list a,b, optionally with a step /1-99, e.g. '0 3 * * 1'",
        },
        {
            "rule": format!(
                "!self.matches('{pattern}') || self.findAll('[0-9A-Za-z]+-[0-9A-Za-z]+').all(r, {} <= {})",
                value("r.split('-')[0]"),
                value("r.split('-')[1]"),
            ),
            "message": "schedule ranges run from low to high, e.g. 1-5 or MON-FRI, not 5-1",
        }
    ])
}

/// The shape of an IANA time zone name (`Europe/Berlin`, `Etc/GMT+5`, `UTC`). Whether the
/// zone exists needs zone data CEL lacks: the operator says so in `InvalidSpec`.
pub fn time_zone_shape() -> Value {
    json!([{
        "rule": "self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,3}$')",
        "message": "timeZone must be an IANA time zone name such as Europe/Berlin, America/New_York or UTC",
    }])
}

/// Names end up in label values, which are limited to 63 characters (§1).
pub fn name_fits_label() -> Value {
    json!({
        "rule": "self.metadata.name.size() <= 63",
        "message": "metadata.name must be at most 63 characters: keyward puts it in label values",
        "fieldPath": ".metadata.name",
        "reason": "FieldValueTooLong",
    })
}
