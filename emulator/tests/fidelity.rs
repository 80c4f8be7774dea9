//! Fidelity of the emulator's built-in kinds with kube-apiserver: defaults whatever the
//! request's encoding, the limits the server enforces, the fields it sets, the Table columns
//! and OpenAPI schemas kubectl reads, and the kinds a Helm chart installs. Each test names
//! the API server behaviour it follows.

mod common;

use common::{api_error, start};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use prost::Message;
use serde_json::{Value, json};

fn dynamic(
    client: &Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

async fn raw(client: &Client, request: http::Request<Vec<u8>>) -> Result<Value, kube::Error> {
    let text = client.request_text(request).await?;
    Ok(serde_json::from_str(&text).expect("the emulator answers JSON"))
}

/// A Secret as `kubectl create secret generic` encodes it: protobuf, `type` left empty.
fn protobuf_secret(name: &str) -> Vec<u8> {
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    let secret = core::Secret {
        metadata: Some(meta::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        }),
        data: [("k".to_string(), b"v".to_vec())].into_iter().collect(),
        r#type: Some(String::new()),
        ..Default::default()
    };
    let envelope = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
        }),
        raw: Some(secret.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\x00".to_vec();
    body.extend(envelope.encode_to_vec());
    body
}

// ---- class 1: defaults do not depend on the request's encoding ---------------------------

/// The Secret type defaults to Opaque when empty (SetDefaults_Secret in
/// kubernetes/kubernetes pkg/apis/core/v1/defaults.go), and defaulting runs on the decoded
/// object whatever its encoding — protobuf included.
#[tokio::test]
async fn protobuf_secrets_get_the_opaque_type() {
    let (_emulator, client) = start().await;
    let request = http::Request::post("/api/v1/namespaces/default/secrets")
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .body(protobuf_secret("from-protobuf"))
        .expect("request");
    let created = raw(&client, request).await.expect("created");
    assert_eq!(created["type"], "Opaque", "{created}");
    let stored = Api::<Secret>::default_namespaced(client.clone())
        .get("from-protobuf")
        .await
        .expect("stored");
    assert_eq!(stored.type_.as_deref(), Some("Opaque"));
    // JSON with an empty type is defaulted the same way.
    let json_secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "from-json"}, "type": "", "data": {"k": "dg=="}
    }))
    .expect("secret");
    let created = Api::<Secret>::default_namespaced(client)
        .create(&PostParams::default(), &json_secret)
        .await
        .expect("created");
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
}

// ---- class 3: limits the server enforces ---------------------------------------------------

/// Total annotation size is at most 256 KiB (TotalAnnotationSizeLimitB in
/// kubernetes/kubernetes staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go),
/// answered 422 naming `metadata.annotations`, for every kind.
#[tokio::test]
async fn annotations_over_256_kib_are_refused() {
    let (_emulator, client) = start().await;
    let big = "x".repeat(262_144);
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "annotated", "annotations": {"a": big}},
    }))
    .expect("configmap");
    let status = api_error(
        Api::<ConfigMap>::default_namespaced(client.clone())
            .create(&PostParams::default(), &cm)
            .await
            .expect_err("too large"),
    );
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        "ConfigMap \"annotated\" is invalid: metadata.annotations: Too long: must have at most 262144 bytes"
    );
    // Exactly at the limit (key and value bytes counted) is fine.
    let fits: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "annotated", "annotations": {"a": "x".repeat(262_143)}},
    }))
    .expect("configmap");
    Api::<ConfigMap>::default_namespaced(client.clone())
        .create(&PostParams::default(), &fits)
        .await
        .expect("at the limit");
    let leases = dynamic(&client, "coordination.k8s.io", "v1", "Lease", "leases");
    let lease: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l", "annotations": {"a": big}}, "spec": {},
    }))
    .expect("lease");
    let status = api_error(
        leases
            .create(&PostParams::default(), &lease)
            .await
            .expect_err("too large"),
    );
    assert_eq!(status.code, 422, "{status:?}");
}

