//! Validated configuration and the parsers for its value syntaxes
//! (`500ms`, `30s`, `5m`; `512MiB`, `1GB`; IANA zone names; rates `100/s`;
//! IP networks `10.0.0.0/8`; provider entries `name=…,url=…`), and
//! [`ConfigError`], the typed reasons a value is refused.
//!
//! Owns defaults and validation; `cli.rs` maps flags and `PLANBOX_*`
//! variables onto these types. Nothing here does I/O. A provider entry holds
//! a URL, and URLs hold credentials: no error repeats any part of an entry
//! (a name only once it is known to be a valid name).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;

use crate::secret::{SecretUrl, UrlError};

/// Why a configuration value was refused. Values that hold no secret
/// (durations, sizes, zones, rates, networks of flags and variables) are
/// repeated to help; nothing of a provider entry is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("`{0}` is not a duration (examples: 500ms, 30s, 5m, 1h)")]
    Duration(String),
    #[error("`{0}`: unknown unit (use ms, s, m, h or d)")]
    DurationUnit(String),
    #[error("`{0}` is not a size (examples: 512MiB, 1GB, 1048576)")]
    Size(String),
    #[error("`{0}`: unknown unit (use KiB, MiB, GiB, KB, MB or GB)")]
    SizeUnit(String),
    #[error("`{0}` is out of range")]
    SizeRange(String),
    #[error("`{0}` is not an IANA time zone name (e.g. UTC, Europe/Madrid)")]
    TimeZone(String),
    #[error("`{0}` is not a rate (examples: 100/s, 30/m)")]
    Rate(String),
    #[error("`{0}`: use N/s or N/m, e.g. 100/s")]
    RateUnit(String),
    #[error("`{0}`: the rate must be above zero")]
    RateZero(String),
    #[error("`{0}` is not an IP network (examples: 10.0.0.0/8, 192.168.1.5, ::1/128)")]
    Cidr(String),
    /// A provider entry that is refused; `error` says why.
    #[error("provider {at}")]
    Entry {
        at: EntryAt,
        #[source]
        error: EntryError,
    },
    #[error("provider `{0}` is configured twice; names must be unique")]
    ProviderTwice(String),
    #[error("no provider entry (expected {ENTRY_SYNTAX}, separated by whitespace)")]
    NoProvider,
    #[error("--provider-name must not be empty")]
    EmptyProviderName,
    #[error("--provider-url is refused")]
    ProviderUrl(#[source] UrlError),
    #[error(
        "--demo serves the built-in feeds; drop --provider-url, --provider and --providers-file"
    )]
    DemoWithProviders,
    #[error(
        "providers are given both by --provider (or PLANBOX_PROVIDERS) and --providers-file; use one"
    )]
    ProvidersTwice,
    #[error("--provider-url is the one-provider shorthand: with --provider, PLANBOX_PROVIDERS or --providers-file, give every URL as url= there")]
    ShorthandWithEntries,
    #[error("--fetch-interval must be above zero")]
    ZeroInterval,
    #[error("--workers must be between 1 and 1024")]
    Workers,
    #[error("--max-connections must be between 1 and 1048576")]
    MaxConnections,
}

/// Which provider entry an error is about: its name once that is known to
/// be valid, else its place in the list (1 is the first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryAt {
    Named(String),
    Number(usize),
}

impl std::fmt::Display for EntryAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryAt::Named(name) => write!(f, "`{name}`"),
            EntryAt::Number(n) => write!(f, "entry {n}"),
        }
    }
}

/// What is wrong with one provider entry. Never holds any of its text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("expected {ENTRY_SYNTAX}")]
    Syntax,
    #[error("a key other than name=, url=, timezone= or ca= (expected {ENTRY_SYNTAX})")]
    UnknownKey,
    #[error("`{0}=` given twice")]
    Twice(&'static str),
    #[error("no name= (expected {ENTRY_SYNTAX})")]
    NoName,
    #[error("the name is invalid: use lowercase letters, digits, `_` and `-`")]
    BadName,
    #[error("no url= (expected {ENTRY_SYNTAX})")]
    NoUrl,
    #[error("url= is refused")]
    Url(#[source] UrlError),
    #[error("timezone= is not an IANA time zone name (e.g. UTC, Europe/Madrid)")]
    TimeZone,
    #[error("ca= is empty")]
    EmptyCa,
}

/// Splits `512MiB` into `(512, "MiB")`; `bad` is the error for a missing
/// number.
fn number_and_unit(s: &str, bad: fn(String) -> ConfigError) -> Result<(u64, &str), ConfigError> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n = num.parse().map_err(|_| bad(s.to_owned()))?;
    Ok((n, unit.trim()))
}

