//! Operator experience (issue 6): `/metrics` and its own listener, the
//! status page, `/openapi.yaml`, logs, signals, systemd notifications, the
//! unit file, `backup` while serving and `healthcheck`. Most tests run the
//! built binary; `serve` binds port 0 and its `listening addr=...` log line
//! says where.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, ChildStderr, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chrono_tz::Tz;
use planbox::model::Outcome;
use planbox::provider_sim::{Behaviour, FakeProvider};
use planbox::store::Store;

use crate::support::*;

// ---------------------------------------------------------------------------
// A `planbox serve` child process.

/// Upper bound on waiting for something the child must eventually do. Not a
/// timing assertion: only a way to fail instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) struct Serve {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    rx: mpsc::Receiver<String>,
    /// The main listener.
    addr: SocketAddr,
}

fn collect_stderr(stderr: ChildStderr) -> (Arc<Mutex<Vec<String>>>, mpsc::Receiver<String>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let l = lines.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            l.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    (lines, rx)
}

impl Serve {
    /// Starts `planbox [global] serve --listen 127.0.0.1:0 --db DB [args]`
    /// with `PLANBOX_LOG=info` and `env`, and waits for its listening line.
    pub(crate) fn start(db: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
        Self::start_with(&[], db, args, env)
    }

    fn start_with(global: &[&str], db: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut cmd = planbox();
        // Hermetic even when the tests themselves run under systemd.
        for v in [
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "JOURNAL_STREAM",
        ] {
            cmd.env_remove(v);
        }
        cmd.args(global)
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(args)
            .env("PLANBOX_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("planbox serve starts");
        let (lines, rx) = collect_stderr(child.stderr.take().unwrap());
        let mut s = Serve {
            child,
            lines,
            rx,
            addr: "0.0.0.0:0".parse().unwrap(),
        };
        let line = s.wait_line(|l| l.contains("listening") && !l.contains("metrics listening"));
        s.addr = addr_in(&line);
        s
    }

    /// Waits for a stderr line matching `pred` (including earlier ones).
    pub(crate) fn wait_line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "no such line from planbox serve; stderr so far:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    /// Waits until `n` stderr lines match `pred`.
    pub(crate) fn wait_count(&mut self, pred: impl Fn(&str) -> bool, n: usize) {
        let count = |s: &Serve| s.lines.lock().unwrap().iter().filter(|l| pred(l)).count();
        let deadline = Instant::now() + PATIENCE;
        while count(self) < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.rx.recv_timeout(left).is_err() {
                panic!("only {} matching lines:\n{}", count(self), self.stderr());
            }
        }
    }

    pub(crate) fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn signal(&self, sig: &str) {
        let st = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(st.success());
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code and all
    /// of stderr.
    pub(crate) fn terminate(mut self) -> (Option<i32>, String) {
        self.signal("TERM");
        let status = wait_exit(&mut self.child);
        // The reader thread ends at EOF; give it the remaining lines.
        while self.rx.recv_timeout(Duration::from_secs(5)).is_ok() {}
        (status.code(), self.stderr())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // Only still running when a test failed half-way.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "planbox did not exit");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The `addr=...` field of a log line (text or JSON).
pub(crate) fn addr_in(line: &str) -> SocketAddr {
    let rest = line
        .split("addr=")
        .nth(1)
        .or_else(|| line.split("\"addr\":\"").nth(1))
        .unwrap_or_else(|| panic!("no addr in {line}"));
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"')
        .unwrap_or(rest.len());
    rest[..end].parse().unwrap()
}

// ---------------------------------------------------------------------------
// A strict parser of the Prometheus text format (0.0.4), for what planbox
// emits: HELP and TYPE before the samples of a family, `name{labels} value`.

#[derive(Debug, Default)]
struct Family {
    kind: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

type Scrape = BTreeMap<String, Family>;

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").expect("label=\"value\"");
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad label name {name:?}"
        );
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("unterminated label value") {
                (_, '\\') => match chars.next().expect("escape").1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => panic!("bad escape \\{c}"),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        assert!(
            out.insert(name.to_string(), value).is_none(),
            "repeated label {name}"
        );
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    out
}

fn parse_prometheus(text: &str) -> Scrape {
    let mut fams: Scrape = BTreeMap::new();
    let mut helped = std::collections::BTreeSet::new();
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.trim().is_empty(), "{line}");
            assert!(helped.insert(name.to_string()), "second HELP for {name}");
            assert!(!fams.contains_key(name), "HELP after TYPE/samples: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(helped.contains(name), "TYPE without HELP: {line}");
            let prev = fams.insert(
                name.to_string(),
                Family {
                    kind: kind.into(),
                    samples: vec![],
                },
            );
            assert!(prev.is_none(), "second TYPE for {name}");
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.strip_suffix('}').expect("closing brace"))),
            None => (series, BTreeMap::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name {name}"
        );
        // The family a sample belongs to: the name itself, or for histograms
        // the name without _bucket/_sum/_count.
        let family = if fams.contains_key(name) {
            name
        } else {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| fams.get(*f).is_some_and(|x| x.kind == "histogram"))
                })
                .unwrap_or_else(|| panic!("sample before its TYPE: {line}"))
        };
        fams.get_mut(family)
            .unwrap()
            .samples
            .push((name.to_string(), labels, value));
    }
    for (name, f) in &fams {
        if f.kind == "histogram" {
            check_histogram(name, f);
        }
    }
    fams
}

