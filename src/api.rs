//! The HTTP API as a function: request in, response out (PRODUCT.md §3).
//!
//! Owns routing, the upstream envelope and error codes, `ETag` /
//! `If-None-Match`, gzip negotiation, and the answer cache keyed by data
//! generation and window. It reads data only through [`Source`], so it is
//! testable without sockets or files. It must not touch sockets, spawn
//! threads, or let any input reach a panic, a 500 or a message with SQL text.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use chrono_tz::Tz;

use crate::digest::Digest;

use crate::metrics::{Metrics, Route};
use crate::model::{FetchRun, SearchQuery};
use crate::query::{encode_cursor, parse_search, parse_search_query};
use crate::store::{DataVersion, Reader, Snapshot, StoreCounts, StoreError};

/// Cheaply shareable response bytes.
pub type Bytes = Arc<[u8]>;

/// What a streamed answer hands its consumer: the snapshot's facts and a
/// reader of the identity body. Returns what writing it returned.
pub type StreamFn<'a> = dyn FnMut(&Snapshot, &mut dyn Read) -> io::Result<()> + 'a;

/// What the API needs from the store. Implemented by [`Reader`]; tests can
/// substitute a fake.
pub trait Source {
    /// What a search would see now.
    fn version(&mut self) -> Result<DataVersion, StoreError>;
    /// Streams the answer to `q` from one snapshot into `f` (see
    /// [`Reader::stream`]).
    fn stream(
        &mut self,
        q: &SearchQuery,
        f: &mut StreamFn<'_>,
    ) -> Result<io::Result<()>, StoreError>;
    fn counts(&mut self) -> Result<StoreCounts, StoreError>;
    fn runs(&mut self, limit: usize) -> Result<Vec<FetchRun>, StoreError>;
    fn ready(&mut self) -> bool {
        self.version().is_ok()
    }
}

impl Source for Reader {
    fn version(&mut self) -> Result<DataVersion, StoreError> {
        Reader::version(self)
    }
    fn stream(
        &mut self,
        q: &SearchQuery,
        f: &mut StreamFn<'_>,
    ) -> Result<io::Result<()>, StoreError> {
        Reader::stream(self, q, |s, r| f(s, r))
    }
    fn counts(&mut self) -> Result<StoreCounts, StoreError> {
        Reader::counts(self)
    }
    fn runs(&mut self, limit: usize) -> Result<Vec<FetchRun>, StoreError> {
        Reader::runs(self, limit)
    }
}

/// The parts of an HTTP request the API looks at.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query, as received (`/search?starts_at=...`).
    pub url: &'a str,
    pub accept_encoding: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
    /// An HTTP/1.0 request: no chunked encoding, so a large answer is sent
    /// uncompressed with its length counted first.
    pub http10: bool,
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub route: Route,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// A `/search` answer that is not in the cache: `body` is empty and the
    /// server gets the answer from [`Api::stream`] instead.
    pub stream: Option<Box<SearchStream>>,
}

/// A `/search` answer to be read from the store while it is sent.
#[derive(Clone, Debug)]
pub struct SearchStream {
    pub query: SearchQuery,
    pub encoding: Encoding,
    /// The request's query string, for the `Link` header of the next page.
    raw_query: String,
    /// The length must be known before the body (HTTP/1.0).
    sized: bool,
}

/// What [`Api::stream`] hands the server: a whole answer (small enough to
/// be cached), or headers and a body to send chunked.
pub enum Streamed<'a> {
    Whole(Response),
    Body {
        headers: Vec<(&'static str, String)>,
        /// Known only for an HTTP/1.0 request; else the body is chunked.
        length: Option<u64>,
        body: &'a mut dyn Read,
    },
}

/// A content coding of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Identity,
    Gzip,
    Br,
}

impl Encoding {
    fn token(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Br => Some("br"),
        }
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Stable error codes of the error envelope.
pub mod code {
    pub const INVALID_PARAMETER: &str = "invalid_parameter";
    pub const NOT_FOUND: &str = "not_found";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const URI_TOO_LONG: &str = "uri_too_long";
    pub const HEADERS_TOO_LARGE: &str = "headers_too_large";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const OVERLOADED: &str = "overloaded";
    pub const NOT_READY: &str = "not_ready";
    pub const INTERNAL: &str = "internal";
}

const JSON: &str = "application/json";

/// The error envelope `{"data": null, "error": {"code", "message"}}`.
pub fn error_response(status: u16, route: Route, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"data": null, "error": {"code": code, "message": message}});
    Response {
        status,
        route,
        headers: vec![("Content-Type", JSON.into())],
        body: body.to_string().into_bytes().into(),
        stream: None,
    }
}

/// Facts about the running service shown on the status page.
#[derive(Debug, Default)]
pub struct ServiceInfo {
    pub provider_url: String,
    pub version: &'static str,
    /// Unix seconds of the next scheduled fetch; 0 = unknown.
    pub next_fetch: AtomicI64,
}

/// A `/search` answer in memory, shared by every request for the same
/// query and data generation.
#[derive(Debug)]
struct Rendered {
    body: Bytes,
    /// Where the next page starts (a `limit` query with more plans left).
    next: Option<crate::model::Position>,
    gzip: OnceLock<Bytes>,
    br: OnceLock<Bytes>,
}

impl Rendered {
    fn new(body: Vec<u8>, next: Option<crate::model::Position>) -> Rendered {
        Rendered {
            body: body.into(),
            next,
            gzip: OnceLock::new(),
            br: OnceLock::new(),
        }
    }

