//! The CRDs are the public API: `crds/` must match the generator, every schema must be
//! structural and bounded, every admission rule must refuse what it should (and only that),
//! and every example must be admitted.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keyward::crd;
use keyward_emulator::schema::{self, FieldValidation};
use serde_json::{Value, json};

fn crd_for(kind: &str) -> CustomResourceDefinition {
    crd::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"))
}

fn schema_for(kind: &str) -> Value {
    let crd = crd_for(kind);
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(schema.expect("every version has a schema")).expect("schema serializes")
}

/// What the apiserver would answer to a create of `object`: Ok, or the field errors.
fn admit(object: &Value) -> Result<Value, Vec<String>> {
    let kind = object["kind"].as_str().expect("object has a kind");
    let checked = schema::check(&schema_for(kind), object, None);
    let mut errors: Vec<String> = checked.errors.iter().map(|e| e.message.clone()).collect();
    if FieldValidation::Strict == FieldValidation::default() {
        errors.extend(
            checked
                .unknown_fields
                .iter()
                .map(|f| format!("unknown field \"{f}\"")),
        );
    }
    if errors.is_empty() {
        Ok(checked.object)
    } else {
        Err(errors)
    }
}

fn object(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "keyward.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    })
}

fn apikey(spec: Value) -> Value {
    object("ApiKey", "k", spec)
}

fn pool(spec: Value) -> Value {
    object("ApiKeyPool", "p", spec)
}

fn pcred(spec: Value) -> Value {
    object("ProviderCredential", "c", spec)
}

#[track_caller]
fn assert_admitted(obj: Value) -> Value {
    match admit(&obj) {
        Ok(stored) => stored,
        Err(errors) => panic!("expected {} to be admitted, got {errors:#?}", obj["spec"]),
    }
}

#[track_caller]
fn assert_refused(obj: Value, expected: &str) {
    match admit(&obj) {
        Ok(_) => panic!("expected {} to be refused with {expected:?}", obj["spec"]),
        Err(errors) => assert!(
            errors.iter().any(|e| e.contains(expected)),
            "refusal of {} should mention {expected:?}, got {errors:#?}",
            obj["spec"]
        ),
    }
}

// ---- generator and files ------------------------------------------------------------

#[test]
fn crds_folder_matches_the_generator() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut expected = BTreeMap::new();
    for crd in crd::crds() {
        expected.insert(crd::file_name(&crd), crd::to_yaml(&crd));
    }
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("crds/ exists") {
        let path = entry.expect("readable entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        found.insert(name, std::fs::read_to_string(&path).expect("readable file"));
    }
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "crds/ holds other files than the generator writes: run `cargo run -- crds --output-dir crds`"
    );
    for (name, text) in &expected {
        assert!(
            found[name] == *text,
            "crds/{name} differs from the Rust types: run `cargo run -- crds --output-dir crds`"
        );
    }
}

#[test]
fn crds_command_prints_the_same_crds() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("crds")
        .output()
        .expect("keyward runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let docs: Vec<CustomResourceDefinition> = text
        .split("\n---\n")
        .map(|d| d.trim_start_matches("---\n"))
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str(d).expect("each document is a CRD"))
        .collect();
    assert_eq!(docs, crd::crds());
}

#[test]
fn names_kinds_and_columns_follow_the_design() {
    let expect = [
        (
            "ApiKey",
            "apikeys",
            "ak",
            vec!["Ready", "Owner", "Preview", "Next Rotation", "Age"],
        ),
        (
            "ApiKeyPool",
            "apikeypools",
            "akp",
            vec!["Ready", "Available", "Size", "Age"],
        ),
        (
            "ProviderCredential",
            "providercredentials",
            "pcred",
            vec!["Provider", "Phase", "Last Validated", "Age"],
        ),
    ];
    for (kind, plural, short, columns) in expect {
        let crd = crd_for(kind);
        assert_eq!(crd.spec.group, "keyward.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_string()][..])
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["keyward".to_string()][..])
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{kind} has a status subresource"
        );
        let names: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, columns, "{kind} printer columns");
        for column in version.additional_printer_columns.iter().flatten() {
            // Apiservers print `date` columns as ages, and future instants as `<invalid>`.
            let want = match column.name.as_str() {
                "Age" | "Last Validated" => "date",
                "Available" | "Size" => "integer",
                _ => "string",
            };
            assert_eq!(column.type_, want, "{kind} column {}", column.name);
        }
    }
}

