//! What a provider's answer says about the key (DESIGN §7): 2xx (or the check's success
//! statuses) `Valid`; 401/403 `Invalid`; 402 or a documented out-of-credit answer, whatever
//! its status, `Invalid`/`QuotaExhausted`; other 429s `Valid`/`RateLimited` (next check no
//! sooner than `Retry-After`); 3xx never followed and 5xx, timeouts and connection failures
//! `Unreachable`, as is any other status (`UnexpectedStatus`). Transient failures never
//! make a key `Invalid`.

use std::time::Duration;

use crate::conditions::Reason;
use crate::crd::Phase;
use crate::keys::PlainKey;

use super::table::Check;
use super::text;

/// The outcome of one validation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub phase: Phase,
    pub reason: Reason,
    /// The answer's status, when there was an answer.
    pub http_status: Option<u16>,
    /// For people: the provider's error code and text (scrubbed of the key), or what failed.
    pub message: String,
    /// The provider asked for no check before this long (`Retry-After` on a 429).
    pub retry_after: Option<Duration>,
}

/// One HTTP answer as far as classification needs it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<&'a str>,
    /// The `Location` header's host, for redirects.
    pub location_host: Option<&'a str>,
    /// The body, read up to 64 KiB.
    pub body: &'a [u8],
}

/// The error codes and types a JSON error body names (`error.code`, `error.type`,
/// `error.details.error_code`, `code`, `type`), for matching documented out-of-credit
/// answers.
fn error_codes(body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let mut codes = Vec::new();
    let details = v.get("error").and_then(|e| e.get("details"));
    for scope in [v.get("error"), Some(&v), details].into_iter().flatten() {
        for field in ["code", "type", "error_code"] {
            if let Some(s) = scope.get(field).and_then(|x| x.as_str()) {
                codes.push(s.to_string());
            }
        }
    }
    codes
}

/// `Retry-After` as seconds (the HTTP-date form counts from `now`, in Unix seconds).
pub fn retry_after(value: &str, now_unix: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(value)
        .ok()?
        .timestamp()
        .as_second();
    Some(Duration::from_secs(
        at.saturating_sub(now_unix).max(0) as u64
    ))
}

/// Classifies one answer to `check`.
pub fn classify(check: &Check, answer: Answer<'_>, key: &PlainKey, now_unix: i64) -> Verdict {
    let status = answer.status;
    let said = || text::message(answer.body, key);
    let verdict = |phase, reason, message: String| Verdict {
        phase,
        reason,
        http_status: Some(status),
        message,
        retry_after: None,
    };
    let codes = error_codes(answer.body);
    let out_of_credit = status == 402
        || check
            .quota_codes
            .iter()
            .any(|q| codes.iter().any(|c| c == q));
    if check.succeeded(status) {
        return verdict(Phase::Valid, Reason::Validated, String::new());
    }
    if out_of_credit {
        return verdict(Phase::Invalid, Reason::QuotaExhausted, said());
    }
    match status {
        401 | 403 => verdict(Phase::Invalid, Reason::InvalidKey, said()),
        429 => Verdict {
            retry_after: answer.retry_after.and_then(|v| retry_after(v, now_unix)),
            ..verdict(Phase::Valid, Reason::RateLimited, said())
        },
        300..=399 => verdict(
            Phase::Unreachable,
            Reason::Redirected,
            format!(
                "redirected to {}; keyward never follows redirects",
                answer.location_host.unwrap_or("another location")
            ),
        ),
        500..=599 => verdict(Phase::Unreachable, Reason::ProviderError, said()),
        _ => verdict(Phase::Unreachable, Reason::UnexpectedStatus, said()),
    }
}

/// The verdict when no answer came: `Unreachable`, saying why.
pub fn no_answer(timed_out: bool, what: String) -> Verdict {
    Verdict {
        phase: Phase::Unreachable,
        reason: if timed_out {
            Reason::Timeout
        } else {
            Reason::ConnectionFailed
        },
        http_status: None,
        message: what,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Provider;

    fn answer(status: u16, body: &str) -> Answer<'_> {
        Answer {
            status,
            retry_after: None,
            location_host: None,
            body: body.as_bytes(),
        }
    }

    fn openai() -> Check {
        super::super::table::row(Provider::Openai)
            .and_then(|r| r.check)
            .expect("openai has a check")
    }

    #[test]
    fn statuses_map_to_phases_and_transient_failures_never_invalidate() {
        let key = PlainKey::new("sk-test-0123456789abcdefghij");
        let c = openai();
        let cases = [
            (200, "{}", Phase::Valid, Reason::Validated),
            (401, "{}", Phase::Invalid, Reason::InvalidKey),
            (403, "{}", Phase::Invalid, Reason::InvalidKey),
            (402, "{}", Phase::Invalid, Reason::QuotaExhausted),
            (
                429,
                r#"{"error":{"type":"insufficient_quota","code":"insufficient_quota","message":"You exceeded your current quota"}}"#,
                Phase::Invalid,
                Reason::QuotaExhausted,
            ),
            (
                429,
                r#"{"error":{"message":"Rate limit reached","type":"requests"}}"#,
                Phase::Valid,
                Reason::RateLimited,
            ),
            (500, "oops", Phase::Unreachable, Reason::ProviderError),
            (503, "", Phase::Unreachable, Reason::ProviderError),
            (302, "", Phase::Unreachable, Reason::Redirected),
            (404, "", Phase::Unreachable, Reason::UnexpectedStatus),
            (400, "", Phase::Unreachable, Reason::UnexpectedStatus),
        ];
        for (status, body, phase, why) in cases {
            let v = classify(&c, answer(status, body), &key, 0);
            assert_eq!((v.phase, v.reason), (phase, why), "{status} {body}");
            assert_eq!(v.http_status, Some(status));
        }
    }

    #[test]
    fn retry_after_is_honoured_in_both_forms() {
        let key = PlainKey::new("sk-test-0123456789abcdefghij");
        let mut a = answer(429, "{}");
        a.retry_after = Some("30");
        assert_eq!(
            classify(&openai(), a, &key, 0).retry_after,
            Some(Duration::from_secs(30))
        );
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_700),
            Some(Duration::from_secs(77))
        );
        assert_eq!(retry_after("soon", 0), None);
    }

    #[test]
    fn redirects_name_the_host_and_messages_never_carry_the_key() {
        let key = PlainKey::new("sk-test-0123456789abcdefghij");
        let mut a = answer(301, "");
        a.location_host = Some("login.example");
        let v = classify(&openai(), a, &key, 0);
        assert_eq!(
            v.message,
            "redirected to login.example; keyward never follows redirects"
        );
        let echo = format!(r#"{{"error":{{"message":"bad key {}"}}}}"#, key.expose());
        let v = classify(&openai(), answer(401, &echo), &key, 0);
        assert!(!v.message.contains("0123456789"), "{}", v.message);
    }
}
