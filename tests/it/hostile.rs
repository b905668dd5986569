//! A hostile world (issue 4): a provider that drips, floods, bombs, cuts,
//! fails and throttles; `kill -9` in the middle of an import; damaged and
//! foreign stores; and HTTP clients that stall, overload, oversize, panic
//! the handler or hammer one address.
//!
//! Deterministic by construction: faults are scripted, waits poll for a
//! state with a generous deadline, and nothing asserts that anything is
//! fast. The few bounds on durations are lower bounds (a wait that must
//! have happened) or bounds that tell "ended by the deadline" from "ran to
//! the end of a minutes-long drip".

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chrono_tz::Tz;
use planbox::api::{Api, Source, StreamFn};
use planbox::metrics::Metrics;
use planbox::model::{FetchRun, Outcome, SearchQuery, Window};
use planbox::provider_sim::{Behaviour, CutProvider, FakeProvider};
use planbox::server::{self, RunningServer, ServerConfig, SourceFactory};
use planbox::service::ServiceInfo;
use planbox::stop::Stop;
use planbox::store::{DataVersion, Snapshot, Store, StoreCounts, StoreError};
use planbox::sync::{self, SyncConfig, Tick};

use crate::support::*;

// ---------------------------------------------------------------------------
// Helpers

/// A sync config with short timeouts, so faults end quickly.
fn fast_cfg(db: &Path, url: &str) -> SyncConfig {
    let mut c = sync_config(db, url);
    c.fetch.connect_timeout = Duration::from_millis(500);
    c.fetch.timeout = Duration::from_millis(1500);
    c.fetch.max_bytes = 2 << 20;
    c
}

fn attempt(db: &Path, cfg: &SyncConfig) -> sync::Attempt {
    let mut store = Store::open(db).unwrap();
    sync::fetch_once(&mut store, cfg, &Metrics::new(), None)
}

fn once(db: &Path, cfg: &SyncConfig) -> FetchRun {
    attempt(db, cfg).run
}

fn generation(db: &Path) -> u64 {
    Store::open(db).unwrap().generation().unwrap()
}

fn all_plans(db: &Path) -> Vec<u8> {
    Store::open(db).unwrap().search(&Window::default()).unwrap()
}

/// Polls `cond` every 10 ms until it holds; panics after `limit`.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// No spool file is left beside the store.
fn assert_no_spool_left(db: &Path) {
    let dir = db.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".feed-"))
        .collect();
    assert!(left.is_empty(), "spool files left: {left:?}");
}

/// A generated feed in the plans dialect: base plans `first..first+count`,
/// two plans each with six zones; every fifth base plan is offline. The
/// `variant` changes titles and prices, so a different variant updates
/// every plan it shares with another.
fn gen_feed(first: usize, count: usize, variant: u32) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(count * 1800 + 200);
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<planList version=\"1.0\"><output>\n");
    for b in first..first + count {
        let mode = if b % 5 == 0 { "offline" } else { "online" };
        let _ = write!(
            s,
            "<base_plan base_plan_id=\"{b}\" sell_mode=\"{mode}\" title=\"Show {b} (v{variant})\">"
        );
        for p in 0..2 {
            let (month, day) = (1 + b % 12, 1 + (b + p) % 28);
            let _ = write!(
                s,
                "<plan plan_start_date=\"2024-{month:02}-{day:02}T20:00:00\" \
                 plan_end_date=\"2024-{month:02}-{day:02}T22:30:00\" plan_id=\"{p}\" \
                 sell_from=\"2023-01-01T00:00:00\" sell_to=\"2024-01-01T00:00:00\" sold_out=\"false\">"
            );
            for z in 0..6 {
                let _ = write!(
                    s,
                    "<zone zone_id=\"{z}\" capacity=\"100\" price=\"{}.{:02}\" name=\"Zone {z}\" numbered=\"true\" />",
                    10 + z * 5 + variant as usize,
                    b % 100
                );
            }
            s.push_str("</plan>");
        }
        s.push_str("</base_plan>\n");
    }
    s.push_str("</output></planList>\n");
    s.into_bytes()
}

/// Copies a closed store (and its WAL, if any) to `dest`.
fn copy_store(src: &Path, dest: &Path) {
    std::fs::copy(src, dest).unwrap();
    for ext in ["-wal", "-shm"] {
        let s = PathBuf::from(format!("{}{ext}", src.display()));
        let d = PathBuf::from(format!("{}{ext}", dest.display()));
        let _ = std::fs::remove_file(&d);
        if s.exists() {
            std::fs::copy(&s, &d).unwrap();
        }
    }
}

/// A deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Sends raw bytes and reads until the server closes or `limit` passes.
/// Returns what arrived and whether the server closed the connection.
fn raw_exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Reads one HTTP/1.1 answer with a `Content-Length` from a keep-alive
/// connection; returns (status line, body).
fn read_answer(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).expect("answer head");
        assert!(
            n == 1,
            "connection closed mid-answer: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (head.lines().next().unwrap_or("").to_owned(), body)
}

/// A server on port 0 whose workers read through sources made by `sources`.
struct SourcedServer {
    server: Option<RunningServer>,
    base: String,
}

impl SourcedServer {
    fn start(cfg: ServerConfig, sources: SourceFactory) -> SourcedServer {
        quiet_logs();
        let api = Arc::new(Api::new(
            Tz::UTC,
            Arc::new(Metrics::new()),
            Arc::new(ServiceInfo::default()),
        ));
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let server = RunningServer::start_with_source(listener, api, sources, cfg).unwrap();
        let base = format!("http://{}", server.local_addr());
        SourcedServer {
            server: Some(server),
            base,
        }
    }

    fn get(&self, path: &str) -> Reply {
        get(&format!("{}{path}", self.base), &[])
    }

    fn running(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }
}

impl Drop for SourcedServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(2));
        }
    }
}

const EMPTY: &[u8] = br#"{"data":{"events":[]},"error":null}"#;

/// A source whose searches wait at a gate until it is opened.
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, usize)>,
    cv: Condvar,
}

impl Gate {
    fn entered(&self) -> usize {
        self.state.lock().unwrap().1
    }
    fn open(&self) {
        self.state.lock().unwrap().0 = true;
        self.cv.notify_all();
    }
}