/// Buckets cumulative with increasing `le`, ending at `+Inf` == `_count`.
fn check_histogram(name: &str, f: &Family) {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for (n, labels, v) in &f.samples {
        let mut key = labels.clone();
        let le = key.remove("le");
        let key = format!("{key:?}");
        if n.ends_with("_bucket") {
            let le = le.expect("bucket without le");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("numeric le")
            };
            series.entry(key).or_default().push((le, *v));
        } else if n.ends_with("_count") {
            counts.insert(key, *v);
        }
    }
    assert!(
        !series.is_empty() || f.samples.is_empty(),
        "{name}: no buckets"
    );
    for (key, buckets) in &series {
        for w in buckets.windows(2) {
            assert!(w[0].0 < w[1].0, "{name}{key}: le not increasing");
            assert!(w[0].1 <= w[1].1, "{name}{key}: buckets not cumulative");
        }
        let last = buckets.last().unwrap();
        assert_eq!(last.0, f64::INFINITY, "{name}{key}: no +Inf bucket");
        assert_eq!(
            Some(&last.1),
            counts.get(key),
            "{name}{key}: +Inf != _count"
        );
    }
}

/// The value of the one sample `name` with exactly `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    s.values()
        .flat_map(|f| &f.samples)
        .find(|(n, l, _)| n == name && *l == want)
        .map(|(_, _, v)| *v)
}

fn scrape(url: &str) -> Scrape {
    let r = get(url, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("Content-Type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.header("Content-Type")
    );
    parse_prometheus(&r.text())
}

#[test]
fn ops_prometheus_parser_rejects_broken_text() {
    // The parser is strict enough to fail on what it must catch.
    let ok = "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n";
    parse_prometheus(ok);
    for bad in [
        ok.replace("h_count 2", "h_count 3"),
        ok.replace("le=\"1\"} 1", "le=\"1\"} 5"),
        ok.replace("# HELP h x\n", ""),
        "c 1\n".to_string(),
        "# HELP c x\n# TYPE c counter\nc{a=\"1} 1\n".to_string(),
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_prometheus(&bad)).is_err(),
            "accepted: {bad}"
        );
    }
}

// ---------------------------------------------------------------------------
// /metrics

