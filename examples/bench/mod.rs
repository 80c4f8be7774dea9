//! What the benchmarks share: the release `keyward` binary run as a separate process
//! against an emulator, its RSS, CPU and metrics, and the argon2 bound.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use keyward_emulator::Emulator;
use kube::api::{Api, PostParams};
use serde_json::json;

pub const HASH_NS: &str = "keyward-system";

/// The `keyward run` child, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Operator {
    pub child: Child,
    pub metrics: String,
}

impl Operator {
    pub fn rss_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }

    pub fn metric_sum(&self, name: &str) -> f64 {
        let text = http_get(&self.metrics, "/metrics");
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU seconds of the process whose `stat` file this is.
pub fn cpu_seconds(stat: &str) -> f64 {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Builds the release `keyward` binary next to this example and returns its path.
pub fn keyward_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--bin", "keyward"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building keyward failed");
    let exe = std::env::current_exe().expect("own path");
    exe.parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("keyward"))
        .expect("target/<profile>/keyward")
}

/// N argon2id hashes at keyward's parameters on every core, timed.
pub fn argon2_bound(n: usize) -> f64 {
    let cores = keyward::hashing::default_workers();
    let pool = keyward::hashing::HashPool::new(cores);
    let caller = pool.caller("bench", n.max(1));
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..n {
        let tx = tx.clone();
        let key = keyward::keys::PlainKey::new(format!("kw_bound_{i:08}_0123456789abcdefghij"));
        let caller = caller.clone();
        std::thread::spawn(move || {
            let r = caller.run_blocking(move || {
                keyward::keys::argon2_hash(&key, &keyward::keys::Argon2Params::default())
            });
            let _ = tx.send(r.is_ok());
        });
        // Queue in batches so this does not start N threads at once.
        if i % 64 == 63 {
            while pool.stats().queued > 32 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    drop(tx);
    let done = rx.iter().filter(|ok| *ok).count();
    assert_eq!(done, n);
    started.elapsed().as_secs_f64()
}

pub fn kubectl() -> PathBuf {
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/kubectl");
    if tools.exists() {
        tools
    } else {
        PathBuf::from("kubectl")
    }
}

/// An emulator with keyward's CRDs and hash namespace, and `keyward run` (the release
/// `binary`, with `extra` flags) started against it: returned once it has created its
/// pepper. `dir` holds the kubeconfig and keyward's log.
pub async fn start(
    binary: &std::path::Path,
    dir: &std::path::Path,
    extra: &[String],
) -> (Emulator, kube::Client, Operator) {
    let emulator = Emulator::start().await.expect("emulator");
    let client = emulator.client();
    keyward::cli::install_crds(&client).await.expect("CRDs");
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": HASH_NS}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("hash namespace");
    let kubeconfig = dir.join("kubeconfig");
    emulator.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let op = spawn(
        binary,
        dir,
        "keyward",
        &[
            "run",
            "--hash-namespace",
            HASH_NS,
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        extra,
    );
    // Started: it has listed and created its pepper.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), HASH_NS);
    while secrets
        .get_opt(keyward::controller::PEPPER_SECRET)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (emulator, client, op)
}

/// Runs `binary` with the kubeconfig in `dir`, JSON logs, `command` and `extra`; returns
/// once it has logged the first address it serves (the `Operator`'s `metrics` field).
/// Its log goes to `dir/<name>.log`.
pub fn spawn(
    binary: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    command: &[&str],
    extra: &[String],
) -> Operator {
    // KEYWARD_BENCH_WRAP="heaptrack -o /tmp/kw" runs keyward under a profiler (the RSS
    // figures are then the wrapper's).
    let wrap = std::env::var("KEYWARD_BENCH_WRAP").unwrap_or_default();
    spawn_wrapped(binary, dir, name, command, extra, &wrap)
}

/// [`spawn`] under `wrap` (a command line prefix such as `taskset -c 0`; empty for none).
pub fn spawn_wrapped(
    binary: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    command: &[&str],
    extra: &[String],
    wrap: &str,
) -> Operator {
    let kubeconfig = dir.join("kubeconfig");
    let mut words = wrap.split_whitespace();
    let mut cmd = match words.next() {
        Some(tool) => {
            let mut c = Command::new(tool);
            c.args(words).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    cmd.arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--log-format", "json"])
        .args(command)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.args(extra);
    let mut child = cmd.spawn().expect("keyward starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let log_path = dir.join(format!("{name}.log"));
    eprintln!("bench: keyward's log: {}", log_path.display());
    let mut log = std::fs::File::create(&log_path).expect("log file");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(addr) = v["fields"]["addr"].as_str()
            {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let metrics = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("keyward logs the address it serves");
    Operator { child, metrics }
}

/// The path of the kubeconfig [`start`] wrote into `dir`.
pub fn kubeconfig(dir: &std::path::Path) -> PathBuf {
    dir.join("kubeconfig")
}

/// The benchmark's `--NAME N` flags: each known flag with its default (`None`: unset). An
/// unknown flag or a missing number stops the benchmark, listing the known ones.
pub fn numeric_flags<const N: usize>(known: [(&str, Option<u64>); N]) -> [Option<u64>; N] {
    let mut values = known.map(|(_, default)| default);
    let names: Vec<&str> = known.iter().map(|(name, _)| *name).collect();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(i) = names.iter().position(|n| *n == flag) else {
            panic!("unknown flag {flag} ({})", names.join(", "));
        };
        let value = it
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"));
        values[i] = Some(value);
    }
    values
}

/// Server-side applies an ApiKey `name` with `spec` in the default namespace.
pub async fn apply_apikey(client: &kube::Client, name: &str, spec: serde_json::Value) {
    let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": name}, "spec": spec});
    Api::<keyward::crd::ApiKey>::default_namespaced(client.clone())
        .patch(
            name,
            &kube::api::PatchParams::apply("bench"),
            &kube::api::Patch::Apply(&body),
        )
        .await
        .expect("ApiKey applied");
}

/// The key in Secret `name` (data `api-key`), once it is there and differs from `not`.
pub async fn key_in(client: &kube::Client, name: &str, not: Option<&str>) -> String {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::default_namespaced(client.clone());
    let started = Instant::now();
    loop {
        if let Ok(Some(s)) = secrets.get_opt(name).await
            && let Some(k) = s.data.as_ref().and_then(|d| d.get("api-key"))
        {
            let k = String::from_utf8_lossy(&k.0).into_owned();
            if Some(k.as_str()) != not {
                return k;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no key in Secret {name}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops `op`, deletes the pepper Secret and starts `keyward run` again: it makes a new
/// pepper and re-keys every current key, but previous keys cannot be re-keyed, so their
/// records are left under a pepper nobody has (argon2 territory).
pub async fn restart_without_pepper(
    binary: &std::path::Path,
    dir: &std::path::Path,
    client: &kube::Client,
    op: Operator,
) -> Operator {
    drop(op);
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), HASH_NS)
        .delete(
            keyward::controller::PEPPER_SECRET,
            &kube::api::DeleteParams::default(),
        )
        .await
        .expect("pepper deleted");
    spawn(
        binary,
        dir,
        "keyward-run-2",
        &[
            "run",
            "--hash-namespace",
            HASH_NS,
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &[],
    )
}
