//! Fault suite (DESIGN §9): the real `keyward run` against an emulator that fails 10% of
//! every verb at random — 500, 429 with Retry-After, 409, writes applied but answered 500 or
//! never answered, latency, watches cut mid-stream or expired — while 200 ApiKeys roll out
//! (some rotating every few seconds, some imported, some ShowOnce), a pool with verification
//! fills and provider credentials validate. Everything converges, the DESIGN §4 invariants
//! hold, and the operator's requests per key issued stay within 3× a fault-free run of the
//! same scenario (both figures printed).
//!
//! The faults come from a seed, printed at the start and in every failure;
//! `KEYWARD_FAULT_SEED=N` replays them. Hung requests are answered 504 after 2 s, as
//! kube-apiserver answers requests that outlive its request timeout.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::convergence::{
    check_invariants, kill9, operator, seed, verifier, wait_converged, watch_deliveries,
};
use common::eventually;
use common::minter::{Behaviour, Minter};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use keyward::crd::{ApiKey, ApiKeyPool, ProviderCredential};
use keyward_emulator::Emulator;
use keyward_emulator::faults::RandomFaults;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

const NS: &str = "faults";
const HASH_NS: &str = "keyward-system";
const KEYS: usize = 200;
const POOL_SIZE: u64 = 5;
const OPERATOR: &str = "operator";

fn name(i: usize) -> String {
    format!("k{i:03}")
}

/// What each ApiKey is: every fifth rotates every few seconds, every tenth (offset 1) is
/// imported, every tenth (offset 3) is ShowOnce.
fn spec(i: usize, rotating: bool) -> Value {
    match i % 10 {
        1 => json!({"importFrom": {"secretRef": {"name": format!("legacy-{i:03}")}}}),
        3 => json!({"delivery": "ShowOnce", "revealWindow": "2s"}),
        _ if i.is_multiple_of(5) && rotating => {
            json!({"rotation": {"every": "4s", "historyLimit": 100, "gracePeriod": "0s"}})
        }
        _ => json!({"rotation": {"historyLimit": 100, "gracePeriod": "0s"}}),
    }
}

/// Server-side applies `body` as the test, retrying through injected faults (apply is
/// idempotent, so a write applied but answered 500 is simply applied again).
async fn apply<K>(api: &Api<K>, name: &str, body: &Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(&format!("applying {name}"), || async {
        api.patch(
            name,
            &PatchParams::apply("fault-suite"),
            &Patch::Apply(body),
        )
        .await
        .ok()
        .map(|_| ())
    })
    .await;
}

struct Run {
    requests: u64,
    issued: u64,
    injected: u64,
}

