//! The HTTP front: a TCP listener we build ourselves, tiny_http on top of
//! it, and a fixed pool of worker threads that run [`Api::handle`].
//!
//! Owns what tiny_http does not do: `TCP_NODELAY` (else keep-alive answers
//! stall ~40 ms behind delayed ACKs), a receive timeout inherited by every
//! accepted socket (stalled and idle clients are dropped), URL and header
//! size limits, panic isolation, a bounded queue with load shedding, the
//! optional per-client rate limit (client address from `X-Forwarded-For`
//! only behind a trusted proxy), and surviving accept errors.
//!
//! Load shedding without a thread hop: workers take requests straight from
//! tiny_http's queue. Only while every worker is busy does a shedder thread
//! wake up, every [`SHED_TICK`], move what waits in tiny_http's queue into
//! our bounded overflow queue (which workers empty first, oldest first) and
//! answer what does not fit with 503 and `Retry-After`. So at most
//! `max_queue` requests plus one tick of arrivals wait for a worker. tiny_http's
//! accept thread ends for good on any accept error (including the idle
//! `accept()` timing out under `SO_RCVTIMEO`); the worker that receives that
//! error builds a new `tiny_http::Server` on a clone of the same listening
//! socket, and a drain thread keeps answering the old one's keep-alive
//! connections until they have been idle longer than the receive timeout.
//!
//! This module must not contain API logic (see `api.rs`) or SQL.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

pub use super::limits::{client_ip, RateLimiter, RATE_LIMIT_MAX_CLIENTS};
pub use super::wire::MIN_STREAM_RATE;
use super::wire::{send, write_streamed, write_whole, Wire};
use crate::api::{self, code, error_response, Api, Response, SearchStream, Source, Streamed};
use crate::config::{Cidr, RateLimit};
use crate::metrics::Route;
use crate::store::{Reader, StoreError};

/// Limits and sizes of the front.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub workers: usize,
    /// Receive timeout of every accepted socket: a client that sends nothing
    /// for this long (mid-headers or idle keep-alive) is dropped.
    pub idle_timeout: Duration,
    pub max_url_bytes: usize,
    pub max_header_bytes: usize,
    /// Requests that may wait for a busy worker pool (plus the arrivals of
    /// one [`SHED_TICK`]); more get 503 with `Retry-After`.
    pub max_queue: usize,
    /// Per-client token bucket; `None` (the default) is no limit.
    pub rate_limit: Option<RateLimit>,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<Cidr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: default_workers(),
            idle_timeout: Duration::from_secs(10),
            max_url_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
            max_queue: 512,
            rate_limit: None,
            trusted_proxies: Vec::new(),
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

/// How often the shedder empties tiny_http's queue while all workers are
/// busy.
pub const SHED_TICK: Duration = Duration::from_millis(5);

/// Binds the listening socket with `TCP_NODELAY`, `SO_RCVTIMEO` and
/// `SO_SNDTIMEO` set, all inherited by accepted sockets on Linux. The send
/// timeout bounds how long a client that stops reading holds a worker (and,
/// mid-answer, its read snapshot): one blocked write, at most `idle_timeout`.
pub fn bind(addr: SocketAddr, idle_timeout: Duration) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_read_timeout(Some(idle_timeout))?;
    socket.set_write_timeout(Some(idle_timeout))?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Makes the data source of one worker (a store [`Reader`] in production).
pub type SourceFactory = Arc<dyn Fn() -> Result<Box<dyn Source + Send>, StoreError> + Send + Sync>;

/// The production source: a read-only connection to the store at `db`.
pub fn store_source(db: PathBuf) -> SourceFactory {
    Arc::new(move || Ok(Box::new(Reader::open(&db)?) as Box<dyn Source + Send>))
}

/// The listening socket, the tiny_http server currently accepting on it,
/// and the worker pool's shared state.
struct Front {
    listener: TcpListener,
    current: RwLock<Arc<tiny_http::Server>>,
    stopping: AtomicBool,
    rebuilds: AtomicUsize,
    last_rebuild: Mutex<Option<Instant>>,
    drains: Mutex<Vec<JoinHandle<()>>>,
    workers: usize,
    /// Workers handling a request right now.
    busy: AtomicUsize,
    max_queue: usize,
    overflow: Mutex<VecDeque<tiny_http::Request>>,
    /// `overflow.len()`, readable without the lock.
    queued: AtomicUsize,
    shed: AtomicU64,
    shedder_waiting: AtomicBool,
    wake_lock: Mutex<()>,
    wake: Condvar,
}

