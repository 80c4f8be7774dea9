//! The real kubectl against a `keyward playground` started by the test: what a platform
//! engineer does on day one must work exactly as on a cluster.

mod common;

use common::{Playground, root};

fn examples() -> std::path::PathBuf {
    root().join("examples")
}

#[test]
fn server_side_apply_of_crds_and_examples_and_printer_columns() {
    let pg = Playground::start(None);
    pg.ok(&["apply", "--server-side", "-f", "crds/"]);
    let applied = pg.ok(&["apply", "--server-side", "-f", "examples/"]);
    assert!(
        applied.contains("apikey.keyward.dev/billing-api serverside-applied"),
        "{applied}"
    );
    let table = pg.ok(&["get", "apikeys"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "OWNER", "PREVIEW", "NEXT ROTATION", "AGE"],
        "{table}"
    );
    assert!(
        table.contains("billing-api") && table.contains("team-billing"),
        "{table}"
    );
    pg.ok(&[
        "wait",
        "--for=condition=Ready",
        "apikey/billing-api",
        "--timeout=30s",
    ]);
    let table = pg.ok(&["get", "apikeys"]);
    let billing = table
        .lines()
        .find(|l| l.starts_with("billing-api"))
        .unwrap_or_default();
    assert!(
        !table.contains("<invalid>"),
        "future instants are not dates: {table}"
    );
    assert!(
        billing.contains("True") && billing.contains("sk_live_") && billing.contains('T'),
        "Ready, preview, next rotation: {billing}"
    );
    let pools = pg.ok(&["get", "akp"]);
    assert!(
        pools
            .lines()
            .next()
            .unwrap_or_default()
            .contains("AVAILABLE"),
        "{pools}"
    );
    assert!(
        pools.contains("signup-tokens") && pools.contains("20"),
        "{pools}"
    );
    let creds = pg.ok(&["get", "pcred"]);
    assert!(
        creds
            .lines()
            .next()
            .unwrap_or_default()
            .contains("LAST VALIDATED"),
        "{creds}"
    );
    let all = pg.ok(&["get", "keyward", "-o", "name"]);
    assert_eq!(all.lines().count(), 6, "{all}");
    // Applying the same YAML again changes nothing.
    let again = pg.ok(&["apply", "--server-side", "-f", "examples/"]);
    assert!(again.contains("serverside-applied"), "{again}");
}

#[test]
fn imperative_creates_use_protobuf_and_label_selectors_filter() {
    let pg = Playground::start(None);
    pg.ok(&["create", "namespace", "team-a"]);
    pg.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "-n",
        "team-a",
        "--from-literal=api-key=abc",
    ]);
    pg.ok(&[
        "create",
        "secret",
        "generic",
        "s2",
        "-n",
        "team-a",
        "--from-literal=api-key=def",
    ]);
    pg.ok(&[
        "create",
        "configmap",
        "c1",
        "-n",
        "team-a",
        "--from-literal=a=b",
    ]);
    pg.ok(&["label", "secret", "s1", "-n", "team-a", "team=a"]);
    let selected = pg.ok(&[
        "get", "secrets", "-n", "team-a", "-l", "team=a", "-o", "name",
    ]);
    assert_eq!(selected.trim(), "secret/s1");
    let not = pg.ok(&[
        "get", "secrets", "-n", "team-a", "-l", "team!=a", "-o", "name",
    ]);
    assert_eq!(not.trim(), "secret/s2");
    let data = pg.ok(&[
        "get",
        "secret",
        "s1",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.data.api-key}",
    ]);
    assert_eq!(data.trim(), "YWJj", "protobuf bytes arrive as base64 data");
    let cm = pg.ok(&[
        "get",
        "configmap",
        "c1",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.data.a}",
    ]);
    assert_eq!(cm.trim(), "b");
    // Strategic merge patch, kubectl's default for built-in kinds.
    pg.ok(&[
        "patch",
        "configmap",
        "c1",
        "-n",
        "team-a",
        "-p",
        r#"{"data":{"x":"y"}}"#,
    ]);
    assert_eq!(
        pg.ok(&[
            "get",
            "configmap",
            "c1",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.x}"
        ])
        .trim(),
        "y"
    );
}

