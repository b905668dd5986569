//! The HTTP front: a TCP listener we build ourselves, the connection layer
//! (`conn.rs`: one poller thread that holds every waiting connection and
//! reads request heads), and a fixed pool of worker threads that parse a
//! head, run [`Api::handle`] and write the answer.
//!
//! Owns what lies between the socket and the API: `TCP_NODELAY` (else
//! keep-alive answers stall ~40 ms behind delayed ACKs), the connection
//! cap, URL and header size limits, request bodies (`Content-Length` bodies
//! dropped as they arrive, `Transfer-Encoding` refused with 411 and the
//! connection closed), keep-alive, panic isolation, a bounded queue with
//! load shedding (503), the optional per-client rate limit (client address
//! from `X-Forwarded-For` only behind a trusted proxy), and a liveness
//! proof for the watchdog ([`RunningServer::is_alive`]).
//!
//! Queue: the poller puts a connection with a whole head into a FIFO that
//! the workers take from; when `max_queue` connections already wait, the
//! poller answers 503 with `Retry-After` itself. Threads: `workers` + 1,
//! whatever the number of connections, plus spare workers while clients
//! that do not read hold workers: a worker whose write has waited
//! [`conn::STALL_AFTER`] for its client counts as stalled, and while fewer
//! than `workers` workers are not stalled the pool starts a spare (its own
//! store reader, the same loop), at most `max_spare_workers` at a time; a
//! spare ends once the pool has `workers` workers not stalled without it.
//!
//! This module must not contain API logic (see `api.rs`) or SQL.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::conn::{self, Conn, Dispatch, Limits, Out, Poller, Refusal, Shared, Stalls};
pub use super::limits::{client_ip, RateLimiter, RATE_LIMIT_MAX_CLIENTS};
use super::request::{bad_request, framing, origin_form, unframed_body, Head, MAX_HEADERS};
pub use super::wire::MIN_STREAM_RATE;
use super::wire::{write_streamed, write_whole, Wire};
use crate::api::{self, code, error_response, Api, Response, SearchStream, Source, Streamed};
use crate::config::{Cidr, RateLimit};
use crate::metrics::{Closed, Listener, Route};
use crate::store::{Reader, StoreError};

/// Limits and sizes of the front.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub workers: usize,
    /// Workers started beyond `workers` while clients that do not read
    /// hold workers (see the module header); beyond, requests wait.
    pub max_spare_workers: usize,
    /// A connection that sends nothing for this long (idle keep-alive), or
    /// whose request head is not whole this long after its first byte, is
    /// closed; a blocked write of an answer waits at most this long.
    pub idle_timeout: Duration,
    pub max_url_bytes: usize,
    pub max_header_bytes: usize,
    /// Requests that may wait for a busy worker pool; more get 503 with
    /// `Retry-After`.
    pub max_queue: usize,
    /// Open connections; beyond, the longest-idle one is closed, or the
    /// new one gets 503 when none is idle. Lowered at start to what the
    /// open-files limit allows.
    pub max_connections: usize,
    /// Memory all unfinished request heads may hold together; beyond, the
    /// connections with the largest ones get 503 and are closed (checked
    /// every 100 ms).
    pub head_budget: usize,
    /// Per-client token bucket; `None` (the default) is no limit.
    pub rate_limit: Option<RateLimit>,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<Cidr>,
    /// The `listener` label of this front's connection series in `/metrics`.
    pub listener: Listener,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: default_workers(),
            max_spare_workers: DEFAULT_MAX_SPARE_WORKERS,
            idle_timeout: Duration::from_secs(10),
            max_url_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
            max_queue: 1024,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            head_budget: 32 << 20,
            rate_limit: None,
            trusted_proxies: Vec::new(),
            listener: Listener::Main,
        }
    }
}

