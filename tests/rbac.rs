//! Least privilege, proven from the code (DESIGN §10): the real `keyward run` and `keyward
//! verifier` binaries run as two users of the emulator through a scenario that makes every
//! kind of call they make, the emulator records each request with its user, and the chart's
//! RBAC for each ServiceAccount must cover every recorded call and grant nothing that was
//! never recorded. Once cluster-wide and once in `watchNamespaces` mode, where no
//! cluster-scoped call may be made at all.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command};

use common::eventually;
use common::helm::{NAMESPACE as HASH_NS, RELEASE, rendered};
use common::minter::{Behaviour, Minter};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use keyward::crd::{ApiKey, ApiKeyPool, ProviderCredential};
use keyward_emulator::Emulator;
use keyward_emulator::faults::{Fault, FaultAction, Recorded};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

/// The namespace the workloads and their keys live in (the one watched namespace).
const TEAM: &str = "team-a";
const OPERATOR: &str = "system:serviceaccount:keyward-system:kw-keyward-operator";
const VERIFIER: &str = "system:serviceaccount:keyward-system:kw-keyward-verifier";

/// A keyward process; its address is read from its JSON log.
struct Process {
    child: Child,
    addr: String,
}

impl Process {
    fn start(kubeconfig: &Path, args: &[&str]) -> Self {
        let (child, addr) = common::convergence::serving(kubeconfig, args);
        Self { child, addr }
    }

    /// SIGTERM, as a rollout does; waits for the exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = tokio::task::block_in_place(|| self.child.wait()).expect("exit status");
        assert!(
            status.success(),
            "keyward exits cleanly on SIGTERM: {status}"
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One grant: `namespace` `None` is cluster-wide (a ClusterRole bound by a
/// ClusterRoleBinding).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    namespace: Option<String>,
    group: String,
    resource: String,
    verb: String,
}

impl Grant {
    fn covers(&self, call: &Call) -> bool {
        self.group == call.group
            && self.resource == call.resource
            && self.verb == call.verb
            && (self.namespace.is_none() || self.namespace == call.namespace)
    }
}

/// One recorded call, as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Call {
    namespace: Option<String>,
    group: String,
    /// `apikeys/status` for a subresource.
    resource: String,
    verb: String,
}

impl From<&Recorded> for Call {
    fn from(r: &Recorded) -> Self {
        Self {
            namespace: r.namespace.clone(),
            group: r.group.clone(),
            resource: match &r.subresource {
                Some(sub) => format!("{}/{sub}", r.resource),
                None => r.resource.clone(),
            },
            verb: r.verb.clone(),
        }
    }
}

/// What the rendered chart grants the ServiceAccount `name` in the release namespace.
fn grants(docs: &[Value], service_account: &str) -> BTreeSet<Grant> {
    let role = |kind: &str, name: &Value, namespace: &Value| -> Option<&Value> {
        docs.iter().find(|d| {
            d["kind"] == kind
                && &d["metadata"]["name"] == name
                && (kind == "ClusterRole" || &d["metadata"]["namespace"] == namespace)
        })
    };
    let mut out = BTreeSet::new();
    for binding in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
    {
        let bound = binding["subjects"].as_array().is_some_and(|subjects| {
            subjects.iter().any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == service_account
                    && s["namespace"] == HASH_NS
            })
        });
        if !bound {
            continue;
        }
        let namespace = &binding["metadata"]["namespace"];
        let role_kind = binding["roleRef"]["kind"].as_str().expect("roleRef.kind");
        let rules = role(role_kind, &binding["roleRef"]["name"], namespace)
            .unwrap_or_else(|| panic!("{binding} binds a role the chart does not render"));
        let scope = match (binding["kind"].as_str(), namespace.as_str()) {
            (Some("RoleBinding"), Some(ns)) => Some(ns.to_string()),
            (Some("ClusterRoleBinding"), _) => None,
            _ => panic!("a RoleBinding without a namespace: {binding}"),
        };
        for rule in rules["rules"].as_array().expect("rules") {
            let list = |field: &str| -> Vec<String> {
                rule[field]
                    .as_array()
                    .map(|v| {
                        v.iter()
                            .map(|s| s.as_str().expect("a string").to_string())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            assert!(
                list("resourceNames").is_empty(),
                "resourceNames are not checked here: {rule}"
            );
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        out.insert(Grant {
                            namespace: scope.clone(),
                            group: group.clone(),
                            resource: resource.clone(),
                            verb,
                        });
                    }
                }
            }
        }
    }
    out
}

