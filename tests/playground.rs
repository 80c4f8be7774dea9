//! `keyward playground` as a user runs it: flags, summary, kubeconfig, clean exit.

mod common;

use common::{Playground, root};

#[test]
fn starts_applies_summarises_and_exits_cleanly_on_sigterm() {
    let mut pg = Playground::start(Some(&root().join("examples")));
    let out = pg.stdout.join("\n");
    assert!(out.contains("keyward playground is running"), "{out}");
    assert!(
        out.contains(&format!("kubeconfig:      {}", pg.kubeconfig.display())),
        "{out}"
    );
    assert!(out.contains("Applied"), "{out}");
    for name in [
        "default/billing-api",
        "default/signup-tokens",
        "default/openai-prod",
    ] {
        assert!(out.contains(name), "summary names {name}: {out}");
    }
    // Pools are reconciled: full, or saying why not.
    let line = |name: &str| {
        out.lines()
            .find(|l| l.contains(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("default/signup-tokens").contains("Ready=True KeysAvailable  20/20 keys available"),
        "{out}"
    );
    assert!(
        line("default/stability-keys").contains("Ready=False GeneratorFailing")
            && line("default/stability-keys").contains("keygen-auth"),
        "{out}"
    );
    // Credentials get a verdict without any request leaving the machine.
    assert!(
        line("default/openai-prod")
            .contains("NotConfigured (SecretNotFound): Secret default/openai-key not found"),
        "{out}"
    );
    assert!(
        line("default/inhouse-llm").contains("NotConfigured (HostNotAllowed)"),
        "{out}"
    );
    // What to try next, ready to paste: the export, keyward, and a key verified by
    // piping it from its Secret (the banner never prints a key).
    let export = format!(
        "export KUBECONFIG={}",
        std::fs::canonicalize(&pg.kubeconfig)
            .expect("kubeconfig")
            .display()
    );
    assert!(out.contains(&export), "{out}");
    assert!(out.contains("keyward status"), "{out}");
    assert!(
        out.contains("kubectl get secret billing-api -o jsonpath='{.data.api-key}' | base64 -d | keyward verify --url http://"),
        "{out}"
    );
    assert!(out.contains("| curl -s -d @- http://"), "{out}");
    assert!(out.contains("keyward history billing-api"), "{out}");
    assert!(pg.url.starts_with("http://127.0.0.1:"), "{}", pg.url);
    let kubeconfig = std::fs::read_to_string(&pg.kubeconfig).expect("kubeconfig written");
    assert!(kubeconfig.contains(&pg.url), "{kubeconfig}");
    assert!(
        pg.ok(&["get", "apikeys", "-o", "name"])
            .contains("apikey.keyward.dev/billing-api")
    );
    // The verifier answers for the keys the playground issued.
    let verifier = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("verifier:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|url| url.strip_prefix("http://"))
        .expect("the playground prints its verifier address")
        .to_string();
    let key = pg.ok(&[
        "get",
        "secret",
        "billing-api",
        "-o",
        "jsonpath={.data.api-key}",
    ]);
    let key = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key.trim())
            .expect("base64"),
    )
    .expect("utf-8");
    let answer = common::eventually_blocking("the verifier to accept the example key", || {
        let (code, headers, _) = common::http(
            &verifier,
            "GET",
            "/verify",
            &[("Authorization", &format!("Bearer {key}"))],
            "",
        );
        (code == 200).then(|| headers.get("x-keyward-key").cloned())
    });
    assert_eq!(answer.as_deref(), Some("default/billing-api"));
    let status = pg.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn a_bad_apply_folder_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("bad.yaml"), "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata:\n  name: x\nspec:\n  format:\n    length: 3\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args([
            "playground",
            "--verifier-addr",
            "127.0.0.1:0",
            "--kubeconfig",
        ])
        .arg(dir.path().join("kc"))
        .arg("--apply")
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("fewer than 128 random bits"),
        "{err}"
    );
}

#[test]
fn an_address_in_use_names_the_flag_that_moves_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("dir");
    for (flag, other) in [("--verifier-addr", "--addr"), ("--addr", "--verifier-addr")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("playground")
            .args([flag, &port, other, "127.0.0.1:0", "--kubeconfig"])
            .arg(dir.path().join("kc"))
            .output()
            .expect("runs");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("choose another address with {flag}")),
            "{flag}: {err}"
        );
    }
}

