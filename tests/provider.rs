//! ProviderCredential (DESIGN §7) end to end against local HTTP servers that answer as each
//! provider documents, selected through `baseURL`. The expected method, path and headers
//! are literals here, with the documentation beside them, never read from the table under
//! test.

mod common;

use std::time::Duration;

use common::minter::{Answer, Behaviour, Minter};
use common::operator::Operator;
use k8s_openapi::api::core::v1::ConfigMap;
use keyward::crd::{Phase, ProviderCredential};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const KEY: &str = "sk-test-0123456789abcdefghijklmnop";

fn pcreds(op: &Operator) -> Api<ProviderCredential> {
    Api::default_namespaced(op.client.clone())
}

async fn apply(op: &Operator, name: &str, spec: Value) {
    let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ProviderCredential",
        "metadata": {"name": name}, "spec": spec});
    pcreds(op)
        .patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&body),
        )
        .await
        .expect("ProviderCredential applied");
}

async fn put_secret(op: &Operator, name: &str, key: &str) {
    let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {"api-key": key}});
    op.secrets()
        .patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&body),
        )
        .await
        .expect("Secret applied");
}

async fn wait_phase(op: &Operator, name: &str, phase: Phase, reason: &str) -> ProviderCredential {
    let api = pcreds(op);
    common::eventually(&format!("{name} {phase:?} ({reason})"), || {
        let api = api.clone();
        async move {
            let pc = api.get(name).await.expect("get");
            let s = pc.status.clone()?;
            let ready = keyward::conditions::ready(&s.conditions)?;
            (s.phase == Some(phase)
                && ready.reason == reason
                && s.observed_generation == pc.metadata.generation)
                .then_some(pc)
        }
    })
    .await
}

/// One provider as its documentation describes the validation request.
struct Documented {
    provider: &'static str,
    /// The base URL's path on the test server (the provider's own base URL ends so).
    base: &'static str,
    path: &'static str,
    method: &'static str,
    auth: &'static str,
    /// The auth header's value before the key.
    scheme: &'static str,
    extra: &'static [(&'static str, &'static str)],
    /// A documented out-of-credit answer besides 402: (status, body).
    out_of_credit: Option<(u16, &'static str)>,
}

const DOCUMENTED: [Documented; 7] = [
    // https://developers.openai.com/api/reference/resources/models/methods/list ; out of
    // credit: https://developers.openai.com/api/docs/guides/error-codes
    Documented {
        provider: "openai",
        base: "/v1",
        path: "/models",
        method: "GET",
        auth: "authorization",
        scheme: "Bearer ",
        extra: &[],
        out_of_credit: Some((
            429,
            r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
        )),
    },
    // https://platform.claude.com/docs/en/api/models/list ; .../api/versioning ; spend
    // limit: https://platform.claude.com/docs/en/api/rate-limits
    Documented {
        provider: "anthropic",
        base: "",
        path: "/v1/models",
        method: "GET",
        auth: "x-api-key",
        scheme: "",
        extra: &[("anthropic-version", "2023-06-01")],
        out_of_credit: Some((
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"spend limit","details":{"error_code":"enforced_spend_limit_reached"}}}"#,
        )),
    },
    // https://docs.mistral.ai/api/endpoint/models
    Documented {
        provider: "mistral",
        base: "",
        path: "/v1/models",
        method: "GET",
        auth: "authorization",
        scheme: "Bearer ",
        extra: &[],
        out_of_credit: None,
    },
    // https://api.deepinfra.com/openapi.json (GET /v1/me, HTTPBearer)
    Documented {
        provider: "deepinfra",
        base: "",
        path: "/v1/me",
        method: "GET",
        auth: "authorization",
        scheme: "Bearer ",
        extra: &[],
        out_of_credit: None,
    },
    // https://docs.perplexity.ai/api-reference/async-sonar-get (needs allowPaidRequest)
    Documented {
        provider: "perplexity",
        base: "",
        path: "/v1/async/sonar",
        method: "GET",
        auth: "authorization",
        scheme: "Bearer ",
        extra: &[],
        out_of_credit: None,
    },
    // https://docs.dev.runwayml.com/api/ (GET /v1/organization) ; .../api-details/versioning/
    Documented {
        provider: "runway",
        base: "",
        path: "/v1/organization",
        method: "GET",
        auth: "authorization",
        scheme: "Bearer ",
        extra: &[("x-runway-version", "2024-11-06")],
        out_of_credit: None,
    },
    // https://github.com/togethercomputer/openapi (GET /models, bearerAuth) ; 402:
    // https://docs.together.ai/docs/error-codes
    Documented {
        provider: "together",
        base: "/v1",
        path: "/models",
        method: "GET",
        auth: "authorization",
        scheme: "Bearer ",
        extra: &[],
        out_of_credit: None,
    },
];

