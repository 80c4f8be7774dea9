//! Conformance of the emulator with kube-apiserver, through the real kube-rs client over
//! real HTTP: one test per semantic keyward or kubectl relies on.

mod common;

use std::time::Duration;

use common::{api_error, start};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keyward_emulator::{Emulator, Fault, FaultAction};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions,
    PropagationPolicy, WatchEvent, WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use serde_json::{Value, json};

fn secret(name: &str, labels: Value) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "labels": labels},
        "stringData": {"k": "v"},
    }))
    .expect("valid secret")
}

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.dev"},
        "spec": {
            "group": "test.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"], "categories": ["test"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "properties": {
                                "size": {"type": "integer", "minimum": 1},
                                "color": {"type": "string", "default": "blue", "enum": ["blue", "red"]},
                                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                            },
                            "x-kubernetes-validations": [{"rule": "self.size < 100", "message": "size must stay below 100"}],
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "observed": {"type": "integer"},
                                "conditions": {"type": "array", "items": {"type": "object", "properties": {
                                    "type": {"type": "string"}, "status": {"type": "string"}}}},
                            },
                        },
                    },
                }},
            }],
        },
    }))
    .expect("valid CRD")
}

fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.dev", "v1", "Widget"),
        "widgets",
    )
}

async fn install_widgets(client: &Client) -> Api<DynamicObject> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &widget_crd())
        .await
        .expect("CRD accepted");
    Api::namespaced_with(client.clone(), "default", &widget_resource())
}

fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "test.dev/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}))
        .expect("valid widget")
}

fn rv(meta: &kube::core::ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .unwrap_or_default()
        .parse()
        .expect("numeric resourceVersion")
}

#[tokio::test]
async fn discovery_serves_builtins_and_crds() {
    let (_emu, client) = start().await;
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(version.major, "1");
    install_widgets(&client).await;
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery runs");
    let mut found = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            found.push((
                ar.group.clone(),
                ar.plural.clone(),
                caps.scope == kube::discovery::Scope::Namespaced,
            ));
        }
    }
    for expected in [
        ("", "secrets", true),
        ("", "namespaces", false),
        ("apps", "deployments", true),
        ("coordination.k8s.io", "leases", true),
        ("events.k8s.io", "events", true),
        ("test.dev", "widgets", true),
    ] {
        assert!(
            found.contains(&(expected.0.to_string(), expected.1.to_string(), expected.2)),
            "{expected:?} not discovered in {found:?}"
        );
    }
}

#[tokio::test]
async fn create_get_conflicts_and_not_found() {
    let (_emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let created = secrets
        .create(&PostParams::default(), &secret("a", json!({})))
        .await
        .expect("created");
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        created
            .data
            .as_ref()
            .and_then(|d| d.get("k"))
            .map(|b| b.0.clone()),
        Some(b"v".to_vec()),
        "stringData folds into data"
    );
    assert!(created.string_data.is_none());
    let again = api_error(
        secrets
            .create(&PostParams::default(), &secret("a", json!({})))
            .await
            .expect_err("duplicate"),
    );
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(again.message, "secrets \"a\" already exists");
    let missing = api_error(secrets.get("nope").await.expect_err("missing"));
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "secrets \"nope\" not found");
    // generateName
    let mut generated = secret("", json!({}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let g = secrets
        .create(&PostParams::default(), &generated)
        .await
        .expect("generated name");
    assert!(
        g.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("gen-") && n.len() == 9)
    );
}

#[tokio::test]
async fn one_resource_version_counter_across_kinds() {
    let (_emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let s = secrets
        .create(&PostParams::default(), &secret("a", json!({})))
        .await
        .expect("secret");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"x": "1"}})).expect("cm");
    let c = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect("configmap");
    let s2 = secrets
        .create(&PostParams::default(), &secret("b", json!({})))
        .await
        .expect("secret");
    assert!(rv(&s.metadata) < rv(&c.metadata) && rv(&c.metadata) < rv(&s2.metadata));
    let list = secrets.list(&ListParams::default()).await.expect("list");
    assert!(rv(&list.metadata.clone().into_meta()) >= rv(&s2.metadata));
}

trait IntoMeta {
    fn into_meta(self) -> kube::core::ObjectMeta;
}

impl IntoMeta for kube::core::ListMeta {
    fn into_meta(self) -> kube::core::ObjectMeta {
        kube::core::ObjectMeta {
            resource_version: self.resource_version,
            ..Default::default()
        }
    }
}

