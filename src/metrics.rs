//! Process metrics and their Prometheus text rendering (PRODUCT.md §3).
//!
//! Owns the counters the HTTP workers and the fetch loop bump: requests by
//! route and status, a request-duration histogram per route, fetch runs by
//! provider and outcome, feed items skipped and values repaired by reason,
//! plans searchable and each provider's last successful fetch, and the
//! connection layer's open, accepted and closed connections by listener
//! ([`ConnCounters`]). Lock-free on the request path except one uncontended
//! mutex for the (route, status) map; the connection counters are plain
//! atomics. This module must not touch the store or the network.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::check_state::StoreCheck;
use crate::model::{FetchRun, Outcome};

/// The routes planbox serves, as metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    Search,
    Health,
    Ready,
    Metrics,
    OpenApi,
    Status,
    Other,
}

impl Route {
    pub const ALL: [Route; 7] = [
        Route::Search,
        Route::Health,
        Route::Ready,
        Route::Metrics,
        Route::OpenApi,
        Route::Status,
        Route::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Route::Search => "/search",
            Route::Health => "/health",
            Route::Ready => "/ready",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.yaml",
            Route::Status => "/",
            Route::Other => "other",
        }
    }
}

/// The HTTP listeners, as the `listener` label of the connection series:
/// the API's front, and the operator listeners of `--metrics-listen` and
/// `--status-listen` (one front, labelled `metrics`, when both name the
/// same address). Each front counts under its own label, so a flood of
/// clients on the API's port shows apart from the scrapes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Listener {
    #[default]
    Main,
    Metrics,
    Status,
}

impl Listener {
    pub const ALL: [Listener; 3] = [Listener::Main, Listener::Metrics, Listener::Status];

    pub fn label(self) -> &'static str {
        match self {
            Listener::Main => "main",
            Listener::Metrics => "metrics",
            Listener::Status => "status",
        }
    }
}

/// Why the connection layer closed a connection it had accepted (the
/// `reason` label of `planbox_http_connections_closed_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The client closed it while planbox waited for a request.
    ClientClosed,
    /// Kept alive with nothing sent for `idle_timeout`.
    IdleTimeout,
    /// A request head (or a body being dropped) not whole within
    /// `idle_timeout` of its first byte.
    HeadTimeout,
    /// Closed after an answer: the client asked (`Connection: close`,
    /// HTTP/1.0), the answer was an error that ends the connection, or
    /// writing it failed.
    AfterAnswer,
    /// 414: the request line was over the limit.
    LineTooLong,
    /// 431: the request head was over the limit.
    HeadTooLarge,
    /// 503: unfinished heads held more than the head budget; this one was
    /// among the largest.
    HeadBudget,
    /// 503: the worker queue was full.
    Overloaded,
    /// Idle, closed to make room for a new connection at the cap.
    Evicted,
    /// 503 (or closed unanswered): a new connection at the cap, with no
    /// idle connection to close instead.
    Refused,
    /// A socket error.
    Error,
    /// Closed because the server stops.
    Shutdown,
}

impl Closed {
    pub const ALL: [Closed; 12] = [
        Closed::ClientClosed,
        Closed::IdleTimeout,
        Closed::HeadTimeout,
        Closed::AfterAnswer,
        Closed::LineTooLong,
        Closed::HeadTooLarge,
        Closed::HeadBudget,
        Closed::Overloaded,
        Closed::Evicted,
        Closed::Refused,
        Closed::Error,
        Closed::Shutdown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Closed::ClientClosed => "client_closed",
            Closed::IdleTimeout => "idle_timeout",
            Closed::HeadTimeout => "head_timeout",
            Closed::AfterAnswer => "after_answer",
            Closed::LineTooLong => "line_too_long",
            Closed::HeadTooLarge => "head_too_large",
            Closed::HeadBudget => "head_budget",
            Closed::Overloaded => "overloaded",
            Closed::Evicted => "evicted",
            Closed::Refused => "refused",
            Closed::Error => "error",
            Closed::Shutdown => "shutdown",
        }
    }
}

