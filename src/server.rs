//! The HTTP front: a TCP listener we build ourselves, tiny_http on top of
//! it, and a fixed pool of worker threads that run [`Api::handle`].
//!
//! Owns what tiny_http does not do: `TCP_NODELAY` (else keep-alive answers
//! stall ~40 ms behind delayed ACKs), a receive timeout inherited by every
//! accepted socket (stalled and idle clients are dropped), URL and header
//! size limits, panic isolation, and surviving accept errors. tiny_http's
//! accept thread ends for good on any accept error (including the idle
//! `accept()` timing out under `SO_RCVTIMEO`); the worker that receives that
//! error builds a new `tiny_http::Server` on a clone of the same listening
//! socket, and a drain thread keeps answering the old one's keep-alive
//! connections until they have been idle longer than the receive timeout.
//!
//! This module must not contain API logic (see `api.rs`) or SQL.

use std::io::{self, Cursor};
use std::net::{SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::api::{self, code, error_response, Api, Bytes, Response};
use crate::metrics::Route;
use crate::store::Reader;

/// Limits and sizes of the front.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub workers: usize,
    /// Receive timeout of every accepted socket: a client that sends nothing
    /// for this long (mid-headers or idle keep-alive) is dropped.
    pub idle_timeout: Duration,
    pub max_url_bytes: usize,
    pub max_header_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: default_workers(),
            idle_timeout: Duration::from_secs(10),
            max_url_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
        }
    }
}