#[test]
fn ops_metrics_parse_and_count_requests_and_fetch_outcomes() {
    let t = temp_store();
    let server = TestServer::start(&t.db, Tz::UTC);
    let provider = FakeProvider::start(fixture_feeds(Dialect::Plans)).unwrap();
    provider.push(Behaviour::Status(500, None));
    let cfg = sync_config(&t.db, &provider.url());
    let mut store = Store::open(&t.db).unwrap();
    let outcomes: Vec<Outcome> = (0..4)
        .map(|_| {
            planbox::sync::fetch_once(&mut store, &cfg, &server.metrics, None)
                .run
                .outcome
        })
        .collect();
    assert_eq!(
        outcomes,
        [Outcome::HttpError, Outcome::Ok, Outcome::Ok, Outcome::Ok]
    );

    let before = scrape(&server.url("/metrics"));
    let fetches = |s: &Scrape, o: &str| {
        value(
            s,
            "planbox_fetch_runs_total",
            &[("provider", "provider"), ("outcome", o)],
        )
    };
    assert_eq!(fetches(&before, "ok"), Some(3.0));
    assert_eq!(fetches(&before, "http_error"), Some(1.0));
    assert_eq!(fetches(&before, "timeout"), Some(0.0));
    assert_eq!(before["planbox_fetch_runs_total"].kind, "counter");
    assert_eq!(value(&before, "planbox_plans_searchable", &[]), Some(4.0));
    let last = value(
        &before,
        "planbox_last_fetch_success_timestamp_seconds",
        &[("provider", "provider")],
    )
    .unwrap();
    assert!(last >= 1.7e9, "{last}");
    assert_eq!(
        before["planbox_http_request_duration_seconds"].kind,
        "histogram"
    );

    let n = 7;
    for _ in 0..n {
        assert_eq!(server.get("/search").status, 200);
    }
    assert_eq!(server.get("/search?starts_at=nope").status, 400);
    let after = scrape(&server.url("/metrics"));
    let req = |s: &Scrape, status: &str| {
        value(
            s,
            "planbox_http_requests_total",
            &[("route", "/search"), ("status", status)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(req(&after, "200") - req(&before, "200"), n as f64);
    assert_eq!(req(&after, "400") - req(&before, "400"), 1.0);
    let count = |s: &Scrape| {
        value(
            s,
            "planbox_http_request_duration_seconds_count",
            &[("route", "/search")],
        )
        .unwrap_or(0.0)
    };
    let inf = |s: &Scrape| {
        value(
            s,
            "planbox_http_request_duration_seconds_bucket",
            &[("route", "/search"), ("le", "+Inf")],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count(&after) - count(&before), (n + 1) as f64);
    assert_eq!(inf(&after) - inf(&before), (n + 1) as f64);
    // The earlier scrape itself was counted under /metrics.
    assert!(
        value(
            &after,
            "planbox_http_requests_total",
            &[("route", "/metrics"), ("status", "200")]
        )
        .unwrap()
            >= 1.0
    );
}

#[test]
fn ops_metrics_listen_moves_metrics_off_the_main_listener() {
    let t = temp_store();
    // The variable, not the flag: both must work (clap maps one to the other).
    let mut s = Serve::start(
        &t.db,
        &["--demo"],
        &[("PLANBOX_METRICS_LISTEN", "127.0.0.1:0")],
    );
    let m = addr_in(&s.wait_line(|l| l.contains("metrics listening")));
    assert_ne!(m, s.addr);

    let main = get(&s.url("/metrics"), &[]);
    assert_eq!(main.status, 404);
    assert_eq!(main.json()["error"]["code"], "not_found");
    assert_eq!(get(&s.url("/search"), &[]).status, 200);
    assert!(!get(&s.url("/"), &[]).text().contains("href=\"/metrics\""));

    let side = scrape(&format!("http://{m}/metrics"));
    // The demo lands its three feeds before listening.
    assert_eq!(
        value(
            &side,
            "planbox_fetch_runs_total",
            &[("provider", "provider"), ("outcome", "ok")]
        ),
        Some(3.0)
    );
    assert_eq!(value(&side, "planbox_plans_searchable", &[]), Some(4.0));
    assert!(
        value(
            &side,
            "planbox_last_fetch_success_timestamp_seconds",
            &[("provider", "provider")]
        )
        .unwrap()
            > 1.7e9
    );
    // Each listener counts its own connections; no status listener runs.
    let accepted = |listener| {
        value(
            &side,
            "planbox_http_connections_accepted_total",
            &[("listener", listener)],
        )
    };
    assert!(accepted("main").unwrap() >= 3.0);
    assert!(accepted("metrics").unwrap() >= 1.0);
    assert_eq!(accepted("status"), None);
    for path in ["/search", "/", "/ready"] {
        assert_eq!(get(&format!("http://{m}{path}"), &[]).status, 404, "{path}");
    }
    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn ops_metrics_on_the_main_listener_by_default() {
    let t = temp_store();
    let s = Serve::start(&t.db, &["--demo"], &[]);
    let m = scrape(&s.url("/metrics"));
    assert_eq!(value(&m, "planbox_plans_searchable", &[]), Some(4.0));
    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
}

// ---------------------------------------------------------------------------
// GET / and /openapi.yaml

fn fixture_server() -> (TempStore, TestServer) {
    let t = temp_store();
    let provider = FakeProvider::start(fixture_feeds(Dialect::Plans)).unwrap();
    let runs = fetch_n(&t.db, &provider, 3);
    assert!(runs.iter().all(|r| r.outcome == Outcome::Ok));
    let server = TestServer::start(&t.db, Tz::UTC);
    (t, server)
}

/// Rows of the `<tbody>` of the table following `heading`.
fn table_rows(html: &str, heading: &str) -> Vec<String> {
    let at = html.find(heading).unwrap_or_else(|| panic!("no {heading}"));
    let rest = &html[at + heading.len()..];
    // Only up to the next section.
    let rest = &rest[..rest.find("<h2>").unwrap_or(rest.len())];
    let Some(body) = rest.find("<tbody>") else {
        return vec![];
    };
    let end = rest[body..].find("</tbody>").unwrap() + body;
    rest[body + 7..end]
        .split("<tr>")
        .filter(|r| !r.is_empty())
        .map(|r| r.trim_end_matches("</tr>").to_string())
        .collect()
}

#[test]
fn ops_status_page_renders_form_results_and_runs_without_js() {
    let (_t, server) = fixture_server();
    let r = server.get("/?starts_at=2021-02-11T00%3A00%3A00Z&ends_at=2021-12-31T23:59:59");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    let csp = r.header("Content-Security-Policy").unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = r.text();
    assert!(html.starts_with("<!doctype html>"));
    // No JavaScript, nothing loaded from elsewhere.
    for banned in ["<script", "<link", " src=", "http://", "https://"] {
        assert!(!html.contains(banned), "{banned} in the page");
    }
    // The form: GET to /, both fields, refilled with the submitted values.
    assert!(html.contains("<form method=\"get\" action=\"/\">"));
    assert!(html.contains("name=\"starts_at\" value=\"2021-02-11T00:00:00Z\""));
    assert!(html.contains("name=\"ends_at\" value=\"2021-12-31T23:59:59\""));
    // Results: the three fixture plans in the window, in API order, with the
    // API's exact prices.
    let rows = table_rows(&html, "<h2>Search</h2>");
    assert_eq!(rows.len(), 3, "{html}");
    for (row, (title, start, end, min, max)) in rows.iter().zip(&EXPECTED[1..]) {
        assert!(
            row.starts_with(&format!(
                "<td>{title}</td><td>{start}</td><td>{end}</td><td>{min}</td><td>{max}</td>"
            )),
            "{row}"
        );
    }
    assert!(html.contains("<p>3 plan(s)</p>"));
    // The journal, newest first: three ok runs of the fixture feeds.
    let runs = table_rows(&html, "<h2>Recent fetches</h2>");
    assert_eq!(runs.len(), 3, "{html}");
    assert!(runs
        .iter()
        .all(|r| r.contains("<td class=\"ok\">ok</td><td>200</td>")));
    assert!(
        runs[2].contains("<td>4</td><td>4</td><td>0</td>"),
        "{}",
        runs[2]
    );
    assert!(html.contains("<dt>Plans stored</dt><dd>4</dd>"));
    assert!(html.contains("<dt>Plans searchable</dt><dd>4</dd>"));

    // Without a query: the form and the runs, no results table.
    let plain = server.get("/").text();
    assert!(plain.contains("name=\"starts_at\" value=\"\""));
    assert!(!plain.contains("plan(s)"));
    assert_eq!(table_rows(&plain, "<h2>Recent fetches</h2>").len(), 3);
}

#[test]
fn ops_status_page_escapes_what_the_user_typed() {
    let (_t, server) = fixture_server();
    let r = server.get("/?starts_at=%3Cscript%3Ealert(1)%3C%2Fscript%3E%22&ends_at=");
    assert_eq!(r.status, 200);
    let html = r.text();
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains("value=\"&lt;script&gt;alert(1)&lt;/script&gt;&quot;\""));
    // The API's 400 message, shown instead of results.
    assert!(html.contains("<p class=\"err\">starts_at"), "{html}");
    assert!(!html.contains("plan(s)"));
    // A window with nothing in it: a count, no table.
    let empty = server.get("/?starts_at=2030-01-01T00:00:00Z").text();
    assert!(empty.contains("<p>0 plan(s)</p>"));
    assert!(table_rows(&empty, "<h2>Search</h2>").is_empty());
}

#[test]
fn ops_openapi_yaml_is_served() {
    let (_t, server) = fixture_server();
    let r = server.get("/openapi.yaml");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/yaml"));
    let text = r.text();
    assert!(
        text.lines().any(|l| l.starts_with("openapi:")),
        "no openapi version line"
    );
    assert!(
        text.lines().any(|l| {
            let key = l.trim().trim_end_matches(':');
            l.starts_with(' ') && ["/search", "\"/search\"", "'/search'"].contains(&key)
        }),
        "no /search path"
    );
    assert_eq!(text, planbox::api::OPENAPI);
}

// ---------------------------------------------------------------------------
// Logs

#[test]
fn ops_json_logs_are_one_object_per_line() {
    let t = temp_store();
    let s = Serve::start_with(&["--log-format", "json"], &t.db, &["--demo"], &[]);
    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
    let mut msgs = Vec::new();
    for line in err.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        let o = v.as_object().expect("an object");
        for k in ["ts", "level", "msg"] {
            assert!(o.get(k).is_some_and(|v| v.is_string()), "{k} in {line}");
        }
        msgs.push((o["level"].as_str().unwrap().to_string(), v.clone()));
    }
    let runs: Vec<&serde_json::Value> = msgs
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["msg"] == "fetch run")
        .collect();
    assert_eq!(runs.len(), 3, "{err}");
    assert!(runs
        .iter()
        .all(|r| r["outcome"] == "ok" && r["seen"].is_string()));
    for m in ["listening", "shutting down", "stopped"] {
        assert!(msgs.iter().any(|(_, v)| v["msg"] == m), "no {m}: {err}");
    }
}

#[test]
fn ops_log_level_comes_from_planbox_log_and_fatal_errors_stay_json() {
    let t = temp_store();
    let files = fixture_files(t.dir.path(), Dialect::Plans);
    let run = |level: &str| {
        let out = run_ok(
            planbox()
                .env("PLANBOX_LOG", level)
                .args(["--log-format", "json", "import", "--db"])
                .arg(&t.db)
                .args(&files),
        );
        String::from_utf8(out.stderr).unwrap()
    };
    // warn: the skipped items (warn), not the run lines (info).
    let warn = run("warn");
    assert!(!warn.is_empty());
    for line in warn.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["level"], "warn", "{line}");
    }
    let info = run("info");
    assert!(
        info.lines().any(|l| l.contains("\"msg\":\"fetch run\"")),
        "{info}"
    );
    assert_eq!(run("error"), "");

    // A failing command's error is a JSON line too.
    let dest = t.dir.path().join("exists.db");
    std::fs::write(&dest, b"x").unwrap();
    let out = planbox()
        .args(["--log-format", "json", "backup", "--db"])
        .arg(&t.db)
        .arg(&dest)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(err.trim()).unwrap();
    assert_eq!(v["level"], "error");
    assert!(
        v["msg"].as_str().unwrap().contains("never overwrites"),
        "{v}"
    );
}

