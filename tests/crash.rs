//! Crash suite (DESIGN §4 invariants, §5): the real `keyward run`, killed with SIGKILL at
//! random moments while 200 ApiKeys roll out, keys rotate and a pool is taken from, and
//! restarted each time. Afterwards every ApiKey is Ready with its delivered key verifying,
//! every fingerprint ever delivered is in its key's history with one `Rotated` entry per
//! rotation, no key was issued twice, every hash record has a live owner, and the pool is
//! full with every taken key verifying exactly once.
//!
//! The schedule (kill moments, which keys rotate, when takes happen) comes from a seed,
//! printed at the start and in every failure; `KEYWARD_CRASH_SEED=N` replays it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::convergence::{
    Schedule, check_invariants, kill9, operator, seed, verifier, verify, wait_converged,
    watch_deliveries,
};
use common::eventually;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use keyward::crd::{ApiKey, ApiKeyPool};
use keyward_emulator::Emulator;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const NS: &str = "crash";
const HASH_NS: &str = "keyward-system";
const KEYS: usize = 200;
/// Keys the suite rotates (every fifth), and keys imported (every tenth, offset by one).
const ROTATING_EVERY: usize = 5;
const IMPORTED_EVERY: usize = 10;
const POOL_SIZE: u64 = 5;
const CRASHES: usize = 6;

fn name(i: usize) -> String {
    format!("k{i:03}")
}

fn pool_take(kubeconfig: &std::path::Path) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["pool", "take", "p", "-n", NS])
        .output()
        .expect("keyward pool take runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|k| !k.is_empty())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_converges_after_sigkill_at_random_moments() {
    let seed = seed("KEYWARD_CRASH_SEED");
    eprintln!("crash suite seed {seed} (KEYWARD_CRASH_SEED={seed} replays it)");
    let ctx = format!("seed {seed}");
    let mut rng = Schedule(seed);

    let emulator = Emulator::start().await.expect("emulator");
    let client = emulator.client();
    keyward::cli::install_crds(&client).await.expect("CRDs");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [HASH_NS, NS] {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        namespaces
            .patch(ns, &PatchParams::apply("crash"), &Patch::Apply(&body))
            .await
            .expect("namespace");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, emulator.kubeconfig_yaml(NS)).expect("kubeconfig");
    let seen = watch_deliveries(client.clone(), NS);

    let apikeys: Api<ApiKey> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let pools: Api<ApiKeyPool> = Api::namespaced(client.clone(), NS);
    let apply = PatchParams::apply("crash");

    let mut op = operator(&kubeconfig, HASH_NS, &[]);
    // The rollout: 200 ApiKeys (some imported) and a pool with verification.
    for i in 0..KEYS {
        let mut spec = json!({"rotation": {"historyLimit": 100, "gracePeriod": "0s"}});
        if i % IMPORTED_EVERY == 1 {
            let legacy = format!("legacy-{i:03}");
            let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": legacy},
                "stringData": {"api-key": format!("legacy_{seed:x}_{i:03}_0123456789abcdefghijklmnop")}});
            secrets
                .patch(&legacy, &apply, &Patch::Apply(&body))
                .await
                .expect("legacy Secret");
            // An imported key is rotated by changing its source, never by keyward.
            spec = json!({"importFrom": {"secretRef": {"name": legacy}}});
        }
        let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": name(i)}, "spec": spec});
        apikeys
            .patch(&name(i), &apply, &Patch::Apply(&body))
            .await
            .expect("ApiKey");
    }
    let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPool",
        "metadata": {"name": "p"}, "spec": {"size": POOL_SIZE, "verification": true}});
    pools
        .patch("p", &apply, &Patch::Apply(&body))
        .await
        .expect("pool");

    // Crashes at random moments, with rotations and takes in between.
    let rotating: Vec<usize> = (0..KEYS)
        .filter(|i| i % ROTATING_EVERY == 0 && i % IMPORTED_EVERY != 1)
        .collect();
    let mut requested: BTreeMap<String, String> = BTreeMap::new();
    let mut taken = Vec::new();
    for crash in 0..CRASHES {
        let before = Duration::from_millis(rng.range(200, 1500));
        for _ in 0..rng.range(2, 8) {
            let i = rotating[rng.range(0, rotating.len() as u64) as usize];
            let value = format!("c{crash}-{}", rng.next() % 1_000_000);
            let rotate = json!({"metadata": {"annotations": {"keyward.dev/rotate": value}}});
            apikeys
                .patch(&name(i), &PatchParams::default(), &Patch::Merge(&rotate))
                .await
                .expect("rotate");
            requested.insert(name(i), value);
        }
        if crash == CRASHES - 1 {
            // At least one take lands between two crashes: wait for a key to be there.
            eventually(&format!("{ctx}: a pool key to take"), || async {
                let p = pools.get("p").await.ok()?;
                let v = serde_json::to_value(&p).ok()?;
                (v["status"]["available"].as_u64() > Some(0)).then_some(())
            })
            .await;
        }
        if crash == CRASHES - 1 || rng.range(0, 10) < 7 {
            let kc = kubeconfig.clone();
            if let Some(key) = tokio::task::spawn_blocking(move || pool_take(&kc))
                .await
                .expect("take")
            {
                taken.push(key);
            }
        }
        tokio::time::sleep(before).await;
        kill9(&mut op);
        op = operator(&kubeconfig, HASH_NS, &[]);
    }

    // Convergence: every ApiKey Ready on its generation with its last rotate request acted
    // on; the pool full again.
    let names: Vec<String> = (0..KEYS).map(name).collect();
    wait_converged(&ctx, &apikeys, &names, &requested).await;
    eventually(&format!("{ctx}: the pool refilled"), || async {
        let p = pools.get("p").await.ok()?;
        let v = serde_json::to_value(&p).ok()?;
        (v["status"]["available"] == POOL_SIZE).then_some(())
    })
    .await;

    // The verifier, started now, reads the records as the operator left them.
    let (mut verifier, addr) = verifier(&kubeconfig, HASH_NS);
    check_invariants(&ctx, &client, NS, HASH_NS, &names, &seen, &addr).await;
    assert!(
        !requested.is_empty() && !taken.is_empty(),
        "{ctx}: the schedule rotated keys ({}) and took from the pool ({})",
        requested.len(),
        taken.len()
    );
    // 5. Every key taken from the pool was distinct and verifies exactly once.
    let distinct: BTreeSet<&String> = taken.iter().collect();
    assert_eq!(
        distinct.len(),
        taken.len(),
        "{ctx}: a pool key was taken twice"
    );
    for key in &taken {
        assert_eq!(verify(&addr, key).await, 200, "{ctx}: a taken key verifies");
        assert_ne!(verify(&addr, key).await, 200, "{ctx}: ... only once");
    }
    kill9(&mut op);
    kill9(&mut verifier);
}
