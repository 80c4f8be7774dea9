//! ApiKeyPool (DESIGN §5) end to end: top-up, takes exactly once and oldest first, keyTTL
//! and shrinking, hash records and their states, deletion.

mod common;

use common::operator::Operator;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_fills_to_size_with_records_and_goes_with_its_records() {
    let op = Operator::start().await;
    op.apply_pool(
        "tokens",
        json!({"size": 5, "verification": true, "format": {"prefix": "inv_"}}),
    )
    .await;
    let pool = op.wait_pool_full("tokens", 5).await;
    let status = pool.status.clone().expect("status");
    assert_eq!(
        (status.size, status.generated_total, status.consumed_total),
        (5, 5, 0)
    );
    assert!(status.oldest_key_created_at.is_some());
    let keys = op.pool_keys("tokens").await;
    assert_eq!(keys.len(), 5);
    assert!(keys.values().all(|k| k.starts_with("inv_")));
    let records = op.pool_records("tokens").await;
    assert_eq!(records.len(), 5);
    assert!(
        records
            .iter()
            .all(|r| r.state == keyward::record::UseState::Available)
    );
    // Each record names its key Secret's suffix.
    for r in &records {
        assert!(keys.contains_key(&format!("tokens-{}", r.suffix)));
    }
    op.pools()
        .delete("tokens", &Default::default())
        .await
        .expect("delete");
    common::eventually("the pool's Secrets and records to go", || async {
        (op.pool_keys("tokens").await.is_empty() && op.pool_records("tokens").await.is_empty())
            .then_some(())
    })
    .await;
}