#[tokio::test]
async fn stale_updates_conflict() {
    let (_emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let original = secrets
        .create(&PostParams::default(), &secret("a", json!({})))
        .await
        .expect("created");
    let mut first = original.clone();
    first.metadata.labels = Some([("x".to_string(), "1".to_string())].into());
    secrets
        .replace("a", &PostParams::default(), &first)
        .await
        .expect("first update wins");
    let mut stale = original.clone();
    stale.metadata.labels = Some([("x".to_string(), "2".to_string())].into());
    let err = api_error(
        secrets
            .replace("a", &PostParams::default(), &stale)
            .await
            .expect_err("stale"),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );
    // A merge patch carrying a stale resourceVersion is refused too.
    let patch = json!({"metadata": {"resourceVersion": original.metadata.resource_version, "labels": {"y": "1"}}});
    let err = api_error(
        secrets
            .patch("a", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect_err("stale patch"),
    );
    assert_eq!(err.code, 409);
}

#[tokio::test]
async fn no_op_writes_do_not_bump_the_resource_version() {
    let (_emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let created = secrets
        .create(&PostParams::default(), &secret("a", json!({"x": "1"})))
        .await
        .expect("created");
    let patched = secrets
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .expect("patched");
    assert_eq!(
        patched.metadata.resource_version,
        created.metadata.resource_version
    );
}

#[tokio::test]
async fn watch_from_a_version_delivers_every_later_change_in_order() {
    let (_emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let first = secrets
        .create(&PostParams::default(), &secret("a", json!({})))
        .await
        .expect("a");
    secrets
        .create(&PostParams::default(), &secret("b", json!({})))
        .await
        .expect("b");
    secrets
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .expect("patch a");
    secrets
        .delete("b", &DeleteParams::default())
        .await
        .expect("delete b");
    let from = first.metadata.resource_version.clone().expect("rv");
    let mut stream = secrets
        .watch(&WatchParams::default(), &from)
        .await
        .expect("watch")
        .boxed();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("event arrives")
            .expect("ok")
        {
            Some(WatchEvent::Added(s)) => {
                seen.push(format!("ADDED {}", s.metadata.name.unwrap_or_default()))
            }
            Some(WatchEvent::Modified(s)) => {
                seen.push(format!("MODIFIED {}", s.metadata.name.unwrap_or_default()))
            }
            Some(WatchEvent::Deleted(s)) => {
                seen.push(format!("DELETED {}", s.metadata.name.unwrap_or_default()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["ADDED b", "MODIFIED a", "DELETED b"]);
    // Later changes arrive live.
    secrets
        .create(&PostParams::default(), &secret("c", json!({})))
        .await
        .expect("c");
    let live = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("live event")
        .expect("ok");
    assert!(matches!(live, Some(WatchEvent::Added(s)) if s.metadata.name.as_deref() == Some("c")));
}

#[tokio::test]
async fn watch_bookmarks_and_gone() {
    let emulator = Emulator::start_with(keyward_emulator::Options {
        bookmark_interval: Duration::from_millis(50),
        history: 3,
        ..Default::default()
    })
    .await
    .expect("starts");
    let client =
        Client::try_from(Config::new(emulator.url().parse().expect("url"))).expect("client");
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let first = secrets
        .create(&PostParams::default(), &secret("a", json!({})))
        .await
        .expect("a");
    let params = WatchParams::default(); // bookmarks are on by default
    let mut stream = secrets
        .watch(
            &params,
            &first.metadata.resource_version.clone().expect("rv"),
        )
        .await
        .expect("watch")
        .boxed();
    let event = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("bookmark")
        .expect("ok");
    assert!(matches!(event, Some(WatchEvent::Bookmark(_))), "{event:?}");
    for name in ["b", "c", "d", "e", "f"] {
        secrets
            .create(&PostParams::default(), &secret(name, json!({})))
            .await
            .expect("created");
    }
    let mut old = secrets
        .watch(
            &WatchParams::default(),
            &first.metadata.resource_version.clone().expect("rv"),
        )
        .await
        .expect("watch")
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), old.try_next())
        .await
        .expect("answer")
        .expect("ok")
    {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn server_side_apply_owns_fields_and_conflicts() {
    let (_emu, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let alice = PatchParams::apply("alice");
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1", "y": "1"}});
    let created = cms
        .patch("c", &alice, &Patch::Apply(&body))
        .await
        .expect("apply creates");
    let managed = created
        .metadata
        .managed_fields
        .clone()
        .expect("managedFields recorded");
    assert_eq!(managed[0].manager.as_deref(), Some("alice"));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));
    let bob = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"y": "2"}});
    let err = api_error(
        cms.patch("c", &PatchParams::apply("bob"), &Patch::Apply(&bob))
            .await
            .expect_err("conflict"),
    );
    assert_eq!(err.code, 409);
    assert!(
        err.message.contains("conflict with \"alice\""),
        "{}",
        err.message
    );
    let forced = cms
        .patch("c", &PatchParams::apply("bob").force(), &Patch::Apply(&bob))
        .await
        .expect("forced");
    assert_eq!(
        forced
            .data
            .as_ref()
            .and_then(|d| d.get("y"))
            .map(String::as_str),
        Some("2")
    );
    // Alice stops declaring x: it goes; y now belongs to bob and stays.
    let alice_again =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
    let after = cms
        .patch("c", &alice, &Patch::Apply(&alice_again))
        .await
        .expect("apply");
    assert_eq!(
        after
            .data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![("y".to_string(), "2".to_string())]
    );
    // Apply needs a field manager: 422 on the PatchOptions (ValidatePatchOptions).
    let err = api_error(
        cms.patch("c", &PatchParams::default(), &Patch::Apply(&body))
            .await
            .expect_err("no manager"),
    );
    assert_eq!(err.code, 422);
}

#[tokio::test]
async fn status_subresource_split_and_generation() {
    let (_emu, client) = start().await;
    let widgets = install_widgets(&client).await;
    let mut w = widget("w", json!({"size": 1}));
    w.data["status"] = json!({"observed": 7});
    let created = widgets
        .create(&PostParams::default(), &w)
        .await
        .expect("created");
    assert_eq!(created.metadata.generation, Some(1));
    assert!(
        created.data.get("status").is_none(),
        "status is not written through the main resource"
    );
    assert_eq!(created.data["spec"]["color"], "blue", "defaults applied");
    let status = widgets
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"observed": 1}, "spec": {"size": 50}})),
        )
        .await
        .expect("status patch");
    assert_eq!(status.data["status"]["observed"], 1);
    assert_eq!(
        status.data["spec"]["size"], 1,
        "spec is not written through /status"
    );
    assert_eq!(
        status.metadata.generation,
        Some(1),
        "status changes do not bump generation"
    );
    let labelled = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"a": "b"}}, "status": {"observed": 9}})),
        )
        .await
        .expect("metadata patch");
    assert_eq!(
        labelled.metadata.generation,
        Some(1),
        "metadata changes do not bump generation"
    );
    assert_eq!(
        labelled.data["status"]["observed"], 1,
        "status is not written through the main resource"
    );
    let resized = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"size": 2}})),
        )
        .await
        .expect("spec patch");
    assert_eq!(resized.metadata.generation, Some(2));
}

