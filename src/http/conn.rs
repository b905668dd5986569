//! The connection layer: one poller thread owns every open connection while
//! it waits for a request, and hands a connection to the worker pool only
//! once a whole request head has arrived.
//!
//! An idle keep-alive connection or a client dripping its headers
//! (slowloris) costs a slot in the poller's table and its socket, never a
//! thread: the poller reads whatever is readable (non-blocking, one
//! readiness set, level-triggered one-shot: `poll.rs`), caps the request
//! line and the head while reading (and all unfinished heads together),
//! and closes a connection whose head is not complete `idle_timeout` after
//! its first byte, or that sent nothing for `idle_timeout`. A new
//! connection therefore never waits behind an idle one: it is read as soon
//! as its bytes arrive.
//!
//! Beyond `max_connections` the longest-idle keep-alive connection (one
//! answered before) is closed to make room; when none is idle (every
//! connection is new, mid-request or being answered), the new one gets 503
//! and is closed. A new connection is never closed for room: its first
//! request may be on its way, and a client does not retry an empty reply
//! on a new connection. A worker hands
//! the connection back when it has answered; a request body is dropped
//! here, with a fixed buffer, a little at a time as it arrives (bodies over
//! [`DRAIN_MAX`] close the connection instead). A connection that is
//! closed after an error answer first has its write side shut and what the
//! client still sends read and dropped for a short while ("lingering
//! close"), so the answer is not lost to a reset.
//!
//! Must not contain API logic or SQL; it does not parse requests beyond
//! finding where a head ends.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::poll::{Readiness, Waker};
use crate::metrics::{Closed, ConnCounters};

/// Body bytes a kept-alive connection may still owe after its answer:
/// they are read and dropped by the poller. A larger body closes the
/// connection after the answer.
pub(crate) const DRAIN_MAX: u64 = 1 << 20;

/// How long a closing connection's unread input is read and dropped after
/// the answer, so the answer is not destroyed by a reset.
const LINGER: Duration = Duration::from_secs(2);

/// How often timeouts are checked: the precision of `idle_timeout`.
const TICK: Duration = Duration::from_millis(100);

/// New connections accepted per wake-up before readable ones get a turn.
const ACCEPT_BATCH: usize = 256;

/// Bytes read per `read` call.
const SCRATCH: usize = 64 << 10;

const LISTENER: u64 = u64::MAX;
const WAKE: u64 = u64::MAX - 1;

/// One client connection and the bytes it sent that are not consumed yet.
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    /// Bytes read and not consumed: a whole head (`head_len` bytes) when a
    /// worker gets the connection, and whatever followed it.
    pub(crate) buf: Vec<u8>,
    pub(crate) head_len: usize,
    /// Body bytes still to read and drop before the next head.
    pub(crate) discard: u64,
    /// Set by the worker: close after the answer.
    pub(crate) close: bool,
    /// Answered at least once and kept open: only such a connection is
    /// closed to make room at the cap (a new one may have its first
    /// request on the way, unread).
    kept: bool,
    /// Where the search for the end of the head goes on.
    scanned: usize,
    token: u64,
}

impl Conn {
    fn new(stream: TcpStream, peer: SocketAddr, token: u64) -> Conn {
        Conn {
            stream,
            peer,
            buf: Vec::new(),
            head_len: 0,
            discard: 0,
            close: false,
            kept: false,
            scanned: 0,
            token,
        }
    }

    /// Consumes the head a worker has answered and as much of the body as
    /// has arrived; the rest of the body is dropped as it arrives.
    pub(crate) fn consume(&mut self, body: u64) {
        self.buf.drain(..self.head_len);
        let here = (self.buf.len() as u64).min(body) as usize;
        self.buf.drain(..here);
        self.discard = body - here as u64;
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
        self.head_len = 0;
        self.scanned = 0;
        self.kept = true;
    }
}

/// Where the poller hands connections with a whole head.
pub(crate) trait Dispatch: Send + Sync {
    /// Queues `c` for a worker; gives it back when the queue is full.
    fn dispatch(&self, c: Box<Conn>) -> Result<(), Box<Conn>>;
    /// The bytes of an error answer (with `Connection: close`) and the
    /// bookkeeping of a refusal.
    fn refusal(&self, why: Refusal) -> Vec<u8>;
}