struct GatedSource(Arc<Gate>);

impl Source for GatedSource {
    fn version(&mut self) -> Result<DataVersion, StoreError> {
        Ok(DataVersion::default())
    }
    fn stream(
        &mut self,
        _: &SearchQuery,
        f: &mut StreamFn<'_>,
    ) -> Result<std::io::Result<()>, StoreError> {
        let mut g = self.0.state.lock().unwrap();
        g.1 += 1;
        while !g.0 {
            g = self.0.cv.wait(g).unwrap();
        }
        drop(g);
        Ok(f(&Snapshot::default(), &mut &EMPTY[..]))
    }
    fn counts(&mut self) -> Result<StoreCounts, StoreError> {
        Ok(StoreCounts::default())
    }
    fn runs(&mut self, _: usize) -> Result<Vec<FetchRun>, StoreError> {
        Ok(Vec::new())
    }
}

/// A source whose searches panic: the test-only way to reach the server's
/// panic isolation (production sources are store readers).
struct PanickingSource;

impl Source for PanickingSource {
    fn version(&mut self) -> Result<DataVersion, StoreError> {
        Ok(DataVersion::default())
    }
    fn stream(
        &mut self,
        _: &SearchQuery,
        _: &mut StreamFn<'_>,
    ) -> Result<std::io::Result<()>, StoreError> {
        panic!("injected fault: SELECT secret FROM internals");
    }
    fn counts(&mut self) -> Result<StoreCounts, StoreError> {
        Ok(StoreCounts::default())
    }
    fn runs(&mut self, _: usize) -> Result<Vec<FetchRun>, StoreError> {
        Ok(Vec::new())
    }
}

// ---------------------------------------------------------------------------
// 1. Provider faults

#[test]
fn a_dripping_provider_ends_at_the_fetch_timeout() {
    let t = temp_store();
    let provider = FakeProvider::start(fixture_feeds(Dialect::Plans)).unwrap();
    // One byte per 100 ms: the fixture feed would take minutes.
    provider.push(Behaviour::Drip {
        bytes: 1,
        every: Duration::from_millis(100),
    });
    let cfg = fast_cfg(&t.db, &provider.url());
    let started = Instant::now();
    let run = once(&t.db, &cfg);
    assert_eq!(run.outcome, Outcome::Timeout, "{run:?}");
    assert!(run.error.as_deref().unwrap().contains("no complete answer"));
    // It ran until the deadline, and ended there rather than at the end of
    // the feed (which, dripping, is minutes away).
    assert!(started.elapsed() >= cfg.fetch.timeout);
    let feed_minutes = Duration::from_millis(100) * fixture_feeds(Dialect::Plans)[0].len() as u32;
    assert!(
        started.elapsed() < feed_minutes / 4,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(generation(&t.db), 0, "nothing landed");
    assert_no_spool_left(&t.db);
}

#[test]
fn a_provider_that_never_accepts_is_a_connect_timeout_not_the_deadline() {
    // A listener with a backlog of one that never accepts: once its queue
    // is full, the kernel drops further SYNs and connect() hangs.
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut held = Vec::new();
    let full =
        (0..8).any(
            |_| match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => {
                    held.push(s);
                    false
                }
                Err(_) => true,
            },
        );
    assert!(full, "the backlog never filled");
    let t = temp_store();
    let mut cfg = fast_cfg(&t.db, &format!("http://{addr}/feed"));
    cfg.fetch.connect_timeout = Duration::from_millis(300);
    cfg.fetch.timeout = Duration::from_secs(30);
    let run = once(&t.db, &cfg);
    assert_eq!(run.outcome, Outcome::Timeout, "{run:?}");
    let err = run.error.unwrap();
    assert!(err.contains("cannot connect within 300ms"), "{err}");
}