/// One listener's connection counters, bumped by its poller thread: one
/// relaxed atomic add per accepted and per closed connection. The open
/// gauge is what was accepted and not closed yet (closing connections
/// lingering after a last answer are no longer open), so it needs no
/// counter of its own and cannot drift from the two it is made of.
#[derive(Default)]
pub struct ConnCounters {
    accepted: AtomicU64,
    closed: [AtomicU64; Closed::ALL.len()],
    /// The cap in force; 0 until the listener starts (its series are left
    /// out until then).
    max: AtomicU64,
    /// Worker threads running, spare workers included: moved by the pool as
    /// workers start and end (one add each, never read by the pool).
    workers: AtomicI64,
    /// Workers whose write waits for a client that does not read.
    stalled: AtomicI64,
}

impl ConnCounters {
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Relaxed);
    }

    pub fn closed(&self, why: Closed) {
        self.closed[why as usize].fetch_add(1, Relaxed);
    }

    /// The listener runs with this connection cap.
    pub fn started(&self, max_connections: usize) {
        self.max.store(max_connections as u64, Relaxed);
    }

    /// Connections accepted and not closed yet.
    pub fn open(&self) -> u64 {
        let closed: u64 = self.closed.iter().map(|c| c.load(Relaxed)).sum();
        self.accepted.load(Relaxed).saturating_sub(closed)
    }

    pub fn closed_for(&self, why: Closed) -> u64 {
        self.closed[why as usize].load(Relaxed)
    }

    /// A worker thread of this listener's pool started (`1`) or ended (`-1`).
    pub fn workers_moved(&self, by: i64) {
        self.workers.fetch_add(by, Relaxed);
    }

    /// A worker's write began (`1`) or ended (`-1`) waiting for its client.
    pub fn stalled_moved(&self, by: i64) {
        self.stalled.fetch_add(by, Relaxed);
    }

    fn workers(&self) -> u64 {
        self.workers.load(Relaxed).max(0) as u64
    }

    fn stalled(&self) -> u64 {
        self.stalled.load(Relaxed).max(0) as u64
    }
}

/// Upper bounds (seconds) of the latency histogram buckets.
pub const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(Route, u16), u64>>,
    durations: [Histogram; Route::ALL.len()],
    /// By provider name.
    providers: Mutex<BTreeMap<String, ProviderCounters>>,
    /// ("skipped" | "repaired", provider, reason) -> count, over all fetch
    /// runs.
    feed_damage: Mutex<BTreeMap<(&'static str, String, String), u64>>,
    plans_searchable: AtomicU64,
    /// The store's files and their filesystem, read at each scrape.
    store_space: Mutex<Option<StoreSpace>>,
    /// By [`Listener`].
    connections: [Arc<ConnCounters>; Listener::ALL.len()],
}

/// Bytes of the store's files and of the filesystem they are on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct StoreSpace {
    db: u64,
    wal: u64,
    fs_avail: u64,
    fs_size: u64,
}

#[derive(Default)]
struct ProviderCounters {
    fetch_runs: [u64; Outcome::ALL.len()],
    /// Unix seconds of the last successful fetch; 0 = never.
    last_success: i64,
    plans_searchable: u64,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// The connection counters of `listener`, for its poller.
    pub fn connections(&self, listener: Listener) -> Arc<ConnCounters> {
        self.connections[listener as usize].clone()
    }