/// Secret data is at most 1 MiB (MaxSecretSize; ValidateSecret in kubernetes/kubernetes
/// pkg/apis/core/validation/validation.go), counted in decoded bytes.
#[tokio::test]
async fn secret_data_over_1_mib_is_refused() {
    let (_emulator, client) = start().await;
    let secrets = Api::<Secret>::default_namespaced(client);
    let secret = |name: &str, size: usize| -> Secret {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "stringData": {"a": "y".repeat(size)},
        }))
        .expect("secret")
    };
    let status = api_error(
        secrets
            .create(&PostParams::default(), &secret("big", 1_048_577))
            .await
            .expect_err("too large"),
    );
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        "Secret \"big\" is invalid: data: Too long: must have at most 1048576 bytes"
    );
    secrets
        .create(&PostParams::default(), &secret("fits", 1_048_576))
        .await
        .expect("exactly 1 MiB fits");
}

/// ConfigMap data and binaryData together are at most 1 MiB (ValidateConfigMap in
/// kubernetes/kubernetes pkg/apis/core/validation/validation.go reports the whole object,
/// which the Status shows as `[]`).
#[tokio::test]
async fn configmap_data_over_1_mib_is_refused() {
    let (_emulator, client) = start().await;
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "big"},
        "data": {"a": "z".repeat(600_000)},
        "binaryData": {"b": base64_of(&vec![0u8; 500_000])},
    }))
    .expect("configmap");
    let status = api_error(
        Api::<ConfigMap>::default_namespaced(client)
            .create(&PostParams::default(), &cm)
            .await
            .expect_err("too large"),
    );
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        "ConfigMap \"big\" is invalid: []: Too long: must have at most 1048576 bytes"
    );
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Write bodies over 3 MiB are refused before decoding with 413 (MaxRequestBodyBytes in
/// kubernetes/kubernetes staging/src/k8s.io/apiserver/pkg/server/config.go; limitedReadBody
/// in staging/src/k8s.io/apiserver/pkg/endpoints/handlers/rest.go).
#[tokio::test]
async fn request_bodies_over_3_mib_are_413() {
    let (_emulator, client) = start().await;
    let leases = dynamic(&client, "coordination.k8s.io", "v1", "Lease", "leases");
    let lease: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "huge"}, "spec": {"holderIdentity": "h".repeat(3 * 1024 * 1024)},
    }))
    .expect("lease");
    let status = api_error(
        leases
            .create(&PostParams::default(), &lease)
            .await
            .expect_err("too large"),
    );
    assert_eq!(status.code, 413);
    assert_eq!(status.reason, "RequestEntityTooLarge");
    assert_eq!(status.message, "Request entity too large: limit is 3145728");
    let patch = json!({"spec": {"holderIdentity": "h".repeat(3 * 1024 * 1024)}});
    let status = api_error(
        leases
            .patch("huge", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect_err("too large"),
    );
    assert_eq!(status.code, 413);
}

/// Objects are stored in etcd, whose default request limit is 1.5 MiB; an object over it is
/// refused with the 500 "etcdserver: request is too large" the apiserver passes through
/// (https://etcd.io/docs/v3.5/dev-guide/limit/, kubernetes/kubernetes issue 112152).
#[tokio::test]
async fn objects_over_the_storage_limit_are_refused() {
    let (_emulator, client) = start().await;
    let leases = dynamic(&client, "coordination.k8s.io", "v1", "Lease", "leases");
    let lease: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "large"}, "spec": {"holderIdentity": "h".repeat(2 * 1024 * 1024)},
    }))
    .expect("lease");
    let status = api_error(
        leases
            .create(&PostParams::default(), &lease)
            .await
            .expect_err("too large"),
    );
    assert_eq!(status.code, 500);
    assert_eq!(status.message, "etcdserver: request is too large");
    assert!(
        leases.get_opt("large").await.expect("get").is_none(),
        "nothing was stored"
    );
}

// ---- class 4: fields the server sets ---------------------------------------------------------

