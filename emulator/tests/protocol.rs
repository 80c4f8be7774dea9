//! The emulator answers in the API server's protocol where clients branch on it: error
//! Status shapes, field ownership written by clients, the client-side to server-side apply
//! upgrade, and a watch history bounded in time. Each test names the kube-apiserver
//! behaviour (source file or documentation page) it follows.

mod common;

use std::time::Duration;

use common::start;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keyward_emulator::{Emulator, Options};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::client::Body;
use kube::runtime::watcher;
use serde_json::{Value, json};

/// A raw request: the HTTP status code and the JSON body, whatever they are.
async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Value,
) -> (u16, Value) {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).expect("json")
    };
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .body(Body::from(bytes))
        .expect("request");
    let response = client.send(request).await.expect("a response");
    let code = response.status().as_u16();
    let bytes = response.into_body().collect_bytes().await.expect("a body");
    (code, serde_json::from_slice(&bytes).expect("a JSON body"))
}

const MERGE: &str = "application/merge-patch+json";
const APPLY: &str = "application/apply-patch+yaml";
const JSON_PATCH: &str = "application/json-patch+json";

fn cm_path(name: &str) -> String {
    format!("/api/v1/namespaces/default/configmaps/{name}")
}

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
}

async fn apply_as(client: &kube::Client, manager: &str, data: Value) -> (u16, Value) {
    raw(
        client,
        "PATCH",
        &format!("{}?fieldManager={manager}", cm_path("c")),
        APPLY,
        cm(data),
    )
    .await
}

fn managers(object: &Value) -> Vec<(String, String)> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["manager"].as_str().unwrap_or_default().to_string(),
                e["operation"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

// ---- class 5: error shapes ---------------------------------------------------------------

/// An apply conflict is a bare 409 Conflict whose message lists the conflicts grouped by
/// manager (Update managers with their API version), with one FieldManagerConflict cause
/// per conflicting field and manager: NewConflictError in
/// staging/src/k8s.io/apimachinery/pkg/util/managedfields/internal/conflict.go.
#[tokio::test]
async fn apply_conflicts_answer_one_cause_per_field_and_manager() {
    let (_emu, client) = start().await;
    assert_eq!(apply_as(&client, "alice", json!({"x": "1"})).await.0, 201);
    assert_eq!(apply_as(&client, "bob", json!({"x": "1"})).await.0, 200);
    let (code, _) = raw(
        &client,
        "PATCH",
        &format!("{}?fieldManager=dave", cm_path("c")),
        MERGE,
        json!({"data": {"y": "1"}}),
    )
    .await;
    assert_eq!(code, 200);

    let (code, status) = apply_as(&client, "carol", json!({"y": "2"})).await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(
        status["message"],
        "Apply failed with 1 conflict: conflict with \"dave\" using v1: .data.y"
    );

    let (code, status) = apply_as(&client, "carol", json!({"x": "2", "y": "2"})).await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["message"],
        "Apply failed with 3 conflicts: conflicts with \"alice\":\n- .data.x\nconflicts with \"bob\":\n- .data.x\nconflicts with \"dave\" using v1:\n- .data.y"
    );
    let mut causes: Vec<(String, String, String)> = status["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .map(|c| {
            (
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
                c["field"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    causes.sort();
    let expected: Vec<(String, String, String)> = [
        ("conflict with \"alice\"", ".data.x"),
        ("conflict with \"bob\"", ".data.x"),
        ("conflict with \"dave\" using v1", ".data.y"),
    ]
    .into_iter()
    .map(|(m, f)| ("FieldManagerConflict".into(), m.into(), f.into()))
    .collect();
    assert_eq!(causes, expected);
}

/// Creating in a terminating namespace is Forbidden with a NamespaceTerminating cause; a
/// missing namespace is NotFound naming it: the NamespaceLifecycle admission plugin,
/// plugin/pkg/admission/namespace/lifecycle/admission.go, with admission.NewForbidden's
/// wording (staging/src/k8s.io/apiserver/pkg/admission/errors.go).
#[tokio::test]
async fn namespace_lifecycle_errors_carry_the_servers_details() {
    let (_emu, client) = start().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "doomed"}})).expect("ns"),
        )
        .await
        .expect("namespace");
    let held: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    held.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "held", "finalizers": ["test.dev/hold"]}}),
        )
        .expect("cm"),
    )
    .await
    .expect("held");
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("terminating");

    let (code, status) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/doomed/configmaps",
        "application/json",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}}),
    )
    .await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "configmaps \"late\" is forbidden: unable to create new content in namespace doomed because it is being terminated"
    );
    assert_eq!(
        status["details"],
        json!({"name": "late", "kind": "configmaps", "causes": [{
            "reason": "NamespaceTerminating",
            "message": "namespace doomed is being terminated",
            "field": "metadata.namespace",
        }]})
    );

    let (code, status) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/nowhere/configmaps",
        "application/json",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
    )
    .await;
    assert_eq!(code, 404, "{status}");
    assert_eq!(status["message"], "namespaces \"nowhere\" not found");
    assert_eq!(
        status["details"],
        json!({"name": "nowhere", "kind": "namespaces"})
    );
}

