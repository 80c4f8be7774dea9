//! The Webhook generator (DESIGN §5): an HTTP endpoint that mints a key elsewhere. Its
//! host must be allowed; at most `--webhook-concurrency` calls are in flight in the
//! process; redirects are never followed; the answer is read up to 64 KiB and the key in it
//! checked before anything is stored. Every failure names what was wrong, never a key or a
//! header value.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::controller::Context;
use crate::crd::{WebhookGenerator, WebhookMethod};
use crate::keys::PlainKey;

/// Largest answer read from a webhook.
pub const MAX_ANSWER: usize = 64 * 1024;
/// Longest key accepted from a webhook.
pub const MAX_KEY: usize = 1024;

/// Why the webhook gave no usable key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeneratorError {
    #[error("{0}")]
    HostNotAllowed(String),
    #[error("headersFrom: Secret {0:?} not found")]
    HeadersSecretMissing(String),
    #[error("headersFrom: data key {0:?} of Secret {1:?} is not a valid header name or value")]
    BadHeader(String, String),
    #[error("spec.generator.webhook.timeout {0:?} is not a duration")]
    BadTimeout(String),
    #[error("calling the webhook: {0}")]
    Request(String),
    #[error("the webhook answered {0}")]
    Status(u16),
    #[error("the webhook redirected to {0}; keyward never follows redirects")]
    Redirected(String),
    #[error("the webhook's answer is larger than 64 KiB")]
    TooLarge,
    #[error("the webhook's answer is not JSON: {0}")]
    NotJson(String),
    #[error("the webhook's answer has nothing at keyJsonPointer {0:?}")]
    NoKeyAt(String),
    #[error("the value at keyJsonPointer {0:?} is not a string")]
    NotString(String),
    #[error("the webhook returned an empty key")]
    Empty,
    #[error("the webhook returned a key longer than 1024 characters")]
    TooLong,
    #[error("the webhook returned a key with control characters")]
    ControlCharacters,
    #[error(
        "the webhook returned a key the pool already holds (two Secrets with one key would break exactly-once)"
    )]
    Duplicate,
}

impl GeneratorError {
    /// Whether this is the operator's allowlist refusing the host (its own condition reason).
    pub fn host_not_allowed(&self) -> bool {
        matches!(self, Self::HostNotAllowed(_))
    }
}

/// The request headers from `headersFrom`: each data key of the Secret becomes a header.
pub fn headers(
    secret_name: &str,
    data: &std::collections::BTreeMap<String, k8s_openapi::ByteString>,
) -> Result<HeaderMap, GeneratorError> {
    let mut headers = HeaderMap::new();
    for (k, v) in data {
        let bad = || GeneratorError::BadHeader(k.clone(), secret_name.to_string());
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad())?;
        let text = std::str::from_utf8(&v.0).map_err(|_| bad())?;
        let mut value =
            HeaderValue::from_str(text.trim_end_matches(['\r', '\n'])).map_err(|_| bad())?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}

/// Checks a key a webhook returned.
pub fn check_key(text: &str) -> Result<PlainKey, GeneratorError> {
    let key = text.trim_matches(|c: char| c == ' ' || c == '\n' || c == '\r' || c == '\t');
    if key.is_empty() {
        return Err(GeneratorError::Empty);
    }
    if key.chars().count() > MAX_KEY {
        return Err(GeneratorError::TooLong);
    }
    if key.chars().any(char::is_control) {
        return Err(GeneratorError::ControlCharacters);
    }
    Ok(PlainKey::new(key))
}

/// The key in a webhook's answer: the value at `pointer` of a JSON answer, or the whole
/// answer when no pointer is set.
pub fn key_in(body: &[u8], pointer: Option<&str>) -> Result<PlainKey, GeneratorError> {
    match pointer.filter(|p| !p.is_empty()) {
        None => check_key(&String::from_utf8_lossy(body)),
        Some(pointer) => {
            let value: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| GeneratorError::NotJson(e.to_string()))?;
            let found = value
                .pointer(pointer)
                .ok_or_else(|| GeneratorError::NoKeyAt(pointer.to_string()))?;
            let text = found
                .as_str()
                .ok_or_else(|| GeneratorError::NotString(pointer.to_string()))?;
            check_key(text)
        }
    }
}

