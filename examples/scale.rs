//! The scale benchmark: N ApiKeys applied at once against the real `keyward run` binary (a
//! separate process) on the emulator; prints figures, the last line one JSON object.
//!
//!     cargo run --release --example scale -- --keys 1000
//!     cargo run --release --example scale -- --keys 5000 --steady-seconds 60 --unrelated 10000
//!
//! Figures: seconds until every key is Ready, beside the argon2 bound (N hashes over all
//! cores, measured in the same run); API writes and requests per key (Events excluded);
//! reconcile failures; writes in a steady state after convergence; peak and final RSS of
//! the `keyward run` process; and its RSS after `--unrelated` Secrets of 1 KiB each were
//! created with a client-side `kubectl apply` (their data lands in an annotation).

mod bench;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bench::{argon2_bound, cpu_seconds, keyward_binary, kubectl};
use futures::StreamExt;
use keyward::crd::ApiKey;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

struct Args {
    keys: usize,
    steady_seconds: u64,
    unrelated: usize,
    hash_workers: Option<usize>,
}

fn args() -> Args {
    let [keys, steady_seconds, unrelated, hash_workers] = bench::numeric_flags([
        ("--keys", Some(1000)),
        ("--steady-seconds", Some(120)),
        ("--unrelated", Some(10_000)),
        ("--hash-workers", None),
    ]);
    Args {
        keys: keys.unwrap_or(1000) as usize,
        steady_seconds: steady_seconds.unwrap_or(120),
        unrelated: unrelated.unwrap_or(10_000) as usize,
        hash_workers: hash_workers.map(|w| w as usize),
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let n = args.keys;
    eprintln!("scale: building keyward (release)");
    let binary = keyward_binary();
    eprintln!("scale: measuring the argon2 bound ({n} hashes on every core)");
    let bound = tokio::task::spawn_blocking(move || argon2_bound(n))
        .await
        .expect("bound");
    eprintln!("scale: argon2 bound {bound:.2}s");

    let dir = tempfile::tempdir().expect("temp dir");
    let extra: Vec<String> = args
        .hash_workers
        .map(|w| vec!["--hash-workers".to_string(), w.to_string()])
        .unwrap_or_default();
    let (emulator, client, op) = bench::start(&binary, dir.path(), &extra).await;
    let kubeconfig = bench::kubeconfig(dir.path());
    let rss_start = op.rss_kb("VmRSS:");

    eprintln!("scale: applying {n} ApiKeys");
    let apikeys: Api<ApiKey> = Api::default_namespaced(client.clone());
    emulator.hooks().reset_counters();
    let (cpu_keyward_0, cpu_bench_0) = (op.cpu_seconds(), cpu_seconds("/proc/self/stat"));
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = apikeys.clone();
            async move {
                let name = format!("scale-{i}");
                let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
                    "metadata": {"name": name}, "spec": {"owner": "scale"}});
                api.patch(&name, &PatchParams::apply("scale"), &Patch::Apply(&body))
                    .await
                    .expect("apply");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    // Readiness from a watch, as a controller would see it: no polling load on the API.
    let ready_of = |ak: &ApiKey| {
        ak.status.as_ref().is_some_and(|s| {
            keyward::conditions::ready(&s.conditions)
                .is_some_and(|c| c.status == keyward::crd::ConditionStatus::True)
        })
    };
    let mut ready = std::collections::HashSet::new();
    let mut events = std::pin::pin!(kube::runtime::watcher(
        apikeys.clone(),
        kube::runtime::watcher::Config::default()
    ));
    let mut report_at = Instant::now() + Duration::from_secs(10);
    while ready.len() < n {
        if Instant::now() >= report_at {
            eprintln!(
                "scale: {}/{n} Ready after {:.0}s",
                ready.len(),
                started.elapsed().as_secs_f64()
            );
            report_at += Duration::from_secs(10);
        }
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "not converged after an hour: {}/{n}",
            ready.len()
        );
        let event = match tokio::time::timeout(Duration::from_secs(1), events.next()).await {
            Err(_) => continue,
            Ok(next) => next.expect("the watch stream never ends"),
        };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                eprintln!("scale: watch error (retrying): {e}");
                continue;
            }
        };
        match event {
            kube::runtime::watcher::Event::Apply(ak)
            | kube::runtime::watcher::Event::InitApply(ak) => {
                let name = ak.metadata.name.clone().unwrap_or_default();
                if ready_of(&ak) {
                    ready.insert(name);
                } else {
                    ready.remove(&name);
                }
            }
            _ => {}
        }
    }
    let seconds_to_ready = started.elapsed().as_secs_f64();
    let cpu_keyward = op.cpu_seconds() - cpu_keyward_0;
    let cpu_emulator = cpu_seconds("/proc/self/stat") - cpu_bench_0;
    eprintln!("scale: all {n} Ready after {seconds_to_ready:.2}s");
    // Trailing writes of the last keys (their Events, a follow-up pass) land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counters = emulator.hooks().counters();
    let (mut writes, mut requests) = (0u64, 0u64);
    for ((verb, resource), count) in &counters {
        if resource == "events" {
            continue;
        }
        // The benchmark's own applies and polls are not keyward's.
        let own = match (verb.as_str(), resource.as_str()) {
            ("patch", "apikeys") => n as u64,
            ("list" | "watch", "apikeys") => 1,
            _ => 0,
        };
        let count = count.saturating_sub(own);
        requests += count;
        if matches!(verb.as_str(), "create" | "update" | "patch" | "delete") {
            writes += count;
        }
    }
    let reconcile_errors = op.metric_sum("keyward_reconcile_failures_total");
    let rss_peak = op.rss_kb("VmHWM:");

    eprintln!("scale: steady state for {}s", args.steady_seconds);
    emulator.hooks().reset_counters();
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let steady_state_writes = emulator.hooks().writes();
    let rss_final = op.rss_kb("VmRSS:");

    let mut rss_unrelated = rss_final;
    if args.unrelated > 0 {
        eprintln!(
            "scale: {} unrelated Secrets (1 KiB each) by client-side kubectl apply",
            args.unrelated
        );
        let manifest = dir.path().join("unrelated.yaml");
        let mut file = std::fs::File::create(&manifest).expect("manifest");
        let filler = "x".repeat(1024);
        for i in 0..args.unrelated {
            writeln!(
                file,
                "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: unrelated-{i}\n  namespace: default\nstringData:\n  data: {filler}"
            )
            .expect("write");
        }
        drop(file);
        let out = Command::new(kubectl())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["apply", "-f"])
            .arg(&manifest)
            .stdout(Stdio::null())
            .output()
            .expect("kubectl runs (scripts/install-tools installs it)");
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Let keyward's metadata watch take them all in.
        tokio::time::sleep(Duration::from_secs(10)).await;
        rss_unrelated = op.rss_kb("VmRSS:");
    }
    let mb = |kb: u64| (kb as f64 / 1024.0 * 10.0).round() / 10.0;
    let report = json!({
        "keys": n,
        "seconds_to_ready": (seconds_to_ready * 100.0).round() / 100.0,
        "argon2_bound_seconds": (bound * 100.0).round() / 100.0,
        "writes_per_key": (writes as f64 / n as f64 * 100.0).round() / 100.0,
        "requests_per_key": (requests as f64 / n as f64 * 100.0).round() / 100.0,
        "reconcile_errors": reconcile_errors as u64,
        "cpu_seconds_keyward": (cpu_keyward * 100.0).round() / 100.0,
        "cpu_seconds_emulator_and_client": (cpu_emulator * 100.0).round() / 100.0,
        "steady_state_writes": steady_state_writes,
        "rss_mb_start": mb(rss_start),
        "rss_mb_peak": mb(rss_peak),
        "rss_mb_final": mb(rss_final),
        "rss_mb_with_unrelated": mb(rss_unrelated),
    });
    eprintln!("scale: requests by kind: {counters:?}");
    drop(op);
    emulator.shutdown().await;
    println!("{report}");
}