/// Write options are validated before anything else, as 422 on the options kind:
/// ValidatePatchOptions and ValidateCreateOptions in
/// staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/validation/validation.go, called from
/// staging/src/k8s.io/apiserver/pkg/endpoints/handlers/{patch,create}.go.
#[tokio::test]
async fn write_options_are_validated_as_the_server_does() {
    let (_emu, client) = start().await;
    assert_eq!(apply_as(&client, "alice", json!({"x": "1"})).await.0, 201);

    let (code, status) = raw(
        &client,
        "PATCH",
        &format!("{}?force=true", cm_path("c")),
        MERGE,
        json!({"data": {"x": "2"}}),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"
    );
    assert_eq!(
        status["details"],
        json!({"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [{
            "reason": "FieldValueForbidden",
            "message": "Forbidden: may not be specified for non-apply patch",
            "field": "force",
        }]})
    );

    let (code, status) = raw(
        &client,
        "PATCH",
        &cm_path("c"),
        APPLY,
        cm(json!({"x": "3"})),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );

    let long = "m".repeat(129);
    let (code, status) = raw(
        &client,
        "POST",
        &format!("/api/v1/namespaces/default/configmaps?fieldManager={long}"),
        "application/json",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}}),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "CreateOptions.meta.k8s.io \"\" is invalid: fieldManager: Too long: may not be more than 128 bytes"
    );
    // Nothing was written by the refused requests.
    let (_, object) = raw(
        &client,
        "GET",
        &cm_path("c"),
        "application/json",
        Value::Null,
    )
    .await;
    assert_eq!(object["data"], json!({"x": "1"}));
}

/// A DELETE that leaves the object waiting for finalizers answers 200 with the object
/// (deletionTimestamp set), 202 only for orphanDependents=false; one that removes the
/// object answers a Success Status: staging/src/k8s.io/apiserver/pkg/endpoints/handlers/delete.go.
/// Adding a finalizer once deletion started is refused with the names added, as
/// ValidateNoNewFinalizers words it (staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go).
#[tokio::test]
async fn deleting_with_pending_finalizers_answers_the_object() {
    let (_emu, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    for name in ["held", "cascade"] {
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({"metadata": {"name": name, "finalizers": ["test.dev/hold"]}}),
                )
                .expect("secret"),
            )
            .await
            .expect("created");
    }
    let (code, body) = raw(
        &client,
        "DELETE",
        "/api/v1/namespaces/default/secrets/held",
        "application/json",
        Value::Null,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["kind"], "Secret");
    assert!(body["metadata"]["deletionTimestamp"].is_string(), "{body}");

    let (code, body) = raw(
        &client,
        "DELETE",
        "/api/v1/namespaces/default/secrets/cascade",
        "application/json",
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "orphanDependents": false}),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["kind"], "Secret");

    let (code, status) = raw(
        &client,
        "PATCH",
        "/api/v1/namespaces/default/secrets/held",
        MERGE,
        json!({"metadata": {"finalizers": ["test.dev/hold", "test.dev/late", "test.dev/also"]}}),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "Secret \"held\" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"test.dev/also\", \"test.dev/late\"}"
    );

    let (code, body) = raw(
        &client,
        "PATCH",
        "/api/v1/namespaces/default/secrets/held",
        MERGE,
        json!({"metadata": {"finalizers": null}}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(
        secrets.get_opt("held").await.expect("get").is_none(),
        "released"
    );
}

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.dev"},
        "spec": {
            "group": "test.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {"type": "object", "properties": {
                        "size": {"type": "integer"},
                        "at": {"type": "string", "format": "date-time"},
                    }}},
                }},
            }],
        },
    }))
    .expect("crd")
}

