//! No plain key anywhere (DESIGN §2): run the real `keyward run` binary at debug level,
//! issue, import and reveal keys, then scan its logs, Events, statuses, annotations, labels
//! and hash records for every key, raw and base64-encoded.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

use base64::Engine;
use common::operator::HASH_NS;
use k8s_openapi::api::core::v1::{Event, Secret};
use keyward::crd::{ApiKey, ApiKeyPool, ProviderCredential};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn wait_ready(api: &Api<ApiKey>, name: &str) {
    common::eventually(&format!("{name} to become Ready"), || async {
        let ak = api.get_opt(name).await.expect("get")?;
        ak.status
            .as_ref()
            .is_some_and(|s| {
                keyward::conditions::ready(&s.conditions)
                    .is_some_and(|c| c.status == keyward::crd::ConditionStatus::True)
            })
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_never_appear_in_logs_events_status_or_metadata() {
    let cluster = common::operator::Cluster::start().await;
    let (client, dir, kubeconfig) = (
        cluster.client.clone(),
        &cluster.dir,
        cluster.kubeconfig.clone(),
    );
    let log_path = dir.path().join("operator.log");
    let mut operator = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "run",
            "--hash-namespace",
            HASH_NS,
            "--metrics-addr",
            "127.0.0.1:0",
            "--verifier-addr",
            "127.0.0.1:0",
            "--allow-host",
            "127.0.0.1",
        ])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("keyward run starts");

    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let imported = "imported-key-0123456789-abcdefghijklmnopqrstuvwxyz";
    let source: Secret = serde_json::from_value(
        json!({"metadata": {"name": "source"}, "stringData": {"api-key": imported}}),
    )
    .expect("secret");
    secrets
        .create(&PostParams::default(), &source)
        .await
        .expect("source");
    let apikeys: Api<ApiKey> = Api::default_namespaced(client.clone());
    for (name, spec) in [
        ("generated", json!({"owner": "o", "scopes": ["s"]})),
        (
            "imported",
            json!({"importFrom": {"secretRef": {"name": "source"}}}),
        ),
        ("shown", json!({"delivery": "ShowOnce"})),
    ] {
        let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey", "metadata": {"name": name}, "spec": spec});
        apikeys
            .patch(name, &PatchParams::apply("test"), &Patch::Apply(&body))
            .await
            .expect("applied");
    }
    // Pools: random keys with hash records, and keys minted by a webhook that is sent a
    // header from a Secret.
    let minter = common::minter::Minter::start().await;
    minter.set("mint", common::minter::Behaviour::fresh());
    let header_value = "Bearer webhook-credential-0123456789-abcdefghijklmnop";
    let auth: Secret = serde_json::from_value(
        json!({"metadata": {"name": "mint-auth"}, "stringData": {"Authorization": header_value}}),
    )
    .expect("secret");
    secrets
        .create(&PostParams::default(), &auth)
        .await
        .expect("headers secret");
    let pools: Api<ApiKeyPool> = Api::default_namespaced(client.clone());
    for (name, spec) in [
        ("tokens", json!({"size": 3, "verification": true})),
        (
            "remote",
            json!({"size": 2, "verification": true, "generator": {"type": "Webhook", "webhook": {
                "url": minter.url("mint"), "keyJsonPointer": "/data/key",
                "headersFrom": {"secretRef": {"name": "mint-auth"}},
            }}}),
        ),
    ] {
        let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPool", "metadata": {"name": name}, "spec": spec});
        pools
            .patch(name, &PatchParams::apply("test"), &Patch::Apply(&body))
            .await
            .expect("pool applied");
    }
    // A provider credential whose provider echoes the key in its error answer.
    minter.set(
        "echo/v1/models",
        common::minter::Behaviour::answering(common::minter::Answer::Echo(401)),
    );
    let provider_key = "sk-provider-0123456789-abcdefghijklmnopqrstu";
    let pk: Secret = serde_json::from_value(
        json!({"metadata": {"name": "provider-key"}, "stringData": {"api-key": provider_key}}),
    )
    .expect("secret");
    secrets
        .create(&PostParams::default(), &pk)
        .await
        .expect("provider key");
    let pcreds: Api<ProviderCredential> = Api::default_namespaced(client.clone());
    let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ProviderCredential",
        "metadata": {"name": "echoing"}, "spec": {"provider": "openai",
        "secretRef": {"name": "provider-key"}, "baseURL": minter.url("echo/v1")}});
    pcreds
        .patch("echoing", &PatchParams::apply("test"), &Patch::Apply(&body))
        .await
        .expect("credential applied");
    for name in ["generated", "imported", "shown"] {
        wait_ready(&apikeys, name).await;
    }
    common::eventually("the echoing provider's verdict", || async {
        let pc = pcreds.get("echoing").await.expect("get");
        (pc.status?.phase == Some(keyward::crd::Phase::Invalid)).then_some(())
    })
    .await;
    assert!(
        minter.paths().iter().any(|p| p == "echo/v1/models"),
        "the provider was asked"
    );
    for (name, size) in [("tokens", 3), ("remote", 2)] {
        common::eventually(&format!("pool {name} full"), || async {
            let p = pools.get(name).await.expect("pool");
            p.status.filter(|s| s.available == size).map(|_| ())
        })
        .await;
    }
    assert_eq!(
        minter.header_values("mint", "authorization")[0],
        header_value
    );
    let mut pool_keys: Vec<String> = Vec::new();
    for s in secrets
        .list(&ListParams::default().labels("keyward.dev/pool"))
        .await
        .expect("pool keys")
        .items
    {
        let data = s.data.expect("data");
        pool_keys.push(String::from_utf8(data["api-key"].0.clone()).expect("utf-8"));
    }
    assert_eq!(pool_keys.len(), 5);
    let take = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["pool", "take", "tokens"])
            .env("RUST_LOG", "debug")
            .output()
            .expect("pool take runs")
    });
    assert!(take.status.success());
    let taken = String::from_utf8_lossy(&take.stdout).trim().to_string();
    assert!(pool_keys.contains(&taken));
    let read = |name: &str| {
        let secrets = secrets.clone();
        let name = name.to_string();
        async move {
            let s = secrets.get(&name).await.expect("secret");
            String::from_utf8(s.data.expect("data")["api-key"].0.clone()).expect("utf-8")
        }
    };
    let generated = read("generated").await;
    let shown_in_secret = read("shown").await;
    let reveal = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["reveal", "shown"])
            .env("RUST_LOG", "debug")
            .output()
            .expect("reveal runs")
    });
    assert!(reveal.status.success());
    let revealed = String::from_utf8_lossy(&reveal.stdout).trim().to_string();
    assert_eq!(revealed, shown_in_secret);
    // Let the operator observe the reveal (and log whatever it logs about it).
    common::eventually("the operator to record the reveal", || async {
        let ak = apikeys.get("shown").await.expect("get");
        ak.status.and_then(|s| s.revealed_at).map(|_| ())
    })
    .await;

    // Present every key to the verifier (both endpoints, good and bad) so its handling of
    // plain keys is in the scanned logs too.
    let verifier = common::eventually("the verifier address in the log", || async {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        log.lines().find_map(|l| {
            let at = l.find("verifier=")?;
            Some(
                l[at + "verifier=".len()..]
                    .split_whitespace()
                    .next()?
                    .to_string(),
            )
        })
    })
    .await;
    for (key, expected) in [
        (generated.as_str(), "VALID"),
        (imported, "VALID"),
        (revealed.as_str(), "VALID"),
        (taken.as_str(), "VALID"),
        (taken.as_str(), "USAGE_EXCEEDED"),
        ("kw_not-a-real-key-at-all-0123456789abcdefgh", "MALFORMED"),
    ] {
        let body = json!({"key": key}).to_string();
        let expected = format!("\"code\":\"{expected}\"");
        common::eventually(&format!("the verifier to answer {expected}"), || async {
            let (code, _, answer) = tokio::task::block_in_place(|| {
                common::http(&verifier, "POST", "/v1/keys/verify", &[], &body)
            });
            assert_eq!(code, 200);
            answer.contains(expected.as_str()).then_some(())
        })
        .await;
        let bearer = format!("Bearer {key}");
        tokio::task::block_in_place(|| {
            common::http(
                &verifier,
                "GET",
                "/verify/x",
                &[("Authorization", &bearer)],
                "",
            )
        });
    }

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(operator.id().to_string())
        .status();
    let status = tokio::task::block_in_place(|| operator.wait()).expect("operator exits");
    assert!(
        status.success(),
        "keyward run exits cleanly on SIGTERM: {status:?}"
    );
    let mut haystack = String::new();
    std::fs::File::open(&log_path)
        .expect("log")
        .read_to_string(&mut haystack)
        .expect("read log");
    assert!(haystack.contains("DEBUG"), "debug logging was on");
    assert!(
        haystack.contains("decided"),
        "the operator logged its reconciles"
    );
    haystack.push_str(&String::from_utf8_lossy(&reveal.stderr));
    haystack.push_str(&String::from_utf8_lossy(&take.stderr));
    haystack.push_str(
        &serde_json::to_string(
            &pcreds
                .list(&ListParams::default())
                .await
                .expect("pcreds")
                .items,
        )
        .expect("json"),
    );
    for cm in Api::<k8s_openapi::api::core::v1::ConfigMap>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("configmaps")
        .items
    {
        haystack.push_str(&serde_json::to_string(&cm).expect("json"));
    }
    haystack.push_str(
        &serde_json::to_string(
            &pools
                .list(&ListParams::default())
                .await
                .expect("pools")
                .items,
        )
        .expect("json"),
    );
    let events = Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("events");
    assert!(!events.items.is_empty());
    haystack.push_str(&serde_json::to_string(&events.items).expect("json"));
    haystack.push_str(
        &serde_json::to_string(
            &apikeys
                .list(&ListParams::default())
                .await
                .expect("apikeys")
                .items,
        )
        .expect("json"),
    );
    for secret in Api::<Secret>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("secrets")
        .items
    {
        haystack.push_str(&serde_json::to_string(&secret.metadata).expect("json"));
        if secret.metadata.namespace.as_deref() == Some(HASH_NS) {
            for bytes in secret.data.unwrap_or_default().values() {
                haystack.push_str(&String::from_utf8_lossy(&bytes.0));
            }
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut scanned = vec![
        ("generated", generated.clone()),
        ("imported", imported.to_string()),
        ("revealed", revealed.clone()),
        ("headersFrom", header_value.to_string()),
        ("provider", provider_key.to_string()),
    ];
    scanned.extend(pool_keys.iter().map(|k| ("pool", k.clone())));
    scanned.extend(minter.minted().into_iter().map(|k| ("webhook-minted", k)));
    for (what, key) in &scanned {
        assert!(key.len() >= 30);
        assert!(!haystack.contains(key.as_str()), "the {what} key leaked");
        assert!(
            !haystack.contains(&b64.encode(key)),
            "the {what} key leaked base64-encoded"
        );
    }
}