#[test]
fn wait_for_a_condition() {
    let pg = Playground::start(Some(&examples()));
    let wait = std::process::Command::new(common::kubectl_path())
        .args(["--kubeconfig"])
        .arg(&pg.kubeconfig)
        .args([
            "wait",
            "--for=condition=Ready",
            "apikey/billing-api",
            "--timeout=30s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl wait starts");
    let status = r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KeyIssued","message":"issued","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
    pg.ok(&[
        "patch",
        "apikey",
        "billing-api",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
    let out = wait.wait_with_output().expect("kubectl wait ends");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));
    let ready = pg.ok(&["get", "apikey", "billing-api"]);
    assert!(
        ready.lines().nth(1).unwrap_or_default().contains("True"),
        "{ready}"
    );
}

#[test]
fn replace_with_a_stale_object_is_a_conflict() {
    let pg = Playground::start(Some(&examples()));
    let stale = pg.ok(&["get", "apikey", "billing-api", "-o", "yaml"]);
    pg.ok(&["label", "apikey", "billing-api", "touched=yes"]);
    let path = pg.file(
        "stale.yaml",
        &stale.replace("owner: team-billing", "owner: someone-else"),
    );
    let err = pg.fails(&["replace", "-f", &path]);
    assert!(err.contains("the object has been modified"), "{err}");
    let owner = pg.ok(&[
        "get",
        "apikey",
        "billing-api",
        "-o",
        "jsonpath={.spec.owner}",
    ]);
    assert_eq!(owner, "team-billing", "the stale replace changed nothing");
}

#[test]
fn two_field_managers_conflict_until_forced() {
    let pg = Playground::start(None);
    let object = |owner: &str| {
        format!(
            "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata:\n  name: shared\n  namespace: default\nspec:\n  owner: {owner}\n"
        )
    };
    let alice = pg.file("alice.yaml", &object("alice"));
    let bob = pg.file("bob.yaml", &object("bob"));
    pg.ok(&[
        "apply",
        "--server-side",
        "--field-manager=alice",
        "-f",
        &alice,
    ]);
    let err = pg.fails(&["apply", "--server-side", "--field-manager=bob", "-f", &bob]);
    assert!(
        err.contains("conflict") && err.contains("alice") && err.contains(".spec.owner"),
        "{err}"
    );
    assert_eq!(
        pg.ok(&["get", "apikey", "shared", "-o", "jsonpath={.spec.owner}"]),
        "alice"
    );
    pg.ok(&[
        "apply",
        "--server-side",
        "--field-manager=bob",
        "--force-conflicts",
        "-f",
        &bob,
    ]);
    assert_eq!(
        pg.ok(&["get", "apikey", "shared", "-o", "jsonpath={.spec.owner}"]),
        "bob"
    );
    let managers = pg.ok(&[
        "get",
        "apikey",
        "shared",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(managers.contains("bob"), "{managers}");
}

#[test]
fn delete_cascades_to_owned_objects() {
    let pg = Playground::start(None);
    for (policy, survives) in [
        ("foreground", false),
        ("background", false),
        ("orphan", true),
    ] {
        pg.ok(&["create", "configmap", "parent", "--from-literal=a=b"]);
        let uid = pg.ok(&[
            "get",
            "configmap",
            "parent",
            "-o",
            "jsonpath={.metadata.uid}",
        ]);
        let child = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: child\n  namespace: default\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: parent\n    uid: {uid}\n    controller: true\n    blockOwnerDeletion: true\nstringData:\n  k: v\n"
        );
        let out = pg.kubectl_stdin(&["apply", "-f", "-"], Some(&child));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.ok(&[
            "delete",
            "configmap",
            "parent",
            &format!("--cascade={policy}"),
        ]);
        let remaining = pg.kubectl(&["get", "secret", "child", "-o", "name"]);
        assert_eq!(
            remaining.status.success(),
            survives,
            "{policy}: {}",
            String::from_utf8_lossy(&remaining.stderr)
        );
        if survives {
            pg.ok(&["delete", "secret", "child"]);
        }
    }
}

#[test]
fn client_side_apply_and_explain() {
    let pg = Playground::start(None);
    pg.ok(&["apply", "-f", "examples/apikey.yaml"]);
    let edited = std::fs::read_to_string(examples().join("apikey.yaml"))
        .expect("example")
        .replace("owner: team-billing", "owner: team-payments");
    let path = pg.file("edited.yaml", &edited);
    let out = pg.ok(&["apply", "-f", &path]);
    assert!(
        out.contains("apikey.keyward.dev/billing-api configured"),
        "{out}"
    );
    assert_eq!(
        pg.ok(&[
            "get",
            "apikey",
            "billing-api",
            "-o",
            "jsonpath={.spec.owner}"
        ]),
        "team-payments"
    );
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: plain\n  namespace: default\nstringData:\n  a: b\n";
    let out = pg.kubectl_stdin(&["apply", "-f", "-"], Some(secret));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let explained = pg.ok(&["explain", "apikey.spec.format"]);
    assert!(
        explained.contains("prefix") && explained.contains("alphabet"),
        "{explained}"
    );
}

#[test]
fn bad_objects_are_refused_with_the_field_named() {
    let pg = Playground::start(None);
    let apikey = |spec: &str| {
        format!(
            "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata:\n  name: bad\n  namespace: default\nspec:\n{spec}"
        )
    };
    let wrong_type = pg.file("wrong-type.yaml", &apikey("  format:\n    length: long\n"));
    let err = pg.fails(&["apply", "--server-side", "-f", &wrong_type]);
    assert!(
        err.contains("spec.format.length") && err.contains("must be of type integer"),
        "{err}"
    );
    assert_eq!(
        err.matches("spec.format.length").count(),
        2,
        "the path once before Invalid value and once in the schema's `in body` wording: {err}"
    );
    assert!(
        !err.contains("spec.format.length: spec.format.length"),
        "{err}"
    );
    let weak = pg.file("weak.yaml", &apikey("  format:\n    length: 12\n"));
    let err = pg.fails(&["apply", "-f", &weak]);
    assert!(err.contains("fewer than 128 random bits"), "{err}");
    assert!(
        err.contains("spec.format.length: Invalid value")
            && !err.contains("spec.format.length: spec.format.length"),
        "a cause's message does not repeat its field: {err}"
    );
    let cron = pg.file(
        "cron.yaml",
        &apikey("  rotation:\n    schedule: \"61 * * * *\"\n"),
    );
    let err = pg.fails(&["apply", "--server-side", "-f", &cron]);
    assert!(
        err.contains("spec.rotation.schedule: Invalid value") && err.contains("minute (0-59)"),
        "{err}"
    );
    let zone = pg.file(
        "zone.yaml",
        &apikey("  rotation:\n    schedule: \"0 3 * * 1\"\n    timeZone: Europe Berlin\n"),
    );
    let err = pg.fails(&["apply", "--server-side", "-f", &zone]);
    assert!(err.contains("IANA time zone name"), "{err}");
    let unknown = pg.file("unknown.yaml", &apikey("  bogus: 1\n"));
    let err = pg.fails(&["apply", "--server-side", "-f", &unknown]);
    assert!(err.contains("unknown field \"spec.bogus\""), "{err}");
    let long_name = pg.file(
        "long.yaml",
        &apikey("  owner: x\n").replace("name: bad", &format!("name: {}", "a".repeat(64))),
    );
    let err = pg.fails(&["apply", "--server-side", "-f", &long_name]);
    assert!(err.contains("at most 63 characters"), "{err}");
    let missing = pg.fails(&["get", "apikey", "nothing-here"]);
    assert!(
        missing.contains("apikeys.keyward.dev \"nothing-here\" not found"),
        "{missing}"
    );
    assert!(
        pg.kubectl(&["get", "apikey", "bad"]).status.code() != Some(0),
        "nothing was stored"
    );
}

#[test]
fn rotation_requests_committed_to_git_rotate_once_per_value() {
    let pg = Playground::start(None);
    let manifest = |value: &str| {
        format!(
            "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata:\n  name: gitops\n  namespace: default\n  annotations:\n    keyward.dev/rotate: \"{value}\"\nspec:\n  owner: platform\n"
        )
    };
    let count = || {
        pg.ok(&[
            "get",
            "apikey",
            "gitops",
            "-o",
            "jsonpath={.status.rotationCount}",
        ])
    };

    let path = pg.file("gitops-1.yaml", &manifest("1"));
    pg.ok(&["apply", "--server-side", "-f", &path]);
    pg.ok(&[
        "wait",
        "--for=condition=Ready",
        "apikey/gitops",
        "--timeout=30s",
    ]);
    assert_eq!(
        count(),
        "0",
        "a request committed with the ApiKey is consumed by the first issue"
    );
    let path = pg.file("gitops-2.yaml", &manifest("2"));
    pg.ok(&["apply", "--server-side", "-f", &path]);
    pg.ok(&[
        "wait",
        "--for=jsonpath={.status.lastRotationRequest}=2",
        "apikey/gitops",
        "--timeout=30s",
    ]);
    assert_eq!(count(), "1");
    // GitOps re-applies the same YAML forever: no further rotation.
    pg.ok(&["apply", "--server-side", "-f", &path]);
    pg.ok(&["annotate", "apikey", "gitops", "unrelated=touch"]);
    let history = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--kubeconfig")
        .arg(&pg.kubeconfig)
        .args(["history", "gitops", "-o", "json"])
        .output()
        .expect("history runs");
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&history.stdout).expect("json");
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(count(), "1");
}

#[test]
fn field_validation_warn_prunes_unknown_fields_with_a_warning() {
    let pg = Playground::start(None);
    let path = pg.file(
        "extra.yaml",
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata:\n  name: extra\n  namespace: default\nspec:\n  owner: x\n  colour: blue\n",
    );
    let out = pg.kubectl(&["apply", "--validate=warn", "-f", &path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field \"spec.colour\""), "{stderr}");
    let spec = pg.ok(&["get", "apikey", "extra", "-o", "jsonpath={.spec}"]);
    assert!(
        !spec.contains("colour") && spec.contains("\"owner\":\"x\""),
        "{spec}"
    );
}

#[test]
fn get_watch_streams_rows_with_printer_columns() {
    use std::io::{BufRead, BufReader};
    let pg = Playground::start(None);
    let mut watch = std::process::Command::new(common::kubectl_path())
        .arg("--kubeconfig")
        .arg(&pg.kubeconfig)
        .args(["get", "apikeys", "-w"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl get -w starts");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let manifest = "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata:\n  name: watched\n  namespace: default\nspec:\n  owner: me\n";
    let out = pg.kubectl_stdin(&["apply", "-f", "-"], Some(manifest));
    assert!(out.status.success());
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(common::PATIENCE) {
        let ready = line.starts_with("watched") && line.contains("True") && line.contains("kw_");
        lines.push(line);
        if ready {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        lines
            .first()
            .is_some_and(|h| h.contains("READY") && h.contains("PREVIEW")),
        "{lines:#?}"
    );
    assert!(
        lines.last().is_some_and(|l| l.contains("True")),
        "the Ready transition streams in: {lines:#?}"
    );
}

/// `kubectl apply` then `kubectl apply --server-side` of an edited manifest goes through:
/// the API server lets kubectl's server-side applier take over the fields client-side apply
/// recorded in last-applied-configuration (staging/src/k8s.io/apimachinery/pkg/util/
/// managedfields/internal/lastappliedmanager.go), and accepts kubectl's JSON patch that
/// migrates `kubectl-client-side-apply`'s managedFields into its own
/// (staging/src/k8s.io/client-go/util/csaupgrade/upgrade.go, called from
/// staging/src/k8s.io/kubectl/pkg/cmd/apply/apply.go's migrateToSSAIfNecessary). After it,
/// kubectl's applier owns those fields alone: one it drops from the manifest goes.
#[test]
fn client_side_then_server_side_apply_upgrades_ownership() {
    let pg = Playground::start(None);
    let manifest = |data: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: upgraded\n  namespace: default\ndata:\n{data}"
        )
    };
    let first = pg.file("v1.yaml", &manifest("  a: \"1\"\n  b: \"1\"\n"));
    pg.ok(&["apply", "-f", &first]);
    let edited = pg.file("v2.yaml", &manifest("  a: \"2\"\n  b: \"1\"\n"));
    let out = pg.ok(&["apply", "--server-side", "-f", &edited]);
    assert!(
        out.contains("configmap/upgraded serverside-applied"),
        "{out}"
    );
    let managed = |pg: &Playground| {
        pg.ok(&[
            "get",
            "configmap",
            "upgraded",
            "--show-managed-fields",
            "-o",
            "jsonpath={range .metadata.managedFields[*]}{.manager}/{.operation} {end}",
        ])
    };
    let owners = managed(&pg);
    assert!(owners.contains("kubectl/Apply"), "{owners}");
    assert!(
        !owners.contains("kubectl-client-side-apply"),
        "migrated into kubectl's applier: {owners}"
    );
    assert_eq!(
        pg.ok(&["get", "configmap", "upgraded", "-o", "jsonpath={.data.a}"]),
        "2"
    );
    let trimmed = pg.file("v3.yaml", &manifest("  a: \"2\"\n"));
    pg.ok(&["apply", "--server-side", "-f", &trimmed]);
    assert_eq!(
        pg.ok(&["get", "configmap", "upgraded", "-o", "jsonpath={.data}"]),
        "{\"a\":\"2\"}"
    );
    // Client-side apply still works after the upgrade: the server kept the annotation.
    let back = pg.file("v4.yaml", &manifest("  a: \"3\"\n"));
    pg.ok(&["apply", "-f", &back]);
    assert_eq!(
        pg.ok(&["get", "configmap", "upgraded", "-o", "jsonpath={.data.a}"]),
        "3"
    );
}

// ---- fidelity of built-in kinds (issue 19) ------------------------------------------------

/// `kubectl create secret generic` sends protobuf; the Secret still gets `type: Opaque`
/// (SetDefaults_Secret in kubernetes/kubernetes pkg/apis/core/v1/defaults.go runs whatever
/// the encoding), and a namespace created by kubectl carries `kubernetes.io/metadata.name`
/// with kubectl's managedFields entry owning it
/// (https://kubernetes.io/docs/reference/labels-annotations-taints/#kubernetes-io-metadata-name).
#[test]
fn imperative_creates_get_the_servers_defaults() {
    let pg = Playground::start(None);
    pg.ok(&["create", "namespace", "team-b"]);
    pg.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "team-b",
        "--from-literal=a=b",
    ]);
    let ty = pg.ok(&[
        "get",
        "secret",
        "s",
        "-n",
        "team-b",
        "-o",
        "jsonpath={.type}",
    ]);
    assert_eq!(ty, "Opaque");
    let label = pg.ok(&[
        "get",
        "namespace",
        "team-b",
        "-o",
        "jsonpath={.metadata.labels.kubernetes\\.io/metadata\\.name}",
    ]);
    assert_eq!(label, "team-b");
    let manager = pg.ok(&[
        "get",
        "namespace",
        "team-b",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[0].manager}",
    ]);
    assert_eq!(manager, "kubectl-create");
}

