//! Validated configuration and the parsers for its value syntaxes
//! (`500ms`, `30s`, `5m`; `512MiB`, `1GB`; IANA zone names).
//!
//! Owns defaults and validation; `cli.rs` maps flags and `PLANBOX_*`
//! variables onto these types. Nothing here does I/O.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;

use crate::secret::SecretUrl;

/// Splits `512MiB` into `(512, "MiB")`; `what` names the syntax in errors.
fn number_and_unit<'a>(s: &'a str, what: &str) -> Result<(u64, &'a str), String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n = num.parse().map_err(|_| format!("`{s}` is not {what}"))?;
    Ok((n, unit.trim()))
}

/// Parses `500ms`, `30s`, `5m`, `2h`, `1d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = number_and_unit(s, "a duration (examples: 500ms, 30s, 5m, 1h)")?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(format!("`{s}`: unknown unit (use ms, s, m, h or d)")),
    };
    Ok(d)
}

/// Parses a size: `1048576`, `64KiB`, `512MiB`, `1GiB`, `10MB`, `1GB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (n, unit) = number_and_unit(s, "a size (examples: 512MiB, 1GB, 1048576)")?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit (use KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("`{s}` is out of range"))
}

/// Parses an IANA time zone name (`Europe/Madrid`, `UTC`).
pub fn parse_tz(s: &str) -> Result<Tz, String> {
    s.trim()
        .parse::<Tz>()
        .map_err(|_| format!("`{s}` is not an IANA time zone name (e.g. UTC, Europe/Madrid)"))
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
    pub demo: bool,
    pub rate_limit: Option<crate::server::RateLimit>,
    pub trusted_proxies: Vec<crate::server::Cidr>,
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
pub fn check_provider_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(format!(
            "provider name `{}` is invalid: use lowercase letters, digits, `_` and `-`",
            name.chars().take(64).collect::<String>()
        ))
    }
}

const ENTRY_KEYS: [&str; 4] = ["name", "url", "timezone", "ca"];
const ENTRY_SYNTAX: &str = "name=NAME,url=URL[,timezone=TZ][,ca=FILE]";

/// Parses one `name=NAME,url=URL[,timezone=TZ][,ca=FILE]`. A value runs
/// until the next `,name=`, `,url=`, `,timezone=` or `,ca=`, so a URL may
/// hold commas. Errors never repeat the URL (it may hold credentials).
pub fn parse_provider_entry(
    entry: &str,
    defaults: &ProviderConfig,
) -> Result<ProviderConfig, String> {
    let entry = entry.trim();
    // Positions where a key starts: 0 and after every `,KEY=`.
    let mut starts = vec![0];
    for (i, _) in entry.match_indices(',') {
        let rest = &entry[i + 1..];
        if ENTRY_KEYS
            .iter()
            .any(|k| rest.starts_with(&format!("{k}=")))
        {
            starts.push(i + 1);
        }
    }
    let mut fields: Vec<(&str, &str)> = Vec::new();
    for (n, &at) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(entry.len(), |next| next - 1);
        let part = &entry[at..end];
        let Some((key, value)) = part.split_once('=') else {
            return Err(format!("provider entry: expected {ENTRY_SYNTAX}"));
        };
        if !ENTRY_KEYS.contains(&key) {
            return Err(format!(
                "provider entry: unknown key `{}` (expected {ENTRY_SYNTAX})",
                key.chars().take(32).collect::<String>()
            ));
        }
        if fields.iter().any(|(k, _)| *k == key) {
            return Err(format!("provider entry: `{key}=` given twice"));
        }
        fields.push((key, value));
    }
    let get = |k: &str| fields.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let name = get("name")
        .ok_or_else(|| format!("provider entry without name= (expected {ENTRY_SYNTAX})"))?;
    check_provider_name(name)?;
    let url = get("url")
        .ok_or_else(|| format!("provider `{name}`: no url= (expected {ENTRY_SYNTAX})"))?;
    let url = SecretUrl::parse(url).map_err(|e| format!("provider `{name}`: url= is {e}"))?;
    let timezone = match get("timezone") {
        Some(tz) => parse_tz(tz).map_err(|e| format!("provider `{name}`: timezone={e}"))?,
        None => defaults.timezone,
    };
    let ca = match get("ca") {
        Some("") => return Err(format!("provider `{name}`: ca= is empty")),
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
) -> Result<Vec<ProviderConfig>, String> {
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
            let p = parse_provider_entry(entry, defaults)?;
            if out.iter().any(|o| o.name == p.name) {
                return Err(format!(
                    "provider `{}` is configured twice; names must be unique",
                    p.name
                ));
            }
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(format!(
            "no provider entry (expected {ENTRY_SYNTAX}, separated by whitespace)"
        ));
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

    #[test]
    fn provider_entries_parse_with_commas_in_urls() {
        let d = defaults();
        let p = parse_provider_entry(
            "name=a,url=http://u:pw@h/feed?x=1,2&k=v,timezone=Europe/Madrid,ca=/etc/ca.pem",
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
        let q = parse_provider_entry("url=https://h/x,name=b-2_c", &d).unwrap();
        assert_eq!((q.name.as_str(), q.timezone), ("b-2_c", Tz::UTC));
    }

    #[test]
    fn provider_entries_are_validated_without_leaking_urls() {
        let d = defaults();
        for (bad, says) in [
            ("name=A,url=http://h/", "provider name `A` is invalid"),
            ("name=,url=http://h/", "provider name `` is invalid"),
            ("url=http://h/", "without name="),
            ("name=a", "no url="),
            (
                "name=a,url=ftp://TOPSECRET@h/",
                "scheme must be http or https",
            ),
            (
                "name=a,url=http://h/,timezone=Mars/Base",
                "timezone=`Mars/Base` is not an IANA",
            ),
            ("colour=red,name=a,url=http://h/", "unknown key `colour`"),
            ("name=a,name=b,url=http://h/", "given twice"),
            ("name=a,url=http://h/,ca=", "ca= is empty"),
            ("nonsense", "expected name=NAME"),
        ] {
            let e = parse_provider_entry(bad, &d).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("TOPSECRET"), "{e}");
        }
        let e = parse_provider_list("name=a,url=http://h/ name=a,url=http://g/", &d).unwrap_err();
        assert!(e.contains("`a` is configured twice"), "{e}");
        assert!(parse_provider_list("  # nothing\n", &d)
            .unwrap_err()
            .contains("no provider entry"));
    }

    #[test]
    fn provider_lists_take_whitespace_newlines_and_comments() {
        let text = "# planbox providers\nname=a,url=http://h/a#frag   # the first\n\tname=b,url=http://h/b,timezone=Europe/Madrid\n";
        let ps = parse_provider_list(text, &defaults()).unwrap();
        let names: Vec<_> = ps.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(ps[0].url.as_ref().unwrap().expose(), "http://h/a#frag");
    }
}
