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
//! This module must not parse XML or touch the store.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::digest::Digest;

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
    #[error("{0}")]
    Network(String),
    #[error("feed is over the {limit}-byte limit")]
    TooLarge { limit: u64, status: u16 },
    #[error("cannot spool the feed to disk: {0}")]
    Spool(io::Error),
    #[error("interrupted by shutdown")]
    Cancelled,
}

impl FetchError {
    pub fn http_status(&self) -> Option<u16> {
        match self {
            FetchError::Http { status, .. } | FetchError::TooLarge { status, .. } => Some(*status),
            _ => None,
        }
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
        .timeout_global(Some(cfg.timeout))
        .http_status_as_error(false)
        .user_agent(user_agent())
        .accept_encoding("")
        .max_redirects(5)
        .tls_config(cfg.roots.tls_config())
        .build()
        .into();
    let mut req = agent
        .get(cfg.url.expose())
        .header("Accept-Encoding", "gzip");
    if let Some(etag) = &validators.etag {
        req = req.header("If-None-Match", etag);
    }
    if let Some(lm) = &validators.last_modified {
        req = req.header("If-Modified-Since", lm);
    }
    let mut resp = req.call().map_err(|e| classify_ureq(e, cfg))?;
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
        Err(SpoolError::Read(e)) => Err(classify_read(e, cfg, started, status)),
    }
}

fn classify_read(e: io::Error, cfg: &FetchConfig, started: Instant, status: u16) -> FetchError {
    let text = e.to_string();
    if e.kind() == io::ErrorKind::TimedOut
        || text.contains("timeout")
        || started.elapsed() >= cfg.timeout
    {
        FetchError::Timeout(cfg.timeout)
    } else if text.contains("limit") {
        FetchError::TooLarge {
            limit: cfg.max_bytes,
            status,
        }
    } else {
        FetchError::Network(format!("reading the body failed: {}", cfg.url.scrub(&text)))
    }
}

fn classify_ureq(e: ureq::Error, cfg: &FetchConfig) -> FetchError {
    let timeout = cfg.timeout;
    match e {
        ureq::Error::Timeout(ureq::Timeout::Connect) if cfg.connect_timeout < timeout => {
            FetchError::ConnectTimeout(cfg.connect_timeout)
        }
        ureq::Error::Timeout(_) => FetchError::Timeout(timeout),
        ureq::Error::Io(io) if io.kind() == io::ErrorKind::TimedOut => FetchError::Timeout(timeout),
        // Never the URL's credentials in a message; a refused certificate
        // in plain words.
        other => FetchError::Network(
            crate::tls::explain(&other, cfg.url.server(), cfg.roots.ca_file())
                .unwrap_or_else(|| cfg.url.scrub(&other.to_string())),
        ),
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
}
