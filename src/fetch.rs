//! HTTP to the provider, and nothing else.
//!
//! One [`fetch`] is one conditional GET (`If-None-Match` /
//! `If-Modified-Since`) with a connect timeout and an overall deadline that
//! covers the body too, `User-Agent: planbox/<version>`, gzip accepted and
//! decoded here. The body is spooled to a file beside the store while it is
//! hashed and counted, so that the decompressed size limit holds without
//! buffering the feed in memory and a feed identical to the last one is
//! recognised before it is parsed.
//!
//! Redirects are followed here, hop by hop (ureq's own following is off):
//! at most [`MAX_REDIRECTS`], never from `https` to `http`, each target a
//! [`SecretUrl`] like the configured URL. Errors are [`FetchError`]s,
//! classified by ureq's error variant and the `io::ErrorKind`; any text
//! taken from the HTTP client is scrubbed of the secrets of every URL of the
//! attempt before it is kept, so a `FetchError` may be logged and journaled
//! as it is.
//!
//! This module must not parse XML or touch the store.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::model::Outcome;
use crate::secret::{SecretUrl, UrlError};

/// Most redirects one fetch follows.
pub const MAX_REDIRECTS: u32 = 5;

/// What a fetch needs to know.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Shown redacted everywhere; exposed only for the request.
    pub url: crate::secret::SecretUrl,
    /// Whom the provider's TLS certificate may come from.
    pub roots: crate::tls::TrustRoots,
    pub connect_timeout: Duration,
    /// Deadline of the whole attempt: connect, headers and body.
    pub timeout: Duration,
    /// Limit on the decompressed body.
    pub max_bytes: u64,
}

/// Conditional-GET validators from the last successful fetch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// A body spooled to disk; the file is removed when this is dropped.
#[derive(Debug)]
pub struct Spooled {
    path: PathBuf,
    /// Decompressed length.
    pub bytes: u64,
    /// Digest of the decompressed body.
    pub hash: String,
}

impl Spooled {
    pub fn open(&self) -> io::Result<BufReader<File>> {
        Ok(BufReader::with_capacity(
            256 * 1024,
            File::open(&self.path)?,
        ))
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Debug)]
pub enum Fetched {
    /// 304: the provider says nothing changed.
    NotModified,
    Body {
        status: u16,
        body: Spooled,
        validators: Validators,
        /// The `charset` parameter of the `Content-Type`, if any: it wins
        /// over the document's XML declaration (RFC 7303).
        charset: Option<String>,
    },
}

/// Why a fetch failed. No field holds a URL's secrets: URLs appear in their
/// redacted form, texts from the HTTP client scrubbed; `#[source]` causes
/// are I/O and TLS errors, which name no URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("provider answered HTTP {status}")]
    Http {
        status: u16,
        /// From `Retry-After` on 429/503.
        retry_after: Option<Duration>,
    },
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect within {0:?}")]
    ConnectTimeout(Duration),
    #[error("cannot resolve the host of {server}")]
    HostNotFound { server: String },
    #[error("cannot connect to {server}")]
    Connect {
        server: String,
        #[source]
        source: Option<io::Error>,
    },
    /// The provider's certificate was refused, in plain words
    /// ([`crate::tls::explain`]).
    #[error("{0}")]
    Certificate(String),
    #[error("TLS with {server} failed")]
    Tls {
        server: String,
        #[source]
        source: rustls::Error,
    },
    /// The connection failed once it was open (reset, closed early).
    #[error("the connection to {server} failed")]
    Transport {
        server: String,
        #[source]
        source: io::Error,
    },
    /// The answer broke HTTP (a bad status line, header or chunk);
    /// `detail` is the client's scrubbed description.
    #[error("{server} broke the HTTP protocol: {detail}")]
    Protocol { server: String, detail: String },
    /// The HTTP client refused the request for a reason of its own;
    /// `detail` is its scrubbed description.
    #[error("the HTTP client failed: {detail}")]
    Client { detail: String },
    #[error("provider answered HTTP {status} with no usable Location")]
    BadRedirect {
        status: u16,
        #[source]
        source: Option<UrlError>,
    },
    #[error("provider answered HTTP {status} redirecting from https to {to}; refusing to fetch over plain http")]
    InsecureRedirect { status: u16, to: String },
    #[error("provider answered HTTP {status} after {MAX_REDIRECTS} redirects; giving up")]
    TooManyRedirects { status: u16 },
    #[error("reading the body failed")]
    Read(#[source] io::Error),
    #[error("the body is not valid gzip")]
    Decode(#[source] io::Error),
    #[error("feed is over the {limit}-byte limit")]
    TooLarge { limit: u64, status: u16 },
    #[error("cannot spool the feed to disk")]
    Spool(#[source] io::Error),
    #[error("interrupted by shutdown")]
    Cancelled,
}

impl FetchError {
    /// The HTTP status of the answer the error is about, if there was one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            FetchError::Http { status, .. }
            | FetchError::TooLarge { status, .. }
            | FetchError::BadRedirect { status, .. }
            | FetchError::InsecureRedirect { status, .. }
            | FetchError::TooManyRedirects { status } => Some(*status),
            _ => None,
        }
    }

    /// `Retry-After` of a 429/503.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The journal's outcome for this failure.
    pub fn outcome(&self) -> Outcome {
        match self {
            FetchError::Http { .. }
            | FetchError::BadRedirect { .. }
            | FetchError::InsecureRedirect { .. }
            | FetchError::TooManyRedirects { .. } => Outcome::HttpError,
            FetchError::Timeout(_) | FetchError::ConnectTimeout(_) => Outcome::Timeout,
            FetchError::TooLarge { .. } => Outcome::TooLarge,
            FetchError::HostNotFound { .. }
            | FetchError::Connect { .. }
            | FetchError::Certificate(_)
            | FetchError::Tls { .. }
            | FetchError::Transport { .. }
            | FetchError::Protocol { .. }
            | FetchError::Client { .. }
            | FetchError::Read(_)
            | FetchError::Decode(_)
            | FetchError::Spool(_)
            | FetchError::Cancelled => Outcome::NetworkError,
        }
    }

    /// The message followed by its causes (`a: b: c`), for the journal and
    /// the log.
    pub fn report(&self) -> String {
        crate::log::chain(self)
    }
}

