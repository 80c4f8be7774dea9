//! Rotation (DESIGN §4) end to end: schedules, manual and emergency requests, restart
//! targets, and the three invariants with the operator crashed at every write.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::operator::{Operator, verifies};
use keyward::crd::ApiKey;
use keyward::history::Action;
use keyward_emulator::{Fault, FaultAction};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

fn deployments(op: &Operator) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps", "v1", "Deployment"),
        "deployments",
    );
    Api::default_namespaced_with(op.client.clone(), &resource)
}

async fn deployment(op: &Operator, name: &str) {
    let body: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}}},
    }))
    .expect("deployment");
    deployments(op)
        .create(&PostParams::default(), &body)
        .await
        .expect("deployment created");
}

async fn rolled_for(op: &Operator, name: &str) -> (Option<String>, i64) {
    let d = deployments(op).get(name).await.expect("deployment");
    let annotation =
        d.data["spec"]["template"]["metadata"]["annotations"]["keyward.dev/restarted-at"]
            .as_str()
            .map(String::from);
    (annotation, d.metadata.generation.unwrap_or_default())
}

/// Waits until the workload was rolled for the key with this fingerprint.
async fn wait_rolled(op: &Operator, name: &str, fingerprint: Option<String>) {
    common::eventually(&format!("{name} rolled for {fingerprint:?}"), || async {
        (rolled_for(op, name).await.0 == fingerprint).then_some(())
    })
    .await;
}

async fn request_rotation(op: &Operator, name: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {"keyward.dev/rotate": value}}});
    op.apikeys()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotated");
}

fn status_of(ak: &ApiKey) -> keyward::crd::ApiKeyStatus {
    ak.status.clone().unwrap_or_default()
}

async fn history(op: &Operator, secret: &str) -> Vec<keyward::history::Entry> {
    let s = op.secrets().get(secret).await.expect("secret");
    keyward::history::parse(
        s.metadata
            .annotations
            .unwrap_or_default()
            .get("keyward.dev/history")
            .map(String::as_str),
    )
}

