//! The HTTP API as a function: request in, response out (PRODUCT.md §3).
//!
//! Owns routing, the upstream envelope and error codes, `ETag` /
//! `If-None-Match`, gzip negotiation, and the answer cache keyed by data
//! generation and window. It reads data only through [`Source`], so it is
//! testable without sockets or files. It must not touch sockets, spawn
//! threads, or let any input reach a panic, a 500 or a message with SQL text.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use chrono_tz::Tz;

use crate::digest::digest;

use crate::metrics::{Metrics, Route};
use crate::model::{FetchRun, ProviderWindow, Window};
use crate::query::parse_search_query;
use crate::service::ServiceInfo;
use crate::store::{Answer, MonthCount, Reader, StoreCounts, StoreError};

/// Cheaply shareable response bytes.
pub type Bytes = Arc<[u8]>;

/// What the API needs from the store. Implemented by [`Reader`]; tests can
/// substitute a fake.
pub trait Source {
    fn generation(&mut self) -> Result<u64, StoreError>;
    fn search(&mut self, window: &Window) -> Result<Answer, StoreError>;
    /// Several providers, each window in its provider's local seconds,
    /// merged by instant (see `store::Reader::search_providers`).
    fn search_providers(&mut self, parts: &[ProviderWindow]) -> Result<Answer, StoreError>;
    fn counts(&mut self) -> Result<StoreCounts, StoreError>;
    fn runs(&mut self, limit: usize) -> Result<Vec<FetchRun>, StoreError>;
    fn ready(&mut self) -> bool {
        self.generation().is_ok()
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
}

impl Source for Reader {
    fn generation(&mut self) -> Result<u64, StoreError> {
        Reader::generation(self)
    }
    fn search(&mut self, window: &Window) -> Result<Answer, StoreError> {
        Reader::search(self, window)
    }
    fn search_providers(&mut self, parts: &[ProviderWindow]) -> Result<Answer, StoreError> {
        Reader::search_providers(self, parts)
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
}

/// The parts of an HTTP request the API looks at.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query, as received (`/search?starts_at=...`).
    pub url: &'a str,
    pub accept_encoding: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub route: Route,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
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
    }
}

/// A rendered `/search` answer, shared by every request for the same window
/// and data generation.
#[derive(Debug)]
struct Rendered {
    body: Bytes,
    etag: String,
    gzip: OnceLock<Bytes>,
}

impl Rendered {
    fn new(body: Vec<u8>) -> Rendered {
        Rendered {
            etag: format!("\"{:016x}\"", digest(&body)),
            body: body.into(),
            gzip: OnceLock::new(),
        }
    }

    fn gzipped(&self) -> &Bytes {
        self.gzip.get_or_init(|| {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(self.body.len() / 4 + 64),
                flate2::Compression::fast(),
            );
            // Writing into a Vec cannot fail.
            let _ = enc.write_all(&self.body);
            enc.finish().unwrap_or_default().into()
        })
    }
}

/// Answers of the current generation by window (or, over providers in
/// several zones, by their windows). Bounded by entries and bytes; a new
/// generation empties it.
#[derive(Default)]
struct AnswerCache<K = Window> {
    generation: AtomicU64,
    inner: Mutex<CacheInner<K>>,
}

#[derive(Default)]
struct CacheInner<K> {
    generation: u64,
    bytes: usize,
    map: HashMap<K, Arc<Rendered>>,
}

const CACHE_MAX_ENTRIES: usize = 4096;
const CACHE_MAX_BYTES: usize = 64 << 20;
const CACHE_MAX_BODY: usize = 4 << 20;
/// Bodies smaller than this are sent uncompressed (gzip would not pay).
const GZIP_MIN_BYTES: usize = 512;

impl<K: Eq + std::hash::Hash> AnswerCache<K> {
    fn get(&self, generation: u64, window: &K) -> Option<Arc<Rendered>> {
        if self.generation.load(Relaxed) != generation {
            return None;
        }
        let inner = self.inner.lock().ok()?;
        (inner.generation == generation)
            .then(|| inner.map.get(window).cloned())
            .flatten()
    }

    fn put(&self, generation: u64, window: K, r: &Arc<Rendered>) {
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
            inner.bytes = 0;
            inner.generation = generation;
            self.generation.store(generation, Relaxed);
        }
        inner.bytes += r.body.len();
        inner.map.insert(window, r.clone());
    }
}