/// Parses `500ms`, `30s`, `5m`, `2h`, `1d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    let s = s.trim();
    let (n, unit) = number_and_unit(s, ConfigError::Duration)?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(ConfigError::DurationUnit(s.to_owned())),
    };
    Ok(d)
}

/// Parses a size: `1048576`, `64KiB`, `512MiB`, `1GiB`, `10MB`, `1GB`.
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    let s = s.trim();
    let (n, unit) = number_and_unit(s, ConfigError::Size)?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(ConfigError::SizeUnit(s.to_owned())),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| ConfigError::SizeRange(s.to_owned()))
}

/// Parses an IANA time zone name (`Europe/Madrid`, `UTC`).
pub fn parse_tz(s: &str) -> Result<Tz, ConfigError> {
    s.trim()
        .parse::<Tz>()
        .map_err(|_| ConfigError::TimeZone(s.to_owned()))
}

/// A request rate: `N/s` or `N/m` (a bare `N` is per second). The burst is
/// `N` requests (at least one).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl FromStr for RateLimit {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<RateLimit, ConfigError> {
        let t = s.trim();
        let (num, per) = match t.split_once('/') {
            Some((n, "s")) => (n, 1.0),
            Some((n, "m")) => (n, 60.0),
            Some(_) => return Err(ConfigError::RateUnit(s.to_owned())),
            None => (t, 1.0),
        };
        let n: u32 = num
            .trim()
            .parse()
            .map_err(|_| ConfigError::Rate(s.to_owned()))?;
        if n == 0 {
            return Err(ConfigError::RateZero(s.to_owned()));
        }
        Ok(RateLimit {
            per_second: f64::from(n) / per,
            burst: f64::from(n).max(1.0),
        })
    }
}

/// An IP network (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (width - prefix)
            }
        }
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix, 32)
                    == masked(u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Cidr, ConfigError> {
        let t = s.trim();
        let bad = || ConfigError::Cidr(s.to_owned());
        let (addr, prefix) = t.split_once('/').map_or((t, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let addr = addr.to_canonical();
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(bad)?,
        };
        Ok(Cidr { addr, prefix })
    }
}

/// Parses `CIDR,CIDR,...` (empty items ignored).
pub fn parse_cidrs(s: &str) -> Result<Vec<Cidr>, ConfigError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// Everything `serve` runs with.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the status page (`/`) only on this address.
    pub status_listen: Option<SocketAddr>,
    pub db: PathBuf,
    /// The providers, names unique; one entry without a URL means "serve
    /// the store as it is".
    pub providers: Vec<ProviderConfig>,
    /// Read the providers from this file instead (resolved by the caller,
    /// see [`parse_provider_list`]); `providers` then holds only defaults.
    pub providers_file: Option<PathBuf>,
    /// What an entry leaves out (timezone, timeouts, size limit).
    pub provider_defaults: ProviderConfig,
    pub fetch_interval: Duration,
    /// How long an HTTP cache in front may reuse a `/search` answer
    /// (`Cache-Control: max-age`); the fetch interval unless set.
    pub cache_max_age: Duration,
    pub max_backoff: Duration,
    pub workers: usize,
    /// Open client connections on the main listener (see
    /// `server::ServerConfig::max_connections`).
    pub max_connections: usize,
    pub demo: bool,
    pub rate_limit: Option<RateLimit>,
    pub trusted_proxies: Vec<Cidr>,
}

/// Where and how to fetch one provider.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// `None`: serve the store as it is, without fetching.
    pub url: Option<SecretUrl>,
    pub name: String,
    pub timezone: Tz,
    /// A PEM bundle trusted for this provider, besides the system store.
    pub ca: Option<PathBuf>,
    pub fetch_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_feed_bytes: u64,
}

/// A provider name: `[a-z0-9_-]+` (it is part of every plan's id and a
/// metric label).
fn is_provider_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

const ENTRY_KEYS: [&str; 4] = ["name", "url", "timezone", "ca"];
const ENTRY_SYNTAX: &str = "name=NAME,url=URL[,timezone=TZ][,ca=FILE]";