/// A value of the wrong JSON type in a custom resource is FieldValueTypeInvalid, and the
/// "invalid value" shown is the type found, not the value: kube-openapi's InvalidType as
/// staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/validation/validation.go maps it.
#[tokio::test]
async fn custom_resource_type_errors_name_the_type_found() {
    let (_emu, client) = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &widget_crd())
        .await
        .expect("crd");
    let post = |spec: Value| {
        let client = client.clone();
        async move {
            raw(
                &client,
                "POST",
                "/apis/test.dev/v1/namespaces/default/widgets",
                "application/json",
                json!({"apiVersion": "test.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}),
            )
            .await
        }
    };
    let (code, status) = post(json!({"size": "two"})).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "Widget.test.dev \"w\" is invalid: spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\""
    );
    assert_eq!(
        status["details"]["causes"],
        json!([{
            "reason": "FieldValueTypeInvalid",
            "message": "Invalid value: \"string\": spec.size in body must be of type integer: \"string\"",
            "field": "spec.size",
        }])
    );
    let (code, status) = post(json!({"at": "yesterday"})).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueTypeInvalid"
    );
}

// ---- class 2: managedFields written by clients; client-side to server-side apply -------

/// A non-apply write may set managedFields: valid entries replace the live ones, `[{}]`
/// (or `[]`) clears them, and an object nobody tracks stays untracked until an apply:
/// decodeLiveOrNew and isResetManagedFields in
/// staging/src/k8s.io/apimachinery/pkg/util/managedfields/internal/fieldmanager.go,
/// https://kubernetes.io/docs/reference/using-api/server-side-apply/#clearing-managedfields
#[tokio::test]
async fn clients_may_rewrite_and_clear_managed_fields() {
    let (_emu, client) = start().await;
    assert_eq!(apply_as(&client, "alice", json!({"x": "1"})).await.0, 201);
    let (_, object) = raw(
        &client,
        "GET",
        &cm_path("c"),
        "application/json",
        Value::Null,
    )
    .await;
    let mut entries = object["metadata"]["managedFields"].clone();
    entries[0]["manager"] = json!("bob");
    let (code, rewritten) = raw(
        &client,
        "PATCH",
        &cm_path("c"),
        JSON_PATCH,
        json!([{"op": "replace", "path": "/metadata/managedFields", "value": entries}]),
    )
    .await;
    assert_eq!(code, 200, "{rewritten}");
    assert_eq!(managers(&rewritten), [("bob".into(), "Apply".into())]);
    // Ownership moved with the rewrite: alice's next apply now conflicts with bob.
    let (code, status) = apply_as(&client, "alice", json!({"x": "2"})).await;
    assert_eq!(code, 409, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("conflict with \"bob\""),
        "{status}"
    );

    let (code, cleared) = raw(
        &client,
        "PATCH",
        &cm_path("c"),
        JSON_PATCH,
        json!([{"op": "replace", "path": "/metadata/managedFields", "value": [{}]}]),
    )
    .await;
    assert_eq!(code, 200, "{cleared}");
    assert!(cleared["metadata"]["managedFields"].is_null(), "{cleared}");
    let (_, updated) = raw(
        &client,
        "PATCH",
        &format!("{}?fieldManager=carol", cm_path("c")),
        MERGE,
        json!({"data": {"y": "1"}}),
    )
    .await;
    assert!(
        updated["metadata"]["managedFields"].is_null(),
        "updates do not start tracking: {updated}"
    );
    let (code, applied) = apply_as(&client, "alice", json!({"x": "2"})).await;
    assert_eq!(code, 200, "nobody owns x any more: {applied}");
    assert_eq!(managers(&applied), [("alice".into(), "Apply".into())]);

    // Managed fields in an apply body are refused (structuredmerge.go in the same package).
    let mut body = cm(json!({"x": "2"}));
    body["metadata"]["managedFields"] = applied["metadata"]["managedFields"].clone();
    let (code, status) = raw(
        &client,
        "PATCH",
        &format!("{}?fieldManager=alice", cm_path("c")),
        APPLY,
        body,
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(status["message"], "metadata.managedFields must be nil");
}

/// kubectl's server-side apply (manager `kubectl`) takes over, without conflicts, fields
/// that client-side apply recorded in last-applied-configuration and that still hold the
/// value last applied, and keeps that annotation current; other appliers still conflict:
/// staging/src/k8s.io/apimachinery/pkg/util/managedfields/internal/lastappliedmanager.go
/// and lastappliedupdater.go.
#[tokio::test]
async fn kubectl_server_side_apply_takes_over_client_side_applied_fields() {
    let (_emu, client) = start().await;
    let last = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": {"x": "1", "y": "1"}});
    let mut created = cm(json!({"x": "1", "y": "1"}));
    created["metadata"]["annotations"] = json!({
        "kubectl.kubernetes.io/last-applied-configuration": format!("{last}\n"),
    });
    let (code, _) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps?fieldManager=kubectl-client-side-apply",
        "application/json",
        created,
    )
    .await;
    assert_eq!(code, 201);
    // Someone else changed y since: that field is not the last applied one any more.
    raw(
        &client,
        "PATCH",
        &format!("{}?fieldManager=editor", cm_path("c")),
        MERGE,
        json!({"data": {"y": "edited"}}),
    )
    .await;

    let (code, status) = apply_as(&client, "other", json!({"x": "2"})).await;
    assert_eq!(code, 409, "only kubectl's applier upgrades: {status}");
    let (code, status) = apply_as(&client, "kubectl", json!({"x": "2", "y": "2"})).await;
    assert_eq!(
        code, 409,
        "y no longer holds its last-applied value: {status}"
    );
    assert_eq!(
        status["message"],
        "Apply failed with 1 conflict: conflict with \"editor\" using v1: .data.y"
    );
    let (code, applied) = apply_as(&client, "kubectl", json!({"x": "2"})).await;
    assert_eq!(code, 200, "{applied}");
    assert_eq!(applied["data"], json!({"x": "2", "y": "edited"}));
    let annotation =
        applied["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .expect("kept");
    assert_eq!(
        annotation,
        "{\"apiVersion\":\"v1\",\"data\":{\"x\":\"2\"},\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"c\"}}\n"
    );
}

// ---- class 7: watch history bounded in time --------------------------------------------

type Events = tokio::sync::mpsc::UnboundedReceiver<Result<watcher::Event<ConfigMap>, String>>;

async fn next(rx: &mut Events) -> Result<watcher::Event<ConfigMap>, String> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the watcher reports in time")
        .expect("the watcher runs")
}