/// Client-side apply of a large ConfigMap stores it again in the last-applied annotation,
/// which the server refuses past 256 KiB (ValidateAnnotations in kubernetes/kubernetes
/// staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go).
#[test]
fn client_side_apply_of_a_large_configmap_hits_the_annotation_limit() {
    let pg = Playground::start(None);
    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  blob: {}\n",
        "x".repeat(300 * 1024)
    );
    let path = pg.file("big.yaml", &big);
    let err = pg.fails(&["apply", "-f", &path]);
    assert!(
        err.contains("metadata.annotations: Too long: must have at most 262144 bytes"),
        "{err}"
    );
    // Without the annotation it fits.
    pg.ok(&["create", "-f", &path]);
}

/// What `kubectl get` and `kubectl explain` show for built-in kinds on a cluster: the
/// Deployment columns (printDeployment in kubernetes/kubernetes
/// pkg/printers/internalversion/printers.go), pods listed even when there are none, and
/// field documentation from the built-in OpenAPI v3 schemas.
#[test]
fn kubectl_shows_built_in_kinds_like_a_cluster() {
    let pg = Playground::start(None);
    let empty = pg.kubectl(&["get", "pods"]);
    assert!(
        empty.status.success(),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("No resources found in default namespace."),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );
    // `kubectl create deployment` sends protobuf, which the emulator decodes for a few
    // core kinds only; YAML through apply reaches the same defaults.
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n";
    let path = pg.file("web.yaml", deployment);
    pg.ok(&["apply", "-f", &path]);
    let table = pg.ok(&["get", "deployments"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{table}"
    );
    assert!(table.contains("0/2"), "{table}");
    let strategy = pg.ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.strategy.type} {.spec.template.spec.containers[0].imagePullPolicy}",
    ]);
    assert_eq!(strategy, "RollingUpdate IfNotPresent");
    let explained = pg.ok(&["explain", "deployment.spec.strategy"]);
    assert!(
        explained.contains("rollingUpdate") && explained.contains("DeploymentStrategy"),
        "{explained}"
    );
    let explained = pg.ok(&["explain", "services.spec"]);
    assert!(explained.contains("clusterIP"), "{explained}");
}

