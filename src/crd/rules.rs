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

/// A 5-field cron expression; the operator parses it fully and reports what is wrong.
pub fn cron_shape() -> Value {
    json!([{
        "rule": "self.matches('^ *[^ ]+( +[^ ]+){4} *$')",
        "message": "schedule must be a 5-field cron expression: minute hour day-of-month month day-of-week, e.g. '0 3 * * 1'",
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