// ---- structural, bounded schemas ----------------------------------------------------

/// Walks a schema and reports every node a real apiserver would refuse as non-structural,
/// and every string, list or map without a bound (CEL cost estimation needs them).
fn lint(node: &Value, path: &str, problems: &mut Vec<String>) {
    let is_root_meta = path == ".metadata";
    let preserve = node
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    let int_or_string = node
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    for forbidden in [
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "$ref",
        "definitions",
        "$defs",
    ] {
        if node.get(forbidden).is_some() {
            problems.push(format!("{path}: uses {forbidden}"));
        }
    }
    let ty = node.get("type").and_then(Value::as_str);
    if ty.is_none() && !preserve && !int_or_string {
        problems.push(format!("{path}: no type"));
    }
    match ty {
        Some("string") if node.get("maxLength").is_none() && node.get("enum").is_none() => {
            problems.push(format!("{path}: string without maxLength"));
        }
        Some("array") => {
            if node.get("maxItems").is_none() {
                problems.push(format!("{path}: list without maxItems"));
            }
            match node.get("items") {
                Some(items) => lint(items, &format!("{path}[]"), problems),
                None => problems.push(format!("{path}: list without items")),
            }
        }
        Some("object") => {
            if let Some(props) = node.get("properties").and_then(Value::as_object) {
                for (name, child) in props {
                    lint(child, &format!("{path}.{name}"), problems);
                }
            }
            if let Some(additional) = node.get("additionalProperties").filter(|a| a.is_object()) {
                if node.get("maxProperties").is_none() {
                    problems.push(format!("{path}: map without maxProperties"));
                }
                lint(additional, &format!("{path}.*"), problems);
            }
            if node.get("properties").is_none()
                && node.get("additionalProperties").is_none()
                && !preserve
                && !is_root_meta
            {
                problems.push(format!("{path}: object with no properties"));
            }
        }
        _ => {}
    }
}

#[test]
fn schemas_are_structural_and_bounded() {
    for kind in ["ApiKey", "ApiKeyPool", "ProviderCredential"] {
        let schema = schema_for(kind);
        let mut problems = Vec::new();
        for (name, child) in schema["properties"]
            .as_object()
            .expect("root has properties")
        {
            if name != "metadata" && name != "apiVersion" && name != "kind" {
                lint(child, &format!(".{name}"), &mut problems);
            }
        }
        assert!(problems.is_empty(), "{kind}: {problems:#?}");
    }
}