/// The API: configuration plus shared caches and metrics. One per server,
/// shared by all workers.
pub struct Api {
    tz: Tz,
    cache: AnswerCache,
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
    /// Answers over providers in several zones, or of one provider.
    cache_many: AnswerCache<Vec<ProviderWindow>>,
}

/// How one `/search` query is answered.
enum SearchPlan {
    /// Every plan in one zone: one window of local seconds.
    One(Window),
    /// Per provider, its window in its own zone; merged by instant.
    Many(Vec<ProviderWindow>),
}

impl Api {
    pub fn new(tz: Tz, metrics: Arc<Metrics>, info: Arc<ServiceInfo>) -> Api {
        Api {
            tz,
            cache: AnswerCache::default(),
            metrics,
            info,
            serve_metrics: true,
            only_metrics: false,
            serve_status: true,
            months: Mutex::new(None),
            providers: Vec::new(),
            cache_many: AnswerCache::default(),
        }
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
    /// read: `provider=NAME` and the time bounds.
    fn plan_search(&self, query: &str) -> Result<SearchPlan, String> {
        let provider = provider_param(query)?;
        let window = parse_search_query(query, self.tz).map_err(|e| e.message)?;
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
            return Ok(SearchPlan::One(window));
        }
        let mut parts = Vec::new();
        for (name, tz) in &self.providers {
            if provider.as_ref().is_some_and(|p| p != name) {
                continue;
            }
            parts.push(ProviderWindow {
                provider: name.clone(),
                tz: *tz,
                window: parse_search_query(query, *tz).map_err(|e| e.message)?,
            });
        }
        Ok(SearchPlan::Many(parts))
    }

    /// [`Api::answer`] for a search over several providers.
    fn answer_many(
        &self,
        parts: Vec<ProviderWindow>,
        src: &mut dyn Source,
    ) -> Result<Arc<Rendered>, StoreError> {
        let generation = src.generation()?;
        if let Some(hit) = self.cache_many.get(generation, &parts) {
            return Ok(hit);
        }
        let answer = src.search_providers(&parts)?;
        let rendered = Arc::new(Rendered::new(answer.body));
        self.cache_many.put(answer.generation, parts, &rendered);
        Ok(rendered)
    }

