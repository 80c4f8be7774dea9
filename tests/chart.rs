//! The Helm chart (charts/keyward), rendered by the real helm v4 and checked as a platform
//! engineer would before installing it: `helm lint --strict`, manifests valid against the
//! Kubernetes schemas, the CRDs equal to `crds/` and kept on uninstall, values refused when
//! unknown or mistyped, the memory rule, restricted pods whose probes and flags match what
//! the binaries serve and accept, and RBAC read from the rule files with a comment per
//! rule and no wildcard. Three value sets: the defaults, every optional feature
//! (ci/all-features-values.yaml) and watchNamespaces mode (ci/watch-namespaces-values.yaml).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use common::helm::{
    NAMESPACE, RELEASE, chart, docs, helm, render, rendered, template_args, tool, values_file,
};

/// The value sets every structural check runs on: (what, extra helm arguments).
fn value_sets() -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("default values", vec![]),
        (
            "every optional feature",
            vec!["-f".into(), values_file("all-features-values.yaml")],
        ),
        (
            "watchNamespaces",
            vec!["-f".into(), values_file("watch-namespaces-values.yaml")],
        ),
    ]
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `helm template` that must fail; its error output.
fn render_fails(extra: &[String]) -> String {
    let out = helm(&template_args(extra));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "helm template {extra:?} should have failed; it rendered"
    );
    stderr
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn operator(docs: &[Value]) -> &Value {
    named(docs, "Deployment", &format!("{RELEASE}-keyward-operator"))
}

