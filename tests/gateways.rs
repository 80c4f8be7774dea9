//! The gateway recipes of docs/gateways/ against a real verifier fed by the real
//! controllers. nginx `auth_request` runs for real: the recipe as is, in front of the
//! verifier and of a backend that records what reaches it. Envoy `ext_authz` and Traefik
//! `forwardAuth` cannot be installed here, so their files are parsed and checked against
//! the verifier's answers: the headers they send it and copy from it, the path and
//! methods they ask with, and which of its statuses they read as allow and as deny.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::operator::{Operator, until_code, verifier, verify_json};
use common::{eventually_blocking, http, root};
use serde_json::{Value, json};

/// The headers that tell a backend who is calling (DESIGN §6): every recipe copies them.
const IDENTITY: [&str; 3] = ["x-keyward-key", "x-keyward-owner", "x-keyward-scopes"];

/// A verifier with a key for every answer a gateway must handle.
struct Fixture {
    op: Operator,
    verifier: keyward::verifier::Running,
    addr: String,
    /// Owner, scopes and a rate limit: its 200 carries every header the verifier has.
    full: String,
    /// No owner, no scopes.
    anon: String,
    /// Disabled.
    off: String,
    /// One request a minute, already spent.
    spent: String,
}

impl Fixture {
    async fn start(rate_limited_status: u16) -> Self {
        let op = Operator::start().await;
        let verifier = verifier(&op, rate_limited_status).await;
        let addr = verifier.addr.to_string();
        let specs = [
            (
                "full",
                json!({"owner": "team-a", "scopes": ["read:models", "write:chat"], "rateLimit": {"requestsPerMinute": 1000}}),
            ),
            ("anon", json!({})),
            ("off", json!({"owner": "team-b", "disabled": true})),
            (
                "spent",
                json!({"owner": "team-c", "rateLimit": {"requestsPerMinute": 1}}),
            ),
        ];
        for (name, spec) in &specs {
            op.apply(name, spec.clone()).await;
        }
        let mut keys = BTreeMap::new();
        for (name, _) in &specs {
            if *name == "off" {
                op.wait_reason(name, "Disabled").await;
            } else {
                op.wait_ready(name).await;
            }
            keys.insert(*name, op.key_in(name, "api-key").await.expect("key"));
        }
        until_code(&addr, &keys["full"], "VALID").await;
        until_code(&addr, &keys["anon"], "VALID").await;
        until_code(&addr, &keys["off"], "DISABLED").await;
        // Its first VALID answer spends the one request of this minute.
        until_code(&addr, &keys["spent"], "VALID").await;
        assert_eq!(
            tokio::task::block_in_place(|| verify_json(&addr, &keys["spent"]))["code"],
            "RATE_LIMITED"
        );
        Self {
            op,
            verifier,
            addr,
            full: keys["full"].clone(),
            anon: keys["anon"].clone(),
            off: keys["off"].clone(),
            spent: keys["spent"].clone(),
        }
    }

    /// The verifier's status and headers for one request.
    fn ask(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Headers) {
        let (status, headers, _) =
            tokio::task::block_in_place(|| http(&self.addr, method, path, headers, ""));
        (status, headers)
    }

    /// `GET path` for every refusal: (what, status, headers).
    fn refusals(&self, path: &str) -> Vec<(&'static str, u16, Headers)> {
        let stranger = keyward::keys::generate(&keyward::crd::KeyFormat::default()).expect("key");
        let stranger = format!("Bearer {}", stranger.expose());
        [
            ("missing", vec![]),
            ("unknown", vec![("Authorization", stranger.as_str())]),
            ("disabled", vec![("X-API-Key", self.off.as_str())]),
            ("rate limited", vec![("X-API-Key", self.spent.as_str())]),
        ]
        .into_iter()
        .map(|(what, headers)| {
            let (status, headers) = self.ask("GET", path, &headers);
            (what, status, headers)
        })
        .collect()
    }

