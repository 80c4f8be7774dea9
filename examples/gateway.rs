//! Verifier throughput for gateways, measured with wrk (Debian's `wrk`; `apt-get install
//! wrk`) against the real `keyward verifier` binary on the emulator, with `keyward run`
//! issuing the keys; prints figures, the last line one JSON object.
//!
//!     cargo run --release --example gateway
//!     cargo run --release --example gateway -- --seconds 10 --connections 64 --keys 1000
//!
//! (r) a reference for the machine: Debian's nginx answering `200 ok`, placed and measured
//! like the verifier (skipped when nginx is not installed); (a) `/healthz` on the same server; (b) `/verify` with one valid key (cached after its
//! first presentation); (c) `/verify` over `--keys` valid keys, each one's first
//! presentation uncached; (d) the first use of a key whose pepper is lost (argon2), beside
//! one argon2 verification timed in this process (medians of five); (e) (b) over TLS.
//! Goals: (b) and (c) ≥ 0.5 × (a) requests/s with p99 ≤ 2 ms at 64 connections; (d) ≤ 1.2
//! × one argon2 verification.
//!
//! The verifiers and wrk (two threads) share every core of this machine; `--pin 1` puts the
//! verifiers on the first half of the cores and wrk (one thread per core) on the other half
//! (`taskset`), as a gateway and a verifier on separate nodes. Either way the load generator
//! and the server saturate the machine together, so the tail also measures what else runs
//! on it: (r), a C server doing the least an HTTP server can, shows that floor. Each measurement runs `--trials` times (3); the medians are reported and
//! every run is printed to stderr.

mod bench;

use std::path::Path;
use std::time::{Duration, Instant};

use bench::{HASH_NS, keyward_binary};
use k8s_openapi::api::core::v1::Secret;
use keyward::crd::ApiKey;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

struct Args {
    seconds: u64,
    connections: u32,
    keys: usize,
    /// `taskset` prefixes for the verifiers and for wrk (empty: not pinned).
    verifier_cpus: String,
    wrk_cpus: String,
    wrk_threads: usize,
    /// Runs of each measurement; the median is reported.
    trials: usize,
}

fn args() -> Args {
    let [seconds, connections, keys, pin, trials] = bench::numeric_flags([
        ("--seconds", Some(10)),
        ("--connections", Some(64)),
        ("--keys", Some(1000)),
        ("--pin", Some(0)),
        ("--trials", Some(3)),
    ]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (verifier_cpus, wrk_cpus, wrk_threads) = if pin != Some(0) && cores >= 2 {
        let half = cores / 2;
        (
            format!("0-{}", half - 1),
            format!("{half}-{}", cores - 1),
            cores - half,
        )
    } else {
        (String::new(), String::new(), 2)
    };
    Args {
        seconds: seconds.unwrap_or(10),
        connections: connections.unwrap_or(64) as u32,
        keys: keys.unwrap_or(1000) as usize,
        verifier_cpus,
        wrk_cpus,
        wrk_threads,
        trials: trials.unwrap_or(3).max(1) as usize,
    }
}

/// wrk's figures: requests/s and p99 latency in ms.
struct Wrk {
    rps: f64,
    p99_ms: f64,
    non_2xx: u64,
}

fn ms(text: &str) -> f64 {
    let t = text.trim();
    let (n, unit) = t
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| t.split_at(i))
        .unwrap_or((t, "ms"));
    let n: f64 = n.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => f64::NAN,
    }
}

/// The median run of `runs` by requests/s and by p99 (each taken separately), every run
/// printed to stderr; the non-2xx answers of all runs added up.
fn median(label: &str, mut runs: Vec<Wrk>) -> Wrk {
    for r in &runs {
        eprintln!(
            "gateway bench: {label}: {:.0} requests/s, p99 {:.2} ms",
            r.rps, r.p99_ms
        );
    }
    let non_2xx = runs.iter().map(|r| r.non_2xx).sum();
    let mid = runs.len() / 2;
    runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    let rps = runs[mid].rps;
    runs.sort_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
    Wrk {
        rps,
        p99_ms: runs[mid].p99_ms,
        non_2xx,
    }
}