    fn answer_plan(
        &self,
        plan: SearchPlan,
        src: &mut dyn Source,
    ) -> Result<Arc<Rendered>, StoreError> {
        match plan {
            SearchPlan::One(w) => self.answer(&w, src),
            SearchPlan::Many(parts) => self.answer_many(parts, src),
        }
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
            },
            Route::Status => self.status_page(route, query, src),
            Route::Other => unreachable_route(),
        }
    }

    /// Looks the window up in the cache, or reads it from the store.
    fn answer(&self, window: &Window, src: &mut dyn Source) -> Result<Arc<Rendered>, StoreError> {
        let generation = src.generation()?;
        if let Some(hit) = self.cache.get(generation, window) {
            return Ok(hit);
        }
        let answer = src.search(window)?;
        let rendered = Arc::new(Rendered::new(answer.body));
        self.cache.put(answer.generation, *window, &rendered);
        Ok(rendered)
    }

    fn search(&self, req: &Request<'_>, query: &str, src: &mut dyn Source) -> Response {
        let route = Route::Search;
        let plan = match self.plan_search(query) {
            Ok(p) => p,
            Err(message) => return error_response(400, route, code::INVALID_PARAMETER, &message),
        };
        let rendered = match self.answer_plan(plan, src) {
            Ok(r) => r,
            Err(e) => {
                crate::log::error(&format!("search failed: {e}"));
                return unavailable(route, code::NOT_READY, "the store cannot be read right now");
            }
        };
        let mut headers = vec![
            ("Content-Type", JSON.to_string()),
            ("ETag", rendered.etag.clone()),
            ("Vary", "Accept-Encoding".into()),
            ("Cache-Control", "no-cache".into()),
        ];
        if req
            .if_none_match
            .is_some_and(|inm| etag_matches(inm, &rendered.etag))
        {
            headers.retain(|(k, _)| *k != "Content-Type");
            return Response {
                status: 304,
                route,
                headers,
                body: Bytes::from(&[][..]),
            };
        }
        let body = if rendered.body.len() >= GZIP_MIN_BYTES
            && req.accept_encoding.is_some_and(accepts_gzip)
        {
            headers.push(("Content-Encoding", "gzip".into()));
            rendered.gzipped().clone()
        } else {
            rendered.body.clone()
        };
        Response {
            status: 200,
            route,
            headers,
            body,
        }
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
        Response {
            status: 200,
            route,
            headers: vec![(
                "Content-Type",
                "text/plain; version=0.0.4; charset=utf-8".into(),
            )],
            body: self.metrics.render().into_bytes().into(),
        }
    }

    /// Searchable plans per provider and month, read once per generation
    /// (it reads one small index entry per searchable plan).
    fn months(&self, src: &mut dyn Source) -> Arc<Vec<MonthCount>> {
        let Ok(generation) = src.generation() else {
            return Arc::default();
        };
        if let Ok(cached) = self.months.lock() {
            if let Some((g, m)) = cached.as_ref() {
                if *g == generation {
                    return m.clone();
                }
            }
        }
        let fresh = Arc::new(src.plans_per_month().unwrap_or_default());
        if let Ok(mut cached) = self.months.lock() {
            *cached = Some((generation, fresh.clone()));
        }
        fresh
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
        let by_provider = src.provider_counts().unwrap_or_default();
        let providers = self
            .info
            .providers
            .iter()
            .map(|p| crate::status_page::ProviderPanel {
                info: p,
                last_success: self.metrics.last_success(&p.name),
                counts: by_provider.get(&p.name).copied(),
                runs: src.runs_of(&p.name, 40).unwrap_or_default(),
                months: months
                    .iter()
                    .filter(|m| m.provider == p.name)
                    .map(|m| (m.month.clone(), m.plans))
                    .collect(),
            })
            .collect();
        let html = crate::status_page::render(&crate::status_page::PageInput {
            info: &self.info,
            providers,
            counts: src.counts().ok(),
            runs: src.runs(20).unwrap_or_default(),
            query,
            search: if query.is_empty() {
                None
            } else {
                Some(self.plan_search(&form).and_then(|plan| {
                    self.answer_plan(plan, src)
                        .map(|r| r.body.clone())
                        .map_err(|_| "the store cannot be read right now".into())
                }))
            },
            metrics_here: self.serve_metrics,
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
            ],
            body: html.into_bytes().into(),
        }
    }
}

/// The served OpenAPI document.
pub const OPENAPI: &str = include_str!("../assets/openapi.yaml");

fn unreachable_route() -> Response {
    error_response(404, Route::Other, code::NOT_FOUND, "no such path")
}

