//! Name, label and key syntax the apiserver checks (RFC 1123 names, label keys and values,
//! Secret/ConfigMap data keys), compiled once.

use std::sync::LazyLock;

use regex::Regex;

fn compiled(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex compiles")
}

static SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    compiled(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
});
static LABEL: LazyLock<Regex> = LazyLock::new(|| compiled(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"));
static LABEL_KEY: LazyLock<Regex> = LazyLock::new(|| {
    compiled(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
});
static LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(|| compiled(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"));
static DATA_KEY: LazyLock<Regex> = LazyLock::new(|| compiled(r"^[-._a-zA-Z0-9]+$"));

/// An RFC 1123 subdomain (most object names).
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && SUBDOMAIN.is_match(name)
}

/// An RFC 1123 label (namespace names).
pub fn is_dns_label(name: &str) -> bool {
    name.len() <= 63 && LABEL.is_match(name)
}

/// A label (or annotation) key: optional DNS prefix, then a name part.
pub fn is_label_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 316 && LABEL_KEY.is_match(key)
}

/// A label value: empty, or up to 63 alphanumerics with `-`, `_`, `.` inside.
pub fn is_label_value(value: &str) -> bool {
    value.len() <= 63 && LABEL_VALUE.is_match(value)
}

/// A key of a Secret's or ConfigMap's data.
pub fn is_data_key(key: &str) -> bool {
    DATA_KEY.is_match(key)
}