/// Watches invariant 1 continuously: the key in the workload Secret verifies against the
/// hash record at every instant (read the Secret first, then the record).
fn monitor(
    op: &Operator,
    ak: &ApiKey,
    secret: &str,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Vec<String>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let secrets = op.secrets();
    let records = op.records();
    let record_name = keyward::record::name_for(&ak.metadata.uid.clone().expect("uid"));
    let secret = secret.to_string();
    let task = tokio::spawn(async move {
        let mut violations = Vec::new();
        while !flag.load(Ordering::SeqCst) {
            let key = secrets
                .get_opt(&secret)
                .await
                .ok()
                .flatten()
                .and_then(|s| s.data)
                .and_then(|d| {
                    d.get("api-key")
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                });
            let record = records
                .get_opt(&record_name)
                .await
                .ok()
                .flatten()
                .map(|s| keyward::record::HashRecord::from_secret(&s).expect("record"));
            if let Some(key) = key
                && !verifies(record.as_ref(), &key)
            {
                violations.push(format!("workload key {}… did not verify", &key[..11]));
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        violations
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_at_every_write_of_a_rotation_keeps_the_invariants() {
    // (verb, resource, nth matching request after the trigger, action)
    let cases: Vec<(&str, &str, u64, FaultAction)> = vec![
        ("patch", "secrets", 1, FaultAction::Fail(500)), // pending hash not written
        ("patch", "secrets", 1, FaultAction::FailAfter(500)), // pending written, reply lost
        ("patch", "secrets", 2, FaultAction::Fail(500)), // key not delivered
        ("patch", "secrets", 2, FaultAction::FailAfter(500)), // key delivered, reply lost
        ("patch", "secrets", 2, FaultAction::Hang),      // killed mid-delivery
        ("patch", "secrets", 3, FaultAction::Fail(500)), // promotion not written
        ("patch", "secrets", 3, FaultAction::FailAfter(500)), // promoted, reply lost
        ("patch", "deployments", 1, FaultAction::FailAfter(500)), // rolled, reply lost
        ("patch", "apikeys/status", 1, FaultAction::Fail(500)), // status not written
    ];
    for (verb, resource, nth, action) in cases {
        let what = format!("{action:?} at {verb} {resource} #{nth}");
        let mut op = Operator::start().await;
        if op
            .hooks("crash_at_every_write_of_a_rotation_keeps_the_invariants")
            .is_none()
        {
            return;
        }
        deployment(&op, "web").await;
        op.apply("rot", json!({"rotation": {"gracePeriod": "1h", "restartTargets": [{"kind": "Deployment", "name": "web"}]}})).await;
        let ak = op.wait_ready("rot").await;
        let first = op.key_in("rot", "api-key").await.expect("key");
        let (watch_stop, watcher) = monitor(&op, &ak, "rot");
        op.h().reset_counters();
        op.h()
            .add_fault(Fault::new(verb, resource, nth, action.clone()));
        request_rotation(&op, "rot", "r1").await;
        // The operator reaches the faulty write, then "crashes" and comes back.
        common::eventually(&format!("{what}: the write to be reached"), || async {
            (op.h().count(verb, resource) >= nth).then_some(())
        })
        .await;
        op.stop().await;
        op.h().clear_faults();
        op.restart().await;
        let ak = op
            .wait_for("rot", "the rotation converged", |a| {
                let s = status_of(a);
                s.last_rotation_request.as_deref() == Some("r1")
                    && keyward::conditions::ready(&s.conditions)
                        .is_some_and(|c| c.reason == "Rotated")
            })
            .await;
        // Let the restart targets settle (they come first after any promotion).
        wait_rolled(&op, "web", status_of(&ak).fingerprint).await;
        watch_stop.store(true, Ordering::SeqCst);
        let violations = watcher.await.expect("monitor");
        assert!(
            violations.is_empty(),
            "{what}: invariant 1 broken: {violations:?}"
        );
        let record = op.record(&ak).await.expect("record");
        let current = op.key_in("rot", "api-key").await.expect("key");
        assert_ne!(current, first, "{what}: rotated");
        assert!(record.pending.is_none(), "{what}: nothing left pending");
        assert_eq!(record.rotation.count, 1, "{what}: rotated exactly once");
        assert_eq!(status_of(&ak).rotation_count, 1);
        assert_eq!(
            record.previous.len(),
            1,
            "{what}: the old key is the one previous key"
        );
        assert!(
            verifies(Some(&record), &first),
            "{what}: the previous key verifies inside its grace"
        );
        assert!(verifies(Some(&record), &current), "{what}: no key lost");
        let entries = history(&op, "rot").await;
        let actions: Vec<Action> = entries.iter().map(|e| e.action).collect();
        assert_eq!(
            actions,
            [Action::Generated, Action::Rotated],
            "{what}: one history entry per rotation"
        );
        let (annotation, generation) = rolled_for(&op, "web").await;
        assert_eq!(
            annotation,
            status_of(&ak).fingerprint,
            "{what}: rolled for the new key"
        );
        assert_eq!(generation, 2, "{what}: rolled exactly once");
        op.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_requests_rotate_once_per_value_and_previous_keys_keep_their_grace() {
    let op = Operator::start().await;
    deployment(&op, "web").await;
    op.apply("man", json!({"rotation": {"gracePeriod": "1h", "restartTargets": [{"kind": "Deployment", "name": "web"}]}})).await;
    let ak = op.wait_ready("man").await;
    let mut keys = vec![op.key_in("man", "api-key").await.expect("key")];
    for (value, count) in [("a", 1), ("a", 1), ("b", 2), ("c", 3)] {
        request_rotation(&op, "man", value).await;
        let done = op
            .wait_for("man", "the request consumed", |a| {
                status_of(a).last_rotation_request.as_deref() == Some(value)
                    && status_of(a).rotation_count == count
            })
            .await;
        wait_rolled(&op, "web", status_of(&done).fingerprint).await;
        let key = op.key_in("man", "api-key").await.expect("key");
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    assert_eq!(keys.len(), 4, "a repeated value does not rotate again");
    let record = op.record(&ak).await.expect("record");
    for key in &keys {
        assert!(
            verifies(Some(&record), key),
            "every key verifies: grace 1h outlives the rotations"
        );
    }
    let entries = history(&op, "man").await;
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.action == Action::Rotated)
            .count(),
        3
    );
    assert!(
        entries
            .iter()
            .filter(|e| e.action == Action::Rotated)
            .all(|e| e.reason.as_str() == "Manual" && e.previous_fingerprint.is_some())
    );
    op.wait_idle().await;
    assert_eq!(
        rolled_for(&op, "web").await.1,
        4,
        "one roll per rotation (generation 1 + 3)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn previous_keys_stop_at_their_own_valid_until() {
    let op = Operator::start().await;
    op.apply("short", json!({"rotation": {"gracePeriod": "1s"}}))
        .await;
    let ak = op.wait_ready("short").await;
    let first = op.key_in("short", "api-key").await.expect("key");
    request_rotation(&op, "short", "1").await;
    op.wait_for("short", "rotated", |a| status_of(a).rotation_count == 1)
        .await;
    let record = op.record(&ak).await.expect("record");
    let until: jiff::Timestamp = record.previous[0].valid_until;
    assert!(
        verifies(Some(&record), &first),
        "valid before its valid-until"
    );
    // The operator requeues at the exact instant and prunes it.
    let record = common::eventually("the previous key pruned", || async {
        op.record(&ak).await.filter(|r| r.previous.is_empty())
    })
    .await;
    assert!(
        jiff::Timestamp::now() >= until,
        "not pruned before valid-until"
    );
    assert!(!verifies(Some(&record), &first), "never after");
}

#[tokio::test(flavor = "multi_thread")]
async fn emergency_revocation_within_a_second_through_the_cli() {
    let op = Operator::start().await;
    op.apply("leaky", json!({"rotation": {"gracePeriod": "24h"}}))
        .await;
    let ak = op.wait_ready("leaky").await;
    let leaked = op.key_in("leaky", "api-key").await.expect("key");
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = dir.path().join("kc");
    std::fs::write(&kubeconfig, op.kubeconfig_yaml()).expect("kubeconfig");
    let keyward = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = tokio::task::block_in_place(|| keyward(&["rotate", "leaky", "--revoke-previous"]));
    assert!(
        said.contains("rotation and revocation of previous keys requested"),
        "{said}"
    );
    // How fast this happens is a benchmark's business (scripts/bench-rotation); here: it
    // happens, and the leaked key is gone with it.
    let record = common::eventually("the rotation and revocation", || async {
        op.record(&ak).await.filter(|r| {
            r.rotation.count == 1 && r.previous.is_empty() && r.rotation.last_revocation.is_some()
        })
    })
    .await;
    assert!(
        !verifies(Some(&record), &leaked),
        "the leaked key no longer verifies"
    );
    let new = op.key_in("leaky", "api-key").await.expect("key");
    assert!(verifies(op.record(&ak).await.as_ref(), &new));
    let table = tokio::task::block_in_place(|| keyward(&["history", "leaky"]));
    assert!(
        table.starts_with("AT")
            && table.contains("Revoked")
            && table.contains("Rotated")
            && table.contains("Generated"),
        "{table}"
    );
    assert!(!table.contains(&leaked) && !table.contains(&new));
    let json = tokio::task::block_in_place(|| keyward(&["history", "leaky", "-o", "json"]));
    let entries: Vec<keyward::history::Entry> = serde_json::from_str(&json).expect("json history");
    assert_eq!(
        entries.iter().map(|e| e.action).collect::<Vec<_>>(),
        [Action::Generated, Action::Rotated, Action::Revoked]
    );
    assert_eq!(
        entries[2].fingerprint, entries[0].fingerprint,
        "the Revoked entry names the revoked (leaked) key, not the one just issued"
    );
    assert_eq!(entries[2].preview, entries[0].preview);
    op.wait_event("Revoked", "Warning").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_previous_ends_an_imported_key_at_once() {
    let op = Operator::start().await;
    let source = |token: &str| {
        serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(json!({
            "metadata": {"name": "legacy"},
            "stringData": {"token": token},
        }))
        .expect("secret")
    };
    let old = "legacy-imported-token-0123456789abcdefghijklmnop";
    op.secrets()
        .create(&Default::default(), &source(old))
        .await
        .expect("source");
    let spec = json!({"importFrom": {"secretRef": {"name": "legacy", "key": "token"}}});
    op.apply("imported", spec).await;
    let ak = op.wait_ready("imported").await;
    // The leaked key is replaced at its source; it keeps its grace...
    op.secrets()
        .replace(
            "legacy",
            &Default::default(),
            &source("replacement-imported-token-0123456789abcdefghij"),
        )
        .await
        .expect("source replaced");
    let record = common::eventually("the new key imported", || async {
        op.record(&ak).await.filter(|r| r.previous.len() == 1)
    })
    .await;
    assert!(verifies(Some(&record), old), "inside its grace");
    // ...until someone responding to the leak revokes it.
    let patch = json!({"metadata": {"annotations": {"keyward.dev/revoke-previous": "leak-1"}}});
    op.apikeys()
        .patch("imported", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotated");
    let record = common::eventually("the revocation", || async {
        op.record(&ak).await.filter(|r| {
            r.previous.is_empty() && r.rotation.last_revocation.as_deref() == Some("leak-1")
        })
    })
    .await;
    assert!(
        !verifies(Some(&record), old),
        "the leaked key no longer verifies"
    );
    let revoked: Vec<_> = history(&op, "imported")
        .await
        .into_iter()
        .filter(|e| e.action == Action::Revoked)
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        Some(revoked[0].fingerprint.clone()),
        history(&op, "imported")
            .await
            .first()
            .map(|e| e.fingerprint.clone()),
        "the entry names the revoked key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_key_pauses_its_schedule_and_catches_up_once() {
    let clock = keyward::clock::FakeClock::new("2026-06-01T12:00:00Z".parse().expect("ts"));
    let op = Operator::start_with_clock(Arc::new(clock.clone())).await;
    let spec = |disabled: bool, owner: &str| json!({"rotation": {"every": "1h", "gracePeriod": "0s"}, "disabled": disabled, "owner": owner});
    op.apply("paused", spec(false, "a")).await;
    op.wait_ready("paused").await;
    let disabled = op.apply("paused", spec(true, "a")).await;
    let ak = op
        .wait_for("paused", "the pause advisory", |a| {
            status_of(a)
                .conditions
                .iter()
                .any(|c| c.type_ == "Advisory" && c.reason == "RotationPaused")
        })
        .await;
    let due = status_of(&ak).next_rotation_at.expect("next rotation");
    let _ = disabled;
    // Three slots pass while disabled: nothing rotates, and the status keeps the instant.
    clock.set("2026-06-01T15:30:00Z".parse().expect("ts"));
    let poked = op.apply("paused", spec(true, "b")).await;
    op.wait_seen(&poked).await;
    op.wait_idle().await;
    let ak = op.apikeys().get("paused").await.expect("apikey");
    assert_eq!(
        status_of(&ak).rotation_count,
        0,
        "no rotation while disabled"
    );
    assert_eq!(status_of(&ak).next_rotation_at, Some(due));
    // Manual rotation still acts.
    request_rotation(&op, "paused", "m1").await;
    op.wait_for("paused", "the manual rotation", |a| {
        status_of(a).rotation_count == 1
    })
    .await;
    // Enabled long after the next slot: one catch-up rotation, not one per missed slot.
    clock.set("2026-06-01T20:00:00Z".parse().expect("ts"));
    op.apply("paused", spec(false, "b")).await;
    op.wait_for("paused", "the catch-up rotation", |a| {
        status_of(a).rotation_count == 2
    })
    .await;
    op.wait_idle().await;
    let poked = op.apply("paused", spec(false, "c")).await;
    op.wait_seen(&poked).await;
    op.wait_idle().await;
    let ak = op.apikeys().get("paused").await.expect("apikey");
    assert_eq!(status_of(&ak).rotation_count, 2, "exactly one catch-up");
    assert!(
        !status_of(&ak)
            .conditions
            .iter()
            .any(|c| c.reason == "RotationPaused"),
        "the advisory goes with the pause"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn intervals_and_format_changes_rotate_and_report_the_next_rotation() {
    let op = Operator::start().await;
    op.apply(
        "tick",
        json!({"rotation": {"every": "1s", "gracePeriod": "1h"}}),
    )
    .await;
    let ak = op.wait_ready("tick").await;
    let next = status_of(&ak).next_rotation_at.expect("nextRotationAt");
    let issued = status_of(&ak).issued_at.expect("issuedAt");
    assert!(next.0 > issued.0);
    let rotated = op
        .wait_for("tick", "two scheduled rotations", |a| {
            status_of(a).rotation_count >= 2
        })
        .await;
    let entries = history(&op, "tick").await;
    assert!(
        entries
            .iter()
            .filter(|e| e.action == Action::Rotated)
            .all(|e| e.reason.as_str() == "Schedule")
    );
    // gracePeriod longer than the interval: allowed, with an advisory; Ready stays True.
    let advisory = status_of(&rotated)
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Advisory")
        .expect("advisory");
    assert_eq!(advisory.reason, "GracePeriodExceedsInterval");
    op.apply("fmt", json!({})).await;
    op.wait_ready("fmt").await;
    op.apply("fmt", json!({"format": {"prefix": "sk_new_"}}))
        .await;
    op.wait_for("fmt", "the new format", |a| {
        status_of(a)
            .preview
            .as_deref()
            .is_some_and(|p| p.starts_with("sk_new_"))
    })
    .await;
    assert!(
        op.key_in("fmt", "api-key")
            .await
            .expect("key")
            .starts_with("sk_new_")
    );
    assert_eq!(
        history(&op, "fmt")
            .await
            .last()
            .map(|e| e.reason.to_string())
            .as_deref(),
        Some("FormatChanged")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_missed_while_down_rotates_once_at_start() {
    let clock = keyward::clock::FakeClock::new("2026-03-27T12:00:00Z".parse().expect("ts"));
    let mut op = Operator::start_with_clock(Arc::new(clock.clone())).await;
    op.apply(
        "nightly",
        json!({"rotation": {"schedule": "0 3 * * *", "timeZone": "Europe/Berlin"}}),
    )
    .await;
    let ak = op.wait_ready("nightly").await;
    assert_eq!(
        status_of(&ak)
            .next_rotation_at
            .map(|t| t.0.to_string())
            .as_deref(),
        Some("2026-03-28T02:00:00Z")
    );
    op.stop().await;
    // Down across three nightly slots, one of them on the DST switch.
    clock.set("2026-03-30T12:00:00Z".parse().expect("ts"));
    op.restart().await;
    let after = op
        .wait_for("nightly", "the missed rotation", |a| {
            status_of(a).rotation_count >= 1
                && status_of(a)
                    .next_rotation_at
                    .map(|t| t.0.to_string())
                    .as_deref()
                    == Some("2026-03-31T01:00:00Z")
        })
        .await;
    // Whatever the rotation's own writes trigger runs, and a change makes one more pass:
    // neither rotates again.
    op.wait_idle().await;
    let poked = op.apply("nightly", json!({"rotation": {"schedule": "0 3 * * *", "timeZone": "Europe/Berlin"}, "owner": "poke"})).await;
    op.wait_seen(&poked).await;
    op.wait_idle().await;
    let after = op.apikeys().get("nightly").await.unwrap_or(after);
    assert_eq!(
        status_of(&after).rotation_count,
        1,
        "one rotation, not one per missed slot"
    );
    assert_eq!(
        status_of(&after)
            .next_rotation_at
            .map(|t| t.0.to_string())
            .as_deref(),
        Some("2026-03-31T01:00:00Z"),
        "03:00 Berlin summer time"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_restart_targets_warn_but_rotations_happen() {
    let op = Operator::start().await;
    op.apply(
        "lonely",
        json!({"rotation": {"restartTargets": [{"kind": "Deployment", "name": "ghost"}]}}),
    )
    .await;
    op.wait_ready("lonely").await;
    request_rotation(&op, "lonely", "x").await;
    op.wait_for("lonely", "rotated", |a| status_of(a).rotation_count == 1)
        .await;
    let ak = op
        .wait_for("lonely", "the advisory", |a| {
            status_of(a)
                .conditions
                .iter()
                .any(|c| c.reason == "RestartTargetMissing")
        })
        .await;
    let ready = keyward::conditions::ready(&status_of(&ak).conditions)
        .cloned()
        .expect("ready");
    assert_eq!(
        ready.status,
        keyward::crd::ConditionStatus::True,
        "not a failed rotation"
    );
    op.wait_event("RestartTargetMissing", "Warning").await;
    let _ = ak;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_rotation_specs() {
    let op = Operator::start().await;
    // The grammar and ranges are refused at admission (below); a date that never exists
    // is the operator's to say.
    op.apply("badcron", json!({"rotation": {"schedule": "0 3 30 2 *"}}))
        .await;
    let ak = op.wait_reason("badcron", "InvalidSpec").await;
    let message = keyward::conditions::ready(&status_of(&ak).conditions)
        .expect("ready")
        .message
        .clone();
    assert!(
        message.contains("rotation.schedule") && message.contains("never fires"),
        "{message}"
    );
    op.apply(
        "badtz",
        json!({"rotation": {"schedule": "0 3 * * *", "timeZone": "Europe/Atlantis"}}),
    )
    .await;
    let ak = op.wait_reason("badtz", "InvalidSpec").await;
    let message = keyward::conditions::ready(&status_of(&ak).conditions)
        .expect("ready")
        .message
        .clone();
    assert!(
        message.contains("rotation.timeZone")
            && message.contains("unknown time zone \"Europe/Atlantis\"")
            && message.contains("IANA name"),
        "field, value and rule: {message}"
    );
    for name in ["badcron", "badtz"] {
        assert!(
            op.secrets().get_opt(name).await.expect("get").is_none(),
            "nothing issued for {name}"
        );
    }
    let refused = |spec: serde_json::Value| {
        let api = op.apikeys();
        async move {
            let body: ApiKey = serde_json::from_value(json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey", "metadata": {"name": "refused"}, "spec": spec})).expect("typed");
            match api.create(&PostParams::default(), &body).await {
                Err(kube::Error::Api(s)) => s.message,
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
    };
    assert!(
        refused(json!({"rotation": {"schedule": "0 3 * * *", "every": "1h"}}))
            .await
            .contains("not both")
    );
    assert!(
        refused(json!({"rotation": {"historyLimit": 101}}))
            .await
            .contains("less than or equal to 100")
    );
    assert!(
        refused(json!({"rotation": {"schedule": "every day"}}))
            .await
            .contains("5-field cron")
    );
    assert!(
        refused(json!({"rotation": {"schedule": "0 25 * * *"}}))
            .await
            .contains("hour (0-23)")
    );
}