/// Changes older than the watch window are dropped, and a watch resuming from before them
/// gets 410 Gone ("too old resource version"), so watchers relist: the watch cache's
/// getAllEventsSinceLocked in staging/src/k8s.io/apiserver/pkg/storage/cacher/watch_cache.go
/// and https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes
#[tokio::test]
async fn watches_from_changes_older_than_the_window_are_gone_and_watchers_relist() {
    let emulator = Emulator::start_with(Options {
        watch_window: Duration::from_millis(300),
        ..Options::default()
    })
    .await
    .expect("emulator starts");
    let client = emulator.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let mk = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("cm")
    };
    cms.create(&PostParams::default(), &mk("one"))
        .await
        .expect("one");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = watcher(cms.clone(), watcher::Config::default());
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if tx.send(event.map_err(|e| e.to_string())).is_err() {
                return;
            }
        }
    });
    // The first list.
    let mut seen_init_done = 0;
    while seen_init_done == 0 {
        if let Ok(watcher::Event::InitDone) = next(&mut rx).await {
            seen_init_done += 1;
        }
    }
    let lists_before = emulator.hooks().count("list", "configmaps");

    // A change elsewhere moves the version on; once it leaves the window, the watcher's
    // version is older than anything kept.
    let rv_before = emulator.store().current_rv();
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "elsewhere"}})).expect("secret"),
        )
        .await
        .expect("secret");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while emulator.store().compacted_rv() <= rv_before {
        assert!(tokio::time::Instant::now() < deadline, "history trimmed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The raw protocol: an ERROR event carrying 410 Expired.
    let request = http::Request::get(format!(
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={}",
        rv_before - 1
    ))
    .body(Body::empty())
    .expect("request");
    let response = client.send(request).await.expect("watch answered");
    assert_eq!(response.status().as_u16(), 200);
    let body = response.into_body().collect_bytes().await.expect("body");
    let event: Value = serde_json::from_slice(&body).expect("one event");
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
    assert_eq!(
        event["object"]["message"],
        format!(
            "too old resource version: {} ({})",
            rv_before - 1,
            emulator.store().compacted_rv()
        )
    );

    // The real watcher: its watch ends, it resumes from its old version, gets 410 and
    // relists, then sees what was created meanwhile.
    emulator.hooks().drop_watches();
    cms.create(&PostParams::default(), &mk("two"))
        .await
        .expect("two");
    let mut relisted = false;
    let mut saw_two = false;
    while !(relisted && saw_two) {
        match next(&mut rx).await {
            Ok(watcher::Event::Init) => relisted = true,
            Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o))
                if o.metadata.name.as_deref() == Some("two") =>
            {
                saw_two = true
            }
            _ => {}
        }
    }
    assert!(
        emulator.hooks().count("list", "configmaps") > lists_before,
        "the watcher relisted"
    );
    task.abort();
}

