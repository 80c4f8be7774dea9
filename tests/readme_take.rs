//! The README's take recipes, run as written: the kubectl function and the Python script,
//! eight of each at once against one pool. Every key goes to exactly one taker, and the
//! takers that find none say "pool empty".

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output};

use common::operator::Operator;
use serde_json::json;

/// The fenced block right after `<!-- readme-test: NAME -->` in README.md.
fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(common::root().join("README.md")).expect("README.md");
    let marker = format!("<!-- readme-test: {name} -->");
    let after = &readme[readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))
        + marker.len()..];
    let open = after.find("```").expect("a fenced block after the marker");
    let body = &after[open..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    body[..body.find("\n```").expect("closing fence") + 1].to_string()
}

#[test]
fn the_readme_has_both_recipes() {
    assert!(readme_block("take-kubectl").contains("take() {"));
    assert!(readme_block("take-python").contains("def take("));
}

#[tokio::test(flavor = "multi_thread")]
async fn readme_take_recipes_hand_each_key_to_exactly_one_of_many_takers() {
    let mut op = Operator::start().await;
    op.apply_pool("recipes", json!({"size": 10, "verification": true}))
        .await;
    op.wait_pool_full("recipes", 10).await;
    op.wait_idle().await;
    // Paused, so the pool holds exactly these ten keys while the takers race.
    op.stop().await;
    let keys: BTreeSet<String> = op.pool_keys("recipes").await.into_values().collect();
    assert_eq!(keys.len(), 10);

    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, op.kubeconfig_yaml()).expect("kubeconfig");
    let sh = dir.path().join("take.sh");
    std::fs::write(&sh, readme_block("take-kubectl")).expect("take.sh");
    let py = dir.path().join("take.py");
    std::fs::write(&py, readme_block("take-python")).expect("take.py");
    let kubectl_dir = common::kubectl_path()
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let path = format!(
        "{}:{}",
        kubectl_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ns = op.namespace.clone();
    let takers: Vec<(String, std::thread::JoinHandle<Output>)> = (0..16)
        .map(|i| {
            let mut cmd = if i % 2 == 0 {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("source {} && take {ns} recipes", sh.display()));
                c
            } else {
                let mut c = Command::new("python3");
                c.arg(&py).args([&ns, "recipes"]);
                c
            };
            cmd.env("KUBECONFIG", &kubeconfig).env("PATH", &path);
            let what = if i % 2 == 0 { "kubectl" } else { "python" };
            (
                what.to_string(),
                std::thread::spawn(move || cmd.output().expect("taker runs")),
            )
        })
        .collect();
    let mut taken = Vec::new();
    let mut empty = 0;
    for (what, taker) in takers {
        let out = taker.join().expect("taker");
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {
                let key = String::from_utf8(out.stdout).expect("utf-8");
                assert_eq!(key.lines().count(), 1, "{what}: one line on stdout");
                taken.push(key.trim().to_string());
            }
            Some(1) => {
                assert!(stderr.contains("pool empty"), "{what}: {stderr}");
                empty += 1;
            }
            other => panic!("{what} exited {other:?}: {stderr}"),
        }
    }
    let distinct: BTreeSet<String> = taken.iter().cloned().collect();
    assert_eq!(distinct.len(), taken.len(), "a key handed out twice");
    // (Compared without printing: keys never go to test output.)
    assert!(
        distinct == keys,
        "every key taken once, and only pool keys: {} taken, {} of them from the pool",
        distinct.len(),
        distinct.intersection(&keys).count()
    );
    assert_eq!(empty, 6);
    assert!(op.pool_keys("recipes").await.is_empty());
}