#[test]
fn every_cel_rule_compiles_and_fits_the_cost_budget() {
    for kind in ["ApiKey", "ApiKeyPool", "ProviderCredential"] {
        let compiled = kube_cel::compile_schema(&schema_for(kind));
        let errors: Vec<String> = compiled
            .compilation_errors()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{kind}: {errors:#?}");
        let mut rules = Vec::new();
        collect_rules(&schema_for(kind), &mut rules);
        assert!(!rules.is_empty());
        for (rule, node) in rules {
            let node_compiled = kube_cel::compile_schema(&node);
            let warnings = kube_cel::estimate_rule_cost(&rule, &node_compiled);
            assert!(
                warnings.is_empty(),
                "{kind}: rule {rule:?} cost warnings: {warnings:?}"
            );
        }
    }
}

fn collect_rules(node: &Value, out: &mut Vec<(String, Value)>) {
    if let Some(rules) = node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for rule in rules {
            out.push((
                rule["rule"].as_str().unwrap_or_default().to_string(),
                node.clone(),
            ));
        }
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for child in props.values() {
            collect_rules(child, out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get(key).filter(|c| c.is_object()) {
            collect_rules(child, out);
        }
    }
}

// ---- examples ------------------------------------------------------------------------

#[test]
fn every_example_is_admitted_and_round_trips_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = BTreeMap::<String, usize>::new();
    for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let docs: Vec<Value> = serde_saphyr::from_str_multiple(&text).expect("valid YAML");
        for value in docs {
            if value.is_null() {
                continue;
            }
            let kind = value["kind"].as_str().unwrap_or_default().to_string();
            let stored = match admit(&value) {
                Ok(stored) => stored,
                Err(errors) => panic!("{}: {kind} refused: {errors:#?}", path.display()),
            };
            // The operator must read back exactly what was admitted.
            match kind.as_str() {
                "ApiKey" => round_trip::<crd::ApiKey>(&stored),
                "ApiKeyPool" => round_trip::<crd::ApiKeyPool>(&stored),
                "ProviderCredential" => round_trip::<crd::ProviderCredential>(&stored),
                other => panic!("{}: unexpected kind {other}", path.display()),
            }
            *seen.entry(kind).or_default() += 1;
        }
    }
    for kind in ["ApiKey", "ApiKeyPool", "ProviderCredential"] {
        assert!(
            seen.get(kind).copied().unwrap_or(0) > 0,
            "no example of {kind}"
        );
    }
}

fn round_trip<K: serde::de::DeserializeOwned + serde::Serialize>(stored: &Value) {
    let typed: K =
        serde_json::from_value(stored.clone()).expect("the operator can read the stored object");
    let back = serde_json::to_value(&typed).expect("serializes");
    assert_eq!(
        back["spec"], stored["spec"],
        "spec survives a round trip through the Rust types"
    );
}

// ---- admission rules: one good and one bad object each ---------------------------------

#[test]
fn minimal_objects_are_admitted_and_defaulted() {
    let stored = assert_admitted(apikey(json!({})));
    assert_eq!(stored["spec"]["secretKey"], "api-key");
    assert_eq!(stored["spec"]["delivery"], "Secret");
    assert_eq!(stored["spec"]["deletionPolicy"], "Delete");
    let stored = assert_admitted(apikey(json!({"format": {}, "rotation": {"every": "24h"}})));
    assert_eq!(
        stored["spec"]["format"],
        json!({"prefix": "kw_", "length": 32, "alphabet": "base62", "checksum": true})
    );
    assert_eq!(stored["spec"]["rotation"]["gracePeriod"], "1h");
    assert_eq!(stored["spec"]["rotation"]["historyLimit"], 10);
    assert_admitted(pool(json!({"size": 1})));
    let stored = assert_admitted(pcred(
        json!({"provider": "openai", "secretRef": {"name": "k"}, "validation": {}}),
    ));
    assert_eq!(stored["spec"]["secretRef"]["key"], "api-key");
    assert_eq!(
        stored["spec"]["validation"],
        json!({"interval": "1h", "timeout": "10s", "allowPaidRequest": false})
    );
    assert_eq!(stored["spec"]["priority"], 100);
}

#[test]
fn key_entropy_floor() {
    for (alphabet, ok, bad) in [("base62", 30, 29), ("base64url", 30, 29), ("hex", 40, 39)] {
        assert_admitted(apikey(
            json!({"format": {"alphabet": alphabet, "length": ok}}),
        ));
        assert_refused(
            apikey(json!({"format": {"alphabet": alphabet, "length": bad}})),
            &format!("length {bad} leaves fewer than 128 random bits"),
        );
    }
    // The default alphabet is base62, and the pool shares the rule.
    assert_refused(
        apikey(json!({"format": {"length": 16}})),
        "base62 needs length >= 30",
    );
    assert_refused(
        pool(json!({"size": 1, "format": {"alphabet": "hex", "length": 32}})),
        "hex needs length >= 40",
    );
    assert_refused(
        apikey(json!({"format": {"length": 300}})),
        "less than or equal to 256",
    );
}

