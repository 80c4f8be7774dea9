//! The verifier's HTTP server, which faces the network (DESIGN §6): every connection is
//! accounted from accept to close.
//!
//! - A request's head must arrive within the header-read timeout, counted from its first
//!   byte; a connection with no request in progress closes after the idle timeout.
//! - At most `max_connections` are open. At the limit, a new connection makes room by
//!   closing the oldest idle keep-alive connection, else the oldest one still sending its
//!   head; a connection with a request in flight is never closed for room. When none can
//!   close, accepting pauses (the kernel's backlog holds the newcomers) until one does.
//! - Heads are capped (16 KiB in all, 64 fields), so a 100 KB header is refused with 431.
//! - Draining stops accepting, closes idle connections at once, and lets requests in flight
//!   finish within a grace period.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// Default header-read timeout.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle timeout.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Most header fields in one request.
const MAX_HEADERS: usize = 64;

/// The server's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: default_max_connections(),
        }
    }
}

/// min(4096, half the open-file limit): the other half stays for the process's other
/// sockets (the API server, the controllers, other listeners).
pub fn default_max_connections() -> usize {
    let open_files = open_file_limit().unwrap_or(1024);
    (open_files / 2).clamp(1, 4096)
}

#[cfg(unix)]
fn open_file_limit() -> Option<usize> {
    let (soft, _hard) = rlimit::Resource::NOFILE.get().ok()?;
    Some(usize::try_from(soft).unwrap_or(usize::MAX))
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<usize> {
    None
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in progress since this instant.
    Idle(Instant),
    /// A request's head has been arriving since this instant.
    Head(Instant),
    /// A request is being answered.
    Busy,
}

/// One open connection, as the server accounts it. Its phase changes only inside the
/// connection's own task (reading bytes, starting and finishing a request), which re-arms
/// its deadline after every poll; other tasks only read the phase and ask it to close.
struct Conn {
    phase: Mutex<Phase>,
    /// Asks the connection to close (for room, or to drain).
    close: Notify,
}

impl Conn {
    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    /// Bytes arrived: an idle connection starts a request head.
    fn on_bytes(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*phase, Phase::Idle(_)) {
            *phase = Phase::Head(Instant::now());
        }
    }

    /// When the connection must close unless its phase changes first.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        match self.phase() {
            Phase::Idle(since) => Some(since + limits.idle_timeout),
            Phase::Head(since) => Some(since + limits.header_read_timeout),
            Phase::Busy => None,
        }
    }
}

/// The open connections.
#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// Signalled whenever a connection closes.
    closed: Notify,
}

impl Registry {
    fn add(&self, conn: Arc<Conn>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, conn);
        id
    }

    fn remove(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.closed.notify_waiters();
    }

    fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Asks the connection that can best make room to close: the oldest idle one, else the
    /// oldest still sending its head. `false` when every connection has a request in flight.
    fn make_room(&self) -> bool {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = |head: bool| {
            conns
                .values()
                .filter_map(|c| match (c.phase(), head) {
                    (Phase::Idle(t), false) | (Phase::Head(t), true) => Some((t, c)),
                    _ => None,
                })
                .min_by_key(|(t, _)| *t)
                .map(|(_, c)| c.clone())
        };
        match oldest(false).or_else(|| oldest(true)) {
            Some(conn) => {
                conn.close.notify_one();
                true
            }
            None => false,
        }
    }

    fn close_all(&self) {
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            c.close.notify_one();
        }
    }
}

/// A running server's handle: its counters, and a way to drain it.
#[derive(Clone)]
pub struct Handle {
    registry: Arc<Registry>,
    in_flight: Arc<AtomicUsize>,
    drain: watch::Sender<bool>,
}

impl Handle {
    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.registry.len()
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Stops accepting, closes idle connections, and waits for requests in flight to
    /// finish, for at most `grace`; then every connection is closed.
    pub async fn drain(&self, grace: Duration) {
        self.drain.send_replace(true);
        self.registry.close_all();
        let _ = tokio::time::timeout(grace, async {
            loop {
                let closed = self.registry.closed.notified();
                if self.registry.len() == 0 {
                    return;
                }
                closed.await;
            }
        })
        .await;
    }
}

