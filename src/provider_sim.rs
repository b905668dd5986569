//! An in-process provider: serves a list of feeds over real HTTP on a
//! loopback port, cycling through them, and misbehaves on demand.
//!
//! `serve --demo` runs it with the embedded fixture feeds, so the whole real
//! fetch path (HTTP, conditional GET, spooling, parsing) runs with no
//! network. Integration tests script faults with [`FakeProvider::push`]:
//! slow answers, error statuses, redirects, a dripping body, truncation,
//! garbage, huge and gzip bodies. It answers `If-None-Match` with 304 like a good provider.
//!
//! [`CutProvider`] is a raw-TCP sibling for the one fault tiny_http cannot
//! produce: a connection closed in the middle of a body whose
//! `Content-Length` promised more.
//!
//! It must not be used for anything but the demo and tests: it binds only to
//! 127.0.0.1 and holds every feed in memory.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::digest::digest;

/// The fixture feeds built into the binary, in the order the provider
/// served them.
pub const DEMO_FEEDS: [&[u8]; 3] = [
    include_bytes!("../assets/fixtures/response_1.xml"),
    include_bytes!("../assets/fixtures/response_2.xml"),
    include_bytes!("../assets/fixtures/response_3.xml"),
];

/// The same three feeds in the older `eventList` dialect.
pub const DEMO_FEEDS_EVENTS: [&[u8]; 3] = [
    include_bytes!("../assets/fixtures/eventlist_response_1.xml"),
    include_bytes!("../assets/fixtures/eventlist_response_2.xml"),
    include_bytes!("../assets/fixtures/eventlist_response_3.xml"),
];

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// The next feed of the cycle (the default when nothing is scripted).
    Next,
    /// A fixed body with status 200.
    Body(Vec<u8>),
    /// Given bytes with status 200 and the given `Content-Type` (a feed in
    /// another encoding, say `text/xml; charset=ISO-8859-1`).
    Typed { body: Vec<u8>, content_type: String },
    /// The next feed, gzip-compressed with `Content-Encoding: gzip`.
    Gzip,
    /// A gzip stream that inflates to `n` bytes of zeros inside an XML
    /// comment (a decompression bomb).
    GzipBomb(u64),
    /// An error status, with `Retry-After` seconds when given.
    Status(u16, Option<u64>),
    /// Wait before answering at all.
    Delay(Duration),
    /// The next feed, one chunk of `bytes` every `every`.
    Drip { bytes: usize, every: Duration },
    /// The first `n` bytes of the next feed, as a complete (chunked) HTTP
    /// answer: the document, not the transfer, is cut.
    Truncated(usize),
    /// `n` bytes of a valid-looking XML comment: an endless feed.
    Huge(u64),
    /// A redirect: `status` (301, 302, …) with this `Location`.
    Redirect { status: u16, location: String },
}

/// A request the provider saw.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Path and query of the request.
    pub url: String,
    pub user_agent: Option<String>,
    pub if_none_match: Option<String>,
    pub accept_encoding: Option<String>,
}

struct Shared {
    feeds: Vec<Vec<u8>>,
    cursor: AtomicUsize,
    script: Mutex<VecDeque<Behaviour>>,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
}

/// The running provider. Stops when dropped.
pub struct FakeProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Arc<tiny_http::Server>,
}