// ---------------------------------------------------------------------------
// Signals

/// A store with `n` searchable plans, imported through the binary.
fn big_store(n: usize) -> TempStore {
    let t = temp_store();
    let feed = t.dir.path().join("big.xml");
    std::fs::write(&feed, big_feed(n)).unwrap();
    run_ok(planbox().args(["import", "--db"]).arg(&t.db).arg(&feed));
    t
}

fn big_feed(n: usize) -> String {
    let mut x = String::from("<planList><output>\n");
    for i in 0..n {
        let (m, d) = (1 + (i / 28) % 12, 1 + i % 28);
        x.push_str(&format!(
            "<base_plan base_plan_id=\"{i}\" sell_mode=\"online\" title=\"Plan {i} with a title long enough to fill\">\
             <plan plan_id=\"{i}\" plan_start_date=\"2030-{m:02}-{d:02}T20:00:00\" plan_end_date=\"2030-{m:02}-{d:02}T22:00:00\" \
             sell_from=\"2020-01-01T00:00:00\" sell_to=\"2030-01-01T00:00:00\" sold_out=\"false\">\
             <zone zone_id=\"1\" capacity=\"10\" price=\"12.50\" name=\"A\" numbered=\"true\"/></plan></base_plan>\n"
        ));
    }
    x.push_str("</output></planList>\n");
    x
}

