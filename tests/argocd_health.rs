//! The Argo CD health check (docs/gitops/argocd-health.lua), run by Debian's Lua 5.1 (the
//! language version Argo CD's interpreter implements) against objects of each kind whose
//! conditions come from keyward's own condition code, as the controllers write them.

mod common;

use std::path::PathBuf;
use std::process::Command;

use jiff::Timestamp;
use keyward::conditions::{self, Reason, Wanted};
use keyward::crd::{
    ApiKeyPoolStatus, ApiKeyStatus, Condition, ConditionStatus, Phase, ProviderCredentialStatus,
};
use serde_json::{Value, json};

fn script() -> PathBuf {
    common::root().join("docs/gitops/argocd-health.lua")
}

fn lua() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = PathBuf::from(dir).join("lua5.1");
        if candidate.exists() {
            return candidate;
        }
    }
    let system = PathBuf::from("/usr/bin/lua5.1");
    assert!(
        system.exists(),
        "lua5.1 is not installed: run scripts/install-tools (it installs Debian's lua5.1)"
    );
    system
}

/// A Lua expression for `v` (strings escaped byte by byte, so any text survives).
fn lua_literal(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("\"");
            for b in s.bytes() {
                match b {
                    b'"' => out.push_str("\\\""),
                    b'\\' => out.push_str("\\\\"),
                    0x20..=0x7e => out.push(b as char),
                    _ => out.push_str(&format!("\\{b}")),
                }
            }
            out.push('"');
            out
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("[{}] = {}", lua_literal(&json!(k)), lua_literal(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// Runs the health check on `obj`: (status, message).
fn health(obj: &Value) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let runner = dir.path().join("run.lua");
    let program = format!(
        "obj = {}\nlocal hs = dofile({})\nio.write(hs.status, \"\\n\", hs.message or \"\", \"\\n\")\n",
        lua_literal(obj),
        lua_literal(&json!(script().display().to_string())),
    );
    std::fs::write(&runner, program).expect("runner written");
    let out = Command::new(lua()).arg(&runner).output().expect("lua runs");
    assert!(
        out.status.success(),
        "the health check failed on {obj}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let mut lines = text.lines();
    (
        lines.next().unwrap_or_default().to_string(),
        lines.next().unwrap_or_default().to_string(),
    )
}

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("instant")
}

/// Conditions as keyward's controllers compute them for `generation`.
fn conds(wanted: &[Wanted], generation: i64) -> Vec<Condition> {
    conditions::merge(&[], wanted, Some(generation), now())
}

fn object(kind: &str, generation: i64, status: Option<Value>) -> Value {
    let mut obj = json!({
        "apiVersion": "keyward.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "shop", "generation": generation},
        "spec": {},
    });
    if let Some(s) = status {
        obj["status"] = s;
    }
    obj
}

fn apikey(generation: i64, observed: i64, wanted: &[Wanted]) -> Value {
    let status = ApiKeyStatus {
        observed_generation: Some(observed),
        conditions: conds(wanted, observed),
        ..Default::default()
    };
    object(
        "ApiKey",
        generation,
        Some(serde_json::to_value(status).expect("status")),
    )
}

fn pool(generation: i64, observed: i64, wanted: &[Wanted]) -> Value {
    let status = ApiKeyPoolStatus {
        observed_generation: Some(observed),
        conditions: conds(wanted, observed),
        ..Default::default()
    };
    object(
        "ApiKeyPool",
        generation,
        Some(serde_json::to_value(status).expect("status")),
    )
}

fn credential(generation: i64, observed: i64, phase: Phase, wanted: &[Wanted]) -> Value {
    let status = ProviderCredentialStatus {
        observed_generation: Some(observed),
        conditions: conds(wanted, observed),
        phase: Some(phase),
        ..Default::default()
    };
    object(
        "ProviderCredential",
        generation,
        Some(serde_json::to_value(status).expect("status")),
    )
}

fn check(what: &str, obj: &Value, status: &str, message_part: &str) {
    let (got, message) = health(obj);
    assert_eq!(got, status, "{what}: {message}");
    assert!(
        message.contains(message_part),
        "{what}: {message_part:?} not in {message:?}"
    );
}

#[test]
fn apikey_health() {
    let ready = |r, m: &str| Wanted::ready(r, m);
    let not_ready = |r, m: &str| Wanted::not_ready(r, m);
    check(
        "issued",
        &apikey(3, 3, &[ready(Reason::KeyIssued, "key kw_ab… issued")]),
        "Healthy",
        "KeyIssued: key kw_ab… issued",
    );
    check(
        "rotated, with an advisory",
        &apikey(
            3,
            3,
            &[
                ready(Reason::Rotated, "current after 2 rotation(s)"),
                Wanted::advisory(
                    Reason::RestartTargetMissing,
                    "Deployment/web does not exist",
                ),
            ],
        ),
        "Healthy",
        "advisory RestartTargetMissing",
    );
    check(
        "a write under way",
        &apikey(
            3,
            3,
            &[not_ready(Reason::Progressing, "delivering the key")],
        ),
        "Progressing",
        "delivering the key",
    );
    check(
        "status of an older generation",
        &apikey(4, 3, &[ready(Reason::KeyIssued, "issued")]),
        "Progressing",
        "this generation",
    );
    check(
        "no status yet",
        &object("ApiKey", 1, None),
        "Progressing",
        "this generation",
    );
    for reason in [
        Reason::SecretConflict,
        Reason::InvalidSpec,
        Reason::ImportFailed,
        Reason::Expired,
    ] {
        check(
            reason.as_str(),
            &apikey(2, 2, &[not_ready(reason, "what to fix")]),
            "Degraded",
            &format!("{}: what to fix", reason.as_str()),
        );
    }
    check(
        "disabled on purpose",
        &apikey(
            2,
            2,
            &[not_ready(Reason::Disabled, "the verifier refuses it")],
        ),
        "Suspended",
        "Disabled",
    );
    let unknown = Wanted::new(
        conditions::READY,
        ConditionStatus::Unknown,
        Reason::Progressing,
        "not known yet",
    );
    check(
        "Ready Unknown",
        &apikey(1, 1, &[unknown]),
        "Progressing",
        "not known yet",
    );
}

#[test]
fn pool_health() {
    check(
        "keys available",
        &pool(
            1,
            1,
            &[Wanted::ready(
                Reason::KeysAvailable,
                "20 of 20 keys available",
            )],
        ),
        "Healthy",
        "20 of 20",
    );
    check(
        "depleted, refilling",
        &pool(
            1,
            1,
            &[Wanted::not_ready(
                Reason::Depleted,
                "keyward is generating more",
            )],
        ),
        "Progressing",
        "Depleted",
    );
    check(
        "generator failing",
        &pool(
            1,
            1,
            &[Wanted::not_ready(
                Reason::GeneratorFailing,
                "webhook answered 500",
            )],
        ),
        "Degraded",
        "webhook answered 500",
    );
    check(
        "webhook host not allowed",
        &pool(
            1,
            1,
            &[Wanted::not_ready(
                Reason::HostNotAllowed,
                "minter.example.com",
            )],
        ),
        "Degraded",
        "HostNotAllowed",
    );
    check(
        "spec changed, not acted on",
        &pool(2, 1, &[Wanted::ready(Reason::KeysAvailable, "5 of 5")]),
        "Progressing",
        "this generation",
    );
}

#[test]
fn provider_credential_health() {
    check(
        "validated",
        &credential(
            1,
            1,
            Phase::Valid,
            &[Wanted::ready(Reason::Validated, "accepted")],
        ),
        "Healthy",
        "Validated",
    );
    check(
        "rate limited is still valid",
        &credential(
            1,
            1,
            Phase::Valid,
            &[Wanted::ready(Reason::RateLimited, "slow down")],
        ),
        "Healthy",
        "RateLimited",
    );
    for (phase, reason) in [
        (Phase::Invalid, Reason::InvalidKey),
        (Phase::Invalid, Reason::QuotaExhausted),
        (Phase::Unreachable, Reason::ConnectionFailed),
        (Phase::NotConfigured, Reason::SecretNotFound),
        (Phase::NotConfigured, Reason::NoFreeValidation),
    ] {
        check(
            reason.as_str(),
            &credential(1, 1, phase, &[Wanted::not_ready(reason, "said so")]),
            "Degraded",
            reason.as_str(),
        );
    }
    check(
        "a new spec not yet validated",
        &credential(
            2,
            1,
            Phase::Valid,
            &[Wanted::ready(Reason::Validated, "accepted")],
        ),
        "Progressing",
        "this generation",
    );
}

/// A condition computed for an older generation is not trusted even when the status'
/// own observedGeneration is current (kstatus reads both).
#[test]
fn a_stale_ready_condition_is_progressing() {
    let mut obj = apikey(5, 5, &[Wanted::ready(Reason::KeyIssued, "issued")]);
    obj["status"]["conditions"][0]["observedGeneration"] = json!(4);
    check("stale Ready", &obj, "Progressing", "this generation");
}

#[test]
fn argocd_cm_carries_the_script_for_each_kind() {
    let text = std::fs::read_to_string(common::root().join("docs/gitops/argocd-cm.yaml"))
        .expect("docs/gitops/argocd-cm.yaml");
    let cm: Value = serde_saphyr::from_str(&text).expect("YAML");
    let lua = std::fs::read_to_string(script()).expect("the script");
    let data = cm["data"].as_object().expect("data");
    let keys: Vec<&String> = data.keys().collect();
    assert_eq!(
        keys,
        [
            "resource.customizations.health.keyward.dev_ApiKey",
            "resource.customizations.health.keyward.dev_ApiKeyPool",
            "resource.customizations.health.keyward.dev_ProviderCredential",
        ]
    );
    for (key, value) in data {
        assert!(
            value.as_str() == Some(lua.as_str()),
            "{key} differs from docs/gitops/argocd-health.lua"
        );
    }
}