/// Runs wrk `args.trials` times with `script` (Lua, may be empty) against `url`.
fn wrk_trials(label: &str, url: &str, script: Option<&Path>, args: &Args) -> Wrk {
    let runs = (0..args.trials).map(|_| wrk(url, script, args)).collect();
    median(label, runs)
}

/// Runs wrk once with `script` (Lua, may be empty) against `url`.
fn wrk(url: &str, script: Option<&Path>, args: &Args) -> Wrk {
    let mut cmd = if args.wrk_cpus.is_empty() {
        std::process::Command::new("wrk")
    } else {
        let mut c = std::process::Command::new("taskset");
        c.args(["-c", &args.wrk_cpus, "wrk"]);
        c
    };
    cmd.arg(format!("-t{}", args.wrk_threads))
        .arg("--latency")
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds));
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(ms)
        .unwrap_or(f64::NAN);
    let non_2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Wrk {
        rps,
        p99_ms,
        non_2xx,
    }
}

/// A reference for this machine: Debian's nginx answering `200 ok` from one worker process
/// per verifier core, placed like the verifiers, measured like (a). `None` without nginx.
fn nginx_reference(dir: &Path, args: &Args) -> Option<Wrk> {
    let nginx = ["nginx", "/usr/sbin/nginx"].into_iter().find(|n| {
        std::process::Command::new(n)
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success())
    })?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = if args.verifier_cpus.is_empty() {
        workers
    } else {
        workers / 2
    };
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes {workers};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx.err;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; \
             fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\"; }} }} }}\n"
        ),
    )
    .expect("nginx.conf");
    let mut cmd = if args.verifier_cpus.is_empty() {
        std::process::Command::new(nginx)
    } else {
        let mut c = std::process::Command::new("taskset");
        c.args(["-c", &args.verifier_cpus, nginx]);
        c
    };
    let mut child = cmd
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    while bench::http_get(&addr, "/") != "ok" && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = wrk_trials("(r)", &format!("http://{addr}/"), None, args);
    let _ = child.kill();
    let _ = child.wait();
    Some(r)
}

/// A Lua script presenting `keys` in turn (one file of keys, read by wrk, never printed).
fn script(dir: &Path, name: &str, keys: &[String]) -> std::path::PathBuf {
    let keys_file = dir.join(format!("{name}.keys"));
    std::fs::write(&keys_file, keys.join("\n")).expect("keys file");
    let lua = format!(
        r#"local keys = {{}}
for line in io.lines("{}") do keys[#keys + 1] = line end
local i = 0
request = function()
  i = i % #keys + 1
  return wrk.format("GET", "/verify", {{["Authorization"] = "Bearer " .. keys[i]}})
end
"#,
        keys_file.display()
    );
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, lua).expect("script");
    path
}