    /// The body in `enc`, compressed once and kept.
    fn encoded(&self, enc: Encoding) -> &Bytes {
        match enc {
            Encoding::Identity => &self.body,
            Encoding::Gzip => self.gzip.get_or_init(|| {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(self.body.len() / 4 + 64),
                    flate2::Compression::fast(),
                );
                // Writing into a Vec cannot fail.
                let _ = enc.write_all(&self.body);
                enc.finish().unwrap_or_default().into()
            }),
            Encoding::Br => self.br.get_or_init(|| {
                let mut out = Vec::with_capacity(self.body.len() / 5 + 64);
                let params = brotli::enc::BrotliEncoderParams {
                    quality: BROTLI_CACHED_QUALITY,
                    ..Default::default()
                };
                let _ = brotli::BrotliCompress(&mut &self.body[..], &mut out, &params);
                out.into()
            }),
        }
    }
}

/// Answers of the current generation by query. Bounded by entries and
/// bytes; a new generation empties it.
#[derive(Default)]
struct AnswerCache {
    generation: AtomicU64,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    generation: u64,
    bytes: usize,
    map: HashMap<SearchQuery, Arc<Rendered>>,
    /// Queries whose answer streamed once in this generation and turned out
    /// to fit [`CACHE_MAX_BODY`]: the next request reads them whole.
    cacheable: std::collections::HashSet<SearchQuery>,
}

const CACHE_MAX_ENTRIES: usize = 4096;
const CACHE_MAX_BYTES: usize = 64 << 20;
/// Answers up to this size are read whole, cached and sent with a
/// `Content-Length`; larger ones are streamed (chunked). So a request holds
/// at most this much of an answer in memory unless the answer is known to
/// be cacheable.
pub const WHOLE_MAX_BYTES: usize = 1 << 20;
/// Largest answer kept in the cache: one that streamed once and turned out
/// to be at most this big is read whole (and cached) from its second
/// request on.
const CACHE_MAX_BODY: usize = 4 << 20;
/// Bodies smaller than this are sent uncompressed (compression would not pay).
const COMPRESS_MIN_BYTES: usize = 512;
/// Brotli quality for cached answers (compressed once per generation).
const BROTLI_CACHED_QUALITY: i32 = 6;
/// Brotli quality and window (log2) for streamed answers: fast, and a few
/// MiB of encoder state at most.
const BROTLI_STREAM_QUALITY: u32 = 1;
const BROTLI_STREAM_LGWIN: u32 = 20;

impl AnswerCache {
    fn get(&self, generation: u64, q: &SearchQuery) -> Option<Arc<Rendered>> {
        if self.generation.load(Relaxed) != generation {
            return None;
        }
        let inner = self.inner.lock().ok()?;
        (inner.generation == generation)
            .then(|| inner.map.get(q).cloned())
            .flatten()
    }

    /// How much of the answer to `q` to read before deciding to stream it.
    fn whole_limit(&self, generation: u64, q: &SearchQuery) -> usize {
        match self.inner.lock() {
            Ok(inner) if inner.generation == generation && inner.cacheable.contains(q) => {
                CACHE_MAX_BODY
            }
            _ => WHOLE_MAX_BYTES,
        }
    }

    /// The answer to `q` streamed whole and was at most [`CACHE_MAX_BODY`].
    fn note_cacheable(&self, generation: u64, q: &SearchQuery) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if generation > inner.generation {
            inner.map.clear();
            inner.cacheable.clear();
            inner.bytes = 0;
            inner.generation = generation;
            self.generation.store(generation, Relaxed);
        }
        if generation == inner.generation && inner.cacheable.len() < CACHE_MAX_ENTRIES {
            inner.cacheable.insert(q.clone());
        }
    }

    fn put(&self, generation: u64, q: SearchQuery, r: &Arc<Rendered>) {
        if r.body.len() > CACHE_MAX_BODY {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if generation < inner.generation {
            return;
        }
        let full =
            inner.map.len() >= CACHE_MAX_ENTRIES || inner.bytes + r.body.len() > CACHE_MAX_BYTES;
        if generation > inner.generation || full {
            inner.map.clear();
            inner.cacheable.clear();
            inner.bytes = 0;
            inner.generation = generation;
            self.generation.store(generation, Relaxed);
        }
        inner.bytes += r.body.len();
        inner.map.insert(q, r.clone());
    }
}

/// The `ETag` of an answer, known before its first byte: a digest of the
/// store's content digest and count (equal on replicas holding the same
/// plans), the normalized query and the negotiated coding.
fn search_etag(v: &DataVersion, q: &SearchQuery, enc: Encoding) -> String {
    let mut d = Digest::new();
    d.field(b"planbox-search-1");
    d.update(&v.content.to_le_bytes());
    d.update(&v.searchable.to_le_bytes());
    for bound in [q.window.starts_at, q.window.ends_at] {
        d.update(&[u8::from(bound.is_some())]);
        d.update(&bound.unwrap_or(0).to_le_bytes());
    }
    d.update(&q.limit.map_or(0, i64::from).to_le_bytes());
    if let Some(p) = &q.after {
        d.update(&p.start.to_le_bytes());
        d.update(&[u8::from(p.end.is_some())]);
        d.update(&p.end.unwrap_or(0).to_le_bytes());
        d.field(p.id.as_bytes());
    }
    d.update(&[enc as u8]);
    format!("\"{:016x}\"", d.finish())
}

/// Counts the bytes read through it and whether the end was reached.
struct Counting<R> {
    inner: R,
    n: u64,
    eof: bool,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        self.eof |= k == 0 && !buf.is_empty();
        Ok(k)
    }
}