/// Worker threads by default: one per core, at least two.
pub fn default_workers() -> usize {
    thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// Spare workers by default. Each stalled answer holds a thread, a store
/// reader with its page cache and a chunk buffer: about 3.5 MB of RSS
/// (measured in docs/RELIABILITY.md), so ~115 MB at most.
pub const DEFAULT_MAX_SPARE_WORKERS: usize = 32;

/// Open connections by default (also bounded by the open-files limit, see
/// [`connection_budget`]). An idle connection costs the poller ~200 bytes
/// and the kernel a few KiB; a connection mid-head holds what it sent, at
/// most `max_url_bytes + max_header_bytes + 1 KiB`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// Descriptors kept for everything but client connections: the store and
/// its readers, the fetch loops, side listeners, logs.
const RESERVED_FDS: u64 = 256;

/// Raises the soft open-files limit to the hard one (as servers do; systemd
/// starts services with a soft limit of 1024) and returns how many client
/// connections fit in it.
pub fn connection_budget() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one struct on our stack.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return DEFAULT_MAX_CONNECTIONS;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
        .saturating_sub(RESERVED_FDS)
        .clamp(16, usize::MAX as u64) as usize
}

/// How long a worker waits for work before re-checking for shutdown.
const POLL: Duration = Duration::from_millis(200);

/// How long the HTTP front may go without the poller turning, or with a
/// watchdog probe unanswered while no worker makes progress, before
/// [`RunningServer::is_alive`] says it is not alive. A worker blocked on a
/// client gives up after `idle_timeout`, so a healthy front never comes
/// near this.
pub const FRONT_STALL: Duration = Duration::from_secs(30);

/// Binds the listening socket with `TCP_NODELAY` set (inherited by accepted
/// sockets on Linux), non-blocking, with a backlog of 4096 (the kernel caps
/// it at `net.core.somaxconn`).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Makes the data source of one worker (a store [`Reader`] in production).
pub type SourceFactory = Arc<dyn Fn() -> Result<Box<dyn Source + Send>, StoreError> + Send + Sync>;

/// The production source: a read-only connection to the store at `db`.
pub fn store_source(db: PathBuf) -> SourceFactory {
    Arc::new(move || Ok(Box::new(Reader::open(&db)?) as Box<dyn Source + Send>))
}

enum Job {
    /// A connection with a whole request head.
    Request(Box<Conn>),
    /// The watchdog's question: is a worker answering?
    Probe,
}

/// What a worker is made of, to start spares while serving.
struct Pool {
    /// `workers`: the pool's size when no worker is stalled.
    base: usize,
    max_spares: usize,
    sources: SourceFactory,
    cfg: Arc<ServerConfig>,
    limiter: Option<Arc<RateLimiter>>,
}

/// Whether a pool with `alive` workers of which `stalled` wait for clients
/// that do not read needs a spare to keep `base` workers answering.
fn needs_spare(alive: usize, stalled: usize, base: usize) -> bool {
    alive.saturating_sub(stalled) < base
}

/// Whether one more-than-`base` worker, not stalled itself, may end and
/// leave `base` workers that are not stalled.
fn may_retire(alive: usize, stalled: usize, base: usize) -> bool {
    alive > base && alive - 1 - stalled.min(alive - 1) >= base
}

/// The worker pool's queue and the front's counters.
struct Front {
    shared: Arc<Shared>,
    api: Arc<Api>,
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
    max_queue: usize,
    /// `queue.len()`, readable without the lock.
    queued: AtomicUsize,
    shed: AtomicU64,
    pool: Pool,
    /// Workers whose thread runs, spares included.
    workers_alive: AtomicUsize,
    /// Workers whose write waits for a client past `STALL_AFTER`.
    stalled: AtomicUsize,
    /// Spare workers running (or starting).
    spares: AtomicUsize,
    /// When the bound on spares was last logged (ms since `shared.epoch`,
    /// +1; 0: never).
    spares_full_logged: AtomicU64,
    /// Milliseconds (since `shared.epoch`) of the last worker progress: a
    /// job taken or finished, bytes written.
    progress: AtomicU64,
    /// When the outstanding watchdog probe was queued (0: none).
    probe_sent: AtomicU64,
    /// When the last probe was answered.
    probe_answered: AtomicU64,
}