/// Why the poller answers a connection itself and closes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The worker queue is full (503).
    Overloaded,
    /// `max_connections` are open and none is idle (503).
    TooManyConnections,
    /// The request line is longer than the limit (414).
    LineTooLong,
    /// The head is larger than the limit (431).
    HeadTooLarge,
    /// Unfinished heads hold more memory than the budget; this one is
    /// among the largest (503).
    HeadsOverBudget,
}

impl Refusal {
    /// The reason `/metrics` gives for the close that follows.
    fn closed(self) -> Closed {
        match self {
            Refusal::Overloaded => Closed::Overloaded,
            Refusal::TooManyConnections => Closed::Refused,
            Refusal::LineTooLong => Closed::LineTooLong,
            Refusal::HeadTooLarge => Closed::HeadTooLarge,
            Refusal::HeadsOverBudget => Closed::HeadBudget,
        }
    }
}

/// Limits the poller enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    /// Longest request line (method, target, version).
    pub(crate) max_line: usize,
    /// Longest head (request line and headers).
    pub(crate) max_head: usize,
    /// Bytes all unfinished heads may hold together.
    pub(crate) head_budget: usize,
}

/// State shared by the poller, the workers and the owner of the front.
pub(crate) struct Shared {
    /// Boxed: a connection moves between the poller's table, the queue and
    /// a worker as one pointer.
    #[allow(clippy::vec_box)]
    returns: Mutex<Vec<Box<Conn>>>,
    wake: Waker,
    sleeping: AtomicBool,
    pub(crate) stopping: AtomicBool,
    /// Milliseconds since `epoch` at the poller's last turn.
    pub(crate) beat: AtomicU64,
    pub(crate) epoch: Instant,
    /// Connections open now (waiting, being answered), closing ones aside.
    pub(crate) open: AtomicUsize,
    /// The `/metrics` counters of this listener: every accepted connection
    /// and every close of one, with its reason (evictions and refusals at
    /// the cap among them).
    pub(crate) counts: Arc<ConnCounters>,
}

impl Shared {
    pub(crate) fn new(counts: Arc<ConnCounters>) -> io::Result<Shared> {
        Ok(Shared {
            returns: Mutex::new(Vec::new()),
            wake: Waker::new()?,
            sleeping: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            beat: AtomicU64::new(0),
            epoch: Instant::now(),
            open: AtomicUsize::new(0),
            counts,
        })
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A worker is done with `c`: the poller waits for its next request
    /// (or closes it).
    pub(crate) fn give_back(&self, c: Box<Conn>) {
        match self.returns.lock() {
            Ok(mut r) => r.push(c),
            Err(p) => p.into_inner().push(c),
        }
        self.wake_poller();
    }

    pub(crate) fn wake_poller(&self) {
        if self.sleeping.swap(false, SeqCst) {
            self.wake.wake();
        }
    }

    #[allow(clippy::vec_box)]
    pub(crate) fn take_returns(&self) -> Vec<Box<Conn>> {
        match self.returns.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }
}

enum Slot {
    Free,
    /// Waiting for (more of) a head, or for body bytes to drop. Closed at
    /// `deadline`. `idle` is when it went quiet with nothing pending (a
    /// candidate for eviction), `None` while a head or body is under way.
    Waiting {
        conn: Box<Conn>,
        deadline: Instant,
        idle: Option<Instant>,
    },
    /// A worker has it.
    Lent,
    /// Write side shut after a last answer; input is dropped until EOF or
    /// `until`.
    Closing {
        conn: Box<Conn>,
        until: Instant,
    },
}

struct Entry {
    generation: u32,
    slot: Slot,
}

/// The poller: owns the listener and every connection not lent to a worker.
pub(crate) struct Poller {
    listener: TcpListener,
    kernel: Readiness,
    shared: Arc<Shared>,
    dispatch: Arc<dyn Dispatch>,
    limits: Limits,
    table: Vec<Entry>,
    free: Vec<usize>,
    closing: usize,
    scratch: Vec<u8>,
    accept_paused_until: Option<Instant>,
    /// When the cap was last reported in the log (once a minute at most).
    cap_logged: Option<Instant>,
}

fn token_of(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | index as u64
}

impl Poller {
    pub(crate) fn new(
        listener: TcpListener,
        shared: Arc<Shared>,
        dispatch: Arc<dyn Dispatch>,
        limits: Limits,
    ) -> io::Result<Poller> {
        listener.set_nonblocking(true)?;
        let mut kernel = Readiness::new()?;
        kernel.add(listener.as_raw_fd(), LISTENER, true)?;
        kernel.add(shared.wake.fd(), WAKE, false)?;
        Ok(Poller {
            listener,
            kernel,
            shared,
            dispatch,
            limits,
            table: Vec::new(),
            free: Vec::new(),
            closing: 0,
            scratch: vec![0; SCRATCH],
            accept_paused_until: None,
            cap_logged: None,
        })
    }