/// The window is settable on a running emulator, and the count cap still holds.
#[tokio::test]
async fn the_watch_window_and_the_count_cap_both_bound_the_history() {
    let emulator = Emulator::start_with(Options {
        history: 3,
        ..Options::default()
    })
    .await
    .expect("emulator starts");
    let client = emulator.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let start = emulator.store().current_rv();
    for i in 0..5 {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": format!("c{i}")}})).expect("cm"),
        )
        .await
        .expect("created");
    }
    // Five changes, three kept: the first two are gone.
    assert_eq!(emulator.store().compacted_rv(), start + 2);
    emulator.store().set_watch_window(Duration::ZERO);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while emulator.store().compacted_rv() < emulator.store().current_rv() {
        assert!(tokio::time::Instant::now() < deadline, "all aged out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A watch from the newest version still works: nothing after it was dropped.
    let current = emulator.store().current_rv();
    let request = http::Request::get(format!(
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={current}&timeoutSeconds=1"
    ))
    .body(Body::empty())
    .expect("request");
    let response = client.send(request).await.expect("watch answered");
    let body = response.into_body().collect_bytes().await.expect("body");
    assert!(body.is_empty(), "{}", String::from_utf8_lossy(&body));
    let err = cms
        .patch(
            "c0",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "b"}})),
        )
        .await;
    assert!(err.is_ok(), "writes go on: {err:?}");
}
