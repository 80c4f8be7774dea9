//! The pool benchmark: ApiKeyPools against the real `keyward run` binary (a separate
//! process) on the emulator; prints figures, the last line one JSON object.
//!
//!     cargo run --release --example pool
//!     cargo run --release --example pool -- --fill 1000 --takes 200 --big 10000
//!
//! Figures: seconds to fill a pool of `--fill` keys from empty with `verification` on
//! (beside the argon2 bound of as many hashes on every core, measured in the same run) and
//! off; peak RSS of `keyward run` during the fills; take → replacement available (the new
//! key Secret seen by a watch), median and p99 over `--takes` sequential takes from a pool
//! of 20 with verification; and the bytes one `keyward pool take` process exchanges with
//! the API server on a pool of `--big` keys, through a counting proxy, with how many key
//! values its answers carried (1: only the taken key's).

mod bench;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bench::{argon2_bound, keyward_binary};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use keyward::crd::ApiKeyPool;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

struct Args {
    fill: usize,
    takes: usize,
    big: usize,
}

fn args() -> Args {
    let [fill, takes, big] = bench::numeric_flags([
        ("--fill", Some(1000)),
        ("--takes", Some(200)),
        ("--big", Some(10_000)),
    ]);
    Args {
        fill: fill.unwrap_or(1000) as usize,
        takes: takes.unwrap_or(200) as usize,
        big: big.unwrap_or(10_000) as usize,
    }
}

/// Set once the figures are taken: the watches may end quietly.
static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The names of a pool's key Secrets, kept current by a watch.
fn key_names(client: &kube::Client, pool: &str) -> watch::Receiver<BTreeSet<String>> {
    let api: Api<PartialObjectMeta<Secret>> = Api::default_namespaced(client.clone());
    let config = watcher::Config::default().labels(&format!("keyward.dev/pool={pool}"));
    let (tx, rx) = watch::channel(BTreeSet::new());
    tokio::spawn(async move {
        let mut names = BTreeSet::new();
        let mut listing = BTreeSet::new();
        let mut events = std::pin::pin!(watcher(api, config));
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(m)) => {
                    names.insert(m.metadata.name.unwrap_or_default());
                }
                Ok(watcher::Event::Delete(m)) => {
                    names.remove(&m.metadata.name.unwrap_or_default());
                }
                Ok(watcher::Event::Init) => listing.clear(),
                Ok(watcher::Event::InitApply(m)) => {
                    listing.insert(m.metadata.name.unwrap_or_default());
                }
                Ok(watcher::Event::InitDone) => names = std::mem::take(&mut listing),
                Err(_) if DONE.load(std::sync::atomic::Ordering::SeqCst) => return,
                Err(e) => eprintln!("pool bench: watch error (retrying): {e}"),
            }
            if tx.send(names.clone()).is_err() {
                return;
            }
        }
    });
    rx
}

async fn apply_pool(client: &kube::Client, name: &str, spec: serde_json::Value) {
    let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPool",
        "metadata": {"name": name}, "spec": spec});
    Api::<ApiKeyPool>::default_namespaced(client.clone())
        .patch(name, &PatchParams::apply("bench"), &Patch::Apply(&body))
        .await
        .expect("pool applied");
}

/// Waits until `names` satisfies `done`, reporting every 10 s.
async fn wait_for(
    names: &mut watch::Receiver<BTreeSet<String>>,
    what: &str,
    done: impl Fn(&BTreeSet<String>) -> bool,
) {
    let started = Instant::now();
    loop {
        if done(&names.borrow_and_update()) {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(10), names.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("the watch of {what} ended"),
            Err(_) => {
                let n = names.borrow().len();
                eprintln!(
                    "pool bench: {what}: {n} keys after {:.0}s",
                    started.elapsed().as_secs_f64()
                );
                assert!(
                    started.elapsed() < Duration::from_secs(3600),
                    "{what}: not done after an hour"
                );
            }
        }
    }
}

/// Seconds from applying a pool of `size` until all its key Secrets exist.
async fn fill(client: &kube::Client, name: &str, size: usize, verification: bool) -> f64 {
    let mut names = key_names(client, name);
    let started = Instant::now();
    apply_pool(
        client,
        name,
        json!({"size": size, "verification": verification}),
    )
    .await;
    wait_for(&mut names, name, |n| n.len() >= size).await;
    started.elapsed().as_secs_f64()
}

async fn delete_pool(client: &kube::Client, name: &str) {
    let mut names = key_names(client, name);
    Api::<ApiKeyPool>::default_namespaced(client.clone())
        .delete(name, &DeleteParams::default())
        .await
        .expect("pool deleted");
    wait_for(&mut names, &format!("{name} deleted"), |n| n.is_empty()).await;
}

