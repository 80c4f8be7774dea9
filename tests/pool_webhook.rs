//! The `Webhook` pool generator (DESIGN §5) against a local HTTP server that answers as a
//! key-minting endpoint: success with headers from a Secret, timeouts, failures with
//! backoff and recovery, the host allowlist, the concurrency limit, every kind of bad
//! answer, and the specs admission refuses.

mod common;

use std::time::Duration;

use common::minter::{Behaviour, Minter};
use common::operator::{Operator, Setup};
use keyward::crd::{ApiKeyPool, Condition, ConditionStatus};
use kube::api::PostParams;
use serde_json::{Value, json};

fn webhook(minter: &Minter, path: &str, extra: Value) -> Value {
    let mut w = json!({"url": minter.url(path), "keyJsonPointer": "/data/key", "timeout": "2s"});
    if let (Some(w), Some(extra)) = (w.as_object_mut(), extra.as_object()) {
        w.extend(extra.clone());
    }
    json!({"type": "Webhook", "webhook": w})
}

fn condition<'a>(pool: &'a ApiKeyPool, type_: &str) -> Option<&'a Condition> {
    pool.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Waits until the pool says its generator is failing with a message containing `says`.
async fn wait_failing(op: &Operator, pool: &str, says: &str) -> ApiKeyPool {
    op.wait_pool(pool, &format!("GeneratorFailing saying {says:?}"), |p| {
        condition(p, "GeneratorFailing")
            .is_some_and(|c| c.status == ConditionStatus::True && c.message.contains(says))
    })
    .await
}

