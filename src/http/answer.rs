//! The `/search` answer apart from routing: the answer cache and the data
//! version cache, `ETag`s derived from the data, `Accept-Encoding`
//! negotiation and compressed bytes, the headers of an answer and the
//! `Link` of the next page.
//!
//! Must not touch sockets, threads or SQL (the store is reached through
//! [`super::api::Source`] only).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use super::api::{Bytes, Response, Source, JSON};
use crate::digest::Digest;
use crate::metrics::Route;
use crate::model::SearchQuery;
use crate::query::encode_cursor;
use crate::store::{DataVersion, StoreError};

/// A content coding of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Identity,
    Gzip,
    Br,
}

impl Encoding {
    pub(crate) fn token(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Br => Some("br"),
        }
    }
}

/// A `/search` answer in memory, shared by every request for the same
/// query and data generation.
#[derive(Debug)]
pub(crate) struct Rendered {
    body: Bytes,
    /// Where the next page starts (a `limit` query with more plans left).
    next: Option<crate::model::Position>,
    gzip: OnceLock<Bytes>,
    br: OnceLock<Bytes>,
}

impl Rendered {
    pub(crate) fn new(body: Vec<u8>, next: Option<crate::model::Position>) -> Rendered {
        Rendered {
            body: body.into(),
            next,
            gzip: OnceLock::new(),
            br: OnceLock::new(),
        }
    }

    /// The body in `enc`, compressed once and kept. A failed compression
    /// is not kept: the next request tries again.
    pub(crate) fn encoded(&self, enc: Encoding) -> io::Result<&Bytes> {
        let slot = match enc {
            Encoding::Identity => return Ok(&self.body),
            Encoding::Gzip => &self.gzip,
            Encoding::Br => &self.br,
        };
        if let Some(b) = slot.get() {
            return Ok(b);
        }
        let mut out = Vec::with_capacity(self.body.len() / 4 + 64);
        compress(enc, &self.body, &mut out)?;
        Ok(slot.get_or_init(|| out.into()))
    }
}

/// `body` compressed as `enc` (the cached codings' settings) into `out`.
fn compress(enc: Encoding, body: &[u8], out: &mut dyn Write) -> io::Result<()> {
    match enc {
        Encoding::Identity => out.write_all(body),
        Encoding::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            gz.write_all(body)?;
            gz.finish().map(drop)
        }
        Encoding::Br => {
            let params = brotli::enc::BrotliEncoderParams {
                quality: BROTLI_CACHED_QUALITY,
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &body[..], &mut &mut *out, &params).map(drop)
        }
    }
}

/// Answers of the current generation by query. Bounded by entries and
/// bytes; a new generation empties it.
#[derive(Default)]
pub(crate) struct AnswerCache {
    generation: AtomicU64,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
pub(crate) struct CacheInner {
    generation: u64,
    bytes: usize,
    map: HashMap<SearchQuery, Arc<Rendered>>,
    /// Queries whose answer streamed once in this generation and turned out
    /// to fit [`CACHE_MAX_BODY`]: the next request reads them whole.
    cacheable: std::collections::HashSet<SearchQuery>,
}

pub(crate) const CACHE_MAX_ENTRIES: usize = 4096;
pub(crate) const CACHE_MAX_BYTES: usize = 64 << 20;
/// Answers up to this size are read whole, cached and sent with a
/// `Content-Length`; larger ones are streamed (chunked). So a request holds
/// at most this much of an answer in memory unless the answer is known to
/// be cacheable.
pub const WHOLE_MAX_BYTES: usize = 1 << 20;
/// Largest answer kept in the cache: one that streamed once and turned out
/// to be at most this big is read whole (and cached) from its second
/// request on.
pub(crate) const CACHE_MAX_BODY: usize = 4 << 20;
/// Bodies smaller than this are sent uncompressed (compression would not pay).
pub(crate) const COMPRESS_MIN_BYTES: usize = 512;
/// Brotli quality for cached answers (compressed once per generation).
pub(crate) const BROTLI_CACHED_QUALITY: i32 = 6;
/// Brotli quality and window (log2) for streamed answers: fast, and a few
/// MiB of encoder state at most.
pub(crate) const BROTLI_STREAM_QUALITY: u32 = 1;
pub(crate) const BROTLI_STREAM_LGWIN: u32 = 20;

impl AnswerCache {
    pub(crate) fn get(&self, generation: u64, q: &SearchQuery) -> Option<Arc<Rendered>> {
        if self.generation.load(Relaxed) != generation {
            return None;
        }
        let inner = self.inner.lock().ok()?;
        (inner.generation == generation)
            .then(|| inner.map.get(q).cloned())
            .flatten()
    }