/// Every call of `user` covered by `granted`, and every grant used by some call.
fn check(user: &str, calls: &BTreeSet<Call>, granted: &BTreeSet<Grant>) -> Vec<String> {
    let mut problems = Vec::new();
    for call in calls {
        if !granted.iter().any(|g| g.covers(call)) {
            problems.push(format!("{user}: the chart does not allow {call:?}"));
        }
    }
    for grant in granted {
        if !calls.iter().any(|c| grant.covers(c)) {
            problems.push(format!("{user}: the chart grants {grant:?}, never called"));
        }
    }
    problems
}

async fn apply<K>(api: &Api<K>, name: &str, body: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::apply("rbac-test"), &Patch::Apply(&body))
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

/// Waits until `name` in `api`, as JSON, satisfies `done`.
async fn wait<K>(api: &Api<K>, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    eventually(&format!("{name}: {what}"), || async {
        let obj = api.get_opt(name).await.ok().flatten()?;
        let v = serde_json::to_value(&obj).ok()?;
        done(&v).then_some(v)
    })
    .await
}

fn ready(v: &Value) -> bool {
    condition(v, "Ready").is_some_and(|c| c["status"] == "True")
}

fn condition<'a>(v: &'a Value, kind: &str) -> Option<&'a Value> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn apikey(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey", "metadata": {"name": name}, "spec": spec})
}

async fn secret(client: &Client, name: &str, data: Value) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), TEAM);
    apply(
        &secrets,
        name,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}),
    )
    .await;
}

/// A workload of `kind` (apps/v1) named `name`.
async fn workload(client: &Client, kind: &str, name: &str) {
    let plural = format!("{}s", kind.to_lowercase());
    let ar = ApiResource {
        group: "apps".into(),
        version: "v1".into(),
        api_version: "apps/v1".into(),
        kind: kind.into(),
        plural,
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), TEAM, &ar);
    let labels = json!({"app": name});
    let mut spec = json!({
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}},
    });
    if kind == "StatefulSet" {
        spec["serviceName"] = json!(name);
    }
    let body =
        json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec});
    api.patch(name, &PatchParams::apply("rbac-test"), &Patch::Apply(&body))
        .await
        .unwrap_or_else(|e| panic!("{kind} {name}: {e}"));
}

/// `keyward verify`-free check: the verifier's answer to `key`.
async fn verify(verifier: &str, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{verifier}/verify"))
        .bearer_auth(key)
        .send()
        .await
        .expect("the verifier answers")
        .status()
        .as_u16()
}

async fn key_in(client: &Client, secret: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), TEAM);
    eventually(&format!("a key in {secret}"), || async {
        let s = secrets.get_opt(secret).await.ok().flatten()?;
        let bytes = s.data?.get("api-key")?.0.clone();
        String::from_utf8(bytes).ok().filter(|k| !k.is_empty())
    })
    .await
}

