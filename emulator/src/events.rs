//! One Event store behind two APIs: objects are kept in core/v1 form and converted on the
//! way in and out of events.k8s.io/v1 (kube-rs records events.k8s.io/v1, kubectl reads
//! core/v1), with the field mapping kube-apiserver uses.

use serde_json::{Map, Value, json};

fn move_field(from: &Value, from_key: &str, to: &mut Map<String, Value>, to_key: &str) {
    if let Some(v) = from.get(from_key).filter(|v| !v.is_null()) {
        to.insert(to_key.to_string(), v.clone());
    }
}

/// events.k8s.io/v1 → core/v1.
pub fn to_core(event: &Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("v1"));
    out.insert("kind".into(), json!("Event"));
    move_field(event, "metadata", &mut out, "metadata");
    move_field(event, "regarding", &mut out, "involvedObject");
    move_field(event, "related", &mut out, "related");
    move_field(event, "reason", &mut out, "reason");
    move_field(event, "note", &mut out, "message");
    move_field(event, "type", &mut out, "type");
    move_field(event, "action", &mut out, "action");
    move_field(event, "eventTime", &mut out, "eventTime");
    move_field(event, "reportingController", &mut out, "reportingComponent");
    move_field(event, "reportingInstance", &mut out, "reportingInstance");
    move_field(
        event,
        "deprecatedFirstTimestamp",
        &mut out,
        "firstTimestamp",
    );
    move_field(event, "deprecatedLastTimestamp", &mut out, "lastTimestamp");
    move_field(event, "deprecatedCount", &mut out, "count");
    move_field(event, "deprecatedSource", &mut out, "source");
    if let Some(series) = event.get("series").filter(|s| s.is_object()) {
        out.insert(
            "series".into(),
            json!({"count": series["count"], "lastObservedTime": series["lastObservedTime"]}),
        );
        out.insert("count".into(), series["count"].clone());
    }
    if !out.contains_key("source")
        && let Some(controller) = event.get("reportingController").and_then(Value::as_str)
    {
        let mut source = json!({"component": controller});
        if let Some(instance) = event.get("reportingInstance").and_then(Value::as_str) {
            source["host"] = json!(instance);
        }
        out.insert("source".into(), source);
    }
    Value::Object(out)
}

/// core/v1 → events.k8s.io/v1.
pub fn from_core(event: &Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    out.insert("kind".into(), json!("Event"));
    move_field(event, "metadata", &mut out, "metadata");
    move_field(event, "involvedObject", &mut out, "regarding");
    move_field(event, "related", &mut out, "related");
    move_field(event, "reason", &mut out, "reason");
    move_field(event, "message", &mut out, "note");
    move_field(event, "type", &mut out, "type");
    move_field(event, "action", &mut out, "action");
    move_field(event, "eventTime", &mut out, "eventTime");
    move_field(event, "reportingComponent", &mut out, "reportingController");
    move_field(event, "reportingInstance", &mut out, "reportingInstance");
    move_field(
        event,
        "firstTimestamp",
        &mut out,
        "deprecatedFirstTimestamp",
    );
    move_field(event, "lastTimestamp", &mut out, "deprecatedLastTimestamp");
    move_field(event, "count", &mut out, "deprecatedCount");
    move_field(event, "source", &mut out, "deprecatedSource");
    move_field(event, "series", &mut out, "series");
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_what_both_apis_show() {
        let v1 = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "ApiKey", "name": "k", "namespace": "default"},
            "reason": "KeyIssued", "note": "issued key kw_abc…", "type": "Normal", "action": "Issue",
            "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "keyward", "reportingInstance": "keyward-0",
        });
        let core = to_core(&v1);
        assert_eq!(core["involvedObject"]["name"], "k");
        assert_eq!(core["message"], "issued key kw_abc…");
        assert_eq!(core["source"]["component"], "keyward");
        assert_eq!(from_core(&core)["note"], "issued key kw_abc…");
        assert_eq!(from_core(&core)["regarding"], v1["regarding"]);
    }
}
