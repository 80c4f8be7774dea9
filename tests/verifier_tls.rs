//! The verifier over TLS (DESIGN §6): every answer code with its status and headers, the
//! pair replaced by rename and by Kubernetes' `..data` symlink swap and picked up without a
//! restart, a broken new pair leaving the old one serving, and `keyward verify --ca-file`.

mod common;

use std::path::{Path, PathBuf};

use common::operator::Operator;
use serde_json::json;

/// A CA and a server certificate for 127.0.0.1/localhost signed by it: (CA PEM, cert PEM,
/// key PEM).
fn pair(name: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca = ca.self_signed(&ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("params")
            .signed_by(&key, &ca, &ca_key)
            .expect("leaf");
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

/// A client trusting only `ca`.
fn client(ca: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA"))
        .tls_built_in_root_certs(false)
        .build()
        .expect("client")
}

/// Status, headers and body of `GET /verify` with `key` (or none).
async fn verify(
    client: &reqwest::Client,
    addr: &str,
    key: Option<&str>,
) -> Result<(u16, reqwest::header::HeaderMap, String), reqwest::Error> {
    let mut request = client.get(format!("https://127.0.0.1:{}/verify", port(addr)));
    if let Some(k) = key {
        request = request.bearer_auth(k);
    }
    let r = request.send().await?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    Ok((status, headers, r.text().await.unwrap_or_default()))
}

fn port(addr: &str) -> &str {
    addr.rsplit(':').next().expect("port")
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Writes the pair the way Kubernetes mounts a Secret: `tls.crt` → `..data/tls.crt`,
/// `..data` → a timestamped directory, replaced by renaming a new symlink over it.
fn mount(dir: &Path, generation: u32, cert: &str, key: &str) {
    let target = dir.join(format!("..2026_11_30_{generation}"));
    std::fs::create_dir(&target).expect("data dir");
    std::fs::write(target.join("tls.crt"), cert).expect("cert");
    std::fs::write(target.join("tls.key"), key).expect("key");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target.file_name().expect("name"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for file in ["tls.crt", "tls.key"] {
        let link = dir.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(file), &link).expect("link");
        }
    }
}

async fn start(op: &Operator, cert: PathBuf, key: PathBuf) -> keyward::verifier::Running {
    let options = keyward::verifier::Options {
        rate_limited_status: 429,
        hash_pool: Some(op.context().hash_pool.clone()),
        tls: Some(keyward::verifier::tls::TlsFiles { cert, key }),
        ..Default::default()
    };
    common::operator::verifier_with(op, options).await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_code_over_tls_and_through_certificate_swaps() {
    let op = Operator::start().await;
    op.apply("tls-ok", json!({"owner": "team-a", "scopes": ["read"]}))
        .await;
    op.apply("tls-off", json!({"disabled": true})).await;
    op.apply("tls-slow", json!({"rateLimit": {"requestsPerMinute": 1}}))
        .await;
    for name in ["tls-ok", "tls-slow"] {
        op.wait_ready(name).await;
    }
    op.wait_reason("tls-off", "Disabled").await;
    let ok = op.key_in("tls-ok", "api-key").await.expect("key");
    let off = op.key_in("tls-off", "api-key").await.expect("key");
    let slow = op.key_in("tls-slow", "api-key").await.expect("key");

    let dir = tempfile::tempdir().expect("dir");
    let (ca1, cert1, key1) = pair("first");
    mount(dir.path(), 1, &cert1, &key1);
    let running = start(&op, dir.path().join("tls.crt"), dir.path().join("tls.key")).await;
    let addr = running.addr.to_string();
    let tls = running.tls.clone().expect("serving TLS");

    // Every code, with its status and headers.
    let check_codes = |ca: String| {
        let (addr, ok, off, slow, ns) = (
            addr.clone(),
            ok.clone(),
            off.clone(),
            slow.clone(),
            op.namespace.clone(),
        );
        async move {
            let c = client(&ca);
            let (status, h, _) = common::eventually("the valid key over TLS", || async {
                verify(&c, &addr, Some(&ok))
                    .await
                    .ok()
                    .filter(|(s, _, _)| *s == 200)
            })
            .await;
            assert_eq!(status, 200);
            assert_eq!(header(&h, "x-keyward-code"), Some("VALID"));
            assert_eq!(
                header(&h, "x-keyward-key"),
                Some(format!("{ns}/tls-ok").as_str())
            );
            assert_eq!(header(&h, "x-keyward-owner"), Some("team-a"));
            assert_eq!(header(&h, "x-keyward-scopes"), Some("read"));
            let (status, h, _) = verify(&c, &addr, None).await.expect("answer");
            assert_eq!(
                (status, header(&h, "x-keyward-code")),
                (401, Some("MALFORMED"))
            );
            assert_eq!(header(&h, "www-authenticate"), Some("Bearer"));
            let stranger = keyward::keys::generate(&Default::default()).expect("key");
            let (status, h, _) = verify(&c, &addr, Some(stranger.expose()))
                .await
                .expect("answer");
            assert_eq!(
                (status, header(&h, "x-keyward-code")),
                (401, Some("NOT_FOUND"))
            );
            let (status, h, _) = verify(&c, &addr, Some(&off)).await.expect("answer");
            assert_eq!(
                (status, header(&h, "x-keyward-code")),
                (403, Some("DISABLED"))
            );
            // One request a minute: the second (or a later one) is limited.
            let (_, h) = common::eventually("a rate-limited answer", || async {
                let (s, h, _) = verify(&c, &addr, Some(&slow)).await.ok()?;
                (s == 429).then_some((s, h))
            })
            .await;
            assert_eq!(header(&h, "x-keyward-code"), Some("RATE_LIMITED"));
            assert!(header(&h, "retry-after").is_some());
            assert_eq!(header(&h, "x-ratelimit-limit"), Some("1"));
            // The JSON endpoint over TLS too.
            let answer: serde_json::Value = c
                .post(format!("https://127.0.0.1:{}/v1/keys/verify", port(&addr)))
                .json(&json!({"key": ok}))
                .send()
                .await
                .expect("answer")
                .json()
                .await
                .expect("json");
            assert_eq!(answer["code"], "VALID");
        }
    };
    check_codes(ca1.clone()).await;

    // Replaced by renaming new files over the old ones.
    let (ca2, cert2, key2) = pair("second");
    let flat = tempfile::tempdir().expect("dir");
    std::fs::write(flat.path().join("tls.crt"), &cert1).expect("cert");
    std::fs::write(flat.path().join("tls.key"), &key1).expect("key");
    let renamed = start(
        &op,
        flat.path().join("tls.crt"),
        flat.path().join("tls.key"),
    )
    .await;
    let renamed_addr = renamed.addr.to_string();
    std::fs::write(flat.path().join("tls.crt.new"), &cert2).expect("cert");
    std::fs::write(flat.path().join("tls.key.new"), &key2).expect("key");
    std::fs::rename(flat.path().join("tls.key.new"), flat.path().join("tls.key")).expect("rename");
    std::fs::rename(flat.path().join("tls.crt.new"), flat.path().join("tls.crt")).expect("rename");
    let c2 = client(&ca2);
    common::eventually("the renamed pair to serve", || async {
        verify(&c2, &renamed_addr, Some(&ok))
            .await
            .ok()
            .filter(|(s, _, _)| *s == 200)
    })
    .await;
    assert!(
        verify(&client(&ca1), &renamed_addr, Some(&ok))
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    renamed.stop();

    // Replaced by Kubernetes' symlink swap of a mounted Secret.
    let (ca3, cert3, key3) = pair("third");
    mount(dir.path(), 2, &cert3, &key3);
    let c3 = client(&ca3);
    common::eventually("the swapped pair to serve", || async {
        verify(&c3, &addr, Some(&ok))
            .await
            .ok()
            .filter(|(s, _, _)| *s == 200)
    })
    .await;
    assert!(tls.reloads() >= 1);
    check_codes(ca3.clone()).await;

    // A broken new pair: reported, and the old one keeps serving.
    let failures = tls.failures();
    mount(dir.path(), 3, "not a certificate", &key3);
    common::eventually("the broken pair to be reported", || {
        let n = tls.failures();
        async move { (n > failures).then_some(()) }
    })
    .await;
    let (status, _, _) = verify(&c3, &addr, Some(&ok)).await.expect("still served");
    assert_eq!(status, 200);
    // A key that does not match the certificate is broken too.
    let failures = tls.failures();
    let (_, _, other_key) = pair("fourth");
    mount(dir.path(), 4, &cert3, &other_key);
    common::eventually("the mismatched pair to be reported", || {
        let n = tls.failures();
        async move { (n > failures).then_some(()) }
    })
    .await;
    assert_eq!(
        verify(&c3, &addr, Some(&ok)).await.expect("still served").0,
        200
    );

    // keyward verify --url https://… --ca-file
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca3).expect("ca");
    let out = tokio::task::block_in_place(|| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args([
                "verify",
                "--url",
                &format!("https://127.0.0.1:{}", port(&addr)),
                "--ca-file",
            ])
            .arg(&ca_file)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ok.as_bytes())
            .expect("key");
        child.wait_with_output().expect("output")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("VALID"), "{stdout}");
    // Without the CA it refuses to trust the verifier.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args([
            "verify",
            &ok,
            "--url",
            &format!("https://127.0.0.1:{}", port(&addr)),
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    running.stop();
}

/// The real `keyward verifier` binary, as a user runs it: TLS and defence flags, a key
/// checked with `keyward verify --ca-file`, then SIGTERM ends it cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn the_verifier_binary_serves_tls_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader, Write};
    let op = Operator::start().await;
    op.apply("bin-ok", json!({})).await;
    op.wait_ready("bin-ok").await;
    let ok = op.key_in("bin-ok", "api-key").await.expect("key");
    let dir = tempfile::tempdir().expect("dir");
    let (ca, cert, key) = pair("binary");
    std::fs::write(dir.path().join("tls.crt"), cert).expect("cert");
    std::fs::write(dir.path().join("tls.key"), key).expect("key");
    std::fs::write(dir.path().join("ca.pem"), &ca).expect("ca");
    std::fs::write(dir.path().join("kc"), op.kubeconfig_yaml()).expect("kubeconfig");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--kubeconfig")
        .arg(dir.path().join("kc"))
        .args(["--log-format", "json", "verifier", "--addr", "127.0.0.1:0"])
        .args(["--hash-namespace", common::operator::HASH_NS])
        .args(["--max-connections", "64", "--header-read-timeout", "2s"])
        .args(["--idle-timeout", "30s", "--max-index-age", "1m"])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("keyward verifier starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(addr) = v["fields"]["addr"].as_str()
            {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(common::PATIENCE)
        .expect("it logs its address");
    let url = format!("https://127.0.0.1:{}", port(&addr));
    let verified = common::eventually_blocking("keyward verify --ca-file to say VALID", || {
        let mut v = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["verify", "--url", &url, "--ca-file"])
            .arg(dir.path().join("ca.pem"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("runs");
        v.stdin
            .take()
            .expect("stdin")
            .write_all(ok.as_bytes())
            .expect("key");
        let out = v.wait_with_output().expect("output");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success().then_some(text)
    });
    assert!(verified.starts_with("VALID"), "{verified}");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exited = common::eventually_blocking("the verifier to exit after SIGTERM", || {
        child.try_wait().expect("wait")
    });
    assert!(exited.success(), "exit status {exited:?}");
}
