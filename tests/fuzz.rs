//! Fuzzing as property tests (issue 20): the key parser and checksum (DESIGN §2), Go
//! durations and cron schedules (§4), and the verifier's request parsing (§6) take any
//! input without panicking, and keep their promises on generated valid input.
//!
//! Seeded: every run draws the same cases (seed [`SEED`], or `PROPTEST_RNG_SEED`), and a
//! failure prints the minimal input. The suite runs a bounded number of cases; for a long
//! run: `PROPTEST_CASES=20000 cargo nextest run --test fuzz` (README, Development).

mod common;

use std::time::Duration;

use keyward::crd::{Alphabet, KeyFormat};
use keyward::keys::format;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

/// The seed of the draws unless `PROPTEST_RNG_SEED` says otherwise.
const SEED: u64 = 20;

/// `cases` cases unless `PROPTEST_CASES` says otherwise, from a fixed seed.
fn config(cases: u32) -> Config {
    let env = Config::default();
    let seeded = std::env::var("PROPTEST_RNG_SEED").is_ok();
    let from_env = std::env::var("PROPTEST_CASES").is_ok();
    let config = Config {
        cases: if from_env { env.cases } else { cases },
        rng_seed: if seeded {
            env.rng_seed
        } else {
            RngSeed::Fixed(SEED)
        },
        failure_persistence: None,
        ..env
    };
    eprintln!(
        "proptest: {} cases, seed {:?}",
        config.cases, config.rng_seed
    );
    config
}

fn alphabet() -> impl Strategy<Value = Alphabet> {
    prop_oneof![
        Just(Alphabet::Base62),
        Just(Alphabet::Base64Url),
        Just(Alphabet::Hex)
    ]
}

/// Formats admission would accept.
fn valid_format() -> impl Strategy<Value = KeyFormat> {
    ("[A-Za-z0-9_-]{0,16}", alphabet(), 0u32..60, any::<bool>()).prop_map(
        |(prefix, alphabet, extra, checksum)| KeyFormat {
            prefix,
            length: if alphabet == Alphabet::Hex { 40 } else { 30 } + extra,
            alphabet,
            checksum,
        },
    )
}

/// Any format at all, admissible or not.
fn any_format() -> impl Strategy<Value = KeyFormat> {
    (".{0,20}", alphabet(), 0u32..300, any::<bool>()).prop_map(
        |(prefix, alphabet, length, checksum)| KeyFormat {
            prefix,
            length,
            alphabet,
            checksum,
        },
    )
}

/// One edit of a string: replace, insert or delete the character at a position.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, char),
    Insert(usize, char),
    Delete(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<char>()).prop_map(|(i, c)| Edit::Replace(i, c)),
        (any::<usize>(), any::<char>()).prop_map(|(i, c)| Edit::Insert(i, c)),
        any::<usize>().prop_map(Edit::Delete),
    ]
}

/// `key` with `edit` applied, or `None` when the edit changes nothing.
fn edited(key: &str, edit: &Edit) -> Option<String> {
    let mut chars: Vec<char> = key.chars().collect();
    match *edit {
        Edit::Replace(i, c) => {
            let i = i % chars.len();
            if chars[i] == c {
                return None;
            }
            chars[i] = c;
        }
        Edit::Insert(i, c) => chars.insert(i % (chars.len() + 1), c),
        Edit::Delete(i) => {
            chars.remove(i % chars.len());
        }
    }
    Some(chars.into_iter().collect())
}

#[test]
fn key_parsing_takes_any_input() {
    TestRunner::new(config(5000))
        .run(&(any::<String>(), any_format()), |(key, f)| {
            if let Some(parsed) = format::parse(&key, &f) {
                // Whatever parses has the shape it claims.
                prop_assert!(key.starts_with(parsed.prefix));
                prop_assert_eq!(parsed.prefix, f.prefix.as_str());
                prop_assert!(parsed.lookup_id.len() <= format::LOOKUP_ID_LEN);
            }
            Ok(())
        })
        .expect("no panic, consistent parse");
}

