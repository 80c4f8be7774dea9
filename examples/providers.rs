//! The provider benchmark: ProviderCredentials against the real `keyward run` binary (a
//! separate process) on the emulator, validated against a local server that answers as a
//! provider does; prints figures, the last line one JSON object.
//!
//!     cargo run --release --example providers
//!     cargo run --release --example providers -- --credentials 200 --flips 20
//!
//! Figures: seconds until `--credentials` new credentials are all Valid; then, `--flips`
//! times, the delay from a phase change (the server starts refusing one key, and
//! `keyward.dev/validate` asks again) to the `keyward-providers` ConfigMap no longer
//! listing it, median and p99; requests the server received.

mod bench;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::response::Response;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use keyward::crd::{Phase, ProviderCredential};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

#[derive(Default)]
struct Provider {
    refused: Mutex<HashSet<String>>,
    requests: Mutex<u64>,
}

async fn answer(State(p): State<Arc<Provider>>, request: Request) -> Response {
    *p.requests.lock().expect("lock") += 1;
    let path = request.uri().path().to_string();
    let refused = p
        .refused
        .lock()
        .expect("lock")
        .iter()
        .any(|r| path.starts_with(r));
    Response::builder()
        .status(if refused { 401 } else { 200 })
        .body(axum::body::Body::from("{}"))
        .expect("response")
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} needs a number"))
        })
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The names in the ConfigMap's `chat` list.
async fn chat_list(cms: &Api<ConfigMap>) -> Option<Vec<String>> {
    let cm = cms.get_opt("keyward-providers").await.ok()??;
    let list: Vec<serde_json::Value> = serde_json::from_str(cm.data?.get("chat")?).ok()?;
    Some(
        list.iter()
            .filter_map(|e| e["name"].as_str().map(String::from))
            .collect(),
    )
}

#[tokio::main]
async fn main() {
    let n = arg("--credentials", 200);
    let flips = arg("--flips", 20);
    eprintln!("providers bench: building keyward (release)");
    let binary = bench::keyward_binary();
    let provider = Arc::new(Provider::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(provider.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let extra = ["--allow-host".to_string(), "127.0.0.1".to_string()];
    let (emulator, client, op) = bench::start(&binary, dir.path(), &extra).await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "key"}, "stringData": {"api-key": "sk-bench-0123456789abcdefghij"}}),
    )
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let pcreds: Api<ProviderCredential> = Api::default_namespaced(client.clone());
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());

    eprintln!("providers bench: {n} credentials");
    let started = Instant::now();
    for i in 0..n {
        let name = format!("p{i:04}");
        let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ProviderCredential",
            "metadata": {"name": name}, "spec": {"provider": "openai", "priority": i,
            "secretRef": {"name": "key"}, "baseURL": format!("http://{addr}/{name}/v1")}});
        pcreds
            .patch(&name, &PatchParams::apply("bench"), &Patch::Apply(&body))
            .await
            .expect("applied");
    }
    loop {
        let list = pcreds.list(&Default::default()).await.expect("list");
        let valid = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase) == Some(Phase::Valid))
            .count();
        if valid == n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{valid}/{n} Valid after 10 min"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_valid = started.elapsed().as_secs_f64();
    eprintln!("providers bench: all Valid after {all_valid:.2}s");

    let mut delays = Vec::new();
    for i in 0..flips {
        let name = format!("p{i:04}");
        provider
            .refused
            .lock()
            .expect("lock")
            .insert(format!("/{name}/"));
        let asked = Instant::now();
        let patch =
            json!({"metadata": {"annotations": {"keyward.dev/validate": format!("flip-{i}")}}});
        pcreds
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotated");
        loop {
            if chat_list(&cms).await.is_some_and(|l| !l.contains(&name)) {
                break;
            }
            assert!(
                asked.elapsed() < Duration::from_secs(60),
                "{name} still listed after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        delays.push(asked.elapsed().as_secs_f64() * 1000.0);
    }
    delays.sort_by(f64::total_cmp);
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let report = json!({
        "credentials": n,
        "seconds_to_all_valid": r2(all_valid),
        "flips": flips,
        "configmap_delay_ms_median": r2(percentile(&delays, 0.5)),
        "configmap_delay_ms_p99": r2(percentile(&delays, 0.99)),
        "provider_requests": *provider.requests.lock().expect("lock"),
        "rss_mb_peak": (op.rss_kb("VmHWM:") as f64 / 1024.0 * 10.0).round() / 10.0,
    });
    drop(op);
    emulator.shutdown().await;
    println!("{report}");
}