/// Parses one `name=NAME,url=URL[,timezone=TZ][,ca=FILE]`, the `number`th
/// of its list (1 is the first; errors name an entry by it until its name
/// is known). A value runs until the next `,name=`, `,url=`, `,timezone=`
/// or `,ca=`, so a URL may hold commas. Errors repeat nothing of the entry.
pub fn parse_provider_entry(
    entry: &str,
    number: usize,
    defaults: &ProviderConfig,
) -> Result<ProviderConfig, ConfigError> {
    let refuse = |at: EntryAt, error: EntryError| ConfigError::Entry { at, error };
    let unnamed = |error| refuse(EntryAt::Number(number), error);
    let entry = entry.trim();
    // Positions where a key starts: 0 and after every `,KEY=`.
    let mut starts = vec![0];
    for (i, _) in entry.match_indices(',') {
        let rest = &entry[i + 1..];
        if ENTRY_KEYS
            .iter()
            .any(|k| rest.starts_with(k) && rest[k.len()..].starts_with('='))
        {
            starts.push(i + 1);
        }
    }
    let mut fields: Vec<(&'static str, &str)> = Vec::new();
    for (n, &at) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(entry.len(), |next| next - 1);
        let part = &entry[at..end];
        let Some((key, value)) = part.split_once('=') else {
            return Err(unnamed(EntryError::Syntax));
        };
        let Some(&key) = ENTRY_KEYS.iter().find(|k| **k == key) else {
            return Err(unnamed(EntryError::UnknownKey));
        };
        if fields.iter().any(|(k, _)| *k == key) {
            return Err(unnamed(EntryError::Twice(key)));
        }
        fields.push((key, value));
    }
    let get = |k: &str| fields.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let name = get("name").ok_or_else(|| unnamed(EntryError::NoName))?;
    if !is_provider_name(name) {
        return Err(unnamed(EntryError::BadName));
    }
    let named = |error| refuse(EntryAt::Named(name.to_owned()), error);
    let url = get("url").ok_or_else(|| named(EntryError::NoUrl))?;
    let url = SecretUrl::parse(url).map_err(|e| named(EntryError::Url(e)))?;
    let timezone = match get("timezone") {
        Some(tz) => tz
            .trim()
            .parse::<Tz>()
            .map_err(|_| named(EntryError::TimeZone))?,
        None => defaults.timezone,
    };
    let ca = match get("ca") {
        Some("") => return Err(named(EntryError::EmptyCa)),
        Some(f) => Some(PathBuf::from(f)),
        None => None,
    };
    Ok(ProviderConfig {
        url: Some(url),
        name: name.to_owned(),
        timezone,
        ca,
        ..defaults.clone()
    })
}