impl Front {
    fn push(&self, job: Job) {
        let mut q = match self.queue.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        q.push_back(job);
        self.queued.store(q.len(), SeqCst);
        drop(q);
        self.ready.notify_one();
    }

    /// The next job, waiting up to [`POLL`].
    fn pop(&self) -> Option<Job> {
        let mut q = match self.queue.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if q.is_empty() {
            q = match self.ready.wait_timeout(q, POLL) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        let job = q.pop_front();
        self.queued.store(q.len(), SeqCst);
        job
    }

    fn mark_progress(&self) {
        self.progress.store(self.shared.now_ms(), SeqCst);
    }

    /// Starts a spare worker if too few workers are not stalled and the
    /// bound allows one.
    fn start_spare_if_short(self: &Arc<Self>) {
        let alive = self.workers_alive.load(SeqCst);
        if self.shared.stopping.load(SeqCst)
            || !needs_spare(alive, self.stalled.load(SeqCst), self.pool.base)
        {
            return;
        }
        let max = self.pool.max_spares;
        let reserved = self
            .spares
            .fetch_update(SeqCst, SeqCst, |n| (n < max).then_some(n + 1));
        if reserved.is_err() {
            self.log_spares_full();
            return;
        }
        if let Err(e) = spawn_worker(self, true) {
            self.spares.fetch_sub(1, SeqCst);
            crate::log::error(&format!("cannot start a spare HTTP worker: {e}"));
        }
    }

    /// Warns, once a minute at most, that requests now wait behind
    /// clients that do not read.
    fn log_spares_full(&self) {
        let now = self.shared.now_ms() + 1;
        let last = self.spares_full_logged.load(SeqCst);
        if last != 0 && now.saturating_sub(last) < 60_000
            || self
                .spares_full_logged
                .compare_exchange(last, now, SeqCst, SeqCst)
                .is_err()
        {
            return;
        }
        crate::log::log(
            crate::log::Level::Warn,
            "every spare worker waits for a client that does not read: requests wait up to the idle timeout",
            &[
                ("max_spare_workers", &self.pool.max_spares),
                ("stalled", &self.stalled.load(SeqCst)),
            ],
        );
    }

    /// Counts a spare worker out if the pool keeps `base` workers that are
    /// not stalled without it; true if it must end.
    fn retire(&self) -> bool {
        let base = self.pool.base;
        self.workers_alive
            .fetch_update(SeqCst, SeqCst, |n| {
                may_retire(n, self.stalled.load(SeqCst), base).then(|| n - 1)
            })
            .is_ok()
    }
}

/// A worker's report of its stalled writes to the pool.
struct StallWatch<'a>(&'a Arc<Front>);

impl Stalls for StallWatch<'_> {
    fn stalled(&self) {
        self.0.stalled.fetch_add(1, SeqCst);
        self.0.shared.counts.stalled_moved(1);
        self.0.start_spare_if_short();
    }

    fn resumed(&self) {
        self.0.stalled.fetch_sub(1, SeqCst);
        self.0.shared.counts.stalled_moved(-1);
    }
}

impl Dispatch for Front {
    fn dispatch(&self, c: Box<Conn>) -> Result<(), Box<Conn>> {
        let mut q = match self.queue.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if q.len() >= self.max_queue {
            return Err(c);
        }
        q.push_back(Job::Request(c));
        self.queued.store(q.len(), SeqCst);
        drop(q);
        self.ready.notify_one();
        Ok(())
    }