/// Serves `app` on `listener` within `limits` until drained; over TLS when `tls` is set (the
/// handshake counts as part of the first request's head).
pub fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<super::tls::Reloading>>,
) -> (Handle, impl Future<Output = ()>) {
    let registry = Arc::new(Registry::default());
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (drain, draining) = watch::channel(false);
    let handle = Handle {
        registry: registry.clone(),
        in_flight: in_flight.clone(),
        drain,
    };
    let run = accept_loop(listener, app, limits, tls, registry, in_flight, draining);
    (handle, run)
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<super::tls::Reloading>>,
    registry: Arc<Registry>,
    in_flight: Arc<AtomicUsize>,
    mut draining: watch::Receiver<bool>,
) {
    let max = limits.max_connections.max(1);
    loop {
        // Room first: never more than `max` open, never an accept we cannot account.
        while registry.len() >= max {
            let closed = registry.closed.notified();
            if registry.len() < max {
                break;
            }
            let asked = registry.make_room();
            tokio::select! {
                _ = closed => {}
                // Nothing could close: look again when a request finishes or in a moment.
                _ = tokio::time::sleep(Duration::from_millis(if asked { 1000 } else { 50 })) => {}
                _ = drain_asked(&mut draining) => return,
            }
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = drain_asked(&mut draining) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, or the like: back off instead of spinning.
                tracing::warn!(error = %e, "verifier accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn {
            phase: Mutex::new(Phase::Idle(Instant::now())),
            close: Notify::new(),
        });
        let id = registry.add(conn.clone());
        let registry = registry.clone();
        let app = app.clone();
        let in_flight = in_flight.clone();
        let draining = draining.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let tracked = Tracked {
                inner: stream,
                conn: conn.clone(),
            };
            match tls {
                None => connection(tracked, conn, app, limits, in_flight, draining).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                    // The handshake is part of the head: the same timeout bounds it.
                    let accepted =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tracked))
                            .await;
                    if let Ok(Ok(stream)) = accepted {
                        connection(stream, conn, app, limits, in_flight, draining).await;
                    }
                }
            }
            registry.remove(id);
        });
    }
}

/// Resolves once draining is asked for; never when the handle is gone without asking
/// (dropping a running server's handle leaves it serving).
async fn drain_asked(draining: &mut watch::Receiver<bool>) {
    if draining.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Marks a connection busy for as long as a request is being answered, even when the
/// answer is abandoned.
struct BusyGuard {
    conn: Arc<Conn>,
    in_flight: Arc<AtomicUsize>,
}

impl BusyGuard {
    fn new(conn: Arc<Conn>, in_flight: Arc<AtomicUsize>) -> Self {
        conn.set(Phase::Busy);
        in_flight.fetch_add(1, Ordering::SeqCst);
        Self { conn, in_flight }
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.conn.set(Phase::Idle(Instant::now()));
    }
}

async fn connection<I>(
    stream: I,
    conn: Arc<Conn>,
    app: Router,
    limits: Limits,
    in_flight: Arc<AtomicUsize>,
    mut draining: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let guard = BusyGuard::new(conn.clone(), in_flight.clone());
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(axum::body::Body::new)).await;
                drop(guard);
                Ok::<_, Infallible>(match response {
                    Ok(r) => r,
                    Err(never) => match never {},
                })
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS);
    let served = builder.serve_connection(io, service);
    let mut served = std::pin::pin!(served);
    let mut timer = std::pin::pin!(tokio::time::sleep_until(
        Instant::now() + limits.idle_timeout
    ));
    let mut armed = None;
    let mut shutting_down = false;
    loop {
        let close = conn.close.notified();
        // Serves until the connection ends or its deadline passes; the deadline is re-read
        // after every poll, since serving is what moves the phase.
        let serving = std::future::poll_fn(|cx| {
            if served.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let deadline = conn.deadline(&limits);
            if deadline != armed {
                if let Some(d) = deadline {
                    timer.as_mut().reset(d);
                }
                armed = deadline;
            }
            match armed {
                Some(_) if timer.as_mut().poll(cx).is_ready() => Poll::Ready(()),
                _ => Poll::Pending,
            }
        });
        tokio::select! {
            // Ended, timed out reading a head, or idle too long.
            () = serving => return,
            _ = close => {
                if !matches!(conn.phase(), Phase::Busy) {
                    return;
                }
                // In flight: finish this request, then close.
                if !shutting_down {
                    served.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
            }
            _ = drain_asked(&mut draining), if !shutting_down => {
                served.as_mut().graceful_shutdown();
                shutting_down = true;
                if !matches!(conn.phase(), Phase::Busy) {
                    return;
                }
            }
        }
    }
}

/// A connection's byte stream, reporting arriving bytes to its accounting.
struct Tracked {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.on_bytes();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