#[test]
fn generated_keys_parse_and_every_single_edit_is_refused() {
    TestRunner::new(config(3000))
        .run(&(valid_format(), edit()), |(f, edit)| {
            prop_assert!(format::check(&f).is_ok());
            let key = format::generate(&f).expect("randomness");
            let key = key.expose();
            let parsed = format::parse(key, &f).expect("a generated key parses");
            prop_assert_eq!(parsed.prefix, f.prefix.as_str());
            prop_assert_eq!(
                parsed.lookup_id,
                &key[f.prefix.len()..f.prefix.len() + format::LOOKUP_ID_LEN]
            );
            if f.checksum {
                let sum = &key[key.len() - format::CHECKSUM_LEN..];
                prop_assert_eq!(
                    sum,
                    format::checksum(&key[..key.len() - format::CHECKSUM_LEN])
                );
                if let Some(typo) = edited(key, &edit) {
                    prop_assert!(
                        format::parse(&typo, &f).is_none(),
                        "{edit:?} of a checksummed key was accepted"
                    );
                }
            }
            Ok(())
        })
        .expect("generated keys keep the format's promises");
}

#[test]
fn durations_take_any_input_and_round_trip() {
    TestRunner::new(config(5000))
        .run(&any::<String>(), |text| {
            let _ = keyward::duration::parse_nanos(&text);
            let _ = keyward::duration::parse(&text);
            Ok(())
        })
        .expect("no panic on any string");
    // Strings built from the grammar's own pieces reach every branch.
    let grammar = "[+-]?([0-9]{0,21}(\\.[0-9]{0,22})?(ns|us|µs|μs|ms|s|m|h|x|)){0,4}";
    let parsed = std::sync::atomic::AtomicU64::new(0);
    TestRunner::new(config(5000))
        .run(&grammar, |text| {
            if let Ok(d) = keyward::duration::parse(&text) {
                parsed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let shown = keyward::duration::format(d);
                prop_assert_eq!(
                    keyward::duration::parse(&shown),
                    Ok(d),
                    "{} -> {}",
                    text,
                    shown
                );
            }
            Ok(())
        })
        .expect("what parses prints back to the same duration");
    assert!(
        parsed.into_inner() > 100,
        "the grammar's strings mostly parse, or the property says little"
    );
    TestRunner::new(config(5000))
        .run(&(0u64..=i64::MAX as u64), |nanos| {
            let d = Duration::from_nanos(nanos);
            let shown = keyward::duration::format(d);
            prop_assert_eq!(keyward::duration::parse(&shown), Ok(d), "{}", shown);
            Ok(())
        })
        .expect("every duration in range prints and parses back");
}