#[tokio::test]
async fn custom_resources_are_validated_against_their_schema() {
    let (_emu, client) = start().await;
    let widgets = install_widgets(&client).await;
    let err = api_error(
        widgets
            .create(&PostParams::default(), &widget("w", json!({"size": "big"})))
            .await
            .expect_err("wrong type"),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message
            .contains("spec.size in body must be of type integer"),
        "{}",
        err.message
    );
    assert!(
        err.message.starts_with("Widget.test.dev \"w\" is invalid"),
        "{}",
        err.message
    );
    let err = api_error(
        widgets
            .create(&PostParams::default(), &widget("w", json!({"size": 0})))
            .await
            .expect_err("minimum"),
    );
    assert!(
        err.message.contains("should be greater than or equal to 1"),
        "{}",
        err.message
    );
    let err = api_error(
        widgets
            .create(&PostParams::default(), &widget("w", json!({"size": 150})))
            .await
            .expect_err("CEL"),
    );
    assert!(
        err.message.contains("size must stay below 100"),
        "{}",
        err.message
    );
    let err = api_error(
        widgets
            .create(&PostParams::default(), &widget("w", json!({})))
            .await
            .expect_err("required"),
    );
    assert!(
        err.message.contains("spec.size: Required value"),
        "{}",
        err.message
    );
    let err = api_error(
        widgets
            .create(
                &PostParams::default(),
                &widget("w", json!({"size": 1, "color": "green"})),
            )
            .await
            .expect_err("enum"),
    );
    assert!(
        err.message.contains("Unsupported value: \"green\""),
        "{}",
        err.message
    );
    // Unknown fields: Strict refuses, Warn and Ignore prune.
    let post = |validation: &str| {
        let body =
            serde_json::to_vec(&widget("w", json!({"size": 1, "shape": "round"}))).expect("json");
        http::Request::post(format!(
            "/apis/test.dev/v1/namespaces/default/widgets?fieldValidation={validation}"
        ))
        .header("Content-Type", "application/json")
        .body(body)
        .expect("request")
    };
    let err = api_error(
        client
            .request::<Value>(post("Strict"))
            .await
            .expect_err("strict"),
    );
    assert_eq!(err.code, 400);
    assert!(
        err.message.contains("unknown field \"spec.shape\""),
        "{}",
        err.message
    );
    let pruned = client
        .request::<Value>(post("Ignore"))
        .await
        .expect("ignored");
    assert!(
        pruned["spec"].get("shape").is_none(),
        "unknown fields are pruned"
    );
    assert!(widgets.get_opt("w").await.expect("get").is_some());
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (_emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let mut s = secret("f", json!({}));
    s.metadata.finalizers = Some(vec!["test.dev/hold".into()]);
    secrets
        .create(&PostParams::default(), &s)
        .await
        .expect("created");
    let pending = secrets
        .delete("f", &DeleteParams::default())
        .await
        .expect("delete accepted");
    let marked = pending.left().expect("still exists while finalized");
    assert!(marked.metadata.deletion_timestamp.is_some());
    let err = api_error(
        secrets
            .patch(
                "f",
                &PatchParams::default(),
                &Patch::Merge(
                    &json!({"metadata": {"finalizers": ["test.dev/hold", "test.dev/other"]}}),
                ),
            )
            .await
            .expect_err("no new finalizers while deleting"),
    );
    assert_eq!(err.code, 422);
    secrets
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("release");
    assert!(
        secrets.get_opt("f").await.expect("get").is_none(),
        "gone once the last finalizer is removed"
    );
}

#[tokio::test]
async fn delete_preconditions() {
    let (_emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let s = secrets
        .create(&PostParams::default(), &secret("p", json!({})))
        .await
        .expect("created");
    let wrong_uid = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("other".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    assert_eq!(
        api_error(
            secrets
                .delete("p", &wrong_uid)
                .await
                .expect_err("uid mismatch")
        )
        .code,
        409
    );
    let wrong_rv = DeleteParams {
        preconditions: Some(Preconditions {
            uid: None,
            resource_version: Some("1".into()),
        }),
        ..Default::default()
    };
    assert_eq!(
        api_error(
            secrets
                .delete("p", &wrong_rv)
                .await
                .expect_err("rv mismatch")
        )
        .code,
        409
    );
    assert!(
        secrets.get_opt("p").await.expect("get").is_some(),
        "nothing deleted by a failed precondition"
    );
    let right = DeleteParams {
        preconditions: Some(Preconditions {
            uid: s.metadata.uid.clone(),
            resource_version: s.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    secrets
        .delete("p", &right)
        .await
        .expect("matching preconditions delete");
    assert_eq!(
        api_error(secrets.delete("p", &right).await.expect_err("already gone")).code,
        404
    );
}

fn owned_secret(name: &str, owner: &ConfigMap) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name, "uid": owner.metadata.uid,
            "controller": true, "blockOwnerDeletion": true,
        }]},
    }))
    .expect("secret")
}

