//! The key history (DESIGN §4): a bounded, key-free JSON list in the workload Secret's
//! `keyward.dev/history` annotation, oldest first.

use serde::{Deserialize, Serialize};

/// What happened to the key.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Generated,
    Imported,
    Rotated,
    Revoked,
    Disabled,
    Enabled,
    Expired,
}

/// One history entry. Never a plain key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// RFC 3339.
    pub at: String,
    pub action: Action,
    /// `Created`, `Schedule`, `Manual`, `FormatChanged`, `SecretLost`, `SecretTampered`, …
    pub reason: String,
    pub fingerprint: String,
    pub preview: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_fingerprint: Option<String>,
}

/// Default number of entries kept when no rotation block says otherwise.
pub const DEFAULT_LIMIT: usize = 10;

/// Appends `entry`, keeping the newest `limit`.
pub fn append(mut history: Vec<Entry>, entry: Entry, limit: usize) -> Vec<Entry> {
    history.push(entry);
    let excess = history.len().saturating_sub(limit.max(1));
    history.drain(..excess);
    history
}

/// Parses the annotation; a damaged annotation reads as empty rather than failing the key.
pub fn parse(annotation: Option<&str>) -> Vec<Entry> {
    annotation
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default()
}

/// The annotation value.
pub fn render(history: &[Entry]) -> String {
    serde_json::to_string(history).expect("history always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> Entry {
        Entry {
            at: format!("2026-01-01T00:00:{n:02}Z"),
            action: Action::Rotated,
            reason: "Manual".into(),
            fingerprint: format!("{n:016x}"),
            preview: "kw_abc…".into(),
            previous_fingerprint: None,
        }
    }

    #[test]
    fn keeps_the_newest_entries() {
        let mut h = Vec::new();
        for n in 0..15 {
            h = append(h, entry(n), 10);
        }
        assert_eq!(h.len(), 10);
        assert_eq!(h[0], entry(5));
        assert_eq!(h[9], entry(14));
    }

    #[test]
    fn annotation_round_trip() {
        let h = vec![entry(1)];
        let text = render(&h);
        assert!(text.contains("\"action\":\"Rotated\""));
        assert!(!text.contains("previousFingerprint"));
        assert_eq!(parse(Some(&text)), h);
        assert!(parse(Some("not json")).is_empty());
        assert!(parse(None).is_empty());
    }
}
