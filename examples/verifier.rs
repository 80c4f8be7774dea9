//! The verifier under attack, measured: the real `keyward verifier` binary (a separate
//! process) on the emulator, with `keyward run` issuing the keys; prints figures, the last
//! line one JSON object.
//!
//!     cargo run --release --example verifier
//!     cargo run --release --example verifier -- --seconds 10 --idle 5000
//!
//! The same valid traffic (4 keep-alive clients, one request every 5 ms each) is measured
//! alone and beside each attack: p50/p99 latency of its answers and the verifier process's
//! peak RSS during the case.
//! - `forged_flood`: 32 keep-alive clients sending forged keys as fast as they can (valid
//!   prefix and checksum; half with a real lookup id and a wrong secret, half random).
//! - `disconnect_flood`: 200 clients presenting a wrong secret for a key whose record is
//!   under a lost pepper (argon2 territory), each hanging up after 20 ms, over and over.
//! - `idle_connections`: `--idle` connections opened and left idle.
//!
//! Goals (the verifier hardening issue): valid p99 ≤ 10 ms and RSS ≤ 150 MB in every case.

mod bench;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bench::{HASH_NS, Operator, keyward_binary};
use keyward::crd::ApiKey;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    seconds: u64,
    idle: usize,
}

fn args() -> Args {
    let [seconds, idle] = bench::numeric_flags([("--seconds", Some(10)), ("--idle", Some(5000))]);
    Args {
        seconds: seconds.unwrap_or(10),
        idle: idle.unwrap_or(5000) as usize,
    }
}

/// `real`'s lookup id with another secret and a valid checksum.
fn forged(real: &str, n: u64) -> String {
    let format = keyward::crd::KeyFormat::default();
    let keep = format.prefix.len() + keyward::keys::format::LOOKUP_ID_LEN;
    let body_end = format.prefix.len() + format.length as usize;
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let tail: String = (keep..body_end)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % 62) as usize] as char
        })
        .collect();
    let mut k = format!("{}{}", &real[..keep], tail);
    let sum = keyward::keys::format::checksum(&k);
    k.push_str(&sum);
    k
}

fn request(key: &str) -> Vec<u8> {
    format!("GET /verify HTTP/1.1\r\nHost: verifier\r\nAuthorization: Bearer {key}\r\n\r\n")
        .into_bytes()
}

