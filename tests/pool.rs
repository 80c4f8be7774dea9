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
    // Each take's place in created-at order (positions, so no key reaches test output).
    let places: Vec<Option<usize>> = taken
        .iter()
        .map(|k| expected.iter().position(|(_, _, e)| e == k))
        .collect();
    assert_eq!(
        places,
        (0..10).map(Some).collect::<Vec<_>>(),
        "oldest first"
    );
    let (code, stdout, stderr) = tokio::task::block_in_place(|| take(&kc, "seq"));
    assert_eq!((code, stdout.as_str()), (Some(1), ""));
    assert!(stderr.contains("pool empty"), "{stderr}");
    let (code, stdout, stderr) = tokio::task::block_in_place(|| take(&kc, "nope"));
    assert_eq!((code, stdout.as_str()), (Some(1), ""));
    assert!(
        stderr.contains("ApiKeyPool default/nope not found"),
        "{stderr}"
    );
}

/// Runs `keyward ARGS` against the operator's cluster: (exit code, stdout, stderr).
fn keyward(kubeconfig: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("keyward runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn pool_status_shows_one_row_per_pool() {
    let op = Operator::start().await;
    op.apply_pool("alpha", json!({"size": 3})).await;
    op.apply_pool("beta", json!({"size": 2, "verification": true}))
        .await;
    op.wait_pool_full("alpha", 3).await;
    op.wait_pool_full("beta", 2).await;
    let (_dir, kc) = kubeconfig_file(&op);
    let (code, table, stderr) = tokio::task::block_in_place(|| keyward(&kc, &["pool", "status"]));
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for h in [
        "NAME",
        "READY",
        "AVAILABLE",
        "SIZE",
        "GENERATED",
        "CONSUMED",
        "OLDEST KEY",
    ] {
        assert!(lines[0].contains(h), "{table}");
    }
    let alpha: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(alpha[..2], ["alpha", "True"], "{table}");
    assert!(lines[1].contains("KeysAvailable"), "{table}");
    assert!(lines[2].starts_with("beta"), "{table}");
    let (code, one, _) = tokio::task::block_in_place(|| keyward(&kc, &["pool", "status", "beta"]));
    assert_eq!((code, one.lines().count()), (Some(0), 2), "{one}");
    let (code, all, _) = tokio::task::block_in_place(|| keyward(&kc, &["pool", "status", "-A"]));
    assert_eq!(code, Some(0));
    assert!(
        all.lines()
            .next()
            .is_some_and(|h| h.starts_with("NAMESPACE")),
        "{all}"
    );
    assert!(
        all.lines().any(|l| l
            .split_whitespace()
            .take(2)
            .eq([op.namespace.as_str(), "alpha"])),
        "{all}"
    );
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
    let left: std::collections::BTreeSet<String> =
        op.pool_keys("shrink").await.into_keys().collect();
    let oldest: std::collections::BTreeSet<String> =
        by_age.into_iter().take(2).map(|(_, n)| n).collect();
    assert_eq!(left, oldest, "the two oldest stay");
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

/// After a pool settles: every key Secret has an available record, every record is for a
/// key Secret that exists (or left the pool: taken/consumed), no key twice.
async fn assert_consistent(op: &Operator, pool: &str, what: &str) {
    use keyward::record::UseState;
    let keys = op.pool_keys(pool).await;
    let records = op.pool_records(pool).await;
    let prefix = format!("{pool}-");
    let unique: std::collections::BTreeSet<&String> = keys.values().collect();
    assert_eq!(unique.len(), keys.len(), "{what}: two Secrets hold one key");
    for name in keys.keys() {
        let suffix = name.strip_prefix(&prefix).expect("prefix");
        let record = records.iter().find(|r| r.suffix == suffix);
        assert!(
            record.is_some_and(|r| r.state == UseState::Available),
            "{what}: key {name} has no available record: {record:?}"
        );
    }
    for r in &records {
        let here = keys.contains_key(&format!("{prefix}{}", r.suffix));
        assert!(
            here || matches!(r.state, UseState::Taken | UseState::Consumed),
            "{what}: orphan record {} ({:?})",
            r.suffix,
            r.state
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_at_every_write_of_a_top_up_keeps_the_pool_consistent() {
    use keyward_emulator::{Fault, FaultAction};
    // (verb, resource, nth matching request after the take, action): the writes of one
    // replacement key are record create, key Secret create, record update.
    let cases = [
        ("create", "secrets", 1, FaultAction::Fail(500)),
        ("create", "secrets", 1, FaultAction::FailAfter(500)),
        ("create", "secrets", 2, FaultAction::Fail(500)),
        ("create", "secrets", 2, FaultAction::FailAfter(500)),
        ("create", "secrets", 2, FaultAction::Hang),
        ("update", "secrets", 1, FaultAction::Fail(500)),
        ("update", "secrets", 1, FaultAction::FailAfter(500)),
        ("update", "secrets", 1, FaultAction::Hang),
    ];
    for (verb, resource, nth, action) in cases {
        let what = format!("{action:?} at {verb} {resource} #{nth}");
        let mut op = Operator::start().await;
        if op.hooks("crash_at_every_write_of_a_top_up").is_none() {
            return;
        }
        op.apply_pool("safe", json!({"size": 3, "verification": true}))
            .await;
        op.wait_pool_full("safe", 3).await;
        op.wait_idle().await;
        op.h().reset_counters();
        op.h()
            .add_fault(Fault::new(verb, resource, nth, action.clone()));
        let first = keyward::cli::pool::take(&op.client, &op.namespace, "safe")
            .await
            .expect("take");
        common::eventually(&format!("{what}: the write to be reached"), || async {
            (op.h().count(verb, resource) >= nth).then_some(())
        })
        .await;
        op.stop().await;
        op.h().clear_faults();
        op.restart().await;
        op.wait_pool_full("safe", 3).await;
        op.wait_idle().await;
        assert_consistent(&op, "safe", &what).await;
        // Every key still takes once; none is the one taken before the crash.
        let mut taken = std::collections::BTreeSet::from([first.expose().to_string()]);
        for i in 0..3 {
            let k = match keyward::cli::pool::take(&op.client, &op.namespace, "safe").await {
                Ok(k) => k,
                Err(e) => panic!(
                    "{what}: take #{i}: {e:?}; keys now {:?}, records {:?}",
                    op.pool_keys("safe").await.keys().collect::<Vec<_>>(),
                    op.pool_records("safe")
                        .await
                        .iter()
                        .map(|r| (r.suffix.clone(), r.state))
                        .collect::<Vec<_>>()
                ),
            };
            assert!(
                taken.insert(k.expose().to_string()),
                "{what}: a key handed out twice"
            );
        }
        op.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_key_verifies_exactly_once_across_replicas_and_stays_used() {
    use common::operator::{until_code, verifier, verify_json};
    let op = Operator::start().await;
    op.apply_pool(
        "once",
        json!({"size": 3, "verification": true, "format": {"prefix": "tok_"}}),
    )
    .await;
    op.wait_pool_full("once", 3).await;
    let (a, b) = (verifier(&op, 429).await, verifier(&op, 429).await);
    let key = keyward::cli::pool::take(&op.client, &op.namespace, "once")
        .await
        .expect("take");
    let key = key.expose().to_string();
    // Both verifiers hold the record as the operator left it after the take (DESIGN §5
    // allows one conflict per consumption: a third writer racing in, here the operator
    // marking the record taken, may fairly make a presentation answer UNAVAILABLE).
    let (addr_a, addr_b) = (a.addr.to_string(), b.addr.to_string());
    let taken = common::eventually("the record marked taken", || async {
        op.pool_records("once")
            .await
            .into_iter()
            .find(|r| r.state == keyward::record::UseState::Taken)
    })
    .await;
    let record_name = format!(
        "pool-{}-{}",
        op.pools()
            .get("once")
            .await
            .expect("pool")
            .metadata
            .uid
            .expect("uid"),
        taken.suffix
    );
    let rv = op
        .records()
        .get(&record_name)
        .await
        .expect("record")
        .metadata
        .resource_version;
    common::eventually("both indexes to hold the taken record", || async {
        let holds = |v: &keyward::verifier::Running| {
            v.verifier
                .pool_record_state(&record_name)
                .map(|(_, version)| Some(version))
                == Some(rv.clone())
        };
        (holds(&a) && holds(&b)).then_some(())
    })
    .await;
    let presentations: Vec<_> = (0..50)
        .map(|i| {
            let addr = if i % 2 == 0 {
                addr_a.clone()
            } else {
                addr_b.clone()
            };
            let key = key.clone();
            std::thread::spawn(move || {
                verify_json(&addr, &key)["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
        })
        .collect();
    let codes: Vec<String> = presentations
        .into_iter()
        .map(|p| p.join().expect("presentation"))
        .collect();
    let valid = codes.iter().filter(|c| *c == "VALID").count();
    let used = codes.iter().filter(|c| *c == "USAGE_EXCEEDED").count();
    assert_eq!((valid, used), (1, 49), "{codes:?}");
    // /verify says 401 for the used key, on either replica.
    for addr in [&addr_a, &addr_b] {
        let (code, headers, _) = tokio::task::block_in_place(|| {
            common::http(addr, "GET", "/verify", &[("X-API-Key", &key)], "")
        });
        assert_eq!(
            (code, headers.get("x-keyward-code").map(String::as_str)),
            (401, Some("USAGE_EXCEEDED"))
        );
    }
    // A restarted verifier knows from the record alone.
    a.stop();
    let c = verifier(&op, 429).await;
    until_code(&c.addr.to_string(), &key, "USAGE_EXCEEDED").await;
    // A VALID pool answer names the pool and no owner.
    let fresh = keyward::cli::pool::take(&op.client, &op.namespace, "once")
        .await
        .expect("take");
    let (code, headers, _) = tokio::task::block_in_place(|| {
        common::http(
            &addr_b,
            "GET",
            "/verify",
            &[("Authorization", &format!("Bearer {}", fresh.expose()))],
            "",
        )
    });
    assert_eq!(code, 200);
    assert_eq!(
        headers.get("x-keyward-key"),
        Some(&format!("{}/once", op.namespace))
    );
    assert!(!headers.contains_key("x-keyward-owner"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untaken_key_presented_once_leaves_the_pool_and_takes_never_return_it() {
    use common::operator::{verifier, verify_json};
    let op = Operator::start().await;
    op.apply_pool("leak", json!({"size": 4, "verification": true}))
        .await;
    op.wait_pool_full("leak", 4).await;
    let v = verifier(&op, 429).await;
    // Someone read a key straight from its Secret and used it: it is consumed.
    let keys = op.pool_keys("leak").await;
    let (leaked_name, leaked) = keys
        .iter()
        .next()
        .map(|(n, k)| (n.clone(), k.clone()))
        .expect("a key");
    let answer = tokio::task::block_in_place(|| verify_json(&v.addr.to_string(), &leaked));
    assert_eq!(answer["code"], "VALID");
    // keyward takes it out of the pool and counts it consumed.
    op.wait_pool("leak", "the presented key consumed", |p| {
        status(p).consumed_total == 1 && status(p).available == 4
    })
    .await;
    op.wait_secret_gone(&leaked_name).await;
    let mut taken = Vec::new();
    for i in 0..10u64 {
        let k = keyward::cli::pool::take(&op.client, &op.namespace, "leak")
            .await
            .expect("take");
        taken.push(k.expose().to_string());
        // Refilled after this take (the presented key counts as the first consumption).
        op.wait_pool("leak", "refilled", |p| {
            status(p).consumed_total == i + 2 && status(p).available == 4
        })
        .await;
    }
    assert!(!taken.contains(&leaked), "a consumed key was handed out");
}

#[tokio::test(flavor = "multi_thread")]
async fn single_use_keys_fail_closed_while_the_api_server_is_unreachable_and_expire() {
    use common::operator::{until_code, verifier, verify_json};
    use keyward_emulator::{Fault, FaultAction};
    let op = Operator::start().await;
    if op.hooks("single_use_keys_fail_closed").is_none() {
        return;
    }
    op.apply_pool(
        "closed",
        json!({"size": 2, "verification": true, "issuedTTL": "3s"}),
    )
    .await;
    op.wait_pool_full("closed", 2).await;
    let v = verifier(&op, 429).await;
    let addr = v.addr.to_string();
    let key = keyward::cli::pool::take(&op.client, &op.namespace, "closed")
        .await
        .expect("take")
        .expose()
        .to_string();
    // The record cannot be updated: never VALID, and the key is not lost.
    op.h()
        .add_fault(Fault::new("update", "secrets", 1, FaultAction::Fail(503)).times(1000));
    let answer = tokio::task::block_in_place(|| verify_json(&addr, &key));
    assert_eq!(answer["code"], "UNAVAILABLE");
    let (code, _, _) = tokio::task::block_in_place(|| {
        common::http(&addr, "GET", "/verify", &[("X-API-Key", &key)], "")
    });
    assert_eq!(code, 503);
    op.h().clear_faults();
    until_code(&addr, &key, "VALID").await;
    // A taken key that is never presented expires issuedTTL after it was taken.
    let other = keyward::cli::pool::take(&op.client, &op.namespace, "closed")
        .await
        .expect("take")
        .expose()
        .to_string();
    common::eventually("the taken key's record to go after issuedTTL", || async {
        let records = op.pool_records("closed").await;
        let left = records
            .iter()
            .filter(|r| r.state != keyward::record::UseState::Available)
            .count();
        (left == 0).then_some(())
    })
    .await;
    let answer = tokio::task::block_in_place(|| verify_json(&addr, &other));
    assert_ne!(answer["code"], "VALID");
}
