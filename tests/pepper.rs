//! Changing the pepper (DESIGN §6) while the controllers and a verifier run: the operator
//! picks a new `pepper` up live, keeps the one it loaded before in `pepper-previous` while
//! records name it, re-keys every key it can read, recreates a deleted pepper Secret from
//! memory; verifiers keep previous keys on their fast hash, and argon2 is left for records
//! under a pepper that is in neither slot.
//!
//! Peppers are compared by their public ids: their bytes never reach the test output.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::operator::{Operator, until_code, verifier_with, verify_json};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use keyward::controller::PEPPER_SECRET;
use keyward::crd::ApiKey;
use keyward::hashing::HashPool;
use keyward::keys::Pepper;
use keyward::record::HashRecord;
use keyward::verifier::Running;
use keyward_emulator::{Fault, FaultAction};
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

/// What the pepper Secret holds now, as ids: (`pepper`, `pepper-previous`); `None` while it
/// does not exist.
async fn stored(op: &Operator) -> Option<(Option<String>, Option<String>)> {
    let secret = op
        .records()
        .get_opt(PEPPER_SECRET)
        .await
        .expect("get the pepper Secret")?;
    let data = secret.data.unwrap_or_default();
    let id = |key: &str| data.get(key).map(|b| Pepper::new(b.0.clone()).id());
    Some((id("pepper"), id("pepper-previous")))
}

/// Waits until the pepper Secret holds `pepper` and, in `pepper-previous`, `previous`.
async fn wait_stored(op: &Operator, what: &str, pepper: &Pepper, previous: Option<&Pepper>) {
    let want = Some((Some(pepper.id()), previous.map(Pepper::id)));
    common::eventually(&format!("the pepper Secret to hold {what}"), || async {
        (stored(op).await == want).then_some(())
    })
    .await;
}

/// The pepper the Secret holds now.
async fn current_pepper(op: &Operator) -> Pepper {
    let secret = op
        .records()
        .get(PEPPER_SECRET)
        .await
        .expect("pepper Secret");
    Pepper::new(secret.data.expect("data")["pepper"].0.clone())
}

