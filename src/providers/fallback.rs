//! The fallback lists (DESIGN §7, seed 004's pipeline): per namespace with
//! ProviderCredentials, the ConfigMap `keyward-providers` has one data key per capability,
//! a JSON array of the usable credentials in the order to try them — `Valid` ones by
//! `priority` (lower first, ties by name), rate-limited ones after them; `Unreachable`,
//! `Invalid` and `NotConfigured` ones left out; an empty array when none is usable. It names
//! Secrets, never keys.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::crd::Phase;

/// The ConfigMap's name.
pub const CONFIGMAP: &str = "keyward-providers";

/// One credential as the lists need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub provider: String,
    pub secret_name: String,
    pub secret_key: String,
    /// RFC 3339.
    pub last_validated_at: Option<String>,
    pub priority: i32,
    pub capabilities: Vec<String>,
    pub phase: Option<Phase>,
    /// `Valid` but rate limited: usable, tried last.
    pub rate_limited: bool,
}

/// One entry of a list, as it appears in the ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry<'a> {
    pub name: &'a str,
    pub provider: &'a str,
    pub secret_name: &'a str,
    pub secret_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_validated_at: Option<&'a str>,
}

/// The ConfigMap's data: for every capability any candidate offers, the usable ones in
/// order, as a JSON array.
pub fn lists(candidates: &[Candidate]) -> BTreeMap<String, String> {
    let mut usable: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.phase == Some(Phase::Valid))
        .collect();
    usable.sort_by(|a, b| {
        (a.rate_limited, a.priority, &a.name).cmp(&(b.rate_limited, b.priority, &b.name))
    });
    let mut data = BTreeMap::new();
    for capability in candidates.iter().flat_map(|c| c.capabilities.iter()) {
        if data.contains_key(capability) {
            continue;
        }
        let entries: Vec<Entry<'_>> = usable
            .iter()
            .filter(|c| c.capabilities.contains(capability))
            .map(|c| Entry {
                name: &c.name,
                provider: &c.provider,
                secret_name: &c.secret_name,
                secret_key: &c.secret_key,
                last_validated_at: c.last_validated_at.as_deref(),
            })
            .collect();
        let json = serde_json::to_string(&entries).unwrap_or_else(|_| "[]".to_string());
        data.insert(capability.clone(), json);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(
        name: &str,
        priority: i32,
        caps: &[&str],
        phase: Phase,
        rate_limited: bool,
    ) -> Candidate {
        Candidate {
            name: name.into(),
            provider: "openai".into(),
            secret_name: format!("{name}-secret"),
            secret_key: "api-key".into(),
            last_validated_at: Some("2026-11-30T10:00:00Z".into()),
            priority,
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            phase: Some(phase),
            rate_limited,
        }
    }

    fn names(json: &str) -> Vec<String> {
        let v: Vec<serde_json::Value> = serde_json::from_str(json).expect("array");
        v.iter()
            .map(|e| e["name"].as_str().expect("name").to_string())
            .collect()
    }

    #[test]
    fn valid_first_by_priority_then_rate_limited_and_the_rest_left_out() {
        let data = lists(&[
            cand("b", 10, &["chat"], Phase::Valid, false),
            cand("a", 10, &["chat", "images"], Phase::Valid, false),
            cand("first", 1, &["chat"], Phase::Valid, true),
            cand("zero", 0, &["chat"], Phase::Valid, false),
            cand("down", 0, &["chat"], Phase::Unreachable, false),
            cand("bad", 0, &["chat", "video"], Phase::Invalid, false),
            cand("unset", 0, &["chat"], Phase::NotConfigured, false),
        ]);
        assert_eq!(names(&data["chat"]), ["zero", "a", "b", "first"]);
        assert_eq!(names(&data["images"]), ["a"]);
        // A capability only unusable credentials offer: an empty list, not a missing key.
        assert_eq!(data["video"], "[]");
        assert_eq!(data.len(), 3);
    }

    #[test]
    fn entries_name_secrets_never_keys() {
        let data = lists(&[cand("a", 1, &["chat"], Phase::Valid, false)]);
        assert_eq!(
            data["chat"],
            r#"[{"name":"a","provider":"openai","secretName":"a-secret","secretKey":"api-key","lastValidatedAt":"2026-11-30T10:00:00Z"}]"#
        );
    }
}
