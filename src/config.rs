//! Validated configuration and the parsers for its value syntaxes
//! (`500ms`, `30s`, `5m`; `512MiB`, `1GB`; IANA zone names).
//!
//! Owns defaults and validation; `cli.rs` maps flags and `PLANBOX_*`
//! variables onto these types. Nothing here does I/O.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;

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
    pub db: PathBuf,
    pub provider: ProviderConfig,
    pub fetch_interval: Duration,
    pub max_backoff: Duration,
    pub workers: usize,
    pub demo: bool,
    pub rate_limit: Option<crate::server::RateLimit>,
    pub trusted_proxies: Vec<crate::server::Cidr>,
}

/// Where and how to fetch.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// `None`: serve the store as it is, without fetching.
    pub url: Option<String>,
    pub name: String,
    pub timezone: Tz,
    pub fetch_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_feed_bytes: u64,
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
}
