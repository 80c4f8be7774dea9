//! The key history (DESIGN §4): a bounded, key-free JSON list in the workload Secret's
//! `keyward.dev/history` annotation, oldest first.

use jiff::Timestamp;
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

/// Why it happened. Serialized as its name; a reason this version does not know (written
/// by a newer keyward) is kept as it was, so the history is never lost to an upgrade.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(from = "String", into = "String")]
pub enum Reason {
    /// The first key of an ApiKey.
    Created,
    /// A scheduled rotation.
    Schedule,
    /// A person asked (annotation, `keyward rotate`, `disabled`).
    Manual,
    /// `spec.format` changed.
    FormatChanged,
    /// The workload Secret was deleted.
    SecretLost,
    /// The workload Secret no longer held the issued key.
    SecretTampered,
    /// A key retained by `deletionPolicy: Retain` was taken over.
    Adopted,
    /// The importFrom Secret now holds another key.
    SourceChanged,
    /// The imported key was delivered again to a workload Secret that lost it.
    Redelivered,
    /// The key reached its expiry.
    Expired,
    Other(String),
}

impl Reason {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Created => "Created",
            Self::Schedule => "Schedule",
            Self::Manual => "Manual",
            Self::FormatChanged => "FormatChanged",
            Self::SecretLost => "SecretLost",
            Self::SecretTampered => "SecretTampered",
            Self::Adopted => "Adopted",
            Self::SourceChanged => "SourceChanged",
            Self::Redelivered => "Redelivered",
            Self::Expired => "Expired",
            Self::Other(s) => s,
        }
    }
}

impl From<String> for Reason {
    fn from(s: String) -> Self {
        match s.as_str() {
            "Created" => Self::Created,
            "Schedule" => Self::Schedule,
            "Manual" => Self::Manual,
            "FormatChanged" => Self::FormatChanged,
            "SecretLost" => Self::SecretLost,
            "SecretTampered" => Self::SecretTampered,
            "Adopted" => Self::Adopted,
            "SourceChanged" => Self::SourceChanged,
            "Redelivered" => Self::Redelivered,
            "Expired" => Self::Expired,
            _ => Self::Other(s),
        }
    }
}

impl From<Reason> for String {
    fn from(r: Reason) -> Self {
        r.as_str().to_string()
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One history entry. Never a plain key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// When, to the millisecond (RFC 3339).
    pub at: Timestamp,
    pub action: Action,
    pub reason: Reason,
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
            at: format!("2026-01-01T00:00:{n:02}Z").parse().expect("ts"),
            action: Action::Rotated,
            reason: Reason::Manual,
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
    fn the_annotation_keeps_its_public_shape() {
        let entry = Entry {
            at: "2026-03-29T01:00:00.123Z".parse().expect("ts"),
            action: Action::Rotated,
            reason: Reason::FormatChanged,
            fingerprint: "0123456789abcdef".into(),
            preview: "kw_abcdefgh…".into(),
            previous_fingerprint: Some("fedcba9876543210".into()),
        };
        assert_eq!(
            render(std::slice::from_ref(&entry)),
            r#"[{"at":"2026-03-29T01:00:00.123Z","action":"Rotated","reason":"FormatChanged","fingerprint":"0123456789abcdef","preview":"kw_abcdefgh…","previousFingerprint":"fedcba9876543210"}]"#
        );
        let newer = r#"[{"at":"2026-03-29T01:00:00Z","action":"Generated","reason":"SomethingNew","fingerprint":"f","preview":"p"}]"#;
        let read = parse(Some(newer));
        assert_eq!(read[0].reason, Reason::Other("SomethingNew".into()));
        assert_eq!(render(&read), newer, "unknown reasons survive a round trip");
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
