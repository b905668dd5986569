//! The HTTP API as a function: request in, response out (PRODUCT.md §3).
//!
//! Owns routing, the upstream envelope and error codes, `ETag` /
//! `If-None-Match`, gzip negotiation, and the answer cache keyed by data
//! generation and window. It reads data only through [`Source`], so it is
//! testable without sockets or files. It must not touch sockets, spawn
//! threads, or let any input reach a panic, a 500 or a message with SQL text.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use chrono_tz::Tz;

pub use super::answer::{negotiate, Encoding, VERSION_TTL, WHOLE_MAX_BYTES};
use super::answer::{
    search_cache_control, search_etag, search_headers, validator_headers, whole, AnswerCache,
    Counting, Rendered, VersionCache, BROTLI_STREAM_LGWIN, BROTLI_STREAM_QUALITY, CACHE_MAX_BODY,
};
pub use super::events::{decode_events, for_each_event, EventRow};
use crate::metrics::{Metrics, Route};
use crate::model::{FetchRun, ProviderWindow, SearchQuery};
use crate::query::{parse_search, parse_search_query};
use crate::service::ServiceInfo;
use crate::store::{
    DataVersion, MonthCount, Reader, Snapshot, StoreCounts, StoreError, StoreSpace,
};

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
    /// [`Reader::stream`]; over several providers, `q.parts`, the k-way
    /// merge by instant).
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
    /// The newest runs of one provider.
    fn runs_of(&mut self, provider: &str, limit: usize) -> Result<Vec<FetchRun>, StoreError> {
        let mut runs = self.runs(limit.saturating_mul(8))?;
        runs.retain(|r| r.provider == provider);
        runs.truncate(limit);
        Ok(runs)
    }
    /// Searchable plans by provider and month (the status page's histogram).
    fn plans_per_month(&mut self) -> Result<Vec<MonthCount>, StoreError> {
        Ok(Vec::new())
    }
    /// Each provider's counts (none known: empty).
    fn provider_counts(&mut self) -> Result<BTreeMap<String, StoreCounts>, StoreError> {
        Ok(BTreeMap::new())
    }
    /// The store's files on disk (`None`: not known here).
    fn space(&mut self) -> Option<StoreSpace> {
        None
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
    fn runs_of(&mut self, provider: &str, limit: usize) -> Result<Vec<FetchRun>, StoreError> {
        Reader::runs_of(self, provider, limit)
    }
    fn plans_per_month(&mut self) -> Result<Vec<MonthCount>, StoreError> {
        Reader::plans_per_month(self)
    }
    fn provider_counts(&mut self) -> Result<BTreeMap<String, StoreCounts>, StoreError> {
        Reader::provider_counts(self)
    }
    fn space(&mut self) -> Option<StoreSpace> {
        // Unreadable (a vanished directory): the series are left out, which
        // the disk alerts' `absent()` notices.
        StoreSpace::of(self.path()).ok()
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
    /// uncompressed and ended by closing the connection.
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
    /// A `HEAD`: the head only, and nothing of the body is read.
    head: bool,
}

/// What [`Api::stream`] hands the server: a whole answer (small enough to
/// be cached), or headers and a body of unknown length (sent chunked, or
/// to HTTP/1.0 ended by closing the connection).
pub enum Streamed<'a> {
    Whole(Response),
    Body {
        headers: Vec<(&'static str, String)>,
        body: &'a mut dyn Read,
    },
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
    pub const BAD_REQUEST: &str = "bad_request";
    pub const LENGTH_REQUIRED: &str = "length_required";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const OVERLOADED: &str = "overloaded";
    pub const NOT_READY: &str = "not_ready";
    pub const STORE_DAMAGED: &str = "store_damaged";
    pub const INTERNAL: &str = "internal";
}

pub(crate) const JSON: &str = "application/json";

/// The error envelope `{"data": null, "error": {"code", "message"}}`.
pub fn error_response(status: u16, route: Route, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"data": null, "error": {"code": code, "message": message}});
    Response {
        status,
        route,
        // A 429 is one client's, a 503 one moment's: no cache keeps either.
        headers: vec![("Content-Type", JSON.into()), no_store()],
        body: body.to_string().into_bytes().into(),
        stream: None,
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
    /// Whether the status page `/` is served here (false when it has its
    /// own listener, `--status-listen`).
    serve_status: bool,
    /// Searchable plans per month, computed once per data generation.
    months: Mutex<Option<(u64, Arc<Vec<MonthCount>>)>>,
    /// Every provider a search covers, with its zone (empty: the store's
    /// plans all in `tz`, searched as one).
    providers: Vec<(String, Tz)>,
    /// `Cache-Control` of `/search` answers and their 304s.
    search_cache_control: String,
}