    /// Checks what a gateway that allows exactly when `allows(status)` makes of every
    /// refusal: it denies each, with the status the verifier chose, and a client that was
    /// rate limited learns when to retry.
    fn assert_refused(
        &self,
        gateway: &str,
        path: &str,
        allows: impl Fn(u16) -> bool,
    ) -> Vec<(&'static str, u16, Headers)> {
        let refusals = self.refusals(path);
        let statuses: Vec<_> = refusals.iter().map(|(w, s, _)| (*w, *s)).collect();
        assert_eq!(
            statuses,
            [
                ("missing", 401),
                ("unknown", 401),
                ("disabled", 403),
                ("rate limited", 429)
            ],
            "{gateway}: the verifier's answers on {path}"
        );
        for (what, status, headers) in &refusals {
            assert!(!allows(*status), "{gateway} would let a {what} key in");
            if *status == 429 {
                assert!(headers.contains_key("retry-after"), "{what}: {headers:?}");
            }
        }
        refusals
    }
}

type Headers = BTreeMap<String, String>;

fn recipe_path(name: &str) -> PathBuf {
    root().join("docs/gateways").join(name)
}

fn recipe_yaml(name: &str) -> Value {
    let text = std::fs::read_to_string(recipe_path(name)).expect("recipe");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name} is not YAML: {e}"))
}

/// The header names an Envoy `ListStringMatcher` lets through, lower-cased. Only exact
/// names: a prefix or a regex could not be checked against the verifier's answers.
fn envoy_names(matcher: &Value) -> BTreeSet<String> {
    matcher["patterns"]
        .as_array()
        .unwrap_or_else(|| panic!("a matcher with patterns: {matcher}"))
        .iter()
        .map(|p| {
            p["exact"]
                .as_str()
                .unwrap_or_else(|| panic!("exact header names only: {p}"))
                .to_ascii_lowercase()
        })
        .collect()
}

/// A YAML list of header names, lower-cased.
fn names(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list of header names: {list}"))
        .iter()
        .map(|n| n.as_str().expect("a header name").to_ascii_lowercase())
        .collect()
}

#[track_caller]
fn assert_subset(what: &str, part: &BTreeSet<String>, whole: &BTreeSet<String>) {
    let missing: Vec<_> = part.difference(whole).collect();
    assert!(missing.is_empty(), "{what}: {missing:?} missing");
}

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const EXT_AUTHZ: &str = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
const HEADER_MUTATION: &str =
    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