/// Every namespace carries `kubernetes.io/metadata.name` set to its name, and the server
/// puts it back if a write changes it (Namespace strategy in kubernetes/kubernetes
/// pkg/registry/core/namespace/strategy.go;
/// https://kubernetes.io/docs/reference/labels-annotations-taints/#kubernetes-io-metadata-name).
#[tokio::test]
async fn namespaces_carry_their_name_label() {
    let (_emulator, client) = start().await;
    let namespaces = Api::<Namespace>::all(client);
    let default = namespaces.get("default").await.expect("default");
    assert_eq!(
        default.metadata.labels.unwrap_or_default()["kubernetes.io/metadata.name"],
        "default"
    );
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "team-a"}})).expect("ns");
    let created = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("created");
    assert_eq!(
        created.metadata.labels.clone().unwrap_or_default()["kubernetes.io/metadata.name"],
        "team-a"
    );
    // The creator owns the label it caused, as on a cluster, so even a namespace created
    // with nothing but a name has a managedFields entry.
    let owned = created.metadata.managed_fields.unwrap_or_default();
    assert_eq!(owned.len(), 1, "{owned:?}");
    let fields = serde_json::to_value(&owned[0].fields_v1).expect("json");
    assert!(
        fields["f:metadata"]["f:labels"]["f:kubernetes.io/metadata.name"].is_object(),
        "{fields}"
    );
    let patch = json!({"metadata": {"labels": {"kubernetes.io/metadata.name": "other", "x": "y"}}});
    let patched = namespaces
        .patch("team-a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patched");
    let labels = patched.metadata.labels.unwrap_or_default();
    assert_eq!(labels["kubernetes.io/metadata.name"], "team-a");
    assert_eq!(labels["x"], "y");
}

/// Plain create, update and patch record an `Update` managedFields entry under the
/// request's fieldManager, or the user agent's product name without one
/// (https://kubernetes.io/docs/reference/using-api/server-side-apply/#field-management;
/// managerOrUserAgent in kubernetes/kubernetes
/// staging/src/k8s.io/apiserver/pkg/endpoints/handlers/create.go).
#[tokio::test]
async fn plain_writes_record_managed_fields() {
    let (_emulator, client) = start().await;
    let body = serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "plain"}, "data": {"a": "b"},
    }))
    .expect("json");
    let request = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .header("user-agent", "curl/8.5.0")
        .body(body)
        .expect("request");
    let created = raw(&client, request).await.expect("created");
    let entries = created["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(entries.len(), 1, "{created}");
    assert_eq!(entries[0]["manager"], "curl");
    assert_eq!(entries[0]["operation"], "Update");
    assert_eq!(entries[0]["fieldsV1"]["f:data"]["f:a"], json!({}));
    let cms = Api::<ConfigMap>::default_namespaced(client);
    let patched = cms
        .patch(
            "plain",
            &PatchParams {
                field_manager: Some("editor".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"c": "d"}})),
        )
        .await
        .expect("patched");
    let managers: Vec<(String, String)> = patched
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            (
                e.manager.unwrap_or_default(),
                e.operation.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        managers,
        [
            ("curl".to_string(), "Update".to_string()),
            ("editor".to_string(), "Update".to_string())
        ]
    );
}

