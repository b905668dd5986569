//! Answers of any size: streamed bodies, pages through `Link`, validators
//! known before the body, compression of streamed answers, and clients that
//! stop reading.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono_tz::Tz;
use planbox::api::{Source, StreamFn};
use planbox::model::SearchQuery;
use planbox::model::{parse_feed_datetime, FeedPlan, FetchRun, Outcome, Price, PriceRange};
use planbox::server::{RunningServer, ServerConfig};
use planbox::store::Store;
use planbox::store::{DataVersion, StoreCounts, StoreError};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use crate::support::*;

/// Lands `n` generated plans (some without end, some sharing start and end,
/// some never online) in one ingest. Each event is ~250 bytes of JSON.
pub(crate) fn generated_store(db: &Path, n: usize, provider: &str) {
    let mut store = Store::open(db).unwrap();
    let mut tx = store.begin_ingest(provider).unwrap();
    for i in 0..n {
        let day = i / 40;
        let hour = (i / 8) % 5;
        let start = format!(
            "2021-{:02}-{:02}T{:02}:00:00",
            1 + (day / 28) % 12,
            1 + day % 28,
            10 + hour
        );
        let end = match i % 7 {
            0 => None,
            k => Some(format!(
                "2021-{:02}-{:02}T{:02}:30:00",
                1 + (day / 28) % 12,
                1 + day % 28,
                15 + k % 3
            )),
        };
        let mut prices = PriceRange::default();
        prices.add(Price::parse(&format!("{}.50", i % 90)).unwrap());
        tx.upsert(&FeedPlan {
            base_plan_id: format!("b{}", i / 3),
            plan_id: format!("{i}"),
            title: format!("Generated plan number {i} with a title of some length"),
            online: i % 11 != 3,
            start: parse_feed_datetime(&start).unwrap(),
            end: end.map(|e| parse_feed_datetime(&e).unwrap()),
            prices,
        })
        .unwrap();
    }
    let run = FetchRun {
        provider: provider.into(),
        started_at: "2026-01-01T00:00:00Z".into(),
        duration_ms: 1,
        source: "generated".into(),
        outcome: Outcome::Ok,
        http_status: None,
        bytes: 0,
        counts: tx.counts(),
        skipped: Default::default(),
        repaired: Default::default(),
        error: None,
    };
    tx.commit(&run, None).unwrap();
}

/// The answer as the materializing implementation built it: the envelope
/// around every searchable plan's stored JSON, in (start, end, id) order.
fn materialized(db: &Path) -> Vec<u8> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut stmt = c
        .prepare("SELECT json FROM plans_search ORDER BY start_at, end_at, id")
        .unwrap();
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    format!(
        r#"{{"data":{{"events":[{}]}},"error":null}}"#,
        rows.join(",")
    )
    .into_bytes()
}

fn ids(body: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The path and query of a `Link: <...>; rel="next"` header.
fn next_link(r: &Reply) -> Option<String> {
    let h = r.header("Link")?;
    assert!(h.ends_with(r#">; rel="next""#), "{h}");
    Some(h[1..h.find('>').unwrap()].to_owned())
}

/// Raw HTTP/1.1 exchange; returns (head, raw body bytes as sent).
fn raw(addr: &str, request: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8_lossy(&all[..split]).into_owned(),
        all[split + 4..].to_vec(),
    )
}

#[test]
fn streamed_answers_equal_the_materialized_body() {
    let t = temp_store();
    generated_store(&t.db, 12_000, "p");
    let s = TestServer::start(&t.db, Tz::UTC);
    let want = materialized(&t.db);
    assert!(want.len() > planbox::api::WHOLE_MAX_BYTES, "{}", want.len());
    let r = s.get("/search");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), None, "streamed, so chunked");
    assert_eq!(r.body, want);
    // Small windows are whole answers, with a length.
    let small = s.get("/search?starts_at=2021-01-02T00:00:00&ends_at=2021-01-02T23:59:59");
    assert!(small.header("Content-Length").is_some());
    assert!(!ids(&small.body).is_empty());

    // The fixtures too (a small answer).
    let f = temp_store();
    let provider =
        planbox::provider_sim::FakeProvider::start(fixture_feeds(Dialect::Plans)).unwrap();
    fetch_n(&f.db, &provider, 3);
    let fs = TestServer::start(&f.db, Tz::UTC);
    assert_eq!(fs.get("/search").body, materialized(&f.db));

    // `planbox search --json` streams the same bytes (plus a newline).
    let out = run_ok(planbox().args(["search", "--json", "--db"]).arg(&t.db));
    assert_eq!(&out.stdout[..out.stdout.len() - 1], &want[..]);
    let table = run_ok(planbox().args(["search", "--db"]).arg(&t.db));
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.ends_with(&format!("{} plan(s)\n", ids(&want).len())),
        "{}",
        &text[text.len() - 100..]
    );
}