/// A field of numbers from `lo..=hi`: a list of values, ranges and steps.
fn cron_field(lo: u32, hi: u32) -> impl Strategy<Value = String> {
    let item = prop_oneof![
        (lo..=hi).prop_map(|v| v.to_string()),
        (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (1u32..=99).prop_map(|s| format!("*/{s}")),
        (lo..=hi, 1u32..=99).prop_map(|(a, s)| format!("{a}/{s}")),
        Just("*".to_string()),
    ];
    prop::collection::vec(item, 1..4).prop_map(|items| items.join(","))
}

#[test]
fn cron_takes_any_input_and_valid_schedules_fire_after_now() {
    use keyward::rotation::cron::{Schedule, time_zone};
    TestRunner::new(config(5000))
        .run(
            &prop_oneof![any::<String>(), "[0-9*/,?A-Za-z -]{0,40}"],
            |text| {
                let _ = Schedule::parse(&text);
                Ok(())
            },
        )
        .expect("no panic on any string");
    let zones = [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
    ];
    let schedule = (
        cron_field(0, 59),
        cron_field(0, 23),
        prop_oneof![Just("*".to_string()), cron_field(1, 28)],
        prop_oneof![
            Just("*".to_string()),
            cron_field(1, 12),
            Just("JAN-DEC".to_string())
        ],
        prop_oneof![
            Just("*".to_string()),
            cron_field(0, 7),
            Just("MON-FRI".to_string())
        ],
    );
    TestRunner::new(config(1000))
        .run(
            &(schedule, 0usize..zones.len(), 946_684_800i64..4_102_444_800),
            |((m, h, dom, mon, dow), zone, after)| {
                let text = format!("{m} {h} {dom} {mon} {dow}");
                let parsed = Schedule::parse(&text);
                prop_assert!(parsed.is_ok(), "{} refused: {:?}", text, parsed);
                let schedule = parsed.expect("checked");
                let tz = time_zone(Some(zones[zone])).expect("zone");
                let after = jiff::Timestamp::from_second(after).expect("in range");
                let next = schedule.next_after(after, &tz);
                // Days 1-28 exist in every month, so every such schedule fires.
                prop_assert!(next.is_ok(), "{} never fires: {:?}", text, next);
                let next = next.expect("checked");
                prop_assert!(next > after);
                prop_assert!(next.as_second() - after.as_second() <= 366 * 24 * 3600 + 3600);
                Ok(())
            },
        )
        .expect("valid schedules fire, strictly later");
}

/// A presented credential as a gateway might forward it.
#[derive(Debug, Clone)]
enum Presented {
    /// The real key of an ApiKey, a pool key, or garbage, edited or not.
    Key { which: usize, edit: Option<Edit> },
    /// Any bytes at all.
    Bytes(Vec<u8>),
}

fn presented() -> impl Strategy<Value = Presented> {
    prop_oneof![
        (0usize..3, prop::option::of(edit()))
            .prop_map(|(which, edit)| Presented::Key { which, edit }),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Presented::Bytes),
    ]
}

/// One request to the verifier.
#[derive(Debug, Clone)]
struct VerifierRequest {
    method: String,
    path: String,
    /// (header name, how the value is made, prefix before the value)
    headers: Vec<(String, Presented, String)>,
    body: BodyShape,
}

#[derive(Debug, Clone)]
enum BodyShape {
    Bytes(Vec<u8>),
    /// `{"key": ...}` with the presented key as a JSON string.
    Json(Presented),
    /// Any JSON value.
    Value(String),
}

fn verifier_request() -> impl Strategy<Value = VerifierRequest> {
    let method = prop_oneof![
        Just("GET".to_string()),
        Just("POST".to_string()),
        Just("DELETE".to_string()),
        "[A-Z]{1,8}",
    ];
    let path = prop_oneof![
        Just("/v1/keys/verify".to_string()),
        Just("/verify".to_string()),
        "/verify/[a-zA-Z0-9/._~%-]{0,40}",
        "/[a-z0-9/]{0,20}",
    ];
    let header = (
        prop_oneof![
            Just("authorization".to_string()),
            Just("x-api-key".to_string()),
            Just("content-type".to_string()),
            "[a-z-]{1,12}",
        ],
        presented(),
        prop_oneof![
            Just("Bearer ".to_string()),
            Just("bearer ".to_string()),
            Just(String::new()),
            "[ -~]{0,10}",
        ],
    );
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300).prop_map(BodyShape::Bytes),
        presented().prop_map(BodyShape::Json),
        prop_oneof![
            Just("{\"key\": 1}".to_string()),
            Just("{\"key\": \"a\", \"key\": \"b\"}".to_string()),
            Just("[]".to_string()),
            "\\{\"key\": \"[ -~]{0,60}\"(, \"[a-z]{1,5}\": [0-9]{1,3})?\\}",
        ]
        .prop_map(BodyShape::Value),
    ];
    (method, path, prop::collection::vec(header, 0..3), body).prop_map(
        |(method, path, headers, body)| VerifierRequest {
            method,
            path,
            headers,
            body,
        },
    )
}

