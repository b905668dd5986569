//! Provider URLs carry secrets: `user:password@` and query values
//! (`?api_key=…`). [`SecretUrl`] keeps the full URL for the one place that
//! needs it (the request in `fetch.rs`) and shows everyone else a redacted
//! form, through `Display` and `Debug` alike, so a URL cannot reach a page,
//! a log line, the journal, `status` or a metric by accident.
//!
//! Redaction: the whole userinfo becomes `***`, every query value `***`
//! (names stay, they help when reading a journal), a fragment `***`. A
//! secret written into the path (`/feed/TOKEN`) cannot be told from a path
//! and is shown; DEPLOYMENT.md says to put secrets in the userinfo or the
//! query. It must not do I/O.

use std::fmt;

const MASK: &str = "***";

/// A URL whose credentials are never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl {
    full: String,
    shown: String,
    /// `host:port`, for messages.
    server: String,
    /// The secret parts as written and percent-decoded, longest first, for
    /// [`SecretUrl::scrub`].
    secrets: Vec<String>,
}

impl SecretUrl {
    /// Parses `url`; only absolute `http` and `https` URLs with a host are
    /// accepted. The error never repeats the URL (it may hold a secret).
    pub fn parse(url: &str) -> Result<SecretUrl, String> {
        let parsed = url::Url::parse(url.trim()).map_err(|e| {
            format!("not a valid URL ({e}); expected http(s)://[user:password@]host[:port]/path[?query]")
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "the URL scheme must be http or https, not `{}`",
                parsed.scheme()
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err("the URL has no host".into());
        }
        let mut secrets = Vec::new();
        let mut push = |s: &str| {
            for v in [s.to_owned(), decode(s)] {
                if v.chars().count() >= 4 && !secrets.contains(&v) {
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
            for pair in q.split('&') {
                if let Some((_, v)) = pair.split_once('=') {
                    push(v);
                }
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
            full: url.trim().to_owned(),
            server,
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

    /// Whether the URL carries anything that is redacted.
    pub fn has_secrets(&self) -> bool {
        self.full != self.shown
    }

    /// `text` (an error message from the HTTP client, say) with every
    /// appearance of this URL's secrets replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.full, &self.shown);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }
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

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
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
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) => format!("{k}={MASK}"),
                None => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if u.fragment().is_some() {
        out.push('#');
        out.push_str(MASK);
    }
    out
}

/// Redacts whatever looks like a URL with credentials in free text (journal
/// rows written by an older planbox, or an imported file's path, which is
/// left as it is): the text itself when it parses as an http(s) URL.
pub fn redact_text(text: &str) -> String {
    match SecretUrl::parse(text) {
        Ok(u) => u.redacted().to_owned(),
        Err(_) => text.to_owned(),
    }
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
        // Percent-encoded secrets are found in their decoded form too.
        let e = SecretUrl::parse("http://h/?k=a%2Fsecret%2B").unwrap();
        assert_eq!(e.scrub("x a/secret+ y"), "x *** y");
    }

    #[test]
    fn only_absolute_http_urls_with_a_host() {
        for bad in ["", "feed.xml", "ftp://h/x", "http://", "mailto:a@b"] {
            let e = SecretUrl::parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        let e = SecretUrl::parse("http://u:TOPSECRET@[bad/x").unwrap_err();
        assert!(!e.contains("TOPSECRET"), "{e}");
        assert_eq!(redact_text("/tmp/feed.xml"), "/tmp/feed.xml");
        assert_eq!(
            redact_text(URL),
            "http://***@host:8080/feed?api_key=***&lang=***#***"
        );
    }
}