/// Calls the webhook once (within the process's concurrency limit) and returns its key.
pub async fn mint(
    ctx: &Context,
    webhook: &WebhookGenerator,
    headers: HeaderMap,
) -> Result<PlainKey, GeneratorError> {
    let url = ctx
        .allowlist
        .check(&webhook.url, &[])
        .map_err(|e| GeneratorError::HostNotAllowed(e.to_string()))?;
    let timeout: Duration = crate::duration::parse(&webhook.timeout)
        .map_err(|_| GeneratorError::BadTimeout(webhook.timeout.clone()))?;
    let _slot = ctx
        .webhooks
        .acquire()
        .await
        .map_err(|_| GeneratorError::Request("shutting down".into()))?;
    let method = match webhook.method {
        WebhookMethod::GET => reqwest::Method::GET,
        WebhookMethod::POST => reqwest::Method::POST,
        WebhookMethod::PUT => reqwest::Method::PUT,
    };
    let mut request = ctx
        .http
        .request(method, url)
        .headers(headers)
        .timeout(timeout);
    if let Some(body) = &webhook.body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| GeneratorError::Request(crate::outbound::describe(&e)))?;
    let status = response.status();
    if status.is_redirection() {
        let to = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| url::Url::parse(l).ok())
            .and_then(|u| u.host_str().map(String::from))
            .unwrap_or_else(|| "another location".into());
        return Err(GeneratorError::Redirected(to));
    }
    if !status.is_success() {
        return Err(GeneratorError::Status(status.as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| GeneratorError::Request(crate::outbound::describe(&e)))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(GeneratorError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    key_in(&body, webhook.key_json_pointer.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked_and_each_refusal_says_why() {
        let ok = key_in(
            br#"{"data":{"key":"sk-remote-0123456789"}}"#,
            Some("/data/key"),
        )
        .expect("a key");
        assert_eq!(ok.expose(), "sk-remote-0123456789");
        assert_eq!(
            key_in(b"  raw-key-value\n", None)
                .expect("whole body")
                .expose(),
            "raw-key-value"
        );
        let cases: Vec<(&[u8], Option<&str>, GeneratorError)> = vec![
            (
                b"<html>",
                Some("/k"),
                GeneratorError::NotJson(String::new()),
            ),
            (
                br#"{"other":1}"#,
                Some("/k"),
                GeneratorError::NoKeyAt("/k".into()),
            ),
            (
                br#"{"k":42}"#,
                Some("/k"),
                GeneratorError::NotString("/k".into()),
            ),
            (br#"{"k":""}"#, Some("/k"), GeneratorError::Empty),
            (
                br#"{"k":"a\u0007b"}"#,
                Some("/k"),
                GeneratorError::ControlCharacters,
            ),
        ];
        for (body, pointer, want) in cases {
            let got = key_in(body, pointer).expect_err("refused");
            match (&got, &want) {
                (GeneratorError::NotJson(_), GeneratorError::NotJson(_)) => {}
                _ => assert_eq!(got, want),
            }
        }
        let long = format!(r#"{{"k":"{}"}}"#, "x".repeat(1025));
        assert_eq!(
            key_in(long.as_bytes(), Some("/k")).expect_err("too long"),
            GeneratorError::TooLong
        );
    }

    #[test]
    fn header_values_are_sensitive_and_never_in_errors() {
        let data = [(
            "Authorization".to_string(),
            k8s_openapi::ByteString(b"Bearer s3cret\n".to_vec()),
        )]
        .into();
        let h = headers("keygen-auth", &data).expect("headers");
        assert!(h["authorization"].is_sensitive());
        assert_eq!(h["authorization"], "Bearer s3cret");
        let bad = [(
            "Bad Header".to_string(),
            k8s_openapi::ByteString(b"s3cret".to_vec()),
        )]
        .into();
        let err = headers("keygen-auth", &bad)
            .expect_err("bad name")
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