#[tokio::test]
async fn owner_reference_cascade() {
    let (_emu, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    for (policy, expect_dependent) in [
        (PropagationPolicy::Background, false),
        (PropagationPolicy::Foreground, false),
        (PropagationPolicy::Orphan, true),
    ] {
        let owner: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "owner"}})).expect("cm");
        let owner = cms
            .create(&PostParams::default(), &owner)
            .await
            .expect("owner");
        secrets
            .create(&PostParams::default(), &owned_secret("dep", &owner))
            .await
            .expect("dependent");
        let dp = DeleteParams {
            propagation_policy: Some(policy.clone()),
            ..Default::default()
        };
        cms.delete("owner", &dp).await.expect("owner deleted");
        assert!(
            cms.get_opt("owner").await.expect("get").is_none(),
            "{policy:?}: owner gone"
        );
        let dependent = secrets.get_opt("dep").await.expect("get");
        assert_eq!(dependent.is_some(), expect_dependent, "{policy:?}");
        if let Some(d) = dependent {
            assert!(
                d.metadata.owner_references.is_none(),
                "orphaned dependents lose the reference"
            );
            secrets
                .delete("dep", &DeleteParams::default())
                .await
                .expect("cleanup");
        }
    }
}

#[tokio::test]
async fn label_and_field_selectors() {
    let (_emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    secrets
        .create(
            &PostParams::default(),
            &secret("a", json!({"app": "web", "tier": "front"})),
        )
        .await
        .expect("a");
    secrets
        .create(&PostParams::default(), &secret("b", json!({"app": "api"})))
        .await
        .expect("b");
    secrets
        .create(&PostParams::default(), &secret("c", json!({})))
        .await
        .expect("c");
    let names = |list: kube::core::ObjectList<Secret>| -> Vec<String> {
        list.items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect()
    };
    for (selector, expected) in [
        ("app=web", vec!["a"]),
        ("app!=web", vec!["b", "c"]),
        ("app in (web,api)", vec!["a", "b"]),
        ("app notin (web)", vec!["b", "c"]),
        ("tier", vec!["a"]),
        ("!app", vec!["c"]),
    ] {
        let got = names(
            secrets
                .list(&ListParams::default().labels(selector))
                .await
                .expect("list"),
        );
        assert_eq!(got, expected, "{selector}");
    }
    let got = names(
        secrets
            .list(&ListParams::default().fields("metadata.name=b"))
            .await
            .expect("list"),
    );
    assert_eq!(got, vec!["b"]);
    let got = names(
        secrets
            .list(&ListParams::default().fields("metadata.namespace=default,metadata.name!=b"))
            .await
            .expect("list"),
    );
    assert_eq!(got, vec!["a", "c"]);
    let err = api_error(
        secrets
            .list(&ListParams::default().fields("spec.nope=1"))
            .await
            .expect_err("unsupported field"),
    );
    assert_eq!(err.code, 400);
    assert!(
        err.message.contains("field label not supported"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn namespaced_creates_need_the_namespace() {
    let (_emu, client) = start().await;
    let nowhere: Api<Secret> = Api::namespaced(client.clone(), "nowhere");
    let err = api_error(
        nowhere
            .create(&PostParams::default(), &secret("a", json!({})))
            .await
            .expect_err("no namespace"),
    );
    assert_eq!(err.code, 404);
    assert!(
        err.message.contains("namespaces \"nowhere\" not found"),
        "{}",
        err.message
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["default", "kube-system"] {
        assert!(
            namespaces.get_opt(ns).await.expect("get").is_some(),
            "{ns} exists at start"
        );
    }
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "nowhere"}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
    nowhere
        .create(&PostParams::default(), &secret("a", json!({})))
        .await
        .expect("now it works");
    namespaces
        .delete("nowhere", &DeleteParams::default())
        .await
        .expect("namespace deleted");
    assert!(
        nowhere.get_opt("a").await.expect("get").is_none(),
        "contents go with the namespace"
    );
}

#[tokio::test]
async fn paging_with_limit_and_continue() {
    let (_emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    for i in 0..7 {
        secrets
            .create(&PostParams::default(), &secret(&format!("s{i}"), json!({})))
            .await
            .expect("created");
    }
    let mut names = Vec::new();
    let mut params = ListParams::default().limit(3);
    let mut pages = 0;
    loop {
        let page = secrets.list(&params).await.expect("page");
        pages += 1;
        names.extend(page.items.into_iter().filter_map(|s| s.metadata.name));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, (0..7).map(|i| format!("s{i}")).collect::<Vec<_>>());
}

/// Paged lists are one snapshot to the client: every page reports the first page's
/// resourceVersion, so a watch from it delivers what changed while later pages were read
/// (https://kubernetes.io/docs/reference/using-api/api-concepts/#retrieving-large-results-sets-in-chunks).
#[tokio::test]
async fn paged_lists_report_the_first_pages_version_so_no_change_is_missed() {
    let (emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    for name in ["a", "b", "c"] {
        secrets
            .create(&PostParams::default(), &secret(name, json!({})))
            .await
            .expect("created");
    }
    let first = secrets
        .list(&ListParams::default().limit(1))
        .await
        .expect("page 1");
    let snapshot = first.metadata.resource_version.clone().expect("rv");
    let token = first.metadata.continue_.clone().expect("more pages");
    // While the client pages: one object it already has and one it has not changes.
    for name in ["a", "c"] {
        let patch = json!({"metadata": {"labels": {"changed": "yes"}}});
        secrets
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patched");
    }
    let mut params = ListParams::default().limit(1).continue_token(&token);
    loop {
        let page = secrets.list(&params).await.expect("later page");
        assert_eq!(
            page.metadata.resource_version.as_deref(),
            Some(snapshot.as_str()),
            "every page reports the first page's version"
        );
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => params = params.continue_token(&t),
            _ => break,
        }
    }
    let mut events = std::pin::pin!(
        secrets
            .watch(&WatchParams::default(), &snapshot)
            .await
            .expect("watch")
    );
    let mut changed = std::collections::BTreeSet::new();
    while changed.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("the changes are delivered")
            .expect("stream open")
            .expect("event");
        if let WatchEvent::Modified(s) = event {
            changed.insert(s.metadata.name.unwrap_or_default());
        }
    }
    assert_eq!(changed, ["a".to_string(), "c".to_string()].into());
    // A continue token older than the watch history is refused, as the apiserver does.
    emu.store().compact();
    secrets
        .create(&PostParams::default(), &secret("d", json!({})))
        .await
        .expect("created");
    let err = secrets
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .expect_err("expired");
    let status = api_error(err);
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn events_share_one_store_across_both_apis() {
    let (_emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let s = secrets
        .create(&PostParams::default(), &secret("a", json!({})))
        .await
        .expect("created");
    let recorder = kube::runtime::events::Recorder::new(client.clone(), "keyward-test".into());
    recorder
        .publish(
            &kube::runtime::events::Event {
                type_: kube::runtime::events::EventType::Normal,
                reason: "Tested".into(),
                note: Some("hello from events.k8s.io/v1".into()),
                action: "Test".into(),
                secondary: None,
            },
            &s.object_ref(&()),
        )
        .await
        .expect("event recorded");
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::default_namespaced(client.clone());
    let events = core
        .list(&ListParams::default().fields("involvedObject.name=a"))
        .await
        .expect("core/v1 list");
    assert_eq!(events.items.len(), 1);
    assert_eq!(events.items[0].reason.as_deref(), Some("Tested"));
    assert_eq!(
        events.items[0].message.as_deref(),
        Some("hello from events.k8s.io/v1")
    );
}

use kube::Resource;

#[tokio::test]
async fn fault_hooks_and_counters() {
    let (emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    emu.hooks()
        .add_fault(Fault::new("create", "secrets", 2, FaultAction::Fail(500)));
    secrets
        .create(&PostParams::default(), &secret("a", json!({})))
        .await
        .expect("first create passes");
    let err = api_error(
        secrets
            .create(&PostParams::default(), &secret("b", json!({})))
            .await
            .expect_err("second fails"),
    );
    assert_eq!(err.code, 500);
    assert!(
        secrets.get_opt("b").await.expect("get").is_none(),
        "a failed request does nothing"
    );
    secrets
        .create(&PostParams::default(), &secret("b", json!({})))
        .await
        .expect("third passes");
    emu.hooks().add_fault(Fault::new(
        "patch",
        "secrets",
        1,
        FaultAction::FailAfter(500),
    ));
    let err = api_error(
        secrets
            .patch(
                "a",
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"labels": {"x": "1"}}})),
            )
            .await
            .expect_err("reported as failed"),
    );
    assert_eq!(err.code, 500);
    let after = secrets.get("a").await.expect("get");
    assert_eq!(
        after
            .metadata
            .labels
            .unwrap_or_default()
            .get("x")
            .map(String::as_str),
        Some("1"),
        "but the write happened"
    );
    emu.hooks().add_fault(Fault::new(
        "get",
        "secrets",
        1,
        FaultAction::Delay(Duration::from_millis(200)),
    ));
    let started = std::time::Instant::now();
    secrets.get("a").await.expect("delayed get");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(emu.hooks().count("create", "secrets"), 3);
    assert_eq!(emu.hooks().count("patch", "secrets"), 1);
    emu.hooks().reset_counters();
    assert_eq!(emu.hooks().writes(), 0);
}

#[tokio::test]
async fn dropped_watches_end_the_stream() {
    let (emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let mut stream = secrets
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watch")
        .boxed();
    emu.hooks().drop_watches();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("stream ends promptly");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test]
async fn table_output_uses_printer_columns() {
    let (emu, client) = start().await;
    let widgets = install_widgets(&client).await;
    widgets
        .create(&PostParams::default(), &widget("w", json!({"size": 3})))
        .await
        .expect("created");
    widgets
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            ),
        )
        .await
        .expect("status");
    let http = reqwest_like_get(
        &emu,
        "/apis/test.dev/v1/namespaces/default/widgets",
        "application/json;as=Table;v=v1;g=meta.k8s.io",
    )
    .await;
    assert_eq!(http["kind"], "Table");
    let columns: Vec<&str> = http["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["Name", "Size", "Ready"]);
    assert_eq!(http["rows"][0]["cells"], json!(["w", 3, "True"]));
}

/// A GET through the kube client's raw request API with a chosen Accept header.
async fn reqwest_like_get(emu: &Emulator, path: &str, accept: &str) -> Value {
    let client = Client::try_from(Config::new(emu.url().parse().expect("url"))).expect("client");
    let request = http::Request::get(path)
        .header("Accept", accept)
        .body(Vec::new())
        .expect("request");
    client.request::<Value>(request).await.expect("response")
}

#[tokio::test]
async fn bad_input_is_refused_with_a_status() {
    let (emu, client) = start().await;
    let post = |path: &str, body: &str| {
        http::Request::post(path)
            .header("Content-Type", "application/json")
            .body(body.as_bytes().to_vec())
            .expect("request")
    };
    let err = client
        .request::<Value>(post("/api/v1/namespaces/default/secrets", "{not json"))
        .await
        .expect_err("malformed");
    let status = api_error(err);
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
    let err = client
        .request::<Value>(post("/apis/nope.dev/v1/namespaces/default/things", "{}"))
        .await
        .expect_err("unknown resource");
    assert_eq!(api_error(err).code, 404);
    let yaml = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("Content-Type", "application/yaml")
        .body(b"metadata: [unclosed".to_vec())
        .expect("request");
    assert_eq!(
        api_error(
            client
                .request::<Value>(yaml)
                .await
                .expect_err("malformed yaml")
        )
        .code,
        400
    );
    drop(emu);
}

#[tokio::test]
async fn deployments_serve_strategic_merge_patch() {
    let (_emu, client) = start().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}},
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("created");
    let patched = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"metadata": {"annotations": {"keyward.dev/restarted-at": "x"}},
                "spec": {"containers": [{"name": "b", "image": "b:2"}]}}}})),
        )
        .await
        .expect("patched");
    let containers = patched
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec")
        .containers;
    assert_eq!(
        containers
            .iter()
            .map(|c| c.image.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["a:1", "b:2"]
    );
    assert_eq!(patched.metadata.generation, Some(2));
}

