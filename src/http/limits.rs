//! Who may ask how often: the per-client token-bucket rate limit, trusted
//! proxies (CIDR lists) and the client address behind them.
//!
//! Must not touch sockets or know about requests beyond an address and an
//! `X-Forwarded-For` value.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{Cidr, RateLimit};

/// Most clients the rate limiter tracks at once (about 40 bytes each).
pub const RATE_LIMIT_MAX_CLIENTS: usize = 65_536;

/// The client's address: the TCP peer, unless the peer is a trusted proxy;
/// then the rightmost `X-Forwarded-For` hop that is not itself trusted (a
/// client can write anything at the left end of that header, so hops left
/// of the first untrusted one are ignored).
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(client) {
        return client;
    }
    let Some(xff) = forwarded_for else {
        return client;
    };
    for hop in xff.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !is_trusted(client) {
                    return client;
                }
            }
            Err(_) => return client,
        }
    }
    client
}

/// Token buckets per client address, with bounded memory: when the table
/// is full, buckets that have refilled (the same as no bucket) are dropped;
/// if every tracked client is still limited, the table starts afresh.
pub struct RateLimiter {
    limit: RateLimit,
    max_clients: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(limit: RateLimit, max_clients: usize) -> RateLimiter {
        RateLimiter {
            limit,
            max_clients: max_clients.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `ip` at `now`, or says how long until the next one.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let Ok(mut map) = self.buckets.lock() else {
            return Ok(());
        };
        let RateLimit { per_second, burst } = self.limit;
        let refill = |b: &Bucket| {
            (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second).min(burst)
        };
        if map.len() >= self.max_clients && !map.contains_key(&ip) {
            map.retain(|_, b| refill(b) < burst);
            if map.len() >= self.max_clients {
                map.clear();
            }
        }
        let b = map.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let tokens = refill(b);
        if tokens >= 1.0 {
            *b = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *b = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) / per_second))
        }
    }

    /// Clients currently tracked.
    pub fn clients(&self) -> usize {
        self.buckets.lock().map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_cidrs;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn token_buckets_refill_per_client() {
        let l = RateLimiter::new("2/s".parse().unwrap(), 100);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert!(l.check(a, t0).is_ok());
        assert!(l.check(a, t0).is_ok());
        let wait = l.check(a, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another client has its own bucket.
        assert!(l.check(ip("192.0.2.2"), t0).is_ok());
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.check(a, t1).is_ok());
        assert!(l.check(a, t1).is_err());
    }

    #[test]
    fn rate_limiter_memory_is_bounded() {
        let l = RateLimiter::new("1/m".parse().unwrap(), 64);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let _ = l.check(IpAddr::V4(i.into()), t0);
            assert!(l.clients() <= 64);
        }
        // When full, refilled buckets are dropped first; limited clients stay
        // limited.
        let l = RateLimiter::new("1/s".parse().unwrap(), 2);
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        l.check(a, t0).unwrap();
        let t1 = t0 + Duration::from_secs(2);
        l.check(b, t1).unwrap();
        l.check(c, t1).unwrap();
        assert_eq!(l.clients(), 2);
        assert!(l.check(b, t1).is_err(), "b was kept, and is still limited");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let trusted = parse_cidrs("10.0.0.0/8").unwrap();
        let xff = Some("203.0.113.9, 198.51.100.1, 10.1.1.1");
        // Untrusted peer: its claim is ignored.
        assert_eq!(client_ip(ip("192.0.2.7"), xff, &trusted), ip("192.0.2.7"));
        // Trusted peer: the rightmost untrusted hop, not the spoofable left end.
        assert_eq!(client_ip(ip("10.0.0.2"), xff, &trusted), ip("198.51.100.1"));
        assert_eq!(client_ip(ip("10.0.0.2"), None, &trusted), ip("10.0.0.2"));
        // Garbage stops the walk at the last good hop.
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some("junk, 10.3.3.3"), &trusted),
            ip("10.3.3.3")
        );
        // Nothing trusted: never believed.
        assert_eq!(client_ip(ip("10.0.0.2"), xff, &[]), ip("10.0.0.2"));
    }
}
