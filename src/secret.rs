//! Provider URLs carry secrets: `user:password@` and the query
//! (`?api_key=…`, or a bare token `?S3cretTok`). [`SecretUrl`] keeps the
//! full URL for the one place that needs it (the request in `fetch.rs`) and
//! shows everyone else a redacted form, through `Display` and `Debug` alike,
//! so a URL cannot reach a page, a log line, the journal, `status` or a
//! metric by accident. [`SecretUrl::scrub`] takes the same secrets out of
//! free text (an error message of the HTTP client); parse errors
//! ([`UrlError`]) never repeat the URL.
//!
//! Redaction: the whole userinfo becomes `***`, every query value `***` and
//! every query part without `=` `***` (names of `name=value` pairs stay, they
//! help when reading a journal), a fragment `***`. A secret written into the
//! path (`/feed/TOKEN`) cannot be told from a path and is shown;
//! DEPLOYMENT.md says to put secrets in the userinfo or the query. It must
//! not do I/O.

use std::fmt;

const MASK: &str = "***";

/// Secrets shorter than this are taken out of free text only where they
/// stand alone: a one-letter password must not turn every such letter of
/// a message into `***` (nor `?v=1` every `1` of `127.0.0.1`), but `u:pw@`
/// must lose its `pw`.
const SHORT: usize = 4;

/// Characters that join a short secret to a longer token (a word, a number,
/// a host name): where one touches it, it does not stand alone.
fn joins(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '~' | '%' | '+')
}

/// Why a provider URL was refused. Never holds the URL or any part of it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a valid URL (expected http(s)://[user:password@]host[:port]/path[?query])")]
    Invalid(#[source] url::ParseError),
    #[error("the URL scheme must be http or https")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
}

/// A URL whose credentials are never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl {
    full: String,
    shown: String,
    /// `host:port`, for messages.
    server: String,
    https: bool,
    /// The secret parts as written and percent-decoded, longest first, for
    /// [`SecretUrl::scrub`].
    secrets: Vec<String>,
}

impl SecretUrl {
    /// Parses `url`; only absolute `http` and `https` URLs with a host are
    /// accepted.
    pub fn parse(url: &str) -> Result<SecretUrl, UrlError> {
        SecretUrl::from_url(
            url::Url::parse(url.trim()).map_err(UrlError::Invalid)?,
            url.trim(),
        )
    }

    /// `location` (a redirect's `Location`, absolute or relative) resolved
    /// against this URL. A relative one keeps this URL's userinfo, as it
    /// names the same server.
    pub fn join(&self, location: &str) -> Result<SecretUrl, UrlError> {
        let base = url::Url::parse(&self.full).map_err(UrlError::Invalid)?;
        let joined = base.join(location.trim()).map_err(UrlError::Invalid)?;
        let text = joined.as_str().to_owned();
        SecretUrl::from_url(joined, &text)
    }

    fn from_url(parsed: url::Url, full: &str) -> Result<SecretUrl, UrlError> {
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(UrlError::Scheme);
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::NoHost);
        }
        let mut secrets = Vec::new();
        // As written, percent-decoded, and decoded as a form value.
        let mut push = |s: &str| {
            let strict = crate::percent::decode(s).unwrap_or_else(|_| s.to_owned());
            for v in [s.to_owned(), strict, decode(s)] {
                if !v.is_empty() && !secrets.contains(&v) {
                    secrets.push(v);
                }
            }
        };
        push(parsed.username());
        if let Some(p) = parsed.password() {
            push(p);
            push(&format!("{}:{p}", parsed.username()));
        }
        if let Some(q) = parsed.query() {
            for part in q.split('&') {
                // `name=value`: the value; a bare token: all of it.
                push(part.split_once('=').map_or(part, |(_, v)| v));
            }
        }
        if let Some(f) = parsed.fragment() {
            push(f);
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let server = format!(
            "{}:{}",
            parsed.host_str().unwrap_or(""),
            parsed.port_or_known_default().unwrap_or(0)
        );
        Ok(SecretUrl {
            full: full.to_owned(),
            server,
            https: parsed.scheme() == "https",
            shown: redact(&parsed),
            secrets,
        })
    }

    /// The URL with its credentials, for the request and nothing else.
    pub fn expose(&self) -> &str {
        &self.full
    }

    /// The URL as shown: credentials replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.shown
    }

    /// `host:port` of the URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// Whether the URL carries anything that is redacted.
    pub fn has_secrets(&self) -> bool {
        self.full != self.shown
    }

    /// `text` (an error message from the HTTP client, say) with this URL
    /// shown redacted and every appearance of its secrets replaced by `***`
    /// (secrets under four characters where they stand alone).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.full, &self.shown);
        for s in &self.secrets {
            if s.chars().count() >= SHORT {
                if out.contains(s.as_str()) {
                    out = out.replace(s.as_str(), MASK);
                }
            } else {
                out = replace_standalone(&out, s);
            }
        }
        out
    }
}