pub fn user_agent() -> String {
    format!("planbox/{}", env!("CARGO_PKG_VERSION"))
}

/// Where the spool file of a store's provider lives: beside the store, so
/// it is on the same (writable, private) file system, named per provider
/// and process.
pub fn spool_path(db: &Path, provider: &str) -> PathBuf {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "planbox.db".into());
    // Names of the one-provider shorthand may hold any character.
    let provider: String = provider
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    db.with_file_name(format!(
        ".{name}.feed-{provider}-{}.tmp",
        std::process::id()
    ))
}

/// Copies `src` into a new spool file at `path`, hashing and counting, and
/// failing with `TooLarge` as soon as more than `max` bytes arrive.
/// `cancelled` is checked after every read, so a shutdown does not wait for
/// a slow body to finish.
pub fn spool(
    src: &mut dyn Read,
    path: &Path,
    max: u64,
    cancelled: &dyn Fn() -> bool,
) -> Result<Spooled, SpoolError> {
    let file = File::create(path).map_err(SpoolError::Io)?;
    // Built first so that any early return removes the file.
    let mut spooled = Spooled {
        path: path.to_owned(),
        bytes: 0,
        hash: String::new(),
    };
    let mut out = BufWriter::with_capacity(256 * 1024, file);
    let mut digest = Digest::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SpoolError::Read(e)),
        };
        if cancelled() {
            return Err(SpoolError::Cancelled);
        }
        total += n as u64;
        if total > max {
            return Err(SpoolError::TooLarge);
        }
        digest.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(SpoolError::Io)?;
    }
    out.flush().map_err(SpoolError::Io)?;
    spooled.bytes = total;
    spooled.hash = digest.hex();
    Ok(spooled)
}

#[derive(Debug)]
pub enum SpoolError {
    /// Reading the source failed (network, decompression, or a file).
    Read(io::Error),
    TooLarge,
    /// The caller asked to stop (shutdown).
    Cancelled,
    /// Writing the spool file failed.
    Io(io::Error),
}