/// Parses provider entries separated by whitespace (newlines included);
/// in a file, `#` starts a comment that runs to the end of its line.
/// Names must be unique and at least one entry given.
pub fn parse_provider_list(
    text: &str,
    defaults: &ProviderConfig,
) -> Result<Vec<ProviderConfig>, ConfigError> {
    let mut out: Vec<ProviderConfig> = Vec::new();
    for line in text.lines() {
        // A comment's `#` starts the line or follows whitespace; a `#`
        // inside a URL (a fragment) does not.
        let comment = line
            .match_indices('#')
            .map(|(i, _)| i)
            .find(|&i| i == 0 || line[..i].ends_with(char::is_whitespace));
        let line = comment.map_or(line, |i| &line[..i]);
        for entry in line.split_whitespace() {
            let p = parse_provider_entry(entry, out.len() + 1, defaults)?;
            if out.iter().any(|o| o.name == p.name) {
                return Err(ConfigError::ProviderTwice(p.name));
            }
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(ConfigError::NoProvider);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "fast", "5 minutes", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_duration("5 minutes"),
            Err(ConfigError::DurationUnit("5 minutes".into()))
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1024"), Ok(1024));
        for bad in ["", "0", "lots", "1TiB", "99999999999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn zones() {
        assert!(parse_tz("Europe/Madrid").is_ok());
        assert!(parse_tz("UTC").is_ok());
        assert!(parse_tz("Mars/Olympus").is_err());
    }

    fn defaults() -> ProviderConfig {
        ProviderConfig {
            url: None,
            name: "provider".into(),
            timezone: Tz::UTC,
            ca: None,
            fetch_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_feed_bytes: 1 << 20,
        }
    }

    /// The message with its causes, as `planbox` prints it.
    fn chain(e: &ConfigError) -> String {
        crate::log::chain(e)
    }

    #[test]
    fn provider_entries_parse_with_commas_in_urls() {
        let d = defaults();
        let p = parse_provider_entry(
            "name=a,url=http://u:pw@h/feed?x=1,2&k=v,timezone=Europe/Madrid,ca=/etc/ca.pem",
            1,
            &d,
        )
        .unwrap();
        assert_eq!(p.name, "a");
        assert_eq!(
            p.url.as_ref().unwrap().expose(),
            "http://u:pw@h/feed?x=1,2&k=v"
        );
        assert_eq!(p.timezone, chrono_tz::Europe::Madrid);
        assert_eq!(p.ca, Some(PathBuf::from("/etc/ca.pem")));
        // Any order; timezone defaults to the one-provider flag's.
        let q = parse_provider_entry("url=https://h/x,name=b-2_c", 1, &d).unwrap();
        assert_eq!((q.name.as_str(), q.timezone), ("b-2_c", Tz::UTC));
    }

    #[test]
    fn provider_entries_are_validated_without_leaking_urls() {
        let d = defaults();
        for (bad, says) in [
            (
                "name=A,url=http://h/",
                "provider entry 1: the name is invalid",
            ),
            (
                "name=,url=http://h/",
                "provider entry 1: the name is invalid",
            ),
            ("url=http://h/", "provider entry 1: no name="),
            ("name=a", "provider `a`: no url="),
            (
                "name=a,url=ftp://TOPSECRET@h/",
                "provider `a`: url= is refused: the URL scheme must be http or https",
            ),
            (
                "name=a,url=http://h:99999/",
                "provider `a`: url= is refused: not a valid URL",
            ),
            (
                "name=a,url=http://h/,timezone=Mars/Base",
                "provider `a`: timezone= is not an IANA",
            ),
            ("colour=red,name=a,url=http://h/", "a key other than name="),
            ("name=a,name=b,url=http://h/", "`name=` given twice"),
            ("name=a,url=http://h/,ca=", "ca= is empty"),
            ("nonsense", "provider entry 1: expected name=NAME"),
        ] {
            let e = chain(&parse_provider_entry(bad, 1, &d).unwrap_err());
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("TOPSECRET"), "{e}");
        }
        let e = parse_provider_list("name=a,url=http://h/ name=a,url=http://g/", &d).unwrap_err();
        assert_eq!(e, ConfigError::ProviderTwice("a".into()));
        assert!(e.to_string().contains("`a` is configured twice"), "{e}");
        assert_eq!(
            parse_provider_list("  # nothing\n", &d).unwrap_err(),
            ConfigError::NoProvider
        );
    }

    #[test]
    fn a_malformed_provider_entry_never_echoes_its_url() {
        let d = defaults();
        let secret = "https://u:S3cretPw@h/x?key=S3cretKey&S3cretTok";
        for bad in [
            // No key at all: the URL alone, or where the name should be.
            secret.to_owned(),
            format!("name={secret}"),
            format!("name=a;url={secret}"),
            // A URL where the name belongs.
            format!("name=a,{}", &secret[8..]),
            format!("name=a,url={secret},tz=UTC,ca="),
            format!("name=a,url={secret},timezone={secret}"),
            format!("name=a,url={secret},name=b"),
            format!("name=a,url=ftp{}", &secret[5..]),
            "name=a,url=https://u:S3cretPw@[h/x?key=S3cretKey".to_owned(),
        ] {
            let e = chain(&parse_provider_list(&bad, &d).unwrap_err());
            assert!(!e.contains("S3cret"), "{bad}: {e}");
            assert!(e.starts_with("provider "), "{bad}: {e}");
        }
        // Later entries are named by their place until their name is known.
        let e = parse_provider_list("name=a,url=http://h/\nname=a,url=http://g/ S3cretTok", &d)
            .unwrap_err();
        assert_eq!(e, ConfigError::ProviderTwice("a".into()));
        let e = parse_provider_list("name=a,url=http://h/\nS3cretTok", &d).unwrap_err();
        assert_eq!(
            chain(&e),
            "provider entry 2: expected name=NAME,url=URL[,timezone=TZ][,ca=FILE]"
        );
    }

    #[test]
    fn provider_lists_take_whitespace_newlines_and_comments() {
        let text = "# planbox providers\nname=a,url=http://h/a#frag   # the first\n\tname=b,url=http://h/b,timezone=Europe/Madrid\n";
        let ps = parse_provider_list(text, &defaults()).unwrap();
        let names: Vec<_> = ps.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(ps[0].url.as_ref().unwrap().expose(), "http://h/a#frag");
    }

    #[test]
    fn rates_parse() {
        assert_eq!(
            "100/s".parse::<RateLimit>(),
            Ok(RateLimit {
                per_second: 100.0,
                burst: 100.0
            })
        );
        assert_eq!("30/m".parse::<RateLimit>().unwrap().per_second, 0.5);
        assert_eq!("7".parse::<RateLimit>().unwrap().burst, 7.0);
        for bad in ["", "0/s", "fast", "10/h", "-1/s", "1.5/s"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
        assert_eq!(
            "10/h".parse::<RateLimit>(),
            Err(ConfigError::RateUnit("10/h".into()))
        );
    }

    #[test]
    fn cidrs_parse_and_match() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let n: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains(ip("10.200.1.2")));
        assert!(!n.contains(ip("11.0.0.1")));
        assert!(n.contains(ip("::ffff:10.1.2.3")), "v4-mapped v6 peers");
        let one: Cidr = "192.168.1.5".parse().unwrap();
        assert!(one.contains(ip("192.168.1.5")));
        assert!(!one.contains(ip("192.168.1.6")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "10.0.0/8", "localhost", "::1/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(parse_cidrs("10.0.0.0/8, ::1").unwrap().len(), 2);
        assert_eq!(
            parse_cidrs("10.0.0.0/8,nope"),
            Err(ConfigError::Cidr("nope".into()))
        );
    }
}