#[tokio::test]
async fn watcher_reflector_and_controller_recover_from_drops_and_gone() {
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let emulator = Emulator::start_with(keyward_emulator::Options {
        history: 2,
        ..Default::default()
    })
    .await
    .expect("starts");
    let client =
        Client::try_from(Config::new(emulator.url().parse().expect("url"))).expect("client");
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(secrets.clone(), watcher::Config::default()))
        .applied_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {}
    });
    reader.wait_until_ready().await.expect("reflector syncs");
    let wait_for = |n: usize| {
        let reader = reader.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(20), async {
                while reader.len() != n {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("reflector never saw {n} objects (has {})", reader.len()));
        }
    };
    secrets
        .create(&PostParams::default(), &secret("a", json!({})))
        .await
        .expect("a");
    wait_for(1).await;
    // Drop the watch and hold the re-watch back while the history it needs is compacted
    // away: it must get 410 Gone and relist.
    emulator.hooks().add_fault(Fault::new(
        "watch",
        "secrets",
        1,
        FaultAction::Delay(Duration::from_millis(500)),
    ));
    emulator.hooks().drop_watches();
    for name in ["b", "c", "d", "e"] {
        secrets
            .create(&PostParams::default(), &secret(name, json!({})))
            .await
            .expect("created");
    }
    emulator.store().compact();
    wait_for(5).await;
    assert!(
        emulator.hooks().count("list", "secrets") >= 2,
        "the watcher relisted after 410 Gone"
    );
    secrets
        .delete("a", &DeleteParams::default())
        .await
        .expect("deleted");
    wait_for(4).await;
    task.abort();
}