/// Worker threads by default: one per core, at least two.
pub fn default_workers() -> usize {
    thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// How long a worker blocks in `recv` before re-checking for shutdown and
/// for a rebuilt server.
const POLL: Duration = Duration::from_millis(200);

/// Binds the listening socket with `TCP_NODELAY` and `SO_RCVTIMEO` set, both
/// inherited by accepted sockets on Linux.
pub fn bind(addr: SocketAddr, idle_timeout: Duration) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_read_timeout(Some(idle_timeout))?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The listening socket and the tiny_http server currently accepting on it.
struct Front {
    listener: TcpListener,
    current: RwLock<Arc<tiny_http::Server>>,
    stopping: AtomicBool,
    rebuilds: AtomicUsize,
    last_rebuild: Mutex<Option<Instant>>,
}

impl Front {
    fn new(listener: TcpListener) -> io::Result<Front> {
        let server = Self::server_on(&listener)?;
        Ok(Front {
            listener,
            current: RwLock::new(server),
            stopping: AtomicBool::new(false),
            rebuilds: AtomicUsize::new(0),
            last_rebuild: Mutex::new(None),
        })
    }

    fn server_on(listener: &TcpListener) -> io::Result<Arc<tiny_http::Server>> {
        let clone = listener.try_clone()?;
        tiny_http::Server::from_listener(clone, None)
            .map(Arc::new)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn current(&self) -> Arc<tiny_http::Server> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces `failed` (whose accept thread has ended) with a new server on
    /// the same socket. Returns the old server for draining, or `None` when
    /// another worker already replaced it.
    fn rebuild(&self, failed: &Arc<tiny_http::Server>) -> Option<Arc<tiny_http::Server>> {
        // Back off a little when accept keeps failing (e.g. out of fds), so
        // rebuilding cannot spin.
        if let Ok(mut last) = self.last_rebuild.lock() {
            if let Some(t) = *last {
                if t.elapsed() < Duration::from_millis(50) {
                    thread::sleep(Duration::from_millis(50));
                }
            }
            *last = Some(Instant::now());
        }
        let mut slot = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !Arc::ptr_eq(&slot, failed) {
            return None;
        }
        match Self::server_on(&self.listener) {
            Ok(fresh) => {
                self.rebuilds.fetch_add(1, SeqCst);
                Some(std::mem::replace(&mut *slot, fresh))
            }
            Err(e) => {
                crate::log::error(&format!("cannot restart the HTTP accept loop: {e}"));
                None
            }
        }
    }
}

/// A running HTTP server. Dropping it does not stop it; call [`shutdown`].
///
/// [`shutdown`]: RunningServer::shutdown
pub struct RunningServer {
    front: Arc<Front>,
    local_addr: SocketAddr,
    workers: Vec<JoinHandle<()>>,
    drains: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

struct WorkerCtx {
    api: Arc<Api>,
    db: PathBuf,
    cfg: ServerConfig,
    reader: Option<Reader>,
}

impl WorkerCtx {
    fn handle(&mut self, rq: tiny_http::Request) {
        let started = Instant::now();
        let response = self.respond_to(&rq);
        let (status, route) = (response.status, response.route);
        send(rq, response);
        self.api
            .metrics()
            .observe_request(route, status, started.elapsed());
    }

    fn respond_to(&mut self, rq: &tiny_http::Request) -> Response {
        let url = rq.url();
        if url.len() > self.cfg.max_url_bytes {
            return error_response(
                414,
                Route::Other,
                code::URI_TOO_LONG,
                &format!("the URL is over {} bytes", self.cfg.max_url_bytes),
            );
        }
        let mut header_bytes = 0;
        let (mut accept_encoding, mut if_none_match) = (None, None);
        for h in rq.headers() {
            header_bytes += h.field.as_str().as_str().len() + h.value.as_str().len() + 4;
            if h.field.equiv("Accept-Encoding") {
                accept_encoding = Some(h.value.as_str());
            } else if h.field.equiv("If-None-Match") {
                if_none_match = Some(h.value.as_str());
            }
        }
        if header_bytes > self.cfg.max_header_bytes {
            return error_response(
                431,
                Route::Other,
                code::HEADERS_TOO_LARGE,
                &format!(
                    "request headers are over {} bytes",
                    self.cfg.max_header_bytes
                ),
            );
        }
        let method = rq.method().as_str();
        let req = api::Request {
            method,
            url,
            accept_encoding,
            if_none_match,
        };
        if self.reader.is_none() {
            match Reader::open(&self.db) {
                Ok(r) => self.reader = Some(r),
                Err(e) => {
                    crate::log::error(&format!("cannot open the store for reading: {e}"));
                    return api::unavailable(
                        Route::Other,
                        code::NOT_READY,
                        "the store is not open yet",
                    );
                }
            }
        }
        let api = &self.api;
        let reader = &mut self.reader;
        let result = catch_unwind(AssertUnwindSafe(|| match reader.as_mut() {
            Some(r) => api.handle(&req, r),
            None => api::unavailable(Route::Other, code::NOT_READY, "the store is not open yet"),
        }));
        match result {
            Ok(r) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                crate::log::error(&format!(
                    "handler panicked on {method} {}: {what}",
                    short(url)
                ));
                // The connection may be mid-statement: start afresh.
                self.reader = None;
                error_response(
                    500,
                    Route::Other,
                    code::INTERNAL,
                    "internal error; it has been logged",
                )
            }
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

fn send(rq: tiny_http::Request, r: Response) {
    let mut headers = Vec::with_capacity(r.headers.len());
    for (k, v) in &r.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            headers.push(h);
        }
    }
    let len = r.body.len();
    let response = tiny_http::Response::new(
        tiny_http::StatusCode(r.status),
        headers,
        Cursor::new(r.body as Bytes),
        Some(len),
        None,
    );
    // The client may be gone; nothing to do about it.
    let _ = rq.respond(response);
}

fn worker_loop(front: Arc<Front>, mut ctx: WorkerCtx, drains: Arc<Mutex<Vec<JoinHandle<()>>>>) {
    while !front.stopping.load(SeqCst) {
        let server = front.current();
        match server.recv_timeout(POLL) {
            Ok(Some(rq)) => ctx.handle(rq),
            Ok(None) => {}
            Err(e) => {
                // The accept thread of `server` has ended (tiny_http reports
                // that once, as this error). Start a new one on the same
                // socket, then keep serving the old one's connections.
                crate::log::log(
                    crate::log::Level::Debug,
                    "HTTP accept loop ended; restarting it",
                    &[("reason", &e)],
                );
                if let Some(old) = front.rebuild(&server) {
                    let drain_ctx = WorkerCtx {
                        api: ctx.api.clone(),
                        db: ctx.db.clone(),
                        cfg: ctx.cfg.clone(),
                        reader: None,
                    };
                    let f = front.clone();
                    let spawned = thread::Builder::new()
                        .name("planbox-http-drain".into())
                        .spawn(move || drain_loop(f, old, drain_ctx));
                    if let (Ok(h), Ok(mut d)) = (spawned, drains.lock()) {
                        d.retain(|h| !h.is_finished());
                        d.push(h);
                    }
                }
            }
        }
    }
}

/// Serves the remaining keep-alive connections of a replaced server. Every
/// such socket times out after `idle_timeout` without a request, so once the
/// queue has been quiet for longer than that, no connection is left.
fn drain_loop(front: Arc<Front>, old: Arc<tiny_http::Server>, mut ctx: WorkerCtx) {
    let quiet_limit = ctx.cfg.idle_timeout * 2 + Duration::from_secs(1);
    let mut last = Instant::now();
    while last.elapsed() < quiet_limit && !front.stopping.load(SeqCst) {
        if let Ok(Some(rq)) = old.recv_timeout(POLL) {
            ctx.handle(rq);
            last = Instant::now();
        }
    }
}

impl RunningServer {
    /// Starts `cfg.workers` workers answering with `api` from the store at
    /// `db` on `listener` (see [`bind`]).
    pub fn start(
        listener: TcpListener,
        api: Arc<Api>,
        db: PathBuf,
        cfg: ServerConfig,
    ) -> io::Result<RunningServer> {
        let local_addr = listener.local_addr()?;
        let front = Arc::new(Front::new(listener)?);
        let drains = Arc::new(Mutex::new(Vec::new()));
        let mut workers = Vec::with_capacity(cfg.workers);
        for i in 0..cfg.workers.max(1) {
            let ctx = WorkerCtx {
                api: api.clone(),
                db: db.clone(),
                cfg: cfg.clone(),
                reader: Reader::open(&db).ok(),
            };
            let (f, d) = (front.clone(), drains.clone());
            workers.push(
                thread::Builder::new()
                    .name(format!("planbox-http-{i}"))
                    .spawn(move || worker_loop(f, ctx, d))?,
            );
        }
        Ok(RunningServer {
            front,
            local_addr,
            workers,
            drains,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many times the accept loop has been restarted (for tests).
    pub fn accept_restarts(&self) -> usize {
        self.front.rebuilds.load(SeqCst)
    }

    /// Stops accepting, lets every worker finish the request it is on, and
    /// waits for them (at most `grace`).
    pub fn shutdown(self, grace: Duration) {
        self.front.stopping.store(true, SeqCst);
        let deadline = Instant::now() + grace;
        let mut handles = self.workers;
        if let Ok(mut d) = self.drains.lock() {
            handles.append(&mut d);
        }
        for h in handles {
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        // Dropping the last `Front` drops the tiny_http server, which ends
        // its accept thread and closes the listening socket.
    }
}