/// A TCP proxy in front of `upstream` that counts bytes each way and keeps what came back.
struct Proxy {
    addr: std::net::SocketAddr,
    up: Arc<Mutex<u64>>,
    down: Arc<Mutex<Vec<u8>>>,
}

async fn proxy(upstream: std::net::SocketAddr) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let p = Proxy {
        addr: listener.local_addr().expect("addr"),
        up: Arc::default(),
        down: Arc::default(),
    };
    let (up, down) = (p.up.clone(), p.down.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let up = up.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    *up.lock().expect("lock") += n as u64;
                }
                let _ = sw.shutdown().await;
            });
            let down = down.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    down.lock().expect("lock").extend_from_slice(&buf[..n]);
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    p
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = args();
    eprintln!("pool bench: building keyward (release)");
    let binary = keyward_binary();
    let n = args.fill;
    eprintln!("pool bench: measuring the argon2 bound ({n} hashes on every core)");
    let bound = tokio::task::spawn_blocking(move || argon2_bound(n))
        .await
        .expect("bound");
    eprintln!("pool bench: argon2 bound {bound:.2}s");
    let dir = tempfile::tempdir().expect("temp dir");
    let (emulator, client, op) = bench::start(&binary, dir.path(), &[]).await;
    let rss_start = op.rss_kb("VmRSS:");

    eprintln!("pool bench: filling {n} keys with verification");
    let fill_verified = fill(&client, "fill-verified", n, true).await;
    eprintln!("pool bench: filled in {fill_verified:.2}s");
    eprintln!("pool bench: filling {n} keys without verification");
    let fill_plain = fill(&client, "fill-plain", n, false).await;
    eprintln!("pool bench: filled in {fill_plain:.2}s");
    let rss_peak_fills = op.rss_kb("VmHWM:");
    delete_pool(&client, "fill-verified").await;
    delete_pool(&client, "fill-plain").await;

    eprintln!(
        "pool bench: {} takes, each waiting for its replacement",
        args.takes
    );
    let size = 20;
    let mut names = key_names(&client, "takes");
    apply_pool(
        &client,
        "takes",
        json!({"size": size, "verification": true}),
    )
    .await;
    wait_for(&mut names, "takes", |n| n.len() >= size).await;
    let mut latencies = Vec::with_capacity(args.takes);
    for _ in 0..args.takes {
        let before = names.borrow().clone();
        keyward::cli::pool::take(&client, "default", "takes")
            .await
            .expect("take");
        let taken_at = Instant::now();
        wait_for(&mut names, "replacement", |n| {
            n.len() >= size && n.iter().any(|name| !before.contains(name))
        })
        .await;
        latencies.push(taken_at.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let (median, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    eprintln!("pool bench: take → replacement median {median:.1} ms, p99 {p99:.1} ms");

    eprintln!(
        "pool bench: a pool of {} keys for one take's bytes",
        args.big
    );
    let fill_big = fill(&client, "big", args.big, false).await;
    eprintln!("pool bench: {} keys in {fill_big:.1}s", args.big);
    let p = proxy(emulator.addr()).await;
    let kubeconfig = dir.path().join("proxied-kubeconfig");
    std::fs::write(
        &kubeconfig,
        emulator
            .kubeconfig_yaml("default")
            .replace(&emulator.url(), &format!("http://{}", p.addr)),
    )
    .expect("kubeconfig");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&binary)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["pool", "take", "big"])
            .output()
            .expect("keyward pool take runs")
    })
    .await
    .expect("take");
    assert!(
        out.status.success(),
        "take failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let take_up = *p.up.lock().expect("lock");
    let down = p.down.lock().expect("lock").clone();
    let key_values = down.windows(9).filter(|w| w == b"\"api-key\"").count();

    let mb = |kb: u64| (kb as f64 / 1024.0 * 10.0).round() / 10.0;
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let report = json!({
        "fill_keys": n,
        "fill_seconds_verification": r2(fill_verified),
        "argon2_bound_seconds": r2(bound),
        "fill_ratio_to_bound": r2(fill_verified / bound),
        "fill_seconds_no_verification": r2(fill_plain),
        "rss_mb_start": mb(rss_start),
        "rss_mb_peak_during_fills": mb(rss_peak_fills),
        "takes": args.takes,
        "take_to_replacement_ms_median": r2(median),
        "take_to_replacement_ms_p99": r2(p99),
        "big_pool_keys": args.big,
        "take_bytes_sent": take_up,
        "take_bytes_received": down.len(),
        "take_key_values_received": key_values,
        "rss_mb_peak": mb(op.rss_kb("VmHWM:")),
    });
    DONE.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(op);
    emulator.shutdown().await;
    println!("{report}");
}
