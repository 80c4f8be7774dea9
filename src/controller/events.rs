//! Kubernetes Events for what keyward did, as `kubectl describe` shows them. A failure to
//! record one is logged, never a reconcile failure. Notes never carry a key (previews and
//! fingerprints only).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use super::Context;

/// One Event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub action: &'static str,
    pub message: String,
}

impl Note {
    pub fn normal(reason: &'static str, action: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason,
            action,
            message: message.into(),
        }
    }

    pub fn warning(reason: &'static str, action: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: true,
            ..Self::normal(reason, action, message)
        }
    }
}

impl Context {
    /// Records `note` about the object `about`.
    pub async fn publish(&self, about: &ObjectReference, note: Note) {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(note.message),
            action: note.action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, about).await {
            tracing::warn!(object = ?about.name, reason = %event.reason, error = %e, "recording an Event failed");
        }
    }
}