/// `Link: <...>; rel="next"` for the page after `next`: the request's own
/// query with `after` replaced.
fn next_link(raw_query: &str, next: &crate::model::Position) -> String {
    let mut url = String::from("/search?");
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        // Only our own, validated parameters: nothing a client made up
        // reaches the header.
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        let ours = crate::query::percent_decode(key)
            .is_ok_and(|k| matches!(k.as_str(), "starts_at" | "ends_at" | "limit"));
        if !ours {
            continue;
        }
        url.push_str(pair);
        url.push('&');
    }
    url.push_str("after=");
    url.push_str(&encode_cursor(next));
    format!("<{url}>; rel=\"next\"")
}

/// How long a data version read from the store is trusted while this
/// process commits nothing: a change made by another process (`planbox
/// import` beside `serve`) shows in answers and ETags within this delay.
/// Commits of this process show at once (see [`crate::store::local_changes`]).
pub const VERSION_TTL: std::time::Duration = std::time::Duration::from_millis(100);

/// The data version as last read, so that a cached answer costs no SQLite
/// work: re-read when this process committed a change since, or when it is
/// older than [`VERSION_TTL`].
struct VersionCache {
    ttl: std::time::Duration,
    last: Mutex<Option<(DataVersion, std::time::Instant, u64)>>,
}

impl Default for VersionCache {
    fn default() -> Self {
        VersionCache {
            ttl: VERSION_TTL,
            last: Mutex::new(None),
        }
    }
}

impl VersionCache {
    fn get(&self, src: &mut dyn Source) -> Result<DataVersion, StoreError> {
        let changes = crate::store::local_changes();
        if let Ok(last) = self.last.lock() {
            if let Some((v, at, seen)) = *last {
                if seen == changes && at.elapsed() < self.ttl {
                    return Ok(v);
                }
            }
        }
        let at = std::time::Instant::now();
        let v = src.version()?;
        self.offer(v, at, changes);
        Ok(v)
    }

    /// A version read at `at`, when this process had made `changes`.
    fn offer(&self, v: DataVersion, at: std::time::Instant, changes: u64) {
        if let Ok(mut last) = self.last.lock() {
            let newer = match *last {
                Some((old, old_at, _)) => old_at <= at || old.generation < v.generation,
                None => true,
            };
            if newer {
                *last = Some((v, at, changes));
            }
        }
    }
}

/// The API: configuration plus shared caches and metrics. One per server,
/// shared by all workers.
pub struct Api {
    tz: Tz,
    cache: AnswerCache,
    version: VersionCache,
    metrics: Arc<Metrics>,
    info: Arc<ServiceInfo>,
    /// Whether `/metrics` is served here (false when it has its own listener).
    serve_metrics: bool,
    /// Whether `/metrics` is the only path served here (the metrics listener).
    only_metrics: bool,
}

impl Api {
    pub fn new(tz: Tz, metrics: Arc<Metrics>, info: Arc<ServiceInfo>) -> Api {
        Api {
            tz,
            cache: AnswerCache::default(),
            version: VersionCache::default(),
            metrics,
            info,
            serve_metrics: true,
            only_metrics: false,
        }
    }

    /// The same API without `/metrics` (a 404 here): it is served on its own
    /// listener instead (`--metrics-listen`).
    pub fn without_metrics(mut self) -> Api {
        self.serve_metrics = false;
        self
    }