/// Decodes a complete chunked body; panics when it is cut short.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        b = &b[eol + 2..];
        if size == 0 {
            return out;
        }
        assert!(b.len() >= size + 2, "the answer was cut");
        out.extend_from_slice(&b[..size]);
        assert_eq!(&b[size..size + 2], b"\r\n");
        b = &b[size + 2..];
    }
}

#[test]
fn ops_sigterm_finishes_an_in_flight_request_and_exits_0() {
    // An answer of several MB to a client that does not read: the worker
    // stays in the middle of sending it until the client reads on.
    let plans = 30_000;
    let t = big_store(plans);
    let mut s = Serve::start(&t.db, &[], &[]);
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&s.addr.into()).unwrap();
    let mut conn: TcpStream = sock.into();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(b"GET /search HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 512];
    conn.read_exact(&mut head).unwrap();
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );

    // Shut down while the answer is in flight; read the rest only once the
    // server says it is stopping.
    s.signal("TERM");
    s.wait_line(|l| l.contains("shutting down"));
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    let mut all = head.to_vec();
    all.extend_from_slice(&rest);
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let headers = String::from_utf8_lossy(&all[..split]).to_lowercase();
    let body = match headers
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        Some(len) => {
            let len: usize = len.trim().parse().unwrap();
            assert_eq!(all.len() - split, len, "the answer was cut");
            all[split..].to_vec()
        }
        None => {
            assert!(headers.contains("transfer-encoding: chunked"), "{headers}");
            dechunk(&all[split..])
        }
    };
    assert!(body.len() > 4 << 20, "answer too small to stay in flight");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["data"]["events"].as_array().unwrap().len(), plans);

    let status = wait_exit(&mut s.child);
    assert_eq!(status.code(), Some(0), "{}", s.stderr());
    let store = Store::open(&t.db).unwrap();
    store.integrity_check().unwrap();
    assert_eq!(store.counts().unwrap().plans_searchable, plans as u64);
}

#[test]
fn ops_sigterm_during_a_fetch_leaves_all_or_nothing_and_exits_0() {
    let plans = 20_000;
    let provider = FakeProvider::start(vec![big_feed(plans).into_bytes()]).unwrap();
    let t = temp_store();
    let s = Serve::start(&t.db, &["--provider-url", &provider.url()], &[]);
    // The first fetch starts at once; stop while it downloads or ingests.
    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
    let store = Store::open(&t.db).unwrap();
    store.integrity_check().unwrap();
    let n = store.counts().unwrap().plans_searchable;
    assert!(n == 0 || n == plans as u64, "a partial ingest landed: {n}");
}

#[test]
fn ops_sigint_also_stops_cleanly() {
    let t = temp_store();
    let mut s = Serve::start(&t.db, &["--demo"], &[]);
    s.signal("INT");
    let status = wait_exit(&mut s.child);
    assert_eq!(status.code(), Some(0), "{}", s.stderr());
    // The lock is released: serve starts again on the same store.
    let again = Serve::start(&t.db, &["--demo"], &[]);
    assert_eq!(get(&again.url("/ready"), &[]).status, 200);
    let (code, err) = again.terminate();
    assert_eq!(code, Some(0), "{err}");
}

/// After a clean stop the store file alone holds everything: the `-wal` is
/// gone or empty, and a copy of `planbox.db` without its companions (the
/// most common ad-hoc backup) has every plan and every journaled run.
#[test]
fn ops_clean_stop_leaves_everything_in_the_db_file() {
    // (signal, extra serve args, fetch runs to wait for before stopping)
    let cases: [(&str, &[&str], usize); 3] = [
        // Requests only: the demo's three fetches land before listening.
        ("TERM", &[], 3),
        // After the fetch loop itself has fetched (and while it keeps going).
        ("TERM", &["--fetch-interval", "50ms"], 6),
        ("INT", &["--fetch-interval", "50ms"], 6),
    ];
    for (sig, args, fetches) in cases {
        let t = temp_store();
        let mut s = Serve::start(&t.db, &[&["--demo"], args].concat(), &[]);
        s.wait_count(|l| l.contains("fetch run"), fetches);
        let mut served = 0;
        for _ in 0..5 {
            let r = get(&s.url("/search"), &[]);
            assert_eq!(r.status, 200);
            served = r.json()["data"]["events"].as_array().unwrap().len();
        }
        assert!(served > 0);
        s.signal(sig);
        let status = wait_exit(&mut s.child);
        assert_eq!(status.code(), Some(0), "{}", s.stderr());
        while s.rx.recv_timeout(Duration::from_secs(5)).is_ok() {}
        let runs = s.stderr().matches("fetch run").count();
        assert_db_file_alone_is_whole(&t.db, served, runs, &format!("SIG{sig} {args:?}"));
    }
}