/// Waits until every current key (`keys` ApiKeys, plus the warm-up key and the victims) is recorded under
/// the pepper the Secret holds now.
async fn wait_rekeyed(client: &kube::Client, keys: usize) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), HASH_NS);
    let started = Instant::now();
    loop {
        let pepper = secrets
            .get(keyward::controller::PEPPER_SECRET)
            .await
            .ok()
            .and_then(|s| s.data)
            .and_then(|d| d.get("pepper").cloned())
            .map(|b| keyward::keys::Pepper::new(b.0).id());
        let records = secrets
            .list(&kube::api::ListParams::default().labels("keyward.dev/role=hash"))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let rekeyed = records
            .iter()
            .filter_map(|s| keyward::record::HashRecord::from_secret(s).ok())
            .filter(|r| {
                r.current.as_ref().map(|c| Some(c.pepper_id.clone())) == Some(pepper.clone())
            })
            .count();
        if rekeyed >= keys + 1 + VICTIMS {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{rekeyed} of {} keys re-keyed",
            keys + 1 + VICTIMS
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Keys whose pepper is lost, each presented once for (d); one argon2 verification is timed
/// as often, and the medians compared.
const VICTIMS: usize = 5;

fn median_ms(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs.get(runs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[tokio::main]
async fn main() {
    let args = args();
    eprintln!("gateway bench: building keyward (release)");
    let binary = keyward_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let (_emulator, client, op) = bench::start(&binary, dir.path(), &[]).await;

    eprintln!("gateway bench: issuing {} keys", args.keys);
    for i in 0..args.keys {
        bench::apply_apikey(&client, &format!("k{i:05}"), json!({})).await;
    }
    // Previous keys under the pepper about to be lost: the first warms the hashing threads
    // (their argon2 memory is allocated once per thread), the others are measured.
    let names: Vec<String> = std::iter::once("warm".to_string())
        .chain((0..VICTIMS).map(|i| format!("victim-{i}")))
        .collect();
    let mut lost_keys = Vec::new();
    for name in &names {
        bench::apply_apikey(&client, name, json!({"rotation": {"gracePeriod": "24h"}})).await;
    }
    let mut keys = Vec::new();
    for i in 0..args.keys {
        keys.push(bench::key_in(&client, &format!("k{i:05}"), None).await);
    }
    for name in &names {
        let lost = bench::key_in(&client, name, None).await;
        let rotate = json!({"metadata": {"annotations": {"keyward.dev/rotate": "1"}}});
        Api::<ApiKey>::default_namespaced(client.clone())
            .patch(name, &PatchParams::default(), &Patch::Merge(&rotate))
            .await
            .expect("rotate");
        let _ = bench::key_in(&client, name, Some(&lost)).await;
        lost_keys.push(lost);
    }
    let warm = lost_keys[0].clone();
    // Lose the pepper the previous key's record was made under.
    let _op = bench::restart_without_pepper(&binary, dir.path(), &client, op).await;
    // TLS pair for (e).
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).expect("CA");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    std::fs::write(dir.path().join("tls.crt"), leaf.pem()).expect("cert");
    std::fs::write(dir.path().join("tls.key"), leaf_key.serialize_pem()).expect("key");
    let pinned = if args.verifier_cpus.is_empty() {
        String::new()
    } else {
        format!("taskset -c {}", args.verifier_cpus)
    };
    let plain = bench::spawn_wrapped(
        &binary,
        dir.path(),
        "verifier-plain",
        &[
            "verifier",
            "--addr",
            "127.0.0.1:0",
            "--hash-namespace",
            HASH_NS,
        ],
        &[],
        &pinned,
    );
    let cert = dir.path().join("tls.crt").display().to_string();
    let tls_key = dir.path().join("tls.key").display().to_string();
    let tls = bench::spawn_wrapped(
        &binary,
        dir.path(),
        "verifier-tls",
        &[
            "verifier",
            "--addr",
            "127.0.0.1:0",
            "--hash-namespace",
            HASH_NS,
            "--tls-cert",
            &cert,
            "--tls-key",
            &tls_key,
        ],
        &[],
        &pinned,
    );
    let addr = plain.metrics.clone();
    let tls_addr = tls.metrics.clone();
    // Ready once both indexes have every key re-keyed under the new pepper (the fast path).
    eprintln!("gateway bench: waiting for the re-keyed index");
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    for base in [format!("http://{addr}"), format!("https://{tls_addr}")] {
        for k in [&keys[0], &keys[keys.len() - 1]] {
            loop {
                let ok = http
                    .get(format!("{base}/verify"))
                    .bearer_auth(k)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if ok {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(300),
                    "keys never verified"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // The operator matches each workload key by argon2 once (its pepper is gone) to re-key
    // it: wait until every current key is re-keyed, so nothing else hashes while measuring.
    wait_rekeyed(&client, keys.len()).await;

    eprintln!("gateway bench: (d) first use of a key under a lost pepper");
    let argon2_ms = {
        let pool = keyward::hashing::HashPool::new(1);
        let caller = pool.caller("bench", 4);
        let phc = caller
            .run_blocking(|| {
                keyward::keys::argon2_hash(
                    &keyward::keys::PlainKey::new("kw_bench_0123456789abcdefghijklmnopqrstu"),
                    &keyward::keys::Argon2Params::default(),
                )
            })
            .expect("pool")
            .expect("hash");
        let mut runs = Vec::new();
        for _ in 0..VICTIMS {
            let phc = phc.clone();
            let t = Instant::now();
            caller
                .run_blocking(move || {
                    keyward::keys::argon2_verify("kw_bench_0123456789abcdefghijklmnopqrstu", &phc)
                })
                .expect("pool");
            runs.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        median_ms(runs)
    };
    let warmed = http
        .get(format!("http://{addr}/verify"))
        .bearer_auth(&warm)
        .send()
        .await
        .expect("answer")
        .status();
    assert_eq!(warmed, 200);
    let mut firsts = Vec::new();
    for lost in &lost_keys[1..] {
        let t = Instant::now();
        let first = http
            .get(format!("http://{addr}/verify"))
            .bearer_auth(lost)
            .send()
            .await
            .expect("answer")
            .status();
        firsts.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(first, 200, "the lost-pepper key verifies (by argon2)");
    }
    eprintln!("gateway bench: (d) first uses {firsts:.2?} ms, argon2 {argon2_ms:.2} ms (median)");
    let d_ms = median_ms(firsts);

    eprintln!("gateway bench: (r) reference: nginx answering 200");
    let r = nginx_reference(dir.path(), &args);
    eprintln!("gateway bench: (a) /healthz");
    let a = wrk_trials("(a)", &format!("http://{addr}/healthz"), None, &args);
    eprintln!("gateway bench: (b) /verify, one cached key");
    let one = script(dir.path(), "one", &keys[..1]);
    let b = wrk_trials("(b)", &format!("http://{addr}/verify"), Some(&one), &args);
    eprintln!("gateway bench: (c) /verify over {} keys", args.keys);
    let many = script(dir.path(), "many", &keys);
    let mut runs = Vec::new();
    for trial in 0..args.trials {
        // A fresh verifier process each run: every key's first presentation is uncached.
        let fresh = bench::spawn_wrapped(
            &binary,
            dir.path(),
            &format!("verifier-fresh-{trial}"),
            &[
                "verifier",
                "--addr",
                "127.0.0.1:0",
                "--hash-namespace",
                HASH_NS,
            ],
            &[],
            &pinned,
        );
        while bench::http_get(&fresh.metrics, "/readyz") != "ok" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        runs.push(wrk(
            &format!("http://{}/verify", fresh.metrics),
            Some(&many),
            &args,
        ));
    }
    let c = median("(c)", runs);
    eprintln!("gateway bench: (e) (b) over TLS");
    let e = wrk_trials(
        "(e)",
        &format!("https://{tls_addr}/verify"),
        Some(&one),
        &args,
    );

    let out = json!({
        "connections": args.connections,
        "trials": args.trials,
        "verifier_cpus": args.verifier_cpus,
        "wrk_cpus": args.wrk_cpus,
        "r_nginx_rps": r.as_ref().map(|r| r.rps.round()),
        "r_nginx_p99_ms": r.as_ref().map(|r| round(r.p99_ms)),
        "a_healthz_rps": a.rps.round(),
        "a_healthz_p99_ms": round(a.p99_ms),
        "b_one_key_rps": b.rps.round(),
        "b_one_key_p99_ms": round(b.p99_ms),
        "b_ratio_to_healthz": round(b.rps / a.rps),
        "c_many_keys_rps": c.rps.round(),
        "c_many_keys_p99_ms": round(c.p99_ms),
        "c_ratio_to_healthz": round(c.rps / a.rps),
        "d_lost_pepper_first_use_ms": round(d_ms),
        "d_argon2_verify_ms": round(argon2_ms),
        "d_ratio": round(d_ms / argon2_ms),
        "e_tls_one_key_rps": e.rps.round(),
        "e_tls_one_key_p99_ms": round(e.p99_ms),
        "non_2xx": a.non_2xx + b.non_2xx + c.non_2xx + e.non_2xx,
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    println!("{out}");
}