#[test]
fn prefix_charset_and_length() {
    assert_admitted(apikey(json!({"format": {"prefix": "sk_live-01"}})));
    assert_admitted(apikey(json!({"format": {"prefix": ""}})));
    assert_admitted(apikey(json!({"format": {"prefix": "abcdefghijklmnop"}})));
    assert_refused(
        apikey(json!({"format": {"prefix": "sk.live"}})),
        "prefix may only contain letters, digits",
    );
    assert_refused(
        apikey(json!({"format": {"prefix": "sk live"}})),
        "prefix may only contain letters, digits",
    );
    assert_refused(
        apikey(json!({"format": {"prefix": "abcdefghijklmnopq"}})),
        "spec.format.prefix: Too long",
    );
}

#[test]
fn names_fit_in_label_values() {
    for kind in ["ApiKey", "ApiKeyPool", "ProviderCredential"] {
        let spec = match kind {
            "ApiKeyPool" => json!({"size": 1}),
            "ProviderCredential" => json!({"provider": "openai", "secretRef": {"name": "k"}}),
            _ => json!({}),
        };
        assert_admitted(object(kind, &"a".repeat(63), spec.clone()));
        assert_refused(
            object(kind, &"a".repeat(64), spec),
            "metadata.name must be at most 63 characters",
        );
    }
}

#[test]
fn schedule_xor_every_and_cron_shape() {
    assert_admitted(apikey(
        json!({"rotation": {"schedule": "0 3 * * 1", "timeZone": "Europe/Berlin"}}),
    ));
    assert_admitted(apikey(json!({"rotation": {"every": "1h30m"}})));
    assert_admitted(apikey(json!({"rotation": {"gracePeriod": "0s"}})));
    assert_refused(
        apikey(json!({"rotation": {"schedule": "0 3 * * 1", "every": "1h"}})),
        "set rotation.schedule or rotation.every, not both",
    );
    assert_refused(
        apikey(json!({"rotation": {"schedule": "0 3 * *"}})),
        "5-field cron expression",
    );
    assert_refused(
        apikey(json!({"rotation": {"schedule": "@daily"}})),
        "5-field cron expression",
    );
    assert_refused(
        apikey(json!({"rotation": {"every": "1h", "timeZone": "UTC"}})),
        "rotation.timeZone applies to rotation.schedule only",
    );
}

#[test]
fn history_limit_range() {
    assert_admitted(apikey(json!({"rotation": {"historyLimit": 100}})));
    assert_admitted(apikey(json!({"rotation": {"historyLimit": 1}})));
    assert_refused(
        apikey(json!({"rotation": {"historyLimit": 101}})),
        "less than or equal to 100",
    );
    assert_refused(
        apikey(json!({"rotation": {"historyLimit": 0}})),
        "greater than or equal to 1",
    );
}

#[test]
fn pool_size_range() {
    assert_admitted(pool(json!({"size": 10000})));
    assert_refused(
        pool(json!({"size": 0})),
        "spec.size in body should be greater than or equal to 1",
    );
    assert_refused(
        pool(json!({"size": 10001})),
        "spec.size in body should be less than or equal to 10000",
    );
    assert_refused(pool(json!({})), "spec.size: Required value");
}

/// Builds an object with a duration field set to the given text.
type ObjectWith = Box<dyn Fn(&str) -> Value>;