#[tokio::test(flavor = "multi_thread")]
async fn envoy_ext_authz_recipe_matches_the_verifier() {
    let doc = recipe_yaml("envoy.yaml");
    let managers: Vec<&Value> = doc["static_resources"]["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .flat_map(|l| l["filter_chains"].as_array().expect("filter chains"))
        .flat_map(|c| c["filters"].as_array().expect("filters"))
        .map(|f| &f["typed_config"])
        .filter(|c| c["@type"] == HCM)
        .collect();
    let [manager] = managers[..] else {
        panic!("one HTTP connection manager, found {}", managers.len())
    };
    let filters: Vec<&Value> = manager["http_filters"]
        .as_array()
        .expect("http_filters")
        .iter()
        .map(|f| &f["typed_config"])
        .collect();
    let at = |kind: &str| {
        filters
            .iter()
            .position(|f| f["@type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} filter"))
    };
    let (strip, authz) = (at(HEADER_MUTATION), at(EXT_AUTHZ));
    assert!(
        strip < authz,
        "the client's own identity headers are dropped before the check"
    );
    assert_eq!(
        filters.last().map(|f| &f["@type"]),
        Some(&json!(ROUTER)),
        "the router comes last"
    );
    let authz = filters[authz];
    assert_ne!(
        authz["failure_mode_allow"],
        json!(true),
        "an unreachable verifier must not let requests in"
    );
    let service = &authz["http_service"];
    let cluster = service["server_uri"]["cluster"].as_str().expect("cluster");
    assert!(
        doc["static_resources"]["clusters"]
            .as_array()
            .expect("clusters")
            .iter()
            .any(|c| c["name"] == cluster),
        "the verifier's cluster {cluster} is defined"
    );
    let prefix = service["path_prefix"].as_str().expect("path_prefix");
    let sent = envoy_names(&authz["allowed_headers"]);
    let copied = envoy_names(&service["authorization_response"]["allowed_upstream_headers"]);
    let stripped: BTreeSet<String> = filters[strip]["mutations"]["request_mutations"]
        .as_array()
        .expect("request_mutations")
        .iter()
        .filter_map(|m| m["remove"].as_str())
        .map(str::to_ascii_lowercase)
        .collect();
    let removed_after =
        names(&manager["route_config"]["virtual_hosts"][0]["request_headers_to_remove"]);

    let fx = Fixture::start(429).await;
    let identity: BTreeSet<String> = IDENTITY.iter().map(|h| h.to_string()).collect();
    let key_headers: BTreeSet<String> = ["authorization", "x-api-key"].map(String::from).into();
    assert_subset("headers sent to the verifier", &key_headers, &sent);
    assert_subset("identity headers copied upstream", &identity, &copied);
    assert_subset(
        "copied headers removed from the client's request first",
        &copied,
        &stripped,
    );
    assert_subset(
        "key headers kept from the backend",
        &key_headers,
        &removed_after,
    );
    // Envoy keeps the method and appends the original path (query included) to the prefix.
    for (method, original) in [
        ("GET", "/"),
        ("POST", "/v1/chat/completions"),
        ("PUT", "/v1/files/a.txt?purpose=batch"),
        ("PATCH", "/v1/x"),
        ("DELETE", "/v1/models/m"),
        ("OPTIONS", "/v1/models"),
        ("HEAD", "/v1/models"),
    ] {
        let path = format!("{prefix}{original}");
        for header in &key_headers {
            let value = match header.as_str() {
                "authorization" => format!("Bearer {}", fx.full),
                _ => fx.full.clone(),
            };
            let (status, answer) = fx.ask(method, &path, &[(header, &value)]);
            assert_eq!(
                status, 200,
                "{method} {path}, key in {header}: Envoy allows only a 200"
            );
            let answered: BTreeSet<String> = answer.keys().cloned().collect();
            assert_subset(
                &format!("headers copied upstream, in the 200 to {method} {path}"),
                &copied,
                &answered,
            );
        }
    }
    // Envoy passes a refusal's status and headers to the client, unless it is a 5xx,
    // which it treats as the verifier failing.
    for (what, status, _) in fx.assert_refused("Envoy", &format!("{prefix}/v1/chat"), |s| s == 200)
    {
        assert!(status < 500, "{what}: {status} would read as an error");
    }
    fx.verifier.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn traefik_forward_auth_recipe_matches_the_verifier() {
    let doc = recipe_yaml("traefik.yaml");
    let middlewares = doc["http"]["middlewares"].as_object().expect("middlewares");
    let auths: Vec<(&String, &Value)> = middlewares
        .iter()
        .filter(|(_, m)| m.get("forwardAuth").is_some())
        .collect();
    let [(auth_name, auth)] = auths[..] else {
        panic!("one forwardAuth middleware, found {}", auths.len())
    };
    let forward = &auth["forwardAuth"];
    let address = url::Url::parse(forward["address"].as_str().expect("address")).expect("a URL");
    let sent = names(&forward["authRequestHeaders"]);
    let copied = names(&forward["authResponseHeaders"]);
    // A router sends requests through the check, then drops the key, to a defined service.
    let routers = doc["http"]["routers"].as_object().expect("routers");
    let router = routers
        .values()
        .find(|r| {
            r["middlewares"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m == auth_name.as_str()))
        })
        .expect("a router uses the forwardAuth middleware");
    let chain: Vec<&str> = router["middlewares"]
        .as_array()
        .expect("middlewares")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let after = &chain[chain.iter().position(|m| m == auth_name).expect("in chain") + 1..];
    let removed_after: BTreeSet<String> = after
        .iter()
        .filter_map(|m| middlewares.get(*m))
        .filter_map(|m| m["headers"]["customRequestHeaders"].as_object())
        .flat_map(|h| h.iter().filter(|(_, v)| v.as_str() == Some("")))
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    let service = router["service"].as_str().expect("service");
    assert!(
        doc["http"]["services"].get(service).is_some(),
        "the router's service {service} is defined"
    );

    let fx = Fixture::start(429).await;
    let identity: BTreeSet<String> = IDENTITY.iter().map(|h| h.to_string()).collect();
    let key_headers: BTreeSet<String> = ["authorization", "x-api-key"].map(String::from).into();
    assert_subset("headers sent to the verifier", &key_headers, &sent);
    assert_subset("identity headers copied upstream", &identity, &copied);
    assert_subset(
        "key headers kept from the backend",
        &key_headers,
        &removed_after,
    );
    // Traefik asks with a GET to the address as written, whatever the client's request.
    let path = address.path();
    for header in &key_headers {
        let value = match header.as_str() {
            "authorization" => format!("Bearer {}", fx.full),
            _ => fx.full.clone(),
        };
        let (status, answer) = fx.ask("GET", path, &[(header, &value)]);
        assert!(
            (200..300).contains(&status),
            "GET {path}, key in {header}: {status}; Traefik allows only a 2xx"
        );
        let answered: BTreeSet<String> = answer.keys().cloned().collect();
        assert_subset(
            &format!("headers copied upstream, in the 200 to GET {path}"),
            &copied,
            &answered,
        );
    }
    // Traefik returns any other answer to the client as it is, headers included.
    fx.assert_refused("Traefik", path, |s| (200..300).contains(&s));
    fx.verifier.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request_recipe_runs_for_real() {
    let binary = nginx_binary();
    let fx = Fixture::start(403).await;
    let backend = Backend::start().await;
    let nginx = Nginx::start(&binary, &fx.addr, &backend.addr);
    let ask = |method: &str, path: &str, headers: &[(&str, &str)], body: &str| {
        let (status, headers, body) =
            tokio::task::block_in_place(|| http(&nginx.addr, method, path, headers, body));
        (status, headers, body)
    };
    let ns = &fx.op.namespace;

    // A valid key: the request reaches the backend, with who is calling and without the
    // key; identity headers the client made up are replaced.
    let bearer = format!("Bearer {}", fx.full);
    let (status, _, body) = ask(
        "POST",
        "/v1/chat/completions?stream=false",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
            ("X-Keyward-Owner", "mallory"),
            ("X-Keyward-Key", "other/key"),
        ],
        r#"{"model": "m"}"#,
    );
    assert_eq!((status, body.as_str()), (200, "backend"));
    let seen = backend.last();
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str(), seen.body.as_str()),
        (
            "POST",
            "/v1/chat/completions?stream=false",
            r#"{"model": "m"}"#
        )
    );
    assert_eq!(seen.header("x-keyward-key"), [format!("{ns}/full")]);
    assert_eq!(seen.header("x-keyward-owner"), ["team-a"]);
    assert_eq!(seen.header("x-keyward-scopes"), ["read:models write:chat"]);
    assert!(
        seen.header("authorization").is_empty() && seen.header("x-api-key").is_empty(),
        "the backend never sees the key: {seen:?}"
    );
    let (status, _, _) = ask("GET", "/v1/models", &[("X-API-Key", &fx.full)], "");
    assert_eq!(status, 200);
    let seen = backend.last();
    assert_eq!(seen.header("x-keyward-key"), [format!("{ns}/full")]);
    assert!(seen.header("x-api-key").is_empty(), "{seen:?}");

    // A key with no owner: a made-up owner still never reaches the backend.
    let bearer = format!("Bearer {}", fx.anon);
    let (status, _, _) = ask(
        "GET",
        "/v1/models",
        &[("Authorization", &bearer), ("X-Keyward-Owner", "mallory")],
        "",
    );
    assert_eq!(status, 200);
    let seen = backend.last();
    assert_eq!(seen.header("x-keyward-key"), [format!("{ns}/anon")]);
    assert!(
        seen.header("x-keyward-owner").is_empty(),
        "no owner, none made up: {seen:?}"
    );

    // Refusals: the client gets the verifier's meaning, the backend never hears of it.
    let reached = backend.count();
    let stranger = keyward::keys::generate(&keyward::crd::KeyFormat::default()).expect("key");
    let stranger = format!("Bearer {}", stranger.expose());
    let (status, headers, _) = ask("GET", "/v1/models", &[], "");
    assert_eq!(
        (status, headers.get("www-authenticate").map(String::as_str)),
        (401, Some("Bearer")),
        "missing key"
    );
    let (status, _, _) = ask("GET", "/v1/models", &[("Authorization", &stranger)], "");
    assert_eq!(status, 401, "unknown key");
    let (status, _, _) = ask("GET", "/v1/models", &[("X-API-Key", &fx.off)], "");
    assert_eq!(status, 403, "disabled key");
    // The verifier answers 403 RATE_LIMITED; the recipe's @keyward_denied makes it 429.
    let (status, headers, _) = ask("POST", "/v1/chat", &[("X-API-Key", &fx.spent)], "{}");
    let retry = headers
        .get("retry-after")
        .and_then(|r| r.parse::<u64>().ok());
    assert_eq!(status, 429, "rate limited: {headers:?}");
    assert!(
        retry.is_some_and(|s| (1..=60).contains(&s)),
        "Retry-After at 1/min: {headers:?}"
    );
    assert_eq!(
        backend.count(),
        reached,
        "no refused request reached the backend"
    );
    drop(nginx);
    fx.verifier.stop();
}