/// A Deployment gets the apps/v1 defaults (SetDefaults_Deployment in kubernetes/kubernetes
/// pkg/apis/apps/v1/defaults.go) and its pod template the core/v1 ones (SetDefaults_PodSpec,
/// SetDefaults_Container, and the image pull policy rule in pkg/apis/core/v1/defaults.go).
#[tokio::test]
async fn deployments_get_the_servers_defaults() {
    let (_emulator, client) = start().await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "pinned", "image": "nginx:1.27", "ports": [{"containerPort": 80}]},
                    {"name": "floating", "image": "nginx"},
                    {"name": "latest", "image": "registry.local:5000/nginx:latest"},
                ]},
            },
        },
    }))
    .expect("deployment");
    let created = Api::<Deployment>::default_namespaced(client)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("created");
    let v = serde_json::to_value(&created).expect("json");
    let spec = &v["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["schedulerName"], "default-scheduler");
    assert_eq!(pod["securityContext"], json!({}));
    let containers = pod["containers"].as_array().expect("containers");
    let pull: Vec<&str> = containers
        .iter()
        .map(|c| c["imagePullPolicy"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(pull, ["IfNotPresent", "Always", "Always"]);
    assert_eq!(
        containers[0]["terminationMessagePath"],
        "/dev/termination-log"
    );
    assert_eq!(containers[0]["terminationMessagePolicy"], "File");
    assert_eq!(containers[0]["ports"][0]["protocol"], "TCP");
}

// ---- class 6: what kubectl reads -------------------------------------------------------------

fn column_names(table: &Value) -> Vec<(String, i64)> {
    table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["priority"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}

async fn table(client: &Client, path: &str) -> Value {
    let request = http::Request::get(path)
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .expect("request");
    raw(client, request).await.expect("table")
}

/// The Deployment Table has the columns kube-apiserver prints (printDeployment in
/// kubernetes/kubernetes pkg/printers/internalversion/printers.go): NAME READY UP-TO-DATE
/// AVAILABLE AGE, and CONTAINERS IMAGES SELECTOR for `-o wide`.
#[tokio::test]
async fn deployment_table_columns_match_the_server() {
    let (_emulator, client) = start().await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}},
        },
    }))
    .expect("deployment");
    Api::<Deployment>::default_namespaced(client.clone())
        .create(&PostParams::default(), &deployment)
        .await
        .expect("created");
    let t = table(&client, "/apis/apps/v1/namespaces/default/deployments").await;
    let names: Vec<(String, i64)> = column_names(&t);
    let expected: Vec<(String, i64)> = [
        ("Name", 0),
        ("Ready", 0),
        ("Up-to-date", 0),
        ("Available", 0),
        ("Age", 0),
        ("Containers", 1),
        ("Images", 1),
        ("Selector", 1),
    ]
    .iter()
    .map(|(n, p)| (n.to_string(), *p))
    .collect();
    assert_eq!(names, expected);
    let cells = &t["rows"][0]["cells"];
    assert_eq!(cells[0], "web");
    assert_eq!(cells[1], "0/3");
    assert_eq!(cells[2], 0);
    assert_eq!(cells[3], 0);
    assert_eq!(cells[5], "c");
    assert_eq!(cells[6], "nginx:1.27");
    assert_eq!(cells[7], "app=web");
}

/// Pods and Services are served, and their Tables carry the server's columns
/// (printPod/printService in kubernetes/kubernetes pkg/printers/internalversion/printers.go).
#[tokio::test]
async fn pods_and_services_are_served_with_their_columns() {
    let (_emulator, client) = start().await;
    let empty = table(&client, "/api/v1/namespaces/default/pods").await;
    let pods: Vec<String> = column_names(&empty).into_iter().map(|c| c.0).collect();
    assert_eq!(
        &pods[..5],
        ["Name", "Ready", "Status", "Restarts", "Age"].map(String::from)
    );
    assert_eq!(empty["rows"], json!([]));
    let services = dynamic(&client, "", "v1", "Service", "services");
    let service: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]},
    }))
    .expect("service");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("created");
    let t = table(&client, "/api/v1/namespaces/default/services").await;
    let names: Vec<String> = column_names(&t).into_iter().map(|c| c.0).collect();
    assert_eq!(
        &names[..6],
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age"
        ]
        .map(String::from)
    );
    let cells = &t["rows"][0]["cells"];
    assert_eq!(cells[1], "ClusterIP");
    assert_eq!(cells[3], "<none>");
    assert_eq!(cells[4], "80/TCP");
}