    pub fn observe_request(&self, route: Route, status: u16, elapsed: Duration) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((route, status)).or_default() += 1;
        }
        let h = &self.durations[route as usize];
        let secs = elapsed.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.buckets[i].fetch_add(1, Relaxed);
            }
        }
        h.count.fetch_add(1, Relaxed);
        h.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    /// Makes `provider`'s series appear (at zero) before its first fetch.
    pub fn register_provider(&self, provider: &str) {
        if let Ok(mut map) = self.providers.lock() {
            map.entry(provider.to_owned()).or_default();
        }
    }

    /// Counts the items a fetch run skipped and the values it repaired.
    pub fn observe_damage(&self, run: &FetchRun) {
        let Ok(mut map) = self.feed_damage.lock() else {
            return;
        };
        for (kind, counts) in [("skipped", &run.skipped), ("repaired", &run.repaired)] {
            for (reason, n) in counts {
                *map.entry((kind, run.provider.clone(), reason.clone()))
                    .or_default() += n;
            }
        }
    }

    pub fn observe_fetch(&self, provider: &str, outcome: Outcome, finished_unix: i64) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        if let Ok(mut map) = self.providers.lock() {
            let c = map.entry(provider.to_owned()).or_default();
            c.fetch_runs[i] += 1;
            if outcome.is_success() {
                c.last_success = c.last_success.max(finished_unix);
            }
        }
    }

    /// Seeds a provider's last-success time from the journal at start.
    pub fn set_last_success(&self, provider: &str, unix: i64) {
        if let Ok(mut map) = self.providers.lock() {
            let c = map.entry(provider.to_owned()).or_default();
            c.last_success = c.last_success.max(unix);
        }
    }

    /// Plans of `provider` a search can return (from the store's counters).
    pub fn set_provider_plans_searchable(&self, provider: &str, n: u64) {
        if let Ok(mut map) = self.providers.lock() {
            map.entry(provider.to_owned()).or_default().plans_searchable = n;
        }
    }

    /// The last successful fetch of `provider`.
    pub fn last_success(&self, provider: &str) -> Option<i64> {
        let map = self.providers.lock().ok()?;
        map.get(provider).map(|c| c.last_success).filter(|t| *t > 0)
    }

    pub fn set_plans_searchable(&self, n: u64) {
        self.plans_searchable.store(n, Relaxed);
    }

    /// Sizes of the store's database file and `-wal`, and the available
    /// and total bytes of their filesystem; `None`: unknown (the series are
    /// left out).
    pub fn set_store_space(&self, space: Option<(u64, u64, u64, u64)>) {
        if let Ok(mut s) = self.store_space.lock() {
            *s = space.map(|(db, wal, fs_avail, fs_size)| StoreSpace {
                db,
                wal,
                fs_avail,
                fs_size,
            });
        }
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP planbox_http_requests_total HTTP requests answered, by route and status.\n",
        );
        out.push_str("# TYPE planbox_http_requests_total counter\n");
        if let Ok(map) = self.requests.lock() {
            for ((route, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "planbox_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    route.label()
                );
            }
        }
        out.push_str(
            "# HELP planbox_http_request_duration_seconds Time to answer an HTTP request.\n",
        );
        out.push_str("# TYPE planbox_http_request_duration_seconds histogram\n");
        for route in Route::ALL {
            let h = &self.durations[route as usize];
            let count = h.count.load(Relaxed);
            if count == 0 {
                continue;
            }
            let label = route.label();
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "planbox_http_request_duration_seconds_bucket{{route=\"{label}\",le=\"{le}\"}} {}",
                    h.buckets[i].load(Relaxed)
                );
            }
            let _ = writeln!(
                out,
                "planbox_http_request_duration_seconds_bucket{{route=\"{label}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "planbox_http_request_duration_seconds_sum{{route=\"{label}\"}} {}",
                h.sum_nanos.load(Relaxed) as f64 / 1e9
            );
            let _ = writeln!(
                out,
                "planbox_http_request_duration_seconds_count{{route=\"{label}\"}} {count}"
            );
        }
        self.render_connections(&mut out);
        // Provider names are `[a-z0-9_-]+` (or the one-provider shorthand's
        // name), escaped all the same.
        type Row = (String, [u64; Outcome::ALL.len()], i64, u64);
        let providers: Vec<Row> = self
            .providers
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(k, c)| {
                        (
                            label_value(k),
                            c.fetch_runs,
                            c.last_success,
                            c.plans_searchable,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push_str(
            "# HELP planbox_fetch_runs_total Fetch attempts since start, by provider and outcome.\n",
        );
        out.push_str("# TYPE planbox_fetch_runs_total counter\n");
        for (p, runs, _, _) in &providers {
            for (i, o) in Outcome::ALL.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "planbox_fetch_runs_total{{provider=\"{p}\",outcome=\"{o}\"}} {}",
                    runs[i]
                );
            }
        }
        if let Ok(map) = self.feed_damage.lock() {
            for (kind, help) in [
                (
                    "skipped",
                    "Feed items (and zones) skipped since start, by provider and reason.",
                ),
                (
                    "repaired",
                    "Feed values repaired since start (HTML entities, lone &, forbidden characters, a contradicted charset), by provider and reason.",
                ),
            ] {
                let name = format!("planbox_feed_{kind}_total");
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} counter");
                for ((k, provider, reason), n) in map.iter() {
                    if *k == kind {
                        let _ = writeln!(
                            out,
                            "{name}{{provider=\"{provider}\",reason=\"{reason}\"}} {n}"
                        );
                    }
                }
            }
        }
        out.push_str(
            "# HELP planbox_plans_searchable Plans a search can return (ever seen online).\n",
        );
        out.push_str("# TYPE planbox_plans_searchable gauge\n");
        let _ = writeln!(
            out,
            "planbox_plans_searchable {}",
            self.plans_searchable.load(Relaxed)
        );
        out.push_str("# HELP planbox_last_fetch_success_timestamp_seconds Unix time of the provider's last successful fetch (0: none yet).\n");
        out.push_str("# TYPE planbox_last_fetch_success_timestamp_seconds gauge\n");
        for (p, _, last, _) in &providers {
            let _ = writeln!(
                out,
                "planbox_last_fetch_success_timestamp_seconds{{provider=\"{p}\"}} {last}"
            );
        }
        out.push_str(
            "# HELP planbox_provider_plans_searchable Plans of the provider a search can return.\n",
        );
        out.push_str("# TYPE planbox_provider_plans_searchable gauge\n");
        for (p, _, _, n) in &providers {
            let _ = writeln!(
                out,
                "planbox_provider_plans_searchable{{provider=\"{p}\"}} {n}"
            );
        }
        if let Some(s) = self.store_space.lock().ok().and_then(|s| *s) {
            out.push_str("# HELP planbox_store_size_bytes Size of the store's files: the database (db) and its write-ahead log (wal).\n");
            out.push_str("# TYPE planbox_store_size_bytes gauge\n");
            let _ = writeln!(out, "planbox_store_size_bytes{{file=\"db\"}} {}", s.db);
            let _ = writeln!(out, "planbox_store_size_bytes{{file=\"wal\"}} {}", s.wal);
            out.push_str("# HELP planbox_store_filesystem_avail_bytes Bytes still available to planbox on the store's filesystem.\n");
            out.push_str("# TYPE planbox_store_filesystem_avail_bytes gauge\n");
            let _ = writeln!(out, "planbox_store_filesystem_avail_bytes {}", s.fs_avail);
            out.push_str(
                "# HELP planbox_store_filesystem_size_bytes Size of the store's filesystem.\n",
            );
            out.push_str("# TYPE planbox_store_filesystem_size_bytes gauge\n");
            let _ = writeln!(out, "planbox_store_filesystem_size_bytes {}", s.fs_size);
        }
        out
    }

    /// The connection series of every listener that runs.
    fn render_connections(&self, out: &mut String) {
        let running: Vec<(&str, &ConnCounters)> = Listener::ALL
            .iter()
            .map(|l| (l.label(), &*self.connections[*l as usize]))
            .filter(|(_, c)| c.max.load(Relaxed) > 0)
            .collect();
        // The HELP and TYPE lines spelled out: the monitoring kit's checks
        // find the families metrics.rs renders by them.
        type Value = fn(&ConnCounters) -> u64;
        let families: [(&str, &str, Value); 5] = [
            (
                "planbox_http_connections_open",
                "# HELP planbox_http_connections_open Client connections open now (waiting for a request or being answered), by listener.\n\
                 # TYPE planbox_http_connections_open gauge\n",
                ConnCounters::open,
            ),
            (
                "planbox_http_connections_max",
                "# HELP planbox_http_connections_max The connection cap in force (--max-connections, lowered to the open-files limit), by listener.\n\
                 # TYPE planbox_http_connections_max gauge\n",
                |c| c.max.load(Relaxed),
            ),
            (
                "planbox_http_connections_accepted_total",
                "# HELP planbox_http_connections_accepted_total Client connections accepted since start, by listener (those refused at the cap too).\n\
                 # TYPE planbox_http_connections_accepted_total counter\n",
                |c| c.accepted.load(Relaxed),
            ),
            (
                "planbox_http_workers",
                "# HELP planbox_http_workers Worker threads answering requests, spare workers started for clients that do not read included, by listener.\n\
                 # TYPE planbox_http_workers gauge\n",
                ConnCounters::workers,
            ),
            (
                "planbox_http_workers_stalled",
                "# HELP planbox_http_workers_stalled Workers whose write waits for a client that does not read, by listener.\n\
                 # TYPE planbox_http_workers_stalled gauge\n",
                ConnCounters::stalled,
            ),
        ];
        for (name, head, value) in families {
            out.push_str(head);
            for (l, c) in &running {
                let _ = writeln!(out, "{name}{{listener=\"{l}\"}} {}", value(c));
            }
        }
        out.push_str("# HELP planbox_http_connections_closed_total Client connections closed since start, by listener and reason.\n");
        out.push_str("# TYPE planbox_http_connections_closed_total counter\n");
        for (l, c) in &running {
            for why in Closed::ALL {
                let _ = writeln!(
                    out,
                    "planbox_http_connections_closed_total{{listener=\"{l}\",reason=\"{}\"}} {}",
                    why.label(),
                    c.closed_for(why)
                );
            }
        }
    }
}