    /// Runs until `shared.stopping`; then closes the listener and every
    /// connection it holds (workers close the ones they hold).
    pub(crate) fn run(mut self) {
        let mut events = Vec::with_capacity(1024);
        let mut last_tick = Instant::now();
        while !self.shared.stopping.load(SeqCst) {
            self.shared.beat.store(self.shared.now_ms(), SeqCst);
            self.shared.sleeping.store(true, SeqCst);
            let pending = match self.shared.returns.lock() {
                Ok(r) => !r.is_empty(),
                Err(_) => true,
            };
            let timeout = if pending { Duration::ZERO } else { TICK };
            if let Err(e) = self.kernel.wait(&mut events, timeout) {
                crate::log::error(&format!("HTTP poller: waiting for sockets failed: {e}"));
                std::thread::sleep(TICK);
            }
            self.shared.sleeping.store(false, SeqCst);
            for &token in &events {
                match token {
                    LISTENER => self.accept(),
                    WAKE => self.shared.wake.drain(),
                    token => self.readable(token),
                }
            }
            for c in self.shared.take_returns() {
                self.returned(c);
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.tick(last_tick);
            }
        }
        for e in &mut self.table {
            if matches!(e.slot, Slot::Waiting { .. } | Slot::Lent) {
                self.shared.counts.closed(Closed::Shutdown);
            }
            if !matches!(e.slot, Slot::Lent) {
                e.slot = Slot::Free;
            }
        }
        self.shared.open.store(0, SeqCst);
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // Out of descriptors or memory: accepting again at once
                    // would spin. Pause for a tick (idle connections time
                    // out meanwhile).
                    crate::log::log(
                        crate::log::Level::Warn,
                        "cannot accept a connection; pausing accept for 100 ms",
                        &[("error", &e)],
                    );
                    self.accept_paused_until = Some(Instant::now() + TICK);
                    return;
                }
            }
        }
        self.rearm_listener();
    }

    fn rearm_listener(&mut self) {
        if let Err(e) = self.kernel.rearm(self.listener.as_raw_fd(), LISTENER) {
            crate::log::error(&format!("HTTP poller: cannot watch the listener: {e}"));
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        self.shared.counts.accepted();
        if stream.set_nonblocking(true).is_err() {
            self.shared.counts.closed(Closed::Error);
            return;
        }
        let open = self.shared.open.load(SeqCst);
        if open >= self.limits.max_connections {
            self.log_cap();
        }
        if open >= self.limits.max_connections && !self.evict_one() {
            self.shared.counts.closed(Closed::Refused);
            let bytes = self.dispatch.refusal(Refusal::TooManyConnections);
            // Bounded too: beyond the cap plus a reserve of closing ones,
            // a connection does not linger. It still gets its answer, and
            // what it has sent so far is read first, so that the close is
            // not a reset that destroys the answer.
            if self.closing < self.limits.max_connections / 8 + 16 {
                if let Some((i, c)) = self.register(stream, peer) {
                    self.close_in(i, c, &bytes);
                }
            } else {
                let _ = (&stream).read(&mut self.scratch);
                let _ = (&stream).write(&bytes);
                let _ = stream.shutdown(Shutdown::Write);
            }
            return;
        }
        if let Some((i, c)) = self.register(stream, peer) {
            let now = Instant::now();
            self.table[i].slot = Slot::Waiting {
                conn: c,
                deadline: now + self.limits.idle_timeout,
                idle: Some(now),
            };
            self.shared.open.fetch_add(1, SeqCst);
        } else {
            self.shared.counts.closed(Closed::Error);
        }
    }

    /// A slot (marked lent) and a token for a new connection, registered
    /// with the poller (disarmed until the caller re-arms or fills it).
    fn register(&mut self, stream: TcpStream, peer: SocketAddr) -> Option<(usize, Box<Conn>)> {
        let i = self.free.pop().unwrap_or_else(|| {
            self.table.push(Entry {
                generation: 0,
                slot: Slot::Free,
            });
            self.table.len() - 1
        });
        let e = &mut self.table[i];
        e.generation = e.generation.wrapping_add(1);
        let token = token_of(i, e.generation);
        if self.kernel.add(stream.as_raw_fd(), token, true).is_err() {
            self.free.push(i);
            return None;
        }
        e.slot = Slot::Lent;
        Some((i, Box::new(Conn::new(stream, peer, token))))
    }

    /// Says in the log, once a minute at most, that the connection cap is
    /// reached and what it cost so far.
    fn log_cap(&mut self) {
        let now = Instant::now();
        if self
            .cap_logged
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
        {
            return;
        }
        self.cap_logged = Some(now);
        crate::log::log(
            crate::log::Level::Warn,
            "connection cap reached: closing the longest-idle connections, then answering 503",
            &[
                ("max_connections", &self.limits.max_connections),
                (
                    "idle_closed_so_far",
                    &self.shared.counts.closed_for(Closed::Evicted),
                ),
                (
                    "refused_so_far",
                    &self.shared.counts.closed_for(Closed::Refused),
                ),
            ],
        );
    }

    /// Closes the kept-alive connection that has been idle longest. False
    /// when none is idle.
    fn evict_one(&mut self) -> bool {
        let oldest = self
            .table
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match &e.slot {
                Slot::Waiting {
                    conn,
                    idle: Some(since),
                    ..
                } if conn.kept => Some((*since, i)),
                _ => None,
            })
            .min();
        match oldest {
            Some((_, i)) => {
                self.release(i);
                self.shared.counts.closed(Closed::Evicted);
                true
            }
            None => false,
        }
    }

    fn entry(&mut self, token: u64) -> Option<usize> {
        let index = (token & 0xffff_ffff) as usize;
        let e = self.table.get(index)?;
        (u64::from(e.generation) == token >> 32).then_some(index)
    }

    /// Frees slot `i`, closing its connection if it holds one.
    fn release(&mut self, i: usize) {
        match std::mem::replace(&mut self.table[i].slot, Slot::Free) {
            Slot::Free => return,
            Slot::Closing { conn, .. } => {
                self.kernel.forget(conn.stream.as_raw_fd());
                self.closing -= 1;
            }
            Slot::Waiting { conn, .. } => {
                self.kernel.forget(conn.stream.as_raw_fd());
                self.shared.open.fetch_sub(1, SeqCst);
            }
            Slot::Lent => {
                self.shared.open.fetch_sub(1, SeqCst);
            }
        }
        self.free.push(i);
    }

    fn readable(&mut self, token: u64) {
        let Some(i) = self.entry(token) else { return };
        match std::mem::replace(&mut self.table[i].slot, Slot::Lent) {
            Slot::Waiting {
                mut conn,
                deadline,
                idle,
            } => {
                let before = conn.buf.len() as u64 + conn.discard;
                match read_some(&mut conn, &mut self.scratch, self.limits.max_head) {
                    Ok(true) => {
                        let now = Instant::now();
                        let moved = conn.buf.len() as u64 + conn.discard != before;
                        // Dropping body bytes keeps a connection alive;
                        // a head must be whole within one idle timeout of
                        // its first byte.
                        let deadline = if idle.is_some() || (moved && conn.buf.is_empty()) {
                            now + self.limits.idle_timeout
                        } else {
                            deadline
                        };
                        self.process(i, conn, deadline);
                    }
                    gone => {
                        self.table[i].slot = Slot::Waiting {
                            conn,
                            deadline,
                            idle,
                        };
                        self.release(i);
                        self.shared.counts.closed(match gone {
                            Ok(_) => Closed::ClientClosed,
                            Err(_) => Closed::Error,
                        });
                    }
                }
            }
            Slot::Closing { conn, until } => {
                let open = loop {
                    match (&conn.stream).read(&mut self.scratch) {
                        Ok(0) => break false,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break false,
                    }
                };
                let fd = conn.stream.as_raw_fd();
                self.table[i].slot = Slot::Closing { conn, until };
                if !open || self.kernel.rearm(fd, token).is_err() {
                    self.release(i);
                }
            }
            other => self.table[i].slot = other,
        }
    }

    /// A worker gave `c` back after answering.
    fn returned(&mut self, c: Box<Conn>) {
        let Some(i) = self.entry(c.token) else { return };
        if c.close || self.shared.stopping.load(SeqCst) {
            self.shared.open.fetch_sub(1, SeqCst);
            let why = if c.close {
                Closed::AfterAnswer
            } else {
                Closed::Shutdown
            };
            self.shared.counts.closed(why);
            return self.close_in(i, c, &[]);
        }
        let deadline = Instant::now() + self.limits.idle_timeout;
        self.process(i, c, deadline);
    }

    /// Looks at what `c` (in slot `i`, marked lent) has sent: a whole head
    /// goes to a worker, an over-long one is refused, anything else waits.
    fn process(&mut self, i: usize, mut c: Box<Conn>, deadline: Instant) {
        if c.discard > 0 {
            let n = (c.buf.len() as u64).min(c.discard) as usize;
            c.buf.drain(..n);
            c.discard -= n as u64;
        }
        match find_head_end(&c.buf, c.scanned) {
            Ok(end) => {
                c.head_len = end;
                match self.dispatch.dispatch(c) {
                    Ok(()) => {}
                    Err(c) => self.refuse(i, c, Refusal::Overloaded),
                }
            }
            Err(scanned) => {
                c.scanned = scanned;
                let line_done = c.buf[..scanned].contains(&b'\n');
                if !line_done && c.buf.len() > self.limits.max_line {
                    return self.refuse(i, c, Refusal::LineTooLong);
                }
                if c.buf.len() > self.limits.max_head {
                    return self.refuse(i, c, Refusal::HeadTooLarge);
                }
                let now = Instant::now();
                let idle = (c.buf.is_empty() && c.discard == 0).then_some(now);
                if c.buf.is_empty() {
                    c.buf = Vec::new();
                }
                let fd = c.stream.as_raw_fd();
                let token = c.token;
                self.table[i].slot = Slot::Waiting {
                    conn: c,
                    deadline,
                    idle,
                };
                if self.kernel.rearm(fd, token).is_err() {
                    self.release(i);
                    self.shared.counts.closed(Closed::Error);
                }
            }
        }
    }

    /// Answers `c` (slot `i`) with an error and closes it.
    fn refuse(&mut self, i: usize, c: Box<Conn>, why: Refusal) {
        let bytes = self.dispatch.refusal(why);
        self.shared.open.fetch_sub(1, SeqCst);
        self.shared.counts.closed(why.closed());
        self.close_in(i, c, &bytes);
    }

    /// Slot `i` (lent, its descriptor registered and disarmed) turns into
    /// a closing connection: writes `last` (best effort: it is small),
    /// shuts the write side, and reads what still comes for [`LINGER`].
    fn close_in(&mut self, i: usize, c: Box<Conn>, last: &[u8]) {
        let _ = (&c.stream).write(last);
        let fd = c.stream.as_raw_fd();
        if c.stream.shutdown(Shutdown::Write).is_err() || self.kernel.rearm(fd, c.token).is_err() {
            self.kernel.forget(fd);
            self.table[i].slot = Slot::Free;
            self.free.push(i);
            return;
        }
        let until = Instant::now() + LINGER.min(self.limits.idle_timeout.max(TICK));
        self.table[i].slot = Slot::Closing { conn: c, until };
        self.closing += 1;
    }

    /// Keeps the memory of unfinished heads within the budget: the
    /// connections holding the largest ones are answered 503 and closed.
    fn trim_heads(&mut self) {
        let mut held = 0;
        let mut waiting = Vec::new();
        for (i, e) in self.table.iter().enumerate() {
            if let Slot::Waiting { conn, .. } = &e.slot {
                held += conn.buf.capacity();
                if !conn.buf.is_empty() {
                    waiting.push((conn.buf.len(), conn.buf.capacity(), i));
                }
            }
        }
        if held <= self.limits.head_budget {
            return;
        }
        waiting.sort_unstable_by(|a, b| b.cmp(a));
        for (_, size, i) in waiting {
            if held <= self.limits.head_budget {
                break;
            }
            if let Slot::Waiting { conn, .. } =
                std::mem::replace(&mut self.table[i].slot, Slot::Lent)
            {
                held -= size;
                self.refuse(i, conn, Refusal::HeadsOverBudget);
            }
        }
    }

    /// Closes what has timed out; resumes accepting after a pause.
    fn tick(&mut self, now: Instant) {
        self.trim_heads();
        for i in 0..self.table.len() {
            let expired = match &self.table[i].slot {
                Slot::Waiting { deadline, .. } => *deadline <= now,
                Slot::Closing { until, .. } => *until <= now,
                _ => false,
            };
            if expired {
                if let Slot::Waiting { idle, .. } = &self.table[i].slot {
                    self.shared.counts.closed(match idle {
                        Some(_) => Closed::IdleTimeout,
                        None => Closed::HeadTimeout,
                    });
                }
                self.release(i);
            }
        }
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            self.rearm_listener();
        }
    }
}