#[test]
fn the_verifier_answers_any_request_without_a_5xx() {
    use axum::body::Body;
    use common::operator::{Operator, verifier};
    use serde_json::json;
    use tower::ServiceExt;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Real keys of each kind the verifier indexes: an ApiKey's, a pool's single-use key.
    let (op, running, keys) = runtime.block_on(async {
        let op = Operator::start().await;
        op.apply("fuzz", json!({"rotation": {"gracePeriod": "1h"}}))
            .await;
        op.wait_ready("fuzz").await;
        op.apply_pool("fuzzpool", json!({"size": 2, "verification": true}))
            .await;
        op.wait_pool_full("fuzzpool", 2).await;
        let apikey = op.key_in("fuzz", "api-key").await.expect("key");
        let pool_key = op
            .pool_keys("fuzzpool")
            .await
            .into_values()
            .next()
            .expect("a pool key");
        let running = verifier(&op, 429).await;
        let keys = [
            apikey,
            pool_key,
            "kw_notakeyatallnotakeyatall00000000".to_string(),
        ];
        (op, running, keys)
    });
    let app = keyward::verifier::router(running.verifier.clone());
    let render = |p: &Presented| -> Vec<u8> {
        match p {
            Presented::Key { which, edit } => {
                let key = &keys[*which];
                edit.as_ref()
                    .and_then(|e| edited(key, e))
                    .unwrap_or_else(|| key.clone())
                    .into_bytes()
            }
            Presented::Bytes(b) => b.clone(),
        }
    };
    // What the answers said, to prove the cases reach every outcome.
    let codes = std::sync::Mutex::new(std::collections::BTreeMap::<String, u64>::new());
    let result = TestRunner::new(config(1000)).run(&verifier_request(), |request| {
        let mut builder = axum::http::Request::builder()
            .method(request.method.as_str())
            .uri(request.path.as_str());
        for (name, value, prefix) in &request.headers {
            let mut bytes = prefix.clone().into_bytes();
            bytes.extend(render(value));
            // Only what can travel in an HTTP header reaches a server.
            if let Ok(v) = axum::http::HeaderValue::from_bytes(&bytes) {
                builder = builder.header(name.as_str(), v);
            }
        }
        let body = match &request.body {
            BodyShape::Bytes(b) => b.clone(),
            BodyShape::Json(p) => {
                let key = String::from_utf8_lossy(&render(p)).into_owned();
                serde_json::to_vec(&json!({ "key": key })).expect("json")
            }
            BodyShape::Value(v) => v.clone().into_bytes(),
        };
        let Ok(http_request) = builder.body(Body::from(body)) else {
            return Ok(()); // not a request any client could send
        };
        let json_call = request.method == "POST" && request.path == "/v1/keys/verify";
        let valid_json = matches!(request.body, BodyShape::Json(_));
        let (status, body, code) = runtime.block_on(async {
            let response = app.clone().oneshot(http_request).await.expect("infallible");
            let status = response.status().as_u16();
            let code = response
                .headers()
                .get("x-keyward-code")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            (status, body, code)
        });
        prop_assert!(status < 500, "{} for {:?}", status, request);
        if json_call && valid_json {
            prop_assert_eq!(status, 200);
            let answer: serde_json::Value = serde_json::from_slice(&body).expect("JSON answer");
            prop_assert!(answer["valid"].is_boolean() && answer["code"].is_string());
            let code = answer["code"].as_str().unwrap_or_default().to_string();
            *codes.lock().expect("codes").entry(code).or_default() += 1;
        } else if let Some(code) = code {
            *codes.lock().expect("codes").entry(code).or_default() += 1;
        }
        Ok(())
    });
    runtime.block_on(async move {
        running.stop();
        drop(op);
    });
    result.expect("no 5xx, no panic");
    let codes = codes.into_inner().expect("codes");
    eprintln!("answers: {codes:?}");
    for code in ["VALID", "MALFORMED", "NOT_FOUND"] {
        assert!(
            codes.contains_key(code),
            "no case answered {code}: {codes:?}"
        );
    }
}
