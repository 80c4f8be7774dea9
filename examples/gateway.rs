//! Verifier throughput for gateways, measured with wrk (Debian's `wrk`; `apt-get install
//! wrk`) against the real `keyward verifier` binary on the emulator, with `keyward run`
//! issuing the keys; prints figures, the last line one JSON object.
//!
//!     cargo run --release --example gateway
//!     cargo run --release --example gateway -- --seconds 10 --connections 64 --keys 1000
//!
//! (a) `/healthz` on the same server; (b) `/verify` with one valid key (cached after its
//! first presentation); (c) `/verify` over `--keys` valid keys, each one's first
//! presentation uncached; (d) the first use of a key whose pepper is lost (argon2), beside
//! one argon2 verification timed in this process; (e) (b) over TLS.
//! Goals: (b) and (c) ≥ 0.5 × (a) requests/s with p99 ≤ 2 ms at 64 connections; (d) ≤ 1.2
//! × one argon2 verification.

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
}

fn args() -> Args {
    let [seconds, connections, keys] = bench::numeric_flags([
        ("--seconds", Some(10)),
        ("--connections", Some(64)),
        ("--keys", Some(1000)),
    ]);
    Args {
        seconds: seconds.unwrap_or(10),
        connections: connections.unwrap_or(64) as u32,
        keys: keys.unwrap_or(1000) as usize,
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

/// Runs wrk with `script` (Lua, may be empty) against `url`.
fn wrk(url: &str, script: Option<&Path>, args: &Args) -> Wrk {
    let mut cmd = std::process::Command::new("wrk");
    cmd.args(["-t2", "--latency"])
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

/// Waits until every current key (`keys` ApiKeys, plus the two victims) is recorded under
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
        if rekeyed >= keys + 2 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{rekeyed} of {} keys re-keyed",
            keys + 2
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
    // Two previous keys under the pepper about to be lost: the first warms the hashing
    // threads (their argon2 memory is allocated once per thread), the second is measured.
    let mut lost_keys = Vec::new();
    for name in ["warm", "victim"] {
        bench::apply_apikey(&client, name, json!({"rotation": {"gracePeriod": "24h"}})).await;
    }
    let mut keys = Vec::new();
    for i in 0..args.keys {
        keys.push(bench::key_in(&client, &format!("k{i:05}"), None).await);
    }
    for name in ["warm", "victim"] {
        let lost = bench::key_in(&client, name, None).await;
        let rotate = json!({"metadata": {"annotations": {"keyward.dev/rotate": "1"}}});
        Api::<ApiKey>::default_namespaced(client.clone())
            .patch(name, &PatchParams::default(), &Patch::Merge(&rotate))
            .await
            .expect("rotate");
        let _ = bench::key_in(&client, name, Some(&lost)).await;
        lost_keys.push(lost);
    }
    let (warm, lost) = (lost_keys[0].clone(), lost_keys[1].clone());
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
    let plain = bench::spawn(
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
    );
    let cert = dir.path().join("tls.crt").display().to_string();
    let tls_key = dir.path().join("tls.key").display().to_string();
    let tls = bench::spawn(
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
        let mut best = f64::MAX;
        for _ in 0..5 {
            let phc = phc.clone();
            let t = Instant::now();
            caller
                .run_blocking(move || {
                    keyward::keys::argon2_verify("kw_bench_0123456789abcdefghijklmnopqrstu", &phc)
                })
                .expect("pool");
            best = best.min(t.elapsed().as_secs_f64() * 1000.0);
        }
        best
    };
    let warmed = http
        .get(format!("http://{addr}/verify"))
        .bearer_auth(&warm)
        .send()
        .await
        .expect("answer")
        .status();
    assert_eq!(warmed, 200);
    let t = Instant::now();
    let first = http
        .get(format!("http://{addr}/verify"))
        .bearer_auth(&lost)
        .send()
        .await
        .expect("answer")
        .status();
    let d_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(first, 200, "the lost-pepper key verifies (by argon2)");

    eprintln!("gateway bench: (a) /healthz");
    let a = wrk(&format!("http://{addr}/healthz"), None, &args);
    eprintln!("gateway bench: (b) /verify, one cached key");
    let one = script(dir.path(), "one", &keys[..1]);
    let b = wrk(&format!("http://{addr}/verify"), Some(&one), &args);
    eprintln!("gateway bench: (c) /verify over {} keys", args.keys);
    // A fresh verifier process: every key's first presentation is uncached.
    let fresh = bench::spawn(
        &binary,
        dir.path(),
        "verifier-fresh",
        &[
            "verifier",
            "--addr",
            "127.0.0.1:0",
            "--hash-namespace",
            HASH_NS,
        ],
        &[],
    );
    let fresh_addr = fresh.metrics.clone();
    while bench::http_get(&fresh_addr, "/readyz") != "ok" {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let many = script(dir.path(), "many", &keys);
    let c = wrk(&format!("http://{fresh_addr}/verify"), Some(&many), &args);
    eprintln!("gateway bench: (e) (b) over TLS");
    let e = wrk(&format!("https://{tls_addr}/verify"), Some(&one), &args);

    let out = json!({
        "connections": args.connections,
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