/// A store reader that counts the answer bytes read from it: what a
/// search rendered, sent or not.
struct CountingReader {
    inner: planbox::store::Reader,
    read: Arc<AtomicU64>,
}

struct Counted<'a> {
    inner: &'a mut dyn Read,
    read: &'a AtomicU64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, SeqCst);
        Ok(n)
    }
}

impl Source for CountingReader {
    fn version(&mut self) -> Result<DataVersion, StoreError> {
        self.inner.version()
    }
    fn stream(
        &mut self,
        q: &SearchQuery,
        f: &mut StreamFn<'_>,
    ) -> Result<std::io::Result<()>, StoreError> {
        let read = self.read.clone();
        self.inner.stream(q, |snap, rows| {
            f(
                snap,
                &mut Counted {
                    inner: rows,
                    read: &read,
                },
            )
        })
    }
    fn counts(&mut self) -> Result<StoreCounts, StoreError> {
        self.inner.counts()
    }
    fn runs(&mut self, limit: usize) -> Result<Vec<FetchRun>, StoreError> {
        self.inner.runs(limit)
    }
}

#[test]
fn http_1_0_and_head_never_render_a_body_they_do_not_send() {
    let t = temp_store();
    generated_store(&t.db, 8_000, "p");
    let want = materialized(&t.db);
    assert!(want.len() > planbox::api::WHOLE_MAX_BYTES, "{}", want.len());
    let read = Arc::new(AtomicU64::new(0));
    let (db, r) = (t.db.clone(), read.clone());
    let sources: planbox::server::SourceFactory = Arc::new(move || {
        Ok(Box::new(CountingReader {
            inner: planbox::store::Reader::open(&db)?,
            read: r.clone(),
        }) as _)
    });
    let api = Arc::new(planbox::api::Api::new(
        Tz::UTC,
        Arc::new(planbox::metrics::Metrics::new()),
        Arc::new(planbox::service::ServiceInfo::default()),
    ));
    let listener = planbox::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let server =
        RunningServer::start_with_source(listener, api, sources, ServerConfig::default()).unwrap();
    let addr = server.local_addr().to_string();
    // HTTP/1.0 has no chunks: the large answer is sent raw, uncompressed,
    // ended by the close, and read from the store once (no pass that
    // counts its length first).
    let (head, body) = raw(
        &addr,
        "GET /search HTTP/1.0\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(!head.contains("Content-Encoding"), "{head}");
    assert!(!head.contains("Content-Length"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    assert_eq!(body, want);
    assert_eq!(read.load(SeqCst), want.len() as u64);
    // HEAD, either version: the GET's status and validators, no body, and
    // nothing of it read.
    for version in ["1.0", "1.1"] {
        read.store(0, SeqCst);
        let (head, body) = raw(
            &addr,
            &format!("HEAD /search HTTP/{version}\r\nConnection: close\r\n\r\n"),
        );
        assert!(head.starts_with(&format!("HTTP/{version} 200")), "{head}");
        assert!(head.contains("ETag"), "{head}");
        assert!(body.is_empty());
        assert_eq!(read.load(SeqCst), 0, "HEAD over HTTP/{version}");
    }
    // A small answer keeps an HTTP/1.0 keep-alive connection, with a length.
    let mut c = TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..2 {
        c.write_all(b"GET /search?starts_at=2021-01-02T00:00:00&ends_at=2021-01-02T23:59:59 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.contains("Connection: keep-alive"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).unwrap();
        assert!(body.starts_with(b"{\"data\""));
    }
    server.shutdown(Duration::from_secs(2));
}

#[test]
fn pages_through_link_concatenate_to_the_whole_answer() {
    let t = temp_store();
    generated_store(&t.db, 6_000, "p");
    let s = TestServer::start(&t.db, Tz::UTC);
    let whole = ids(&s.get("/search").body);
    for (query, limit) in [
        ("", 1_000),
        ("starts_at=2021-02-01T00:00:00&", 777),
        ("", 100_000),
    ] {
        let mut got = Vec::new();
        let mut url = format!("/search?{query}limit={limit}");
        let mut pages = 0;
        loop {
            let r = s.get(&url);
            assert_eq!(r.status, 200, "{url}: {}", r.text());
            let page = ids(&r.body);
            assert!(page.len() <= limit);
            got.extend(page);
            pages += 1;
            match next_link(&r) {
                Some(next) => url = next,
                None => break,
            }
        }
        let want: Vec<String> = if query.is_empty() {
            whole.clone()
        } else {
            ids(&s
                .get(&format!("/search?{}", query.trim_end_matches('&')))
                .body)
        };
        assert_eq!(got, want, "{query} limit={limit}");
        assert_eq!(
            pages,
            want.len().div_ceil(limit).max(1),
            "no empty last page"
        );
    }
    // Bad limits and cursors are 400s naming the parameter.
    let r = s.get("/search?limit=2");
    let next = next_link(&r).unwrap();
    let cursor = next.rsplit("after=").next().unwrap().to_owned();
    let mut tampered = cursor.clone().into_bytes();
    tampered[5] = b'x';
    let tampered = String::from_utf8(tampered).unwrap();
    let flag = format!("{}7{}", &cursor[..16], &cursor[17..]);
    for (q, param) in [
        ("limit=0".to_owned(), "limit"),
        ("limit=100001".to_owned(), "limit"),
        ("limit=x".to_owned(), "limit"),
        (format!("limit=5&after={tampered}"), "after"),
        (format!("after={}", &cursor[..cursor.len() - 2]), "after"),
        (format!("after={flag}"), "after"),
        (format!("after={cursor}00"), "after"),
        ("after=".to_owned(), "after"),
        (format!("after={cursor}&after={cursor}"), "after"),
    ] {
        let r = s.get(&format!("/search?{q}"));
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.json()["error"]["code"], "invalid_parameter");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.starts_with(param), "{q}: {msg}");
    }
    // A cursor without limit: the rest of the window after it.
    let rest = ids(&s.get(&format!("/search?after={cursor}")).body);
    assert_eq!(rest, whole[2..]);
}

#[test]
fn streamed_answers_have_etag_304_head_and_compress() {
    let t = temp_store();
    generated_store(&t.db, 8_000, "p");
    let s = TestServer::start(&t.db, Tz::UTC);
    // The answer is over 1 MiB and not known to fit the cache yet: HEAD
    // sends the GET's validators, no body, and no length or framing (it
    // reads no row to learn them).
    let addr = s.base.trim_start_matches("http://").to_owned();
    let (h, body) = raw(
        &addr,
        "HEAD /search HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        !h.contains("Content-Length") && !h.contains("Transfer-Encoding"),
        "{h}"
    );
    assert!(body.is_empty());
    // A cache in front may keep a streamed answer like a whole one.
    assert!(
        h.contains("Cache-Control: public, max-age=60, stale-while-revalidate=60,"),
        "{h}"
    );
    let plain = s.get("/search");
    let etag = plain.header("ETag").unwrap().to_owned();
    assert!(h.contains(&format!("ETag: {etag}")), "{h}");
    assert_eq!(
        get(&s.url("/search"), &[("If-None-Match", &etag)]).status,
        304
    );
    let head = request("HEAD", &s.url("/search"), &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("ETag"), Some(etag.as_str()));
    assert!(head.body.is_empty());

    for (coding, header) in [("gzip", "gzip"), ("br", "br"), ("br;q=0.1, gzip", "gzip")] {
        let r = get(&s.url("/search"), &[("Accept-Encoding", coding)]);
        assert_eq!(r.header("Content-Encoding"), Some(header), "{coding}");
        let mut out = Vec::new();
        if header == "gzip" {
            flate2::read::GzDecoder::new(&r.body[..])
                .read_to_end(&mut out)
                .unwrap();
        } else {
            brotli::BrotliDecompress(&mut &r.body[..], &mut out).unwrap();
        }
        assert_eq!(out, plain.body, "{coding}");
        let tag = r.header("ETag").unwrap().to_owned();
        assert_ne!(tag, etag, "one ETag per coding");
        let again = get(
            &s.url("/search"),
            &[("Accept-Encoding", coding), ("If-None-Match", &tag)],
        );
        assert_eq!(again.status, 304, "{coding}");
    }
    // A new fetch that changes the data changes the ETag.
    generated_store(&t.db, 8_002, "p");
    assert_ne!(s.get("/search").header("ETag"), Some(etag.as_str()));
}

#[test]
fn replicas_with_the_same_plans_agree_on_etags() {
    let (a, b) = (temp_store(), temp_store());
    // Same plans, landed differently: all at once, or in two ingests.
    generated_store(&a.db, 3_000, "p");
    generated_store(&b.db, 1_000, "p");
    generated_store(&b.db, 3_000, "p");
    let (sa, sb) = (
        TestServer::start(&a.db, Tz::UTC),
        TestServer::start(&b.db, Tz::UTC),
    );
    for q in [
        "/search",
        "/search?limit=10",
        "/search?starts_at=2021-03-01T00:00:00",
    ] {
        let (ra, rb) = (sa.get(q), sb.get(q));
        assert_eq!(ra.body, rb.body, "{q}");
        assert_eq!(ra.header("ETag"), rb.header("ETag"), "{q}");
    }
    // Another provider name: other ids, another ETag.
    let c = temp_store();
    generated_store(&c.db, 3_000, "other");
    let sc = TestServer::start(&c.db, Tz::UTC);
    assert_ne!(
        sa.get("/search").header("ETag"),
        sc.get("/search").header("ETag")
    );
}

#[test]
fn a_client_that_stops_reading_frees_its_worker_after_the_send_timeout() {
    let t = temp_store();
    // ~9 MB: more than the kernel buffers hold on loopback.
    generated_store(&t.db, 40_000, "p");
    let s = TestServer::start_with(
        &t.db,
        Tz::UTC,
        ServerConfig {
            workers: 1,
            // No spare worker: the send timeout alone frees the worker.
            max_spare_workers: 0,
            idle_timeout: Duration::from_millis(700),
            ..ServerConfig::default()
        },
    );
    let addr = s.base.trim_start_matches("http://").to_owned();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    let mut stalled: TcpStream = sock.into();
    stalled
        .write_all(b"GET /search HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // The only worker is stuck writing to `stalled` until the send timeout
    // ends it; then it answers again.
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let r = s.get("/health");
    assert_eq!(r.status, 200);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    drop(stalled);
}

#[test]
fn another_process_s_changes_show_within_the_version_ttl_and_our_own_at_once() {
    let t = temp_store();
    generated_store(&t.db, 100, "p");
    let s = TestServer::start(&t.db, Tz::UTC);
    let etag = |s: &TestServer| s.get("/search").header("ETag").unwrap().to_owned();
    let first = etag(&s);
    // Another process writes: visible at the latest VERSION_TTL after its
    // commit, since the version the server holds was read before it.
    let files = fixture_files(t.dir.path(), Dialect::Plans);
    run_ok(planbox().args(["import", "--db"]).arg(&t.db).arg(&files[0]));
    std::thread::sleep(planbox::api::VERSION_TTL + Duration::from_millis(20));
    let second = etag(&s);
    assert_ne!(second, first);
    // This process writes: visible to the very next request.
    generated_store(&t.db, 120, "p");
    assert_ne!(etag(&s), second);
}

#[test]
fn cli_search_into_a_closed_pipe_ends_quietly() {
    // `planbox search | head`: the reader goes away after the first lines of
    // an answer far larger than a pipe's buffer.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("planbox.db");
    generated_store(&db, 3000, "provider");
    for json in [false, true] {
        let mut cmd = planbox();
        cmd.args(["search", "--db"]).arg(&db);
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 64];
        child.stdout.take().unwrap().read_exact(&mut first).unwrap();
        // The read end is closed here: the rest of the answer has nowhere to go.
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Ended by SIGPIPE, as `cat | head` does: no panic, no error line.
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "json={json}: {stderr}"
        );
        assert!(stderr.is_empty(), "json={json}: {stderr}");
    }
}