#[tokio::test]
async fn a_controller_keeps_reconciling_across_dropped_watches() {
    use kube::runtime::controller::{Action, Controller};
    use std::sync::Arc;
    let (emulator, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let seen = Arc::new(std::sync::Mutex::new(
        std::collections::BTreeSet::<String>::new(),
    ));
    let reconcile =
        |cm: Arc<ConfigMap>, seen: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>| async move {
            seen.lock()
                .expect("lock")
                .insert(cm.metadata.name.clone().unwrap_or_default());
            Ok::<_, kube::Error>(Action::await_change())
        };
    let error_policy =
        |_: Arc<ConfigMap>,
         _: &kube::Error,
         _: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>| {
            Action::requeue(Duration::from_millis(100))
        };
    let controller = Controller::new(cms.clone(), kube::runtime::watcher::Config::default())
        .run(reconcile, error_policy, seen.clone())
        .for_each(|_| async {});
    let task = tokio::spawn(controller);
    let wait_for = |name: &'static str| {
        let seen = seen.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(20), async {
                while !seen.lock().expect("lock").contains(name) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{name} was never reconciled"));
        }
    };
    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("cm")
    };
    cms.create(&PostParams::default(), &cm("one"))
        .await
        .expect("one");
    wait_for("one").await;
    emulator.hooks().drop_watches();
    cms.create(&PostParams::default(), &cm("two"))
        .await
        .expect("two");
    wait_for("two").await;
    emulator.hooks().drop_watches();
    emulator.store().compact();
    cms.create(&PostParams::default(), &cm("three"))
        .await
        .expect("three");
    wait_for("three").await;
    task.abort();
}