async fn create_secret(op: &Operator, name: &str, data: Value) {
    let secret = serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
        .expect("secret");
    op.secrets()
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret created");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_mints_the_pools_keys_with_headers_from_a_secret() {
    let minter = Minter::start().await;
    minter.set("mint", Behaviour::fresh());
    let op = Operator::start().await;
    create_secret(
        &op,
        "mint-auth",
        json!({"Authorization": "Bearer header-value-from-the-secret", "X-Team": "payments"}),
    )
    .await;
    op.apply_pool(
        "remote",
        json!({"size": 3, "verification": true, "generator": webhook(&minter, "mint", json!({
            "headersFrom": {"secretRef": {"name": "mint-auth"}},
            "body": "{\"plan\":\"free\"}",
        }))}),
    )
    .await;
    let pool = op.wait_pool_full("remote", 3).await;
    assert_eq!(
        condition(&pool, "Ready").map(|c| c.status),
        Some(ConditionStatus::True)
    );
    let minted = minter.minted();
    let keys = op.pool_keys("remote").await;
    assert_eq!(keys.len(), 3);
    assert!(
        keys.values().all(|k| minted.contains(k)),
        "every key in the pool is one the webhook minted"
    );
    assert_eq!(minter.requests("mint"), 3, "one request per key");
    assert!(
        minter
            .header_values("mint", "authorization")
            .iter()
            .all(|v| v == "Bearer header-value-from-the-secret")
    );
    assert_eq!(minter.header_values("mint", "x-team").len(), 3);
    // A take is replaced by a fourth minted key.
    keyward::cli::pool::take(&op.client, &op.namespace, "remote")
        .await
        .expect("take");
    op.wait_pool("remote", "the taken key replaced", |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.available == 3 && s.generated_total == 4)
    })
    .await;
    assert_eq!(minter.requests("mint"), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_webhook_backs_off_says_why_and_recovers() {
    let minter = Minter::start().await;
    minter.set("mint", Behaviour::fixed(500, "{\"error\":\"down\"}"));
    let op = Operator::start().await;
    op.apply_pool(
        "flaky",
        json!({"size": 2, "generator": webhook(&minter, "mint", json!({}))}),
    )
    .await;
    let pool = wait_failing(&op, "flaky", "the webhook answered 500").await;
    assert_eq!(
        condition(&pool, "Ready").map(|c| (c.status, c.reason.as_str())),
        Some((ConditionStatus::False, "GeneratorFailing"))
    );
    op.wait_events("GeneratorFailing", "Warning", 1).await;
    // Backoff, not a hot loop: 1 s doubling; over 4 s at most a few rounds of at most
    // `size` calls each.
    let (before, reconciles) = (minter.requests("mint"), op.reconciles());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = minter.requests("mint") - before;
    assert!(
        during <= 6,
        "{during} requests in 4 s to a failing webhook: not backing off"
    );
    let passes = op.reconciles() - reconciles;
    assert!(passes <= 6, "{passes} reconciles in 4 s: a hot loop");
    // It comes back: the pool fills and says the generator works again.
    minter.set("mint", Behaviour::fresh());
    op.wait_pool_full("flaky", 2).await;
    op.wait_pool("flaky", "GeneratorFailing False", |p| {
        condition(p, "GeneratorFailing").is_some_and(|c| c.status == ConditionStatus::False)
            && condition(p, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_webhook_times_out() {
    let minter = Minter::start().await;
    minter.set("slow", Behaviour::fresh().after(Duration::from_secs(5)));
    let op = Operator::start().await;
    op.apply_pool(
        "slow",
        json!({"size": 1, "generator": webhook(&minter, "slow", json!({"timeout": "300ms"}))}),
    )
    .await;
    wait_failing(&op, "slow", "timed out").await;
    assert!(op.pool_keys("slow").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_off_the_allowlist_gets_no_request() {
    let minter = Minter::start().await;
    minter.set("mint", Behaviour::fresh());
    let op = Operator::start_with(Setup {
        allow_loopback: false,
        allow_hosts: vec!["keys.example.com".into(), "*.mint.example".into()],
        ..Setup::default()
    })
    .await;
    op.apply_pool(
        "offlist",
        json!({"size": 2, "generator": webhook(&minter, "mint", json!({}))}),
    )
    .await;
    let pool = op
        .wait_pool("offlist", "Ready False, HostNotAllowed", |p| {
            condition(p, "Ready")
                .is_some_and(|c| c.status == ConditionStatus::False && c.reason == "HostNotAllowed")
        })
        .await;
    let message = &condition(&pool, "Ready").expect("Ready").message;
    assert!(
        message.contains("127.0.0.1") && message.contains("--allow-host"),
        "the message names the host and the flag: {message}"
    );
    // Userinfo in the URL is refused even for an allowed host.
    op.apply_pool(
        "userinfo",
        json!({"size": 1, "generator": {"type": "Webhook", "webhook": {"url": "http://user:pw@keys.example.com/mint"}}}),
    )
    .await;
    let pool = op
        .wait_pool("userinfo", "Ready False, HostNotAllowed", |p| {
            condition(p, "Ready").is_some_and(|c| c.reason == "HostNotAllowed")
        })
        .await;
    let message = &condition(&pool, "Ready").expect("Ready").message;
    assert!(
        !message.contains("pw"),
        "no password in the message: {message}"
    );
    op.wait_idle().await;
    assert_eq!(
        minter.requests("mint"),
        0,
        "no request to a host not allowed"
    );
    assert!(op.pool_keys("offlist").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_calls_never_exceed_the_concurrency_limit() {
    let minter = Minter::start().await;
    minter.set("mint", Behaviour::fresh().after(Duration::from_millis(150)));
    let op = Operator::start_with(Setup {
        webhook_concurrency: Some(2),
        ..Setup::default()
    })
    .await;
    for name in ["a", "b", "c"] {
        op.apply_pool(
            name,
            json!({"size": 6, "generator": webhook(&minter, "mint", json!({}))}),
        )
        .await;
    }
    for name in ["a", "b", "c"] {
        op.wait_pool_full(name, 6).await;
    }
    assert_eq!(minter.requests("mint"), 18);
    assert_eq!(
        minter.max_in_flight(),
        2,
        "three pools minting at once share --webhook-concurrency 2"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_webhook_answers_each_say_what_was_wrong() {
    let minter = Minter::start().await;
    let big = json!({"data": {"key": "k".repeat(70 * 1024)}}).to_string();
    let long = json!({"data": {"key": "k".repeat(1025)}}).to_string();
    let cases: Vec<(&str, Behaviour, &str)> = vec![
        ("big", Behaviour::fixed(200, big), "larger than 64 KiB"),
        (
            "html",
            Behaviour::fixed(200, "<html>hi</html>"),
            "is not JSON",
        ),
        (
            "nokey",
            Behaviour::fixed(200, r#"{"data":{}}"#),
            "nothing at keyJsonPointer \"/data/key\"",
        ),
        (
            "number",
            Behaviour::fixed(200, r#"{"data":{"key":42}}"#),
            "is not a string",
        ),
        (
            "empty",
            Behaviour::fixed(200, r#"{"data":{"key":""}}"#),
            "empty key",
        ),
        ("long", Behaviour::fixed(200, long), "longer than 1024"),
        (
            "control",
            Behaviour::fixed(200, r#"{"data":{"key":"abc\u0007defghijklmnop"}}"#),
            "control characters",
        ),
        (
            "same",
            Behaviour::fixed(
                200,
                r#"{"data":{"key":"the-same-key-every-time-0123456789"}}"#,
            ),
            "already holds",
        ),
        (
            "redirect",
            Behaviour::fixed(302, ""),
            "never follows redirects",
        ),
    ];
    let op = Operator::start().await;
    for (path, behaviour, _) in &cases {
        minter.set(path, behaviour.clone());
        op.apply_pool(
            path,
            json!({"size": 2, "generator": webhook(&minter, path, json!({}))}),
        )
        .await;
    }
    for (path, _, says) in &cases {
        let pool = wait_failing(&op, path, says).await;
        let message = &condition(&pool, "GeneratorFailing")
            .expect("condition")
            .message;
        assert!(
            !message.contains("the-same-key") && !message.contains("kkkk"),
            "{path}: no key in the message: {message}"
        );
        let held = op.pool_keys(path).await;
        let expected = usize::from(*path == "same");
        assert_eq!(held.len(), expected, "{path}: keys stored: {held:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_pool_specs_are_refused_or_explained_and_nothing_is_lost() {
    let minter = Minter::start().await;
    minter.set("mint", Behaviour::fresh());
    let op = Operator::start().await;
    op.apply_pool("keep", json!({"size": 2})).await;
    op.wait_pool_full("keep", 2).await;
    let before = op.pool_keys("keep").await;
    let refused = |spec: Value| {
        let pools = op.pools();
        async move {
            let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPool", "metadata": {"name": "keep"}, "spec": spec});
            match pools
                .patch(
                    "keep",
                    &kube::api::PatchParams::apply("test").force(),
                    &kube::api::Patch::Apply(&body),
                )
                .await
            {
                Err(kube::Error::Api(s)) => {
                    assert_eq!(s.code, 422, "{s:?}");
                    s.message
                }
                other => panic!("accepted: {other:?}"),
            }
        }
    };
    for (spec, says) in [
        (json!({"size": 0}), "spec.size"),
        (json!({"size": 10001}), "spec.size"),
        (
            json!({"size": 2, "generator": {"type": "Webhook"}}),
            "generator.webhook is required",
        ),
        (
            json!({"size": 2, "generator": {"type": "Webhook", "webhook": {"method": "POST"}}}),
            "spec.generator.webhook.url",
        ),
        (
            json!({"size": 2, "generator": webhook(&minter, "mint", json!({"keyJsonPointer": "data/key"}))}),
            "keyJsonPointer must be a JSON pointer",
        ),
        (
            json!({"size": 2, "generator": webhook(&minter, "mint", json!({"keyJsonPointer": "/a~2b"}))}),
            "keyJsonPointer must be a JSON pointer",
        ),
    ] {
        let message = refused(spec.clone()).await;
        assert!(message.contains(says), "{spec}: {message}");
    }
    // Nothing was lost: the pool kept its spec and its keys.
    assert_eq!(op.pools().get("keep").await.expect("pool").spec.size, 2);
    assert_eq!(op.pool_keys("keep").await, before);

    // headersFrom naming a Secret that does not exist: explained, no request, and the pool
    // fills as soon as the Secret appears.
    op.apply_pool(
        "headers",
        json!({"size": 1, "generator": webhook(&minter, "mint", json!({
            "headersFrom": {"secretRef": {"name": "not-yet"}},
        }))}),
    )
    .await;
    wait_failing(&op, "headers", "headersFrom: Secret \"not-yet\" not found").await;
    assert_eq!(minter.requests("mint"), 0);
    create_secret(&op, "not-yet", json!({"Authorization": "Bearer late"})).await;
    op.wait_pool_full("headers", 1).await;
    assert_eq!(
        minter.header_values("mint", "authorization"),
        ["Bearer late"]
    );
}