/// Reads one response (head and Content-Length body) from a keep-alive connection; its
/// status code.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<u16> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return head.split_whitespace().nth(1)?.parse().ok();
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The valid traffic: 4 keep-alive clients, one request every 5 ms each, for `seconds`;
/// latencies in ms, sorted.
async fn valid_traffic(addr: &str, key: &str, seconds: u64) -> Vec<f64> {
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let addr = addr.to_string();
        let raw = request(key);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut conn: Option<TcpStream> = None;
            let mut buf = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let end = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < end {
                tick.tick().await;
                let started = Instant::now();
                if conn.is_none() {
                    conn = TcpStream::connect(&addr).await.ok();
                }
                let Some(s) = conn.as_mut() else { continue };
                let ok = s.write_all(&raw).await.is_ok()
                    && read_response(s, &mut buf).await == Some(200);
                if ok {
                    out.push(started.elapsed().as_secs_f64() * 1000.0);
                } else {
                    // Closed under us (never for a busy client): count it as a failure.
                    conn = None;
                    out.push(f64::INFINITY);
                }
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    all.sort_by(|a, b| a.total_cmp(b));
    all
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Samples the verifier's RSS every 20 ms while `f` runs; (f's result, peak MB).
async fn with_rss<T>(verifier: &Operator, f: impl Future<Output = T>) -> (T, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let pid = verifier.child.id();
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let kb = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                peak.fetch_max(kb, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let out = f.await;
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    (out, peak.load(Ordering::SeqCst) as f64 / 1024.0)
}

fn case(latencies: &[f64], rss_mb: f64, extra: serde_json::Value) -> serde_json::Value {
    let failed = latencies.iter().filter(|l| l.is_infinite()).count();
    let mut v = json!({
        "valid_requests": latencies.len(),
        "valid_failed": failed,
        "valid_p50_ms": (percentile(latencies, 0.5) * 100.0).round() / 100.0,
        "valid_p99_ms": (percentile(latencies, 0.99) * 100.0).round() / 100.0,
        "rss_mb_peak": (rss_mb * 10.0).round() / 10.0,
    });
    if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        v.extend(extra.clone());
    }
    v
}

#[tokio::main]
async fn main() {
    let args = args();
    eprintln!("verifier bench: building keyward (release)");
    let binary = keyward_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let (_emulator, client, op) = bench::start(&binary, dir.path(), &[]).await;

    eprintln!("verifier bench: issuing keys");
    bench::apply_apikey(&client, "valid", json!({})).await;
    bench::apply_apikey(
        &client,
        "victim",
        json!({"rotation": {"gracePeriod": "24h"}}),
    )
    .await;
    let valid = bench::key_in(&client, "valid", None).await;
    let lost = bench::key_in(&client, "victim", None).await;
    let rotate = json!({"metadata": {"annotations": {"keyward.dev/rotate": "1"}}});
    Api::<ApiKey>::default_namespaced(client.clone())
        .patch("victim", &PatchParams::default(), &Patch::Merge(&rotate))
        .await
        .expect("rotate");
    let _current = bench::key_in(&client, "victim", Some(&lost)).await;
    // Lose the pepper the previous key's record was made under.
    let _op = bench::restart_without_pepper(&binary, dir.path(), &client, op).await;
    let verifier = bench::spawn(
        &binary,
        dir.path(),
        "keyward-verifier",
        &[
            "verifier",
            "--addr",
            "127.0.0.1:0",
            "--hash-namespace",
            HASH_NS,
        ],
        &[],
    );
    let addr = verifier.metrics.clone();
    eprintln!("verifier bench: verifier at {addr}");
    // Wait until the valid key answers from the fast path under the new pepper.
    let started = Instant::now();
    loop {
        let mut s = TcpStream::connect(&addr).await.expect("connects");
        let mut buf = Vec::new();
        s.write_all(&request(&valid)).await.expect("request");
        let ok = read_response(&mut s, &mut buf).await == Some(200);
        let out = bench::http_get(&addr, "/readyz");
        if ok && out == "ok" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the valid key never verified"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = args.seconds;
    let mut results = serde_json::Map::new();

    eprintln!("verifier bench: valid traffic alone ({seconds}s)");
    let (lat, rss) = with_rss(&verifier, valid_traffic(&addr, &valid, seconds)).await;
    results.insert("alone".into(), case(&lat, rss, json!({})));

    eprintln!("verifier bench: (e) forged-key flood");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::new();
    for c in 0..32u64 {
        let (addr, valid, stop, sent) = (addr.clone(), valid.clone(), stop.clone(), sent.clone());
        attackers.push(tokio::spawn(async move {
            let mut n = c << 40;
            let mut buf = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let Ok(mut s) = TcpStream::connect(&addr).await else {
                    continue;
                };
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let presented = if n % 2 == 0 {
                        forged(&valid, n)
                    } else {
                        forged(
                            &forged(&valid, n)[..].replace(&valid[..11], "kw_ZZZZZZZZ"),
                            n,
                        )
                    };
                    if s.write_all(&request(&presented)).await.is_err()
                        || read_response(&mut s, &mut buf).await.is_none()
                    {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let t0 = Instant::now();
    let (lat, rss) = with_rss(&verifier, valid_traffic(&addr, &valid, seconds)).await;
    let rate = sent.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    for a in attackers {
        let _ = a.await;
    }
    results.insert(
        "forged_flood".into(),
        case(&lat, rss, json!({"forged_per_second": rate.round()})),
    );

    eprintln!("verifier bench: (f) disconnect flood on a lost pepper");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::new();
    for c in 0..200u64 {
        let (addr, lost, stop, sent) = (addr.clone(), lost.clone(), stop.clone(), sent.clone());
        attackers.push(tokio::spawn(async move {
            let mut n = (c + 100) << 40;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                if let Ok(mut s) = TcpStream::connect(&addr).await {
                    let _ = s.write_all(&request(&forged(&lost, n))).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let t0 = Instant::now();
    let (lat, rss) = with_rss(&verifier, valid_traffic(&addr, &valid, seconds)).await;
    let rate = sent.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    for a in attackers {
        let _ = a.await;
    }
    let threads = std::fs::read_to_string(format!("/proc/{}/status", verifier.child.id()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    results.insert(
        "disconnect_flood".into(),
        case(
            &lat,
            rss,
            json!({"hangups_per_second": rate.round(), "verifier_threads_after": threads}),
        ),
    );

    eprintln!("verifier bench: (g) {} idle connections", args.idle);
    let openers: Vec<_> = (0..20)
        .map(|_| {
            let addr = addr.clone();
            let n = args.idle / 20;
            tokio::spawn(async move {
                let mut v = Vec::new();
                for _ in 0..n {
                    if let Ok(s) = TcpStream::connect(&addr).await {
                        v.push(s);
                    }
                }
                v
            })
        })
        .collect();
    let mut idle = Vec::new();
    for o in openers {
        idle.extend(o.await.expect("opener"));
    }
    let asked = Instant::now();
    let mut s = TcpStream::connect(&addr).await.expect("connects");
    let mut buf = Vec::new();
    s.write_all(&request(&valid)).await.expect("request");
    let first = read_response(&mut s, &mut buf).await;
    let first_ms = asked.elapsed().as_secs_f64() * 1000.0;
    let (lat, rss) = with_rss(&verifier, valid_traffic(&addr, &valid, seconds)).await;
    results.insert(
        "idle_connections".into(),
        case(
            &lat,
            rss,
            json!({"idle_opened": idle.len(), "new_client_answer_ms": (first_ms * 100.0).round() / 100.0, "new_client_status": first}),
        ),
    );
    drop(idle);
    results.insert(
        "rss_mb_hwm".into(),
        json!((verifier.rss_kb("VmHWM:") as f64 / 102.4).round() / 10.0),
    );
    let out = serde_json::Value::Object(results);
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    println!("{out}");
}
