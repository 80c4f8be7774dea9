//! Kubernetes Events for what keyward did, as `kubectl describe` shows them. A failure to
//! record one is logged, never a reconcile failure. Notes never carry a key (previews and
//! fingerprints only).

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

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
    /// Records `note` about the object `about` (an `events.k8s.io/v1` Event). Each note is
    /// its own Event: keyward's notes are about distinct happenings, so there is no series
    /// to aggregate, and nothing is cached per object.
    pub async fn publish(&self, about: &ObjectReference, note: Note) {
        let now = self.clock.now();
        let seq = self
            .events_sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let namespace = about
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}{:04x}",
                    about.name.as_deref().unwrap_or("keyward"),
                    now.as_nanosecond(),
                    seq & 0xffff
                )),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(if note.warning { "Warning" } else { "Normal" }.to_string()),
            reason: Some(note.reason.to_string()),
            action: Some(note.action.to_string()),
            note: Some(note.message),
            regarding: Some(about.clone()),
            reporting_controller: Some("keyward".to_string()),
            reporting_instance: Some(self.config.instance.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(object = ?about.name, reason = %note.reason, error = %e, "recording an Event failed");
        }
    }
}