/// Runs the scenario against a fresh emulator and returns its recorded requests.
async fn scenario(watch_namespaces: bool) -> Vec<Recorded> {
    let emulator = Emulator::start().await.expect("emulator");
    let admin = emulator.client();
    keyward::cli::install_crds(&admin).await.expect("CRDs");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    for ns in [HASH_NS, TEAM] {
        apply(
            &namespaces,
            ns,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = |user: &str| {
        let path = dir
            .path()
            .join(format!("{}.kubeconfig", user.replace(':', "-")));
        std::fs::write(&path, emulator.kubeconfig_yaml_as(TEAM, user)).expect("kubeconfig");
        path
    };
    let (operator_kc, verifier_kc, admin_kc) = (
        kubeconfig(OPERATOR),
        kubeconfig(VERIFIER),
        dir.path().join("admin.kubeconfig"),
    );
    std::fs::write(&admin_kc, emulator.kubeconfig_yaml(TEAM)).expect("kubeconfig");
    let minter = Minter::start().await;
    minter.set("mint", Behaviour::fresh());
    minter.set(
        "openai/v1/models",
        Behaviour::fixed(200, r#"{"object":"list","data":[]}"#),
    );

    // The operator as the chart runs it: leader election in the release namespace.
    let mut run_args = vec![
        "run",
        "--hash-namespace",
        HASH_NS,
        "--leader-elect",
        "--leader-election-namespace",
        HASH_NS,
        "--instance",
        "kw-keyward-operator-0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--allow-host",
        "127.0.0.1",
    ];
    if watch_namespaces {
        run_args.extend(["--namespace", TEAM]);
    }
    let operator = Process::start(&operator_kc, &run_args);
    let verifier = Process::start(
        &verifier_kc,
        &[
            "verifier",
            "--addr",
            "127.0.0.1:0",
            "--hash-namespace",
            HASH_NS,
            "--usage-flush-interval",
            "1s",
        ],
    );
    let apikeys: Api<ApiKey> = Api::namespaced(admin.clone(), TEAM);

    // Issue; use it at the verifier (usage flush); move its Secret; disable it.
    apply(&apikeys, "issued", apikey("issued", json!({}))).await;
    wait(&apikeys, "issued", "Ready", ready).await;
    let issued = key_in(&admin, "issued").await;
    eventually("the issued key verifies", || async {
        (verify(&verifier.addr, &issued).await == 200).then_some(())
    })
    .await;
    wait(&apikeys, "issued", "usage flushed", |v| {
        v["status"]["usage"]["count"].as_u64() >= Some(1)
    })
    .await;
    apply(
        &apikeys,
        "issued",
        apikey("issued", json!({"secretName": "issued-moved"})),
    )
    .await;
    wait(&apikeys, "issued", "moved", |v| {
        v["status"]["secretName"] == "issued-moved" && ready(v)
    })
    .await;
    apply(
        &apikeys,
        "issued",
        apikey(
            "issued",
            json!({"secretName": "issued-moved", "disabled": true}),
        ),
    )
    .await;
    wait(&apikeys, "issued", "disabled", |v| {
        condition(v, "Ready").is_some_and(|c| c["reason"] == "Disabled")
    })
    .await;

    // Import an admin-supplied key.
    secret(
        &admin,
        "legacy",
        json!({"api-key": "legacy_0123456789abcdefghijklmnopqrstuvwxyz"}),
    )
    .await;
    apply(
        &apikeys,
        "imported",
        apikey(
            "imported",
            json!({"importFrom": {"secretRef": {"name": "legacy"}}}),
        ),
    )
    .await;
    wait(&apikeys, "imported", "Ready", ready).await;

    // Retain, delete, adopt.
    apply(
        &apikeys,
        "kept",
        apikey("kept", json!({"deletionPolicy": "Retain"})),
    )
    .await;
    let kept = wait(&apikeys, "kept", "Ready", ready).await;
    apikeys
        .delete("kept", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("kept is gone", || async {
        apikeys.get_opt("kept").await.ok()?.is_none().then_some(())
    })
    .await;
    apply(
        &apikeys,
        "kept",
        apikey("kept", json!({"deletionPolicy": "Retain"})),
    )
    .await;
    wait(&apikeys, "kept", "adopted", |v| {
        ready(v) && v["status"]["fingerprint"] == kept["status"]["fingerprint"]
    })
    .await;

    // ShowOnce: the window closes.
    apply(
        &apikeys,
        "once",
        apikey(
            "once",
            json!({"delivery": "ShowOnce", "revealWindow": "1s"}),
        ),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), TEAM);
    wait(&secrets, "once", "window closed", |v| {
        v["metadata"]["annotations"]["keyward.dev/revealed-at"].is_string()
    })
    .await;

    // Rotation restarting all three workload kinds; then revoke the previous key.
    for (kind, name) in [
        ("Deployment", "web"),
        ("StatefulSet", "db"),
        ("DaemonSet", "agent"),
    ] {
        workload(&admin, kind, name).await;
    }
    let targets = json!([{"kind": "Deployment", "name": "web"}, {"kind": "StatefulSet", "name": "db"}, {"kind": "DaemonSet", "name": "agent"}]);
    apply(
        &apikeys,
        "rotating",
        apikey("rotating", json!({"rotation": {"restartTargets": targets}})),
    )
    .await;
    wait(&apikeys, "rotating", "Ready", ready).await;
    apikeys
        .patch(
            "rotating",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"keyward.dev/rotate": "1"}}})),
        )
        .await
        .expect("rotate");
    wait(&apikeys, "rotating", "rotated", |v| {
        v["status"]["rotationCount"] == 1 && ready(v)
    })
    .await;
    let deployments: Api<k8s_openapi::api::apps::v1::DaemonSet> =
        Api::namespaced(admin.clone(), TEAM);
    wait(&deployments, "agent", "restarted", |v| {
        v["spec"]["template"]["metadata"]["annotations"]["keyward.dev/restarted-at"].is_string()
    })
    .await;
    apikeys
        .patch(
            "rotating",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"keyward.dev/revoke-previous": "1"}}}),
            ),
        )
        .await
        .expect("revoke");
    wait(&apikeys, "rotating", "revoked", |v| {
        v["status"]["lastRevocationRequest"] == "1"
    })
    .await;

    // A pool minted by a webhook with headers from a Secret; take a key and use it once.
    secret(
        &admin,
        "mint-auth",
        json!({"Authorization": "Bearer from-the-secret"}),
    )
    .await;
    let pools: Api<ApiKeyPool> = Api::namespaced(admin.clone(), TEAM);
    apply(
        &pools,
        "one-time",
        json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPool", "metadata": {"name": "one-time"},
            "spec": {"size": 2, "verification": true, "generator": {"type": "Webhook",
                "webhook": {"url": minter.url("mint"), "headersFrom": {"secretRef": {"name": "mint-auth"}}}}}}),
    )
    .await;
    wait(&pools, "one-time", "full", |v| {
        v["status"]["available"] == 2 && ready(v)
    })
    .await;
    let taken = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("--kubeconfig")
            .arg(&admin_kc)
            .args(["pool", "take", "one-time", "-n", TEAM])
            .output()
            .expect("keyward pool take")
    });
    assert!(taken.status.success(), "pool take failed");
    let token = String::from_utf8(taken.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    // Once the pool is full again and keyward is idle, the verifier's first write of a record
    // is refused as a concurrent change would be (409): it re-reads the record and retries.
    wait(&pools, "one-time", "refilled after the take", |v| {
        v["status"]["consumedTotal"] == 1
            && v["status"]["generatedTotal"] == 3
            && v["status"]["available"] == 2
    })
    .await;
    emulator
        .hooks()
        .add_fault(Fault::new("update", "secrets", 1, FaultAction::Fail(409)));
    eventually("the taken key verifies once", || async {
        (verify(&verifier.addr, &token).await == 200).then_some(())
    })
    .await;
    assert_ne!(
        verify(&verifier.addr, &token).await,
        200,
        "a single-use key verifies once"
    );
    pools
        .delete("one-time", &DeleteParams::default())
        .await
        .expect("delete pool");
    eventually("the pool is gone", || async {
        pools
            .get_opt("one-time")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    // A provider credential validated against a local server; the fallback ConfigMap.
    secret(
        &admin,
        "openai-key",
        json!({"api-key": "sk-test-0123456789"}),
    )
    .await;
    let credentials: Api<ProviderCredential> = Api::namespaced(admin.clone(), TEAM);
    apply(
        &credentials,
        "openai",
        json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ProviderCredential", "metadata": {"name": "openai"},
            "spec": {"provider": "openai", "secretRef": {"name": "openai-key"},
                "baseURL": minter.url("openai/v1")}}),
    )
    .await;
    wait(&credentials, "openai", "Valid", |v| {
        v["status"]["phase"] == "Valid"
    })
    .await;
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), TEAM);
    eventually("the fallback ConfigMap", || async {
        config_maps
            .get_opt("keyward-providers")
            .await
            .ok()?
            .map(|_| ())
    })
    .await;
    credentials
        .delete("openai", &DeleteParams::default())
        .await
        .expect("delete credential");
    eventually(
        "the fallback ConfigMap goes with the last credential",
        || async {
            config_maps
                .get_opt("keyward-providers")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;

    // Delete keys: the workload Secret and the hash record go with them.
    for name in ["issued", "imported", "rotating", "once"] {
        apikeys
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    eventually("the keys are gone", || async {
        apikeys
            .list(&Default::default())
            .await
            .ok()
            .filter(|l| {
                l.items
                    .iter()
                    .all(|k| k.metadata.name.as_deref() == Some("kept"))
            })
            .map(|_| ())
    })
    .await;

    // SIGTERM: the operator releases its Lease; both exit cleanly.
    operator.stop();
    verifier.stop();
    emulator.hooks().requests()
}

fn calls_of(requests: &[Recorded], user: &str) -> BTreeSet<Call> {
    requests
        .iter()
        .filter(|r| r.user == user)
        .map(Call::from)
        .collect()
}

async fn least_privilege(watch_namespaces: bool, values: &[String]) {
    let requests = scenario(watch_namespaces).await;
    let docs = rendered(values);
    let operator_calls = calls_of(&requests, OPERATOR);
    let verifier_calls = calls_of(&requests, VERIFIER);
    assert!(
        !operator_calls.is_empty() && !verifier_calls.is_empty(),
        "both users made calls"
    );
    if watch_namespaces {
        let cluster_wide: Vec<_> = operator_calls
            .iter()
            .chain(&verifier_calls)
            .filter(|c| c.namespace.is_none())
            .collect();
        assert!(
            cluster_wide.is_empty(),
            "watchNamespaces mode makes no cluster-scoped call: {cluster_wide:#?}"
        );
    }
    let mut problems = check(
        "operator",
        &operator_calls,
        &grants(&docs, &format!("{RELEASE}-keyward-operator")),
    );
    problems.extend(check(
        "verifier",
        &verifier_calls,
        &grants(&docs, &format!("{RELEASE}-keyward-verifier")),
    ));
    assert!(
        problems.is_empty(),
        "the chart's RBAC differs from what the code calls:\n{}",
        problems.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_wide_rbac_is_exactly_what_the_code_calls() {
    least_privilege(false, &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_namespaces_rbac_is_exactly_what_the_code_calls() {
    let values = ["--set".to_string(), format!("watchNamespaces={{{TEAM}}}")];
    least_privilege(true, &values).await;
}

/// The check itself: a call the chart does not allow, and a grant never used, are both
/// reported.
#[test]
fn the_check_reports_missing_and_unused_grants() {
    let call = |verb: &str| Call {
        namespace: Some(TEAM.into()),
        group: String::new(),
        resource: "secrets".into(),
        verb: verb.into(),
    };
    let grant = |ns: Option<&str>, verb: &str| Grant {
        namespace: ns.map(str::to_string),
        group: String::new(),
        resource: "secrets".into(),
        verb: verb.into(),
    };
    let calls: BTreeSet<_> = [call("get")].into();
    assert!(check("u", &calls, &[grant(None, "get")].into()).is_empty());
    assert!(check("u", &calls, &[grant(Some(TEAM), "get")].into()).is_empty());
    assert_eq!(
        check("u", &calls, &[grant(Some("other"), "get")].into()).len(),
        2,
        "another namespace's Role neither covers the call nor is used"
    );
    let unused = check(
        "u",
        &calls,
        &[grant(None, "get"), grant(None, "delete")].into(),
    );
    assert_eq!(unused.len(), 1, "{unused:?}");
    assert!(unused[0].contains("never called"));
}