/// The store check's state (held by `check_state`, not here) in the same
/// format, appended to `out`.
pub fn render_store_check(out: &mut String, check: &StoreCheck) {
    out.push_str(
        "# HELP planbox_store_checks_total Integrity checks of the store since start, by result.\n",
    );
    out.push_str("# TYPE planbox_store_checks_total counter\n");
    for (result, n) in [
        ("passed", check.passed),
        ("damaged", check.damaged),
        ("failed", check.failed),
    ] {
        let _ = writeln!(out, "planbox_store_checks_total{{result=\"{result}\"}} {n}");
    }
    out.push_str(
        "# HELP planbox_store_check_running 1 while an integrity check of the store runs.\n",
    );
    out.push_str("# TYPE planbox_store_check_running gauge\n");
    let _ = writeln!(
        out,
        "planbox_store_check_running {}",
        u8::from(check.running)
    );
    out.push_str("# HELP planbox_store_last_check_passed_timestamp_seconds Unix time of the last integrity check that passed (0: none known).\n");
    out.push_str("# TYPE planbox_store_last_check_passed_timestamp_seconds gauge\n");
    let _ = writeln!(
        out,
        "planbox_store_last_check_passed_timestamp_seconds {}",
        check.last_passed
    );
    out.push_str(
        "# HELP planbox_store_damaged 1 once a check found the store damaged (/ready fails).\n",
    );
    out.push_str("# TYPE planbox_store_damaged gauge\n");
    let _ = writeln!(
        out,
        "planbox_store_damaged {}",
        u8::from(check.damage.is_some())
    );
}

