//! Request heads: what a parsed head says about its body and about the
//! connection after the answer (`Content-Length`, `Transfer-Encoding`,
//! `Connection`, `Expect`), and the answers to heads planbox refuses.
//! The head itself is parsed by `httparse` in the worker.
//!
//! Must not do I/O or contain API logic.

use std::borrow::Cow;

use super::api::{code, error_response, Response};
use super::conn::DRAIN_MAX;
use super::wire::Wire;
use crate::metrics::Route;

/// At most this many headers in a request (more is 431).
pub(crate) const MAX_HEADERS: usize = 100;

/// A parsed request head (borrowing the connection's buffer).
pub(crate) struct Head<'h, 'b> {
    pub(crate) method: &'b str,
    pub(crate) url: &'b str,
    pub(crate) http10: bool,
    pub(crate) headers: &'h [httparse::Header<'b>],
}

impl Head<'_, '_> {
    pub(crate) fn wire(&self, close: bool) -> Wire {
        Wire::new(self.http10, self.method == "HEAD", close)
    }
}

/// What a head says about its body and the connection after the answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Framing {
    /// `Content-Length` of the body (which planbox never reads; it is
    /// dropped as it arrives).
    pub(crate) body: u64,
    /// `Transfer-Encoding` was sent: `Some(true)` when its last coding is
    /// `chunked`. The body's end is not known: the connection closes.
    pub(crate) transfer_coded: Option<bool>,
    pub(crate) keep_alive: bool,
}

/// Reads the body and connection headers. A `Content-Length` that is not
/// one number is a 400 (and the connection closes: the body's end is
/// unknown); so does any `Transfer-Encoding` (planbox reads no request
/// body; see `server.rs` for the answer). HTTP/1.0 keeps the
/// connection only on `Connection: keep-alive`; a body over [`DRAIN_MAX`],
/// or announced with `Expect: 100-continue` (which planbox never answers),
/// closes it after the answer.
pub(crate) fn framing(head: &Head<'_, '_>) -> Result<Framing, Response> {
    let (mut length, mut close, mut keep, mut expect) = (None, false, false, false);
    let mut transfer_coded = None;
    for h in head.headers {
        let value = std::str::from_utf8(h.value).unwrap_or("\u{fffd}").trim();
        if h.name.eq_ignore_ascii_case("Content-Length") {
            let n = value
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| value.parse::<u64>().ok())
                .flatten();
            length = match (n, length) {
                (Some(n), None) => Some(n),
                (Some(n), Some(m)) if n == m => Some(n),
                _ => {
                    return Err(error_response(
                        400,
                        Route::Other,
                        code::BAD_REQUEST,
                        "Content-Length must be one decimal number",
                    ))
                }
            };
        } else if h.name.eq_ignore_ascii_case("Transfer-Encoding") {
            let last = value.rsplit(',').next().unwrap_or("").trim();
            transfer_coded = Some(last.eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("Connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if h.name.eq_ignore_ascii_case("Expect") {
            expect = true;
        }
    }
    let body = length.unwrap_or(0);
    let wanted = if head.http10 { keep && !close } else { !close };
    Ok(Framing {
        body,
        transfer_coded,
        keep_alive: wanted
            && transfer_coded.is_none()
            && body <= DRAIN_MAX
            && !(expect && body > 0),
    })
}

/// The origin-form (`/path?query`) of a request target. An absolute-form
/// target (`http://host/path?query`), which a server must accept (RFC 9112
/// §3.2.2) and some proxies send, loses its scheme and authority (an empty
/// path is `/`); any other target is returned as it is.
pub(crate) fn origin_form(target: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = target.split_once("://") else {
        return Cow::Borrowed(target);
    };
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return Cow::Borrowed(target);
    }
    match rest.find(['/', '?']) {
        Some(p) if rest.as_bytes()[p] == b'/' => Cow::Borrowed(&rest[p..]),
        Some(p) => Cow::Owned(format!("/{}", &rest[p..])),
        None => Cow::Borrowed("/"),
    }
}

/// The answer to a `GET` or `HEAD` with a `Transfer-Encoding` body: 411
/// when its last coding is `chunked` (send a `Content-Length`), else 400
/// (RFC 9112 §6.3: the length cannot be determined).
pub(crate) fn unframed_body(transfer_coded: Option<bool>) -> Response {
    if transfer_coded == Some(true) {
        error_response(
            411,
            Route::Other,
            code::LENGTH_REQUIRED,
            "request bodies must come with a Content-Length, not Transfer-Encoding: chunked",
        )
    } else {
        error_response(
            400,
            Route::Other,
            code::BAD_REQUEST,
            "a Transfer-Encoding that does not end in chunked has no known length",
        )
    }
}