    /// How much of the answer to `q` to read before deciding to stream it.
    pub(crate) fn whole_limit(&self, generation: u64, q: &SearchQuery) -> usize {
        match self.inner.lock() {
            Ok(inner) if inner.generation == generation && inner.cacheable.contains(q) => {
                CACHE_MAX_BODY
            }
            _ => WHOLE_MAX_BYTES,
        }
    }

    /// The answer to `q` streamed whole and was at most [`CACHE_MAX_BODY`].
    pub(crate) fn note_cacheable(&self, generation: u64, q: &SearchQuery) {
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

    pub(crate) fn put(&self, generation: u64, q: SearchQuery, r: &Arc<Rendered>) {
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
pub(crate) fn search_etag(v: &DataVersion, q: &SearchQuery, enc: Encoding) -> String {
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
        // The id's text, as tags had it when ids were kept as text.
        d.field(
            p.id.hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .as_bytes(),
        );
    }
    // Over several providers (or `provider=`), the answer depends on which
    // providers are searched and in which zones; a one-zone answer's tag
    // stays what it was.
    for part in &q.parts {
        d.field(part.provider.as_bytes());
        d.field(part.tz.name().as_bytes());
        for bound in [part.window.starts_at, part.window.ends_at] {
            d.update(&[u8::from(bound.is_some())]);
            d.update(&bound.unwrap_or(0).to_le_bytes());
        }
    }
    d.update(&[enc as u8]);
    format!("\"{:016x}\"", d.finish())
}

/// Counts the bytes read through it and whether the end was reached.
pub(crate) struct Counting<R> {
    pub(crate) inner: R,
    pub(crate) n: u64,
    pub(crate) eof: bool,
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
pub(crate) fn next_link(raw_query: &str, next: &crate::model::Position) -> String {
    let mut url = String::from("/search?");
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        // Only our own, validated parameters: nothing a client made up
        // reaches the header.
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        let ours = crate::percent::decode(key)
            .is_ok_and(|k| matches!(k.as_str(), "starts_at" | "ends_at" | "limit" | "provider"));
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
pub(crate) struct VersionCache {
    pub(crate) ttl: std::time::Duration,
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
    pub(crate) fn get(&self, src: &mut dyn Source) -> Result<DataVersion, StoreError> {
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
    pub(crate) fn offer(&self, v: DataVersion, at: std::time::Instant, changes: u64) {
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

/// How long an HTTP cache in front may serve a `/search` answer without
/// asking again, once it could not reach planbox (`stale-if-error`), unless
/// the max-age is longer still: a box that is down for a night should not
/// take the answers it gave with it.
pub const STALE_IF_ERROR: std::time::Duration = std::time::Duration::from_secs(86_400);

/// `Cache-Control` of a `/search` answer (200 and 304) that may be reused
/// for `max_age` (the fetch interval unless `--cache-max-age` says
/// otherwise: the data changes at most once per fetch), served stale for
/// as long again while a cache revalidates it in the background, and for
/// [`STALE_IF_ERROR`] while planbox cannot answer. Under one second:
/// `no-cache`, every use revalidated (`ETag` makes that a 304).
pub fn search_cache_control(max_age: std::time::Duration) -> String {
    let s = max_age.as_secs();
    if s == 0 {
        return "no-cache".into();
    }
    format!(
        "public, max-age={s}, stale-while-revalidate={s}, stale-if-error={}",
        STALE_IF_ERROR.as_secs().max(s)
    )
}

/// The headers of a `/search` answer that a cache keys and keeps it by:
/// also those of its `304`.
pub(crate) fn validator_headers(etag: String, cache_control: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ETag", etag),
        ("Vary", "Accept-Encoding".into()),
        ("Cache-Control", cache_control.into()),
    ]
}

/// The headers every `/search` answer carries.
pub(crate) fn search_headers(
    etag: String,
    cache_control: &str,
    next: Option<&crate::model::Position>,
    raw_query: &str,
) -> Vec<(&'static str, String)> {
    let mut h = Vec::with_capacity(6);
    h.push(("Content-Type", JSON.to_string()));
    h.extend(validator_headers(etag, cache_control));
    if let Some(next) = next {
        h.push(("Link", next_link(raw_query, next)));
    }
    h
}

/// A cached (or small) answer: bytes, compressed as negotiated when that
/// pays.
pub(crate) fn whole(
    r: &Rendered,
    etag: String,
    cache_control: &str,
    enc: Encoding,
    raw_query: &str,
) -> Response {
    let mut headers = search_headers(etag, cache_control, r.next.as_ref(), raw_query);
    let enc = if r.body.len() < COMPRESS_MIN_BYTES {
        Encoding::Identity
    } else {
        enc
    };
    let body = match r.encoded(enc) {
        Ok(body) => {
            if let Some(token) = enc.token() {
                headers.push(("Content-Encoding", token.into()));
            }
            body.clone()
        }
        Err(e) => {
            // Never an empty or partial body: the answer goes out as it is.
            crate::log::error(&format!(
                "compressing an answer failed; sent uncompressed: {}",
                crate::log::chain(&e)
            ));
            r.body.clone()
        }
    };
    Response {
        status: 200,
        route: Route::Search,
        headers,
        body,
        stream: None,
    }
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
pub(crate) fn parse_qvalue(v: &str) -> Option<u16> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ProviderWindow, Window};
    use chrono_tz::Tz;

    /// A writer that takes `room` bytes, then fails.
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::other("no space left"));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_compression_that_fails_is_an_error_not_a_short_body() {
        let body: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for enc in [Encoding::Gzip, Encoding::Br] {
            let err = compress(enc, &body, &mut Full { room: 100 }).unwrap_err();
            assert_eq!(err.to_string(), "no space left", "{enc:?}");
            let mut out = Vec::new();
            compress(enc, &body, &mut out).unwrap();
            assert!(!out.is_empty() && out.len() < body.len(), "{enc:?}");
        }
        let r = Rendered::new(body.clone(), None);
        let gz = r.encoded(Encoding::Gzip).unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn search_cache_control_follows_the_max_age_and_keeps_stale_answers_a_day() {
        use std::time::Duration;
        assert_eq!(
            search_cache_control(Duration::from_secs(60)),
            "public, max-age=60, stale-while-revalidate=60, stale-if-error=86400"
        );
        assert_eq!(
            search_cache_control(Duration::from_secs(2 * 86_400)),
            "public, max-age=172800, stale-while-revalidate=172800, stale-if-error=172800"
        );
        // Sub-second intervals round down; zero means "always revalidate".
        assert_eq!(
            search_cache_control(Duration::from_millis(1500)),
            "public, max-age=1, stale-while-revalidate=1, stale-if-error=86400"
        );
        assert_eq!(search_cache_control(Duration::from_millis(500)), "no-cache");
    }

    #[test]
    fn etags_vary_with_the_providers_searched_and_their_zones_only_when_there_are_parts() {
        let v = DataVersion::default();
        let one = SearchQuery::default();
        let part = |name: &str, tz| ProviderWindow {
            provider: name.into(),
            tz,
            window: Window::default(),
        };
        let with = |parts: Vec<ProviderWindow>| SearchQuery {
            parts,
            ..SearchQuery::default()
        };
        let tags = [
            search_etag(&v, &one, Encoding::Identity),
            search_etag(
                &v,
                &with(vec![part("a", Tz::UTC), part("b", Tz::UTC)]),
                Encoding::Identity,
            ),
            search_etag(
                &v,
                &with(vec![part("a", Tz::UTC), part("b", Tz::Europe__Madrid)]),
                Encoding::Identity,
            ),
            search_etag(&v, &with(vec![part("a", Tz::UTC)]), Encoding::Identity),
        ];
        for i in 0..tags.len() {
            for j in i + 1..tags.len() {
                assert_ne!(tags[i], tags[j], "{i} {j}");
            }
        }
    }
}