/// A Service gets the server's defaults (SetDefaults_Service in kubernetes/kubernetes
/// pkg/apis/core/v1/defaults.go: type ClusterIP, sessionAffinity None, port protocol TCP,
/// targetPort equal to port) and a cluster IP that later writes keep.
#[tokio::test]
async fn services_get_the_servers_defaults() {
    let (_emulator, client) = start().await;
    let services = dynamic(&client, "", "v1", "Service", "services");
    let service: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080}]},
    }))
    .expect("service");
    let created = services
        .create(&PostParams::default(), &service)
        .await
        .expect("created");
    let spec = &created.data["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["ports"][0]["protocol"], "TCP");
    assert_eq!(spec["ports"][0]["targetPort"], 8080);
    let ip = spec["clusterIP"]
        .as_str()
        .expect("a cluster IP")
        .to_string();
    assert!(ip.starts_with("10.96."), "{ip}");
    let patched = services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .expect("patched");
    assert_eq!(patched.data["spec"]["clusterIP"], ip.as_str());
}

/// `/openapi/v3/apis/apps/v1` carries the real Deployment schema, as kube-apiserver
/// publishes it (https://kubernetes.io/docs/concepts/overview/kubernetes-api/#openapi-v3),
/// so `kubectl explain` can walk its fields.
#[tokio::test]
async fn openapi_v3_serves_built_in_schemas() {
    let (_emulator, client) = start().await;
    let request = http::Request::get("/openapi/v3/apis/apps/v1")
        .body(Vec::new())
        .expect("request");
    let doc = raw(&client, request).await.expect("document");
    let schemas = &doc["components"]["schemas"];
    let deployment = &schemas["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        deployment["x-kubernetes-group-version-kind"][0]["kind"],
        "Deployment"
    );
    let spec_ref = deployment["properties"]["spec"]["$ref"]
        .as_str()
        .or_else(|| deployment["properties"]["spec"]["allOf"][0]["$ref"].as_str())
        .expect("spec is a reference");
    let spec_name = spec_ref.trim_start_matches("#/components/schemas/");
    assert!(
        schemas[spec_name]["properties"]["strategy"].is_object(),
        "{spec_name} documents strategy"
    );
}

// ---- the kinds a Helm chart installs ---------------------------------------------------------

/// RBAC, PodDisruptionBudgets and NetworkPolicies are served where kube-apiserver serves
/// them (https://kubernetes.io/docs/reference/kubernetes-api/), and server-side apply merges
/// their lists by the keys their schemas declare.
#[tokio::test]
async fn chart_kinds_are_served_and_applied() {
    let (_emulator, client) = start().await;
    let cases = [
        ("rbac.authorization.k8s.io", "Role", "roles", true),
        (
            "rbac.authorization.k8s.io",
            "RoleBinding",
            "rolebindings",
            true,
        ),
        (
            "rbac.authorization.k8s.io",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        (
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        ),
        (
            "policy",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
        ),
        (
            "networking.k8s.io",
            "NetworkPolicy",
            "networkpolicies",
            true,
        ),
        ("", "Pod", "pods", true),
        ("", "Service", "services", true),
    ];
    for (group, kind, plural, namespaced) in cases {
        let gvk = GroupVersionKind::gvk(group, "v1", kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(client.clone(), "default", &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        let list = api.list(&Default::default()).await;
        assert!(list.is_ok(), "{kind}: {list:?}");
    }
    let services = dynamic(&client, "", "v1", "Service", "services");
    let apply = |ports: Value| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "svc"},
            "spec": {"selector": {"app": "x"}, "ports": ports},
        })
    };
    let params = PatchParams::apply("chart");
    services
        .patch(
            "svc",
            &params,
            &Patch::Apply(apply(json!([{"name": "http", "port": 80}]))),
        )
        .await
        .expect("applied");
    let other = PatchParams::apply("other");
    let merged = services
        .patch(
            "svc",
            &other,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
                "spec": {"ports": [{"name": "metrics", "port": 9090, "protocol": "TCP"}]},
            })),
        )
        .await
        .expect("a second manager adds a port");
    let ports: Vec<i64> = merged.data["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(ports, [80, 9090], "ports merge by port and protocol");
}