#[test]
fn durations_are_well_formed_and_not_negative() {
    let fields: Vec<(&str, ObjectWith)> = vec![
        (
            "expiresAfter",
            Box::new(|d| apikey(json!({"expiresAfter": d}))),
        ),
        (
            "revealWindow",
            Box::new(|d| apikey(json!({"delivery": "ShowOnce", "revealWindow": d}))),
        ),
        (
            "rotation.every",
            Box::new(|d| apikey(json!({"rotation": {"every": d}}))),
        ),
        (
            "rotation.gracePeriod",
            Box::new(|d| apikey(json!({"rotation": {"gracePeriod": d}}))),
        ),
        (
            "keyTTL",
            Box::new(|d| pool(json!({"size": 1, "keyTTL": d}))),
        ),
        (
            "issuedTTL",
            Box::new(|d| pool(json!({"size": 1, "issuedTTL": d}))),
        ),
        (
            "webhook.timeout",
            Box::new(|d| {
                pool(
                    json!({"size": 1, "generator": {"type": "Webhook", "webhook": {"url": "https://a.example/k", "timeout": d}}}),
                )
            }),
        ),
        (
            "validation.timeout",
            Box::new(|d| {
                pcred(
                    json!({"provider": "openai", "secretRef": {"name": "k"}, "validation": {"timeout": d}}),
                )
            }),
        ),
    ];
    for (field, build) in &fields {
        for good in ["90s", "1h30m", "1.5h", "250ms", "2h45m30.5s"] {
            if admit(&build(good)).is_err() {
                panic!(
                    "{field}: {good} should be admitted: {:?}",
                    admit(&build(good))
                );
            }
        }
        for bad in ["-1h", "1d", "90", "1 h", "", "+5m", "h"] {
            assert_refused(build(bad), "must be a Go duration such as 90s");
        }
    }
    // Zero: a grace period of 0 revokes at once; an interval of 0 makes no sense.
    assert_admitted(apikey(json!({"rotation": {"gracePeriod": "0"}})));
    assert_refused(
        apikey(json!({"rotation": {"every": "0s"}})),
        "longer than 0s",
    );
}

#[test]
fn validation_interval_at_least_a_minute() {
    let with = |interval: &str| {
        pcred(
            json!({"provider": "openai", "secretRef": {"name": "k"}, "validation": {"interval": interval}}),
        )
    };
    assert_admitted(with("1m"));
    assert_admitted(with("60s"));
    assert_admitted(with("24h"));
    assert_refused(with("59s"), "at least 1m");
    assert_refused(with("-1h"), "at least 1m");
}

#[test]
fn custom_present_exactly_for_custom_provider() {
    let custom = json!({"path": "/v1/models"});
    assert_admitted(pcred(
        json!({"provider": "custom", "baseURL": "https://llm.example", "secretRef": {"name": "k"}, "custom": custom}),
    ));
    assert_refused(
        pcred(
            json!({"provider": "custom", "baseURL": "https://llm.example", "secretRef": {"name": "k"}}),
        ),
        "spec.custom is required when provider is custom, and only then",
    );
    assert_refused(
        pcred(json!({"provider": "anthropic", "secretRef": {"name": "k"}, "custom": custom})),
        "spec.custom is required when provider is custom, and only then",
    );
    assert_refused(
        pcred(json!({"provider": "custom", "secretRef": {"name": "k"}, "custom": custom})),
        "provider custom needs spec.baseURL",
    );
    assert_refused(
        pcred(
            json!({"provider": "custom", "baseURL": "https://llm.example", "secretRef": {"name": "k"}, "custom": {"path": "v1/models"}}),
        ),
        "custom.path must start with '/'",
    );
    assert_refused(
        pcred(
            json!({"provider": "custom", "baseURL": "https://llm.example", "secretRef": {"name": "k"}, "custom": {"path": "/m", "successStatuses": [700]}}),
        ),
        "less than or equal to 599",
    );
}

