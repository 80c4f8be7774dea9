//! Issuing keys: time from applying an ApiKey to Ready, and API writes per issued key,
//! with the real controllers against the in-process emulator (production argon2 settings).
//!
//!     cargo bench --bench issue            # 50 keys
//!     cargo bench --bench issue -- 200     # more

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use keyward::clock::SystemClock;
use keyward::controller::{self, Config, Context};
use keyward::crd::ApiKey;
use keyward_emulator::Emulator;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let emulator = Emulator::start().await.expect("emulator");
    let client = emulator.client();
    keyward::cli::install_crds(&client).await.expect("CRDs");
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "keyward-system"}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("ns");
    let pepper = controller::ensure_pepper(&client, "keyward-system")
        .await
        .expect("pepper");
    let ctx = Arc::new(Context::new(
        client.clone(),
        Config::default(),
        Arc::new(SystemClock),
        pepper,
    ));
    tokio::spawn(controller::run_all(ctx, std::future::pending()));
    let api: Api<ApiKey> = Api::default_namespaced(client.clone());
    let mut latencies = Vec::with_capacity(n);
    let mut writes = Vec::with_capacity(n);
    let mut by_kind = std::collections::BTreeMap::<String, u64>::new();
    for i in 0..n {
        let name = format!("bench-{i}");
        let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey", "metadata": {"name": name}, "spec": {"owner": "bench"}});
        emulator.hooks().reset_counters();
        let start = Instant::now();
        api.patch(&name, &PatchParams::apply("bench"), &Patch::Apply(&body))
            .await
            .expect("apply");
        loop {
            let ak = api.get(&name).await.expect("get");
            let ready = ak.status.as_ref().is_some_and(|s| {
                s.observed_generation == ak.metadata.generation
                    && keyward::conditions::ready(&s.conditions)
                        .is_some_and(|c| c.reason == "KeyIssued")
            });
            if ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(start.elapsed());
        // Let trailing writes (the Event) land before counting.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let counters = emulator.hooks().counters();
        let mut total = 0;
        for ((verb, resource), count) in counters {
            if matches!(verb.as_str(), "create" | "update" | "patch" | "delete") {
                *by_kind.entry(format!("{verb} {resource}")).or_default() += count;
                total += count;
            }
        }
        // The benchmark's own apply is not keyward's write.
        writes.push(total - 1);
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "apply -> Ready (in-process, {n} keys): median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        ms(pct(0.5)),
        ms(pct(0.95)),
        ms(*latencies.last().expect("n > 0"))
    );
    let mean = writes.iter().sum::<u64>() as f64 / n as f64;
    println!(
        "API writes per issued key: {mean:.1} (min {}, max {})",
        writes.iter().min().unwrap_or(&0),
        writes.iter().max().unwrap_or(&0)
    );
    let bench_apply = by_kind.get("patch apikeys").copied().unwrap_or(0);
    for (kind, count) in by_kind {
        let count = if kind == "patch apikeys" {
            count - n as u64
        } else {
            count
        };
        println!("  {kind}: {:.1} per key", count as f64 / n as f64);
    }
    let _ = bench_apply;
}