/// The kinds a Helm chart installs apply with kubectl client-side and server-side, twice
/// (https://kubernetes.io/docs/reference/kubernetes-api/ lists where each is served).
#[test]
fn a_rendered_chart_applies_client_and_server_side() {
    let pg = Playground::start(None);
    let chart = r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: keyward
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: keyward
rules:
- apiGroups: ["keyward.dev"]
  resources: ["apikeys", "apikeys/status"]
  verbs: ["get", "list", "watch", "patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: keyward
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: keyward
subjects:
- kind: ServiceAccount
  name: keyward
  namespace: default
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: keyward-leader
rules:
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: keyward-leader
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: keyward-leader
subjects:
- kind: ServiceAccount
  name: keyward
---
apiVersion: v1
kind: Service
metadata:
  name: keyward-verifier
spec:
  selector:
    app: keyward-verifier
  ports:
  - name: http
    port: 8080
  - name: metrics
    port: 9090
    targetPort: 9090
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: keyward-verifier
spec:
  minAvailable: 1
  selector:
    matchLabels:
      app: keyward-verifier
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: keyward-verifier
spec:
  podSelector:
    matchLabels:
      app: keyward-verifier
  ingress:
  - ports:
    - port: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: keyward-verifier
spec:
  replicas: 2
  selector:
    matchLabels:
      app: keyward-verifier
  template:
    metadata:
      labels:
        app: keyward-verifier
    spec:
      serviceAccountName: keyward
      containers:
      - name: verifier
        image: ghcr.io/keyward/keyward:0.1.0
        ports:
        - containerPort: 8080
        env:
        - name: RUST_LOG
          value: info
"#;
    let path = pg.file("chart.yaml", chart);
    let first = pg.ok(&["apply", "-f", &path]);
    assert_eq!(first.lines().count(), 9, "{first}");
    assert!(
        first.contains("service/keyward-verifier created"),
        "{first}"
    );
    let versions = || {
        pg.ok(&[
            "get",
            "sa,clusterrole,clusterrolebinding,role,rolebinding,service,pdb,netpol,deployment",
            "-o",
            "jsonpath={..metadata.resourceVersion}",
        ])
    };
    let before = versions();
    let again = pg.ok(&["apply", "-f", &path]);
    // kubectl's three-way diff still sends a patch for an atomic list the server defaulted
    // into (NetworkPolicy ports gain `protocol: TCP`) and for replace-strategy fields; the
    // server finds nothing to change, so no object gets a new resourceVersion.
    for kind in [
        "service/",
        "deployment.apps/",
        "rolebinding.",
        "clusterrole.",
    ] {
        assert!(
            again
                .lines()
                .filter(|l| l.starts_with(kind))
                .all(|l| l.ends_with("unchanged")),
            "{again}"
        );
    }
    assert_eq!(versions(), before, "re-applying changes nothing: {again}");
    let edited = chart.replace("value: info", "value: debug");
    let path = pg.file("chart2.yaml", &edited);
    let out = pg.ok(&["apply", "-f", &path]);
    assert!(
        out.contains("deployment.apps/keyward-verifier configured"),
        "{out}"
    );
    let containers = pg.ok(&[
        "get",
        "deployment",
        "keyward-verifier",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].name} {.spec.template.spec.containers[0].ports[*].containerPort}",
    ]);
    assert_eq!(
        containers, "verifier 8080",
        "lists merged by key, not duplicated"
    );
    let out = pg.ok(&["apply", "--server-side", "--force-conflicts", "-f", &path]);
    assert!(out.contains("serverside-applied"), "{out}");
    let ports = pg.ok(&[
        "get",
        "service",
        "keyward-verifier",
        "-o",
        "jsonpath={.spec.ports[*].port}/{.spec.ports[*].targetPort}/{.spec.type}",
    ]);
    assert_eq!(ports, "8080 9090/8080 9090/ClusterIP");
    let table = pg.ok(&["get", "pdb,netpol,rolebinding"]);
    assert!(
        table.contains("MIN AVAILABLE")
            && table.contains("POD-SELECTOR")
            && table.contains("Role/keyward-leader"),
        "{table}"
    );
}