/// The scenario against a fresh emulator, with `faults` on until everything converged.
async fn run(seed: u64, faults: Option<RandomFaults>) -> Run {
    let ctx = format!("seed {seed}, faults {}", faults.is_some());
    let emulator = Emulator::start().await.expect("emulator");
    let client = emulator.client();
    keyward::cli::install_crds(&client).await.expect("CRDs");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [HASH_NS, NS] {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        apply(&namespaces, ns, &body).await;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, emulator.kubeconfig_yaml_as(NS, OPERATOR)).expect("kubeconfig");
    let minter = Minter::start().await;
    minter.set(
        "openai/v1/models",
        Behaviour::fixed(200, r#"{"object":"list","data":[]}"#),
    );
    let seen = watch_deliveries(client.clone(), NS);
    emulator.hooks().set_random_faults(faults.clone());
    let mut op = operator(&kubeconfig, HASH_NS, &["--allow-host", "127.0.0.1"]);

    let apikeys: Api<ApiKey> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let pools: Api<ApiKeyPool> = Api::namespaced(client.clone(), NS);
    let credentials: Api<ProviderCredential> = Api::namespaced(client.clone(), NS);
    for i in 0..KEYS {
        if i % 10 == 1 {
            let legacy = format!("legacy-{i:03}");
            let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": legacy},
                "stringData": {"api-key": format!("legacy_{seed:x}_{i:03}_0123456789abcdefghijklmnop")}});
            apply(&secrets, &legacy, &body).await;
        }
        let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": name(i)}, "spec": spec(i, true)});
        apply(&apikeys, &name(i), &body).await;
    }
    let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPool",
        "metadata": {"name": "p"}, "spec": {"size": POOL_SIZE, "verification": true}});
    apply(&pools, "p", &body).await;
    let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "openai-key"},
        "stringData": {"api-key": "sk-test-0123456789"}});
    apply(&secrets, "openai-key", &body).await;
    for c in ["openai-a", "openai-b"] {
        let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ProviderCredential",
            "metadata": {"name": c}, "spec": {"provider": "openai",
                "secretRef": {"name": "openai-key"}, "baseURL": minter.url("openai/v1")}});
        apply(&credentials, c, &body).await;
    }

    // Convergence under faults.
    let names: Vec<String> = (0..KEYS).map(name).collect();
    wait_converged(&ctx, &apikeys, &names, &BTreeMap::new()).await;
    eventually(&format!("{ctx}: the pool full"), || async {
        let v = serde_json::to_value(pools.get("p").await.ok()?).ok()?;
        (v["status"]["available"] == POOL_SIZE).then_some(())
    })
    .await;
    for c in ["openai-a", "openai-b"] {
        eventually(&format!("{ctx}: {c} Valid"), || async {
            let v = serde_json::to_value(credentials.get(c).await.ok()?).ok()?;
            (v["status"]["phase"] == "Valid").then_some(())
        })
        .await;
    }
    // Keys issued so far (first keys and rotations, pool keys) and the operator's requests.
    emulator.hooks().set_random_faults(None);
    let mut issued = 0;
    for n in &names {
        let ak = apikeys.get(n).await.expect("ApiKey");
        let v = serde_json::to_value(&ak.status).expect("status");
        issued += 1 + v["rotationCount"].as_u64().unwrap_or(0);
    }
    let pool = serde_json::to_value(pools.get("p").await.expect("pool")).expect("json");
    issued += pool["status"]["generatedTotal"].as_u64().unwrap_or(0);
    let requests = emulator
        .hooks()
        .requests()
        .iter()
        .filter(|r| r.user == OPERATOR)
        .count() as u64;
    let injected = emulator.hooks().injected_total();

    // Stop the scheduled rotations so the state holds still, then check it.
    for i in (0..KEYS).filter(|i| i.is_multiple_of(5) && i % 10 != 1 && i % 10 != 3) {
        let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": name(i)}, "spec": spec(i, false)});
        apply(&apikeys, &name(i), &body).await;
    }
    wait_converged(&ctx, &apikeys, &names, &BTreeMap::new()).await;
    let (mut verifier, addr) = verifier(&kubeconfig, HASH_NS);
    check_invariants(&ctx, &client, NS, HASH_NS, &names, &seen, &addr).await;
    kill9(&mut op);
    kill9(&mut verifier);
    tokio::time::sleep(Duration::ZERO).await;
    Run {
        requests,
        issued,
        injected,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn everything_converges_under_ten_percent_faults() {
    let seed = seed("KEYWARD_FAULT_SEED");
    eprintln!("fault suite seed {seed} (KEYWARD_FAULT_SEED={seed} replays it)");
    let clean = run(seed, None).await;
    let mut faults = RandomFaults::new(0.1, seed);
    faults.hang_timeout = Some(Duration::from_secs(2));
    let faulty = run(seed, Some(faults)).await;
    let per_key = |r: &Run| r.requests as f64 / r.issued.max(1) as f64;
    eprintln!(
        "fault suite: fault-free {} requests for {} keys issued ({:.1} per key); with 10% faults \
         {} requests for {} keys ({:.1} per key), {} faults injected",
        clean.requests,
        clean.issued,
        per_key(&clean),
        faulty.requests,
        faulty.issued,
        per_key(&faulty),
        faulty.injected
    );
    assert!(faulty.injected > 0, "seed {seed}: faults were injected");
    assert!(
        per_key(&faulty) <= 3.0 * per_key(&clean),
        "seed {seed}: {:.1} requests per key under faults, over 3× the fault-free {:.1}",
        per_key(&faulty),
        per_key(&clean)
    );
}