#[test]
fn providers_are_an_enum_and_urls_are_http() {
    for provider in [
        "openai",
        "anthropic",
        "mistral",
        "deepinfra",
        "perplexity",
        "runway",
        "together",
    ] {
        assert_admitted(pcred(
            json!({"provider": provider, "secretRef": {"name": "k"}}),
        ));
    }
    assert_refused(
        pcred(json!({"provider": "cohere", "secretRef": {"name": "k"}})),
        "Unsupported value: \"cohere\"",
    );
    assert_admitted(pcred(
        json!({"provider": "openai", "baseURL": "http://127.0.0.1:8081/v1", "secretRef": {"name": "k"}}),
    ));
    assert_refused(
        pcred(
            json!({"provider": "openai", "baseURL": "ftp://files.example", "secretRef": {"name": "k"}}),
        ),
        "absolute http:// or https:// URL",
    );
    assert_refused(
        pcred(json!({"provider": "openai", "baseURL": "not a url", "secretRef": {"name": "k"}})),
        "absolute http:// or https:// URL",
    );
    assert_refused(
        pcred(json!({"provider": "openai"})),
        "spec.secretRef: Required value",
    );
}

#[test]
fn webhook_generator_shape() {
    let webhook = json!({"url": "https://keygen.example/v1/keys", "keyJsonPointer": "/data/key"});
    assert_admitted(pool(
        json!({"size": 1, "generator": {"type": "Webhook", "webhook": webhook}}),
    ));
    assert_admitted(pool(json!({"size": 1, "generator": {"type": "Random"}})));
    assert_refused(
        pool(json!({"size": 1, "generator": {"type": "Webhook"}})),
        "generator.webhook is required",
    );
    assert_refused(
        pool(json!({"size": 1, "generator": {"type": "Random", "webhook": webhook}})),
        "generator.webhook is required",
    );
    assert_refused(
        pool(
            json!({"size": 1, "generator": {"type": "Webhook", "webhook": {"url": "https://k.example", "keyJsonPointer": "data"}}}),
        ),
        "keyJsonPointer must be a JSON pointer",
    );
}

#[test]
fn secret_names_keys_and_references() {
    assert_admitted(apikey(
        json!({"secretName": "billing.api-key", "secretKey": "API_KEY.txt"}),
    ));
    assert_refused(
        apikey(json!({"secretName": "Billing"})),
        "must be a valid Kubernetes object name",
    );
    assert_refused(
        apikey(json!({"secretKey": "api key"})),
        "must be a valid Secret data key",
    );
    assert_refused(
        apikey(json!({"importFrom": {"secretRef": {"name": "my_secret"}}})),
        "must be a valid Kubernetes object name",
    );
    assert_refused(
        apikey(json!({"importFrom": {}})),
        "spec.importFrom.secretRef: Required value",
    );
    assert_refused(
        apikey(json!({"scopes": vec!["s"; 65]})),
        "must have at most 64 items",
    );
    assert_refused(
        apikey(json!({"rotation": {"restartTargets": [{"kind": "CronJob", "name": "x"}]}})),
        "Unsupported value: \"CronJob\"",
    );
}

#[test]
fn imported_keys_are_not_formatted_or_rotated() {
    let import = json!({"secretRef": {"name": "legacy", "key": "token"}});
    assert_admitted(apikey(json!({"importFrom": import})));
    assert_refused(
        apikey(json!({"importFrom": import, "format": {"prefix": "x_"}})),
        "format applies to generated keys",
    );
    assert_refused(
        apikey(json!({"importFrom": import, "rotation": {"every": "1h"}})),
        "an imported key cannot be rotated",
    );
}

#[test]
fn wrong_types_and_unknown_fields_are_refused() {
    assert_refused(
        pool(json!({"size": "ten"})),
        "spec.size in body must be of type integer",
    );
    assert_refused(
        apikey(json!({"disabled": "yes"})),
        "spec.disabled in body must be of type boolean",
    );
    assert_refused(
        apikey(json!({"expiresAt": "next tuesday"})),
        "spec.expiresAt in body must be of type date-time",
    );
    assert_admitted(apikey(json!({"expiresAt": "2030-01-01T00:00:00Z"})));
    assert_refused(
        apikey(json!({"secret_name": "x"})),
        "unknown field \"spec.secret_name\"",
    );
    assert_refused(
        pcred(
            json!({"provider": "openai", "secretRef": {"name": "k"}, "baseUrl": "https://x.example"}),
        ),
        "unknown field \"spec.baseUrl\"",
    );
}