impl Front {
    fn new(listener: TcpListener, cfg: &ServerConfig) -> io::Result<Front> {
        let server = Self::server_on(&listener)?;
        Ok(Front {
            listener,
            current: RwLock::new(server),
            stopping: AtomicBool::new(false),
            rebuilds: AtomicUsize::new(0),
            last_rebuild: Mutex::new(None),
            drains: Mutex::new(Vec::new()),
            workers: cfg.workers.max(1),
            busy: AtomicUsize::new(0),
            max_queue: cfg.max_queue,
            overflow: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
            shed: AtomicU64::new(0),
            shedder_waiting: AtomicBool::new(false),
            wake_lock: Mutex::new(()),
            wake: Condvar::new(),
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
    /// another thread already replaced it.
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

    /// The accept thread of `server` has ended (tiny_http reports that
    /// once, as `e`). Starts a new one on the same socket, and a drain
    /// thread that keeps serving the old one's connections.
    fn restart(self: &Arc<Self>, server: &Arc<tiny_http::Server>, e: &io::Error, ctx: &WorkerCtx) {
        crate::log::log(
            crate::log::Level::Debug,
            "HTTP accept loop ended; restarting it",
            &[("reason", e)],
        );
        if let Some(old) = self.rebuild(server) {
            let (f, drain_ctx) = (self.clone(), ctx.sibling());
            let spawned = thread::Builder::new()
                .name("planbox-http-drain".into())
                .spawn(move || drain_loop(f, old, drain_ctx));
            if let (Ok(h), Ok(mut d)) = (spawned, self.drains.lock()) {
                d.retain(|h| !h.is_finished());
                d.push(h);
            }
        }
    }

    /// A worker starts on a request; wakes the shedder when that makes the
    /// pool saturated.
    fn begin(&self) {
        if self.busy.fetch_add(1, SeqCst) + 1 >= self.workers && self.shedder_waiting.load(SeqCst) {
            let _g = self.wake_lock.lock();
            self.wake.notify_one();
        }
    }

    fn end(&self) {
        self.busy.fetch_sub(1, SeqCst);
    }

    fn saturated(&self) -> bool {
        self.busy.load(SeqCst) >= self.workers
    }

    /// Blocks (up to [`POLL`]) until every worker is busy.
    fn wait_saturated(&self) -> bool {
        let Ok(g) = self.wake_lock.lock() else {
            return false;
        };
        self.shedder_waiting.store(true, SeqCst);
        if !self.saturated() {
            let _ = self.wake.wait_timeout(g, POLL);
        }
        self.shedder_waiting.store(false, SeqCst);
        self.saturated()
    }

    fn pop_overflow(&self) -> Option<tiny_http::Request> {
        if self.queued.load(SeqCst) == 0 {
            return None;
        }
        let mut q = self.overflow.lock().ok()?;
        let rq = q.pop_front();
        self.queued.store(q.len(), SeqCst);
        rq
    }

    /// Queues `rq` for the workers, or answers 503 when the queue is full.
    fn admit(&self, rq: tiny_http::Request, api: &Api) {
        let rq = match self.overflow.lock() {
            Ok(mut q) if q.len() < self.max_queue => {
                q.push_back(rq);
                self.queued.store(q.len(), SeqCst);
                return;
            }
            _ => rq,
        };
        self.shed.fetch_add(1, SeqCst);
        send(rq, overloaded());
        api.metrics()
            .observe_request(Route::Other, 503, Duration::ZERO);
    }
}

fn overloaded() -> Response {
    api::unavailable(
        Route::Other,
        code::OVERLOADED,
        "the server is overloaded; retry after the Retry-After delay",
    )
}

/// A running HTTP server. Dropping it does not stop it; call [`shutdown`].
///
/// [`shutdown`]: RunningServer::shutdown
pub struct RunningServer {
    front: Arc<Front>,
    local_addr: SocketAddr,
    workers: Vec<JoinHandle<()>>,
    limiter: Option<Arc<RateLimiter>>,
}

struct WorkerCtx {
    api: Arc<Api>,
    sources: SourceFactory,
    cfg: Arc<ServerConfig>,
    limiter: Option<Arc<RateLimiter>>,
    source: Option<Box<dyn Source + Send>>,
}

impl WorkerCtx {
    /// The same context with its own (not yet opened) source.
    fn sibling(&self) -> WorkerCtx {
        WorkerCtx {
            api: self.api.clone(),
            sources: self.sources.clone(),
            cfg: self.cfg.clone(),
            limiter: self.limiter.clone(),
            source: None,
        }
    }

    fn handle(&mut self, rq: tiny_http::Request) {
        let started = Instant::now();
        let mut response = self.respond_to(&rq);
        let wire = Wire::of(&rq);
        let route = response.route;
        let mut out = rq.into_writer();
        let status = match response.stream.take() {
            None => {
                // The client may be gone; nothing to do about it.
                let _ = write_whole(&mut out, &wire, &response);
                response.status
            }
            Some(s) => self.stream(&s, &wire, &mut out),
        };
        drop(out);
        self.api
            .metrics()
            .observe_request(route, status, started.elapsed());
    }

    /// Sends a `/search` answer read from the store while it is written.
    /// Returns the status sent.
    fn stream(&mut self, s: &SearchStream, wire: &Wire, out: &mut dyn Write) -> u16 {
        let mut head_sent: Option<u16> = None;
        let api = &self.api;
        let source = &mut self.source;
        let min_rate_after = self.cfg.idle_timeout;
        let result = catch_unwind(AssertUnwindSafe(|| match source.as_mut() {
            None => Err(StoreError::Busy),
            Some(src) => api.stream(s, src.as_mut(), &mut |streamed| match streamed {
                Streamed::Whole(r) => {
                    head_sent = Some(r.status);
                    write_whole(out, wire, &r)
                }
                Streamed::Body {
                    headers,
                    length,
                    body,
                } => {
                    let mut wrote = false;
                    let r = write_streamed(
                        out,
                        wire,
                        &headers,
                        length,
                        body,
                        min_rate_after,
                        &mut wrote,
                    );
                    if wrote {
                        head_sent = Some(200);
                    }
                    r
                }
            }),
        }));
        let fallback = match result {
            Ok(Ok(Ok(()))) => None,
            // Writing failed (client gone, too slow) or reading failed
            // mid-answer: the framing is already broken off; or reading
            // failed before the first byte: a 503.
            Ok(Ok(Err(e))) => {
                if head_sent.is_some() {
                    crate::log::log(
                        crate::log::Level::Debug,
                        "streamed answer cut short",
                        &[("reason", &e)],
                    );
                }
                Some((
                    503,
                    api::unavailable(
                        Route::Search,
                        code::NOT_READY,
                        "the store cannot be read right now",
                    ),
                ))
            }
            Ok(Err(e)) => Some((503, api::store_failed(&e))),
            Err(panic) => {
                crate::log::error(&format!(
                    "handler panicked while streaming a search: {}",
                    panic_text(&panic)
                ));
                self.source = None;
                Some((500, internal_error()))
            }
        };
        match (head_sent, fallback) {
            (Some(status), _) => status,
            (None, None) => 200,
            (None, Some((status, r))) => {
                let _ = write_whole(out, wire, &r);
                status
            }
        }
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
        let mut forwarded: Option<String> = None;
        for h in rq.headers() {
            header_bytes += h.field.as_str().as_str().len() + h.value.as_str().len() + 4;
            if h.field.equiv("Accept-Encoding") {
                accept_encoding = Some(h.value.as_str());
            } else if h.field.equiv("If-None-Match") {
                if_none_match = Some(h.value.as_str());
            } else if self.limiter.is_some() && h.field.equiv("X-Forwarded-For") {
                let v = h.value.as_str();
                forwarded = Some(match forwarded {
                    Some(f) => format!("{f},{v}"),
                    None => v.to_owned(),
                });
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
        if let Some(limiter) = &self.limiter {
            let path = url.split('?').next().unwrap_or("");
            // Probes are never limited.
            if !matches!(path, "/health" | "/ready") {
                if let Some(peer) = rq.remote_addr() {
                    let ip = client_ip(peer.ip(), forwarded.as_deref(), &self.cfg.trusted_proxies);
                    if let Err(wait) = limiter.check(ip, Instant::now()) {
                        let mut r = error_response(
                            429,
                            Route::Other,
                            code::RATE_LIMITED,
                            "too many requests from this client; retry after the Retry-After delay",
                        );
                        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                        r.headers.push(("Retry-After", secs.max(1).to_string()));
                        return r;
                    }
                }
            }
        }
        let req = api::Request {
            method,
            url,
            accept_encoding,
            if_none_match,
            http10: *rq.http_version() == tiny_http::HTTPVersion(1, 0),
        };
        if self.source.is_none() {
            match (self.sources)() {
                Ok(r) => self.source = Some(r),
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
        let source = &mut self.source;
        let result = catch_unwind(AssertUnwindSafe(|| match source.as_mut() {
            Some(s) => api.handle(&req, s.as_mut()),
            None => api::unavailable(Route::Other, code::NOT_READY, "the store is not open yet"),
        }));
        match result {
            Ok(r) => r,
            Err(panic) => {
                crate::log::error(&format!(
                    "handler panicked on {method} {}: {}",
                    short(url),
                    panic_text(&panic)
                ));
                // The connection may be mid-statement: start afresh.
                self.source = None;
                internal_error()
            }
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn internal_error() -> Response {
    error_response(
        500,
        Route::Other,
        code::INTERNAL,
        "internal error; it has been logged",
    )
}

fn worker_loop(front: Arc<Front>, mut ctx: WorkerCtx) {
    while !front.stopping.load(SeqCst) {
        let server = front.current();
        let rq = match front.pop_overflow() {
            Some(rq) => rq,
            None => match server.recv_timeout(POLL) {
                Ok(Some(rq)) => rq,
                Ok(None) => continue,
                Err(e) => {
                    front.restart(&server, &e, &ctx);
                    continue;
                }
            },
        };
        front.begin();
        ctx.handle(rq);
        front.end();
    }
}

/// Sleeps until every worker is busy; then, every [`SHED_TICK`], moves what
/// waits in tiny_http's queue into the bounded overflow queue, shedding
/// what does not fit.
fn shed_loop(front: Arc<Front>, mut ctx: WorkerCtx) {
    while !front.stopping.load(SeqCst) {
        if !front.wait_saturated() {
            continue;
        }
        thread::sleep(SHED_TICK);
        let server = front.current();
        loop {
            match server.try_recv() {
                Ok(Some(rq)) => front.admit(rq, &ctx.api),
                Ok(None) => break,
                Err(e) => {
                    front.restart(&server, &e, &ctx);
                    break;
                }
            }
        }
        // A worker that went idle meanwhile may be blocked on tiny_http's
        // (now empty) queue, blind to the overflow: serve from it here.
        while !front.saturated() {
            match front.pop_overflow() {
                Some(rq) => ctx.handle(rq),
                None => break,
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
        Self::start_with_source(listener, api, store_source(db), cfg)
    }

    /// Like [`start`](Self::start), with every worker reading through a
    /// source made by `sources` (tests use this to inject faults).
    pub fn start_with_source(
        listener: TcpListener,
        api: Arc<Api>,
        sources: SourceFactory,
        cfg: ServerConfig,
    ) -> io::Result<RunningServer> {
        let local_addr = listener.local_addr()?;
        let front = Arc::new(Front::new(listener, &cfg)?);
        let limiter = cfg
            .rate_limit
            .map(|l| Arc::new(RateLimiter::new(l, RATE_LIMIT_MAX_CLIENTS)));
        let n = cfg.workers.max(1);
        let cfg = Arc::new(cfg);
        let mut workers = Vec::with_capacity(n + 1);
        for i in 0..=n {
            let ctx = WorkerCtx {
                api: api.clone(),
                sources: sources.clone(),
                cfg: cfg.clone(),
                limiter: limiter.clone(),
                source: sources().ok(),
            };
            let f = front.clone();
            let (name, body): (String, Box<dyn FnOnce() + Send>) = if i < n {
                (
                    format!("planbox-http-{i}"),
                    Box::new(move || worker_loop(f, ctx)),
                )
            } else {
                (
                    "planbox-http-shed".into(),
                    Box::new(move || shed_loop(f, ctx)),
                )
            };
            workers.push(thread::Builder::new().name(name).spawn(body)?);
        }
        Ok(RunningServer {
            front,
            local_addr,
            workers,
            limiter,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many times the accept loop has been restarted (for tests).
    pub fn accept_restarts(&self) -> usize {
        self.front.rebuilds.load(SeqCst)
    }

    /// Requests waiting in the overflow queue now.
    pub fn queued(&self) -> usize {
        self.front.queued.load(SeqCst)
    }

    /// Requests answered 503 because the queue was full, so far.
    pub fn shed(&self) -> u64 {
        self.front.shed.load(SeqCst)
    }

    /// Clients the rate limiter tracks now (0 when it is off).
    pub fn rate_limited_clients(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.clients())
    }

    /// Stops accepting, lets every worker finish the request it is on, and
    /// waits for them (at most `grace`).
    pub fn shutdown(self, grace: Duration) {
        self.front.stopping.store(true, SeqCst);
        let deadline = Instant::now() + grace;
        let mut handles = self.workers;
        if let Ok(mut d) = self.front.drains.lock() {
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
        // Whatever still waits is told to come back, not dropped with a 500.
        while let Some(rq) = self.front.pop_overflow() {
            send(rq, overloaded());
        }
        // Dropping the last `Front` drops the tiny_http server, which ends
        // its accept thread and closes the listening socket.
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse_cidrs;

    #[test]
    fn serve_flags_reach_the_config() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "planbox",
            "serve",
            "--rate-limit",
            "50/s",
            "--trusted-proxies",
            "10.0.0.0/8,::1",
        ])
        .unwrap();
        let crate::cli::Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let c = args.to_config().unwrap();
        assert_eq!(c.rate_limit.unwrap().per_second, 50.0);
        assert_eq!(c.trusted_proxies, parse_cidrs("10.0.0.0/8,::1").unwrap());
        let cli = crate::cli::Cli::try_parse_from(["planbox", "serve"]).unwrap();
        let crate::cli::Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let c = args.to_config().unwrap();
        assert!(
            c.rate_limit.is_none() && c.trusted_proxies.is_empty(),
            "off by default"
        );
    }
}