#[test]
fn the_provider_sees_our_user_agent_and_gzip_is_decoded() {
    let t = temp_store();
    let feeds = fixture_feeds(Dialect::Plans);
    let provider = FakeProvider::start(feeds.clone()).unwrap();
    provider.push(Behaviour::Gzip);
    let run = once(&t.db, &fast_cfg(&t.db, &provider.url()));
    assert_eq!(run.outcome, Outcome::Ok, "{run:?}");
    // `bytes` counts the decompressed feed.
    assert_eq!(run.bytes, feeds[0].len() as u64);
    let seen = provider.seen();
    assert_eq!(
        seen[0].user_agent.as_deref(),
        Some(format!("planbox/{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert!(seen[0].accept_encoding.as_deref().unwrap().contains("gzip"));
}

#[test]
fn an_endless_feed_is_too_large_and_changes_nothing() {
    let t = temp_store();
    let provider = FakeProvider::start(fixture_feeds(Dialect::Plans)).unwrap();
    let cfg = fast_cfg(&t.db, &provider.url());
    assert_eq!(once(&t.db, &cfg).outcome, Outcome::Ok);
    let (g, before) = (generation(&t.db), all_plans(&t.db));
    // 64 MiB against a 2 MiB limit: stopped at the limit, never buffered.
    provider.push(Behaviour::Huge(64 << 20));
    let run = once(&t.db, &cfg);
    assert_eq!(run.outcome, Outcome::TooLarge, "{run:?}");
    assert_eq!(run.http_status, Some(200));
    assert_eq!((generation(&t.db), all_plans(&t.db)), (g, before));
    assert_no_spool_left(&t.db);
}

#[test]
fn a_gzip_bomb_is_too_large_after_decompression() {
    let t = temp_store();
    let provider = FakeProvider::start(fixture_feeds(Dialect::Plans)).unwrap();
    // 24 MiB of zeros compress to ~24 KiB; the limit is on what they
    // inflate to (2 MiB), checked as the stream is decoded into a 64 KiB
    // buffer, so memory never holds the inflated feed.
    provider.push(Behaviour::GzipBomb(24 << 20));
    let run = once(&t.db, &fast_cfg(&t.db, &provider.url()));
    assert_eq!(run.outcome, Outcome::TooLarge, "{run:?}");
    assert!(run.error.unwrap().contains("limit"));
    assert_eq!(generation(&t.db), 0);
    assert_no_spool_left(&t.db);
}

#[test]
fn the_providers_etag_gives_a_304_and_not_modified() {
    let t = temp_store();
    let feed = fixture_feeds(Dialect::Plans).remove(0);
    let provider = FakeProvider::start(vec![feed]).unwrap();
    let cfg = fast_cfg(&t.db, &provider.url());
    assert_eq!(once(&t.db, &cfg).outcome, Outcome::Ok);
    let g = generation(&t.db);
    let run = once(&t.db, &cfg);
    assert_eq!(run.outcome, Outcome::NotModified, "{run:?}");
    assert_eq!(run.http_status, Some(304));
    let seen = provider.seen();
    assert_eq!(seen[0].if_none_match, None);
    assert!(seen[1].if_none_match.as_deref().unwrap().starts_with('"'));
    assert_eq!(generation(&t.db), g);
}

#[test]
fn an_identical_body_is_unchanged_and_not_ingested_again() {
    let t = temp_store();
    let feed = fixture_feeds(Dialect::Plans).remove(0);
    let provider = FakeProvider::start(vec![]).unwrap();
    // No ETag this way: the provider cannot say 304, we must notice.
    provider.push(Behaviour::Body(feed.clone()));
    provider.push(Behaviour::Body(feed));
    let cfg = fast_cfg(&t.db, &provider.url());
    let first = once(&t.db, &cfg);
    assert_eq!(first.outcome, Outcome::Ok);
    let (g, before) = (generation(&t.db), all_plans(&t.db));
    let run = once(&t.db, &cfg);
    assert_eq!(run.outcome, Outcome::Unchanged, "{run:?}");
    assert_eq!(run.counts, Default::default(), "not parsed or ingested");
    assert_eq!(run.bytes, first.bytes);
    assert_eq!((generation(&t.db), all_plans(&t.db)), (g, before));
}

#[test]
fn error_statuses_are_http_errors_with_their_retry_after() {
    let t = temp_store();
    let provider = FakeProvider::start(fixture_feeds(Dialect::Plans)).unwrap();
    let cfg = fast_cfg(&t.db, &provider.url());
    for (status, retry) in [(500, None), (503, Some(7)), (429, Some(3)), (404, None)] {
        provider.push(Behaviour::Status(status, retry));
        let a = attempt(&t.db, &cfg);
        assert_eq!(a.run.outcome, Outcome::HttpError, "{status}");
        assert_eq!(a.run.http_status, Some(status));
        assert_eq!(a.retry_after, retry.map(Duration::from_secs), "{status}");
        assert!(a.run.error.unwrap().contains(&status.to_string()));
    }
    assert_eq!(generation(&t.db), 0);
}

#[test]
fn a_connection_cut_mid_body_is_a_network_error() {
    let t = temp_store();
    let feed = fixture_feeds(Dialect::Plans).remove(0);
    let provider = CutProvider::start(feed, 200).unwrap();
    let run = once(&t.db, &fast_cfg(&t.db, &provider.url()));
    assert_eq!(run.outcome, Outcome::NetworkError, "{run:?}");
    assert_eq!(generation(&t.db), 0);
    assert_no_spool_left(&t.db);
}

#[test]
fn the_loop_honours_retry_after_backs_off_and_never_gives_up() {
    let t = temp_store();
    let provider = FakeProvider::start(fixture_feeds(Dialect::Plans)).unwrap();
    provider.push(Behaviour::Status(503, Some(1)));
    provider.push(Behaviour::Status(500, None));
    provider.push(Behaviour::Status(500, None));
    let mut cfg = fast_cfg(&t.db, &provider.url());
    cfg.interval = Duration::from_millis(50);
    cfg.max_backoff = Duration::from_secs(2);
    let (interval, max_backoff) = (cfg.interval, cfg.max_backoff);
    let store = Store::open(&t.db).unwrap();
    let stop = Stop::new();
    let ticks = Arc::new(Mutex::new(Vec::<Tick>::new()));
    let handle = {
        let (stop, ticks) = (stop.clone(), ticks.clone());
        let stopper = stop.clone();
        thread::spawn(move || {
            sync::run_loop_observed(
                store,
                cfg,
                Arc::new(Metrics::new()),
                Arc::new(ServiceInfo::default()),
                stop,
                |tick| {
                    let mut t = ticks.lock().unwrap();
                    t.push(tick.clone());
                    if t.len() >= 5 {
                        stopper.stop();
                    }
                },
            )
        })
    };
    handle.join().unwrap();
    let ticks = ticks.lock().unwrap().clone();
    let outcomes: Vec<_> = ticks.iter().map(|t| (t.outcome, t.failures)).collect();
    assert_eq!(
        outcomes,
        [
            (Outcome::HttpError, 1),
            (Outcome::HttpError, 2),
            (Outcome::HttpError, 3),
            (Outcome::Ok, 0),
            (Outcome::Ok, 0),
        ]
    );
    // Retry-After: 1 is honoured over the 50 ms interval.
    assert_eq!(ticks[0].retry_after, Some(Duration::from_secs(1)));
    assert!(ticks[0].delay >= Duration::from_secs(1), "{:?}", ticks[0]);
    // Then exponential backoff with jitter: interval..interval * 2^failures.
    for t in &ticks[1..3] {
        let cap = (interval * (1 << t.failures)).min(max_backoff);
        assert!(t.delay >= interval && t.delay <= cap, "{t:?}");
    }
    // Back to the normal interval after a success.
    assert_eq!(ticks[3].delay, interval);
    assert_eq!(ticks[4].delay, interval);
    // The journal saw every attempt, newest first, and the loop really
    // waited out the Retry-After between the first two.
    let runs = Store::open(&t.db).unwrap().runs(10).unwrap();
    let journal: Vec<_> = runs.iter().rev().map(|r| r.outcome).collect();
    assert_eq!(journal, outcomes.iter().map(|o| o.0).collect::<Vec<_>>());
    let at = |r: &FetchRun| chrono::DateTime::parse_from_rfc3339(&r.started_at).unwrap();
    let (first, second) = (&runs[runs.len() - 1], &runs[runs.len() - 2]);
    assert!(at(second) - at(first) >= chrono::Duration::milliseconds(1000));
}

#[test]
fn search_keeps_answering_while_the_provider_hangs() {
    let t = temp_store();
    let provider = FakeProvider::start(fixture_feeds(Dialect::Plans)).unwrap();
    fetch_n(&t.db, &provider, 3);
    provider.push(Behaviour::Delay(Duration::from_secs(60)));
    let server = TestServer::start(&t.db, Tz::UTC);
    let mut cfg = fast_cfg(&t.db, &provider.url());
    cfg.fetch.timeout = Duration::from_secs(2);
    let stop = Stop::new();
    let store = Store::open(&t.db).unwrap();
    let before = provider.seen().len();
    let handle = {
        let stop = stop.clone();
        thread::spawn(move || {
            sync::run_loop(
                store,
                cfg,
                Arc::new(Metrics::new()),
                Arc::new(ServiceInfo::default()),
                stop,
            )
        })
    };
    // The loop's request is now hanging at the provider.
    wait_for("the hanging fetch", Duration::from_secs(10), || {
        provider.seen().len() > before
    });
    for _ in 0..5 {
        let r = server.get("/search");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["data"]["events"].as_array().unwrap().len(), 4);
    }
    stop.stop();
    handle.join().unwrap();
    let runs = Store::open(&t.db).unwrap().runs(1).unwrap();
    assert_eq!(runs[0].outcome, Outcome::Timeout);
}

#[test]
fn status_table_and_json_follow_the_contract() {
    let t = temp_store();
    let provider = FakeProvider::start(fixture_feeds(Dialect::Plans)).unwrap();
    provider.push(Behaviour::Next);
    provider.push(Behaviour::Status(503, Some(5)));
    provider.push(Behaviour::Truncated(300));
    let cfg = fast_cfg(&t.db, &provider.url());
    let outcomes: Vec<_> = (0..3).map(|_| once(&t.db, &cfg).outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Ok, Outcome::HttpError, Outcome::ParseError]
    );
    let db = t.db.to_str().unwrap();
    let out = run_ok(planbox().args(["status", "--json", "--db", db]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = v["runs"].as_array().unwrap();
    let got: Vec<_> = runs
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["parse_error", "http_error", "ok"], "newest first");
    for r in runs {
        for key in [
            "started_at",
            "duration_ms",
            "outcome",
            "http_status",
            "bytes",
            "plans_seen",
            "plans_new",
            "plans_updated",
            "plans_unchanged",
            "skipped",
            "error",
        ] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        assert!(r["skipped"].is_object());
        assert!(chrono::DateTime::parse_from_rfc3339(r["started_at"].as_str().unwrap()).is_ok());
    }
    assert_eq!(runs[1]["http_status"], 503);
    assert!(runs[2]["error"].is_null());
    assert_eq!(runs[2]["plans_new"], runs[2]["plans_seen"]);
    assert!(runs[0]["error"].as_str().unwrap().len() > 3);
    let table = String::from_utf8(run_ok(planbox().args(["status", "--db", db])).stdout).unwrap();
    let lines: Vec<_> = table.lines().collect();
    assert!(lines[0].contains("plans stored"), "{table}");
    for col in [
        "started_at",
        "outcome",
        "http",
        "bytes",
        "ms",
        "seen",
        "new",
        "updated",
        "skipped",
        "error",
    ] {
        assert!(lines[1].contains(col), "{col} missing in {}", lines[1]);
    }
    assert!(lines[2].contains("parse_error"), "{table}");
    assert!(
        lines[3].contains("http_error") && lines[3].contains("503"),
        "{table}"
    );
    assert!(lines[4].contains(" ok "), "{table}");
}

#[test]
fn the_journal_keeps_the_newest_ten_thousand_runs() {
    let t = temp_store();
    let mut store = Store::open(&t.db).unwrap();
    drop(store);
    // Fill it directly in one transaction (10,000 journaled commits would be
    // 10,000 fsyncs).
    let mut c = rusqlite::Connection::open(&t.db).unwrap();
    let tx = c.transaction().unwrap();
    for i in 0..10_005 {
        tx.execute(
            "INSERT INTO fetch_runs (started_at, duration_ms, source, outcome, http_status, bytes,
                 plans_seen, plans_new, plans_updated, plans_unchanged, skipped, error)
             VALUES (?1, 1, 'old', 'timeout', NULL, 0, 0, 0, 0, 0, '{}', 'old')",
            [format!("2020-01-01T00:00:{:02}Z", i % 60)],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    drop(c);
    store = Store::open(&t.db).unwrap();
    let provider = FakeProvider::start(fixture_feeds(Dialect::Plans)).unwrap();
    let run = sync::fetch_once(
        &mut store,
        &fast_cfg(&t.db, &provider.url()),
        &Metrics::new(),
        None,
    )
    .run;
    assert_eq!(run.outcome, Outcome::Ok);
    let runs = store.runs(20_000).unwrap();
    assert_eq!(runs.len(), planbox::store::JOURNAL_LIMIT as usize);
    assert_eq!(runs[0].outcome, Outcome::Ok, "the newest is kept");
}

// ---------------------------------------------------------------------------
// 2. Crash safety

/// A store holding feed `before`, closed cleanly, at `dir/base.db`.
fn imported_store(dir: &Path, feed: &[u8]) -> PathBuf {
    let feed_path = dir.join("before.xml");
    std::fs::write(&feed_path, feed).unwrap();
    let db = dir.join("base.db");
    run_ok(planbox().args([
        "import",
        "--db",
        db.to_str().unwrap(),
        feed_path.to_str().unwrap(),
    ]));
    db
}

#[test]
fn kill_9_during_import_leaves_exactly_before_or_after() {
    let t = temp_store();
    let dir = t.dir.path();
    // 4,000 and 5,600 plans (~3.5 and ~5 MB): "after" updates every plan of
    // "before" and adds 800 base plans; big enough that SQLite spills the
    // open transaction into the WAL, so some kills land mid-write.
    let base = imported_store(dir, &gen_feed(0, 2000, 1));
    let after_feed = dir.join("after.xml");
    std::fs::write(&after_feed, gen_feed(0, 2800, 2)).unwrap();
    let before_body = all_plans(&base);

    // One whole import, to know the after state and how long it takes.
    let full = dir.join("full.db");
    copy_store(&base, &full);
    let started = Instant::now();
    run_ok(planbox().args([
        "import",
        "--db",
        full.to_str().unwrap(),
        after_feed.to_str().unwrap(),
    ]));
    let took = started.elapsed();
    let after_body = all_plans(&full);
    assert_ne!(before_body, after_body);

    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let (mut befores, mut afters, mut mid_write) = (0, 0, 0);
    let trials = 24;
    for trial in 0..trials {
        let db = dir.join(format!("trial-{trial}.db"));
        copy_store(&base, &db);
        // Instants spread over the whole run and a little past its end.
        let at = took.mul_f64((rng.next() % 1000) as f64 / 1000.0 * 1.1);
        let mut child = planbox()
            .args([
                "import",
                "--db",
                db.to_str().unwrap(),
                after_feed.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        thread::sleep(at);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // A non-empty WAL left behind: the kill hit an open write.
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            mid_write += 1;
        }
        let store = Store::open(&db).unwrap_or_else(|e| panic!("trial {trial}: {e}"));
        store
            .integrity_check()
            .unwrap_or_else(|e| panic!("trial {trial} at {at:?}: {e}"));
        let body = store.search(&Window::default()).unwrap();
        if body == before_body {
            befores += 1;
        } else if body == after_body {
            afters += 1;
        } else {
            panic!("trial {trial} (kill at {at:?}): a mix of before and after");
        }
        drop(store);
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
        }
    }
    eprintln!(
        "kill -9 during import: {trials} trials over {took:?}: {befores} before, \
         {afters} after; {mid_write} killed with a non-empty WAL"
    );
    assert_eq!(befores + afters, trials);
}

/// Runs `planbox serve` on `db` expecting it to refuse; returns stderr.
fn serve_refuses(db: &Path) -> String {
    let mut child = planbox()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            db.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not refuse {}", db.display());
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "{err}");
    err
}

#[test]
fn serve_refuses_a_foreign_store_and_leaves_it_untouched() {
    // A damaged planbox store is served with /ready failing: see
    // ops::ops_a_damaged_store_fails_ready_and_is_left_untouched.
    let t = temp_store();
    let dir = t.dir.path();
    let text = dir.join("notes.txt");
    std::fs::write(&text, "not a database, just notes\n".repeat(200)).unwrap();
    let before = std::fs::read(&text).unwrap();
    let err = serve_refuses(&text);
    assert!(err.contains("not a planbox store"), "{err}");
    assert!(
        std::fs::read(&text).unwrap() == before,
        "the foreign file was modified"
    );

    let other = dir.join("other.db");
    let c = rusqlite::Connection::open(&other).unwrap();
    c.execute_batch("CREATE TABLE notes (x TEXT); INSERT INTO notes VALUES ('mine');")
        .unwrap();
    drop(c);
    let before = std::fs::read(&other).unwrap();
    let err = serve_refuses(&other);
    assert!(err.contains("another application"), "{err}");
    assert!(
        std::fs::read(&other).unwrap() == before,
        "the other database was modified"
    );
}

/// A running `planbox serve`; killed on drop.
struct Serving {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Serving {
    fn start(db: &Path, extra: &[&str]) -> Serving {
        let mut child = planbox()
            .env("PLANBOX_LOG", "info")
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--db",
                db.to_str().unwrap(),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead;
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = line.split("addr=").nth(1) {
                    let addr = addr.split_whitespace().next().unwrap_or("").to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("serve logs its address");
        let addr = addr.trim_matches('"').parse().unwrap();
        Serving { child, addr }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_second_serve_refuses_and_import_waits_its_turn() {
    let t = temp_store();
    let dir = t.dir.path();
    // The demo provider keeps the fetch loop writing every 100 ms.
    let serving = Serving::start(&t.db, &["--demo", "--fetch-interval", "100ms"]);
    let r = get(&format!("http://{}/ready", serving.addr), &[]);
    assert_eq!(r.status, 200);

    let err = serve_refuses(&t.db);
    assert!(
        err.contains("another `planbox serve` is already running"),
        "{err}"
    );

    let feed = dir.join("import.xml");
    std::fs::write(&feed, gen_feed(10_000, 400, 1)).unwrap();
    for _ in 0..3 {
        run_ok(planbox().args([
            "import",
            "--db",
            t.db.to_str().unwrap(),
            feed.to_str().unwrap(),
        ]));
    }
    // Both writers' work is there, and the server still answers.
    let r = get(&format!("http://{}/search", serving.addr), &[]);
    assert_eq!(r.status, 200);
    let events = r.json()["data"]["events"].as_array().unwrap().len();
    // 400 base plans x 2 plans, 4/5 of them online, plus the 4 fixtures.
    assert_eq!(events, 640 + 4);
    drop(serving);
    let store = Store::open(&t.db).unwrap();
    store.integrity_check().unwrap();
    let runs = store.runs(1000).unwrap();
    assert!(runs.iter().any(|r| r.source.ends_with("import.xml")));
    assert!(runs.iter().any(|r| r.source.starts_with("http://")));
}

// ---------------------------------------------------------------------------
// 3. Abusive HTTP input

/// A server whose searches wait at the returned gate.
fn gated_server(cfg: ServerConfig) -> (Arc<Gate>, Arc<SourcedServer>) {
    let gate = Arc::new(Gate::default());
    let g = gate.clone();
    let sources: SourceFactory = Arc::new(move || Ok(Box::new(GatedSource(g.clone())) as _));
    (gate, Arc::new(SourcedServer::start(cfg, sources)))
}

#[test]
fn overload_is_shed_with_503_and_retry_after() {
    let (gate, server) = gated_server(ServerConfig {
        workers: 1,
        max_queue: 2,
        ..ServerConfig::default()
    });
    // The only worker is stuck in a search...
    let s = server.clone();
    let slow = thread::spawn(move || s.get("/search").status);
    wait_for("the worker to be busy", Duration::from_secs(10), || {
        gate.entered() == 1
    });
    // ... two more requests fill the queue ...
    let queued: Vec<_> = (0..2)
        .map(|_| {
            let s = server.clone();
            thread::spawn(move || s.get("/health").status)
        })
        .collect();
    wait_for("two queued requests", Duration::from_secs(10), || {
        server.running().queued() == 2
    });
    // ... and the next one is turned away at once, in the envelope.
    let r = server.get("/health");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert_eq!(r.json()["error"]["code"], "overloaded");
    assert_eq!(server.running().shed(), 1);
    // Once the worker is free, everything that was queued is answered.
    gate.open();
    assert_eq!(slow.join().unwrap(), 200);
    for q in queued {
        assert_eq!(q.join().unwrap(), 200);
    }
    assert_eq!(server.get("/search").status, 200);
}

#[test]
fn a_panicking_handler_is_a_500_envelope_and_the_worker_survives() {
    let panics = Arc::new(AtomicUsize::new(0));
    let p = panics.clone();
    let sources: SourceFactory = Arc::new(move || {
        p.fetch_add(1, SeqCst);
        Ok(Box::new(PanickingSource) as _)
    });
    let server = SourcedServer::start(
        ServerConfig {
            workers: 1,
            ..ServerConfig::default()
        },
        sources,
    );
    let opened = panics.load(SeqCst);
    for _ in 0..3 {
        let r = server.get("/search");
        assert_eq!(r.status, 500);
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        let v = r.json();
        assert!(v["data"].is_null());
        assert_eq!(v["error"]["code"], "internal");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            !msg.contains("SELECT") && !msg.contains("panicked"),
            "{msg}"
        );
        // The one worker is alive and answers the next request.
        assert_eq!(server.get("/health").status, 200);
    }
    // Each panic threw the worker's source away and it opened a new one.
    assert!(panics.load(SeqCst) >= opened + 2);
}

#[test]
fn the_watchdog_sees_a_front_whose_workers_do_not_answer() {
    let (gate, server) = gated_server(ServerConfig {
        workers: 1,
        ..ServerConfig::default()
    });
    let stall = Duration::from_millis(300);
    // Idle, its probes answered: alive, for longer than the stall.
    let until = Instant::now() + stall * 5;
    while Instant::now() < until {
        assert!(server.running().is_alive(stall));
        thread::sleep(Duration::from_millis(20));
    }
    // The only worker hangs in a search: a probe goes unanswered and no
    // worker makes progress, so the front is reported stalled.
    let s = server.clone();
    let hung = thread::spawn(move || s.get("/search").status);
    wait_for("the worker to hang", Duration::from_secs(10), || {
        gate.entered() == 1
    });
    wait_for(
        "the front to be reported stalled",
        Duration::from_secs(20),
        || !server.running().is_alive(stall),
    );
    // Free again: the probe is answered and the front is alive.
    gate.open();
    assert_eq!(hung.join().unwrap(), 200);
    wait_for(
        "the front to be alive again",
        Duration::from_secs(20),
        || server.running().is_alive(stall),
    );
}

#[test]
fn a_busy_keep_alive_connection_and_new_ones_after_quiet_periods_are_answered() {
    let t = temp_store();
    let idle = Duration::from_millis(300);
    let server = TestServer::start_with(
        &t.db,
        Tz::UTC,
        ServerConfig {
            workers: 2,
            idle_timeout: idle,
            ..ServerConfig::default()
        },
    );
    let addr = server.server.as_ref().unwrap().local_addr();
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let ask = |c: &mut TcpStream| {
        c.write_all(b"GET /search HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        read_answer(c)
    };
    // One connection asks more often than the idle timeout, for several
    // idle timeouts, while no new connection arrives: it is never dropped.
    let until = Instant::now() + idle * 5;
    while Instant::now() < until {
        let (status, body) = ask(&mut conn);
        assert!(status.contains("200"), "{status}");
        assert!(body.starts_with(b"{\"data\""));
        thread::sleep(idle / 3);
    }
    // New connections after quiet periods longer than the idle timeout.
    for _ in 0..2 {
        thread::sleep(idle * 2);
        assert_eq!(server.get("/search").status, 200);
    }
}

#[test]
fn stalled_and_idle_clients_are_dropped() {
    let t = temp_store();
    let server = TestServer::start_with(
        &t.db,
        Tz::UTC,
        ServerConfig {
            workers: 2,
            idle_timeout: Duration::from_millis(300),
            ..ServerConfig::default()
        },
    );
    let addr = server.server.as_ref().unwrap().local_addr();
    // Headers never finished.
    let (_, closed) = raw_exchange(
        addr,
        b"GET /search HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(15),
    );
    assert!(closed, "a client stalled mid-headers was not dropped");
    // An idle keep-alive connection after one answer.
    let (text, closed) = raw_exchange(
        addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(15),
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(closed, "an idle keep-alive connection was not dropped");
    // Connected, silent from the start.
    let (text, closed) = raw_exchange(addr, b"", Duration::from_secs(15));
    assert!(closed && !text.contains("200"), "{text}");
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn three_hundred_stalled_connections_do_not_stop_search() {
    let t = temp_store();
    let provider = FakeProvider::start(fixture_feeds(Dialect::Plans)).unwrap();
    fetch_n(&t.db, &provider, 3);
    let server = TestServer::start_with(
        &t.db,
        Tz::UTC,
        ServerConfig {
            workers: 2,
            idle_timeout: Duration::from_secs(30),
            ..ServerConfig::default()
        },
    );
    let addr = server.server.as_ref().unwrap().local_addr();
    let stalled: Vec<TcpStream> = (0..300)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            // Half stall in the request line, half in the headers.
            let part: &[u8] = if i % 2 == 0 {
                b"GET /sea"
            } else {
                b"GET /search HTTP/1.1\r\nHost: x\r\nX-Slow: "
            };
            s.write_all(part).unwrap();
            s
        })
        .collect();
    for _ in 0..3 {
        let r = server.get("/search");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["data"]["events"].as_array().unwrap().len(), 4);
    }
    drop(stalled);
}

#[test]
fn oversized_and_malformed_requests_get_their_status_in_the_envelope() {
    let t = temp_store();
    let server = TestServer::start(&t.db, Tz::UTC);
    let addr = server.server.as_ref().unwrap().local_addr();
    // URL over 8 KiB.
    let long = format!("/search?pad={}", "a".repeat(9000));
    let r = server.get(&long);
    assert_eq!(r.status, 414);
    assert_eq!(r.json()["error"]["code"], "uri_too_long");
    // Headers over 16 KiB in total (each line well-formed).
    let mut req = String::from("GET /search HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..20 {
        req.push_str(&format!("X-Pad-{i}: {}\r\n", "b".repeat(1000)));
    }
    req.push_str("\r\n");
    let (text, _) = raw_exchange(addr, req.as_bytes(), Duration::from_secs(10));
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert!(text.contains("headers_too_large"), "{text}");
    // Malformed percent-encoding and invalid UTF-8 once decoded.
    for q in [
        "starts_at=2021-01-01T00:00:00%ZZ",
        "starts_at=%FF%FE",
        "starts_at=%C3%28",
        "ends_at=%",
    ] {
        let r = server.get(&format!("/search?{q}"));
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.json()["error"]["code"], "invalid_parameter", "{q}");
    }
    // Raw bytes that are not ASCII in the request line: tiny_http closes the
    // connection without an answer (it cannot parse the line); never a 500,
    // and the server goes on.
    let (text, closed) = raw_exchange(
        addr,
        b"GET /search?starts_at=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(closed && !text.contains(" 500 "), "{text}");
    // A request line that is not HTTP at all: tiny_http's 400.
    let (text, _) = raw_exchange(addr, b"HELLO\r\n\r\n", Duration::from_secs(10));
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    // HEAD: the GET's status and headers, no body.
    let r = request("HEAD", &server.url("/search"), &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(r.header("ETag").is_some());
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn the_rate_limit_is_per_client_and_x_forwarded_for_only_from_trusted_proxies() {
    let t = temp_store();
    let limited = |trusted: &str| {
        TestServer::start_with(
            &t.db,
            Tz::UTC,
            ServerConfig {
                workers: 2,
                // One request a minute: no refill can happen during the test.
                rate_limit: Some("1/m".parse().unwrap()),
                trusted_proxies: planbox::config::parse_cidrs(trusted).unwrap(),
                ..ServerConfig::default()
            },
        )
    };
    let behind_proxy = limited("127.0.0.0/8");
    let url = behind_proxy.url("/search");
    assert_eq!(get(&url, &[]).status, 200);
    let r = get(&url, &[]);
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Probes are never limited.
    assert_eq!(behind_proxy.get("/health").status, 200);
    assert_eq!(behind_proxy.get("/ready").status, 200);
    // The peer is a trusted proxy: each forwarded client has its own bucket.
    let a = [("X-Forwarded-For", "203.0.113.7")];
    let b = [("X-Forwarded-For", "198.51.100.1, 203.0.113.8")];
    assert_eq!(get(&url, &a).status, 200);
    assert_eq!(get(&url, &a).status, 429);
    assert_eq!(get(&url, &b).status, 200);
    // A client cannot escape by prepending addresses: the rightmost
    // untrusted hop (203.0.113.8) is the one that counts.
    let spoof = [("X-Forwarded-For", "192.0.2.99, 203.0.113.8")];
    assert_eq!(get(&url, &spoof).status, 429);
    assert_eq!(
        behind_proxy.server.as_ref().unwrap().rate_limited_clients(),
        3
    );

    // Without trusted proxies the header is ignored: one client, one bucket.
    let direct = limited("");
    let url = direct.url("/search");
    assert_eq!(get(&url, &a).status, 200);
    assert_eq!(get(&url, &b).status, 429);

    // Off by default.
    let open = TestServer::start(&t.db, Tz::UTC);
    for _ in 0..5 {
        assert_eq!(open.get("/search").status, 200);
    }
}

#[test]
fn rate_limit_and_trusted_proxy_flags_are_validated() {
    for args in [
        ["--rate-limit", "lots"],
        ["--rate-limit", "0/s"],
        ["--trusted-proxies", "10.0.0.0/99"],
    ] {
        let out = planbox()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(args[0]) || err.contains(args[1]), "{err}");
    }
    let out = planbox()
        .env("PLANBOX_TRUSTED_PROXIES", "nope")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an IP network"));
}

#[test]
fn a_shutdown_interrupts_a_slow_download_and_journals_nothing() {
    let t = temp_store();
    let mut feed = String::from("<planList><output>");
    for i in 0..2000 {
        feed.push_str(&format!(
            r#"<base_plan base_plan_id="{i}" sell_mode="online" title="T"><plan plan_id="1" plan_start_date="2021-01-01T10:00:00" plan_end_date="2021-01-01T11:00:00"><zone zone_id="1" price="1.00"/></plan></base_plan>"#
        ));
    }
    feed.push_str("</output></planList>");
    let provider = FakeProvider::start(vec![feed.into_bytes()]).unwrap();
    // About 350 KB at 2 KB / 50 ms: about 9 s to arrive in full.
    provider.push(Behaviour::Drip {
        bytes: 2048,
        every: Duration::from_millis(50),
    });
    let mut cfg = sync_config(&t.db, &provider.url());
    cfg.fetch.timeout = Duration::from_secs(120);
    let mut store = Store::open(&t.db).unwrap();
    let stop = Stop::new();
    let stopper = {
        let stop = stop.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            stop.stop();
        })
    };
    let started = Instant::now();
    let attempt = sync::fetch_once(&mut store, &cfg, &Metrics::new(), Some(&stop));
    stopper.join().unwrap();
    // Returned at the stop, long before the body (or the deadline) would end.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(attempt.run.counts.plans_seen, 0);
    assert!(
        store.runs(10).unwrap().is_empty(),
        "an interrupted fetch is not journaled"
    );
    assert_eq!(store.counts().unwrap().plans_stored, 0);
    let leftovers: Vec<_> = std::fs::read_dir(t.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".feed-"))
        .collect();
    assert!(leftovers.is_empty(), "spool file removed");
}

/// `planbox import` of `feed`, then the journal's row of that run.
fn import_run(feed: &[u8]) -> (TempStore, serde_json::Value) {
    let t = temp_store();
    let file = t.dir.path().join("feed.xml");
    std::fs::write(&file, feed).unwrap();
    let _ = planbox()
        .arg("import")
        .arg("--db")
        .arg(&t.db)
        .arg(&file)
        .output()
        .unwrap();
    let run = last_run(&t.db);
    (t, run)
}

/// A plans feed with a DOCTYPE and one base plan per title, each with one
/// plan.
fn titled_feed(doctype: &str, titles: &[String]) -> Vec<u8> {
    let mut s = format!("<?xml version=\"1.0\"?>\n{doctype}<planList><output>\n");
    for (i, title) in titles.iter().enumerate() {
        s += &format!(
            "<base_plan base_plan_id=\"{i}\" sell_mode=\"online\" title=\"{title}\">\
             <plan plan_id=\"1\" plan_start_date=\"2024-01-01T20:00:00\"/></base_plan>\n"
        );
    }
    s += "</output></planList>\n";
    s.into_bytes()
}

#[test]
fn entity_expansion_is_bounded_in_references_as_well_as_bytes() {
    // Entities that expand to nothing, 10 and 16 levels of 10 references;
    // a value of 200k references to an empty entity; one that stays within
    // the bounds; a plain control.
    let mut doctype = String::from("<!DOCTYPE planList [<!ENTITY e0 \"\"> <!ENTITY t \"\">");
    for i in 1..=16 {
        doctype += &format!("<!ENTITY e{i} \"{}\">", format!("&e{};", i - 1).repeat(10));
    }
    doctype += "]>\n";
    let titles = [
        "&e10;".to_owned(),
        "&e16;".to_owned(),
        "&t;".repeat(200_000),
        format!("Fine&e3;{}", "&t;".repeat(1000)),
        "Control".to_owned(),
    ];
    let (_t, run) = import_run(&titled_feed(&doctype, &titles));
    assert_eq!(run["outcome"], "ok", "{run}");
    assert_eq!(run["plans_new"], 2, "{run}");
    assert_eq!(run["skipped"]["unresolved_reference"], 3, "{run}");
}

#[test]
fn a_tag_of_120k_attributes_is_checked_for_duplicates_in_linear_time() {
    // Three-letter names: 7 bytes an attribute, 840 KB for the tag.
    let letters: Vec<char> = ('a'..='z').chain('A'..='Z').collect();
    let name = |i: usize| -> String {
        [i / (52 * 52), (i / 52) % 52, i % 52]
            .iter()
            .map(|&d| letters[d])
            .collect()
    };
    let attributes: String = (0..120_000).map(|i| format!(" {}=\"\"", name(i))).collect();
    let zone = format!("<zone zone_id=\"1\" price=\"5\"{attributes}/>");
    let feed = |zone: &str| {
        format!(
            "<planList><base_plan base_plan_id=\"1\" sell_mode=\"online\" title=\"Wide\">\
             <plan plan_id=\"1\" plan_start_date=\"2024-01-01T20:00:00\">{zone}</plan></base_plan></planList>"
        )
        .into_bytes()
    };
    let (_t, run) = import_run(&feed(&zone));
    assert_eq!(run["outcome"], "ok", "{run}");
    assert_eq!(run["plans_new"], 1, "{run}");
    // The last attribute repeats the first: found, the feed rejected.
    let duplicated = format!("{} aaa=\"\"/>", zone.trim_end_matches("/>"));
    let (_t, run) = import_run(&feed(&duplicated));
    assert_eq!(run["outcome"], "parse_error", "{run}");
    assert!(
        run["error"].as_str().unwrap().contains("appears twice"),
        "{run}"
    );
}

/// No character a terminal acts on (C0 other than the line feeds that end
/// lines, DEL, C1) in `text`.
fn no_terminal_controls(what: &str, text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{what}: {text:?}"
    );
}

#[test]
fn del_c1_and_line_breaks_from_a_feed_are_escaped_in_every_cli_output() {
    // XML allows DEL and the C1 controls (U+009B is a terminal's CSI) and
    // character references to line breaks; a mismatched end tag's name is
    // quoted in the error text the journal keeps.
    let titles = [
        "Del\u{7f} Csi\u{9b}2J Nel\u{85}".to_owned(),
        "Two&#10;lines&#13;back".to_owned(),
    ];
    let (t, run) = import_run(&titled_feed("", &titles));
    assert_eq!(run["outcome"], "ok", "{run}");
    assert_eq!(run["plans_new"], 2, "{run}");
    let broken = titled_feed("", &["x".to_owned()]);
    let broken = String::from_utf8(broken)
        .unwrap()
        .replace("</base_plan>", "</base\u{1b}[2J\u{9b}plan>");
    let file = t.dir.path().join("broken.xml");
    std::fs::write(&file, broken).unwrap();
    let import = planbox()
        .args(["import", "--db"])
        .arg(&t.db)
        .arg(&file)
        .output()
        .unwrap();
    assert!(!import.status.success());
    no_terminal_controls("import", &String::from_utf8(import.stderr).unwrap());

    let text = |args: &[&str]| {
        String::from_utf8(run_ok(planbox().args(args).arg("--db").arg(&t.db)).stdout).unwrap()
    };
    let table = text(&["search"]);
    no_terminal_controls("search", &table);
    assert!(
        table.contains("Del\\u{7f} Csi\\u{9b}2J Nel\\u{85}"),
        "{table}"
    );
    assert!(table.contains("Two\\u{a}lines\\u{d}back"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
    let status = text(&["status"]);
    no_terminal_controls("status", &status);
    assert!(status.contains("</base\\u{1b}[2J\\u{9b}plan>"), "{status}");

    // JSON keeps the same values, written as escapes.
    let json = text(&["search", "--json"]);
    no_terminal_controls("search --json", json.trim_end());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let got: Vec<&str> = v["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap())
        .collect();
    assert!(got.contains(&"Del\u{7f} Csi\u{9b}2J Nel\u{85}"), "{got:?}");
    assert!(got.contains(&"Two\nlines\rback"), "{got:?}");
    let json = text(&["status", "--json"]);
    no_terminal_controls("status --json", &json);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        v["runs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("</base\u{1b}[2J\u{9b}plan>"),
        "{v}"
    );
}

#[test]
fn a_control_character_in_a_title_never_reaches_search_or_status() {
    let titles = ["Vertical\u{b}Tab \u{1b}[2J\u{1b}[31mRed\u{7}".to_owned()];
    let (t, run) = import_run(&titled_feed("", &titles));
    assert_eq!(run["outcome"], "ok", "{run}");
    assert_eq!(run["repaired"]["control_character"], 4, "{run}");
    let out = run_ok(planbox().args(["search", "--db"]).arg(&t.db));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("VerticalTab [2J[31mRed"), "{text}");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{text:?}"
    );
}
