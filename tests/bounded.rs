//! Bounded work at any scale: argon2 only on the process's hashing pool, caches instead of
//! reads, scoped watches. Counted at the emulator and at argon2's entry points.

mod common;

use common::operator::{Operator, Setup};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use keyward::crd::ApiKey;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_pending_keys_never_run_more_argon2_than_workers() {
    let op = Operator::start_with(Setup {
        hash_workers: Some(2),
        ..Setup::default()
    })
    .await;
    let (_, peak_before, runs_before) = keyward::keys::hash::argon2_runs();
    assert_eq!(peak_before, 0, "nothing hashed yet");
    let names: Vec<String> = (0..200).map(|i| format!("bulk-{i}")).collect();
    // All applied at once, as `kubectl apply` of one file would.
    futures::future::join_all(names.iter().map(|n| op.apply(n, json!({})))).await;
    for name in &names {
        op.wait_ready(name).await;
    }
    let (running, peak, runs) = keyward::keys::hash::argon2_runs();
    assert!(runs - runs_before >= 200, "every key hashed: {runs}");
    assert_eq!(running, 0);
    assert!(
        peak <= 2,
        "at most --hash-workers (2) argon2 runs at once, saw {peak}"
    );
    let stats = op.context().hash_pool.stats();
    assert!(stats.peak_running <= 2, "{stats:?}");
}

fn deployments(op: &Operator) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps", "v1", "Deployment"),
        "deployments",
    );
    Api::default_namespaced_with(op.client.clone(), &resource)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_converged_reconcile_makes_no_api_request_restart_targets_included() {
    let op = Operator::start().await;
    if op
        .hooks("a_converged_reconcile_makes_no_api_request_restart_targets_included")
        .is_none()
    {
        return;
    }
    let web: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}}},
    }))
    .expect("deployment");
    deployments(&op)
        .create(&PostParams::default(), &web)
        .await
        .expect("deployment");
    let spec = json!({"rotation": {"restartTargets": [{"kind": "Deployment", "name": "web"}]}});
    op.apply("quiet", spec.clone()).await;
    op.wait_ready("quiet").await;
    // Rotate once, so the restart target has been rolled and recorded.
    let rotate = json!({"metadata": {"annotations": {"keyward.dev/rotate": "1"}}});
    op.apikeys()
        .patch("quiet", &PatchParams::default(), &Patch::Merge(&rotate))
        .await
        .expect("rotate");
    op.wait_for("quiet", "one rotation", |a| {
        a.status.as_ref().is_some_and(|s| s.rotation_count == 1)
    })
    .await;
    op.wait_idle().await;
    // Touch the workload Secret in a way that changes nothing keyward cares about: the
    // watch wakes the controller, which must find everything in its caches.
    let before = op.reconciles();
    op.h().reset_counters();
    let poke = json!({"metadata": {"labels": {"poked": "yes"}}});
    let poked: Secret = op
        .secrets()
        .patch("quiet", &PatchParams::default(), &Patch::Merge(&poke))
        .await
        .expect("poke");
    common::eventually("a reconcile after the poke", || async {
        (op.reconciles() > before).then_some(())
    })
    .await;
    op.wait_idle().await;
    let requests = op.h().requests();
    let by_test = requests
        .iter()
        .position(|r| r.verb == "patch" && r.name.as_deref() == Some("quiet"))
        .expect("the test's own patch is logged");
    let keyward: Vec<_> = requests[by_test + 1..].to_vec();
    assert!(
        keyward.is_empty(),
        "a converged reconcile made API requests: {keyward:#?}"
    );
    assert_eq!(
        poked
            .metadata
            .labels
            .unwrap_or_default()
            .get("poked")
            .map(String::as_str),
        Some("yes")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scoped_operator_makes_no_cluster_wide_request() {
    let setup = Setup {
        namespaces: vec!["team-a".into()],
        ..Setup::default()
    };
    let emulator_only = std::env::var("KEYWARD_TEST_KUBECONFIG").is_err();
    if !emulator_only {
        eprintln!("skipped on a real cluster: needs the emulator's request log");
        return;
    }
    let mut op = Operator::start_with(setup).await;
    let namespaces: Api<Namespace> = Api::all(op.client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "team-a"}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("team-a");
    // From a fresh start, with the namespace in place as it would be in a cluster.
    op.h().reset_counters();
    op.restart().await;
    let apikeys: Api<ApiKey> = Api::namespaced(op.client.clone(), "team-a");
    let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey", "metadata": {"name": "scoped"}, "spec": {}});
    apikeys
        .patch("scoped", &PatchParams::apply("test"), &Patch::Apply(&body))
        .await
        .expect("applied");
    common::eventually("the scoped ApiKey to be Ready", || async {
        let ak = apikeys.get("scoped").await.expect("get");
        ak.status
            .and_then(|s| {
                keyward::conditions::ready(&s.conditions)
                    .map(|c| c.status == keyward::crd::ConditionStatus::True)
            })
            .filter(|ready| *ready)
    })
    .await;
    op.wait_idle().await;
    let requests = op.h().requests();
    let cluster_wide: Vec<_> = requests.iter().filter(|r| r.namespace.is_none()).collect();
    assert!(
        cluster_wide.is_empty(),
        "cluster-wide requests by a --namespace team-a operator: {cluster_wide:#?}"
    );
    let watched: std::collections::BTreeSet<_> = requests
        .iter()
        .filter(|r| r.verb == "watch" || r.verb == "list")
        .map(|r| (r.resource.clone(), r.namespace.clone().unwrap_or_default()))
        .collect();
    for expected in [
        ("apikeys", "team-a"),
        ("secrets", "team-a"),
        ("secrets", common::operator::HASH_NS),
    ] {
        assert!(
            watched.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} watched: {watched:?}"
        );
    }
}