    /// The API of the `--metrics-listen` listener: `/metrics` and nothing
    /// else (every other path is a 404), over the same metrics.
    pub fn metrics_only(metrics: Arc<Metrics>) -> Api {
        Api {
            only_metrics: true,
            ..Api::new(Tz::UTC, metrics, Arc::default())
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Answers one request.
    pub fn handle(&self, req: &Request<'_>, src: &mut dyn Source) -> Response {
        let (path, query) = req.url.split_once('?').unwrap_or((req.url, ""));
        let route = match path {
            "/metrics" if self.serve_metrics => Some(Route::Metrics),
            _ if self.only_metrics => None,
            "/search" => Some(Route::Search),
            "/health" => Some(Route::Health),
            "/ready" => Some(Route::Ready),
            "/openapi.yaml" => Some(Route::OpenApi),
            "/" => Some(Route::Status),
            _ => None,
        };
        let Some(route) = route else {
            return error_response(
                404,
                Route::Other,
                code::NOT_FOUND,
                &format!(
                    "no such path; see /openapi.yaml ({} {})",
                    req.method,
                    short(path)
                ),
            );
        };
        if !matches!(req.method, "GET" | "HEAD") {
            let mut r = error_response(
                405,
                route,
                code::METHOD_NOT_ALLOWED,
                &format!("{} is not allowed here; use GET or HEAD", short(req.method)),
            );
            r.headers.push(("Allow", "GET, HEAD".into()));
            return r;
        }
        match route {
            Route::Search => self.search(req, query, src),
            Route::Health => json_ok(route, r#"{"status":"ok"}"#),
            Route::Ready => {
                if src.ready() {
                    json_ok(route, r#"{"status":"ready"}"#)
                } else {
                    unavailable(route, code::NOT_READY, "the store is not open yet")
                }
            }
            Route::Metrics => self.metrics_page(route, src),
            Route::OpenApi => Response {
                status: 200,
                route,
                headers: vec![("Content-Type", "application/yaml".into())],
                body: Bytes::from(OPENAPI.as_bytes()),
                stream: None,
            },
            Route::Status => self.status_page(route, query, src),
            Route::Other => unreachable_route(),
        }
    }

    fn search(&self, req: &Request<'_>, query: &str, src: &mut dyn Source) -> Response {
        let route = Route::Search;
        let q = match parse_search(query, self.tz) {
            Ok(q) => q,
            Err(e) => return error_response(400, route, code::INVALID_PARAMETER, &e.message),
        };
        let version = match self.version.get(src) {
            Ok(v) => v,
            Err(e) => return store_failed(&e),
        };
        let encoding = if req.http10 {
            Encoding::Identity
        } else {
            negotiate(req.accept_encoding)
        };
        let etag = search_etag(&version, &q, encoding);
        if req
            .if_none_match
            .is_some_and(|inm| etag_matches(inm, &etag))
        {
            return Response {
                status: 304,
                route,
                headers: vec![
                    ("ETag", etag),
                    ("Vary", "Accept-Encoding".into()),
                    ("Cache-Control", "no-cache".into()),
                ],
                body: Bytes::from(&[][..]),
                stream: None,
            };
        }
        if let Some(hit) = self.cache.get(version.generation, &q) {
            return whole(&hit, etag, encoding, query);
        }
        Response {
            status: 200,
            route,
            headers: Vec::new(),
            body: Bytes::from(&[][..]),
            stream: Some(Box::new(SearchStream {
                query: q,
                encoding,
                raw_query: query.to_owned(),
                sized: req.http10,
            })),
        }
    }

    /// Reads the answer of `s` from one snapshot of `src`. An answer of at
    /// most [`WHOLE_MAX_BYTES`] is cached and handed to `send` whole; a
    /// larger one is handed over as headers and a body reader (compressed
    /// on the fly) that pulls rows from the snapshot as `send` reads it.
    /// Its `ETag` comes from the same snapshot as its rows.
    pub fn stream(
        &self,
        s: &SearchStream,
        src: &mut dyn Source,
        send: &mut dyn FnMut(Streamed<'_>) -> io::Result<()>,
    ) -> Result<io::Result<()>, StoreError> {
        // Without chunks (HTTP/1.0), a first pass counts a large answer's
        // bytes (keeping nothing) and the second sends them, from a snapshot
        // of the same version.
        let mut length = None;
        if s.sized {
            let mut whole_answer = None;
            let counted = src.stream(&s.query, &mut |snap, rows| {
                let mut prefix = Vec::new();
                rows.take(WHOLE_MAX_BYTES as u64 + 1)
                    .read_to_end(&mut prefix)?;
                if prefix.len() <= WHOLE_MAX_BYTES {
                    whole_answer = Some(self.keep(snap, &s.query, prefix));
                } else {
                    let rest = io::copy(rows, &mut io::sink())?;
                    length = Some((snap.version, prefix.len() as u64 + rest));
                }
                Ok(())
            })?;
            if let Err(e) = counted {
                return Ok(Err(e));
            }
            if let Some((r, version)) = whole_answer {
                let etag = search_etag(&version, &s.query, s.encoding);
                return Ok(send(Streamed::Whole(whole(
                    &r,
                    etag,
                    s.encoding,
                    &s.raw_query,
                ))));
            }
        }
        src.stream(&s.query, &mut |snap, rows| {
            let etag = search_etag(&snap.version, &s.query, s.encoding);
            let length = match length {
                Some((v, n)) if v == snap.version => Some(n),
                Some(_) => {
                    return Err(io::Error::other("the data changed between two passes"));
                }
                None => None,
            };
            let limit = self.cache.whole_limit(snap.version.generation, &s.query);
            let mut prefix = Vec::new();
            rows.take(limit as u64 + 1).read_to_end(&mut prefix)?;
            if prefix.len() <= limit {
                let (r, _) = self.keep(snap, &s.query, prefix);
                return send(Streamed::Whole(whole(&r, etag, s.encoding, &s.raw_query)));
            }
            let mut rest = Counting {
                inner: rows,
                n: prefix.len() as u64,
                eof: false,
            };
            let rows = &mut rest;
            let mut headers = search_headers(etag, snap.next.as_ref(), &s.raw_query);
            if let Some(token) = s.encoding.token() {
                headers.push(("Content-Encoding", token.into()));
            }
            let body = io::Cursor::new(prefix).chain(rows);
            let mut body: Box<dyn Read + '_> = match s.encoding {
                Encoding::Identity => Box::new(body),
                Encoding::Gzip => Box::new(flate2::read::GzEncoder::new(
                    body,
                    flate2::Compression::fast(),
                )),
                Encoding::Br => Box::new(brotli::CompressorReader::new(
                    body,
                    64 << 10,
                    BROTLI_STREAM_QUALITY,
                    BROTLI_STREAM_LGWIN,
                )),
            };
            let sent = send(Streamed::Body {
                headers,
                length,
                body: &mut body,
            });
            drop(body);
            if sent.is_ok() && rest.eof && rest.n <= CACHE_MAX_BODY as u64 {
                self.cache.note_cacheable(snap.version.generation, &s.query);
            }
            sent
        })
    }

    /// Caches a whole answer read from `snap`.
    fn keep(
        &self,
        snap: &Snapshot,
        q: &SearchQuery,
        body: Vec<u8>,
    ) -> (Arc<Rendered>, DataVersion) {
        let r = Arc::new(Rendered::new(body, snap.next.clone()));
        self.cache.put(snap.version.generation, q.clone(), &r);
        (r, snap.version)
    }

    /// A page of at most `limit` plans in memory, for the status page.
    fn first_page(&self, q: SearchQuery, src: &mut dyn Source) -> Result<Bytes, StoreError> {
        let mut body = Vec::new();
        src.stream(&q, &mut |_, rows| rows.read_to_end(&mut body).map(drop))?
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(body.into())
    }

    fn metrics_page(&self, route: Route, src: &mut dyn Source) -> Response {
        if let Ok(c) = src.counts() {
            self.metrics.set_plans_searchable(c.plans_searchable);
        }
        Response {
            status: 200,
            route,
            headers: vec![(
                "Content-Type",
                "text/plain; version=0.0.4; charset=utf-8".into(),
            )],
            body: self.metrics.render().into_bytes().into(),
            stream: None,
        }
    }

    fn status_page(&self, route: Route, query: &str, src: &mut dyn Source) -> Response {
        // A form field left empty means "unbounded" here (the API itself
        // answers 400 to an empty value).
        let form = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.ends_with('='))
            .collect::<Vec<_>>()
            .join("&");
        let html = crate::status_page::render(&crate::status_page::PageInput {
            info: &self.info,
            last_success: self.metrics.last_success(),
            counts: src.counts().ok(),
            runs: src.runs(20).unwrap_or_default(),
            query,
            search: if query.is_empty() {
                None
            } else {
                Some(
                    parse_search_query(&form, self.tz)
                        .map_err(|e| e.message)
                        .and_then(|w| {
                            // Enough to show the first 1000 and say there
                            // are more.
                            let q = SearchQuery {
                                limit: Some(1001),
                                ..SearchQuery::from(w)
                            };
                            self.first_page(q, src)
                                .map_err(|_| "the store cannot be read right now".into())
                        }),
                )
            },
            metrics_here: self.serve_metrics,
        });
        Response {
            status: 200,
            route,
            headers: vec![
                ("Content-Type", "text/html; charset=utf-8".into()),
                ("X-Content-Type-Options", "nosniff".into()),
                (
                    "Content-Security-Policy",
                    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'".into(),
                ),
            ],
            body: html.into_bytes().into(),
            stream: None,
        }
    }
}

/// One event of a `/search` answer, decoded for people (status page, CLI
/// table) with the prices' exact JSON text kept.
#[derive(Debug, serde::Deserialize)]
pub struct EventRow {
    pub id: String,
    pub title: String,
    pub start_date: String,
    pub start_time: Option<String>,
    pub end_date: Option<String>,
    pub end_time: Option<String>,
    pub min_price: Box<serde_json::value::RawValue>,
    pub max_price: Box<serde_json::value::RawValue>,
}

impl EventRow {
    /// `date time`, or `-` when absent.
    pub fn start(&self) -> String {
        join_date_time(Some(&self.start_date), self.start_time.as_deref())
    }

    pub fn end(&self) -> String {
        join_date_time(self.end_date.as_deref(), self.end_time.as_deref())
    }

    /// The price as the API wrote it (`15.00`), `-` for null.
    pub fn price(raw: &serde_json::value::RawValue) -> &str {
        match raw.get() {
            "null" => "-",
            p => p,
        }
    }
}

fn join_date_time(date: Option<&str>, time: Option<&str>) -> String {
    match (date, time) {
        (Some(d), Some(t)) => format!("{d} {t}"),
        (Some(d), None) => d.to_owned(),
        _ => "-".to_owned(),
    }
}

/// Decodes the events of a `/search` success body.
pub fn decode_events(body: &[u8]) -> Result<Vec<EventRow>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        data: Data,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        events: Vec<EventRow>,
    }
    Ok(serde_json::from_slice::<Envelope>(body)?.data.events)
}

/// Calls `f` with each event of a `/search` success body read from
/// `body`, one at a time (memory stays one event whatever the answer's
/// size). Returns how many there were.
pub fn for_each_event(
    body: impl Read,
    f: &mut dyn FnMut(EventRow) -> io::Result<()>,
) -> Result<u64, serde_json::Error> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    /// Walks `{"data": {"events": [...]}}` down to the array.
    struct Path<'a, 'f> {
        depth: u8,
        f: &'a mut dyn FnMut(EventRow) -> io::Result<()>,
        n: &'a mut u64,
        _f: std::marker::PhantomData<&'f ()>,
    }