#[tokio::test]
async fn json_patch_applies_and_tests() {
    let (_emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    secrets
        .create(&PostParams::default(), &secret("j", json!({"a": "1"})))
        .await
        .expect("created");
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/labels/a", "value": "1"},
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
    ]))
    .expect("ops");
    let patched = secrets
        .patch("j", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .expect("json patch");
    assert_eq!(
        patched
            .metadata
            .labels
            .unwrap_or_default()
            .get("b")
            .map(String::as_str),
        Some("2")
    );
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/metadata/labels/a", "value": "9"}]))
            .expect("ops");
    let err = api_error(
        secrets
            .patch("j", &PatchParams::default(), &Patch::<()>::Json(failing))
            .await
            .expect_err("test op fails"),
    );
    assert_eq!(err.code, 422);
}

#[tokio::test]
async fn apply_bodies_with_null_creation_timestamp() {
    let (_emu, client) = start().await;
    let widgets = install_widgets(&client).await;
    let body = json!({
        "apiVersion": "test.dev/v1", "kind": "Widget",
        "metadata": {"name": "n", "creationTimestamp": null},
        "spec": {"size": 2},
    });
    let created = widgets
        .patch("n", &PatchParams::apply("kubectl"), &Patch::Apply(&body))
        .await
        .expect("applied");
    assert!(created.metadata.creation_timestamp.is_some());
    let again = widgets
        .patch("n", &PatchParams::apply("kubectl"), &Patch::Apply(&body))
        .await
        .expect("re-applied");
    assert_eq!(
        again.metadata.resource_version, created.metadata.resource_version,
        "re-applying the same body writes nothing"
    );
}

