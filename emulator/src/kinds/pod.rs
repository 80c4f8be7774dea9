//! The defaults a pod spec gets, in a Pod or in a workload's pod template (SetDefaults_PodSpec,
//! SetDefaults_Container, SetDefaults_Probe and the volume source defaults of core/v1).

use serde_json::{Value, json};

use super::{child, default_field, each};

/// Defaults of a pod template (`spec.template` of a workload).
pub fn template_defaults(template: &mut Value) {
    spec_defaults(child(template, "spec"));
}

pub fn spec_defaults(spec: &mut Value) {
    default_field(spec, "restartPolicy", json!("Always"));
    default_field(spec, "terminationGracePeriodSeconds", json!(30));
    default_field(spec, "dnsPolicy", json!("ClusterFirst"));
    default_field(spec, "schedulerName", json!("default-scheduler"));
    default_field(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        each(spec, list, container_defaults);
    }
    each(spec, "volumes", |volume| {
        for source in ["secret", "configMap", "downwardAPI", "projected"] {
            if volume[source].is_object() {
                default_field(&mut volume[source], "defaultMode", json!(420));
            }
        }
    });
}

fn container_defaults(container: &mut Value) {
    let image = container["image"].as_str().unwrap_or_default().to_string();
    default_field(container, "imagePullPolicy", json!(pull_policy(&image)));
    default_field(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    default_field(container, "terminationMessagePolicy", json!("File"));
    default_field(container, "resources", json!({}));
    each(container, "ports", |port| {
        default_field(port, "protocol", json!("TCP"));
    });
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if container[probe].is_object() {
            let probe = &mut container[probe];
            default_field(probe, "timeoutSeconds", json!(1));
            default_field(probe, "periodSeconds", json!(10));
            default_field(probe, "successThreshold", json!(1));
            default_field(probe, "failureThreshold", json!(3));
            if probe["httpGet"].is_object() {
                default_field(&mut probe["httpGet"], "scheme", json!("HTTP"));
                default_field(&mut probe["httpGet"], "path", json!("/"));
            }
        }
    }
}

/// Always for `:latest` or no tag, IfNotPresent for any other tag or a digest.
fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // A tag follows the last ':' after the last '/' (a registry's port comes before it).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(pull_policy("nginx"), "Always");
        assert_eq!(pull_policy("nginx:latest"), "Always");
        assert_eq!(pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(pull_policy("registry:5000/nginx"), "Always");
        assert_eq!(pull_policy("registry:5000/nginx:1"), "IfNotPresent");
        assert_eq!(pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }
}