    fn refusal(&self, why: Refusal) -> Vec<u8> {
        let r = match why {
            Refusal::Overloaded => {
                self.shed.fetch_add(1, SeqCst);
                overloaded()
            }
            Refusal::TooManyConnections => api::unavailable(
                Route::Other,
                code::OVERLOADED,
                "too many open connections; retry after the Retry-After delay",
            ),
            Refusal::LineTooLong => error_response(
                414,
                Route::Other,
                code::URI_TOO_LONG,
                "the request line is too long",
            ),
            Refusal::HeadTooLarge => error_response(
                431,
                Route::Other,
                code::HEADERS_TOO_LARGE,
                "the request headers are too large",
            ),
            Refusal::HeadsOverBudget => api::unavailable(
                Route::Other,
                code::OVERLOADED,
                "too many unfinished requests; retry after the Retry-After delay",
            ),
        };
        self.api
            .metrics()
            .observe_request(Route::Other, r.status, Duration::ZERO);
        let mut bytes = Vec::with_capacity(512);
        let _ = write_whole(&mut bytes, &Wire::closing(), &r);
        bytes
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
    threads: Vec<JoinHandle<()>>,
    limiter: Option<Arc<RateLimiter>>,
    max_connections: usize,
}

struct WorkerCtx {
    api: Arc<Api>,
    sources: SourceFactory,
    cfg: Arc<ServerConfig>,
    limiter: Option<Arc<RateLimiter>>,
    source: Option<Box<dyn Source + Send>>,
}

impl WorkerCtx {
    /// Answers the request whose head is at the start of `c.buf`; leaves
    /// `c` ready for the next one, or marked to close.
    fn handle(&mut self, c: &mut Conn, front: &Arc<Front>) {
        let started = Instant::now();
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let (mut response, wire, body) = match parsed.parse(&c.buf[..c.head_len]) {
            Ok(httparse::Status::Complete(_)) => {
                let head = Head {
                    method: parsed.method.unwrap_or(""),
                    url: parsed.path.unwrap_or(""),
                    http10: parsed.version == Some(0),
                    headers: parsed.headers,
                };
                let reads = matches!(head.method, "GET" | "HEAD");
                match framing(&head) {
                    Err(r) => (r, head.wire(true), 0),
                    // A body of unknown length on a route that takes GET:
                    // refused; on any other method the API's 405 says more.
                    // Either way the connection closes after the answer,
                    // so the body is never read as a request.
                    Ok(f) if reads && f.transfer_coded.is_some() => {
                        (unframed_body(f.transfer_coded), head.wire(true), 0)
                    }
                    Ok(f) => {
                        let close = !f.keep_alive || front.shared.stopping.load(SeqCst);
                        (self.respond_to(&head, c.peer), head.wire(close), f.body)
                    }
                }
            }
            Err(httparse::Error::TooManyHeaders) => (
                error_response(
                    431,
                    Route::Other,
                    code::HEADERS_TOO_LARGE,
                    &format!("more than {MAX_HEADERS} request headers"),
                ),
                Wire::closing(),
                0,
            ),
            _ => (bad_request(), Wire::closing(), 0),
        };
        let watch = StallWatch(front);
        let mut out = Out {
            stream: &c.stream,
            timeout: self.cfg.idle_timeout,
            progress: &front.progress,
            epoch: front.shared.epoch,
            stalls: Some(&watch),
        };
        let route = response.route;
        let (status, close) = match response.stream.take() {
            None => {
                let failed = write_whole(&mut out, &wire, &response).is_err();
                (response.status, wire.close || failed)
            }
            Some(s) => self.stream(&s, &wire, &mut out),
        };
        self.api
            .metrics()
            .observe_request(route, status, started.elapsed());
        c.close = close;
        if !close {
            c.consume(body);
        }
    }

