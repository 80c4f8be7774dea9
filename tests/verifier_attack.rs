//! The verifier under attack (DESIGN §6): each test is an attack tried from a loopback
//! client, and what must still hold while it runs. Where an attack needs argon2, the
//! precondition is a lost pepper: a previous key whose record was made under a pepper that
//! is neither `pepper` nor `pepper-previous` (the pepper Secret was replaced while the
//! operator was down, so nothing kept the old one).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::operator::{Operator, until_code, verify_json};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A key of the default format with `real`'s lookup id, a different secret and a valid
/// checksum: it passes the format check and finds `real`'s record.
fn forged(real: &str, n: usize) -> String {
    let format = keyward::crd::KeyFormat::default();
    let keep = format.prefix.len() + keyward::keys::format::LOOKUP_ID_LEN;
    let body_end = format.prefix.len() + format.length as usize;
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut tail: Vec<u8> = real.as_bytes()[keep..body_end].to_vec();
    let mut x = n + 1;
    for slot in tail.iter_mut() {
        *slot = alphabet[(x * 7 + (*slot as usize)) % 62];
        x = x / 62 + 3;
    }
    let mut key = format!(
        "{}{}",
        &real[..keep],
        String::from_utf8(tail).expect("ascii")
    );
    assert_ne!(key, real[..body_end]);
    let sum = keyward::keys::format::checksum(&key);
    key.push_str(&sum);
    key
}

/// A key of the default format with a random lookup id: it passes the format check and
/// finds nothing.
fn stranger() -> String {
    keyward::keys::generate(&keyward::crd::KeyFormat::default())
        .expect("random")
        .expose()
        .to_string()
}