/// `text` with every appearance of `secret` that stands alone (no
/// character that [`joins`] on either side) replaced by `***`.
fn replace_standalone(text: &str, secret: &str) -> String {
    let word = |c: Option<char>| c.is_some_and(joins);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut before: Option<char> = None;
    while let Some(at) = rest.find(secret) {
        let head = &rest[..at];
        let prev = head.chars().next_back().or(before);
        let tail = &rest[at + secret.len()..];
        out.push_str(head);
        if word(prev) || word(tail.chars().next()) {
            out.push_str(secret);
        } else {
            out.push_str(MASK);
        }
        before = secret.chars().next_back();
        rest = tail;
    }
    out.push_str(rest);
    out
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.shown)
    }
}

/// `s` percent-decoded, `+` read as a space as in a query (a form value);
/// `s` itself when it does not decode.
fn decode(s: &str) -> String {
    crate::percent::decode_form(s).unwrap_or_else(|_| s.to_owned())
}

fn redact(u: &url::Url) -> String {
    let mut out = format!("{}://", u.scheme());
    if !u.username().is_empty() || u.password().is_some() {
        out.push_str(MASK);
        out.push('@');
    }
    out.push_str(u.host_str().unwrap_or(""));
    if let Some(p) = u.port() {
        out.push_str(&format!(":{p}"));
    }
    out.push_str(u.path());
    if let Some(q) = u.query() {
        out.push('?');
        let parts: Vec<String> = q
            .split('&')
            .map(|part| match part.split_once('=') {
                Some((k, _)) => format!("{k}={MASK}"),
                None if part.is_empty() => String::new(),
                None => MASK.to_owned(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    if u.fragment().is_some() {
        out.push('#');
        out.push_str(MASK);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://user:s3cretpw@host:8080/feed?api_key=TOPSECRET&lang=es#frag";

    #[test]
    fn credentials_never_show() {
        let u = SecretUrl::parse(URL).unwrap();
        assert_eq!(u.expose(), URL);
        assert_eq!(
            u.redacted(),
            "http://***@host:8080/feed?api_key=***&lang=***#***"
        );
        assert_eq!(u.to_string(), u.redacted());
        let dbg = format!("{u:?}");
        assert!(
            !dbg.contains("s3cretpw") && !dbg.contains("TOPSECRET"),
            "{dbg}"
        );
        assert!(u.has_secrets());
        let plain = SecretUrl::parse("https://example.com/feed.xml").unwrap();
        assert_eq!(plain.redacted(), "https://example.com/feed.xml");
        assert!(!plain.has_secrets());
    }

    #[test]
    fn scrub_removes_secrets_from_free_text() {
        let u = SecretUrl::parse(URL).unwrap();
        let msg = format!("bad uri {URL}; token TOPSECRET; pw s3cretpw; pair user:s3cretpw");
        let s = u.scrub(&msg);
        assert!(!s.contains("TOPSECRET") && !s.contains("s3cretpw"), "{s}");
        assert!(s.contains("http://***@host:8080/feed?api_key=***"), "{s}");
        // Percent-encoded secrets are found in their decoded forms too.
        let e = SecretUrl::parse("http://h/?k=a%2Fsecret%2B").unwrap();
        assert_eq!(e.scrub("x a/secret+ y"), "x *** y");
        let f = SecretUrl::parse("http://us%40r:pa+ss@h/?k=two+words").unwrap();
        assert_eq!(f.scrub("us@r pa+ss pa ss two words"), "*** *** *** ***");
    }

    #[test]
    fn only_absolute_http_urls_with_a_host() {
        for bad in [
            "",
            "feed.xml",
            "ftp://h/x",
            "http://",
            "mailto:a@b",
            "S3cretTok:x",
        ] {
            let e = SecretUrl::parse(bad).unwrap_err();
            assert!(!e.to_string().is_empty(), "{bad}");
        }
        for bad in [
            "http://u:TOPSECRET@[bad/x",
            "TOPSECRET:rest",
            "http://h:99999/?k=TOPSECRET",
        ] {
            let e = SecretUrl::parse(bad).unwrap_err().to_string();
            assert!(!e.to_lowercase().contains("topsecret"), "{e}");
        }
    }

    #[test]
    fn a_bare_query_token_is_a_secret() {
        let u = SecretUrl::parse("https://h/feed?S3cretTok").unwrap();
        assert_eq!(u.redacted(), "https://h/feed?***");
        assert!(u.has_secrets());
        assert_eq!(u.scrub("denied for S3cretTok"), "denied for ***");
        let mixed = SecretUrl::parse("https://h/feed?lang=es&S3cretTok&&x=1").unwrap();
        assert_eq!(mixed.redacted(), "https://h/feed?lang=***&***&&x=***");
        assert!(!mixed.to_string().contains("S3cretTok"));
        assert!(!format!("{mixed:?}").contains("S3cretTok"));
    }

    #[test]
    fn short_secrets_are_scrubbed_where_they_stand_alone() {
        let u = SecretUrl::parse("http://u:pw@h/x?k=ab&Z").unwrap();
        assert_eq!(u.redacted(), "http://***@h/x?k=***&***");
        let s = u.scrub("login u:pw refused; pw=pw; token ab, flag Z; upward about Zone");
        assert_eq!(
            s,
            "login *** refused; ***=***; token ***, flag ***; upward about Zone"
        );
        // Next to each other, both go.
        assert_eq!(u.scrub("(pw)(ab)"), "(***)(***)");
        // Parts of numbers and host names are not secrets standing alone.
        let v = SecretUrl::parse("http://127.0.0.1:8080/feed?v=1&f=x").unwrap();
        assert_eq!(
            v.scrub("cannot connect to 127.0.0.1:8080 (HTTP/1.1, x-forwarded); v=1, f=x"),
            "cannot connect to 127.0.0.1:8080 (HTTP/1.1, x-forwarded); v=***, f=***"
        );
        assert_eq!(replace_standalone("pwpw pw", "pw"), "pwpw ***");
    }

    #[test]
    fn redirect_targets_are_joined_and_redacted() {
        let u = SecretUrl::parse("https://u:pw@h/feed?key=K3y").unwrap();
        let rel = u.join("/v2/feed?sig=S1gnature").unwrap();
        assert_eq!(rel.expose(), "https://u:pw@h/v2/feed?sig=S1gnature");
        assert_eq!(rel.redacted(), "https://***@h/v2/feed?sig=***");
        let abs = u
            .join("http://cdn.example/f.xml?X-Amz-Signature=S1gnature")
            .unwrap();
        assert!(!abs.is_https() && u.is_https());
        assert_eq!(
            abs.redacted(),
            "http://cdn.example/f.xml?X-Amz-Signature=***"
        );
        assert_eq!(abs.scrub("bad S1gnature"), "bad ***");
        assert_eq!(u.join("ftp://h/x"), Err(UrlError::Scheme));
    }
}
