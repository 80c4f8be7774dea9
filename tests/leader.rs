//! `keyward run --leader-elect`: two replicas, one active; the successor takes over when the
//! leader stops, and only the leader's controllers act.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::operator::HASH_NS;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use keyward::crd::ApiKey;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

fn replica(kubeconfig: &std::path::Path, instance: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "run",
            "--hash-namespace",
            HASH_NS,
            "--leader-elect",
            "--instance",
            instance,
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("keyward run starts")
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    let lease = leases.get_opt("keyward-controller").await.ok().flatten()?;
    keyward::controller::leader::live_holder(&lease, jiff::Timestamp::now())
}

async fn issued_by(client: &kube::Client, apikeys: &Api<ApiKey>, name: &str) -> String {
    let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey", "metadata": {"name": name}, "spec": {}});
    apikeys
        .patch(name, &PatchParams::apply("test"), &Patch::Apply(&body))
        .await
        .expect("applied");
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while std::time::Instant::now() < deadline {
        let list = events
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .expect("events");
        if let Some(e) = list
            .items
            .iter()
            .find(|e| e.reason.as_deref() == Some("KeyIssued"))
        {
            let instances: std::collections::BTreeSet<_> = list
                .items
                .iter()
                .filter_map(|e| e.reporting_instance.clone())
                .collect();
            assert_eq!(
                instances.len(),
                1,
                "only one replica acted on {name}: {instances:?}"
            );
            return e.reporting_instance.clone().expect("reporting instance");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name} was never issued");
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    panic!(
        "replica did not stop within {:?} of SIGTERM",
        common::PATIENCE
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_replica_leads_and_a_successor_takes_over() {
    let cluster = common::operator::Cluster::start().await;
    let (client, kubeconfig) = (cluster.client.clone(), cluster.kubeconfig.clone());
    let mut a = replica(&kubeconfig, "replica-a");
    let mut b = replica(&kubeconfig, "replica-b");
    let leases: Api<Lease> = Api::namespaced(client.clone(), HASH_NS);
    let leader = common::eventually("a leader to be elected", || holder(&leases)).await;
    let apikeys: Api<ApiKey> = Api::default_namespaced(client.clone());
    assert_eq!(
        issued_by(&client, &apikeys, "first").await,
        leader,
        "the leader issues"
    );
    let (stopping, successor) = if leader == "replica-a" {
        (&mut a, "replica-b")
    } else {
        (&mut b, "replica-a")
    };
    let status = tokio::task::block_in_place(|| terminate(stopping));
    assert!(status.success(), "the leader stops cleanly: {status:?}");
    common::eventually(
        &format!("{successor} to take the released Lease"),
        || async { (holder(&leases).await.as_deref() == Some(successor)).then_some(()) },
    )
    .await;
    assert_eq!(
        issued_by(&client, &apikeys, "second").await,
        successor,
        "the successor issues"
    );
    let lease = leases.get("keyward-controller").await.expect("lease");
    assert_eq!(lease.spec.and_then(|s| s.lease_transitions), Some(1));
    for child in [&mut a, &mut b] {
        if child.try_wait().expect("wait").is_none() {
            let status = tokio::task::block_in_place(|| terminate(child));
            assert!(status.success());
        }
    }
}

/// One GET: (status line as HTTP/1.0 prints it, body).
fn http_get(addr: &str, path: &str) -> (String, String) {
    let (code, _, body) = common::http(addr, "GET", path, &[], "");
    (
        format!("HTTP/1.0 {code} {}", if code == 200 { "OK" } else { "" }),
        body,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_health_endpoints() {
    use std::io::{BufRead, BufReader};
    let cluster = common::operator::Cluster::start().await;
    let (client, kubeconfig) = (cluster.client.clone(), cluster.kubeconfig.clone());
    let mut operator = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "--log-format",
            "json",
            "run",
            "--hash-namespace",
            HASH_NS,
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyward run starts");
    let stderr = operator.stderr.take().expect("stderr");
    // Keep reading stderr for the process's whole life; hand over the bound address.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(addr) = v["fields"]["addr"].as_str()
            {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr = tokio::task::block_in_place(|| rx.recv_timeout(common::PATIENCE))
        .expect("the bound metrics address is logged");
    let apikeys: Api<ApiKey> = Api::default_namespaced(client.clone());
    let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey", "metadata": {"name": "watched"},
        "spec": {"expiresAfter": "720h", "rotation": {"every": "24h"}}});
    apikeys
        .patch("watched", &PatchParams::apply("test"), &Patch::Apply(&body))
        .await
        .expect("applied");
    let text = common::eventually("the key's timestamps in /metrics", || async {
        let text = tokio::task::block_in_place(|| http_get(&addr, "/metrics")).1;
        text.contains("keyward_apikey_next_rotation_timestamp_seconds{")
            .then_some(text)
    })
    .await;
    let ak = apikeys.get("watched").await.expect("get");
    let status = ak.status.expect("status");
    let expiry = status.expires_at.expect("expiresAt").0.as_second();
    let next = status
        .next_rotation_at
        .expect("nextRotationAt")
        .0
        .as_second();
    let value = |metric: &str| -> i64 {
        text.lines()
            .find(|l| l.starts_with(metric) && l.contains("name=\"watched\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as i64)
            .unwrap_or_else(|| panic!("{metric} missing:\n{text}"))
    };
    assert!((value("keyward_apikey_expiry_timestamp_seconds") - expiry).abs() <= 1);
    assert!((value("keyward_apikey_next_rotation_timestamp_seconds") - next).abs() <= 1);
    assert!(
        text.contains("keyward_reconciles_total{controller=\"apikey\"}"),
        "{text}"
    );
    assert!(text.contains("keyward_leader 1"), "{text}");
    assert_eq!(
        tokio::task::block_in_place(|| http_get(&addr, "/healthz")).0,
        "HTTP/1.0 200 OK"
    );
    assert_eq!(
        tokio::task::block_in_place(|| http_get(&addr, "/readyz")).0,
        "HTTP/1.0 200 OK"
    );
    let status = tokio::task::block_in_place(|| terminate(&mut operator));
    assert!(status.success());
}