/// One conditional GET of the feed into a spool file at `spool_to`.
/// `cancelled` is polled while the body arrives (see [`spool`]).
pub fn fetch(
    cfg: &FetchConfig,
    validators: &Validators,
    spool_to: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<Fetched, FetchError> {
    let started = Instant::now();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(cfg.connect_timeout.min(cfg.timeout)))
        .http_status_as_error(false)
        .user_agent(user_agent())
        .accept_encoding("")
        .max_redirects(0)
        .tls_config(cfg.roots.tls_config())
        .build()
        .into();
    // Every URL of this attempt: the configured one, then each redirect's.
    let mut hops = vec![cfg.url.clone()];
    let mut resp = loop {
        let url = hops.last().unwrap_or(&cfg.url);
        // One deadline for the whole attempt, redirects included.
        let left = cfg.timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(FetchError::Timeout(cfg.timeout));
        }
        let mut req = agent
            .get(url.expose())
            .config()
            .timeout_global(Some(left))
            .build()
            .header("Accept-Encoding", "gzip");
        if let Some(etag) = &validators.etag {
            req = req.header("If-None-Match", etag);
        }
        if let Some(lm) = &validators.last_modified {
            req = req.header("If-Modified-Since", lm);
        }
        let resp = req.call().map_err(|e| classify(e, cfg, &hops))?;
        let status = resp.status().as_u16();
        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
            break resp;
        }
        let next = redirect_target(url, status, resp.headers().get("Location"))?;
        if hops.len() > MAX_REDIRECTS as usize {
            return Err(FetchError::TooManyRedirects { status });
        }
        hops.push(next);
    };
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if status == 304 {
        return Ok(Fetched::NotModified);
    }
    if !(200..300).contains(&status) {
        let retry_after = header("Retry-After").and_then(|v| parse_retry_after(&v));
        return Err(FetchError::Http {
            status,
            retry_after,
        });
    }
    let validators = Validators {
        etag: header("ETag"),
        last_modified: header("Last-Modified"),
    };
    let charset = header("Content-Type").and_then(|v| charset_of(&v));
    let gzip = header("Content-Encoding").is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    // The raw body is limited too, so a compressed stream cannot run on for
    // ever either.
    let raw = resp
        .body_mut()
        .with_config()
        .limit(cfg.max_bytes.saturating_add(1))
        .reader();
    let mut reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    match spool(&mut reader, spool_to, cfg.max_bytes, cancelled) {
        Ok(body) => Ok(Fetched::Body {
            status,
            body,
            validators,
            charset,
        }),
        Err(SpoolError::TooLarge) => Err(FetchError::TooLarge {
            limit: cfg.max_bytes,
            status,
        }),
        Err(SpoolError::Io(e)) => Err(FetchError::Spool(e)),
        Err(SpoolError::Cancelled) => Err(FetchError::Cancelled),
        Err(SpoolError::Read(e)) => Err(classify_read(e, cfg, &hops, started, status)),
    }
}

/// Where a redirect from `from` leads: its `Location` resolved against
/// `from`, refused when it leaves https for http.
fn redirect_target(
    from: &SecretUrl,
    status: u16,
    location: Option<&ureq::http::HeaderValue>,
) -> Result<SecretUrl, FetchError> {
    let bad = |source| FetchError::BadRedirect { status, source };
    let location = location
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad(None))?;
    let to = from.join(location).map_err(|e| bad(Some(e)))?;
    if from.is_https() && !to.is_https() {
        return Err(FetchError::InsecureRedirect {
            status,
            to: to.redacted().to_owned(),
        });
    }
    Ok(to)
}

/// `text` scrubbed of the secrets of every URL of the attempt.
fn scrub(text: &str, hops: &[SecretUrl]) -> String {
    hops.iter().fold(text.to_owned(), |t, u| u.scrub(&t))
}

/// A failed request (before the body) by ureq's error variant and the
/// `io::ErrorKind`.
fn classify(e: ureq::Error, cfg: &FetchConfig, hops: &[SecretUrl]) -> FetchError {
    use io::ErrorKind as K;
    let url = hops.last().unwrap_or(&cfg.url);
    let server = url.server().to_owned();
    // A refused certificate in plain words.
    if let Some(text) = crate::tls::explain(&e, &server, cfg.roots.ca_file()) {
        return FetchError::Certificate(text);
    }
    match e {
        ureq::Error::Timeout(ureq::Timeout::Connect) if cfg.connect_timeout < cfg.timeout => {
            FetchError::ConnectTimeout(cfg.connect_timeout)
        }
        ureq::Error::Timeout(_) => FetchError::Timeout(cfg.timeout),
        ureq::Error::HostNotFound => FetchError::HostNotFound { server },
        ureq::Error::ConnectionFailed => FetchError::Connect {
            server,
            source: None,
        },
        ureq::Error::Rustls(source) => FetchError::Tls { server, source },
        ureq::Error::Io(io) => match io.kind() {
            K::TimedOut | K::WouldBlock => FetchError::Timeout(cfg.timeout),
            K::ConnectionRefused
            | K::AddrNotAvailable
            | K::NetworkUnreachable
            | K::HostUnreachable
            | K::NetworkDown => FetchError::Connect {
                server,
                source: Some(io),
            },
            _ => FetchError::Transport { server, source: io },
        },
        e @ (ureq::Error::Protocol(_)
        | ureq::Error::LargeResponseHeader(..)
        | ureq::Error::Http(_)) => FetchError::Protocol {
            server,
            detail: scrub(&e.to_string(), hops),
        },
        other => FetchError::Client {
            detail: scrub(&other.to_string(), hops),
        },
    }
}