fn verifier(docs: &[Value]) -> &Value {
    named(docs, "Deployment", &format!("{RELEASE}-keyward-verifier"))
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn args_of(deployment: &Value) -> Vec<String> {
    container(deployment)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// The value of `--flag=value` in `args`.
fn flag(args: &[String], name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    args.iter()
        .find_map(|a| a.strip_prefix(&prefix).map(str::to_string))
}

#[test]
fn lint_strict_passes_with_each_value_set() {
    for (what, extra) in value_sets() {
        let mut args = strings(&["lint", "--strict"]);
        args.push(chart());
        args.extend(extra);
        let out = helm(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("0 chart(s) failed"),
            "helm lint --strict with {what}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !stdout.contains("[WARNING]") && !stdout.contains("[ERROR]"),
            "{what}: {stdout}"
        );
    }
}

/// Runs tests/tools/validate_manifests.py (kubernetes-validate, strict, offline) on
/// `yaml` for the chart's oldest supported Kubernetes and the suite's kubectl's.
fn validate(yaml: &str) -> (bool, Vec<String>) {
    let script = common::root().join("tests/tools/validate_manifests.py");
    let probe = Command::new("python3")
        .args(["-c", "import kubernetes_validate"])
        .output()
        .expect("python3 runs");
    assert!(
        probe.status.success(),
        "the Python package kubernetes-validate is missing: run scripts/install-tools"
    );
    let mut child = Command::new("python3")
        .arg(&script)
        .args(["1.29.0", "1.35.0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("manifests written");
    let out = child.wait_with_output().expect("validator ends");
    assert!(
        out.stderr.is_empty() || out.status.code() == Some(1),
        "validator crashed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    (out.status.success(), lines)
}

#[test]
fn rendered_manifests_validate_against_the_kubernetes_schemas() {
    for (what, extra) in value_sets() {
        let yaml = render(&extra);
        let (ok, lines) = validate(&yaml);
        let invalid: Vec<&String> = lines.iter().filter(|l| l.starts_with("invalid")).collect();
        assert!(ok && invalid.is_empty(), "{what}: {invalid:#?}");
        let count = docs(&yaml).len();
        let valid = lines.iter().filter(|l| l.starts_with("valid ")).count();
        let skipped: Vec<&String> = lines.iter().filter(|l| l.starts_with("skipped")).collect();
        assert_eq!(
            valid + skipped.len(),
            count,
            "{what}: every document judged"
        );
        // Only the Prometheus Operator's kinds lack a bundled schema; they are checked
        // against the Services and pods in `monitors_select_what_exists`.
        for s in &skipped {
            assert!(
                s.starts_with("skipped ServiceMonitor ") || s.starts_with("skipped PodMonitor "),
                "{what}: {s}"
            );
        }
    }
}

#[test]
fn the_schema_validation_refuses_a_broken_manifest() {
    let yaml = render(&[]);
    // A port that is not a number, and a field Kubernetes does not have.
    let broken = yaml
        .replacen("containerPort: 9090", "containerPort: \"nine\"", 1)
        .replacen(
            "automountServiceAccountToken: true",
            "automountServiceAccountTokens: true",
            1,
        );
    assert_ne!(broken, yaml);
    let (ok, lines) = validate(&broken);
    assert!(!ok);
    let invalid: Vec<&String> = lines.iter().filter(|l| l.starts_with("invalid")).collect();
    assert_eq!(invalid.len(), 1, "{invalid:#?}");
    assert!(invalid[0].contains("Deployment"), "{}", invalid[0]);
}

/// A CRD as the chart renders it, less what the chart adds (the keep policy and labels).
fn without_chart_metadata(mut crd: Value) -> Value {
    let meta = crd["metadata"].as_object_mut().expect("metadata");
    meta.remove("labels");
    meta.remove("annotations");
    crd
}

#[test]
fn chart_crds_equal_crds_folder_and_are_kept_on_uninstall() {
    let docs = rendered(&[]);
    let crds = of_kind(&docs, "CustomResourceDefinition");
    let mut from_folder = BTreeMap::new();
    for entry in std::fs::read_dir(common::root().join("crds")).expect("crds/") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("readable");
        let crd: Value = serde_saphyr::from_str(&text).expect("a CRD");
        from_folder.insert(
            crd["metadata"]["name"].as_str().expect("name").to_string(),
            crd,
        );
    }
    assert_eq!(from_folder.len(), 3);
    let mut from_chart = BTreeMap::new();
    for crd in crds {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{}: uninstalling must not delete it",
            crd["metadata"]["name"]
        );
        let name = crd["metadata"]["name"].as_str().expect("name").to_string();
        from_chart.insert(name, without_chart_metadata(crd.clone()));
    }
    assert_eq!(
        from_chart.keys().collect::<Vec<_>>(),
        from_folder.keys().collect::<Vec<_>>()
    );
    for (name, crd) in &from_folder {
        assert!(
            from_chart[name] == *crd,
            "the chart's {name} differs from crds/"
        );
    }
    let off = rendered(&strings(&["--set", "crds.enabled=false"]));
    assert!(of_kind(&off, "CustomResourceDefinition").is_empty());
}

#[test]
fn values_schema_refuses_unknown_keys_and_mistyped_values() {
    let cases: &[(&str, &[&str])] = &[
        (
            "operator.hashWorkers=two",
            &["/operator/hashWorkers", "want integer"],
        ),
        (
            "verifier.replicas=many",
            &["/verifier/replicas", "want integer"],
        ),
        ("crds.enabled=maybe", &["/crds/enabled", "want boolean"]),
        ("logFormat=xml", &["/logFormat"]),
        ("verifier.maxIndexAge=five", &["/verifier/maxIndexAge"]),
        ("watchNamespaces={Shop_1}", &["/watchNamespaces/0"]),
        ("allowHosts={https://x.example.com/}", &["/allowHosts/0"]),
        (
            "operator.hashWorker=2",
            &[
                "/operator",
                "additional properties 'hashWorker' not allowed",
            ],
        ),
        (
            "verifiers.enabled=false",
            &["additional properties 'verifiers' not allowed"],
        ),
        (
            "networkPolicy.apiServerCidrs={10.0.0.1/32}",
            &["/networkPolicy", "'apiServerCidrs' not allowed"],
        ),
    ];
    for (set, expected) in cases {
        let err = render_fails(&strings(&["--set", set]));
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "{set}: {err}"
        );
        for part in *expected {
            assert!(err.contains(part), "{set}: {part:?} not in {err}");
        }
    }
}

#[test]
fn memory_limit_must_hold_hash_workers_times_argon2_memory_plus_100_mib() {
    // 10 × 19456 KiB + 100 MiB = 290 MiB, rounded up.
    for component in ["operator", "verifier"] {
        let workers = format!("{component}.hashWorkers=10");
        let err = render_fails(&strings(&[
            "--set",
            &workers,
            "--set",
            &format!("{component}.resources.limits.memory=289Mi"),
        ]));
        assert!(
            err.contains(&format!(
                "{component}.resources.limits.memory 289Mi is too small"
            )) && err.contains("needs at least 290Mi"),
            "{component}: {err}"
        );
        render(&strings(&[
            "--set",
            &workers,
            "--set",
            &format!("{component}.resources.limits.memory=290Mi"),
        ]));
        // Other units read as Kubernetes reads them: 0.3Gi is 307.2 MiB, 300M is 286.1 MiB.
        render(&strings(&[
            "--set",
            &workers,
            "--set",
            &format!("{component}.resources.limits.memory=0.3Gi"),
        ]));
        render_fails(&strings(&[
            "--set",
            &workers,
            "--set",
            &format!("{component}.resources.limits.memory=300M"),
        ]));
        // No limit at all is refused by the schema.
        let err = render_fails(&strings(&[
            "--set",
            &format!("{component}.resources.limits=null"),
        ]));
        assert!(
            err.contains(&format!("/{component}/resources")),
            "{component}: {err}"
        );
    }
    // Bigger argon2 memory needs a bigger limit: 2 × 128 MiB + 100 MiB > 256Mi.
    let err = render_fails(&strings(&["--set", "argon2.memoryKiB=131072"]));
    assert!(err.contains("needs at least 356Mi"), "{err}");
}

/// Every pod template in `docs` (anything with spec.template.spec).
fn pod_templates(docs: &[Value]) -> Vec<(String, &Value)> {
    docs.iter()
        .filter(|d| !d["spec"]["template"]["spec"].is_null())
        .map(|d| {
            (
                format!("{} {}", d["kind"], d["metadata"]["name"]),
                &d["spec"]["template"]["spec"],
            )
        })
        .collect()
}

#[test]
fn every_pod_template_is_restricted() {
    for (what, extra) in value_sets() {
        let docs = rendered(&extra);
        let pods = pod_templates(&docs);
        assert_eq!(pods.len(), 2, "{what}: the operator and the verifier");
        for (name, pod) in pods {
            let psc = &pod["securityContext"];
            assert_eq!(psc["runAsNonRoot"], true, "{what} {name}");
            assert_eq!(
                psc["seccompProfile"]["type"], "RuntimeDefault",
                "{what} {name}"
            );
            assert!(
                psc["runAsUser"].as_u64().is_some_and(|u| u > 0),
                "{what} {name}"
            );
            assert!(
                pod["hostNetwork"].is_null() && pod["hostPID"].is_null(),
                "{what} {name}"
            );
            let mut containers = pod["containers"].as_array().expect("containers").clone();
            containers.extend(
                pod["initContainers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
            for c in &containers {
                let sc = &c["securityContext"];
                let at = format!("{what} {name} container {}", c["name"]);
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}");
                assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{at}");
                assert!(sc["capabilities"]["add"].is_null(), "{at}");
                assert_eq!(sc["runAsNonRoot"], true, "{at}");
                assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{at}");
                assert_ne!(sc["privileged"], true, "{at}");
                assert!(
                    !c["resources"]["limits"]["memory"].is_null(),
                    "{at}: a memory limit"
                );
            }
            for volume in pod["volumes"].as_array().cloned().unwrap_or_default() {
                assert!(volume["hostPath"].is_null(), "{what} {name}: no hostPath");
            }
        }
    }
}

/// The port a probe names, resolved through the container's named ports.
fn probe_port(c: &Value, probe: &str) -> u64 {
    let port = &c[probe]["httpGet"]["port"];
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("port number or name");
    c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("probe {probe} names port {name}, which the container lacks"))
}

#[test]
fn probes_ask_the_ports_and_paths_the_binaries_serve() {
    for (what, extra) in value_sets() {
        let docs = rendered(&extra);
        for (deployment, listen_flag) in [
            (operator(&docs), "--metrics-addr"),
            (verifier(&docs), "--addr"),
        ] {
            let c = container(deployment);
            let args = args_of(deployment);
            let listen = flag(&args, listen_flag).unwrap_or_else(|| panic!("{listen_flag}"));
            let port: u64 = listen
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("host:port");
            let tls = flag(&args, "--tls-cert").is_some();
            for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
                assert_eq!(c[probe]["httpGet"]["path"], path, "{what} {probe}");
                assert_eq!(probe_port(c, probe), port, "{what} {probe}");
                let scheme = c[probe]["httpGet"]["scheme"].as_str().unwrap_or("HTTP");
                assert_eq!(scheme == "HTTPS", tls, "{what} {probe}: scheme follows TLS");
            }
        }
    }
}

/// The real keyward parses each rendered command line: flags that exist, values it takes.
#[test]
fn rendered_command_lines_are_accepted_by_keyward() {
    let keyward = env!("CARGO_BIN_EXE_keyward");
    // A flag keyward lacks, or a value it refuses, fails before --help is reached.
    let refused = Command::new(keyward)
        .args(["run", "--hash-workers=0", "--help"])
        .output()
        .expect("keyward runs");
    assert!(!refused.status.success(), "the check can fail");
    for (what, extra) in value_sets() {
        let docs = rendered(&extra);
        for deployment in [operator(&docs), verifier(&docs)] {
            let mut args = args_of(deployment);
            args.push("--help".into());
            let out = Command::new(keyward)
                .args(&args)
                .output()
                .expect("keyward runs");
            assert!(
                out.status.success(),
                "{what}: keyward {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn operator_always_elects_a_leader_in_the_release_namespace() {
    for (what, extra) in value_sets() {
        let docs = rendered(&extra);
        let op = operator(&docs);
        let args = args_of(op);
        assert_eq!(args[0], "run", "{what}");
        assert!(args.contains(&"--leader-elect".to_string()), "{what}");
        assert_eq!(
            flag(&args, "--leader-election-namespace").as_deref(),
            Some(NAMESPACE)
        );
        assert_eq!(flag(&args, "--hash-namespace").as_deref(), Some(NAMESPACE));
        // Each replica has its own identity: the pod name.
        assert_eq!(flag(&args, "--instance").as_deref(), Some("$(POD_NAME)"));
        assert_eq!(
            container(op)["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        let v = verifier(&docs);
        assert_eq!(args_of(v)[0], "verifier", "{what}");
        assert_eq!(
            flag(&args_of(v), "--hash-namespace").as_deref(),
            Some(NAMESPACE)
        );
        assert!(flag(&args_of(v), "--hash-workers").is_some(), "{what}");
        assert!(flag(&args, "--hash-workers").is_some(), "{what}");
    }
    // Replicas can be one: election still on (a rolling update runs two at once).
    let docs = rendered(&strings(&["--set", "operator.replicas=1"]));
    assert!(args_of(operator(&docs)).contains(&"--leader-elect".to_string()));
}

#[test]
fn values_reach_the_flags() {
    let docs = rendered(&["-f".into(), values_file("all-features-values.yaml")]);
    let op = args_of(operator(&docs));
    assert_eq!(flag(&op, "--hash-workers").as_deref(), Some("4"));
    assert_eq!(flag(&op, "--argon2-memory-kib").as_deref(), Some("65536"));
    assert_eq!(flag(&op, "--argon2-iterations").as_deref(), Some("3"));
    assert_eq!(flag(&op, "--argon2-parallelism").as_deref(), Some("2"));
    let hosts: Vec<&String> = op
        .iter()
        .filter(|a| a.starts_with("--allow-host="))
        .collect();
    assert_eq!(
        hosts,
        [
            "--allow-host=minter.example.com",
            "--allow-host=*.proxy.example.com"
        ]
    );
    let v = verifier(&docs);
    let va = args_of(v);
    assert_eq!(flag(&va, "--rate-limited-status").as_deref(), Some("403"));
    assert_eq!(flag(&va, "--max-connections").as_deref(), Some("2048"));
    // TLS: the Secret mounted, both files passed.
    assert_eq!(
        flag(&va, "--tls-cert").as_deref(),
        Some("/etc/keyward/tls/tls.crt")
    );
    assert_eq!(
        flag(&va, "--tls-key").as_deref(),
        Some("/etc/keyward/tls/tls.key")
    );
    let pod = &v["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        "keyward-verifier-tls"
    );
    assert_eq!(
        container(v)["volumeMounts"][0]["mountPath"],
        "/etc/keyward/tls"
    );
    assert_eq!(v["spec"]["replicas"], 3);
    let pdb = named(
        &docs,
        "PodDisruptionBudget",
        &format!("{RELEASE}-keyward-verifier"),
    );
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    // One replica: no budget, which would only block node drains.
    let single = rendered(&strings(&["--set", "verifier.replicas=1"]));
    assert!(of_kind(&single, "PodDisruptionBudget").is_empty());
    assert_eq!(of_kind(&rendered(&[]), "PodDisruptionBudget").len(), 1);
    // Defaults: plain HTTP, no TLS volume.
    let plain = rendered(&[]);
    let va = args_of(verifier(&plain));
    assert!(flag(&va, "--tls-cert").is_none() && flag(&va, "--max-connections").is_none());
    assert!(verifier(&plain)["spec"]["template"]["spec"]["volumes"].is_null());
}

#[test]
fn operator_and_verifier_run_as_separate_service_accounts() {
    for (what, extra) in value_sets() {
        let docs = rendered(&extra);
        let op = operator(&docs)["spec"]["template"]["spec"]["serviceAccountName"].clone();
        let v = verifier(&docs)["spec"]["template"]["spec"]["serviceAccountName"].clone();
        assert_ne!(op, v, "{what}");
        for sa in [&op, &v] {
            named(&docs, "ServiceAccount", sa.as_str().expect("name"));
        }
    }
}

/// The rules of one rule file, and the comment lines before each.
fn rule_file(name: &str) -> (Vec<Value>, Vec<Vec<String>>) {
    let path = common::root().join("charts/keyward/rbac").join(name);
    let text = std::fs::read_to_string(&path).expect("rule file");
    let rules: Vec<Value> = serde_saphyr::from_str(&text).expect("a YAML list of rules");
    let mut comments = Vec::new();
    let mut pending = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            pending.push(line.to_string());
        } else if line.starts_with("- ") {
            comments.push(std::mem::take(&mut pending));
        } else if !line.starts_with("  ") {
            panic!("{name}: unexpected line {line:?}");
        }
    }
    (rules, comments)
}

const RULE_FILES: [&str; 5] = [
    "operator-watched.yaml",
    "operator-hash-namespace.yaml",
    "operator-hash-namespace-watched-mode.yaml",
    "verifier-watched.yaml",
    "verifier-hash-namespace.yaml",
];

fn has_wildcard(rules: &Value) -> bool {
    rules.as_array().into_iter().flatten().any(|rule| {
        [
            "apiGroups",
            "resources",
            "verbs",
            "resourceNames",
            "nonResourceURLs",
        ]
        .iter()
        .any(|field| {
            rule[field]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v.as_str().is_some_and(|s| s.contains('*')))
        })
    })
}

#[test]
fn rbac_rules_have_a_comment_naming_the_code_and_no_wildcard() {
    for file in RULE_FILES {
        let (rules, comments) = rule_file(file);
        assert!(!rules.is_empty(), "{file}");
        assert_eq!(rules.len(), comments.len(), "{file}");
        for (rule, comment) in rules.iter().zip(&comments) {
            let text = comment.join("\n");
            assert!(
                text.contains("src/") && text.contains("# -- "),
                "{file}: the rule {rule} needs a comment naming the call (src/…)"
            );
            for field in ["apiGroups", "resources", "verbs"] {
                assert!(
                    rule[field].as_array().is_some_and(|a| !a.is_empty()),
                    "{file}: {rule} lacks {field}"
                );
            }
            assert!(rule["resourceNames"].is_null() && rule["nonResourceURLs"].is_null());
        }
        assert!(!has_wildcard(&Value::Array(rules)), "{file}: a wildcard");
    }
    // Nothing rendered has a wildcard either, in any mode.
    for (what, extra) in value_sets() {
        for d in rendered(&extra) {
            if d["kind"] == "Role" || d["kind"] == "ClusterRole" {
                assert!(
                    !has_wildcard(&d["rules"]),
                    "{what}: {}",
                    d["metadata"]["name"]
                );
            }
        }
    }
}

/// The roles bound to `sa`, with the namespace each applies in (`None`: cluster-wide).
fn bound_rules(docs: &[Value], sa: &str) -> Vec<(Option<String>, Value)> {
    let mut out = Vec::new();
    for binding in docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
    {
        let subjects = binding["subjects"].as_array().expect("subjects");
        if !subjects.iter().any(|s| {
            s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == NAMESPACE
        }) {
            continue;
        }
        let ns = binding["metadata"]["namespace"]
            .as_str()
            .map(str::to_string);
        let role_kind = binding["roleRef"]["kind"].as_str().expect("roleRef.kind");
        let role = docs
            .iter()
            .find(|d| {
                d["kind"] == role_kind
                    && d["metadata"]["name"] == binding["roleRef"]["name"]
                    && (role_kind == "ClusterRole"
                        || d["metadata"]["namespace"] == binding["metadata"]["namespace"])
            })
            .unwrap_or_else(|| panic!("{} binds a role not rendered", binding["metadata"]["name"]));
        out.push((ns, role["rules"].clone()));
    }
    out
}

#[test]
fn rbac_binds_the_rule_files_cluster_wide_or_per_watched_namespace() {
    let files: BTreeMap<&str, Value> = RULE_FILES
        .iter()
        .map(|f| (*f, Value::Array(rule_file(f).0)))
        .collect();
    let sa_op = format!("{RELEASE}-keyward-operator");
    let sa_v = format!("{RELEASE}-keyward-verifier");
    // Cluster-wide: the watched rules everywhere, the hash rules in the release namespace.
    let docs = rendered(&[]);
    for (sa, who) in [(&sa_op, "operator"), (&sa_v, "verifier")] {
        let bound = bound_rules(&docs, sa);
        let expected = vec![
            (None, files[format!("{who}-watched.yaml").as_str()].clone()),
            (
                Some(NAMESPACE.to_string()),
                files[format!("{who}-hash-namespace.yaml").as_str()].clone(),
            ),
        ];
        assert_eq!(bound, expected, "{who}, cluster-wide");
    }
    // watchNamespaces: Roles only, in each listed namespace and the release namespace.
    let docs = rendered(&["-f".into(), values_file("watch-namespaces-values.yaml")]);
    for (sa, who) in [(&sa_op, "operator"), (&sa_v, "verifier")] {
        let bound = bound_rules(&docs, sa);
        let watched = &files[format!("{who}-watched.yaml").as_str()];
        // The hash namespace's rules, plus (operator) its watch there in this mode.
        let mut hash = files[format!("{who}-hash-namespace.yaml").as_str()].clone();
        if let Some(Value::Array(extra)) =
            files.get(format!("{who}-hash-namespace-watched-mode.yaml").as_str())
        {
            hash.as_array_mut().expect("rules").extend(extra.clone());
        }
        let mut expected = vec![
            (Some("shop".to_string()), watched.clone()),
            (Some("signup".to_string()), watched.clone()),
            (Some(NAMESPACE.to_string()), hash),
        ];
        let mut bound_sorted = bound.clone();
        bound_sorted.sort_by(|a, b| a.0.cmp(&b.0));
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(bound_sorted, expected, "{who}, watchNamespaces");
    }
    assert!(
        of_kind(&docs, "ClusterRole").is_empty(),
        "no ClusterRole at all"
    );
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
    let args = args_of(operator(&docs));
    let namespaces: Vec<&String> = args
        .iter()
        .filter(|a| a.starts_with("--namespace="))
        .collect();
    assert_eq!(namespaces, ["--namespace=shop", "--namespace=signup"]);
    // With the user-facing aggregated roles on, still no binding for keyward's accounts.
    let docs = rendered(&strings(&["--set", "watchNamespaces={shop}"]));
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
    assert_eq!(of_kind(&docs, "ClusterRole").len(), 2);
}

#[test]
fn aggregated_roles_never_grant_secrets() {
    let docs = rendered(&[]);
    let view = named(&docs, "ClusterRole", &format!("{RELEASE}-keyward-view"));
    let edit = named(&docs, "ClusterRole", &format!("{RELEASE}-keyward-edit"));
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    assert_eq!(
        edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert!(edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"].is_null());
    for role in [view, edit] {
        for rule in role["rules"].as_array().expect("rules") {
            assert_eq!(rule["apiGroups"], json!(["keyward.dev"]));
            let resources: BTreeSet<&str> = rule["resources"]
                .as_array()
                .expect("resources")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(
                resources,
                BTreeSet::from(["apikeys", "apikeypools", "providercredentials"]),
                "no Secrets, no status"
            );
        }
    }
    let view_verbs = &view["rules"][0]["verbs"];
    assert_eq!(*view_verbs, json!(["get", "list", "watch"]));
    let off = rendered(&strings(&["--set", "rbac.aggregatedClusterRoles=false"]));
    assert_eq!(
        of_kind(&off, "ClusterRole").len(),
        2,
        "only the two components'"
    );
}

#[test]
fn network_policies_admit_the_gateways_and_reach_dns_the_api_server_and_443() {
    let err = render_fails(&strings(&["--set", "networkPolicy.enabled=true"]));
    assert!(
        err.contains("networkPolicy.apiServerCIDRs is required"),
        "{err}"
    );
    let docs = rendered(&["-f".into(), values_file("all-features-values.yaml")]);
    let op = named(
        &docs,
        "NetworkPolicy",
        &format!("{RELEASE}-keyward-operator"),
    );
    let v = named(
        &docs,
        "NetworkPolicy",
        &format!("{RELEASE}-keyward-verifier"),
    );
    for policy in [op, v] {
        assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        let egress = policy["spec"]["egress"].as_array().expect("egress");
        assert_eq!(
            egress[0]["ports"][0],
            json!({"port": 53, "protocol": "UDP"})
        );
        assert_eq!(
            egress[1]["to"],
            json!([{"ipBlock": {"cidr": "10.0.0.1/32"}}, {"ipBlock": {"cidr": "172.18.0.2/32"}}])
        );
        assert_eq!(
            egress[1]["ports"],
            json!([{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}])
        );
    }
    let op_egress = op["spec"]["egress"].as_array().expect("egress");
    assert_eq!(op_egress.len(), 3);
    assert_eq!(
        op_egress[2]["to"],
        json!([{"ipBlock": {"cidr": "0.0.0.0/0"}}])
    );
    assert_eq!(
        op_egress[2]["ports"],
        json!([{"port": 443, "protocol": "TCP"}])
    );
    // The verifier reaches nothing else: no 443 to the world.
    assert_eq!(v["spec"]["egress"].as_array().expect("egress").len(), 2);
    let from: Vec<&str> = v["spec"]["ingress"][0]["from"]
        .as_array()
        .expect("from")
        .iter()
        .filter_map(|f| {
            f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str()
        })
        .collect();
    assert_eq!(
        from,
        ["ingress-nginx", "envoy-gateway-system", "monitoring"]
    );
    assert_eq!(v["spec"]["ingress"][0]["ports"][0]["port"], "verify");
    // Selectors pick the pods of each Deployment.
    assert_eq!(
        op["spec"]["podSelector"]["matchLabels"],
        operator(&docs)["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        v["spec"]["podSelector"]["matchLabels"],
        verifier(&docs)["spec"]["selector"]["matchLabels"]
    );
    // No gateway namespace: nothing may reach the verifier.
    let closed = rendered(&strings(&[
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.apiServerCIDRs={10.0.0.1/32}",
    ]));
    let v = named(
        &closed,
        "NetworkPolicy",
        &format!("{RELEASE}-keyward-verifier"),
    );
    assert_eq!(v["spec"]["ingress"], json!([]));
}

fn matches_selector(labels: &Value, selector: &Value) -> bool {
    selector
        .as_object()
        .expect("matchLabels")
        .iter()
        .all(|(k, v)| labels[k] == *v)
}

#[test]
fn services_and_monitors_select_what_exists() {
    let docs = rendered(&["-f".into(), values_file("all-features-values.yaml")]);
    for svc in of_kind(&docs, "Service") {
        let target = docs
            .iter()
            .filter(|d| d["kind"] == "Deployment")
            .find(|d| {
                matches_selector(
                    &d["spec"]["template"]["metadata"]["labels"],
                    &svc["spec"]["selector"],
                )
            })
            .unwrap_or_else(|| panic!("Service {} selects no Deployment", svc["metadata"]["name"]));
        for port in svc["spec"]["ports"].as_array().expect("ports") {
            let named_port = container(target)["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .any(|p| p["name"] == port["targetPort"]);
            assert!(
                named_port,
                "{}: targetPort {}",
                svc["metadata"]["name"], port["targetPort"]
            );
        }
    }
    let monitors = of_kind(&docs, "ServiceMonitor");
    assert_eq!(monitors.len(), 2);
    for m in monitors {
        let svc = of_kind(&docs, "Service")
            .into_iter()
            .find(|s| {
                matches_selector(
                    &s["metadata"]["labels"],
                    &m["spec"]["selector"]["matchLabels"],
                )
            })
            .unwrap_or_else(|| {
                panic!(
                    "ServiceMonitor {} selects no Service",
                    m["metadata"]["name"]
                )
            });
        let endpoint = &m["spec"]["endpoints"][0];
        assert!(
            svc["spec"]["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .any(|p| p["name"] == endpoint["port"]),
            "{}",
            m["metadata"]["name"]
        );
        assert_eq!(endpoint["path"], "/metrics");
        assert_eq!(m["metadata"]["labels"]["release"], "prometheus");
    }
    let verifier_monitor = named(
        &docs,
        "ServiceMonitor",
        &format!("{RELEASE}-keyward-verifier"),
    );
    assert_eq!(verifier_monitor["spec"]["endpoints"][0]["scheme"], "https");
    for m in of_kind(&docs, "PodMonitor") {
        let target = docs
            .iter()
            .filter(|d| d["kind"] == "Deployment")
            .find(|d| {
                matches_selector(
                    &d["spec"]["template"]["metadata"]["labels"],
                    &m["spec"]["selector"]["matchLabels"],
                )
            })
            .unwrap_or_else(|| panic!("PodMonitor {} selects no pods", m["metadata"]["name"]));
        let port = &m["spec"]["podMetricsEndpoints"][0]["port"];
        assert!(
            container(target)["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .any(|p| p["name"] == *port)
        );
    }
    assert_eq!(of_kind(&docs, "PodMonitor").len(), 2);
    let plain = rendered(&[]);
    assert!(
        of_kind(&plain, "ServiceMonitor").is_empty() && of_kind(&plain, "PodMonitor").is_empty()
    );
    assert!(of_kind(&plain, "NetworkPolicy").is_empty());
}

/// NOTES.txt as `helm install` prints it (a client-side dry run: no cluster).
fn notes(extra: &[&str]) -> String {
    let mut args = strings(&["install", RELEASE]);
    args.push(chart());
    args.extend(strings(&["--namespace", NAMESPACE, "--dry-run=client"]));
    args.extend(strings(extra));
    let out = Command::new(tool("helm"))
        .args(&args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("helm runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout[stdout.find("NOTES:").expect("NOTES printed")..].to_string()
}

#[test]
fn notes_say_what_to_apply_next() {
    let text = notes(&[]);
    for part in [
        "rollout status deployment/kw-keyward-operator",
        "rollout status deployment/kw-keyward-verifier",
        "kubectl apply -f examples/apikey.yaml",
        "http://kw-keyward-verifier.keyward-system.svc:8080/verify",
        "docs/gateways/",
        "keeps the CRDs",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    assert!(
        !text.contains("crds/"),
        "CRDs come with the chart by default"
    );
    let text = notes(&[
        "--set",
        "crds.enabled=false",
        "--set",
        "verifier.tls.secretName=tls",
        "--set",
        "watchNamespaces={shop}",
    ]);
    for part in [
        "kubectl apply --server-side -f crds/",
        "https://kw-keyward-verifier.keyward-system.svc:8080/verify",
        "It watches only: shop.",
        "kubectl -n shop get apikey",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
}

/// Test-local stand-ins for the Prometheus operator's CRDs (only their names and scope
/// matter here; the emulator serves whatever a CRD declares).
const MONITORING_CRDS: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {plural: servicemonitors, singular: servicemonitor, kind: ServiceMonitor, listKind: ServiceMonitorList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: podmonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {plural: podmonitors, singular: podmonitor, kind: PodMonitor, listKind: PodMonitorList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// The rendered chart, in each value set, applies with the real kubectl to the emulator (the
/// playground's API) and a second apply changes no object.
#[test]
fn the_rendered_chart_applies_with_kubectl() {
    let pg = common::Playground::start(None);
    pg.ok(&["apply", "-f", &pg.file("monitoring.yaml", MONITORING_CRDS)]);
    // The playground's hash namespace is the release namespace; watchNamespaces' two more.
    for ns in ["shop", "signup"] {
        pg.ok(&["create", "namespace", ns]);
    }
    for (what, extra) in value_sets() {
        // As `helm install --namespace` does: objects without a namespace go to the release's.
        let cluster_scoped = [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Namespace",
        ];
        let mut items = docs(&render(&extra));
        for item in &mut items {
            let kind = item["kind"].as_str().unwrap_or_default();
            if !cluster_scoped.contains(&kind) && item["metadata"]["namespace"].is_null() {
                item["metadata"]["namespace"] = json!(NAMESPACE);
            }
        }
        let stream: String = items.iter().map(|i| format!("---\n{i}\n")).collect();
        let path = pg.file("chart.yaml", &stream);
        let first = pg.kubectl(&["apply", "-f", &path]);
        assert!(
            first.status.success(),
            "{what}: kubectl apply of the rendered chart failed:\n{}",
            String::from_utf8_lossy(&first.stderr)
        );
        let versions = |pg: &common::Playground| {
            pg.ok(&[
                "get",
                "deployments,services,serviceaccounts,roles,rolebindings,configmaps",
                "-A",
                "-o",
                "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}={.metadata.resourceVersion}{\"\\n\"}{end}",
            ])
        };
        let before = versions(&pg);
        assert!(
            before.contains(&format!("{NAMESPACE}/{RELEASE}-keyward-operator=")),
            "{what}: the operator Deployment was created:\n{before}"
        );
        pg.ok(&["apply", "-f", &path]);
        assert_eq!(
            before,
            versions(&pg),
            "{what}: a second apply changed objects"
        );
    }
}