/// The spec of a credential for `d` whose base URL is `prefix` on `server`.
fn spec_for(d: &Documented, server: &Minter, prefix: &str, secret: &str) -> Value {
    let mut spec = json!({"provider": d.provider, "secretRef": {"name": secret},
        "baseURL": server.url(&format!("{prefix}{}", d.base))});
    spec["validation"] =
        json!({"timeout": "500ms", "allowPaidRequest": d.provider == "perplexity"});
    spec
}

#[tokio::test(flavor = "multi_thread")]
async fn each_provider_is_asked_as_its_documentation_says() {
    let server = Minter::start().await;
    let op = Operator::start().await;
    put_secret(&op, "provider-key", KEY).await;
    for d in &DOCUMENTED {
        server.set(
            &format!("{}{}{}", d.provider, d.base, d.path),
            Behaviour::fixed(200, "{}"),
        );
        apply(
            &op,
            d.provider,
            spec_for(d, &server, d.provider, "provider-key"),
        )
        .await;
    }
    for d in &DOCUMENTED {
        let provider = d.provider;
        let pc = wait_phase(&op, provider, Phase::Valid, "Validated").await;
        let full = format!("{}{}{}", d.provider, d.base, d.path);
        assert_eq!(server.methods(&full), [d.method], "{provider}");
        assert_eq!(
            server.header_values(&full, d.auth),
            [format!("{}{KEY}", d.scheme)],
            "{provider}"
        );
        for (h, v) in d.extra {
            assert_eq!(server.header_values(&full, h), [*v], "{provider} {h}");
        }
        let s = pc.status.clone().expect("status");
        assert_eq!(s.key_preview.as_deref(), Some("sk-…mnop"), "{provider}");
        assert!(!s.capabilities.is_empty(), "{provider}");
        assert_eq!(
            pc.labels().get("keyward.dev/phase").map(String::as_str),
            Some("Valid")
        );
    }
    // No request went anywhere else, and the key was never in a URL.
    assert!(server.paths().iter().all(|p| !p.contains(KEY)));
    assert_eq!(server.paths().len(), DOCUMENTED.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_providers_answers_are_classified_and_transient_failures_keep_the_verdict() {
    let server = Minter::start().await;
    let op = Operator::start().await;
    put_secret(&op, "k", KEY).await;
    let elsewhere = server.url("elsewhere");
    let mut expected = Vec::new();
    for d in &DOCUMENTED {
        let mut cases: Vec<(&str, Behaviour, Phase, &str)> = vec![
            ("ok", Behaviour::fixed(200, "{}"), Phase::Valid, "Validated"),
            (
                "unauthorized",
                Behaviour::fixed(401, r#"{"error":{"message":"bad"}}"#),
                Phase::Invalid,
                "InvalidKey",
            ),
            (
                "forbidden",
                Behaviour::fixed(403, "{}"),
                Phase::Invalid,
                "InvalidKey",
            ),
            (
                "payment",
                Behaviour::fixed(402, "{}"),
                Phase::Invalid,
                "QuotaExhausted",
            ),
            (
                "limited",
                Behaviour::fixed(429, r#"{"error":{"message":"Rate limit reached"}}"#)
                    .with_header("Retry-After", "3600"),
                Phase::Valid,
                "RateLimited",
            ),
            (
                "down",
                Behaviour::fixed(500, "upstream down"),
                Phase::Unreachable,
                "ProviderError",
            ),
            (
                "moved",
                Behaviour::fixed(302, "").with_header("Location", &elsewhere),
                Phase::Unreachable,
                "Redirected",
            ),
            (
                "teapot",
                Behaviour::fixed(418, ""),
                Phase::Unreachable,
                "UnexpectedStatus",
            ),
            (
                "slow",
                Behaviour::fixed(200, "{}").after(Duration::from_secs(5)),
                Phase::Unreachable,
                "Timeout",
            ),
        ];
        if let Some((status, body)) = d.out_of_credit {
            cases.push((
                "credit",
                Behaviour::fixed(status, body),
                Phase::Invalid,
                "QuotaExhausted",
            ));
        }
        for (case, behaviour, phase, reason) in cases {
            let name = format!("{}-{case}", d.provider);
            server.set(&format!("{name}{}{}", d.base, d.path), behaviour);
            apply(&op, &name, spec_for(d, &server, &name, "k")).await;
            expected.push((name, phase, reason));
        }
    }
    // Nobody listens there: a connection failure.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_url = format!("http://{}/v1", closed.local_addr().expect("addr"));
    drop(closed);
    apply(
        &op,
        "refused",
        json!({"provider": "openai", "secretRef": {"name": "k"},
        "baseURL": closed_url}),
    )
    .await;
    expected.push((
        "refused".to_string(),
        Phase::Unreachable,
        "ConnectionFailed",
    ));
    for (name, phase, reason) in &expected {
        let pc = wait_phase(&op, name, *phase, reason).await;
        let s = pc.status.expect("status");
        let message = s.message.unwrap_or_default();
        assert!(
            !message.contains(KEY) && !message.contains("0123456789ab"),
            "{name}: {message}"
        );
        if name.ends_with("-moved") {
            assert!(message.contains("127.0.0.1"), "{name}: {message}");
        }
    }
    // Redirects were not followed; conclusive verdicts (a rate limit with Retry-After
    // included) were asked for once.
    assert_eq!(server.requests("elsewhere"), 0);
    for (name, phase, _) in expected.iter().filter(|(n, _, _)| n != "refused") {
        let asked = server
            .paths()
            .iter()
            .filter(|p| p.starts_with(&format!("{name}/")))
            .count();
        if *phase == Phase::Unreachable {
            assert!(asked >= 1, "{name}");
        } else {
            assert_eq!(asked, 1, "{name}");
        }
    }

    // A 500 after a Valid verdict: Unreachable, the Valid verdict kept.
    server.set("flaky/v1/models", Behaviour::fixed(200, "{}"));
    apply(
        &op,
        "flaky",
        json!({"provider": "openai", "secretRef": {"name": "k"},
        "baseURL": server.url("flaky/v1")}),
    )
    .await;
    let valid = wait_phase(&op, "flaky", Phase::Valid, "Validated").await;
    server.set("flaky/v1/models", Behaviour::fixed(500, "upstream down"));
    request_validation(&op, "flaky", "1").await;
    let down = wait_phase(&op, "flaky", Phase::Unreachable, "ProviderError").await;
    let events = op.wait_events("ProviderError", "Warning", 1).await;
    assert!(
        events[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .starts_with("Unreachable"),
        "{:?}",
        events[0].message
    );
    let s = down.status.expect("status");
    assert_eq!(s.last_verdict, Some(Phase::Valid));
    assert_eq!(s.http_status, Some(500));
    assert_eq!(
        s.last_validated_at,
        valid.status.expect("status").last_validated_at
    );
}

async fn request_validation(op: &Operator, name: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {"keyward.dev/validate": value}}});
    pcreds(op)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotated");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_change_revalidates_at_once_and_the_newest_key_wins() {
    let server = Minter::start().await;
    let good = "sk-good-key-0123456789abcdefghij";
    server.set(
        "p/v1/models",
        Behaviour::answering(Answer::Require(
            "authorization".into(),
            format!("Bearer {good}"),
        )),
    );
    let op = Operator::start().await;
    put_secret(&op, "rotating", "sk-old-key-0123456789abcdefghij").await;
    apply(
        &op,
        "p",
        json!({"provider": "openai", "secretRef": {"name": "rotating"},
        "baseURL": server.url("p/v1"), "validation": {"interval": "1h"}}),
    )
    .await;
    wait_phase(&op, "p", Phase::Invalid, "InvalidKey").await;
    put_secret(&op, "rotating", good).await;
    wait_phase(&op, "p", Phase::Valid, "Validated").await;

    // The server slow (2 s); the Secret changes while the request for the old key is in
    // flight: the final verdict is the new key's.
    server.set(
        "p/v1/models",
        Behaviour::answering(Answer::Require(
            "authorization".into(),
            format!("Bearer {good}"),
        ))
        .after(Duration::from_secs(2)),
    );
    put_secret(&op, "rotating", "sk-bad-key-0123456789abcdefghij").await;
    common::eventually("the request for the bad key in flight", || async {
        (server.header_values("p/v1/models", "authorization").len() >= 3).then_some(())
    })
    .await;
    put_secret(&op, "rotating", good).await;
    let secret_rv = op
        .secrets()
        .get("rotating")
        .await
        .expect("secret")
        .resource_version();
    let pc = common::eventually("the verdict for the newest Secret", || async {
        let pc = pcreds(&op).get("p").await.expect("get");
        let s = pc.status.clone()?;
        (s.validated_secret_version == secret_rv).then_some(pc)
    })
    .await;
    assert_eq!(pc.status.and_then(|s| s.phase), Some(Phase::Valid));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_annotation_and_keyward_validate_ask_once_per_value() {
    let server = Minter::start().await;
    server.set("v/v1/models", Behaviour::fixed(200, "{}"));
    server.set("bad/v1/models", Behaviour::fixed(401, "{}"));
    let op = Operator::start().await;
    put_secret(&op, "k", KEY).await;
    apply(
        &op,
        "v",
        json!({"provider": "openai", "secretRef": {"name": "k"},
        "baseURL": server.url("v/v1")}),
    )
    .await;
    apply(
        &op,
        "bad",
        json!({"provider": "openai", "secretRef": {"name": "k"},
        "baseURL": server.url("bad/v1")}),
    )
    .await;
    wait_phase(&op, "v", Phase::Valid, "Validated").await;
    wait_phase(&op, "bad", Phase::Invalid, "InvalidKey").await;
    assert_eq!(server.requests("v/v1/models"), 1);
    request_validation(&op, "v", "first").await;
    common::eventually("one more request", || async {
        (server.requests("v/v1/models") == 2).then_some(())
    })
    .await;
    op.wait_idle().await;
    // The same value again (another annotation changes): no new request.
    let patch =
        json!({"metadata": {"annotations": {"keyward.dev/validate": "first", "note": "x"}}});
    pcreds(&op)
        .patch("v", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patched");
    op.wait_idle().await;
    assert_eq!(server.requests("v/v1/models"), 2);

    let dir = tempfile::tempdir().expect("dir");
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, op.kubeconfig_yaml()).expect("kubeconfig");
    let run = |name: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["validate", name])
            .output()
            .expect("keyward runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = tokio::task::block_in_place(|| run("v"));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("Valid (Validated), HTTP 200"), "{out}");
    assert_eq!(server.requests("v/v1/models"), 3);
    let (code, out, _) = tokio::task::block_in_place(|| run("bad"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Invalid (InvalidKey), HTTP 401"), "{out}");
    let (code, _, err) = tokio::task::block_in_place(|| run("nope"));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("ProviderCredential default/nope not found"),
        "{err}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--kubeconfig")
        .arg(&kc)
        .arg("providers")
        .output()
        .expect("keyward runs");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.contains("DISPLAY NAME") && h.contains("CAPABILITIES")),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("v ")
            && l.contains("Valid")
            && l.contains("sk-…mnop")
            && l.contains("chat")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_explained_and_nothing_is_sent() {
    let server = Minter::start().await;
    server.set("any/v1/models", Behaviour::fixed(200, "{}"));
    let op = Operator::start_with(common::operator::Setup {
        allow_loopback: false,
        allow_hosts: vec!["127.0.0.1".into()],
        ..Default::default()
    })
    .await;
    // Refused at admission.
    for (spec, says) in [
        (
            json!({"provider": "acme", "secretRef": {"name": "k"}}),
            "spec.provider",
        ),
        (
            json!({"provider": "custom", "secretRef": {"name": "k"}, "baseURL": "https://x.test",
            "custom": {"method": "GET"}}),
            "spec.custom.path",
        ),
        (
            json!({"provider": "openai", "secretRef": {"name": "k"}, "baseURL": "ftp://api.openai.com/v1"}),
            "http",
        ),
    ] {
        let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ProviderCredential",
            "metadata": {"name": "refused"}, "spec": spec});
        match pcreds(&op)
            .patch("refused", &PatchParams::apply("test"), &Patch::Apply(&body))
            .await
        {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422);
                assert!(s.message.contains(says), "{}", s.message);
            }
            other => panic!("accepted: {other:?}"),
        }
    }
    put_secret(&op, "empty", "").await;
    put_secret(&op, "injected", "sk-abc\r\nX-Evil: 1").await;
    put_secret(&op, "k", KEY).await;
    let base = server.url("any/v1");
    for (name, spec, reason, says) in [
        (
            "missing",
            json!({"secretRef": {"name": "nope"}}),
            "SecretNotFound",
            "Secret default/nope not found",
        ),
        (
            "nokey",
            json!({"secretRef": {"name": "k", "key": "token"}}),
            "KeyNotFound",
            "no data key \"token\"",
        ),
        (
            "empty",
            json!({"secretRef": {"name": "empty"}}),
            "BadKey",
            "empty",
        ),
        (
            "injected",
            json!({"secretRef": {"name": "injected"}}),
            "BadKey",
            "control character",
        ),
        (
            "paid",
            json!({"provider": "perplexity", "secretRef": {"name": "k"}}),
            "NoFreeValidation",
            "allowPaidRequest",
        ),
        (
            "userinfo",
            json!({"secretRef": {"name": "k"}, "baseURL": "https://api.openai.com@evil.test/v1"}),
            "HostNotAllowed",
            "user name",
        ),
        (
            "lookalike",
            json!({"secretRef": {"name": "k"}, "baseURL": "https://api.openai.com.evil.test/v1"}),
            "HostNotAllowed",
            "api.openai.com.evil.test",
        ),
        (
            "ip",
            json!({"secretRef": {"name": "k"}, "baseURL": "http://169.254.169.254/v1"}),
            "HostNotAllowed",
            "169.254.169.254",
        ),
    ] {
        let mut spec = spec;
        if spec.get("provider").is_none() {
            spec["provider"] = json!("openai");
        }
        if spec.get("baseURL").is_none() {
            spec["baseURL"] = json!(base);
        }
        apply(&op, name, spec).await;
        let pc = wait_phase(&op, name, Phase::NotConfigured, reason).await;
        let s = pc.status.expect("status");
        let ready = keyward::conditions::ready(&s.conditions).expect("Ready");
        assert!(ready.message.contains(says), "{name}: {}", ready.message);
    }
    op.wait_idle().await;
    assert_eq!(
        server.paths().len(),
        0,
        "nothing was sent: {:?}",
        server.paths()
    );
    // Fixing the Secret validates at once.
    put_secret(&op, "injected", KEY).await;
    wait_phase(&op, "injected", Phase::Valid, "Validated").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fallback_lists_follow_the_phases() {
    let server = Minter::start().await;
    for p in ["a", "b", "c"] {
        server.set(&format!("{p}/v1/models"), Behaviour::fixed(200, "{}"));
    }
    let op = Operator::start().await;
    put_secret(&op, "k", KEY).await;
    for (name, priority) in [("a", 20), ("b", 10), ("c", 30)] {
        apply(
            &op,
            name,
            json!({"provider": "openai", "secretRef": {"name": "k"},
            "baseURL": server.url(&format!("{name}/v1")), "priority": priority}),
        )
        .await;
    }
    let cms: Api<ConfigMap> = Api::default_namespaced(op.client.clone());
    let chat = |cms: Api<ConfigMap>| async move {
        let cm = cms.get_opt("keyward-providers").await.expect("get")?;
        let list: Vec<Value> = serde_json::from_str(cm.data?.get("chat")?).ok()?;
        Some(
            list.iter()
                .map(|e| e["name"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>(),
        )
    };
    common::eventually("chat: b, a, c", || async {
        (chat(cms.clone()).await? == ["b", "a", "c"]).then_some(())
    })
    .await;
    let cm = cms.get("keyward-providers").await.expect("cm");
    let entry: Vec<Value> = serde_json::from_str(&cm.data.expect("data")["chat"]).expect("json");
    assert_eq!(entry[0]["secretName"], "k");
    assert_eq!(entry[0]["secretKey"], "api-key");
    assert!(!serde_json::to_string(&entry).expect("json").contains(KEY));
    // b's key is refused: it leaves the list.
    server.set("b/v1/models", Behaviour::fixed(401, "{}"));
    request_validation(&op, "b", "now").await;
    common::eventually("chat: a, c", || async {
        (chat(cms.clone()).await? == ["a", "c"]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_configmap_of_that_name_is_never_overwritten() {
    let server = Minter::start().await;
    server.set("a/v1/models", Behaviour::fixed(200, "{}"));
    let op = Operator::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(op.client.clone());
    let foreign: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "keyward-providers"}, "data": {"mine": "yes"}}),
    )
    .expect("cm");
    cms.create(&PostParams::default(), &foreign)
        .await
        .expect("foreign ConfigMap");
    put_secret(&op, "k", KEY).await;
    apply(
        &op,
        "a",
        json!({"provider": "openai", "secretRef": {"name": "k"},
        "baseURL": server.url("a/v1")}),
    )
    .await;
    wait_phase(&op, "a", Phase::Valid, "Validated").await;
    let events = op.wait_events("FallbackListsBlocked", "Warning", 1).await;
    assert!(
        events[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("not created by keyward")
    );
    let cm = cms.get("keyward-providers").await.expect("cm");
    assert_eq!(
        cm.data.expect("data"),
        [("mine".to_string(), "yes".to_string())].into()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn at_most_eight_validations_in_flight_and_a_restart_asks_nothing_new() {
    let server = Minter::start().await;
    let mut op = Operator::start().await;
    put_secret(&op, "k", KEY).await;
    for i in 0..12 {
        let name = format!("c{i}");
        server.set(
            &format!("{name}/v1/models"),
            Behaviour::fixed(200, "{}").after(Duration::from_millis(400)),
        );
        apply(
            &op,
            &name,
            json!({"provider": "openai", "secretRef": {"name": "k"},
            "baseURL": server.url(&format!("{name}/v1"))}),
        )
        .await;
    }
    for i in 0..12 {
        wait_phase(&op, &format!("c{i}"), Phase::Valid, "Validated").await;
    }
    assert_eq!(server.max_in_flight(), 8, "validations in flight at once");
    assert_eq!(server.paths().len(), 12);
    let events = op.wait_events("Validated", "Normal", 12).await;
    assert!(events.len() >= 12);
    // Validated within their interval (1h): a restarted operator asks nothing.
    op.wait_idle().await;
    op.restart().await;
    op.wait_idle().await;
    assert_eq!(server.paths().len(), 12);
}