    impl<'de> DeserializeSeed<'de> for Path<'_, '_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            if self.depth == 2 {
                d.deserialize_seq(self)
            } else {
                d.deserialize_map(self)
            }
        }
    }

    impl<'de> Visitor<'de> for Path<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a /search answer")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let want = if self.depth == 0 { "data" } else { "events" };
            let mut this = Some(self);
            while let Some(key) = map.next_key::<String>()? {
                match (key == want, this.take()) {
                    (true, Some(p)) => map.next_value_seed(Path {
                        depth: p.depth + 1,
                        f: p.f,
                        n: p.n,
                        _f: std::marker::PhantomData,
                    })?,
                    (_, p) => {
                        this = p;
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(e) = seq.next_element::<EventRow>()? {
                *self.n += 1;
                (self.f)(e).map_err(serde::de::Error::custom)?;
            }
            Ok(())
        }
    }

    let mut n = 0;
    let mut de = serde_json::Deserializer::from_reader(io::BufReader::new(body));
    Path {
        depth: 0,
        f,
        n: &mut n,
        _f: std::marker::PhantomData,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(n)
}

/// The served OpenAPI document.
pub const OPENAPI: &str = include_str!("../assets/openapi.yaml");

fn unreachable_route() -> Response {
    error_response(404, Route::Other, code::NOT_FOUND, "no such path")
}

/// The headers every `/search` answer carries.
fn search_headers(
    etag: String,
    next: Option<&crate::model::Position>,
    raw_query: &str,
) -> Vec<(&'static str, String)> {
    let mut h = Vec::with_capacity(6);
    h.push(("Content-Type", JSON.to_string()));
    h.push(("ETag", etag));
    h.push(("Vary", "Accept-Encoding".into()));
    h.push(("Cache-Control", "no-cache".into()));
    if let Some(next) = next {
        h.push(("Link", next_link(raw_query, next)));
    }
    h
}

/// A cached (or small) answer: bytes, compressed as negotiated when that
/// pays.
fn whole(r: &Rendered, etag: String, enc: Encoding, raw_query: &str) -> Response {
    let mut headers = search_headers(etag, r.next.as_ref(), raw_query);
    let enc = if r.body.len() < COMPRESS_MIN_BYTES {
        Encoding::Identity
    } else {
        enc
    };
    if let Some(token) = enc.token() {
        headers.push(("Content-Encoding", token.into()));
    }
    Response {
        status: 200,
        route: Route::Search,
        headers,
        body: r.encoded(enc).clone(),
        stream: None,
    }
}

/// A store failure while answering `/search`: 503, logged, no SQL text.
pub fn store_failed(e: &StoreError) -> Response {
    crate::log::error(&format!("search failed: {e}"));
    unavailable(
        Route::Search,
        code::NOT_READY,
        "the store cannot be read right now",
    )
}

fn json_ok(route: Route, body: &'static str) -> Response {
    Response {
        status: 200,
        route,
        headers: vec![("Content-Type", JSON.into())],
        body: Bytes::from(body.as_bytes()),
        stream: None,
    }
}

/// 503 in the envelope with `Retry-After`.
pub fn unavailable(route: Route, code: &str, message: &str) -> Response {
    let mut r = error_response(503, route, code, message);
    r.headers.push(("Retry-After", "1".into()));
    r
}

/// At most 64 characters of untrusted text for messages.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The coding of an answer from `Accept-Encoding` (RFC 9110 §12.5.3):
/// the highest q-value among `br`, `gzip` (or `x-gzip`) and `identity`,
/// `*` standing for those not named; on a tie br, then gzip, then identity.
/// Without the header, or when nothing is acceptable, identity.
pub fn negotiate(header: Option<&str>) -> Encoding {
    let Some(header) = header else {
        return Encoding::Identity;
    };
    // (br, gzip, identity, *) in thousandths; None = not named.
    let mut q: [Option<u16>; 4] = [None; 4];
    for item in header.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let mut weight = Some(1000u16);
        for p in parts {
            let p = p.trim();
            if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                weight = parse_qvalue(v.trim());
            }
        }
        let Some(weight) = weight else {
            continue;
        };
        let slot = if name.eq_ignore_ascii_case("br") {
            0
        } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            1
        } else if name.eq_ignore_ascii_case("identity") {
            2
        } else if name == "*" {
            3
        } else {
            continue;
        };
        q[slot] = Some(q[slot].map_or(weight, |w| w.max(weight)));
    }
    let star = q[3];
    let br = q[0].or(star).unwrap_or(0);
    let gzip = q[1].or(star).unwrap_or(0);
    // Identity is acceptable unless refused, but loses to any offered coding
    // that is not explicitly weighted below it.
    let identity = q[2].or(star).unwrap_or(1);
    if br > 0 && br >= gzip && br >= identity {
        Encoding::Br
    } else if gzip > 0 && gzip >= identity {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

/// An RFC 9110 qvalue (`0`, `0.5`, `1.000`) in thousandths.
fn parse_qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

/// `If-None-Match` (a list, `*`, weak tags) matches our strong `etag`.
pub fn etag_matches(header: &str, etag: &str) -> bool {
    header.split(',').any(|t| {
        let t = t.trim();
        t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;

    /// A fake store holding pre-rendered event objects by start second.
    #[derive(Default)]
    struct Fake {
        generation: u64,
        events: Vec<(i64, String)>,
        broken: bool,
        searches: usize,
    }

    impl Source for Fake {
        fn version(&mut self) -> Result<DataVersion, StoreError> {
            if self.broken {
                return Err(StoreError::Busy);
            }
            Ok(DataVersion {
                generation: self.generation,
                content: self.generation * 7919,
                searchable: self.events.len() as u64,
            })
        }
        fn stream(
            &mut self,
            q: &SearchQuery,
            f: &mut StreamFn<'_>,
        ) -> Result<io::Result<()>, StoreError> {
            self.searches += 1;
            let w = q.window;
            let items: Vec<&str> = self
                .events
                .iter()
                .filter(|(s, _)| w.starts_at.is_none_or(|lo| *s >= lo) && !w.is_empty())
                .map(|(_, e)| e.as_str())
                .collect();
            let body = format!(
                r#"{{"data":{{"events":[{}]}},"error":null}}"#,
                items.join(",")
            );
            let snap = Snapshot {
                version: self.version()?,
                next: None,
            };
            Ok(f(&snap, &mut body.as_bytes()))
        }
        fn counts(&mut self) -> Result<StoreCounts, StoreError> {
            Ok(StoreCounts::default())
        }
        fn runs(&mut self, _: usize) -> Result<Vec<FetchRun>, StoreError> {
            Ok(vec![])
        }
    }

    /// An API that asks the fake for its version on every request (the
    /// fake changes without committing anything).
    fn api() -> Api {
        let mut a = Api::new(Tz::UTC, Arc::default(), Arc::default());
        a.version.ttl = std::time::Duration::ZERO;
        a
    }

    /// `handle`, then reads a streamed answer the way the server does.
    fn call(a: &Api, req: &Request<'_>, src: &mut dyn Source) -> Response {
        let mut r = a.handle(req, src);
        if let Some(s) = r.stream.take() {
            let mut got = None;
            a.stream(&s, src, &mut |streamed| {
                got = Some(match streamed {
                    Streamed::Whole(r) => r,
                    Streamed::Body { headers, body, .. } => {
                        let mut bytes = Vec::new();
                        body.read_to_end(&mut bytes)?;
                        Response {
                            status: 200,
                            route: Route::Search,
                            headers,
                            body: bytes.into(),
                            stream: None,
                        }
                    }
                });
                Ok(())
            })
            .unwrap()
            .unwrap();
            return got.unwrap();
        }
        r
    }

    fn get(url: &str) -> Request<'_> {
        Request {
            method: "GET",
            url,
            ..Request::default()
        }
    }

    fn json(r: &Response) -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn bad_parameters_are_400_in_the_envelope() {
        let r = call(&api(), &get("/search?starts_at=nope"), &mut Fake::default());
        assert_eq!(r.status, 400);
        let v = json(&r);
        assert!(v["data"].is_null());
        assert_eq!(v["error"]["code"], "invalid_parameter");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("starts_at"));
    }

    #[test]
    fn unknown_paths_404_and_other_methods_405_with_allow() {
        let a = api();
        let r = call(&a, &get("/nope"), &mut Fake::default());
        assert_eq!(
            (r.status, json(&r)["error"]["code"].as_str()),
            (404, Some("not_found"))
        );
        for m in [
            "POST", "PUT", "DELETE", "PATCH", "TRACE", "OPTIONS", "CONNECT", "BREW",
        ] {
            let req = Request {
                method: m,
                url: "/search",
                ..Request::default()
            };
            let r = call(&a, &req, &mut Fake::default());
            assert_eq!(r.status, 405, "{m}");
            assert_eq!(r.header("Allow"), Some("GET, HEAD"));
            assert_eq!(json(&r)["error"]["code"], "method_not_allowed");
        }
    }

    #[test]
    fn etag_and_if_none_match_give_304() {
        let a = api();
        let mut src = Fake {
            events: vec![(1, r#"{"id":"x"}"#.into())],
            ..Fake::default()
        };
        let r = call(&a, &get("/search"), &mut src);
        let etag = r.header("ETag").unwrap().to_string();
        let req = Request {
            if_none_match: Some(&etag),
            ..get("/search")
        };
        assert_eq!(call(&a, &req, &mut src).status, 304);
        // New data generation with a different answer: a new ETag.
        src.generation = 1;
        src.events.push((2, r#"{"id":"y"}"#.into()));
        let r = call(&a, &req, &mut src);
        assert_eq!(r.status, 200);
        assert_ne!(r.header("ETag").unwrap(), etag);
    }

    #[test]
    fn answers_are_cached_per_generation() {
        let a = api();
        let mut src = Fake::default();
        for _ in 0..3 {
            call(&a, &get("/search?starts_at=2021-01-01T00:00:00Z"), &mut src);
        }
        assert_eq!(src.searches, 1);
        src.generation = 7;
        call(&a, &get("/search?starts_at=2021-01-01T00:00:00Z"), &mut src);
        assert_eq!(src.searches, 2);
    }

    #[test]
    fn gzip_is_negotiated_and_decodes_to_the_same_body() {
        let a = api();
        let mut src = Fake {
            events: (0..50)
                .map(|i| (i, format!(r#"{{"id":"{i:040}"}}"#)))
                .collect(),
            ..Fake::default()
        };
        let plain = call(&a, &get("/search"), &mut src);
        let req = Request {
            accept_encoding: Some("br;q=0.5, gzip;q=0.8"),
            ..get("/search")
        };
        let gz = call(&a, &req, &mut src);
        assert_eq!(gz.header("Content-Encoding"), Some("gzip"));
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut out)
            .unwrap();
        assert_eq!(out, &plain.body[..]);
        let br = call(
            &a,
            &Request {
                accept_encoding: Some("gzip, br"),
                ..get("/search")
            },
            &mut src,
        );
        assert_eq!(br.header("Content-Encoding"), Some("br"));
        let mut out = Vec::new();
        brotli::BrotliDecompress(&mut &br.body[..], &mut out).unwrap();
        assert_eq!(out, &plain.body[..]);
        // One ETag per coding, each stable.
        assert_ne!(br.header("ETag"), gz.header("ETag"));
        assert_ne!(plain.header("ETag"), gz.header("ETag"));
    }

    #[test]
    fn accept_encoding_q_values_decide() {
        use Encoding::*;
        for (h, want) in [
            (None, Identity),
            (Some(""), Identity),
            (Some("gzip"), Gzip),
            (Some("x-gzip"), Gzip),
            (Some("gzip, deflate, br"), Br),
            (Some("br;q=0.5, gzip"), Gzip),
            (Some("br;q=0, gzip;q=0"), Identity),
            (Some("gzip;q=0"), Identity),
            (Some("*"), Br),
            (Some("*;q=0.1, gzip;q=0.5"), Gzip),
            (Some("identity;q=1, gzip;q=0.5"), Identity),
            (Some("identity"), Identity),
            (Some("deflate"), Identity),
            (Some("BR;Q=1.000"), Br),
            (Some("br;q=2, gzip;q=abc"), Identity),
            (Some("gzip;q=0.001"), Gzip),
        ] {
            assert_eq!(negotiate(h), want, "{h:?}");
        }
    }

    #[test]
    fn large_answers_stream_with_the_etag_a_small_request_would_get() {
        let a = api();
        let big = "x".repeat(1000);
        let mut src = Fake {
            events: (0..2000)
                .map(|i| (i, format!(r#"{{"id":"{i}","pad":"{big}"}}"#)))
                .collect(),
            ..Fake::default()
        };
        let first = a.handle(&get("/search"), &mut src);
        assert!(first.stream.is_some(), "a miss is streamed");
        for enc in [None, Some("gzip"), Some("br")] {
            let req = Request {
                accept_encoding: enc,
                ..get("/search")
            };
            let r = call(&a, &req, &mut src);
            assert_eq!(r.status, 200);
            let mut body = Vec::new();
            match enc {
                None => body.extend_from_slice(&r.body),
                Some("gzip") => {
                    flate2::read::GzDecoder::new(&r.body[..])
                        .read_to_end(&mut body)
                        .unwrap();
                }
                Some(_) => brotli::BrotliDecompress(&mut &r.body[..], &mut body).unwrap(),
            }
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["data"]["events"].as_array().unwrap().len(), 2000);
            // The 304 check before the body agrees with the streamed ETag.
            let etag = r.header("ETag").unwrap().to_string();
            let again = Request {
                if_none_match: Some(&etag),
                ..req
            };
            assert_eq!(a.handle(&again, &mut src).status, 304);
        }
        // Streamed once, then read whole and cached (under 4 MiB).
        assert_eq!(src.searches, 2);
    }

    #[test]
    fn an_answer_that_streamed_once_under_4_mib_is_cached_from_then_on() {
        let a = api();
        let pad = "y".repeat(1000);
        let mut src = Fake {
            events: (0..2000)
                .map(|i| (i, format!(r#"{{"id":"{i}","pad":"{pad}"}}"#)))
                .collect(),
            ..Fake::default()
        };
        let body = call(&a, &get("/search"), &mut src).body;
        assert!(body.len() > WHOLE_MAX_BYTES && body.len() < CACHE_MAX_BODY);
        for _ in 0..3 {
            assert_eq!(call(&a, &get("/search"), &mut src).body, body);
        }
        assert_eq!(src.searches, 2, "streamed, read whole once, then cached");
    }

    #[test]
    fn store_failures_are_503_not_500() {
        let r = call(
            &api(),
            &get("/search"),
            &mut Fake {
                broken: true,
                ..Fake::default()
            },
        );
        assert_eq!(r.status, 503);
        assert!(r.header("Retry-After").is_some());
        let msg = json(&r)["error"]["message"].as_str().unwrap().to_string();
        assert!(!msg.to_lowercase().contains("sql"), "{msg}");
    }

    #[test]
    fn metrics_move_to_their_own_listener_when_asked() {
        let metrics = Arc::new(Metrics::new());
        let main = Api::new(Tz::UTC, metrics.clone(), Arc::default()).without_metrics();
        let side = Api::metrics_only(metrics);
        let mut src = Fake::default();
        assert_eq!(call(&main, &get("/metrics"), &mut src).status, 404);
        assert_eq!(call(&main, &get("/search"), &mut src).status, 200);
        assert_eq!(call(&main, &get("/"), &mut src).status, 200);
        let m = call(&side, &get("/metrics"), &mut src);
        assert_eq!(m.status, 200);
        assert!(String::from_utf8_lossy(&m.body).contains("planbox_plans_searchable"));
        for path in [
            "/search",
            "/",
            "/health",
            "/ready",
            "/openapi.yaml",
            "/nope",
        ] {
            assert_eq!(call(&side, &get(path), &mut src).status, 404, "{path}");
        }
    }

    #[test]
    fn status_page_treats_empty_form_fields_as_unbounded() {
        let a = api();
        let mut src = Fake {
            events: vec![(1, r#"{"id":"x","title":"Shown","start_date":"2021-01-01","start_time":"10:00:00","end_date":null,"end_time":null,"min_price":null,"max_price":null}"#.into())],
            ..Fake::default()
        };
        let page = call(&a, &get("/?starts_at=&ends_at="), &mut src);
        let html = String::from_utf8_lossy(&page.body);
        assert!(html.contains("1 plan(s)"), "{html}");
        let page = call(&a, &get("/?starts_at=nope&ends_at="), &mut src);
        assert!(String::from_utf8_lossy(&page.body).contains("starts_at: not a date-time"));
    }

    #[test]
    fn operator_endpoints_answer() {
        let a = api();
        a.metrics().observe_fetch(Outcome::Ok, 5);
        let mut src = Fake::default();
        assert_eq!(call(&a, &get("/health"), &mut src).status, 200);
        assert_eq!(call(&a, &get("/ready"), &mut src).status, 200);
        let m = call(&a, &get("/metrics"), &mut src);
        assert!(String::from_utf8_lossy(&m.body).contains("planbox_fetch_runs_total"));
        let o = call(&a, &get("/openapi.yaml"), &mut src);
        assert!(String::from_utf8_lossy(&o.body).contains("/search"));
        let s = call(&a, &get("/"), &mut src);
        assert_eq!(s.header("Content-Type"), Some("text/html; charset=utf-8"));
        let broken = &mut Fake {
            broken: true,
            ..Fake::default()
        };
        assert_eq!(call(&a, &get("/ready"), broken).status, 503);
    }
}