/// Even when a worker is still stuck in an answer past the shutdown grace
/// (its connection is never closed), the store file alone holds everything.
#[test]
fn ops_clean_stop_with_a_stuck_client_leaves_everything_in_the_db_file() {
    // A large store (imported, so already in the store file), then the
    // demo's fetches on top: small commits that stay in the -wal until a
    // checkpoint.
    let t = big_store(30_000);
    let mut s = Serve::start(&t.db, &["--demo"], &[]);
    s.wait_count(|l| l.contains("fetch run"), 3);
    // Asks for the whole store (several MB) and never reads.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&s.addr.into()).unwrap();
    let mut conn: TcpStream = sock.into();
    conn.write_all(b"GET /search HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("still busy"), "{err}");
    drop(conn);

    // A reader still open may keep SQLite from emptying the log, never from
    // copying all of it into the store file: the file alone equals the
    // store with its log. (Copied first: closing `live` checkpoints.)
    let copy = tempfile::tempdir().unwrap();
    let only_db = copy.path().join("planbox.db");
    std::fs::copy(&t.db, &only_db).unwrap();
    let live = Store::open(&t.db).unwrap();
    let live_runs = live.runs(10_000).unwrap().len();
    assert_eq!(live_runs, 4, "the import and the demo's three fetches");
    let plans = live.counts().unwrap().plans_searchable as usize;
    assert_db_file_alone_holds(&only_db, plans, live_runs, "stuck client");
}

/// The store's `-wal` is gone or empty, and a copy of the store file alone
/// (the most common ad-hoc backup) holds `plans` searchable plans and `runs`
/// journaled fetch runs.
fn assert_db_file_alone_is_whole(db: &Path, plans: usize, runs: usize, case: &str) {
    let wal = db.with_file_name("planbox.db-wal");
    let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(wal_len, 0, "{case}: data left in {wal:?}");
    assert_db_file_alone_holds(db, plans, runs, case);
}

/// A copy of the store file alone, without its `-wal`, holds `plans`
/// searchable plans and `runs` journaled fetch runs.
fn assert_db_file_alone_holds(db: &Path, plans: usize, runs: usize, case: &str) {
    let copy = tempfile::tempdir().unwrap();
    let only_db = copy.path().join("planbox.db");
    std::fs::copy(db, &only_db).unwrap();
    let store = Store::open(&only_db).unwrap();
    store.integrity_check().unwrap();
    let c = store.counts().unwrap();
    assert_eq!(c.plans_searchable, plans as u64, "{case}");
    assert_eq!(store.runs(10_000).unwrap().len(), runs, "{case}");
}

// ---------------------------------------------------------------------------
// systemd

struct NotifySocket {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    sock: UnixDatagram,
}

fn notify_socket() -> NotifySocket {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    NotifySocket {
        _dir: dir,
        path,
        sock,
    }
}

impl NotifySocket {
    fn recv(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).expect("a notification");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }
}

