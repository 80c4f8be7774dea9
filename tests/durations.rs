//! The operator and the apiserver must read every duration alike (DESIGN §1): what the CRD's
//! duration rule admits, the operator parses, to the same value that CEL's `duration()` sees.

use keyward::duration::{parse, parse_nanos};
use kube_cel::cel::{Context, Program, Value};
use serde_json::json;

fn cel_equals_nanos(input: &str, nanos: i64) -> Option<bool> {
    let expr = format!("duration('{input}') == duration('{nanos}ns')");
    match Program::compile(&expr).ok()?.execute(&Context::default()) {
        Ok(Value::Bool(b)) => Some(b),
        _ => None,
    }
}

/// Whether the rule keyward's CRDs put on a duration field (rotation.gracePeriod) admits it.
fn admitted(input: &str) -> bool {
    let crd = keyward::crd::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "ApiKey")
        .expect("ApiKey CRD");
    let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
    let grace = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["rotation"]["properties"]
        ["gracePeriod"];
    assert!(
        grace["x-kubernetes-validations"].is_array(),
        "gracePeriod carries the duration rule"
    );
    kube_cel::Validator::new()
        .validate(grace, &json!(input), None)
        .is_ok()
}

#[test]
fn parser_agrees_with_cel_duration() {
    let inputs = [
        "0",
        "0s",
        "90s",
        "1h30m",
        "1.5h",
        "250ms",
        "2h45m30.5s",
        "10.5s4m",
        "1h2m3s4ms5us6ns",
        "39h9m14.425s",
        "52763797000ns",
        ".5s",
        "5.s",
        "100.00100s",
        "11us",
        "-5s",
        "+5s",
        "720h",
        "2160h",
        "1m",
        "59s",
        "24h",
        "2562047h",
    ];
    for input in inputs {
        let nanos = parse_nanos(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(
            cel_equals_nanos(input, nanos),
            Some(true),
            "CEL reads {input:?} differently"
        );
    }
}

#[test]
fn admission_and_operator_accept_the_same_strings() {
    let inputs = [
        "0", "0s", "90s", "1h30m", "1.5h", ".5s", "5.s", "12µs", "2562047h", "", "1d", "90", "1 h",
        "h", ".s", "1hh", "-5s", "+5s", "-0", "3000000h", "2562048h", "1h-5m", "١h",
    ];
    for input in inputs {
        assert_eq!(
            admitted(input),
            // The API's durations carry no sign and ASCII units only, so "+5s" and "12µs"
            // are refused at admission; the operator would read them as Go does.
            parse(input).is_ok() && !input.starts_with(['+', '-']) && input.is_ascii(),
            "admission and operator disagree on {input:?}"
        );
    }
}
