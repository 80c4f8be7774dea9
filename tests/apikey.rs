//! The ApiKey controller end to end: the real controllers against the emulator over HTTP.

mod common;

use std::collections::BTreeMap;

use common::operator::{HASH_NS, Operator, verifies};
use k8s_openapi::api::core::v1::Secret;
use keyward::crd::ConditionStatus;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn ready(ak: &keyward::crd::ApiKey) -> (ConditionStatus, String, String) {
    let status = ak.status.clone().unwrap_or_default();
    let c = keyward::conditions::ready(&status.conditions).expect("Ready condition");
    (c.status, c.reason.clone(), c.message.clone())
}

async fn plain_secret(op: &Operator, name: &str, data: &[(&str, &str)]) -> Secret {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": data.iter().cloned().collect::<BTreeMap<_, _>>(),
    }))
    .expect("secret");
    op.secrets()
        .create(&PostParams::default(), &secret)
        .await
        .expect("Secret created")
}

#[tokio::test(flavor = "multi_thread")]
async fn issues_a_key_with_its_hash_record_and_annotations() {
    let op = Operator::start().await;
    op.apply("billing", json!({"owner": "team-billing", "scopes": ["read:models"], "format": {"prefix": "sk_live_"}, "rateLimit": {"requestsPerMinute": 60}})).await;
    let ak = op.wait_ready("billing").await;
    let status = ak.status.clone().expect("status");
    assert_eq!(ready(&ak).1, "KeyIssued");
    let key = op
        .key_in("billing", "api-key")
        .await
        .expect("key delivered");
    assert!(
        key.starts_with("sk_live_") && key.len() == 8 + 32 + 6,
        "{} chars",
        key.len()
    );
    let format = keyward::crd::KeyFormat {
        prefix: "sk_live_".into(),
        ..Default::default()
    };
    assert!(
        keyward::keys::format::parse(&key, &format).is_some(),
        "key has the §2 shape and checksum"
    );
    assert_eq!(
        status.preview.as_deref(),
        Some(format!("{}…", &key[..16]).as_str())
    );
    assert_eq!(
        status.fingerprint,
        Some(keyward::keys::fingerprint(&keyward::keys::PlainKey::new(
            key.clone()
        )))
    );
    assert_eq!(status.secret_name.as_deref(), Some("billing"));
    let record = op.record(&ak).await.expect("hash record");
    assert_eq!(
        status.hash_secret_name,
        Some(keyward::record::name_for(&ak.uid().expect("uid")))
    );
    let current = record.current.clone().expect("current key");
    assert!(current.hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    assert_eq!(record.access.owner.as_deref(), Some("team-billing"));
    assert_eq!(record.access.scopes, vec!["read:models".to_string()]);
    assert_eq!(record.access.requests_per_minute, Some(60));
    assert!(verifies(Some(&record), &key));
    assert!(!verifies(Some(&record), "sk_live_somethingelse"));
    let raw = op
        .records()
        .get(&keyward::record::name_for(&ak.uid().expect("uid")))
        .await
        .expect("record secret");
    assert_eq!(raw.type_.as_deref(), Some("keyward.dev/key-hash"));
    assert_eq!(
        raw.labels().get("keyward.dev/role").map(String::as_str),
        Some("hash")
    );
    assert_eq!(
        raw.labels()
            .get("keyward.dev/namespace")
            .map(String::as_str),
        Some(op.namespace.as_str())
    );
    let workload = op.secrets().get("billing").await.expect("workload");
    assert_eq!(
        workload.annotations().get("keyward.dev/key-id"),
        status.key_id.as_ref()
    );
    assert!(workload.annotations().contains_key("keyward.dev/issued-at"));
    let history = keyward::history::parse(
        workload
            .annotations()
            .get("keyward.dev/history")
            .map(String::as_str),
    );
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].action, keyward::history::Action::Generated);
    let owner = &workload.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("ApiKey", Some(true))
    );
    assert!(
        ak.finalizers()
            .contains(&"keyward.dev/hash-record".to_string())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn converged_keys_make_no_writes_on_resync_or_restart() {
    let mut op = Operator::start().await;
    if op
        .hooks("converged_keys_make_no_writes_on_resync_or_restart")
        .is_none()
    {
        return;
    }
    op.apply("quiet", json!({"owner": "me"})).await;
    let before = op.wait_ready("quiet").await;
    let key = op.key_in("quiet", "api-key").await.expect("key");
    op.wait_event("KeyIssued", "Normal").await;
    op.wait_idle().await;
    // A resync: watches dropped, lists and watches re-established.
    op.h().reset_counters();
    op.h().drop_watches();
    common::eventually("the controller to watch again", || async {
        (op.h().count("watch", "apikeys") > 0 && op.h().count("watch", "secrets") >= 2)
            .then_some(())
    })
    .await;
    op.wait_idle().await;
    assert_eq!(
        op.h().writes(),
        0,
        "writes after a resync: {:?}",
        op.h().counters()
    );
    op.apply("nudge", json!({})).await;
    op.wait_ready("nudge").await;
    // Its KeyIssued Event lands just after Ready: wait for it before counting again.
    op.wait_events("KeyIssued", "Normal", 2).await;
    op.wait_idle().await;
    // A restart: new caches, every object reconciled again.
    op.h().reset_counters();
    op.restart().await;
    op.wait_idle().await; // listed, both ApiKeys reconciled, nothing pending
    assert!(
        op.reconciles() >= 2,
        "both ApiKeys reconciled after the restart"
    );
    let writes = op.h().writes();
    assert_eq!(writes, 0, "writes after restart: {:?}", op.h().counters());
    assert!(
        op.h().count("list", "secrets") > 0,
        "the restarted operator did look (it lists into its caches)"
    );
    let after = op.apikeys().get("quiet").await.expect("get");
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(
        op.key_in("quiet", "api-key").await.as_deref(),
        Some(key.as_str()),
        "key material is generated once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_secret_is_never_touched() {
    let op = Operator::start().await;
    let foreign = plain_secret(&op, "taken", &[("api-key", "someone-elses")]).await;
    op.apply("grabby", json!({"secretName": "taken"})).await;
    let ak = op.wait_reason("grabby", "SecretConflict").await;
    let (status, _, message) = ready(&ak);
    assert_eq!(status, ConditionStatus::False);
    assert!(
        message.contains("\"taken\" already exists and is not managed by keyward"),
        "{message}"
    );
    op.wait_event("SecretConflict", "Warning").await;
    op.apikeys()
        .delete("grabby", &DeleteParams::default())
        .await
        .expect("delete");
    op.wait_gone("grabby").await;
    let after = op.secrets().get("taken").await.expect("still there");
    assert_eq!(
        after.metadata.resource_version, foreign.metadata.resource_version,
        "never modified"
    );
    assert_eq!(after.data, foreign.data);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_name_used_by_another_apikey_is_a_conflict() {
    let op = Operator::start().await;
    op.apply("first", json!({"secretName": "shared"})).await;
    op.wait_ready("first").await;
    let first_key = op.key_in("shared", "api-key").await;
    let first_secret = op.secrets().get("shared").await.expect("secret");
    op.apply("second", json!({"secretName": "shared"})).await;
    let ak = op.wait_reason("second", "SecretConflict").await;
    assert!(
        ready(&ak)
            .2
            .contains("already holds the key of ApiKey \"first\""),
        "{}",
        ready(&ak).2
    );
    assert_eq!(op.key_in("shared", "api-key").await, first_key);
    assert_eq!(
        op.secrets()
            .get("shared")
            .await
            .expect("secret")
            .metadata
            .resource_version,
        first_secret.metadata.resource_version
    );
}

impl Operator {
    async fn wait_gone(&self, name: &str) {
        let apikeys = self.apikeys();
        common::eventually(&format!("ApiKey {name} to be deleted"), || {
            let apikeys = apikeys.clone();
            async move {
                apikeys
                    .get_opt(name)
                    .await
                    .expect("get")
                    .is_none()
                    .then_some(())
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_policy_removes_secret_and_record() {
    let op = Operator::start().await;
    op.apply("gone", json!({})).await;
    let ak = op.wait_ready("gone").await;
    let key = op.key_in("gone", "api-key").await.expect("key");
    let record = op.record(&ak).await;
    assert!(verifies(record.as_ref(), &key));
    op.apikeys()
        .delete("gone", &DeleteParams::default())
        .await
        .expect("delete");
    op.wait_gone("gone").await;
    assert!(
        op.secrets().get_opt("gone").await.expect("get").is_none(),
        "workload Secret garbage-collected"
    );
    let record = op.record(&ak).await;
    assert!(record.is_none(), "hash record removed");
    assert!(!verifies(record.as_ref(), &key), "the key stops verifying");
}

#[tokio::test(flavor = "multi_thread")]
async fn retain_policy_keeps_the_secret_and_a_recreated_apikey_adopts_it() {
    let op = Operator::start().await;
    op.apply("kept", json!({"deletionPolicy": "Retain"})).await;
    let ak = op.wait_ready("kept").await;
    let fingerprint = ak.status.clone().and_then(|s| s.fingerprint);
    let key = op.key_in("kept", "api-key").await.expect("key");
    assert!(
        op.secrets()
            .get("kept")
            .await
            .expect("secret")
            .owner_references()
            .is_empty(),
        "Retain: no ownerReference"
    );
    op.apikeys()
        .delete("kept", &DeleteParams::default())
        .await
        .expect("delete");
    op.wait_gone("kept").await;
    assert!(
        op.record(&ak).await.is_none(),
        "the hash record goes either way"
    );
    let retained = op.secrets().get("kept").await.expect("the Secret stays");
    assert!(retained.owner_references().is_empty());
    assert_eq!(
        op.key_in("kept", "api-key").await.as_deref(),
        Some(key.as_str())
    );
    // GitOps delete-and-recreate: the same key comes back, not a new one.
    op.apply("kept", json!({"deletionPolicy": "Retain"})).await;
    let again = op.wait_ready("kept").await;
    assert_eq!(
        again.status.clone().and_then(|s| s.fingerprint),
        fingerprint,
        "adopted, not reissued"
    );
    assert_eq!(
        op.key_in("kept", "api-key").await.as_deref(),
        Some(key.as_str())
    );
    assert!(
        verifies(op.record(&again).await.as_ref(), &key),
        "the adopted key verifies again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_and_tampered_secrets_get_new_keys_and_moves_keep_the_key() {
    let op = Operator::start().await;
    op.apply("fragile", json!({})).await;
    let ak = op.wait_ready("fragile").await;
    let first = op.key_in("fragile", "api-key").await.expect("key");
    op.secrets()
        .delete("fragile", &DeleteParams::default())
        .await
        .expect("delete Secret");
    let ak2 = op
        .wait_for("fragile", "a new key", |a| {
            a.status.as_ref().and_then(|s| s.fingerprint.clone())
                != ak.status.as_ref().and_then(|s| s.fingerprint.clone())
        })
        .await;
    op.wait_ready("fragile").await;
    let second = op.key_in("fragile", "api-key").await.expect("new key");
    assert_ne!(first, second);
    let history = keyward::history::parse(
        op.secrets()
            .get("fragile")
            .await
            .expect("secret")
            .annotations()
            .get("keyward.dev/history")
            .map(String::as_str),
    );
    assert_eq!(
        history.last().map(|e| e.reason.as_str()),
        Some("SecretLost")
    );
    assert_eq!(history.len(), 2, "history survives the lost Secret");
    // Tampering: a planted key is never adopted.
    let planted = json!({"stringData": {"api-key": "kw_planted_weak_key"}});
    op.secrets()
        .patch("fragile", &PatchParams::default(), &Patch::Merge(&planted))
        .await
        .expect("tamper");
    op.wait_for("fragile", "a key after tampering", |a| {
        a.status.as_ref().and_then(|s| s.fingerprint.clone())
            != ak2.status.as_ref().and_then(|s| s.fingerprint.clone())
    })
    .await;
    let third = op.key_in("fragile", "api-key").await.expect("key");
    assert!(third != "kw_planted_weak_key" && third != second);
    let record = op.record(&ak).await;
    assert!(!verifies(record.as_ref(), "kw_planted_weak_key"));
    assert!(verifies(record.as_ref(), &third));
    for reason in ["SecretLost", "SecretTampered"] {
        op.wait_event(reason, "Warning").await;
    }
    // secretName changes move the same key.
    op.apply("fragile", json!({"secretName": "fragile-v2"}))
        .await;
    op.wait_for("fragile", "the key in fragile-v2", |a| {
        a.status.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("fragile-v2")
    })
    .await;
    assert_eq!(
        op.key_in("fragile-v2", "api-key").await.as_deref(),
        Some(third.as_str()),
        "same key, new Secret"
    );
    op.wait_secret_gone("fragile").await; // the old Secret is deleted
}

/// A ShowOnce key nobody reveals within its window leaves the Secret: only its hash stays.
/// The key was written by a create, so emptying the Secret cannot rely on server-side
/// apply dropping fields it does not alone manage (the fault suite caught the window
/// closing over and over with the key still there).
#[tokio::test(flavor = "multi_thread")]
async fn an_unrevealed_show_once_key_leaves_the_secret_when_its_window_closes() {
    let op = Operator::start().await;
    op.apply(
        "late",
        json!({"delivery": "ShowOnce", "revealWindow": "1s"}),
    )
    .await;
    let ak = op.wait_ready("late").await;
    let key = op.key_in("late", "api-key").await;
    assert!(key.is_some(), "the key waits in the Secret for its window");
    let closed = common::eventually("the window to close", || async {
        let s = op.secrets().get("late").await.ok()?;
        let gone = s.data.as_ref().is_none_or(|d| !d.contains_key("api-key"));
        let at = s
            .metadata
            .annotations
            .as_ref()?
            .get("keyward.dev/revealed-at")
            .cloned();
        (gone && at.is_some()).then_some(s)
    })
    .await;
    assert!(
        verifies(op.record(&ak).await.as_ref(), key.as_deref().expect("key")),
        "the hash still verifies the key whoever kept it"
    );
    // Converged: no more writes to the Secret once it is empty.
    op.wait_idle().await;
    let after = op.secrets().get("late").await.expect("Secret");
    assert_eq!(
        after.metadata.resource_version, closed.metadata.resource_version,
        "closing the window happens once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn show_once_keys_are_revealed_once() {
    let op = Operator::start().await;
    op.apply("customer", json!({"delivery": "ShowOnce"})).await;
    let ak = op.wait_ready("customer").await;
    assert!(
        ready(&ak).2.contains("waiting to be revealed"),
        "{}",
        ready(&ak).2
    );
    let key = op
        .key_in("customer", "api-key")
        .await
        .expect("key waits in the Secret");
    let run = |args: &[&str]| {
        let kubeconfig = tempfile::NamedTempFile::new().expect("tmp");
        std::fs::write(kubeconfig.path(), op.kubeconfig_yaml()).expect("kubeconfig");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("--kubeconfig")
            .arg(kubeconfig.path())
            .args(args)
            .output()
            .expect("keyward runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| run(&["reveal", "customer"]));
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.trim(),
        key,
        "reveal prints exactly the key on stdout"
    );
    assert!(!stderr.contains(&key));
    let revealed = op.wait_reason("customer", "Revealed").await;
    assert!(
        revealed
            .status
            .clone()
            .and_then(|s| s.revealed_at)
            .is_some()
    );
    assert!(
        op.key_in("customer", "api-key").await.is_none(),
        "only the hash remains"
    );
    assert!(
        verifies(op.record(&ak).await.as_ref(), &key),
        "the customer's key still verifies"
    );
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| run(&["reveal", "customer"]));
    assert!(
        !ok && stdout.is_empty() && stderr.contains("already revealed"),
        "{stderr}"
    );
    let (ok, _, stderr) = tokio::task::block_in_place(|| run(&["reveal", "nobody"]));
    assert!(!ok && stderr.contains("not found"), "{stderr}");
    let (ok, table, stderr) = tokio::task::block_in_place(|| run(&["status"]));
    assert!(ok, "{stderr}");
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "OWNER",
            "PREVIEW",
            "READY",
            "ISSUED",
            "NEXT ROTATION",
            "USAGE"
        ],
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("customer"))
        .expect("a row for the ApiKey");
    assert!(
        row.contains("True (Revealed)") && row.contains(&key[..11]) && !row.contains(&key),
        "{row}"
    );
    op.wait_event("Revealed", "Normal").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn imported_keys_weak_or_not() {
    let op = Operator::start().await;
    plain_secret(&op, "legacy", &[("token", "hunter2")]).await;
    op.apply(
        "manual",
        json!({"importFrom": {"secretRef": {"name": "legacy", "key": "token"}}}),
    )
    .await;
    let ak = op.wait_ready("manual").await;
    let status = ak.status.clone().expect("status");
    let advisory = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Advisory")
        .expect("advisory");
    assert_eq!(advisory.reason, "WeakKey");
    assert_eq!(
        ready(&ak).0,
        ConditionStatus::True,
        "weak keys are accepted"
    );
    assert_eq!(
        op.key_in("manual", "api-key").await.as_deref(),
        Some("hunter2")
    );
    let record = op.record(&ak).await.expect("record");
    assert!(verifies(Some(&record), "hunter2"));
    op.wait_event("KeyImported", "Normal").await;
    let fp = status.fingerprint.expect("fingerprint");
    assert_ne!(
        fp,
        keyward::keys::fingerprint(&keyward::keys::PlainKey::new("hunter2")),
        "weak keys get a keyed fingerprint"
    );
    assert!(!status.preview.unwrap_or_default().contains("hun"));
    // The source changes: the new key is imported, the old one keeps its grace.
    op.secrets()
        .patch(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"stringData": {"token": "a-much-longer-imported-token-0123456789"}}),
            ),
        )
        .await
        .expect("rotate source");
    op.wait_for("manual", "the new import", |a| {
        a.status.as_ref().and_then(|s| s.fingerprint.clone()) != Some(fp.clone())
    })
    .await;
    let record = op.record(&ak).await.expect("record");
    assert!(verifies(
        Some(&record),
        "a-much-longer-imported-token-0123456789"
    ));
    assert!(
        verifies(Some(&record), "hunter2"),
        "previous key inside its grace period"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_and_expired_keys() {
    let op = Operator::start().await;
    op.apply("toggle", json!({"disabled": true})).await;
    let ak = op.wait_reason("toggle", "Disabled").await;
    assert_eq!(ready(&ak).0, ConditionStatus::False);
    assert!(op.record(&ak).await.expect("record").access.disabled);
    assert!(
        op.key_in("toggle", "api-key").await.is_some(),
        "the Secret stays"
    );
    op.wait_event("Disabled", "Normal").await;
    op.apply("toggle", json!({"disabled": false})).await;
    op.wait_reason("toggle", "KeyIssued").await;
    op.wait_event("Enabled", "Normal").await;
    assert!(!op.record(&ak).await.expect("record").access.disabled);
    let history = keyward::history::parse(
        op.secrets()
            .get("toggle")
            .await
            .expect("s")
            .annotations()
            .get("keyward.dev/history")
            .map(String::as_str),
    );
    let actions: Vec<_> = history.iter().map(|e| e.action).collect();
    use keyward::history::Action::*;
    assert_eq!(actions, [Generated, Enabled]);
    op.apply("brief", json!({"expiresAfter": "1s"})).await;
    let ak = op.wait_reason("brief", "Expired").await;
    assert!(ak.status.clone().and_then(|s| s.expires_at).is_some());
    let history = keyward::history::parse(
        op.secrets()
            .get("brief")
            .await
            .expect("s")
            .annotations()
            .get("keyward.dev/history")
            .map(String::as_str),
    );
    assert_eq!(history.last().map(|e| e.action), Some(Expired));
    op.wait_event("Expired", "Warning").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_and_nothing_changes() {
    let op = Operator::start().await;
    let existing = plain_secret(&op, "bystander", &[("api-key", "x")]).await;
    let create = |name: &str, spec: serde_json::Value| {
        let body: keyward::crd::ApiKey = serde_json::from_value(json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey", "metadata": {"name": name}, "spec": spec})).expect("typed");
        let api = op.apikeys();
        async move { api.create(&PostParams::default(), &body).await }
    };
    let refused = |r: Result<keyward::crd::ApiKey, kube::Error>, expected: &str| match r {
        Err(kube::Error::Api(s)) => assert!(
            s.code == 422 && s.message.contains(expected),
            "{}",
            s.message
        ),
        other => panic!("expected a refusal mentioning {expected:?}, got {other:?}"),
    };
    refused(
        create(
            "weak",
            json!({"secretName": "bystander", "format": {"length": 16}}),
        )
        .await,
        "fewer than 128 random bits",
    );
    refused(
        create(
            "prefix",
            json!({"secretName": "bystander", "format": {"prefix": "sk live"}}),
        )
        .await,
        "prefix may only contain",
    );
    refused(
        create(&"n".repeat(64), json!({})).await,
        "at most 63 characters",
    );
    refused(
        create(
            "negative",
            json!({"secretName": "bystander", "expiresAfter": "-1h"}),
        )
        .await,
        "no sign",
    );
    refused(
        create(
            "negative-grace",
            json!({"rotation": {"gracePeriod": "-5m"}}),
        )
        .await,
        "no sign",
    );
    // Import sources that are not there: a condition, and no Secret.
    op.apply(
        "no-source",
        json!({"importFrom": {"secretRef": {"name": "nowhere"}}}),
    )
    .await;
    let ak = op.wait_reason("no-source", "ImportFailed").await;
    assert!(
        ready(&ak).2.contains("Secret \"nowhere\" not found"),
        "{}",
        ready(&ak).2
    );
    plain_secret(&op, "somewhere", &[("other", "x")]).await;
    op.apply(
        "no-key",
        json!({"importFrom": {"secretRef": {"name": "somewhere", "key": "token"}}}),
    )
    .await;
    let ak = op.wait_reason("no-key", "ImportFailed").await;
    assert!(
        ready(&ak).2.contains("has no data key \"token\""),
        "{}",
        ready(&ak).2
    );
    // An expiry already past: nothing issued.
    op.apply("stale", json!({"expiresAt": "2020-01-01T00:00:00Z"}))
        .await;
    let ak = op.wait_reason("stale", "InvalidSpec").await;
    assert!(
        ready(&ak).2.contains("expiresAt is in the past"),
        "{}",
        ready(&ak).2
    );
    for name in ["no-source", "no-key", "stale"] {
        assert!(
            op.secrets().get_opt(name).await.expect("get").is_none(),
            "{name}: no Secret written"
        );
    }
    assert!(op.apikeys().get_opt("weak").await.expect("get").is_none());
    let after = op.secrets().get("bystander").await.expect("bystander");
    assert_eq!(
        after.metadata.resource_version, existing.metadata.resource_version,
        "no existing Secret changed"
    );
    // A source that appears later is picked up (metadata watch), without a spec change.
    plain_secret(
        &op,
        "nowhere",
        &[("api-key", "a-long-enough-key-0123456789abcdefghijkl")],
    )
    .await;
    op.wait_ready("no-source").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hashes_verify_with_an_independent_argon2_implementation() {
    let op = Operator::start().await;
    op.apply("portable", json!({})).await;
    let ak = op.wait_ready("portable").await;
    let key = op.key_in("portable", "api-key").await.expect("key");
    let phc = op
        .record(&ak)
        .await
        .expect("record")
        .current
        .expect("current")
        .hash;
    let check = |candidate: &str| -> bool {
        use std::io::Write;
        let mut child = std::process::Command::new("python3")
            .args(["-c", "import sys\nfrom argon2 import PasswordHasher\nphc, key = sys.stdin.read().split('\\n', 1)\ntry:\n    PasswordHasher().verify(phc, key)\n    print('match')\nexcept Exception:\n    print('mismatch')\n"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{phc}\n{candidate}").as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("python finishes");
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            stdout == "match" || stdout == "mismatch",
            "argon2-cffi unavailable (scripts/install-tools installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout == "match"
    };
    assert!(
        check(&key),
        "argon2-cffi verifies keyward's hash of the key"
    );
    assert!(!check("kw_not_the_key"), "and rejects another key");
    let _ = HASH_NS;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_pepper_is_rekeyed_from_the_workload_secret() {
    let mut op = Operator::start().await;
    if !op.owns_hash_namespace("a_replaced_pepper_is_rekeyed_from_the_workload_secret") {
        return;
    }
    op.apply("peppered", json!({})).await;
    let ak = op.wait_ready("peppered").await;
    let key = op.key_in("peppered", "api-key").await.expect("key");
    let before = op
        .record(&ak)
        .await
        .expect("record")
        .current
        .expect("current");
    op.stop().await;
    op.records()
        .delete(keyward::controller::PEPPER_SECRET, &DeleteParams::default())
        .await
        .expect("pepper lost");
    op.restart().await; // creates a new pepper
    let after = common::eventually(
        "the record re-keyed under the new pepper after the restart",
        || async {
            let current = op
                .record(&ak)
                .await
                .expect("record")
                .current
                .expect("current");
            (current.pepper_id != before.pepper_id).then_some(current)
        },
    )
    .await;
    let pepper_secret = op
        .records()
        .get(keyward::controller::PEPPER_SECRET)
        .await
        .expect("new pepper");
    let pepper = keyward::keys::Pepper::new(pepper_secret.data.expect("data")["pepper"].0.clone());
    assert_eq!(after.pepper_id, pepper.id());
    assert!(
        pepper.matches(&key, &after.fast_hash),
        "fast hash re-keyed under the new pepper"
    );
    assert_eq!(
        after.hash, before.hash,
        "the portable argon2 hash is unchanged"
    );
    assert_eq!(after.key_id, before.key_id, "same key, no rotation");
}