/// Reads what is readable into `c.buf` (dropping owed body bytes first),
/// and stops once `c.buf` holds more than `keep` bytes: pipelined requests
/// beyond a head wait in the kernel's socket buffer, so a client that
/// writes without reading costs at most `keep` + one read here. False when
/// the peer closed before sending anything more (a close behind new bytes
/// is seen on the next turn, after they are answered).
fn read_some(c: &mut Conn, scratch: &mut [u8], keep: usize) -> io::Result<bool> {
    let mut got = false;
    loop {
        match (&c.stream).read(scratch) {
            Ok(0) => return Ok(got),
            Ok(n) => {
                got = true;
                let skip = (n as u64).min(c.discard) as usize;
                c.discard -= skip as u64;
                c.buf.extend_from_slice(&scratch[skip..n]);
                if n < scratch.len() || c.buf.len() > keep {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The length of the head at the start of `buf` (through its blank line,
/// `\r\n\r\n` or a bare `\n\n`), or how far the search got (resume there).
fn find_head_end(buf: &[u8], from: usize) -> Result<usize, usize> {
    let mut i = from;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        match &buf[nl + 1..] {
            [b'\n', ..] => return Ok(nl + 2),
            [b'\r', b'\n', ..] => return Ok(nl + 3),
            // Not known yet whether a blank line follows.
            [] | [b'\r'] => return Err(nl),
            _ => i = nl + 1,
        }
    }
    Err(buf.len())
}

/// Waits until `fd` is writable, at most `timeout`.
pub(crate) fn wait_writable(fd: RawFd, timeout: Duration) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    loop {
        // SAFETY: one pollfd on the stack.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n > 0 {
            return Ok(());
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client does not read its answer",
            ));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes all of `bytes` to a non-blocking socket, each stalled write
/// waiting at most `timeout`.
pub(crate) fn write_all_within(s: &TcpStream, bytes: &[u8], timeout: Duration) -> io::Result<()> {
    let progress = AtomicU64::new(0);
    Out {
        stream: s,
        timeout,
        progress: &progress,
        epoch: Instant::now(),
        stalls: None,
    }
    .write_all(bytes)
}

/// How long a write may wait for the client before its writer counts as
/// stalled (see [`Stalls`]).
pub(crate) const STALL_AFTER: Duration = Duration::from_millis(30);

/// Told when a write has waited [`STALL_AFTER`] for its client, and again
/// when that wait ends (bytes moved, or the write failed): the worker pool
/// uses it to start a spare worker while clients that do not read hold
/// workers.
pub(crate) trait Stalls {
    fn stalled(&self);
    fn resumed(&self);
}

/// Writes to a non-blocking socket as a blocking one with a send timeout
/// would: each stalled write waits at most `timeout`. Every write that
/// moves bytes bumps `progress` (the front's liveness).
pub(crate) struct Out<'a> {
    pub(crate) stream: &'a TcpStream,
    pub(crate) timeout: Duration,
    pub(crate) progress: &'a AtomicU64,
    pub(crate) epoch: Instant,
    pub(crate) stalls: Option<&'a dyn Stalls>,
}

impl Write for Out<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.stream.write(buf) {
                Ok(n) => {
                    self.progress
                        .store(self.epoch.elapsed().as_millis() as u64, SeqCst);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait()?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Out<'_> {
    /// Waits until the socket takes bytes again, at most `timeout`; past
    /// [`STALL_AFTER`] the wait is reported to `stalls`.
    fn wait(&self) -> io::Result<()> {
        let fd = self.stream.as_raw_fd();
        let Some(stalls) = self.stalls.filter(|_| self.timeout > STALL_AFTER) else {
            return wait_writable(fd, self.timeout);
        };
        match wait_writable(fd, STALL_AFTER) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                stalls.stalled();
                let waited = wait_writable(fd, self.timeout - STALL_AFTER);
                stalls.resumed();
                waited
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_ends_at_the_first_blank_line_with_either_line_ending() {
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest", 0),
            Ok(24)
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.1\nA: b\n\nrest", 0), Ok(21));
        // Incomplete: the search resumes where it stopped, and finds the
        // end once the rest arrives.
        let part = b"GET / HTTP/1.1\r\nA: b\r\n";
        let at = find_head_end(part, 0).unwrap_err();
        let mut whole = part.to_vec();
        whole.extend_from_slice(b"\r\n");
        assert_eq!(find_head_end(&whole, at), Ok(whole.len()));
        assert_eq!(find_head_end(b"GET / HT", 0), Err(8));
        assert_eq!(find_head_end(b"", 0), Err(0));
    }

    #[test]
    fn a_consumed_request_leaves_the_next_one_and_owes_the_rest_of_its_body() {
        let (a, _b) = pair();
        let mut c = Conn {
            buf: b"POST / HTTP/1.1\r\n\r\n12345".to_vec(),
            head_len: 19,
            ..conn_of(a)
        };
        c.consume(10);
        assert!(c.buf.is_empty());
        assert_eq!(c.discard, 5);
        c.buf = b"GET / HTTP/1.1\r\n\r\nxyGET".to_vec();
        c.head_len = 18;
        c.consume(2);
        assert_eq!(c.buf, b"GET");
        assert_eq!(c.discard, 0);
    }

    fn conn_of(stream: TcpStream) -> Conn {
        Conn::new(stream, "127.0.0.1:1".parse().unwrap(), 0)
    }

    #[test]
    fn a_client_pipelining_without_reading_is_buffered_one_head_and_one_read_at_most() {
        // A client that writes requests and never reads the answers: the
        // rest waits in the kernel's socket buffer (which can grow to
        // megabytes a connection), not in the poller's.
        let (mut client, server) = pair();
        server.set_nonblocking(true).unwrap();
        let requests = b"GET /health HTTP/1.1\r\n\r\n".repeat(20_000);
        let writer = std::thread::spawn(move || {
            let _ = client.write_all(&requests);
            client
        });
        let started = Instant::now();
        while !writer.is_finished() && started.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut c = conn_of(server);
        let mut scratch = vec![0; SCRATCH];
        let max_head = 26 << 10;
        // One readiness, one call (the poller reads again only once what
        // it holds has been answered).
        assert!(read_some(&mut c, &mut scratch, max_head).unwrap());
        assert!(!c.buf.is_empty());
        assert!(
            c.buf.len() <= max_head + SCRATCH,
            "{} bytes buffered",
            c.buf.len()
        );
        drop(c);
        drop(writer.join());
    }

    #[test]
    fn a_request_that_arrives_with_the_clients_close_is_kept() {
        // The end of an owed body fills a whole read, the next request
        // follows it, and the client shuts its write side: the request is
        // read before the close, and the close seen on the next turn.
        let (mut client, server) = pair();
        server.set_nonblocking(true).unwrap();
        let request = b"GET /health HTTP/1.1\r\n\r\n";
        let owed = SCRATCH - request.len();
        let mut bytes = vec![b'x'; owed];
        bytes.extend_from_slice(request);
        client.write_all(&bytes).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        // Wait until the close has arrived behind the bytes.
        let mut p = libc::pollfd {
            fd: server.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 10_000) }, 1);
        let mut c = conn_of(server);
        c.discard = owed as u64;
        let mut scratch = vec![0; SCRATCH];
        assert!(read_some(&mut c, &mut scratch, 26 << 10).unwrap());
        assert_eq!(c.buf, request);
        assert!(!read_some(&mut c, &mut scratch, 26 << 10).unwrap());
    }

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }
}