/// `Cache-Control` of what describes this moment of this process (status
/// page, metrics, health, errors): never kept by a cache in front.
fn no_store() -> (&'static str, String) {
    ("Cache-Control", "no-store".into())
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
            serve_status: true,
            months: Mutex::new(None),
            providers: Vec::new(),
            search_cache_control: search_cache_control(DEFAULT_CACHE_MAX_AGE),
        }
    }

    /// How long a cache in front may reuse a `/search` answer (see
    /// [`super::answer::search_cache_control`]).
    pub fn with_cache_max_age(mut self, max_age: std::time::Duration) -> Api {
        self.search_cache_control = search_cache_control(max_age);
        self
    }

    /// The providers searches cover, each with its zone. While they all
    /// share `tz` and no `provider=` is asked for, a search is one window
    /// in that zone (the store's order is then the answer order); otherwise
    /// each provider is searched in its own zone and the plans are merged by
    /// instant (PRODUCT.md §8).
    pub fn with_providers(mut self, providers: Vec<(String, Tz)>) -> Api {
        self.providers = providers;
        self
    }

    /// Parses a `/search` query (also the status page's form) into what to
    /// read: `provider=NAME`, the time bounds and the page. Over one zone
    /// and no `provider=`, `parts` stays empty (one window, the store's
    /// order); otherwise each provider gets its window in its own zone and
    /// the `after` cursor holds instants.
    fn plan_search(&self, query: &str) -> Result<SearchQuery, String> {
        let provider = provider_param(query)?;
        let mut q = parse_search(query, self.tz).map_err(|e| e.message)?;
        if let Some(name) = &provider {
            if !self.providers.iter().any(|(n, _)| n == name) {
                let known: Vec<&str> = self.providers.iter().map(|(n, _)| n.as_str()).collect();
                return Err(format!(
                    "provider: no provider named `{}` here; known: {}",
                    short(name),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
        }
        if provider.is_none() && self.providers.iter().all(|(_, tz)| *tz == self.tz) {
            return Ok(q);
        }
        for (name, tz) in &self.providers {
            if provider.as_ref().is_some_and(|p| p != name) {
                continue;
            }
            q.parts.push(ProviderWindow {
                provider: name.clone(),
                tz: *tz,
                window: parse_search_query(query, *tz).map_err(|e| e.message)?,
            });
        }
        Ok(q)
    }

    /// The same API without the status page (a 404 here): it is served on
    /// its own listener instead (`--status-listen`).
    pub fn without_status(mut self) -> Api {
        self.serve_status = false;
        self
    }

    /// The API of an operator listener: `/metrics` and/or the status page
    /// and nothing else (every other path is a 404).
    pub fn side(
        tz: Tz,
        metrics: Arc<Metrics>,
        info: Arc<ServiceInfo>,
        metrics_here: bool,
        status_here: bool,
    ) -> Api {
        Api {
            serve_metrics: metrics_here,
            serve_status: status_here,
            only_metrics: true,
            ..Api::new(tz, metrics, info)
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
            serve_status: false,
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
            "/" if self.serve_status => Some(Route::Status),
            _ if self.only_metrics => None,
            "/search" => Some(Route::Search),
            "/health" => Some(Route::Health),
            "/ready" => Some(Route::Ready),
            "/openapi.yaml" => Some(Route::OpenApi),
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
                if self.info.store_check.damaged() {
                    unavailable(
                        route,
                        code::STORE_DAMAGED,
                        &format!(
                            "the integrity check found the store damaged (details in the log \
                             and on the status page); {}",
                            crate::check_state::DAMAGE_ADVICE
                        ),
                    )
                } else if src.ready() {
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
        let q = match self.plan_search(query) {
            Ok(q) => q,
            Err(message) => return error_response(400, route, code::INVALID_PARAMETER, &message),
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
                headers: validator_headers(etag, &self.search_cache_control),
                body: Bytes::from(&[][..]),
                stream: None,
            };
        }
        if let Some(hit) = self.cache.get(version.generation, &q) {
            return whole(&hit, etag, &self.search_cache_control, encoding, query);
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
                head: req.method == "HEAD",
            })),
        }
    }

    /// Reads the answer of `s` from one snapshot of `src`. An answer of at
    /// most [`WHOLE_MAX_BYTES`] is cached and handed to `send` whole; a
    /// larger one is handed over as headers and a body reader (compressed
    /// on the fly) that pulls rows from the snapshot as `send` reads it.
    /// Its `ETag` comes from the same snapshot as its rows. A `HEAD` reads
    /// no row: its headers say neither the length nor the coding the body
    /// would have.
    pub fn stream(
        &self,
        s: &SearchStream,
        src: &mut dyn Source,
        send: &mut dyn FnMut(Streamed<'_>) -> io::Result<()>,
    ) -> Result<io::Result<()>, StoreError> {
        if s.head {
            return src.stream(&s.query, &mut |snap, _| {
                let etag = search_etag(&snap.version, &s.query, s.encoding);
                send(Streamed::Body {
                    headers: search_headers(
                        etag,
                        &self.search_cache_control,
                        snap.next.as_ref(),
                        &s.raw_query,
                    ),
                    body: &mut io::empty(),
                })
            });
        }
        src.stream(&s.query, &mut |snap, rows| {
            let etag = search_etag(&snap.version, &s.query, s.encoding);
            let limit = self.cache.whole_limit(snap.version.generation, &s.query);
            let mut prefix = Vec::new();
            rows.take(limit as u64 + 1).read_to_end(&mut prefix)?;
            if prefix.len() <= limit {
                let (r, _) = self.keep(snap, &s.query, prefix);
                return send(Streamed::Whole(whole(
                    &r,
                    etag,
                    &self.search_cache_control,
                    s.encoding,
                    &s.raw_query,
                )));
            }
            let mut rest = Counting {
                inner: rows,
                n: prefix.len() as u64,
                eof: false,
            };
            let rows = &mut rest;
            let mut headers = search_headers(
                etag,
                &self.search_cache_control,
                snap.next.as_ref(),
                &s.raw_query,
            );
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
            .map_err(StoreError::from_read)?;
        Ok(body.into())
    }

    fn metrics_page(&self, route: Route, src: &mut dyn Source) -> Response {
        if let Ok(c) = src.counts() {
            self.metrics.set_plans_searchable(c.plans_searchable);
        }
        if let Ok(by_provider) = src.provider_counts() {
            for (name, c) in by_provider {
                self.metrics
                    .set_provider_plans_searchable(&name, c.plans_searchable);
            }
        }
        self.metrics
            .set_store_space(src.space().map(|s| (s.db, s.wal, s.fs_avail, s.fs_size)));
        let mut text = self.metrics.render();
        crate::metrics::render_store_check(&mut text, &self.info.store_check.get());
        Response {
            status: 200,
            route,
            headers: vec![
                (
                    "Content-Type",
                    "text/plain; version=0.0.4; charset=utf-8".into(),
                ),
                no_store(),
            ],
            body: text.into_bytes().into(),
            stream: None,
        }
    }

    /// Searchable plans per provider and month, read once per generation
    /// (it reads one small index entry per searchable plan); `None` when
    /// the store cannot be read.
    fn months(&self, src: &mut dyn Source) -> Option<Arc<Vec<MonthCount>>> {
        let generation = readable("the data version", src.version())?.generation;
        if let Ok(cached) = self.months.lock() {
            if let Some((g, m)) = cached.as_ref() {
                if *g == generation {
                    return Some(m.clone());
                }
            }
        }
        let fresh = Arc::new(readable("plans per month", src.plans_per_month())?);
        if let Ok(mut cached) = self.months.lock() {
            *cached = Some((generation, fresh.clone()));
        }
        Some(fresh)
    }

    fn status_page(&self, route: Route, query: &str, src: &mut dyn Source) -> Response {
        // A form field left empty means "unbounded" here (the API itself
        // answers 400 to an empty value).
        let form = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.ends_with('='))
            .collect::<Vec<_>>()
            .join("&");
        let months = self.months(src);
        let by_provider = readable("counts per provider", src.provider_counts());
        let providers = self
            .info
            .providers
            .iter()
            .map(|p| crate::status_page::ProviderPanel {
                info: p,
                last_success: self.metrics.last_success(&p.name),
                counts: by_provider.as_ref().and_then(|c| c.get(&p.name).copied()),
                runs: readable("the journal", src.runs_of(&p.name, 40)),
                months: months.as_ref().map(|months| {
                    months
                        .iter()
                        .filter(|m| m.provider == p.name)
                        .map(|m| (m.month.clone(), m.plans))
                        .collect()
                }),
            })
            .collect();
        let html = crate::status_page::render(&crate::status_page::PageInput {
            info: &self.info,
            providers,
            counts: readable("the store's counts", src.counts()),
            runs: readable("the journal", src.runs(20)),
            query,
            search: if query.is_empty() {
                None
            } else {
                Some(self.plan_search(&form).and_then(|q| {
                    // Enough to show the first 1000 and say there are more.
                    let q = SearchQuery {
                        limit: Some(1001),
                        after: None,
                        ..q
                    };
                    self.first_page(q, src)
                        .map_err(|_| "the store cannot be read right now".into())
                }))
            },
            metrics_here: self.serve_metrics,
            store_check: self.info.store_check.get(),
            search_here: !self.only_metrics,
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
                no_store(),
            ],
            body: html.into_bytes().into(),
            stream: None,
        }
    }
}

/// The `--cache-max-age` of an API built without one: `serve`'s default
/// fetch interval.
pub const DEFAULT_CACHE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// The served OpenAPI document.
pub const OPENAPI: &str = include_str!("../../assets/openapi.yaml");

fn unreachable_route() -> Response {
    error_response(404, Route::Other, code::NOT_FOUND, "no such path")
}

/// A value the status page shows, or `None` (the page says the store cannot
/// be read) with the error logged: never shown as if there were nothing.
fn readable<T>(what: &str, r: Result<T, StoreError>) -> Option<T> {
    r.map_err(|e| {
        crate::log::warn(&format!(
            "status page: cannot read {what}: {}",
            crate::log::chain(&e)
        ))
    })
    .ok()
}

/// A store failure while answering `/search`: 503, logged, no SQL text.
pub fn store_failed(e: &StoreError) -> Response {
    crate::log::error(&format!("search failed: {}", crate::log::chain(e)));
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
        headers: vec![("Content-Type", JSON.into()), no_store()],
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

/// The `provider` parameter: absent, or one non-empty name.
fn provider_param(query: &str) -> Result<Option<String>, String> {
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if crate::percent::decode(k).ok().as_deref() != Some("provider") {
            continue;
        }
        if found.is_some() {
            return Err("provider: given more than once; give one provider name".into());
        }
        let v = crate::percent::decode(v)
            .map_err(|e| format!("provider: {e}; expected a provider name"))?;
        if v.is_empty() {
            return Err("provider: empty value; expected a provider name".into());
        }
        found = Some(v);
    }
    Ok(found)
}

/// At most 64 characters of untrusted text for messages.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
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
            // Over providers: the first part's window (one provider's events).
            let w = q.parts.first().map_or(q.window, |p| p.window);
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
            if self.broken {
                return Err(StoreError::Busy);
            }
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
    fn status_page_says_the_store_is_unreadable_rather_than_empty() {
        let info = ServiceInfo {
            providers: vec![crate::service::ProviderInfo {
                name: "p".into(),
                ..Default::default()
            }],
            ..ServiceInfo::default()
        };
        let a = Api::new(Tz::UTC, Arc::default(), Arc::new(info));
        let page = call(&a, &get("/"), &mut Fake::default());
        let html = String::from_utf8_lossy(&page.body);
        assert!(html.contains("No fetch yet."), "{html}");
        assert!(!html.contains("cannot be read"), "{html}");
        let broken = &mut Fake {
            broken: true,
            ..Fake::default()
        };
        let page = call(&a, &get("/"), broken);
        assert_eq!(page.status, 200);
        let html = String::from_utf8_lossy(&page.body);
        assert!(!html.contains("No fetch yet."), "{html}");
        assert!(!html.contains("No searchable plan."), "{html}");
        // The journal table, the provider's timeline and its histogram.
        assert_eq!(
            html.matches("The store cannot be read right now.").count(),
            3,
            "{html}"
        );
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
        a.metrics().observe_fetch("provider", Outcome::Ok, 5);
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
        // A store the background check found damaged: not ready, and why.
        a.info
            .store_check
            .update(|c| c.damage = Some("page 7".into()));
        let r = call(&a, &get("/ready"), &mut src);
        assert_eq!(r.status, 503);
        let text = String::from_utf8_lossy(&r.body);
        assert!(text.contains("store_damaged"), "{text}");
        assert!(text.contains("restore the newest backup"), "{text}");
        assert_eq!(call(&a, &get("/health"), &mut src).status, 200);
    }
}
