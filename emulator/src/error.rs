//! API errors, answered as `metav1.Status` bodies with the apiserver's codes, reasons and
//! wording, since clients branch on them (kube-rs on `code`, kubectl prints `message`).

use serde_json::{Value, json};

use crate::resources::ResourceType;

/// A failed request: HTTP status code, Status reason and message, optional details.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn details(rt: &ResourceType, name: &str) -> Value {
        let mut d = json!({"name": name, "kind": rt.plural});
        if !rt.group.is_empty() {
            d["group"] = json!(rt.group);
        }
        d
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self {
            details: Some(Self::details(rt, name)),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", rt.qualified()),
            )
        }
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self {
            details: Some(Self::details(rt, name)),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", rt.qualified()),
            )
        }
    }

    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self {
            details: Some(Self::details(rt, name)),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {why}",
                    rt.qualified()
                ),
            )
        }
    }

    pub fn modified(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 with one cause per invalid field.
    pub fn invalid(
        rt: &ResourceType,
        name: &str,
        causes: Vec<(String, &'static str, String)>,
    ) -> Self {
        let mut e = Self::invalid_kind(&rt.group, &rt.kind, name, causes);
        if let Some(details) = e.details.as_mut() {
            details["name"] = json!(name);
        }
        e
    }

    /// 422 on any group and kind (`PatchOptions.meta.k8s.io "" is invalid: …`), as
    /// NewInvalid in staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go words it.
    pub fn invalid_kind(
        group: &str,
        kind: &str,
        name: &str,
        causes: Vec<(String, &'static str, String)>,
    ) -> Self {
        let messages: Vec<&str> = causes.iter().map(|(_, _, m)| m.as_str()).collect();
        let joined = if messages.len() == 1 {
            messages[0].to_string()
        } else {
            format!("[{}]", messages.join(", "))
        };
        let mut details = json!({"kind": kind});
        if !name.is_empty() {
            details["name"] = json!(name);
        }
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        // A cause names its field in `field`; its message starts at what is wrong, as the
        // apiserver's do (kubectl prints `field: message` from them).
        details["causes"] = causes
            .iter()
            .map(|(field, reason, message)| {
                let own = message
                    .strip_prefix(field.as_str())
                    .and_then(|rest| rest.strip_prefix(": "))
                    .filter(|_| !field.is_empty())
                    .unwrap_or(message);
                json!({"reason": reason, "message": own, "field": field})
            })
            .collect();
        Self {
            details: Some(details),
            ..Self::new(
                422,
                "Invalid",
                format!("{qualified} \"{name}\" is invalid: {joined}"),
            )
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `metav1.Status` body.
    pub fn status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}