/// Writes a new `pepper`, as a person would with `kubectl patch`.
async fn change_pepper(op: &Operator) -> Pepper {
    let fresh = Pepper::generate().expect("randomness");
    let patch = json!({"data": {"pepper": ByteString(fresh.bytes().to_vec())}});
    op.records()
        .patch(
            PEPPER_SECRET,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("pepper changed");
    fresh
}

async fn record_of(op: &Operator, name: &str) -> HashRecord {
    let ak = op.apikeys().get(name).await.expect("ApiKey");
    op.record(&ak).await.expect("hash record")
}

/// Waits until `name`'s current key is recorded under `pepper`; returns the record.
async fn wait_rekeyed(op: &Operator, name: &str, pepper: &Pepper) -> HashRecord {
    common::eventually(
        &format!("{name}'s current key re-keyed under the new pepper"),
        || async {
            let record = record_of(op, name).await;
            let id = record.current.as_ref().map(|c| c.pepper_id.clone());
            (id == Some(pepper.id())).then_some(record)
        },
    )
    .await
}

/// Rotates `name` once more (manual request `value`) and waits for it.
async fn rotate(op: &Operator, name: &str, value: &str, count: u64) -> ApiKey {
    let patch = json!({"metadata": {"annotations": {"keyward.dev/rotate": value}}});
    op.apikeys()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("rotation requested");
    op.wait_for(name, "rotated", |a| {
        a.status.as_ref().is_some_and(|s| s.rotation_count == count)
    })
    .await
}

/// A verifier on a hashing pool of its own, so its argon2 runs can be counted.
async fn counted_verifier(op: &Operator) -> (Running, HashPool) {
    let pool = HashPool::new(1);
    let options = keyward::verifier::Options {
        hash_pool: Some(pool.clone()),
        ..Default::default()
    };
    (verifier_with(op, options).await, pool)
}

/// Waits until the verifier checks fast hashes under exactly these peppers (current first).
async fn wait_verifier_peppers(v: &Running, peppers: &[&Pepper]) {
    let want: Vec<String> = peppers.iter().map(|p| p.id()).collect();
    common::eventually("the verifier to load the peppers", || {
        let ids = v.verifier.pepper_ids();
        let done = ids == want;
        async move { done.then_some(()) }
    })
    .await;
}

/// The verifier's answer code for `key`.
fn code(addr: &str, key: &str) -> String {
    tokio::task::block_in_place(|| verify_json(addr, key))["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_pepper_is_picked_up_live_and_every_readable_key_is_rekeyed() {
    let op = Operator::start().await;
    if !op.owns_hash_namespace("a_new_pepper_is_picked_up_live_and_every_readable_key_is_rekeyed") {
        return;
    }
    let running = verifier_with(&op, Default::default()).await;
    let addr = running.addr.to_string();
    op.apply("one", json!({})).await;
    op.apply("two", json!({"format": {"prefix": "sk_live_"}}))
        .await;
    op.apply("rot", json!({"rotation": {"gracePeriod": "1h"}}))
        .await;
    op.apply_pool("tokens", json!({"size": 2, "verification": true}))
        .await;
    for name in ["one", "two", "rot"] {
        op.wait_ready(name).await;
    }
    op.wait_pool_full("tokens", 2).await;
    let rotated_out = op.key_in("rot", "api-key").await.expect("key");
    rotate(&op, "rot", "1", 1).await;
    let p0 = current_pepper(&op).await;
    let mut before = Vec::new();
    for name in ["one", "two", "rot"] {
        let record = record_of(&op, name).await;
        assert_eq!(
            record.current.as_ref().map(|c| c.pepper_id.clone()),
            Some(p0.id())
        );
        before.push(record);
    }

    let p1 = change_pepper(&op).await;
    // The pepper loaded before goes into the slot, and stays there: rot's previous key,
    // which the operator cannot re-key, names it.
    wait_stored(&op, "the old pepper as previous", &p1, Some(&p0)).await;
    for (name, before) in ["one", "two", "rot"].into_iter().zip(&before) {
        let after = wait_rekeyed(&op, name, &p1).await;
        let (was, now) = (
            before.current.as_ref().expect("current"),
            after.current.as_ref().expect("current"),
        );
        assert_eq!(
            (&now.key_id, &now.hash),
            (&was.key_id, &was.hash),
            "{name}: the same key, its argon2 hash unchanged"
        );
    }
    let rot = record_of(&op, "rot").await;
    assert_eq!(
        rot.previous
            .iter()
            .map(|p| p.key.pepper_id.clone())
            .collect::<Vec<_>>(),
        [p0.id()],
        "the previous key keeps the fast hash it was made with"
    );
    // Pool keys still in the pool are read from their Secrets and re-keyed too.
    common::eventually("the pool's records re-keyed", || async {
        let records = op.pool_records("tokens").await;
        (records.len() == 2 && records.iter().all(|r| r.key.pepper_id == p1.id())).then_some(())
    })
    .await;
    assert_eq!(
        op.context().peppers.current().id(),
        p1.id(),
        "the running operator, not a restarted one, works with the new pepper"
    );
    for name in ["one", "two", "rot"] {
        let key = op.key_in(name, "api-key").await.expect("key");
        until_code(&addr, &key, "VALID").await;
    }
    until_code(&addr, &rotated_out, "VALID").await;
    let pool_key = op
        .pool_keys("tokens")
        .await
        .into_values()
        .next()
        .expect("a pool key");
    until_code(&addr, &pool_key, "VALID").await;
    // Nothing else to do: the slot stays while rot's previous key needs it.
    op.wait_idle().await;
    assert_eq!(stored(&op).await, Some((Some(p1.id()), Some(p0.id()))));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_previous_key_keeps_its_fast_hash_through_a_pepper_change_until_its_valid_until() {
    let op = Operator::start().await;
    if !op.owns_hash_namespace("a_previous_key_keeps_its_fast_hash_through_a_pepper_change") {
        return;
    }
    let (running, hash_pool) = counted_verifier(&op).await;
    let addr = running.addr.to_string();
    op.apply("rot", json!({"rotation": {"gracePeriod": "15s"}}))
        .await;
    op.wait_ready("rot").await;
    let old = op.key_in("rot", "api-key").await.expect("key");
    rotate(&op, "rot", "1", 1).await;
    let new = op.key_in("rot", "api-key").await.expect("key");
    let until = record_of(&op, "rot").await.previous[0].valid_until;
    until_code(&addr, &old, "VALID").await;
    until_code(&addr, &new, "VALID").await;
    let p0 = current_pepper(&op).await;

    // Both keys are presented all the time, from before the change until after the previous
    // key's valid-until.
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (stop, addr, old, new) = (stop.clone(), addr.clone(), old.clone(), new.clone());
        tokio::task::spawn_blocking(move || {
            let margin = SignedDuration::from_millis(300);
            let (mut wrong, mut inside) = (Vec::new(), 0u32);
            while !stop.load(Ordering::SeqCst) {
                let asked = Timestamp::now();
                let answer = verify_json(&addr, &old)["code"].to_string();
                if asked + margin < until {
                    inside += 1;
                    if answer != "\"VALID\"" {
                        wrong.push(format!(
                            "the previous key answered {answer} inside its grace"
                        ));
                    }
                }
                let answer = verify_json(&addr, &new)["code"].to_string();
                if answer != "\"VALID\"" {
                    wrong.push(format!("the current key answered {answer}"));
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            (wrong, inside)
        })
    };
    let p1 = change_pepper(&op).await;
    wait_stored(&op, "the old pepper as previous", &p1, Some(&p0)).await;
    wait_rekeyed(&op, "rot", &p1).await;
    assert!(
        Timestamp::now() < until,
        "the change was done while the previous key was inside its grace (a slow machine?)"
    );
    // The grace ends by itself: the operator prunes the key at its valid-until, and then
    // nothing names the old pepper any more.
    common::eventually("the previous key's valid-until", || async {
        (Timestamp::now() > until).then_some(())
    })
    .await;
    until_code(&addr, &old, "NOT_FOUND").await;
    wait_stored(&op, "no previous pepper", &p1, None).await;
    stop.store(true, Ordering::SeqCst);
    let (wrong, inside) = monitor.await.expect("monitor");
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(inside > 10, "presented {inside} times inside the grace");
    assert_eq!(
        hash_pool.stats().started,
        0,
        "the verifier never ran argon2: every key had a fast hash under a pepper it held"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pepper_previous_goes_once_no_record_names_it() {
    let op = Operator::start().await;
    if !op.owns_hash_namespace("pepper_previous_goes_once_no_record_names_it") {
        return;
    }
    op.apply("leaky", json!({"rotation": {"gracePeriod": "1h"}}))
        .await;
    op.wait_ready("leaky").await;
    rotate(&op, "leaky", "1", 1).await;
    let p0 = current_pepper(&op).await;
    let p1 = change_pepper(&op).await;
    wait_stored(&op, "the old pepper as previous", &p1, Some(&p0)).await;
    wait_rekeyed(&op, "leaky", &p1).await;
    op.wait_idle().await;
    assert_eq!(
        stored(&op).await,
        Some((Some(p1.id()), Some(p0.id()))),
        "kept while the previous key names it"
    );
    // Ending the previous key's grace removes the last record entry under the old pepper.
    let patch = json!({"metadata": {"annotations": {"keyward.dev/revoke-previous": "1"}}});
    op.apikeys()
        .patch("leaky", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("revoke");
    wait_stored(&op, "no previous pepper", &p1, None).await;
    assert!(record_of(&op, "leaky").await.previous.is_empty());
    assert!(
        op.context().peppers.get().previous.is_none(),
        "the operator lets it go too"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_pepper_secret_is_recreated_from_memory() {
    let op = Operator::start().await;
    if !op.owns_hash_namespace("a_deleted_pepper_secret_is_recreated_from_memory") {
        return;
    }
    let (running, hash_pool) = counted_verifier(&op).await;
    let addr = running.addr.to_string();
    op.apply("rot", json!({"rotation": {"gracePeriod": "1h"}}))
        .await;
    op.wait_ready("rot").await;
    let old = op.key_in("rot", "api-key").await.expect("key");
    rotate(&op, "rot", "1", 1).await;
    let new = op.key_in("rot", "api-key").await.expect("key");
    let p0 = current_pepper(&op).await;
    let p1 = change_pepper(&op).await;
    wait_stored(&op, "the old pepper as previous", &p1, Some(&p0)).await;
    wait_rekeyed(&op, "rot", &p1).await;
    wait_verifier_peppers(&running, &[&p1, &p0]).await;
    until_code(&addr, &old, "VALID").await;
    until_code(&addr, &new, "VALID").await;

    let gone = op
        .records()
        .get(PEPPER_SECRET)
        .await
        .expect("pepper Secret");
    op.records()
        .delete(PEPPER_SECRET, &DeleteParams::default())
        .await
        .expect("pepper Secret deleted");
    common::eventually("the pepper Secret recreated", || async {
        let secret = op.records().get_opt(PEPPER_SECRET).await.expect("get")?;
        (secret.uid() != gone.uid()).then_some(())
    })
    .await;
    assert_eq!(
        stored(&op).await,
        Some((Some(p1.id()), Some(p0.id()))),
        "the current pepper, and the previous one from memory"
    );
    assert_eq!(code(&addr, &old), "VALID");
    assert_eq!(code(&addr, &new), "VALID");
    wait_verifier_peppers(&running, &[&p1, &p0]).await;
    // A key issued afterwards is made under the same pepper.
    op.apply("after", json!({})).await;
    op.wait_ready("after").await;
    let after = op.key_in("after", "api-key").await.expect("key");
    until_code(&addr, &after, "VALID").await;
    assert_eq!(
        record_of(&op, "after").await.current.map(|c| c.pepper_id),
        Some(p1.id())
    );
    assert_eq!(
        hash_pool.stats().started,
        0,
        "no argon2 at the verifier through the deletion"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_changes_in_a_row_keep_the_second_to_last_and_argon2_serves_the_oldest() {
    let op = Operator::start().await;
    if op
        .hooks("two_changes_in_a_row_keep_the_second_to_last_and_argon2_serves_the_oldest")
        .is_none()
    {
        return;
    }
    let (running, hash_pool) = counted_verifier(&op).await;
    let addr = running.addr.to_string();
    op.apply("stuck", json!({})).await;
    op.apply("rot", json!({"rotation": {"gracePeriod": "1h"}}))
        .await;
    let stuck = op.wait_ready("stuck").await;
    op.wait_ready("rot").await;
    let stuck_key = op.key_in("stuck", "api-key").await.expect("key");
    let stuck_before = record_of(&op, "stuck").await;
    let p0 = current_pepper(&op).await;
    // The API refuses every write to stuck's record for now: it stays under the first
    // pepper however often the operator tries to re-key it.
    let stuck_record = keyward::record::name_for(&stuck.uid().expect("uid"));
    op.h().add_fault(
        Fault::new("patch", "secrets", 1, FaultAction::Fail(500))
            .times(u64::MAX / 2)
            .named(&stuck_record),
    );

    let p1 = change_pepper(&op).await;
    wait_stored(&op, "the first pepper as previous", &p1, Some(&p0)).await;
    wait_rekeyed(&op, "rot", &p1).await;
    // rot's key under the second pepper becomes a previous key (still readable only through
    // its hashes), so a record names the second pepper for the next hour.
    let rotated_out = op.key_in("rot", "api-key").await.expect("key");
    rotate(&op, "rot", "1", 1).await;
    assert_eq!(
        record_of(&op, "rot").await.previous[0].key.pepper_id,
        p1.id()
    );

    let p2 = change_pepper(&op).await;
    wait_stored(&op, "the second pepper as previous", &p2, Some(&p1)).await;
    wait_rekeyed(&op, "rot", &p2).await;
    wait_verifier_peppers(&running, &[&p2, &p1]).await;
    assert_eq!(
        record_of(&op, "stuck").await.current.map(|c| c.pepper_id),
        Some(p0.id()),
        "stuck is still under the first pepper"
    );
    // The previous key under the second pepper: fast hash.
    let runs = hash_pool.stats().started;
    assert_eq!(code(&addr, &rotated_out), "VALID");
    assert_eq!(
        hash_pool.stats().started,
        runs,
        "no argon2 under pepper-previous"
    );
    // stuck's key under the first pepper, in neither slot: argon2 (its one candidate) once;
    // proven, the next presentation comes from the success cache.
    assert_eq!(code(&addr, &stuck_key), "VALID");
    assert_eq!(code(&addr, &stuck_key), "VALID");
    assert_eq!(
        hash_pool.stats().started,
        runs + 1,
        "one argon2 run, then the success cache"
    );

    // The API takes writes again: stuck, a current key, is re-keyed under the newest pepper
    // (its workload key matched by argon2, the first pepper being gone).
    op.h().clear_faults();
    op.apply("stuck", json!({"owner": "wake-up"})).await;
    let after = wait_rekeyed(&op, "stuck", &p2).await;
    let (was, now) = (
        stuck_before.current.expect("current"),
        after.current.expect("current"),
    );
    assert_eq!(
        (now.key_id, now.hash),
        (was.key_id, was.hash),
        "the same key"
    );
    common::eventually("stuck's key verified on the fast path again", || async {
        let runs = hash_pool.stats().started;
        (code(&addr, &stuck_key) == "VALID" && hash_pool.stats().started == runs).then_some(())
    })
    .await;
    assert_eq!(
        stored(&op).await,
        Some((Some(p2.id()), Some(p1.id()))),
        "the first pepper stays dropped"
    );
}
