//! What the crash and fault suites share: a seeded schedule, a watch of every key delivered,
//! the real operator and verifier binaries, and the invariants checked after convergence
//! (DESIGN §4): every ApiKey Ready with its delivered key verifying, every delivered
//! fingerprint in its history with one `Rotated` entry per rotation, no key issued twice,
//! and every hash record with a live owner.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use keyward::crd::ApiKey;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;

use super::eventually;

/// The run's seed: `KEYWARD_<SUITE>_SEED` when set (to replay a failure), else the clock.
pub fn seed(variable: &str) -> u64 {
    std::env::var(variable)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// splitmix64: a seeded, reproducible schedule without another dependency.
pub struct Schedule(pub u64);

impl Schedule {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

pub fn fingerprint(key: &str) -> String {
    keyward::keys::fingerprint(&keyward::keys::PlainKey::new(key))
}

/// Every fingerprint seen in each Secret of a namespace (by Secret name), from a watch that
/// runs until the test ends.
pub type Seen = Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>;

pub fn watch_deliveries(client: kube::Client, namespace: &str) -> Seen {
    let seen: Seen = Arc::default();
    let out = seen.clone();
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    tokio::spawn(async move {
        let mut events = watcher(secrets, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            let s = match event {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => s,
                _ => continue,
            };
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
    });
    seen
}

/// `keyward run` with `kubeconfig`, serving metrics on an ephemeral port.
pub fn operator(kubeconfig: &Path, hash_namespace: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "run",
            "--hash-namespace",
            hash_namespace,
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log_file("operator"))
        .spawn()
        .expect("keyward run starts")
}

/// Where a process's log goes: a new file in `KEYWARD_SUITE_LOG_DIR` when it is set (to
/// look into a failure), else nowhere.
fn log_file(what: &str) -> Stdio {
    let Ok(dir) = std::env::var("KEYWARD_SUITE_LOG_DIR") else {
        return Stdio::null();
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::fs::File::create(Path::new(&dir).join(format!("{what}-{stamp}.log")))
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

pub fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `keyward verifier` on an ephemeral port; the child and its address.
pub fn verifier(kubeconfig: &Path, hash_namespace: &str) -> (Child, String) {
    serving(
        kubeconfig,
        &[
            "verifier",
            "--addr",
            "127.0.0.1:0",
            "--hash-namespace",
            hash_namespace,
        ],
    )
}

/// `keyward --log-format json ARGS` with `kubeconfig`, and the address it logs it serves.
pub fn serving(kubeconfig: &Path, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--log-format", "json"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyward starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    // Keep reading for the process's whole life; hand over the first address.
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
    let addr = tokio::task::block_in_place(|| rx.recv_timeout(super::PATIENCE))
        .expect("keyward logs the address it serves");
    (child, addr)
}

pub async fn verify(addr: &str, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{addr}/verify"))
        .bearer_auth(key)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Waits until every ApiKey in `names` is Ready on its generation and has acted on the
/// rotate request `requested` names for it, if any.
pub async fn wait_converged(
    ctx: &str,
    apikeys: &Api<ApiKey>,
    names: &[String],
    requested: &BTreeMap<String, String>,
) {
    for n in names {
        let want = requested.get(n).cloned();
        let deadline = std::time::Instant::now() + super::PATIENCE;
        let mut last = Value::Null;
        loop {
            if let Ok(ak) = apikeys.get(n).await {
                let v = serde_json::to_value(&ak).unwrap_or_default();
                let ready = v["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                let generation = v["metadata"]["generation"] == v["status"]["observedGeneration"];
                let rotated = want
                    .as_ref()
                    .is_none_or(|w| v["status"]["lastRotationRequest"] == w.as_str());
                if ready && generation && rotated {
                    break;
                }
                last = v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{ctx}: {n} never converged (want rotate request {want:?}); last seen: {:#}",
                json_status(&last)
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// An ApiKey's generation, annotations and status, for failure messages.
fn json_status(v: &Value) -> Value {
    serde_json::json!({
        "generation": v["metadata"]["generation"],
        "annotations": v["metadata"]["annotations"],
        "status": v["status"],
    })
}

/// The DESIGN §4 invariants over `names` (ApiKeys of `apikeys`' namespace), with the verifier
/// at `addr` and the deliveries `seen`; returns the number of keys issued (current or in a
/// history), for per-key figures. `ShowOnce` keys whose window closed are checked by their
/// status and history, their Secret no longer holding the key.
pub async fn check_invariants(
    ctx: &str,
    client: &kube::Client,
    namespace: &str,
    hash_namespace: &str,
    names: &[String],
    seen: &Seen,
    addr: &str,
) -> usize {
    let apikeys: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let seen = seen.lock().expect("lock").clone();
    let mut owner_of: BTreeMap<String, String> = BTreeMap::new();
    for n in names {
        let ak = apikeys.get(n).await.expect("ApiKey");
        let status = serde_json::to_value(&ak.status).expect("status");
        let current = status["fingerprint"]
            .as_str()
            .expect("a current fingerprint")
            .to_string();
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
            .filter(|k| !k.is_empty());
        if let Some(key) = &key {
            assert_eq!(
                fingerprint(key),
                current,
                "{ctx}: {n}'s status names the delivered key"
            );
            // 1. The delivered key verifies.
            eventually(&format!("{ctx}: {n} verifies"), || async {
                (verify(addr, key).await == 200).then_some(())
            })
            .await;
        }
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
        for f in recorded.iter().copied().chain([current.as_str()]) {
            if let Some(other) = owner_of.insert(f.to_string(), n.clone())
                && other != *n
            {
                panic!("{ctx}: fingerprint {f} issued to {other} and {n}");
            }
        }
    }
    // 4. Every hash record has a live owner.
    let owners: BTreeSet<String> = apikeys
        .list(&ListParams::default())
        .await
        .expect("ApiKeys")
        .items
        .iter()
        .filter_map(|k| k.metadata.name.clone())
        .collect();
    let pools: BTreeSet<String> =
        Api::<keyward::crd::ApiKeyPool>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .expect("pools")
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
    let records: Api<Secret> = Api::namespaced(client.clone(), hash_namespace);
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
            (None, Some(p)) => pools.contains(p),
            _ => false,
        };
        assert!(
            live,
            "{ctx}: hash record {:?} has no live owner: {labels:?}",
            r.metadata.name
        );
    }
    owner_of.len()
}