/// A failed read of the body: ureq's errors travel inside `io::Error`s;
/// the gzip decoder's own are `InvalidInput`/`InvalidData`.
fn classify_read(
    e: io::Error,
    cfg: &FetchConfig,
    hops: &[SecretUrl],
    started: Instant,
    status: u16,
) -> FetchError {
    use io::ErrorKind as K;
    if started.elapsed() >= cfg.timeout {
        return FetchError::Timeout(cfg.timeout);
    }
    if e.get_ref().is_some_and(|inner| inner.is::<ureq::Error>()) {
        return match ureq::Error::from(e) {
            ureq::Error::BodyExceedsLimit(_) => FetchError::TooLarge {
                limit: cfg.max_bytes,
                status,
            },
            ureq::Error::Io(io) => classify_read(io, cfg, hops, started, status),
            other => classify(other, cfg, hops),
        };
    }
    match e.kind() {
        K::TimedOut | K::WouldBlock => FetchError::Timeout(cfg.timeout),
        K::InvalidInput | K::InvalidData => FetchError::Decode(e),
        _ => FetchError::Read(e),
    }
}

/// The `charset` parameter of a `Content-Type` value
/// (`text/xml; charset="ISO-8859-1"` → `ISO-8859-1`).
pub fn charset_of(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("charset") {
            return None;
        }
        let value = value.trim().trim_matches('"').trim();
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (when.timestamp() - chrono::Utc::now().timestamp()).max(0);
    Some(Duration::from_secs(secs as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_counts_hashes_and_stops_at_the_limit() {
        let dir = std::env::temp_dir().join(format!("planbox-spool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.tmp");
        let s = spool(&mut &b"hello world"[..], &path, 11, &|| false).unwrap();
        assert_eq!(s.bytes, 11);
        let mut d = Digest::new();
        d.update(b"hello world");
        assert_eq!(s.hash, d.hex());
        let mut text = String::new();
        s.open().unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello world");
        drop(s);
        assert!(!path.exists(), "spool file removed on drop");
        assert!(matches!(
            spool(&mut &b"hello world!"[..], &path, 11, &|| false),
            Err(SpoolError::TooLarge)
        ));
        assert!(matches!(
            spool(&mut &b"hello"[..], &path, 11, &|| true),
            Err(SpoolError::Cancelled)
        ));
        assert!(!path.exists(), "no spool file left after a failure");
    }

    #[test]
    fn the_charset_is_read_from_the_content_type() {
        assert_eq!(
            charset_of("text/xml; charset=ISO-8859-1").as_deref(),
            Some("ISO-8859-1")
        );
        assert_eq!(
            charset_of("application/xml;Charset=\"windows-1252\" ; q=1").as_deref(),
            Some("windows-1252")
        );
        assert_eq!(charset_of("application/xml"), None);
        assert_eq!(charset_of("text/xml; charset="), None);
        assert_eq!(charset_of("text/xml; format=flowed"), None);
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    mod redirects {
        use super::*;
        use crate::provider_sim::{Behaviour, FakeProvider, DEMO_FEEDS};

        const SIG: &str = "S1gnatur3";

        fn config(url: &str) -> FetchConfig {
            FetchConfig {
                url: SecretUrl::parse(url).unwrap(),
                roots: Default::default(),
                connect_timeout: Duration::from_secs(2),
                timeout: Duration::from_secs(5),
                max_bytes: 16 << 20,
            }
        }

        fn fetch_from(p: &FakeProvider, name: &str) -> Result<Fetched, FetchError> {
            let dir =
                std::env::temp_dir().join(format!("planbox-fetch-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let url = format!("{}?key=K3y", p.url());
            fetch(
                &config(&url),
                &Validators::default(),
                &dir.join("spool"),
                &|| false,
            )
        }

        fn redirect(location: &str) -> Behaviour {
            Behaviour::Redirect {
                status: 302,
                location: location.into(),
            }
        }

        #[test]
        fn a_redirect_is_followed_to_its_target() {
            let p = FakeProvider::demo().unwrap();
            p.push(redirect(&format!("/v2/feed?X-Amz-Signature={SIG}")));
            let Ok(Fetched::Body { body, status, .. }) = fetch_from(&p, "follow") else {
                panic!("not fetched")
            };
            assert_eq!((status, body.bytes), (200, DEMO_FEEDS[0].len() as u64));
            let urls: Vec<String> = p.seen().into_iter().map(|s| s.url).collect();
            assert_eq!(
                urls,
                [
                    "/feed?key=K3y".to_string(),
                    format!("/v2/feed?X-Amz-Signature={SIG}")
                ]
            );
        }

        #[test]
        fn a_redirect_target_never_shows_in_an_error() {
            let dead = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap()
            };
            let p = FakeProvider::demo().unwrap();
            for (name, location, then, outcome) in [
                (
                    "unusable",
                    format!("http://[::1/feed?X-Amz-Signature={SIG}"),
                    None,
                    Outcome::HttpError,
                ),
                (
                    "dead",
                    format!("http://{dead}/feed?X-Amz-Signature={SIG}"),
                    None,
                    Outcome::NetworkError,
                ),
                (
                    "bad port",
                    format!("http://127.0.0.1:99999/feed?X-Amz-Signature={SIG}"),
                    None,
                    Outcome::HttpError,
                ),
                // ureq's own following called this malformed, quoting it.
                (
                    "above the root",
                    format!("../../../feed?X-Amz-Signature={SIG}"),
                    Some(Behaviour::Status(503, None)),
                    Outcome::HttpError,
                ),
            ] {
                p.push(redirect(&location));
                if let Some(then) = then {
                    p.push(then);
                }
                let e = fetch_from(&p, name).unwrap_err();
                let text = format!("{} | {e:?}", e.report());
                assert!(
                    !text.contains(SIG) && !text.contains("K3y"),
                    "{name}: {text}"
                );
                assert_eq!(e.outcome(), outcome, "{name}: {text}");
            }
        }

        #[test]
        fn redirects_are_followed_at_most_five_times() {
            let p = FakeProvider::demo().unwrap();
            for i in 0..=MAX_REDIRECTS {
                p.push(redirect(&format!("/hop{i}?X-Amz-Signature={SIG}")));
            }
            let e = fetch_from(&p, "loop").unwrap_err();
            assert!(
                matches!(e, FetchError::TooManyRedirects { status: 302 }),
                "{e:?}"
            );
            assert_eq!(e.http_status(), Some(302));
            assert!(!e.report().contains(SIG), "{}", e.report());
            assert_eq!(p.seen().len(), MAX_REDIRECTS as usize + 1);
        }

        #[test]
        fn failures_are_classified_by_kind() {
            let dead = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap()
            };
            let dir =
                std::env::temp_dir().join(format!("planbox-fetch-{}-kind", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let e = fetch(
                &config(&format!("http://u:pw@{dead}/feed?S3cretTok")),
                &Validators::default(),
                &dir.join("spool"),
                &|| false,
            )
            .unwrap_err();
            let FetchError::Connect {
                source: Some(io), ..
            } = &e
            else {
                panic!("{e:?}")
            };
            assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
            assert_eq!(e.outcome(), Outcome::NetworkError);
            assert!(
                e.report()
                    .starts_with(&format!("cannot connect to {dead}: ")),
                "{}",
                e.report()
            );
        }

        #[test]
        fn body_read_failures_are_classified_by_kind() {
            let cfg = config("http://h/feed");
            let hops = [cfg.url.clone()];
            let read = |e: io::Error| classify_read(e, &cfg, &hops, Instant::now(), 200);
            // ureq's own errors travel inside io::Error.
            assert!(matches!(
                read(ureq::Error::BodyExceedsLimit(9).into_io()),
                FetchError::TooLarge { status: 200, .. }
            ));
            assert!(matches!(
                read(ureq::Error::Timeout(ureq::Timeout::RecvBody).into_io()),
                FetchError::Timeout(_)
            ));
            // The gzip decoder's.
            let corrupt = read(io::Error::new(
                io::ErrorKind::InvalidInput,
                "corrupt deflate stream",
            ));
            assert!(matches!(corrupt, FetchError::Decode(_)), "{corrupt:?}");
            assert_eq!(
                corrupt.report(),
                "the body is not valid gzip: corrupt deflate stream"
            );
            // The socket's.
            let reset = read(io::ErrorKind::ConnectionReset.into());
            assert!(matches!(reset, FetchError::Read(_)), "{reset:?}");
            assert_eq!(reset.outcome(), Outcome::NetworkError);
        }
    }
}