    /// Sends a `/search` answer read from the store while it is written.
    /// Returns the status sent and whether the connection must close (a
    /// body without length or chunks, or an answer broken off).
    fn stream(&mut self, s: &SearchStream, wire: &Wire, out: &mut dyn Write) -> (u16, bool) {
        let mut head_sent: Option<u16> = None;
        let mut close = wire.close;
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
                Streamed::Body { headers, body } => {
                    let mut wrote = false;
                    close |= wire.http10;
                    let r = write_streamed(out, wire, &headers, body, min_rate_after, &mut wrote);
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
                close = true;
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
                close = true;
                Some((500, internal_error()))
            }
        };
        match (head_sent, fallback) {
            (Some(status), _) => (status, close),
            (None, None) => (200, close),
            (None, Some((status, r))) => {
                let failed = write_whole(out, wire, &r).is_err();
                (status, close || failed)
            }
        }
    }

    fn respond_to(&mut self, head: &Head<'_, '_>, peer: SocketAddr) -> Response {
        let target = origin_form(head.url);
        let url = &*target;
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
        for h in head.headers {
            header_bytes += h.name.len() + h.value.len() + 4;
            let value = || std::str::from_utf8(h.value).ok().map(str::trim);
            if h.name.eq_ignore_ascii_case("Accept-Encoding") {
                accept_encoding = value();
            } else if h.name.eq_ignore_ascii_case("If-None-Match") {
                if_none_match = value();
            } else if self.limiter.is_some() && h.name.eq_ignore_ascii_case("X-Forwarded-For") {
                if let Some(v) = value() {
                    forwarded = Some(match forwarded {
                        Some(f) => format!("{f},{v}"),
                        None => v.to_owned(),
                    });
                }
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
        let method = head.method;
        if let Some(limiter) = &self.limiter {
            let path = url.split('?').next().unwrap_or("");
            // Probes are never limited.
            if !matches!(path, "/health" | "/ready") {
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
        let req = api::Request {
            method,
            url,
            accept_encoding,
            if_none_match,
            http10: head.http10,
        };
        if self.source.is_none() {
            match (self.sources)() {
                Ok(r) => self.source = Some(r),
                Err(e) => {
                    crate::log::error(&format!(
                        "cannot open the store for reading: {}",
                        crate::log::chain(&e)
                    ));
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

/// Counts a worker thread out when it ends, however it ends (unless
/// [`Front::retire`] already did).
struct Alive<'a> {
    front: &'a Front,
    spare: bool,
    counted: bool,
}

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.front.workers_alive.fetch_sub(1, SeqCst);
            self.front.shared.counts.workers_moved(-1);
        }
        if self.spare {
            self.front.spares.fetch_sub(1, SeqCst);
        }
    }
}

/// Starts a worker thread counted in `workers_alive`; a `spare` opens its
/// store reader on its first request and ends when the pool no longer
/// needs it.
fn spawn_worker(front: &Arc<Front>, spare: bool) -> io::Result<JoinHandle<()>> {
    let pool = &front.pool;
    let ctx = WorkerCtx {
        api: front.api.clone(),
        sources: pool.sources.clone(),
        cfg: pool.cfg.clone(),
        limiter: pool.limiter.clone(),
        source: if spare { None } else { (pool.sources)().ok() },
    };
    let n = front.workers_alive.fetch_add(1, SeqCst);
    front.shared.counts.workers_moved(1);
    let name = if spare {
        "planbox-http-spare".to_owned()
    } else {
        format!("planbox-http-{n}")
    };
    let f = front.clone();
    thread::Builder::new()
        .name(name)
        .spawn(move || worker_loop(f, ctx, spare))
        .inspect_err(|_| {
            front.workers_alive.fetch_sub(1, SeqCst);
            front.shared.counts.workers_moved(-1);
        })
}

fn worker_loop(front: Arc<Front>, mut ctx: WorkerCtx, spare: bool) {
    let mut alive = Alive {
        front: &front,
        spare,
        counted: true,
    };
    while !front.shared.stopping.load(SeqCst) {
        if spare && front.retire() {
            alive.counted = false;
            front.shared.counts.workers_moved(-1);
            break;
        }
        let Some(job) = front.pop() else { continue };
        front.mark_progress();
        match job {
            Job::Probe => {
                front.probe_answered.store(front.shared.now_ms(), SeqCst);
                front.probe_sent.store(0, SeqCst);
            }
            Job::Request(mut c) => {
                // The handler catches its own panics (with a 500); this
                // catches the rest, so no request can end a worker.
                let done = catch_unwind(AssertUnwindSafe(|| ctx.handle(&mut c, &front)));
                if let Err(panic) = done {
                    crate::log::error(&format!(
                        "HTTP worker panicked: {}; the connection is closed",
                        panic_text(&panic)
                    ));
                    ctx.source = None;
                    c.close = true;
                }
                front.mark_progress();
                front.shared.give_back(c);
            }
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
        let budget = connection_budget();
        let max_connections = cfg.max_connections.clamp(1, budget.max(1));
        if max_connections < cfg.max_connections {
            crate::log::log(
                crate::log::Level::Warn,
                "connection cap lowered to fit the open-files limit",
                &[
                    ("asked", &cfg.max_connections),
                    ("max_connections", &max_connections),
                ],
            );
        }
        let counts = api.metrics().connections(cfg.listener);
        counts.started(max_connections);
        let shared = Arc::new(Shared::new(counts)?);
        let limiter = cfg
            .rate_limit
            .map(|l| Arc::new(RateLimiter::new(l, RATE_LIMIT_MAX_CLIENTS)));
        let n = cfg.workers.max(1);
        let cfg = Arc::new(cfg);
        let front = Arc::new(Front {
            pool: Pool {
                base: n,
                max_spares: cfg.max_spare_workers,
                sources,
                cfg: cfg.clone(),
                limiter: limiter.clone(),
            },
            shared: shared.clone(),
            api: api.clone(),
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            max_queue: cfg.max_queue,
            queued: AtomicUsize::new(0),
            shed: AtomicU64::new(0),
            workers_alive: AtomicUsize::new(0),
            stalled: AtomicUsize::new(0),
            spares: AtomicUsize::new(0),
            spares_full_logged: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            probe_sent: AtomicU64::new(0),
            probe_answered: AtomicU64::new(0),
        });
        let limits = Limits {
            idle_timeout: cfg.idle_timeout,
            max_connections,
            max_line: cfg.max_url_bytes + 1024,
            max_head: cfg.max_url_bytes + cfg.max_header_bytes + 2048,
            head_budget: cfg.head_budget,
        };
        let poller = Poller::new(listener, shared, front.clone(), limits)?;
        let mut threads = Vec::with_capacity(n + 1);
        for _ in 0..n {
            match spawn_worker(&front, false) {
                Ok(h) => threads.push(h),
                Err(e) => {
                    front.shared.stopping.store(true, SeqCst);
                    return Err(e);
                }
            }
        }
        let spawned = thread::Builder::new()
            .name("planbox-http-poll".into())
            .spawn(move || poller.run());
        match spawned {
            Ok(h) => threads.push(h),
            Err(e) => {
                front.shared.stopping.store(true, SeqCst);
                return Err(e);
            }
        }
        Ok(RunningServer {
            front,
            local_addr,
            threads,
            limiter,
            max_connections,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Worker threads running now: `workers`, plus the spares started
    /// while clients that do not read hold workers.
    pub fn workers(&self) -> usize {
        self.front.workers_alive.load(SeqCst)
    }

    /// Requests waiting for a worker now.
    pub fn queued(&self) -> usize {
        self.front.queued.load(SeqCst)
    }

    /// Requests answered 503 because the queue was full, so far.
    pub fn shed(&self) -> u64 {
        self.front.shed.load(SeqCst)
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.front.shared.open.load(SeqCst)
    }

    /// The connection cap in force (`max_connections`, lowered to the
    /// open-files limit).
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Idle connections closed to make room for new ones, so far.
    pub fn evicted(&self) -> u64 {
        self.front.shared.counts.closed_for(Closed::Evicted)
    }

    /// New connections answered 503 because the cap was reached and no
    /// connection was idle, so far.
    pub fn refused_connections(&self) -> u64 {
        self.front.shared.counts.closed_for(Closed::Refused)
    }

    /// Clients the rate limiter tracks now (0 when it is off).
    pub fn rate_limited_clients(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.clients())
    }

    /// Whether the front works: its poller turned within `stall`, a worker
    /// thread runs, and the watchdog probe (a job queued behind the
    /// requests, answered by the first free worker) was answered, or is
    /// younger than `stall`, or workers made progress (took or finished a
    /// request, wrote bytes) within `stall`. Queues a new probe about once
    /// a second; cheap enough to call every few milliseconds.
    pub fn is_alive(&self, stall: Duration) -> bool {
        let f = &self.front;
        let now = f.shared.now_ms();
        let stall = stall.as_millis() as u64;
        if f.workers_alive.load(SeqCst) == 0
            || now.saturating_sub(f.shared.beat.load(SeqCst)) > stall
        {
            return false;
        }
        let sent = f.probe_sent.load(SeqCst);
        if sent != 0 {
            return now.saturating_sub(sent) <= stall
                || now.saturating_sub(f.progress.load(SeqCst)) <= stall;
        }
        if now.saturating_sub(f.probe_answered.load(SeqCst)) >= 1000 {
            f.probe_sent.store(now.max(1), SeqCst);
            f.push(Job::Probe);
        }
        true
    }

    /// Stops accepting, lets every worker finish the request it is on, and
    /// waits for them (at most `grace`).
    pub fn shutdown(self, grace: Duration) {
        let shared = &self.front.shared;
        shared.stopping.store(true, SeqCst);
        shared.wake_poller();
        self.front.ready.notify_all();
        let deadline = Instant::now() + grace;
        for h in self.threads {
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        // Spares are not joined: they count themselves out as they end.
        while self.front.workers_alive.load(SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        // Whatever still waits is told to come back, not dropped.
        let waiting = match self.front.queue.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        let bytes = self.front.refusal(Refusal::Overloaded);
        for job in waiting {
            if let Job::Request(c) = job {
                let _ = conn::write_all_within(&c.stream, &bytes, Duration::from_millis(100));
            }
        }
        drop(shared.take_returns());
    }
}

#[cfg(test)]
mod tests {
    use super::{may_retire, needs_spare};
    use crate::config::parse_cidrs;

    #[test]
    fn a_spare_starts_while_fewer_than_base_workers_are_not_stalled_and_ends_once_enough_are() {
        // Two workers, none stalled: no spare.
        assert!(!needs_spare(2, 0, 2));
        // One stalls: a spare; with it, two answer again.
        assert!(needs_spare(2, 1, 2));
        assert!(!needs_spare(3, 1, 2));
        // All stall, spares included: one more each time.
        assert!(needs_spare(3, 2, 2));
        assert!(needs_spare(3, 3, 2));
        // Never more stalled than alive, but saturate anyway.
        assert!(needs_spare(1, 2, 2));
        // A spare ends only if `base` workers stay not stalled without it.
        assert!(!may_retire(2, 0, 2), "the base pool never shrinks");
        assert!(!may_retire(3, 1, 2), "still needed");
        assert!(may_retire(3, 0, 2), "the stalled writer came back");
        assert!(may_retire(4, 1, 2));
        assert!(!may_retire(4, 2, 2));
        // A pool of one with one stalled worker keeps its spare.
        assert!(!may_retire(2, 1, 1));
        assert!(may_retire(2, 0, 1));
    }

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