/// Whether the CRD's rules on `rotation.schedule` admit `expr`.
fn schedule_admitted(expr: &str) -> bool {
    let schema = schema_for("ApiKey");
    let node = &schema["properties"]["spec"]["properties"]["rotation"]["properties"]["schedule"];
    assert!(node["x-kubernetes-validations"].is_array());
    kube_cel::Validator::new()
        .validate(node, &json!(expr), None)
        .is_ok()
}

/// One table, run through both the CRD's CEL rules and the operator's parser: they must
/// agree on every row, and on the expected verdict.
#[test]
fn cron_admission_agrees_with_the_parser() {
    let table: &[(&str, bool)] = &[
        ("0 3 * * 1", true),
        ("* * * * *", true),
        ("59 23 31 12 7", true),
        ("0 0 1 1 0", true),
        ("60 * * * *", false),
        ("* 24 * * *", false),
        ("* * 0 * *", false),
        ("* * 32 * *", false),
        ("* * * 0 *", false),
        ("* * * 13 *", false),
        ("* * * * 8", false),
        ("61 * * * *", false),
        ("*/15 * * * *", true),
        ("*/0 * * * *", false),
        ("*/99 * * * *", true),
        ("*/100 * * * *", false),
        ("0-59/5 * * * *", true),
        ("5-1 * * * *", false),
        ("1-5 * * * *", true),
        ("5-5 * * * *", true),
        ("0 9-17 * * MON-FRI", true),
        ("0 9 * * FRI-MON", false),
        ("0 9 * * sun-sat", true),
        ("0 9 * * SUN-7", true),
        ("0 9 * JAN-DEC *", true),
        ("0 9 * DEC-JAN *", false),
        ("0 9 * jan,Mar,DEC *", true),
        ("0 9 * JANUARY *", false),
        ("0 9 * * MONDAY", false),
        ("0,15,30,45 * * * *", true),
        ("0,,30 * * * *", false),
        ("0, * * * *", false),
        ("00 03 01 01 00", true),
        ("007 * * * *", true),
        ("+5 * * * *", false),
        ("-5 * * * *", false),
        ("5- * * * *", false),
        ("*-5 * * * *", false),
        ("5/15 * * * *", true),
        ("1/2/3 * * * *", false),
        ("? * ? * ?", true),
        ("0 3 * *", false),
        ("0 3 * * * *", false),
        ("@daily", false),
        ("", false),
        ("  0   3 *\t* 1  ", true),
        ("0 3 * * 1\u{a0}", false),
        ("0 3 * * L", false),
        ("0 3 * * 1#2", false),
        ("0 3 W * *", false),
        ("0 3 * * 1-5/2", true),
        ("30 2 1-7,15 FEB-MAR 1,3,5", true),
        ("99999999999 * * * *", false),
        ("1.5 * * * *", false),
    ];
    assert!(table.len() >= 40);
    for (expr, expected) in table {
        let parsed = keyward::rotation::cron::Schedule::parse(expr).is_ok();
        let admitted = schedule_admitted(expr);
        assert_eq!(
            (admitted, parsed),
            (*expected, *expected),
            "{expr:?}: admission {admitted}, parser {parsed}"
        );
    }
}

#[test]
fn time_zones_are_shape_checked_at_admission() {
    for zone in [
        "UTC",
        "Europe/Berlin",
        "America/Argentina/Buenos_Aires",
        "Etc/GMT+5",
        "EST5EDT",
        "Mars/Olympus",
    ] {
        assert_admitted(apikey(
            json!({"rotation": {"schedule": "0 3 * * 1", "timeZone": zone}}),
        ));
    }
    for zone in [
        "Europe Berlin",
        "/Berlin",
        "Europe/",
        "../etc/passwd",
        "Zürich",
    ] {
        assert_refused(
            apikey(json!({"rotation": {"schedule": "0 3 * * 1", "timeZone": zone}})),
            "IANA time zone name",
        );
    }
}