fn json_ok(route: Route, body: &'static str) -> Response {
    Response {
        status: 200,
        route,
        headers: vec![("Content-Type", JSON.into())],
        body: Bytes::from(body.as_bytes()),
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
        if crate::query::percent_decode(k).ok().as_deref() != Some("provider") {
            continue;
        }
        if found.is_some() {
            return Err("provider: given more than once; give one provider name".into());
        }
        let v = crate::query::percent_decode(v)
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

/// `Accept-Encoding` allows gzip (`gzip`, `x-gzip` or `*`, with q > 0).
pub fn accepts_gzip(header: &str) -> bool {
    header.split(',').any(|item| {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q_zero = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .or_else(|| p.strip_prefix("Q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") || name == "*")
            && !q_zero
    })
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
        fn generation(&mut self) -> Result<u64, StoreError> {
            if self.broken {
                return Err(StoreError::Busy);
            }
            Ok(self.generation)
        }
        fn search(&mut self, w: &Window) -> Result<Answer, StoreError> {
            self.searches += 1;
            let items: Vec<&str> = self
                .events
                .iter()
                .filter(|(s, _)| w.starts_at.is_none_or(|lo| *s >= lo) && !w.is_empty())
                .map(|(_, e)| e.as_str())
                .collect();
            Ok(Answer {
                generation: self.generation,
                body: format!(
                    r#"{{"data":{{"events":[{}]}},"error":null}}"#,
                    items.join(",")
                )
                .into_bytes(),
            })
        }
        fn search_providers(&mut self, parts: &[ProviderWindow]) -> Result<Answer, StoreError> {
            // One provider's events: its part's window.
            let w = parts.first().map(|p| p.window).unwrap_or_default();
            self.search(&w)
        }
        fn counts(&mut self) -> Result<StoreCounts, StoreError> {
            Ok(StoreCounts::default())
        }
        fn runs(&mut self, _: usize) -> Result<Vec<FetchRun>, StoreError> {
            Ok(vec![])
        }
    }

    fn api() -> Api {
        Api::new(Tz::UTC, Arc::default(), Arc::default())
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
        let r = api().handle(&get("/search?starts_at=nope"), &mut Fake::default());
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
        let r = a.handle(&get("/nope"), &mut Fake::default());
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
            let r = a.handle(&req, &mut Fake::default());
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
        let r = a.handle(&get("/search"), &mut src);
        let etag = r.header("ETag").unwrap().to_string();
        let req = Request {
            if_none_match: Some(&etag),
            ..get("/search")
        };
        assert_eq!(a.handle(&req, &mut src).status, 304);
        // New data generation with a different answer: a new ETag.
        src.generation = 1;
        src.events.push((2, r#"{"id":"y"}"#.into()));
        let r = a.handle(&req, &mut src);
        assert_eq!(r.status, 200);
        assert_ne!(r.header("ETag").unwrap(), etag);
    }

    #[test]
    fn answers_are_cached_per_generation() {
        let a = api();
        let mut src = Fake::default();
        for _ in 0..3 {
            a.handle(&get("/search?starts_at=2021-01-01T00:00:00Z"), &mut src);
        }
        assert_eq!(src.searches, 1);
        src.generation = 7;
        a.handle(&get("/search?starts_at=2021-01-01T00:00:00Z"), &mut src);
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
        let plain = a.handle(&get("/search"), &mut src);
        let req = Request {
            accept_encoding: Some("br;q=1.0, gzip;q=0.8"),
            ..get("/search")
        };
        let gz = a.handle(&req, &mut src);
        assert_eq!(gz.header("Content-Encoding"), Some("gzip"));
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut out)
            .unwrap();
        assert_eq!(out, &plain.body[..]);
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
        assert!(accepts_gzip("*"));
    }

    #[test]
    fn store_failures_are_503_not_500() {
        let r = api().handle(
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
        assert_eq!(main.handle(&get("/metrics"), &mut src).status, 404);
        assert_eq!(main.handle(&get("/search"), &mut src).status, 200);
        assert_eq!(main.handle(&get("/"), &mut src).status, 200);
        let m = side.handle(&get("/metrics"), &mut src);
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
            assert_eq!(side.handle(&get(path), &mut src).status, 404, "{path}");
        }
    }

    #[test]
    fn status_page_treats_empty_form_fields_as_unbounded() {
        let a = api();
        let mut src = Fake {
            events: vec![(1, r#"{"id":"x","title":"Shown","start_date":"2021-01-01","start_time":"10:00:00","end_date":null,"end_time":null,"min_price":null,"max_price":null}"#.into())],
            ..Fake::default()
        };
        let page = a.handle(&get("/?starts_at=&ends_at="), &mut src);
        let html = String::from_utf8_lossy(&page.body);
        assert!(html.contains("1 plan(s)"), "{html}");
        let page = a.handle(&get("/?starts_at=nope&ends_at="), &mut src);
        assert!(String::from_utf8_lossy(&page.body).contains("starts_at: not a date-time"));
    }

    #[test]
    fn operator_endpoints_answer() {
        let a = api();
        a.metrics().observe_fetch("provider", Outcome::Ok, 5);
        let mut src = Fake::default();
        assert_eq!(a.handle(&get("/health"), &mut src).status, 200);
        assert_eq!(a.handle(&get("/ready"), &mut src).status, 200);
        let m = a.handle(&get("/metrics"), &mut src);
        assert!(String::from_utf8_lossy(&m.body).contains("planbox_fetch_runs_total"));
        let o = a.handle(&get("/openapi.yaml"), &mut src);
        assert!(String::from_utf8_lossy(&o.body).contains("/search"));
        let s = a.handle(&get("/"), &mut src);
        assert_eq!(s.header("Content-Type"), Some("text/html; charset=utf-8"));
        let broken = &mut Fake {
            broken: true,
            ..Fake::default()
        };
        assert_eq!(a.handle(&get("/ready"), broken).status, 503);
    }
}
