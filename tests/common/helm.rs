//! The chart (charts/keyward) rendered by the real helm v4 that `scripts/install-tools`
//! puts in `.tools/bin`.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// The namespace the tests install the chart into (the hash namespace).
pub const NAMESPACE: &str = "keyward-system";
/// The release name the tests render.
pub const RELEASE: &str = "kw";

/// A tool `scripts/install-tools` puts in `.tools/bin`; missing, the test fails saying so.
pub fn tool(name: &str) -> PathBuf {
    let path = super::root().join(".tools/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-tools",
        path.display()
    );
    path
}

/// The chart's folder.
pub fn chart() -> String {
    super::root().join("charts/keyward").display().to_string()
}

/// A values file of the chart's `ci/` folder.
pub fn values_file(name: &str) -> String {
    super::root()
        .join("charts/keyward/ci")
        .join(name)
        .display()
        .to_string()
}

/// Runs helm with `args`.
pub fn helm(args: &[String]) -> Output {
    Command::new(tool("helm"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("helm not runnable ({e}): run scripts/install-tools"))
}

/// `helm template RELEASE CHART --namespace NAMESPACE` followed by `extra`.
pub fn template_args(extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "template".into(),
        RELEASE.into(),
        chart(),
        "--namespace".into(),
        NAMESPACE.into(),
    ];
    args.extend(extra.iter().cloned());
    args
}

/// `helm template` of the chart; the rendered YAML.
pub fn render(extra: &[String]) -> String {
    let out = helm(&template_args(extra));
    assert!(
        out.status.success(),
        "helm template {extra:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm prints UTF-8")
}

/// The documents of a multi-document YAML stream, empty ones left out.
pub fn docs(yaml: &str) -> Vec<Value> {
    let all: Vec<Value> = serde_saphyr::from_str_multiple(yaml).expect("helm renders YAML");
    all.into_iter().filter(|d| !d.is_null()).collect()
}

/// The rendered chart's objects.
pub fn rendered(extra: &[String]) -> Vec<Value> {
    docs(&render(extra))
}