#[test]
fn no_cluster_configured_is_one_line_saying_what_to_do() {
    let home = tempfile::tempdir().expect("home");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("status")
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", home.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("keyward: no cluster configured")
            && err.contains("keyward playground")
            && err.contains("--kubeconfig"),
        "{err}"
    );
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["completion", shell])
            .output()
            .expect("runs");
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for sub in ["playground", "rotate", "history", "verify"] {
            assert!(script.contains(sub), "{shell} completes {sub}");
        }
    }
}

#[test]
fn a_signal_right_after_readiness_still_stops_cleanly() {
    for _ in 0..3 {
        let mut pg = Playground::start(None);
        let status = pg.terminate();
        assert!(status.success(), "exit status {status:?}");
    }
}

/// The verifier's address, as the playground prints it.
fn verifier_addr(pg: &Playground) -> String {
    pg.stdout
        .iter()
        .find_map(|l| l.trim().strip_prefix("verifier:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|url| url.strip_prefix("http://"))
        .expect("the playground prints its verifier address")
        .to_string()
}

#[test]
fn idle_and_trickling_connections_leave_the_verifier_and_kubectl_working() {
    use std::io::Write;
    // Room for 5 200 client sockets here and the default limit (4096) in the playground.
    rlimit::increase_nofile_limit(16_384).expect("open-file limit");
    let pg = Playground::start(None);
    let verifier = verifier_addr(&pg);
    let manifest = pg.file(
        "key.yaml",
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata:\n  name: held\n  namespace: default\nspec: {}\n",
    );
    pg.ok(&["apply", "--server-side", "-f", &manifest]);
    let key = common::eventually_blocking("the key to be issued", || {
        let out = pg.kubectl(&["get", "secret", "held", "-o", "jsonpath={.data.api-key}"]);
        let b64 = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !b64.is_empty()).then(|| {
            String::from_utf8(
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
                    .expect("base64"),
            )
            .expect("utf-8")
        })
    });
    let bearer = format!("Bearer {key}");
    common::eventually_blocking("the verifier to know the key", || {
        let (code, _, _) = common::http(
            &verifier,
            "GET",
            "/verify",
            &[("Authorization", &bearer)],
            "",
        );
        (code == 200).then_some(())
    });
    // 5 000 connections that send nothing (opened side by side: a connect here sometimes
    // waits a second for the kernel's SYN retransmission, whatever server listens).
    let openers: Vec<_> = (0..20)
        .map(|_| {
            let verifier = verifier.clone();
            std::thread::spawn(move || {
                (0..250)
                    .map(|_| std::net::TcpStream::connect(&verifier).expect("connects"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let idle: Vec<std::net::TcpStream> = openers
        .into_iter()
        .flat_map(|t| t.join().expect("opener"))
        .collect();
    // 200 clients trickling a request head, a byte a second.
    let mut trickling: Vec<std::net::TcpStream> = (0..200)
        .map(|_| std::net::TcpStream::connect(&verifier).expect("connects"))
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let head = b"GET /verify HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            let mut at = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let byte = [head.get(at).copied().unwrap_or(b'a')];
                for s in trickling.iter_mut() {
                    let _ = s.write_all(&byte);
                }
                at += 1;
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        })
    };
    // A new client with a valid key is answered, within 5 s.
    let asked = std::time::Instant::now();
    let (code, headers, _) = common::http(
        &verifier,
        "GET",
        "/verify",
        &[("Authorization", &bearer)],
        "",
    );
    let waited = asked.elapsed();
    assert_eq!(code, 200);
    assert_eq!(
        headers.get("x-keyward-key").map(String::as_str),
        Some("default/held")
    );
    assert!(
        waited < std::time::Duration::from_secs(5),
        "answered after {waited:?}"
    );
    // The playground's API server still answers kubectl.
    assert!(
        pg.ok(&["get", "apikeys", "-o", "name"])
            .contains("apikey.keyward.dev/held")
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    trickler.join().expect("trickler");
    drop(idle);
}
