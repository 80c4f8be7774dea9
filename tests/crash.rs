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
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::eventually;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use keyward::crd::{ApiKey, ApiKeyPool};
use keyward_emulator::Emulator;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

const NS: &str = "crash";
const HASH_NS: &str = "keyward-system";
const KEYS: usize = 200;
/// Keys the suite rotates (every fifth), and keys imported (every tenth, offset by one).
const ROTATING_EVERY: usize = 5;
const IMPORTED_EVERY: usize = 10;
const POOL_SIZE: u64 = 5;
const CRASHES: usize = 6;

/// splitmix64: a seeded, reproducible schedule without another dependency.
struct Schedule(u64);

impl Schedule {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

fn name(i: usize) -> String {
    format!("k{i:03}")
}

fn seed() -> u64 {
    std::env::var("KEYWARD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

fn operator(kubeconfig: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "run",
            "--hash-namespace",
            HASH_NS,
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("keyward run starts")
}

fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn fingerprint(key: &str) -> String {
    keyward::keys::fingerprint(&keyward::keys::PlainKey::new(key))
}

/// Every fingerprint seen in each workload Secret (by Secret name), from a watch that runs
/// through the whole suite.
type Seen = Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>;

fn watch_deliveries(client: kube::Client) -> Seen {
    let seen: Seen = Arc::default();
    let out = seen.clone();
    let secrets: Api<Secret> = Api::namespaced(client, NS);
    tokio::spawn(async move {
        let mut events = watcher(secrets, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            let objects = match event {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => vec![s],
                _ => continue,
            };
            for s in objects {
                let Some(key) = s
                    .data
                    .as_ref()
                    .and_then(|d| d.get("api-key"))
                    .and_then(|b| String::from_utf8(b.0.clone()).ok())
                    .filter(|k| !k.is_empty())
                else {
                    continue;
                };
                let name = s.metadata.name.clone().unwrap_or_default();
                out.lock()
                    .expect("lock")
                    .entry(name)
                    .or_default()
                    .insert(fingerprint(&key));
            }
        }
    });
    seen
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

async fn verify(addr: &str, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{addr}/verify"))
        .bearer_auth(key)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_converges_after_sigkill_at_random_moments() {
    let seed = seed();
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
    let seen = watch_deliveries(client.clone());

    let apikeys: Api<ApiKey> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let pools: Api<ApiKeyPool> = Api::namespaced(client.clone(), NS);
    let apply = PatchParams::apply("crash");

    let mut op = operator(&kubeconfig);
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
        op = operator(&kubeconfig);
    }

    // Convergence: every ApiKey Ready on its generation with its last rotate request acted
    // on; the pool full again.
    for i in 0..KEYS {
        let want = requested.get(&name(i)).cloned();
        eventually(&format!("{ctx}: {} converged", name(i)), || {
            let apikeys = apikeys.clone();
            let want = want.clone();
            async move {
                let ak = apikeys.get(&name(i)).await.ok()?;
                let v = serde_json::to_value(&ak).ok()?;
                let ready = v["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                let generation = v["metadata"]["generation"] == v["status"]["observedGeneration"];
                let rotated = want.is_none_or(|w| v["status"]["lastRotationRequest"] == w.as_str());
                (ready && generation && rotated).then_some(())
            }
        })
        .await;
    }
    eventually(&format!("{ctx}: the pool refilled"), || async {
        let p = pools.get("p").await.ok()?;
        let v = serde_json::to_value(&p).ok()?;
        (v["status"]["available"] == POOL_SIZE).then_some(())
    })
    .await;

    // The verifier, started now, reads the records as the operator left them.
    let mut verifier = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--log-format", "json", "verifier", "--addr", "127.0.0.1:0"])
        .args(["--hash-namespace", HASH_NS])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyward verifier starts");
    let addr = {
        use std::io::BufRead;
        let stderr = verifier.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && let Some(a) = v["fields"]["addr"].as_str()
                {
                    let _ = tx.send(a.to_string());
                }
            }
        });
        tokio::task::block_in_place(|| rx.recv_timeout(common::PATIENCE)).expect("address")
    };

    let mut all_fingerprints: BTreeMap<String, String> = BTreeMap::new();
    let seen = seen.lock().expect("lock").clone();
    for i in 0..KEYS {
        let n = name(i);
        let ak = apikeys.get(&n).await.expect("ApiKey");
        let status = serde_json::to_value(&ak.status).expect("status");
        let secret_name = status["secretName"]
            .as_str()
            .expect("secretName")
            .to_string();
        let secret = secrets.get(&secret_name).await.expect("workload Secret");
        let key = secret
            .data
            .as_ref()
            .and_then(|d| d.get("api-key"))
            .map(|b| String::from_utf8_lossy(&b.0).to_string())
            .expect("a delivered key");
        let current = fingerprint(&key);
        assert_eq!(
            status["fingerprint"], current,
            "{ctx}: {n}'s status names the delivered key"
        );
        // 1. The delivered key verifies.
        let code = eventually(&format!("{ctx}: {n} verifies"), || async {
            let c = verify(&addr, &key).await;
            (c == 200).then_some(c)
        })
        .await;
        assert_eq!(code, 200);
        // 2. Every fingerprint ever delivered is in the history (or current); one Rotated
        // entry per rotation.
        let history: Vec<Value> = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("keyward.dev/history"))
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or_default();
        let recorded: BTreeSet<&str> = history
            .iter()
            .filter_map(|e| e["fingerprint"].as_str())
            .collect();
        let delivered = seen.get(&secret_name).cloned().unwrap_or_default();
        assert!(
            delivered.contains(&current),
            "{ctx}: the watch saw {n}'s current key delivered"
        );
        for f in &delivered {
            assert!(
                recorded.contains(f.as_str()) || *f == current,
                "{ctx}: {n} delivered {f} but its history lacks it: {history:#?}"
            );
        }
        let rotated = history.iter().filter(|e| e["action"] == "Rotated").count() as u64;
        assert_eq!(
            Some(rotated),
            status["rotationCount"].as_u64(),
            "{ctx}: {n}: one Rotated entry per rotation"
        );
        // 3. No key issued twice, across all keys.
        for f in &recorded {
            if let Some(other) = all_fingerprints.insert(f.to_string(), n.clone()) {
                panic!("{ctx}: fingerprint {f} issued to {other} and {n}");
            }
        }
    }
    // 4. Every hash record has a live owner.
    let records: Api<Secret> = Api::namespaced(client.clone(), HASH_NS);
    let owners: BTreeSet<String> = apikeys
        .list(&ListParams::default())
        .await
        .expect("ApiKeys")
        .items
        .iter()
        .filter_map(|k| k.metadata.name.clone())
        .collect();
    for r in records
        .list(&ListParams::default().labels("keyward.dev/role=hash"))
        .await
        .expect("records")
        .items
    {
        let labels = r.metadata.labels.clone().unwrap_or_default();
        let live = match (
            labels.get("keyward.dev/apikey"),
            labels.get("keyward.dev/pool"),
        ) {
            (Some(a), _) => owners.contains(a),
            (None, Some(p)) => p == "p",
            _ => false,
        };
        assert!(
            live,
            "{ctx}: hash record {:?} has no live owner: {labels:?}",
            r.metadata.name
        );
    }
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