pub(crate) fn bad_request() -> Response {
    error_response(
        400,
        Route::Other,
        code::BAD_REQUEST,
        "the request is not valid HTTP/1.1",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The framing of a head made of `lines` (after the request line).
    fn framed(version: &str, lines: &[&str]) -> Result<Framing, u16> {
        let text = format!("GET / HTTP/{version}\r\n{}\r\n", lines.join(""));
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(text.as_bytes()).unwrap().is_complete());
        let head = Head {
            method: "GET",
            url: "/",
            http10: version == "1.0",
            headers: parsed.headers,
        };
        framing(&head).map_err(|r| r.status)
    }

    #[test]
    fn keep_alive_follows_the_version_and_the_connection_header() {
        let keep = |v, l: &[&str]| framed(v, l).unwrap().keep_alive;
        assert!(keep("1.1", &[]));
        assert!(!keep("1.1", &["Connection: close\r\n"]));
        assert!(!keep("1.1", &["Connection: Upgrade, CLOSE\r\n"]));
        assert!(!keep("1.0", &[]));
        assert!(keep("1.0", &["Connection: Keep-Alive\r\n"]));
        assert!(!keep("1.0", &["Connection: keep-alive, close\r\n"]));
    }

    #[test]
    fn bodies_are_dropped_up_to_the_drain_limit_else_the_connection_closes() {
        let f = framed("1.1", &["Content-Length: 10\r\n"]).unwrap();
        assert_eq!((f.body, f.keep_alive), (10, true));
        let max = format!("Content-Length: {DRAIN_MAX}\r\n");
        assert!(framed("1.1", &[&max]).unwrap().keep_alive);
        let over = format!("Content-Length: {}\r\n", DRAIN_MAX + 1);
        assert!(!framed("1.1", &[&over]).unwrap().keep_alive);
        let huge = framed("1.1", &["Content-Length: 18446744073709551615\r\n"]).unwrap();
        assert_eq!((huge.body, huge.keep_alive), (u64::MAX, false));
        // Two equal lengths are one; 100-continue with a body closes.
        assert!(framed("1.1", &["Content-Length: 3\r\n", "Content-Length: 3\r\n"]).is_ok());
        let expect = framed(
            "1.1",
            &["Content-Length: 3\r\n", "Expect: 100-continue\r\n"],
        );
        assert!(!expect.unwrap().keep_alive);
    }

    #[test]
    fn lengths_that_are_not_one_number_are_400_and_transfer_codings_close() {
        for bad in [
            "Content-Length: 18446744073709551616\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: \r\n",
        ] {
            assert_eq!(framed("1.1", &[bad]).unwrap_err(), 400, "{bad:?}");
        }
        assert_eq!(
            framed("1.1", &["Content-Length: 3\r\n", "Content-Length: 4\r\n"]).unwrap_err(),
            400
        );
        let te = |v: &str| {
            let line = format!("Transfer-Encoding: {v}\r\n");
            let f = framed("1.1", &[&line]).unwrap();
            assert!(!f.keep_alive);
            f.transfer_coded
        };
        assert_eq!(te("chunked"), Some(true));
        assert_eq!(te("gzip, Chunked"), Some(true));
        assert_eq!(te("chunked, gzip"), Some(false));
        assert_eq!(unframed_body(Some(true)).status, 411);
        assert_eq!(unframed_body(Some(false)).status, 400);
    }

    #[test]
    fn absolute_form_targets_become_their_origin_form() {
        for (target, origin) in [
            ("/search?a=1", "/search?a=1"),
            ("http://h/search?a=1", "/search?a=1"),
            ("HTTPS://h:8443/health", "/health"),
            ("http://h", "/"),
            ("http://h?a=1", "/?a=1"),
            ("http://u@h/x//y", "/x//y"),
            ("*", "*"),
            ("ftp://h/health", "ftp://h/health"),
            ("/redirect?to=http://h/x", "/redirect?to=http://h/x"),
        ] {
            assert_eq!(origin_form(target), origin, "{target}");
        }
    }
}
