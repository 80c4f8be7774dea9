//! A local HTTP endpoint that answers as a key-minting webhook would (DESIGN §5, `Webhook`
//! generator). Each path answers as the test set it; the server counts requests per path,
//! the most it ever had in flight at once, and the keys it handed out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;

/// What one path answers.
#[derive(Clone, Debug)]
pub enum Answer {
    /// 200 with a fresh key at `/data/key` of a JSON body.
    Fresh,
    /// This status and body, every time.
    Fixed(u16, Vec<u8>),
    /// 200 `{}` when header `.0` is exactly `.1`, else 401 (a provider checking a key).
    Require(String, String),
    /// This status, with the `Authorization` header echoed in an error body, as some
    /// providers do with a wrong key.
    Echo(u16),
}

/// One path's behaviour: its answer, after a delay.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub answer: Answer,
    pub delay: Duration,
    /// Extra response headers (`Retry-After`, `Location`).
    pub headers: Vec<(String, String)>,
}

impl Behaviour {
    pub fn fresh() -> Self {
        Self {
            answer: Answer::Fresh,
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }

    pub fn fixed(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            answer: Answer::Fixed(status, body.into()),
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }

    pub fn answering(answer: Answer) -> Self {
        Self {
            answer,
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

#[derive(Default)]
struct Shared {
    behaviours: Mutex<HashMap<String, Behaviour>>,
    requests: Mutex<HashMap<String, u64>>,
    headers: Mutex<Vec<(String, axum::http::HeaderMap)>>,
    methods: Mutex<Vec<(String, String)>>,
    minted: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// The running server; stops when dropped.
pub struct Minter {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Minter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts a request in flight until dropped (also when the client gives up first).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn answer(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let path = request.uri().path().trim_start_matches('/').to_string();
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _counted = InFlight(&shared.in_flight);
    *shared
        .requests
        .lock()
        .expect("lock")
        .entry(path.clone())
        .or_default() += 1;
    shared
        .headers
        .lock()
        .expect("lock")
        .push((path.clone(), request.headers().clone()));
    shared
        .methods
        .lock()
        .expect("lock")
        .push((path.clone(), request.method().to_string()));
    let presented = request.headers().clone();
    let behaviour = shared
        .behaviours
        .lock()
        .expect("lock")
        .get(&path)
        .cloned()
        .unwrap_or_else(|| Behaviour::fixed(404, "no such path"));
    tokio::time::sleep(behaviour.delay).await;
    let (status, body) = match behaviour.answer {
        Answer::Fresh => {
            let key = format!("whk-{}", uuid::Uuid::new_v4().simple());
            shared.minted.lock().expect("lock").push(key.clone());
            (
                200,
                serde_json::json!({"data": {"key": key}})
                    .to_string()
                    .into_bytes(),
            )
        }
        Answer::Fixed(status, body) => (status, body),
        Answer::Echo(status) => {
            let presented = presented
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let body = serde_json::json!({"error": {"message": format!("Incorrect API key provided: {presented}")}});
            (status, body.to_string().into_bytes())
        }
        Answer::Require(name, value) => {
            let ok = presented.get(name.as_str()).and_then(|v| v.to_str().ok()) == Some(&value);
            if ok {
                (200, b"{}".to_vec())
            } else {
                (
                    401,
                    br#"{"error":{"message":"invalid key","code":"invalid_api_key"}}"#.to_vec(),
                )
            }
        }
    };
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (k, v) in &behaviour.headers {
        response = response.header(k.as_str(), v.as_str());
    }
    response.body(Body::from(body)).expect("response")
}

impl Minter {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    pub fn set(&self, path: &str, behaviour: Behaviour) {
        self.shared
            .behaviours
            .lock()
            .expect("lock")
            .insert(path.to_string(), behaviour);
    }

    /// Requests `path` received so far.
    pub fn requests(&self, path: &str) -> u64 {
        self.shared
            .requests
            .lock()
            .expect("lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// The values of header `name` that requests to `path` carried.
    pub fn header_values(&self, path: &str, name: &str) -> Vec<String> {
        self.shared
            .headers
            .lock()
            .expect("lock")
            .iter()
            .filter(|(p, _)| p == path)
            .filter_map(|(_, h)| h.get(name)?.to_str().ok().map(String::from))
            .collect()
    }

    /// The methods of the requests to `path`.
    pub fn methods(&self, path: &str) -> Vec<String> {
        self.shared
            .methods
            .lock()
            .expect("lock")
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Every path requested so far, in order.
    pub fn paths(&self) -> Vec<String> {
        self.shared
            .methods
            .lock()
            .expect("lock")
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Every key handed out with [`Answer::Fresh`].
    pub fn minted(&self) -> Vec<String> {
        self.shared.minted.lock().expect("lock").clone()
    }

    /// The most requests that were ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }
}
