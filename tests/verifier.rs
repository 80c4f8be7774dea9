//! The verifier (DESIGN §6) against keys issued by the real controllers: both endpoints,
//! every code, rotation grace and revocation, rate limits, deletion.

mod common;

use common::http;
use common::operator::{Operator, start_verifier, until_code, verify_json};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn answers_gateways_for_issued_keys() {
    let op = Operator::start().await;
    let addr = start_verifier(&op, 429).await;
    op.apply("gw", json!({"owner": "team-a", "scopes": ["read:models", "write:chat"], "rotation": {"gracePeriod": "1h"}})).await;
    op.wait_ready("gw").await;
    let key = op.key_in("gw", "api-key").await.expect("key");
    let answer = until_code(&addr, &key, "VALID").await;
    assert_eq!(answer["valid"], true);
    assert_eq!(
        answer["key"],
        json!({"namespace": op.namespace, "name": "gw", "owner": "team-a", "scopes": ["read:models", "write:chat"]})
    );
    // Envoy/Traefik style: any method, any path below /verify, Bearer or X-API-Key.
    for (method, path, header) in [
        ("GET", "/verify", "Authorization"),
        ("POST", "/verify/v1/chat/completions", "Authorization"),
        ("DELETE", "/verify/x", "X-API-Key"),
    ] {
        let value = if header == "Authorization" {
            format!("Bearer {key}")
        } else {
            key.clone()
        };
        let (code, headers, _) =
            tokio::task::block_in_place(|| http(&addr, method, path, &[(header, &value)], ""));
        assert_eq!(code, 200, "{method} {path}");
        assert_eq!(
            headers.get("x-keyward-key"),
            Some(&format!("{}/gw", op.namespace))
        );
        assert_eq!(
            headers.get("x-keyward-owner").map(String::as_str),
            Some("team-a")
        );
        assert_eq!(
            headers.get("x-keyward-scopes").map(String::as_str),
            Some("read:models write:chat")
        );
        assert_eq!(
            headers.get("x-keyward-code").map(String::as_str),
            Some("VALID")
        );
    }
    let (code, headers, _) = tokio::task::block_in_place(|| http(&addr, "GET", "/verify", &[], ""));
    assert_eq!(
        (code, headers.get("www-authenticate").map(String::as_str)),
        (401, Some("Bearer")),
        "missing key"
    );
    // Unknown, mistyped, and not ours at all.
    let mut typo = key.clone();
    typo.replace_range(10..11, if &typo[10..11] == "a" { "b" } else { "a" });
    assert_eq!(
        tokio::task::block_in_place(|| verify_json(&addr, &typo))["code"],
        "MALFORMED"
    );
    let stranger = keyward::keys::generate(&keyward::crd::KeyFormat::default()).expect("key");
    assert_eq!(
        tokio::task::block_in_place(|| verify_json(&addr, stranger.expose()))["code"],
        "NOT_FOUND"
    );
    let (code, _, _) = tokio::task::block_in_place(|| {
        http(
            &addr,
            "GET",
            "/verify",
            &[("Authorization", &format!("Bearer {}", stranger.expose()))],
            "",
        )
    });
    assert_eq!(code, 401);
    // Rotation: both keys verify during the grace; revocation ends the old one.
    let patch = json!({"metadata": {"annotations": {"keyward.dev/rotate": "1"}}});
    op.apikeys()
        .patch("gw", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("rotate");
    op.wait_for("gw", "rotated", |a| {
        a.status.as_ref().is_some_and(|s| s.rotation_count == 1)
    })
    .await;
    let new_key = op.key_in("gw", "api-key").await.expect("new key");
    until_code(&addr, &new_key, "VALID").await;
    assert_eq!(
        tokio::task::block_in_place(|| verify_json(&addr, &key))["code"],
        "VALID",
        "previous key inside its grace"
    );
    let patch = json!({"metadata": {"annotations": {"keyward.dev/revoke-previous": "1"}}});
    op.apikeys()
        .patch("gw", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("revoke");
    until_code(&addr, &key, "NOT_FOUND").await;
    // Disabled: 403 on /verify.
    op.apply("gw", json!({"owner": "team-a", "scopes": ["read:models", "write:chat"], "rotation": {"gracePeriod": "1h"}, "disabled": true})).await;
    until_code(&addr, &new_key, "DISABLED").await;
    let (code, _, _) = tokio::task::block_in_place(|| {
        http(&addr, "GET", "/verify", &[("X-API-Key", &new_key)], "")
    });
    assert_eq!(code, 403);
    // Deleted: the key stops verifying.
    op.apikeys()
        .delete("gw", &DeleteParams::default())
        .await
        .expect("delete");
    until_code(&addr, &new_key, "NOT_FOUND").await;
    let (code, _, body) = tokio::task::block_in_place(|| http(&addr, "GET", "/readyz", &[], ""));
    assert_eq!((code, body.as_str()), (200, "ok"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_expiry_and_imported_keys() {
    let op = Operator::start().await;
    let addr = start_verifier(&op, 429).await;
    op.apply("limited", json!({"rateLimit": {"requestsPerMinute": 2}}))
        .await;
    op.wait_ready("limited").await;
    let key = op.key_in("limited", "api-key").await.expect("key");
    let first = until_code(&addr, &key, "VALID").await;
    assert_eq!(first["ratelimit"]["limit"], 2);
    let second = tokio::task::block_in_place(|| verify_json(&addr, &key));
    assert_eq!(
        (
            second["code"].as_str(),
            second["ratelimit"]["remaining"].as_u64()
        ),
        (Some("VALID"), Some(0))
    );
    let (code, headers, _) = tokio::task::block_in_place(|| {
        http(
            &addr,
            "GET",
            "/verify",
            &[("Authorization", &format!("Bearer {key}"))],
            "",
        )
    });
    assert_eq!(code, 429);
    assert_eq!(
        headers.get("x-keyward-code").map(String::as_str),
        Some("RATE_LIMITED")
    );
    assert_eq!(
        headers.get("retry-after").map(String::as_str),
        Some("30"),
        "one request per 30s at 2/min"
    );
    assert_eq!(
        headers.get("x-ratelimit-remaining").map(String::as_str),
        Some("0")
    );
    // nginx auth_request mode: 403 with the code in a header.
    let nginx = start_verifier(&op, 403).await;
    for _ in 0..2 {
        tokio::task::block_in_place(|| http(&nginx, "GET", "/verify", &[("X-API-Key", &key)], ""));
    }
    let (code, headers, _) =
        tokio::task::block_in_place(|| http(&nginx, "GET", "/verify", &[("X-API-Key", &key)], ""));
    assert_eq!(
        (code, headers.get("x-keyward-code").map(String::as_str)),
        (403, Some("RATE_LIMITED"))
    );
    // Expiry.
    op.apply("brief", json!({"expiresAfter": "1s"})).await;
    op.wait_ready("brief").await;
    let brief = op.key_in("brief", "api-key").await.expect("key");
    until_code(&addr, &brief, "EXPIRED").await;
    // Imported keys have no structure: found by their keyed hash.
    let source: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({"metadata": {"name": "legacy"}, "stringData": {"api-key": "legacy-static-key-from-2019"}})).expect("secret");
    op.secrets()
        .create(&Default::default(), &source)
        .await
        .expect("source");
    op.apply(
        "imported",
        json!({"importFrom": {"secretRef": {"name": "legacy"}}}),
    )
    .await;
    op.wait_ready("imported").await;
    let answer = until_code(&addr, "legacy-static-key-from-2019", "VALID").await;
    assert_eq!(answer["key"]["name"], "imported");
    assert_eq!(
        tokio::task::block_in_place(|| verify_json(&addr, "legacy-static-key-from-2020"))["code"],
        "NOT_FOUND"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keyward_verify_reads_the_key_from_stdin() {
    use std::io::Write;
    let op = Operator::start().await;
    let addr = start_verifier(&op, 429).await;
    op.apply("cli", json!({"owner": "ops"})).await;
    op.wait_ready("cli").await;
    let key = op.key_in("cli", "api-key").await.expect("key");
    until_code(&addr, &key, "VALID").await;
    let run = |input: &str, extra: &[&str]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["verify", "--url", &format!("http://{addr}")])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("keyward verify runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("finishes");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = tokio::task::block_in_place(|| run(&format!("{key}\n"), &[]));
    assert_eq!(
        (code, stdout.as_str()),
        (
            Some(0),
            format!("VALID {}/cli (owner ops)", op.namespace).as_str()
        )
    );
    let stranger = keyward::keys::generate(&keyward::crd::KeyFormat::default()).expect("key");
    let (code, stdout, _) = tokio::task::block_in_place(|| run(stranger.expose(), &["-"]));
    assert_eq!((code, stdout.as_str()), (Some(1), "NOT_FOUND"));
    let (code, stdout, _) = tokio::task::block_in_place(|| run("kw_nope", &["-"]));
    assert_eq!(
        (code, stdout.as_str()),
        (Some(1), "MALFORMED"),
        "a known prefix with the wrong shape"
    );
    let (code, stdout, _) = tokio::task::block_in_place(|| run(&key, &["-o", "json"]));
    assert_eq!(code, Some(0));
    let answer: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(answer["code"], "VALID");
    assert!(!stdout.contains(&key), "the answer never echoes the key");
    let (code, _, stderr) = tokio::task::block_in_place(|| run("", &[]));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no key given"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_is_flushed_in_batches_and_replicas_add_up() {
    let op = Operator::start().await;
    let (a, b) = (
        start_verifier(&op, 429).await,
        start_verifier(&op, 429).await,
    );
    op.apply("used", json!({})).await;
    op.wait_ready("used").await;
    let key = op.key_in("used", "api-key").await.expect("key");
    until_code(&a, &key, "VALID").await; // counts 1 on replica a
    until_code(&b, &key, "VALID").await; // counts 1 on replica b
    // The issuing passes' own writes trigger one more pass: let it run before counting.
    op.wait_idle().await;
    let passes = op.reconciles();
    for addr in [&a, &a, &b, &b] {
        assert_eq!(
            tokio::task::block_in_place(|| verify_json(addr, &key))["code"],
            "VALID"
        );
    }
    let wrong = keyward::keys::generate(&keyward::crd::KeyFormat::default()).expect("key");
    tokio::task::block_in_place(|| verify_json(&a, wrong.expose()));
    let ak = op
        .wait_for("used", "usage 6", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.usage.as_ref())
                .is_some_and(|u| u.count == 6)
        })
        .await;
    assert!(
        ak.status
            .as_ref()
            .and_then(|s| s.usage.as_ref())
            .and_then(|u| u.last_used_at.as_ref())
            .is_some()
    );
    // Usage is status-only: once the controller has seen the last flush, and anything it
    // started has finished, it has done no work for it.
    op.wait_seen(&ak).await;
    op.wait_idle().await;
    assert_eq!(op.reconciles(), passes, "no reconcile for usage flushes");
    let ready = op.apikeys().get("used").await.expect("get");
    assert!(
        keyward::conditions::ready(&ready.status.expect("status").conditions)
            .is_some_and(|c| c.reason == "KeyIssued"),
        "the controller's status stays"
    );
}

/// The sum of the samples of `name` (exact metric name, any labels) in `text`.
fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_success_cache_stays_honest_and_every_metric_moves() {
    let op = Operator::start().await;
    op.apply("m-ok", json!({"owner": "team-m"})).await;
    op.apply("m-slow", json!({"rateLimit": {"requestsPerMinute": 1}}))
        .await;
    op.apply("m-grace", json!({"rotation": {"gracePeriod": "2s"}}))
        .await;
    for name in ["m-ok", "m-slow", "m-grace"] {
        op.wait_ready(name).await;
    }
    let running = common::operator::verifier(&op, 429).await;
    let addr = running.addr.to_string();
    let v = running.verifier.clone();
    let ok = op.key_in("m-ok", "api-key").await.expect("key");
    until_code(&addr, &ok, "VALID").await;
    // A proven key is answered from the cache next time.
    let (hits, _) = v.success_cache();
    assert_eq!(
        tokio::task::block_in_place(|| verify_json(&addr, &ok))["code"],
        "VALID"
    );
    assert!(v.success_cache().0 > hits, "served from the cache");
    // Its record changes: the cache never answers from the old one.
    op.apply("m-ok", json!({"owner": "team-m", "disabled": true}))
        .await;
    until_code(&addr, &ok, "DISABLED").await;
    // The rate limit applies to cached answers too.
    let slow = op.key_in("m-slow", "api-key").await.expect("key");
    until_code(&addr, &slow, "VALID").await;
    assert_eq!(
        tokio::task::block_in_place(|| verify_json(&addr, &slow))["code"],
        "RATE_LIMITED"
    );
    // Expiry too: a cached previous key stops at the end of its grace.
    let old = op.key_in("m-grace", "api-key").await.expect("key");
    until_code(&addr, &old, "VALID").await;
    let patch = json!({"metadata": {"annotations": {"keyward.dev/rotate": "1"}}});
    op.apikeys()
        .patch("m-grace", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("rotate");
    let new = op.key_in("m-grace", "api-key").await.expect("key");
    let _ = new;
    common::eventually("the previous key to stop after its grace", || async {
        let answer = tokio::task::block_in_place(|| verify_json(&addr, &old));
        (answer["code"] == "EXPIRED" || answer["code"] == "NOT_FOUND").then_some(())
    })
    .await;

    // Metrics: each moves in the scenario that produces it.
    let idle: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connects"))
        .collect();
    common::eventually("usage to be flushed", || async {
        let text = v.metrics_text();
        (metric(&text, "keyward_verifier_usage_flush_writes_total", "") >= 1.0).then_some(())
    })
    .await;
    let text = v.metrics_text();
    assert!(
        metric(&text, "keyward_verifier_answers_total", "code=\"VALID\"") >= 3.0,
        "{text}"
    );
    assert!(metric(&text, "keyward_verifier_answers_total", "code=\"DISABLED\"") >= 1.0);
    assert!(
        metric(
            &text,
            "keyward_verifier_answers_total",
            "code=\"RATE_LIMITED\""
        ) >= 1.0
    );
    assert!(metric(&text, "keyward_verifier_answer_duration_seconds_count", "") >= 5.0);
    assert!(metric(&text, "keyward_verifier_index_records", "") >= 3.0);
    assert!(metric(&text, "keyward_verifier_success_cache_hits_total", "") >= 1.0);
    assert_eq!(
        metric(&text, "keyward_verifier_index_sync_age_seconds", ""),
        0.0
    );
    common::eventually("the idle connections to be counted", || async {
        let text = v.metrics_text();
        (metric(&text, "keyward_verifier_open_connections", "") >= 3.0).then_some(())
    })
    .await;
    drop(idle);
    // A flush the API server refuses is counted and kept.
    if let Some(hooks) = op.hooks("the_success_cache_stays_honest_and_every_metric_moves") {
        hooks.add_fault(
            keyward_emulator::Fault::new(
                "patch",
                "apikeys/status",
                1,
                keyward_emulator::FaultAction::Fail(500),
            )
            .times(1_000),
        );
        let fresh = op.key_in("m-slow", "api-key").await.expect("key");
        let _ = tokio::task::block_in_place(|| verify_json(&addr, &fresh));
        let _ = tokio::task::block_in_place(|| verify_json(&addr, &old));
        op.apply("m-ok", json!({"owner": "team-m"})).await;
        until_code(&addr, &ok, "VALID").await;
        common::eventually("a failed flush to be counted", || async {
            let text = v.metrics_text();
            (metric(&text, "keyward_verifier_usage_flush_failures_total", "") >= 1.0).then_some(())
        })
        .await;
        hooks.clear_faults();
    }
    // Nothing about a key in any label.
    let text = v.metrics_text();
    for secret in [&ok, &slow, &old] {
        assert!(!text.contains(secret.as_str()));
        assert!(!text.contains(&secret[secret.len() - 20..]));
    }
    assert!(!text.contains("team-m") && !text.contains("m-ok"), "{text}");
    running.stop();
}