impl FakeProvider {
    /// Serves `feeds` in a cycle on a fresh loopback port.
    pub fn start(feeds: Vec<Vec<u8>>) -> io::Result<FakeProvider> {
        let server =
            tiny_http::Server::http("127.0.0.1:0").map_err(|e| io::Error::other(e.to_string()))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("provider is not on TCP"))?;
        let server = Arc::new(server);
        let shared = Arc::new(Shared {
            feeds,
            cursor: AtomicUsize::new(0),
            script: Mutex::new(VecDeque::new()),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let (srv, sh) = (server.clone(), shared.clone());
        thread::Builder::new()
            .name("planbox-provider".into())
            .spawn(move || {
                while !sh.stop.load(SeqCst) {
                    match srv.recv_timeout(Duration::from_millis(100)) {
                        Ok(Some(rq)) => {
                            let sh = sh.clone();
                            // One thread per request so a slow answer never
                            // holds up another.
                            let _ = thread::Builder::new()
                                .name("planbox-provider-rq".into())
                                .spawn(move || answer(&sh, rq));
                        }
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
            })?;
        Ok(FakeProvider {
            addr,
            shared,
            server,
        })
    }

    /// The demo provider: the three fixture feeds.
    pub fn demo() -> io::Result<FakeProvider> {
        Self::start(DEMO_FEEDS.iter().map(|f| f.to_vec()).collect())
    }

    pub fn url(&self) -> String {
        format!("http://{}/feed", self.addr)
    }

    /// Queues behaviours for the next requests, in order.
    pub fn push(&self, b: Behaviour) {
        if let Ok(mut s) = self.shared.script.lock() {
            s.push_back(b);
        }
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        self.server.unblock();
    }
}

fn etag_of(body: &[u8]) -> String {
    format!("\"{:016x}\"", digest(body))
}

fn next_feed(sh: &Shared) -> Vec<u8> {
    if sh.feeds.is_empty() {
        return Vec::new();
    }
    let i = sh.cursor.fetch_add(1, SeqCst) % sh.feeds.len();
    sh.feeds[i].clone()
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
        .unwrap_or_else(|_| tiny_http::Header::from_bytes(&b"X-Invalid"[..], &b"1"[..]).unwrap())
}

fn answer(sh: &Shared, rq: tiny_http::Request) {
    let get = |name: &'static str| -> Option<String> {
        rq.headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_owned())
    };
    let seen = Seen {
        url: rq.url().to_owned(),
        user_agent: get("User-Agent"),
        if_none_match: get("If-None-Match"),
        accept_encoding: get("Accept-Encoding"),
    };
    if let Ok(mut s) = sh.seen.lock() {
        s.push(seen.clone());
    }
    let mut behaviour = sh
        .script
        .lock()
        .ok()
        .and_then(|mut s| s.pop_front())
        .unwrap_or(Behaviour::Next);
    while let Behaviour::Delay(d) = behaviour {
        thread::sleep(d);
        behaviour = sh
            .script
            .lock()
            .ok()
            .and_then(|mut s| s.pop_front())
            .unwrap_or(Behaviour::Next);
    }
    let _ = match behaviour {
        Behaviour::Next | Behaviour::Delay(_) => {
            // Peek at the feed this request would get: unchanged → 304.
            let feed = next_feed(sh);
            let etag = etag_of(&feed);
            if seen.if_none_match.as_deref() == Some(etag.as_str()) {
                rq.respond(tiny_http::Response::empty(304).with_header(header("ETag", &etag)))
            } else {
                rq.respond(
                    tiny_http::Response::from_data(feed)
                        .with_header(header("ETag", &etag))
                        .with_header(header("Content-Type", "application/xml")),
                )
            }
        }
        Behaviour::Body(b) => rq.respond(tiny_http::Response::from_data(b)),
        Behaviour::Typed { body, content_type } => rq.respond(
            tiny_http::Response::from_data(body).with_header(header("Content-Type", &content_type)),
        ),
        Behaviour::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            let _ = enc.write_all(&next_feed(sh));
            let gz = enc.finish().unwrap_or_default();
            rq.respond(
                tiny_http::Response::from_data(gz).with_header(header("Content-Encoding", "gzip")),
            )
        }
        Behaviour::GzipBomb(n) => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let _ = enc.write_all(b"<?xml version=\"1.0\"?><planList><!--");
            let zeros = vec![b'0'; 1 << 20];
            let mut left = n;
            while left > 0 {
                let k = left.min(zeros.len() as u64) as usize;
                let _ = enc.write_all(&zeros[..k]);
                left -= k as u64;
            }
            let _ = enc.write_all(b"--></planList>");
            let gz = enc.finish().unwrap_or_default();
            rq.respond(
                tiny_http::Response::from_data(gz).with_header(header("Content-Encoding", "gzip")),
            )
        }
        Behaviour::Status(code, retry) => {
            let mut r = tiny_http::Response::from_string("provider trouble").with_status_code(code);
            if let Some(s) = retry {
                r = r.with_header(header("Retry-After", &s.to_string()));
            }
            rq.respond(r)
        }
        Behaviour::Drip { bytes, every } => {
            let feed = next_feed(sh);
            let len = feed.len();
            let reader = Drip {
                data: feed,
                pos: 0,
                chunk: bytes.max(1),
                every,
            };
            rq.respond(tiny_http::Response::new(
                tiny_http::StatusCode(200),
                vec![],
                reader,
                Some(len),
                None,
            ))
        }
        Behaviour::Truncated(n) => {
            let feed = next_feed(sh);
            let cut = feed[..n.min(feed.len())].to_vec();
            // A complete HTTP answer (chunked) carrying a cut document.
            rq.respond(tiny_http::Response::new(
                tiny_http::StatusCode(200),
                vec![],
                io::Cursor::new(cut),
                None,
                None,
            ))
        }
        Behaviour::Redirect { status, location } => rq
            .respond(tiny_http::Response::empty(status).with_header(header("Location", &location))),
        Behaviour::Huge(n) => {
            let reader = io::Cursor::new(b"<?xml version=\"1.0\"?><planList><!--".to_vec())
                .chain(io::repeat(b'x').take(n));
            rq.respond(tiny_http::Response::new(
                tiny_http::StatusCode(200),
                vec![],
                reader,
                None,
                None,
            ))
        }
    };
}

/// A body that arrives slowly.
struct Drip {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
    every: Duration,
}

impl Read for Drip {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.data.len() {
            return Ok(0);
        }
        thread::sleep(self.every);
        let n = self.chunk.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A provider on raw TCP that answers every request with a `200` whose
/// `Content-Length` is the whole body, sends only the first `cut` bytes and
/// closes the connection. Stops when dropped.
pub struct CutProvider {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl CutProvider {
    pub fn start(body: Vec<u8>, cut: usize) -> io::Result<CutProvider> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        thread::Builder::new()
            .name("planbox-provider-cut".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.load(SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        let _ = answer_cut(conn, &body, cut);
                    }
                }
            })?;
        Ok(CutProvider { addr, stop })
    }

    pub fn url(&self) -> String {
        format!("http://{}/feed", self.addr)
    }
}

impl Drop for CutProvider {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn answer_cut(mut conn: TcpStream, body: &[u8], cut: usize) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    conn.write_all(&body[..cut.min(body.len())])?;
    conn.flush()?;
    conn.shutdown(Shutdown::Both)
}