/// Threads of this process now.
fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// An ApiKey with a previous key in its grace period whose record is under a lost pepper,
/// and a current key re-keyed under the new one: (operator, current key, lost key).
async fn lost_pepper() -> (Operator, String, String) {
    let mut op = Operator::start().await;
    op.apply("victim", json!({"rotation": {"gracePeriod": "1h"}}))
        .await;
    op.wait_ready("victim").await;
    let old = op.key_in("victim", "api-key").await.expect("key");
    let patch = json!({"metadata": {"annotations": {"keyward.dev/rotate": "1"}}});
    op.apikeys()
        .patch("victim", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("rotate");
    let ak = op
        .wait_for("victim", "rotated", |a| {
            a.status.as_ref().is_some_and(|s| s.rotation_count == 1)
        })
        .await;
    let current = op.key_in("victim", "api-key").await.expect("new key");
    let before = op
        .record(&ak)
        .await
        .expect("record")
        .current
        .expect("current");
    op.stop().await;
    op.records()
        .delete(keyward::controller::PEPPER_SECRET, &DeleteParams::default())
        .await
        .expect("pepper lost");
    op.restart().await; // a new pepper; the current key is re-keyed, the previous cannot be
    common::eventually("the current key re-keyed under the new pepper", || async {
        let now = op.record(&ak).await?.current?;
        (now.pepper_id != before.pepper_id).then_some(())
    })
    .await;
    (op, current, old)
}

/// A verifier sharing the operator's hashing pool (as in `keyward run`), ready.
async fn verifier_on_pool(
    op: &Operator,
    limits: Option<keyward::verifier::server::Limits>,
    max_index_age: Option<Duration>,
) -> keyward::verifier::Running {
    let mut options = keyward::verifier::Options {
        hash_pool: Some(op.context().hash_pool.clone()),
        ..Default::default()
    };
    if let Some(l) = limits {
        options.limits = l;
    }
    if let Some(age) = max_index_age {
        options.max_index_age = age;
    }
    common::operator::verifier_with(op, options).await
}

fn json_request(addr: &str, key: &str) -> Vec<u8> {
    let body = json!({ "key": key }).to_string();
    format!(
        "POST /v1/keys/verify HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends one request on a fresh connection and reads the whole answer (HTTP/1.1, closed
/// by the client's `Connection: close`).
async fn ask(addr: &str, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connects");
    s.write_all(raw).await.expect("request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn close_after(raw: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8(raw).expect("ascii request");
    text.replacen("\r\n", "\r\nConnection: close\r\n", 1)
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_hang_up_cannot_push_argon2_past_the_hash_workers() {
    let (op, current, lost) = lost_pepper().await;
    let running = verifier_on_pool(&op, None, None).await;
    let addr = running.addr.to_string();
    let pool = op.context().hash_pool.clone();
    let workers = pool.stats().workers;
    until_code(&addr, &current, "VALID").await;
    // The lost key still verifies, by argon2 (slower, still correct).
    let (_, _, runs_before) = keyward::keys::hash::argon2_runs();
    assert_eq!(
        tokio::task::block_in_place(|| verify_json(&addr, &lost))["code"],
        "VALID"
    );
    let (_, _, runs_after) = keyward::keys::hash::argon2_runs();
    assert!(runs_after > runs_before, "the lost key needed argon2");
    // Proven once, it is answered from the success cache: no second argon2 run.
    assert_eq!(
        tokio::task::block_in_place(|| verify_json(&addr, &lost))["code"],
        "VALID"
    );
    assert_eq!(keyward::keys::hash::argon2_runs().2, runs_after, "cached");

    let threads_before = threads();
    let peak_threads = Arc::new(std::sync::atomic::AtomicUsize::new(threads_before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let peak = peak_threads.clone();
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                peak.fetch_max(threads(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // 200 clients present the lost key's lookup id with a wrong secret and hang up at once.
    let mut clients = Vec::new();
    for n in 0..200 {
        let raw = json_request(&addr, &forged(&lost, n));
        let addr = addr.clone();
        clients.push(tokio::spawn(async move {
            if let Ok(mut s) = TcpStream::connect(&addr).await {
                let _ = s.write_all(&raw).await;
                // Gone before any answer.
            }
        }));
    }
    // Meanwhile a generated key keeps answering from the fast path.
    for _ in 0..20 {
        let answer = ask(&addr, &close_after(json_request(&addr, &current))).await;
        assert!(answer.contains("\"code\":\"VALID\""), "{answer}");
    }
    for c in clients {
        c.await.expect("client");
    }
    // Everything started on their behalf finishes (or is skipped) and is counted throughout.
    common::eventually("the hashing pool to drain", || {
        let s = pool.stats();
        async move { (s.running == 0 && s.queued == 0).then_some(()) }
    })
    .await;
    sampling.store(false, Ordering::SeqCst);
    sampler.join().expect("sampler");
    let (_, peak, _) = keyward::keys::hash::argon2_runs();
    assert!(
        peak <= workers,
        "{peak} argon2 runs at once with --hash-workers {workers}"
    );
    assert!(pool.stats().peak_running <= workers);
    let peak_threads = peak_threads.load(Ordering::SeqCst);
    assert!(
        peak_threads <= threads_before + 8,
        "threads grew from {threads_before} to {peak_threads}"
    );
    // And the same flood from clients that stay: wrong answers, no more argon2 at once.
    let (_, _, runs_before) = keyward::keys::hash::argon2_runs();
    let mut clients = Vec::new();
    for n in 200..260 {
        let raw = close_after(json_request(&addr, &forged(&lost, n)));
        let addr = addr.clone();
        clients.push(tokio::spawn(async move { ask(&addr, &raw).await }));
    }
    for c in clients {
        let answer = c.await.expect("client");
        assert!(
            answer.contains("\"code\":\"NOT_FOUND\"")
                || answer.contains("\"code\":\"UNAVAILABLE\""),
            "{answer}"
        );
        assert!(
            !answer.contains("victim"),
            "no owner for a wrong secret: {answer}"
        );
    }
    let (_, peak, runs_after) = keyward::keys::hash::argon2_runs();
    assert!(runs_after > runs_before, "the flood reached argon2");
    let text = running.verifier.metrics_text();
    let runs_metric: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("keyward_verifier_argon2_runs_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("argon2 runs metric");
    assert!(runs_metric >= 1.0, "{text}");
    assert!(peak <= workers, "{peak} argon2 runs at once");
    running.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_keys_cost_no_argon2_and_learn_nothing() {
    let op = Operator::start().await;
    op.apply("real", json!({"owner": "team-a", "scopes": ["read"]}))
        .await;
    op.wait_ready("real").await;
    let key = op.key_in("real", "api-key").await.expect("key");
    let running = verifier_on_pool(&op, None, None).await;
    let addr = running.addr.to_string();
    until_code(&addr, &key, "VALID").await;
    let (_, _, runs_before) = keyward::keys::hash::argon2_runs();
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v1/keys/verify");
    for n in 0..10_000 {
        // Half with the real lookup id and a wrong secret, half with random lookup ids.
        let presented = if n % 2 == 0 {
            forged(&key, n)
        } else {
            stranger()
        };
        let answer: serde_json::Value = client
            .post(&url)
            .json(&json!({ "key": presented }))
            .send()
            .await
            .expect("answer")
            .json()
            .await
            .expect("json");
        assert_eq!(answer, json!({"valid": false, "code": "NOT_FOUND"}), "{n}");
    }
    let (_, _, runs_after) = keyward::keys::hash::argon2_runs();
    assert_eq!(runs_after, runs_before, "forged keys ran argon2");
    // The real key is unharmed.
    assert_eq!(
        tokio::task::block_in_place(|| verify_json(&addr, &key))["code"],
        "VALID"
    );
    running.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_get_clear_refusals_and_harm_no_one() {
    let op = Operator::start().await;
    op.apply("real", json!({"owner": "team-a"})).await;
    op.wait_ready("real").await;
    let key = op.key_in("real", "api-key").await.expect("key");
    let running = verifier_on_pool(&op, None, None).await;
    let addr = running.addr.to_string();
    until_code(&addr, &key, "VALID").await;
    let still_fine = |addr: &str| {
        assert_eq!(
            tokio::task::block_in_place(|| verify_json(addr, &key))["code"],
            "VALID"
        );
    };
    // A 10 MB body: refused without being read whole.
    let big = format!(
        "POST /v1/keys/verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{{\"key\":\"",
        10 * 1024 * 1024
    );
    let mut s = TcpStream::connect(&addr).await.expect("connects");
    s.write_all(big.as_bytes()).await.expect("head");
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..16 {
        if s.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("larger than 4096 bytes"), "{out}");
    still_fine(&addr);
    // A body just over 4 KiB is refused too; one just under is read.
    let padded = |n: usize| {
        let body = format!("{{\"key\":\"{key}\",\"pad\":\"{}\"}}", "p".repeat(n));
        format!(
            "POST /v1/keys/verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    assert!(
        ask(&addr, padded(4200).as_bytes())
            .await
            .starts_with("HTTP/1.1 413")
    );
    let ok = ask(&addr, padded(3900).as_bytes()).await;
    assert!(ok.contains("\"code\":\"VALID\""), "{ok}");
    // A 100 KB header.
    let huge = format!(
        "GET /verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Junk: {}\r\nAuthorization: Bearer {key}\r\n\r\n",
        "j".repeat(100 * 1024)
    );
    let out = ask(&addr, huge.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    still_fine(&addr);
    // A key that is not UTF-8.
    let mut raw =
        b"GET /verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-Key: kw_".to_vec();
    raw.extend_from_slice(&[0xff, 0xfe, 0x80]);
    raw.extend_from_slice(b"\r\n\r\n");
    let out = ask(&addr, &raw).await;
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("x-keyward-code: malformed"),
        "{out}"
    );
    assert!(out.contains("not printable ASCII"), "{out}");
    still_fine(&addr);
    // Duplicate fields: a filter that reads the first `key` must see what is checked.
    let dup = format!("{{\"key\":\"junk\",\"key\":\"{key}\"}}");
    let raw = format!(
        "POST /v1/keys/verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{dup}",
        dup.len()
    );
    let out = ask(&addr, raw.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("duplicate field"), "{out}");
    assert!(!out.contains(&key), "the refusal quotes no input");
    // Not JSON, wrong type.
    for body in ["key=abc", "{\"key\": 42}", "[]"] {
        let raw = format!(
            "POST /v1/keys/verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let out = ask(&addr, raw.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{body}: {out}");
    }
    // A wrong secret for a real lookup id learns nothing: no owner, no scopes, no state.
    let answer = tokio::task::block_in_place(|| verify_json(&addr, &forged(&key, 1)));
    assert_eq!(answer, json!({"valid": false, "code": "NOT_FOUND"}));
    still_fine(&addr);
    running.stop();
}

/// A connection that has sent nothing, left open.
async fn idle(addr: &str) -> TcpStream {
    TcpStream::connect(addr).await.expect("connects")
}

/// Whether the server has closed `s` (reads EOF or an error within `within`).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or similar before closing: keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_connections_are_bounded_and_timed_out() {
    let op = Operator::start().await;
    op.apply("real", json!({})).await;
    op.wait_ready("real").await;
    let key = op.key_in("real", "api-key").await.expect("key");
    let limits = keyward::verifier::server::Limits {
        header_read_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(4),
        max_connections: 300,
    };
    let running = verifier_on_pool(&op, Some(limits), None).await;
    let addr = running.addr.to_string();
    until_code(&addr, &key, "VALID").await;
    // 1 000 idle connections against a limit of 300: the oldest idle ones make room.
    let mut idlers = Vec::new();
    for _ in 0..1000 {
        idlers.push(idle(&addr).await);
    }
    // 50 clients trickling a request head, a byte at a time.
    let trickling = Arc::new(AtomicBool::new(true));
    let mut tricklers = Vec::new();
    for _ in 0..50 {
        let addr = addr.clone();
        let go = trickling.clone();
        tricklers.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.expect("connects");
            let started = Instant::now();
            for b in b"GET /verify HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle() {
                if !go.load(Ordering::SeqCst) || s.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            started.elapsed()
        }));
    }
    // A new client is served at once.
    let answer = ask(&addr, &close_after(json_request(&addr, &key))).await;
    assert!(answer.contains("\"code\":\"VALID\""), "{answer}");
    assert!(
        running.server.open_connections() <= 300,
        "{} open",
        running.server.open_connections()
    );
    // The trickling heads are cut at the header-read timeout (2 s), not served forever.
    common::eventually("every trickling client to be cut off", || {
        let done = tricklers.iter().all(|t| t.is_finished());
        async move { done.then_some(()) }
    })
    .await;
    trickling.store(false, Ordering::SeqCst);
    for t in tricklers {
        let lasted = t.await.expect("trickler");
        assert!(
            lasted < Duration::from_secs(30),
            "a head trickled for {lasted:?}"
        );
    }
    // Idle connections close after the idle timeout; the oldest were closed for room.
    let mut first = idlers.remove(0);
    assert!(
        closed_within(&mut first, Duration::from_millis(100)).await,
        "the oldest idle connection was closed to make room"
    );
    let mut last = idlers.pop().expect("idle");
    assert!(
        closed_within(&mut last, Duration::from_secs(30)).await,
        "idle connections time out"
    );
    // A keep-alive client that keeps asking is never cut off.
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    for _ in 0..3 {
        let r = client
            .get(format!("http://{addr}/verify"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200);
    }
    running.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn draining_fails_readyz_and_lets_requests_in_flight_finish() {
    let op = Operator::start().await;
    op.apply("real", json!({})).await;
    op.wait_ready("real").await;
    let key = op.key_in("real", "api-key").await.expect("key");
    let running = verifier_on_pool(&op, None, None).await;
    let addr = running.addr.to_string();
    until_code(&addr, &key, "VALID").await;
    let (code, _, _) =
        tokio::task::block_in_place(|| common::http(&addr, "GET", "/readyz", &[], ""));
    assert_eq!(code, 200);
    // A request in flight: its head is in, its body still arriving.
    let body = json!({ "key": key }).to_string();
    let head = format!(
        "POST /v1/keys/verify HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut slow = TcpStream::connect(&addr).await.expect("connects");
    slow.write_all(head.as_bytes()).await.expect("head");
    slow.write_all(&body.as_bytes()[..5])
        .await
        .expect("start of body");
    common::eventually("the request to be in flight", || {
        let n = running.server.in_flight();
        async move { (n == 1).then_some(()) }
    })
    .await;
    let mut idle_conn = idle(&addr).await;
    let started = Instant::now();
    let verifier = running.verifier.clone();
    let drain = {
        let server = running.server.clone();
        verifier.start_draining();
        tokio::spawn(async move { server.drain(Duration::from_secs(5)).await })
    };
    assert_eq!(
        verifier.unready().as_deref(),
        Some("draining: shutting down"),
        "/readyz fails at once"
    );
    assert!(
        closed_within(&mut idle_conn, Duration::from_secs(2)).await,
        "idle connections close at once"
    );
    slow.write_all(&body.as_bytes()[5..])
        .await
        .expect("rest of body");
    let mut out = Vec::new();
    let _ = slow.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains("\"code\":\"VALID\""),
        "the request in flight was answered: {out}"
    );
    drain.await.expect("drained");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drain ends when the last request has finished"
    );
    assert!(
        TcpStream::connect(&addr).await.is_err()
            || ask(&addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .is_empty(),
        "no new connection is served while draining"
    );
    running.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_fails_when_the_index_has_been_cut_off_too_long() {
    let op = Operator::start().await;
    let Some(hooks) = op.hooks("readyz_fails_when_the_index_has_been_cut_off_too_long") else {
        return;
    };
    let running = verifier_on_pool(&op, None, Some(Duration::from_secs(1))).await;
    let addr = running.addr.to_string();
    let readyz = || tokio::task::block_in_place(|| common::http(&addr, "GET", "/readyz", &[], ""));
    assert_eq!(readyz().0, 200);
    for verb in ["watch", "list"] {
        hooks.add_fault(
            keyward_emulator::Fault::new(
                verb,
                "secrets",
                1,
                keyward_emulator::FaultAction::Fail(500),
            )
            .times(1_000_000),
        );
    }
    hooks.drop_watches();
    let (code, _, body) = common::eventually("/readyz to fail", || async {
        let (code, h, body) = readyz();
        (code == 503).then_some((code, h, body))
    })
    .await;
    assert_eq!(code, 503);
    assert!(
        body.starts_with("stale: the index has not heard from the API server"),
        "{body}"
    );
    hooks.clear_faults();
    common::eventually("/readyz to recover", || async {
        (readyz().0 == 200).then_some(())
    })
    .await;
    running.stop();
}