/// The nginx to run: on PATH, or where Debian puts it. Fails, never skips, without one.
fn nginx_binary() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file());
    let Some(binary) = found else {
        panic!(
            "nginx is not installed: run scripts/install-tools (scripts/test does) to install it"
        );
    };
    let version = Command::new(&binary)
        .arg("-V")
        .output()
        .unwrap_or_else(|e| panic!("{} does not run: {e}", binary.display()));
    assert!(
        String::from_utf8_lossy(&version.stderr).contains("--with-http_auth_request_module"),
        "{} has no auth_request module: run scripts/install-tools for Debian's nginx",
        binary.display()
    );
    binary
}

/// A port nothing listens on just now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// nginx in the foreground, as the test's user, with everything it writes in a temp dir,
/// serving the recipe with the test's addresses. Killed when dropped.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
}

impl Nginx {
    fn start(binary: &Path, verifier: &str, backend: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut site = std::fs::read_to_string(recipe_path("nginx.conf")).expect("recipe");
        // Exactly the three addresses the recipe's header names.
        for (from, to) in [
            ("listen 80;", format!("listen {addr};")),
            (
                "server keyward-verifier.keyward-system:8080;",
                format!("server {verifier};"),
            ),
            ("server backend:8000;", format!("server {backend};")),
        ] {
            assert_eq!(site.matches(from).count(), 1, "{from:?} once in nginx.conf");
            site = site.replace(from, &to);
        }
        let d = dir.path().display();
        std::fs::write(dir.path().join("keyward.conf"), site).expect("write");
        let main = format!(
            "daemon off;\n\
             master_process off;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
             access_log {d}/access.log;\n\
             client_body_temp_path {d}/client_body;\n\
             proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n\
             include {d}/keyward.conf;\n\
             }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).expect("write");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("log");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-e", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", binary.display()));
        let mut nginx = Self { child, dir, addr };
        eventually_blocking("nginx to listen", || {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", nginx.logs());
            }
            std::net::TcpStream::connect(&nginx.addr).ok().map(drop)
        });
        nginx
    }

    fn logs(&self) -> String {
        ["stderr.log", "error.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request as the backend received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: BTreeMap<String, Vec<String>>,
    body: String,
}

impl Seen {
    /// Every value of a header (names are lower-case).
    fn header(&self, name: &str) -> Vec<String> {
        self.headers.get(name).cloned().unwrap_or_default()
    }
}

/// The API behind the gateway: answers "backend" and records every request.
struct Backend {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let record = record.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (name, value) in &parts.headers {
                    headers
                        .entry(name.as_str().to_string())
                        .or_default()
                        .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
                }
                record.lock().expect("lock").push(Seen {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                "backend"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, seen }
    }

    fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("the backend was reached")
    }
}