/// A Prometheus label value: `\`, `"` and newlines escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_counts_labelled() {
        let m = Metrics::new();
        m.observe_request(Route::Search, 200, Duration::from_micros(50));
        m.observe_request(Route::Search, 200, Duration::from_millis(3));
        m.observe_request(Route::Search, 400, Duration::from_millis(3));
        m.observe_fetch("a", Outcome::Timeout, 10);
        m.observe_fetch("a", Outcome::Ok, 20);
        m.register_provider("b");
        let mut text = m.render();
        render_store_check(&mut text, &StoreCheck::default());
        assert!(text.contains("planbox_http_requests_total{route=\"/search\",status=\"200\"} 2"));
        assert!(text.contains("planbox_http_requests_total{route=\"/search\",status=\"400\"} 1"));
        assert!(text.contains(
            "planbox_http_request_duration_seconds_bucket{route=\"/search\",le=\"0.0001\"} 1"
        ));
        assert!(text.contains(
            "planbox_http_request_duration_seconds_bucket{route=\"/search\",le=\"0.005\"} 3"
        ));
        assert!(text.contains("planbox_fetch_runs_total{provider=\"a\",outcome=\"timeout\"} 1"));
        assert!(text.contains("planbox_fetch_runs_total{provider=\"b\",outcome=\"timeout\"} 0"));
        assert!(text.contains("planbox_last_fetch_success_timestamp_seconds{provider=\"a\"} 20"));
        assert!(text.contains("planbox_last_fetch_success_timestamp_seconds{provider=\"b\"} 0"));
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert!(text.contains("planbox_store_damaged 0"));
        let mut text = m.render();
        render_store_check(
            &mut text,
            &StoreCheck {
                damaged: 1,
                damage: Some("page 7: corrupt".into()),
                ..StoreCheck::default()
            },
        );
        assert!(text.contains("planbox_store_damaged 1"));
        assert!(text.contains("planbox_store_checks_total{result=\"damaged\"} 1"));
        assert!(
            !text.contains("planbox_store_size_bytes"),
            "unknown: left out"
        );
        m.set_store_space(Some((4096, 32, 1000, 5000)));
        let text = m.render();
        assert!(text.contains("planbox_store_size_bytes{file=\"db\"} 4096"));
        assert!(text.contains("planbox_store_size_bytes{file=\"wal\"} 32"));
        assert!(text.contains("planbox_store_filesystem_avail_bytes 1000"));
        assert!(text.contains("planbox_store_filesystem_size_bytes 5000"));
    }

    #[test]
    fn skips_and_repairs_are_counted_by_reason_across_runs() {
        let m = Metrics::new();
        let mut run = FetchRun {
            provider: "provider".into(),
            started_at: String::new(),
            duration_ms: 0,
            source: String::new(),
            outcome: Outcome::Ok,
            http_status: None,
            bytes: 0,
            counts: Default::default(),
            skipped: [("unresolved_reference".to_owned(), 2)].into(),
            repaired: [("html_entity".to_owned(), 3)].into(),
            error: None,
        };
        m.observe_damage(&run);
        run.repaired.insert("bare_ampersand".into(), 1);
        m.observe_damage(&run);
        run.provider = "other".into();
        m.observe_damage(&run);
        let text = m.render();
        let has = |s: &str| text.contains(s);
        assert!(has(
            "planbox_feed_skipped_total{provider=\"provider\",reason=\"unresolved_reference\"} 4"
        ));
        assert!(has(
            "planbox_feed_repaired_total{provider=\"provider\",reason=\"html_entity\"} 6"
        ));
        assert!(has(
            "planbox_feed_repaired_total{provider=\"provider\",reason=\"bare_ampersand\"} 1"
        ));
        assert!(has(
            "planbox_feed_repaired_total{provider=\"other\",reason=\"bare_ampersand\"} 1"
        ));
        assert!(text.contains("# TYPE planbox_feed_repaired_total counter"));
    }

    #[test]
    fn connection_series_show_each_running_listener_and_every_reason() {
        let m = Metrics::new();
        assert!(
            !m.render().contains("planbox_http_connections_open{"),
            "no listener runs: no series"
        );
        let main = m.connections(Listener::Main);
        main.started(4);
        for _ in 0..5 {
            main.accepted();
        }
        main.closed(Closed::Evicted);
        main.closed(Closed::Refused);
        main.closed(Closed::IdleTimeout);
        m.connections(Listener::Metrics).started(16);
        m.connections(Listener::Metrics).accepted();
        // Two workers and a spare; the spare's write stalls, then one
        // worker ends.
        for _ in 0..3 {
            main.workers_moved(1);
        }
        main.stalled_moved(1);
        main.workers_moved(-1);
        let text = m.render();
        let has = |s: &str| text.contains(s);
        assert!(has("# TYPE planbox_http_connections_open gauge"));
        assert!(has("planbox_http_connections_open{listener=\"main\"} 2"));
        assert!(has("planbox_http_connections_open{listener=\"metrics\"} 1"));
        assert!(!has("listener=\"status\""), "not started: left out");
        assert!(has("planbox_http_connections_max{listener=\"main\"} 4"));
        assert!(has("# TYPE planbox_http_workers gauge"));
        assert!(has("planbox_http_workers{listener=\"main\"} 2"));
        assert!(has("planbox_http_workers_stalled{listener=\"main\"} 1"));
        assert!(has("planbox_http_workers{listener=\"metrics\"} 0"));
        assert!(has(
            "planbox_http_connections_accepted_total{listener=\"main\"} 5"
        ));
        assert!(has("# TYPE planbox_http_connections_closed_total counter"));
        assert!(has(
            "planbox_http_connections_closed_total{listener=\"main\",reason=\"evicted\"} 1"
        ));
        assert!(has(
            "planbox_http_connections_closed_total{listener=\"main\",reason=\"refused\"} 1"
        ));
        for why in Closed::ALL {
            let zero = format!(
                "planbox_http_connections_closed_total{{listener=\"metrics\",reason=\"{}\"}} 0",
                why.label()
            );
            assert!(has(&zero), "every reason shows from the start: {zero}");
        }
        assert_eq!(
            Closed::ALL.map(|c| c as usize),
            std::array::from_fn(|i| i),
            "ALL is in index order"
        );
    }
}