#[test]
fn ops_systemd_ready_watchdog_and_stopping() {
    let t = temp_store();
    let n = notify_socket();
    let s = Serve::start(
        &t.db,
        &["--demo"],
        &[
            ("NOTIFY_SOCKET", n.path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    assert_eq!(n.recv(), "READY=1");
    // Ready means ready: the store is migrated and the listener answers.
    assert_eq!(get(&s.url("/ready"), &[]).status, 200);
    for _ in 0..3 {
        assert_eq!(n.recv(), "WATCHDOG=1");
    }
    s.signal("TERM");
    // Pings may still be queued before the stop.
    let mut last = n.recv();
    while last == "WATCHDOG=1" {
        last = n.recv();
    }
    assert_eq!(last, "STOPPING=1");
    let (code, err) = s.terminate_after_signal();
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn ops_systemd_no_watchdog_pings_without_watchdog_usec() {
    let t = temp_store();
    let n = notify_socket();
    let s = Serve::start(
        &t.db,
        &["--demo"],
        &[("NOTIFY_SOCKET", n.path.to_str().unwrap())],
    );
    assert_eq!(n.recv(), "READY=1");
    s.signal("TERM");
    // The next datagram after READY is STOPPING: no WATCHDOG in between.
    assert_eq!(n.recv(), "STOPPING=1");
    let (code, err) = s.terminate_after_signal();
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn ops_systemd_a_notify_socket_planbox_cannot_use_is_logged() {
    let t = temp_store();
    // systemd never sets a relative path: the service would wait for
    // READY in vain, so the log says why it never comes.
    let mut s = Serve::start(&t.db, &[], &[("NOTIFY_SOCKET", "relative.sock")]);
    let line = s.wait_line(|l| l.contains("cannot notify systemd"));
    assert!(line.contains("relative.sock"), "{line}");
    s.signal("TERM");
    let (code, err) = s.terminate_after_signal();
    assert_eq!(code, Some(0), "{err}");
}

impl Serve {
    /// Waits for the exit after a signal sent earlier.
    fn terminate_after_signal(mut self) -> (Option<i32>, String) {
        let status = wait_exit(&mut self.child);
        while self.rx.recv_timeout(Duration::from_secs(5)).is_ok() {}
        (status.code(), self.stderr())
    }
}

/// `key -> values` of one section of a systemd unit file (keys may repeat).
fn unit_section(text: &str, section: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = s.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        if current == section {
            out.entry(k.trim().to_string())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    out
}

#[test]
fn ops_unit_file_has_the_required_keys() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/planbox.service"),
    )
    .unwrap();
    let svc = unit_section(&text, "Service");
    let has = |k: &str, v: &str| {
        assert!(
            svc.get(k).is_some_and(|vs| vs.iter().any(|x| x == v)),
            "{k}={v} missing; have {:?}",
            svc.get(k)
        )
    };
    has("Type", "notify");
    has("DynamicUser", "yes");
    has("StateDirectory", "planbox");
    has("NoNewPrivileges", "yes");
    has("ProtectSystem", "strict");
    has("ProtectHome", "yes");
    has("PrivateTmp", "yes");
    has("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX");
    has("SystemCallFilter", "@system-service");
    has("Restart", "on-failure");
    has("ExecStart", "/usr/bin/planbox serve");
    // The store is found through the working directory, so that `--demo`'s
    // own default (planbox-demo.db) still applies under the unit.
    has("WorkingDirectory", "/var/lib/planbox");
    let environment = svc.get("Environment").cloned().unwrap_or_default();
    assert!(
        !environment.iter().any(|v| v.contains("PLANBOX_DB")),
        "the unit must not pick the store: {environment:?}"
    );
    let wd: u64 = svc["WatchdogSec"][0]
        .parse()
        .expect("WatchdogSec in seconds");
    assert!(wd > 0);
    let env_file = &svc["EnvironmentFile"][0];
    assert_eq!(env_file.trim_start_matches('-'), "/etc/default/planbox");
    assert!(unit_section(&text, "Install").contains_key("WantedBy"));
}

#[test]
fn ops_package_summary_fits_one_line() {
    // cargo-deb wraps the Description line at 79 characters; a longer summary
    // is cut and its tail starts the long description.
    let summary = env!("CARGO_PKG_DESCRIPTION");
    assert!(summary.chars().count() <= 79, "{summary:?}");
}

#[test]
fn ops_env_file_documents_every_serve_variable() {
    let help = run_ok(planbox().args(["serve", "--help"])).stdout;
    let help = String::from_utf8(help).unwrap();
    let env = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/planbox.env"),
    )
    .unwrap();
    let vars: Vec<&str> = help
        .split("[env: ")
        .skip(1)
        .map(|s| s.split(['=', ']']).next().unwrap())
        .collect();
    assert!(vars.contains(&"PLANBOX_LISTEN"), "{help}");
    for v in &vars {
        assert!(env.contains(&format!("#{v}=")), "{v} is not in planbox.env");
    }
    for v in ["PLANBOX_LOG", "PLANBOX_LOG_FORMAT"] {
        assert!(env.contains(&format!("#{v}=")), "{v} is not in planbox.env");
    }
}

// ---------------------------------------------------------------------------
// backup and healthcheck

#[test]
fn ops_backup_while_serving_and_fetching() {
    let t = temp_store();
    let mut s = Serve::start(&t.db, &["--demo", "--fetch-interval", "50ms"], &[]);
    // Let the loop fetch on its own a few times (beyond the 3 before listening).
    s.wait_count(|l| l.contains("fetch run"), 6);
    let dest = t.dir.path().join("copy.db");
    let out = run_ok(planbox().args(["backup", "--db"]).arg(&t.db).arg(&dest));
    assert!(String::from_utf8_lossy(&out.stdout).contains("verified backup"));

    // A second backup never overwrites.
    let before = std::fs::read(&dest).unwrap();
    let again = planbox()
        .args(["backup", "--db"])
        .arg(&t.db)
        .arg(&dest)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
    assert_eq!(std::fs::read(&dest).unwrap(), before);

    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");

    // The copy is a whole store: it opens, passes integrity_check, and holds
    // the same plans and the runs journaled up to the copy.
    let copy = Store::open(&dest).unwrap();
    copy.integrity_check().unwrap();
    let live = Store::open(&t.db).unwrap();
    assert_eq!(copy.counts().unwrap(), live.counts().unwrap());
    let copy_runs = copy.runs(1000).unwrap().len();
    assert!(copy_runs >= 6, "{copy_runs}");
    assert!(copy_runs <= live.runs(1000).unwrap().len());
    let body = |st: &Store| {
        let v: serde_json::Value =
            serde_json::from_slice(&st.search(&Default::default()).unwrap()).unwrap();
        v["data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(body(&copy), body(&live));
}

#[test]
fn ops_healthcheck_exit_codes() {
    let t = temp_store();
    let s = Serve::start(&t.db, &["--demo"], &[]);
    let out = run_ok(planbox().args(["healthcheck", "--listen", &s.addr.to_string()]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ready");
    // The variable works too.
    run_ok(
        planbox()
            .arg("healthcheck")
            .env("PLANBOX_LISTEN", s.addr.to_string()),
    );
    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");

    // Nothing listens on a port that was just freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = planbox()
        .args([
            "healthcheck",
            "--timeout",
            "2s",
            "--listen",
            &free.to_string(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/ready"));
}

#[test]
fn ops_log_lines_carry_syslog_priorities_only_when_stderr_is_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let t = temp_store();
    let files = fixture_files(t.dir.path(), Dialect::Plans);
    let run = |journal_stream: Option<&str>, log: &Path| {
        let f = std::fs::File::create(log).unwrap();
        let m = f.metadata().unwrap();
        let mut cmd = planbox();
        cmd.env("PLANBOX_LOG", "info")
            .args(["import", "--db"])
            .arg(&t.db)
            .arg(&files[0])
            .stderr(Stdio::from(f));
        match journal_stream {
            Some(v) => cmd.env("JOURNAL_STREAM", v),
            None => cmd.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino())),
        };
        run_ok(&mut cmd);
        std::fs::read_to_string(log).unwrap()
    };
    // systemd's variable names this very file: every line has a priority.
    let journal = run(None, &t.dir.path().join("journal.log"));
    assert!(journal.lines().any(|l| l.starts_with("<4>")), "{journal}");
    assert!(
        journal
            .lines()
            .any(|l| l.starts_with("<6>") && l.contains("fetch run")),
        "{journal}"
    );
    assert!(journal.lines().all(|l| l.starts_with('<')), "{journal}");
    // Inherited but stale (stderr is elsewhere): plain lines.
    let plain = run(Some("1:1"), &t.dir.path().join("plain.log"));
    assert!(plain.lines().count() >= 2);
    assert!(plain.lines().all(|l| !l.starts_with('<')), "{plain}");
}

#[test]
fn ops_restart_keeps_last_success_and_counts_from_the_store() {
    let t = temp_store();
    let s = Serve::start(&t.db, &["--demo"], &[]);
    let page = get(&s.url("/"), &[]).text();
    // The next fetch is scheduled from the start, not only after the first
    // loop run.
    assert!(page.contains("<dt>Next fetch</dt><dd>20"), "{page}");
    assert!(page.contains("(built-in demo feeds)"), "{page}");
    let first = scrape(&s.url("/metrics"));
    let last = value(
        &first,
        "planbox_last_fetch_success_timestamp_seconds",
        &[("provider", "provider")],
    )
    .unwrap();
    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");

    // Again without a provider: no fetch in this process, yet the gauges
    // come from the store and its journal.
    let s = Serve::start(&t.db, &[], &[]);
    let m = scrape(&s.url("/metrics"));
    assert_eq!(
        value(
            &m,
            "planbox_fetch_runs_total",
            &[("provider", "provider"), ("outcome", "ok")]
        ),
        Some(0.0)
    );
    assert_eq!(value(&m, "planbox_plans_searchable", &[]), Some(4.0));
    let again = value(
        &m,
        "planbox_last_fetch_success_timestamp_seconds",
        &[("provider", "provider")],
    )
    .unwrap();
    assert!((again - last).abs() <= 1.0, "{again} vs {last}");
    let page = get(&s.url("/"), &[]).text();
    assert!(page.contains("<dt>Next fetch</dt><dd>-</dd>"), "{page}");
    assert!(page.contains("not fetched by this process"), "{page}");
    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn ops_a_damaged_store_fails_ready_and_is_left_untouched() {
    let t = big_store(3000);
    // Garbage over the middle of a real store (not the schema page).
    let mut bytes = std::fs::read(&t.db).unwrap();
    assert!(bytes.len() > 256 << 10, "{}", bytes.len());
    let mid = bytes.len() / 2;
    for (i, b) in bytes[mid - (32 << 10)..mid + (32 << 10)]
        .iter_mut()
        .enumerate()
    {
        *b = (i.wrapping_mul(2_654_435_761) >> 7) as u8;
    }
    std::fs::write(&t.db, &bytes).unwrap();
    // Serving starts at once; the background check finds the damage.
    let mut s = Serve::start(&t.db, &[], &[]);
    let line = s.wait_line(|l| l.contains("the store is damaged"));
    assert!(line.contains("restore the newest backup"), "{line}");
    let r = get(&s.url("/ready"), &[]);
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "store_damaged");
    assert_eq!(get(&s.url("/health"), &[]).status, 200);
    let m = get(&s.url("/metrics"), &[]).text();
    assert!(m.contains("planbox_store_damaged 1"), "{m}");
    assert!(get(&s.url("/"), &[]).text().contains("DAMAGED"));
    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        std::fs::read(&t.db).unwrap() == bytes,
        "the damaged store was modified"
    );
}

#[test]
fn ops_a_clean_stop_lets_the_next_start_skip_the_check() {
    let t = big_store(50);
    // Imported, never served: checked at once.
    let mut s = Serve::start(&t.db, &[], &[]);
    s.wait_line(|l| l.contains("store check passed"));
    let m = get(&s.url("/metrics"), &[]).text();
    assert!(
        m.contains("planbox_store_checks_total{result=\"passed\"} 1"),
        "{m}"
    );
    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
    // Stopped cleanly: the next start has nothing to check.
    let s = Serve::start(&t.db, &[], &[]);
    assert_eq!(get(&s.url("/ready"), &[]).status, 200);
    thread::sleep(Duration::from_millis(300));
    let m = get(&s.url("/metrics"), &[]).text();
    assert!(
        m.contains("planbox_store_checks_total{result=\"passed\"} 0"),
        "{m}"
    );
    assert!(
        !m.contains("planbox_store_last_check_passed_timestamp_seconds 0"),
        "{m}"
    );
    // Killed: the start after it checks again.
    drop(s);
    let mut s = Serve::start(&t.db, &[], &[]);
    s.wait_line(|l| l.contains("store check passed"));
}

#[test]
fn ops_metrics_show_the_store_files_and_the_room_left_beside_them() {
    let t = temp_store();
    let s = Serve::start(&t.db, &["--demo"], &[]);
    let m = scrape(&s.url("/metrics"));
    let db = value(&m, "planbox_store_size_bytes", &[("file", "db")]).unwrap();
    // At least the header page; the file itself may grow as WAL pages are
    // checkpointed into it.
    assert!(db >= 4096.0, "{db}");
    assert!(value(&m, "planbox_store_size_bytes", &[("file", "wal")]).is_some());
    let avail = value(&m, "planbox_store_filesystem_avail_bytes", &[]).unwrap();
    let size = value(&m, "planbox_store_filesystem_size_bytes", &[]).unwrap();
    assert!(avail > 0.0 && avail <= size, "{avail} {size}");
}