/// Runs `keyward pool take POOL` as a user would: (exit code, stdout, stderr).
fn take(kubeconfig: &std::path::Path, pool: &str) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["pool", "take", pool])
        .output()
        .expect("keyward runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kubeconfig_file(op: &Operator) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, op.kubeconfig_yaml()).expect("kubeconfig");
    (dir, path)
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_operator_paused_takes_come_oldest_first_then_the_pool_is_empty() {
    let mut op = Operator::start().await;
    op.apply_pool("seq", json!({"size": 10})).await;
    op.wait_pool_full("seq", 10).await;
    op.stop().await;
    let secrets = op
        .secrets()
        .list(&kube::api::ListParams::default().labels("keyward.dev/pool=seq"))
        .await
        .expect("list");
    let mut expected: Vec<(String, String, String)> = secrets
        .items
        .iter()
        .map(|s| {
            let created =
                s.metadata.annotations.as_ref().expect("annotations")["keyward.dev/created-at"]
                    .clone();
            let key =
                String::from_utf8_lossy(&s.data.as_ref().expect("data")["api-key"].0).into_owned();
            (created, s.metadata.name.clone().expect("name"), key)
        })
        .collect();
    expected.sort();
    let (_dir, kc) = kubeconfig_file(&op);
    let mut taken = Vec::new();
    for _ in 0..10 {
        let (code, key, stderr) = tokio::task::block_in_place(|| take(&kc, "seq"));
        assert_eq!(code, Some(0), "{stderr}");
        taken.push(key);
    }
    assert_eq!(
        taken,
        expected.into_iter().map(|(_, _, k)| k).collect::<Vec<_>>(),
        "oldest first"
    );
    let (code, stdout, stderr) = tokio::task::block_in_place(|| take(&kc, "seq"));
    assert_eq!((code, stdout.as_str()), (Some(1), ""));
    assert!(stderr.contains("pool empty"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_takers_never_share_a_key_and_the_pool_refills() {
    let op = Operator::start().await;
    op.apply_pool("busy", json!({"size": 10, "verification": true}))
        .await;
    op.wait_pool_full("busy", 10).await;
    let (_dir, kc) = kubeconfig_file(&op);
    let takers: Vec<_> = (0..20)
        .map(|_| {
            let kc = kc.clone();
            std::thread::spawn(move || take(&kc, "busy"))
        })
        .collect();
    let results: Vec<_> = takers
        .into_iter()
        .map(|t| t.join().expect("taker"))
        .collect();
    let mut keys = std::collections::BTreeSet::new();
    for (code, stdout, stderr) in &results {
        match code {
            Some(0) => {
                assert!(
                    !stdout.is_empty() && !stdout.contains('\n'),
                    "one key: {stdout:?}"
                );
                assert!(keys.insert(stdout.clone()), "a key was handed out twice");
            }
            Some(1) => assert!(stderr.contains("pool empty"), "{stderr}"),
            other => panic!("exit {other:?}: {stderr}"),
        }
    }
    assert!(
        keys.len() >= 10,
        "at least the 10 keys there were: {}",
        keys.len()
    );
    // Refilled within 10 s (the operator tops up as each take is seen).
    let refilled = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        op.wait_pool_full("busy", 10),
    )
    .await;
    assert!(refilled.is_ok(), "available == size again within 10 s");
    // No key that was handed out is still in the pool.
    let left: std::collections::BTreeSet<String> =
        op.pool_keys("busy").await.into_values().collect();
    assert!(left.is_disjoint(&keys));
}

fn status(p: &keyward::crd::ApiKeyPool) -> keyward::crd::ApiKeyPoolStatus {
    p.status.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_pool_makes_no_requests_and_bursts_of_takes_coalesce_status_writes() {
    let op = Operator::start().await;
    if op.hooks("an_idle_pool_makes_no_requests").is_none() {
        return;
    }
    op.apply_pool("quiet", json!({"size": 20})).await;
    op.wait_pool_full("quiet", 20).await;
    op.wait_idle().await;
    op.h().reset_counters();
    // The measurement window itself: 10 s of nothing asked of the pool.
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let asked = op.h().requests();
    assert!(asked.is_empty(), "an idle pool made requests: {asked:#?}");
    // 200 takes in about 10 s.
    let started = std::time::Instant::now();
    let mut taken = 0;
    while taken < 200 {
        match keyward::cli::pool::take(&op.client, &op.namespace, "quiet").await {
            Ok(_) => taken += 1,
            Err(keyward::cli::pool::TakeError::Empty { .. }) => {}
            Err(e) => panic!("take: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(45)).await;
    }
    op.wait_pool("quiet", "200 takes counted", |p| {
        status(p).consumed_total == 200 && status(p).available == 20
    })
    .await;
    let writes = op.h().count("patch", "apikeypools/status");
    assert!(
        writes <= 20,
        "{writes} status writes for 200 takes in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unused_keys_are_replaced_after_key_ttl_and_shrinking_drops_the_newest() {
    let op = Operator::start().await;
    op.apply_pool("fresh", json!({"size": 3, "keyTTL": "2s"}))
        .await;
    op.wait_pool_full("fresh", 3).await;
    let first: std::collections::BTreeSet<String> =
        op.pool_keys("fresh").await.into_keys().collect();
    op.wait_pool("fresh", "every key replaced once", |p| {
        status(p).generated_total >= 6 && status(p).available == 3
    })
    .await;
    common::eventually("the first keys gone", || async {
        let now: std::collections::BTreeSet<String> =
            op.pool_keys("fresh").await.into_keys().collect();
        now.is_disjoint(&first).then_some(())
    })
    .await;
    let p = op.pools().get("fresh").await.expect("pool");
    assert_eq!(status(&p).consumed_total, 0, "expired keys were not taken");
    // Shrink: the newest surplus goes, the oldest stays.
    op.apply_pool("shrink", json!({"size": 5})).await;
    op.wait_pool_full("shrink", 5).await;
    let secrets = op
        .secrets()
        .list(&kube::api::ListParams::default().labels("keyward.dev/pool=shrink"))
        .await
        .expect("list");
    let mut by_age: Vec<(String, String)> = secrets
        .items
        .iter()
        .map(|s| {
            (
                s.metadata.annotations.as_ref().expect("a")["keyward.dev/created-at"].clone(),
                s.metadata.name.clone().expect("name"),
            )
        })
        .collect();
    by_age.sort();
    op.apply_pool("shrink", json!({"size": 2})).await;
    op.wait_pool_full("shrink", 2).await;
    let left: Vec<String> = op.pool_keys("shrink").await.into_keys().collect();
    let oldest: Vec<String> = by_age.into_iter().take(2).map(|(_, n)| n).collect();
    assert_eq!(left, oldest);
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_survive_an_operator_restart() {
    let mut op = Operator::start().await;
    op.apply_pool("counted", json!({"size": 3})).await;
    op.wait_pool_full("counted", 3).await;
    for _ in 0..2 {
        keyward::cli::pool::take(&op.client, &op.namespace, "counted")
            .await
            .expect("take");
    }
    op.wait_pool("counted", "2 taken, 5 generated", |p| {
        status(p).consumed_total == 2 && status(p).generated_total == 5 && status(p).available == 3
    })
    .await;
    op.restart().await;
    keyward::cli::pool::take(&op.client, &op.namespace, "counted")
        .await
        .expect("take");
    op.wait_pool("counted", "3 taken, 6 generated", |p| {
        status(p).consumed_total == 3 && status(p).generated_total == 6 && status(p).available == 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn takes_racing_expiry_and_shrinking_win_or_lose_whole() {
    let op = Operator::start().await;
    op.apply_pool(
        "racy",
        json!({"size": 8, "keyTTL": "1s", "verification": true}),
    )
    .await;
    op.wait_pool_full("racy", 8).await;
    let (client, ns) = (op.client.clone(), op.namespace.clone());
    let takers: Vec<_> = (0..4)
        .map(|_| {
            let (client, ns) = (client.clone(), ns.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
                while std::time::Instant::now() < until {
                    if let Ok(k) = keyward::cli::pool::take(&client, &ns, "racy").await {
                        got.push(k.expose().to_string());
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                }
                got
            })
        })
        .collect();
    // Meanwhile the pool shrinks and grows again, on top of keys expiring every second.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    op.apply_pool(
        "racy",
        json!({"size": 2, "keyTTL": "1s", "verification": true}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    op.apply_pool(
        "racy",
        json!({"size": 8, "keyTTL": "1s", "verification": true}),
    )
    .await;
    let mut handed_out = Vec::new();
    for t in takers {
        handed_out.extend(t.await.expect("taker"));
    }
    let unique: std::collections::BTreeSet<&String> = handed_out.iter().collect();
    assert_eq!(unique.len(), handed_out.len(), "a key was handed out twice");
    assert!(!handed_out.is_empty());
    // Every key handed out is counted as taken, and only those: a key keyward deleted as
    // expired or surplus was never handed out, a key a taker won was never counted expired.
    let n = handed_out.len() as u64;
    op.wait_pool("racy", &format!("{n} takes counted"), |p| {
        status(p).consumed_total == n
    })
    .await;
    // Stop the churn, let everything settle, and look again.
    op.apply_pool("racy", json!({"size": 8, "verification": true}))
        .await;
    op.wait_pool_full("racy", 8).await;
    op.wait_idle().await;
    let p = op.pools().get("racy").await.expect("pool");
    assert_eq!(
        status(&p).consumed_total,
        n,
        "no take counted twice or missed"
    );
}