#[tokio::test]
async fn selector_watches_see_objects_leave_and_enter() {
    let (_emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let mut stream = secrets
        .watch(&WatchParams::default().labels("pool=p"), "0")
        .await
        .expect("watch")
        .boxed();
    secrets
        .create(&PostParams::default(), &secret("s", json!({"pool": "p"})))
        .await
        .expect("created");
    secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"pool": "other"}}})),
        )
        .await
        .expect("relabel");
    secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"pool": "p"}}})),
        )
        .await
        .expect("back");
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("event")
            .expect("ok");
        kinds.push(match event {
            Some(WatchEvent::Added(_)) => "ADDED",
            Some(WatchEvent::Modified(_)) => "MODIFIED",
            Some(WatchEvent::Deleted(_)) => "DELETED",
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(kinds, ["ADDED", "DELETED", "ADDED"]);
}

#[tokio::test]
async fn status_apply_is_idempotent() {
    let (_emu, client) = start().await;
    let widgets = install_widgets(&client).await;
    widgets
        .create(&PostParams::default(), &widget("s", json!({"size": 1})))
        .await
        .expect("created");
    let status = json!({"apiVersion": "test.dev/v1", "kind": "Widget", "status": {"observed": 1, "conditions": [{"type": "Ready", "status": "True"}]}});
    let first = widgets
        .patch_status("s", &PatchParams::apply("keyward"), &Patch::Apply(&status))
        .await
        .expect("status applied");
    assert_eq!(first.data["status"]["observed"], 1);
    let second = widgets
        .patch_status("s", &PatchParams::apply("keyward"), &Patch::Apply(&status))
        .await
        .expect("status re-applied");
    assert_eq!(
        second.metadata.resource_version, first.metadata.resource_version,
        "an unchanged status is not a write"
    );
    let managed = second.metadata.managed_fields.unwrap_or_default();
    assert!(
        managed
            .iter()
            .any(|m| m.manager.as_deref() == Some("keyward")
                && m.subresource.as_deref() == Some("status"))
    );
}

#[tokio::test]
async fn metadata_only_requests_carry_no_data() {
    use kube::core::PartialObjectMeta;
    let (emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    secrets
        .create(&PostParams::default(), &secret("m", json!({"a": "b"})))
        .await
        .expect("created");
    let meta: Api<PartialObjectMeta<Secret>> = Api::default_namespaced(client.clone());
    let got = meta.get("m").await.expect("metadata get");
    assert_eq!(
        got.metadata
            .labels
            .unwrap_or_default()
            .get("a")
            .map(String::as_str),
        Some("b")
    );
    let raw = reqwest_like_get(
        &emu,
        "/api/v1/namespaces/default/secrets",
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    )
    .await;
    assert_eq!(raw["kind"], "PartialObjectMetadataList");
    assert!(
        raw["items"][0].get("data").is_none(),
        "no Secret data in a metadata list"
    );
    let mut stream = meta
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watch")
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("event")
        .expect("ok")
    {
        Some(WatchEvent::Added(o)) => assert_eq!(o.metadata.name.as_deref(), Some("m")),
        other => panic!("unexpected {other:?}"),
    }
}
