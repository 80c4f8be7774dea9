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
    assert!(
        out.contains("kubectl --kubeconfig"),
        "prints what to try next: {out}"
    );
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
fn a_signal_right_after_readiness_still_stops_cleanly() {
    for _ in 0..3 {
        let mut pg = Playground::start(None);
        let status = pg.terminate();
        assert!(status.success(), "exit status {status:?}");
    }
}
