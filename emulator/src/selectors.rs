//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`exists) and field selectors
//! (`=`, `==`, `!=` on supported fields), parsed and matched as kube-apiserver does.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelRequirement>);

/// Splits at commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

use crate::names::{is_label_key as valid_key, is_label_value as valid_value};

static SET_OPERATION: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"^(\S+)\s+(in|notin)\s*\((.*)\)$").expect("static regex")
});

impl LabelSelector {
    /// Parses `labelSelector`; the error is the apiserver's 400 message.
    pub fn parse(input: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if input.trim().is_empty() {
            return Ok(Self(reqs));
        }
        let bad = |why: &str| format!("unable to parse requirement: {why}: {input:?}");
        for raw in split_top_level(input) {
            let part = raw.trim();
            if part.is_empty() {
                return Err(bad("found '', expected: identifier"));
            }
            let req = if let Some(caps) = SET_OPERATION.captures(part) {
                let key = caps[1].to_string();
                let values: Vec<String> = caps[3]
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                if !valid_key(&key) || values.iter().any(|v| !valid_value(v)) {
                    return Err(bad("invalid label key or value"));
                }
                if &caps[2] == "in" {
                    LabelRequirement::In(key, values)
                } else {
                    LabelRequirement::NotIn(key, values)
                }
            } else if let Some((k, v)) = part.split_once("!=") {
                LabelRequirement::NotEquals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = part.split_once("==") {
                LabelRequirement::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = part.split_once('=') {
                LabelRequirement::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some(k) = part.strip_prefix('!') {
                LabelRequirement::NotExists(k.trim().to_string())
            } else {
                LabelRequirement::Exists(part.to_string())
            };
            let (key, value) = match &req {
                LabelRequirement::Equals(k, v) | LabelRequirement::NotEquals(k, v) => (k, Some(v)),
                LabelRequirement::Exists(k) | LabelRequirement::NotExists(k) => (k, None),
                LabelRequirement::In(k, _) | LabelRequirement::NotIn(k, _) => (k, None),
            };
            if !valid_key(key) {
                return Err(bad(&format!("invalid label key {key:?}")));
            }
            if let Some(v) = value
                && !valid_value(v)
            {
                return Err(bad(&format!("invalid label value {v:?}")));
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// Whether an object with these labels matches.
    pub fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|req| match req {
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `fieldSelector`, refusing fields the resource does not support, as the
    /// apiserver does (`field label not supported`).
    pub fn parse(input: &str, supported: &dyn Fn(&str) -> bool) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if !supported(field) {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(Self(reqs))
    }

    /// Whether `object` matches: each field's string value compared with the selector's.
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, want)| {
            let mut node = object;
            for part in field.split('.') {
                node = node.get(part).unwrap_or(&Value::Null);
            }
            let got = match node {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (got == *want) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn label_operators() {
        let l = labels(json!({"app": "web", "tier": "front", "keyward.dev/role": "hash"}));
        let m = |s: &str| LabelSelector::parse(s).expect(s).matches(Some(&l));
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, api)"));
        assert!(!m("app notin (web,api)"));
        assert!(m("missing notin (x)"));
        assert!(m("tier"));
        assert!(!m("!tier"));
        assert!(m("!missing"));
        assert!(m("keyward.dev/role=hash,app in (web),!missing"));
        assert!(!m("keyward.dev/role=hash,app=api"));
    }

    #[test]
    fn bad_label_selectors_are_refused() {
        assert!(LabelSelector::parse("app=we b").is_err());
        assert!(LabelSelector::parse("=x").is_err());
        assert!(LabelSelector::parse("a,,b").is_err());
    }

    #[test]
    fn field_selectors() {
        let supported = |f: &str| matches!(f, "metadata.name" | "metadata.namespace" | "type");
        let obj = json!({"metadata": {"name": "a", "namespace": "default"}, "type": "Opaque"});
        let m = |s: &str| FieldSelector::parse(s, &supported).expect(s).matches(&obj);
        assert!(m("metadata.name=a"));
        assert!(m("metadata.name==a,metadata.namespace=default"));
        assert!(!m("metadata.name!=a"));
        assert!(m("type=Opaque"));
        assert_eq!(
            FieldSelector::parse("spec.x=1", &supported),
            Err("field label not supported: spec.x".to_string())
        );
    }
}
