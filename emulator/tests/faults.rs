//! Faults at random, seen from a client: each kind of fault (DESIGN §9 hooks, issue 20) is
//! injected into every matching request (fraction 1) and the test shows what kube-rs gets,
//! and what state the emulator is left in.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use keyward_emulator::{Emulator, RandomFaults};
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use kube::client::Body;
use serde_json::json;

/// A client that neither retries nor waits longer than `timeout` for an answer.
fn plain_client(emulator: &Emulator, timeout: Option<Duration>) -> kube::Client {
    let mut config = kube::Config::new(emulator.url().parse().expect("uri"));
    config.default_retry = false;
    config.read_timeout = timeout;
    kube::Client::try_from(config).expect("client")
}

fn secret(name: &str) -> Secret {
    serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"k": "v"}}))
        .expect("secret")
}

/// Every request of `verbs` on secrets gets the one kind of fault in `faults`.
fn always(emulator: &Emulator, verbs: &str, faults: &str) {
    let spec = format!("fraction=1,seed=5,verbs={verbs},resources=secrets,faults={faults}");
    emulator
        .hooks()
        .set_random_faults(Some(spec.parse::<RandomFaults>().expect("spec")));
}

fn api_code(result: Result<Secret, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn refusals_change_nothing_and_carry_the_apiservers_reason() {
    let emulator = Emulator::start().await.expect("emulator");
    let secrets: Api<Secret> = Api::default_namespaced(plain_client(&emulator, None));
    for (code, reason) in [
        (500, "InternalError"),
        (409, "Conflict"),
        (503, "ServiceUnavailable"),
    ] {
        always(&emulator, "create", &code.to_string());
        let name = format!("s{code}");
        let got = api_code(secrets.create(&PostParams::default(), &secret(&name)).await);
        assert_eq!(got, (code, reason.to_string()));
        emulator.hooks().set_random_faults(None);
        assert!(
            secrets.get_opt(&name).await.expect("get").is_none(),
            "a refused create created nothing"
        );
    }
    let injected = emulator.hooks().injected();
    assert_eq!(
        (injected["500"], injected["409"], injected["503"]),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after_and_kube_waits_that_long() {
    let emulator = Emulator::start().await.expect("emulator");
    let plain = plain_client(&emulator, None);
    Api::<Secret>::default_namespaced(plain.clone())
        .create(&PostParams::default(), &secret("s"))
        .await
        .expect("create");
    always(&emulator, "get", "429:2s");
    let request = http::Request::get("/api/v1/namespaces/default/secrets/s")
        .body(Body::empty())
        .expect("request");
    let response = plain.send(request).await.expect("response");
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let body = response.into_body().collect_bytes().await.expect("body");
    let status: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["details"]["retryAfterSeconds"], 2);

    // kube-rs's default client retries a 429 after the server's Retry-After.
    let faults: RandomFaults = "fraction=0.5,seed=1,verbs=get,faults=429:1s"
        .parse()
        .expect("spec");
    emulator.hooks().set_random_faults(Some(faults));
    emulator.hooks().reset_counters();
    let secrets: Api<Secret> = Api::default_namespaced(emulator.client());
    let started = Instant::now();
    for _ in 0..4 {
        secrets.get("s").await.expect("retried until answered");
    }
    let throttled = emulator.hooks().injected().get("429").copied().unwrap_or(0);
    assert!(throttled > 0, "seed 1 throttles some of four gets");
    assert_eq!(emulator.hooks().count("get", "secrets"), 4 + throttled);
    assert!(
        started.elapsed() >= Duration::from_secs(throttled),
        "each retry waited its Retry-After"
    );
}

#[tokio::test]
async fn fail_after_applies_the_write_and_answers_500() {
    let emulator = Emulator::start().await.expect("emulator");
    let secrets: Api<Secret> = Api::default_namespaced(plain_client(&emulator, None));
    always(&emulator, "create", "fail-after");
    let got = api_code(secrets.create(&PostParams::default(), &secret("s")).await);
    assert_eq!(got.0, 500);
    emulator.hooks().set_random_faults(None);
    assert!(
        secrets.get_opt("s").await.expect("get").is_some(),
        "written"
    );
    assert_eq!(emulator.hooks().injected()["fail-after"], 1);
}

#[tokio::test]
async fn hung_requests_time_the_client_out_with_or_without_the_write() {
    let emulator = Emulator::start().await.expect("emulator");
    let impatient: Api<Secret> =
        Api::default_namespaced(plain_client(&emulator, Some(Duration::from_millis(300))));
    let secrets: Api<Secret> = Api::default_namespaced(plain_client(&emulator, None));
    for (kind, written) in [("hang", false), ("hang-after", true)] {
        always(&emulator, "create", kind);
        let name = format!("s-{kind}");
        let result = impatient
            .create(&PostParams::default(), &secret(&name))
            .await;
        assert!(
            matches!(
                result,
                Err(kube::Error::HyperError(_) | kube::Error::Service(_))
            ),
            "{kind}: the client timed out, got {result:?}"
        );
        emulator.hooks().set_random_faults(None);
        assert_eq!(
            secrets.get_opt(&name).await.expect("get").is_some(),
            written,
            "{kind}"
        );
    }
    // With a hang timeout, the emulator answers 504 as kube-apiserver does.
    let spec = "fraction=1,seed=1,verbs=get,faults=hang,hang-timeout=200ms";
    emulator
        .hooks()
        .set_random_faults(Some(spec.parse().expect("spec")));
    assert_eq!(
        api_code(secrets.get("s-hang-after").await),
        (504, "Timeout".to_string())
    );
}

#[tokio::test]
async fn a_hung_request_does_not_hold_up_shutdown() {
    let emulator = Emulator::start().await.expect("emulator");
    let secrets: Api<Secret> = Api::default_namespaced(plain_client(&emulator, None));
    always(&emulator, "get", "hang");
    let hung = tokio::spawn(async move { secrets.get("s").await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while emulator.hooks().count("get", "secrets") == 0 {
        assert!(Instant::now() < deadline, "the get never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    emulator.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown waited {:?} for a hung request",
        started.elapsed()
    );
    let answer = hung.await.expect("joined");
    assert!(
        matches!(&answer, Err(kube::Error::Api(s)) if s.code == 503),
        "the hung client is told the emulator stopped: {answer:?}"
    );
}

#[tokio::test]
async fn latency_delays_the_answer() {
    let emulator = Emulator::start().await.expect("emulator");
    let secrets: Api<Secret> = Api::default_namespaced(plain_client(&emulator, None));
    always(&emulator, "list", "latency:300ms");
    let started = Instant::now();
    secrets.list(&Default::default()).await.expect("list");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(emulator.hooks().injected()["latency"], 1);
}

#[tokio::test]
async fn a_cut_watch_breaks_mid_stream() {
    let emulator = Emulator::start().await.expect("emulator");
    let secrets: Api<Secret> = Api::default_namespaced(plain_client(&emulator, None));
    secrets
        .create(&PostParams::default(), &secret("s"))
        .await
        .expect("create");
    always(&emulator, "watch", "cut-watch:300ms");
    let mut stream = secrets
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watch starts")
        .boxed();
    let mut events = 0;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        // kube-rs reads a broken connection as the end of the watch (and re-watches).
        while let Some(item) = stream.next().await {
            if let Ok(WatchEvent::Added(_)) = item {
                events += 1;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "a watch without a timeout ended");
    assert_eq!(events, 1, "the initial event came before the cut");
    assert_eq!(emulator.hooks().injected()["cut-watch"], 1);

    // On the wire: the connection closes without the chunked body's final empty chunk,
    // which is what tells a cut from a watch the server ended on purpose.
    let addr = emulator.addr();
    let raw = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        tcp.write_all(
            b"GET /api/v1/namespaces/default/secrets?watch=true HTTP/1.1\r\nHost: emulator\r\n\r\n",
        )
        .expect("send");
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).expect("the connection closes");
        raw
    })
    .await
    .expect("joined");
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("transfer-encoding: chunked"), "{raw}");
    assert!(raw.contains("\"ADDED\""), "{raw}");
    assert!(!raw.ends_with("\r\n0\r\n\r\n"), "ended cleanly: {raw}");
}

#[tokio::test]
async fn an_expired_watch_gets_410_gone() {
    let emulator = Emulator::start().await.expect("emulator");
    let secrets: Api<Secret> = Api::default_namespaced(plain_client(&emulator, None));
    let created = secrets
        .create(&PostParams::default(), &secret("s"))
        .await
        .expect("create");
    let rv = created.metadata.resource_version.expect("rv");
    always(&emulator, "watch", "expire-watch");
    let mut stream = secrets
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch starts")
        .boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    assert!(stream.next().await.is_none(), "and nothing after it");
    // A resuming watch without the fault still works from the same version.
    emulator.hooks().set_random_faults(None);
    let mut again = secrets
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .expect("watch")
        .boxed();
    assert!(!matches!(
        again.next().await,
        Some(Ok(WatchEvent::Error(_)))
    ));
}

#[tokio::test]
async fn a_seed_replays_the_same_faults_over_http() {
    async fn run(seed: u64) -> Vec<u16> {
        let emulator = Emulator::start().await.expect("emulator");
        let spec = format!("fraction=0.4,seed={seed},verbs=get,faults=500|503");
        emulator
            .hooks()
            .set_random_faults(Some(spec.parse().expect("spec")));
        let client = plain_client(&emulator, None);
        let mut codes = Vec::new();
        for _ in 0..30 {
            let request = http::Request::get("/api/v1/namespaces/default/secrets/s")
                .body(Body::empty())
                .expect("request");
            codes.push(
                client
                    .send(request)
                    .await
                    .expect("response")
                    .status()
                    .as_u16(),
            );
        }
        codes
    }
    let first = run(11).await;
    assert_eq!(first, run(11).await);
    assert_ne!(first, run(12).await);
    assert!(first.contains(&404) && first.iter().any(|c| *c >= 500));
}
