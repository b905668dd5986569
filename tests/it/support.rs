//! Shared helpers: temp stores, fixture feeds, a server on port 0, an HTTP
//! client, and the built binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use planbox::api::Api;
use planbox::fetch::FetchConfig;
use planbox::metrics::Metrics;
use planbox::provider_sim::{FakeProvider, DEMO_FEEDS, DEMO_FEEDS_EVENTS};
use planbox::server::{self, RunningServer, ServerConfig};
use planbox::service::ServiceInfo;
use planbox::store::Store;
use planbox::sync::{self, SyncConfig};

/// Log lines of the in-process servers and loops go to the test harness,
/// which shows them only for a test that fails.
pub fn quiet_logs() {
    planbox::log::to_test_output();
}

/// A temp directory with a store path inside; removed on drop.
pub struct TempStore {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
}

pub fn temp_store() -> TempStore {
    quiet_logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("planbox.db");
    TempStore { dir, db }
}

#[derive(Clone, Copy, Debug)]
pub enum Dialect {
    Plans,
    Events,
}

pub fn fixture_feeds(d: Dialect) -> Vec<Vec<u8>> {
    let feeds = match d {
        Dialect::Plans => DEMO_FEEDS,
        Dialect::Events => DEMO_FEEDS_EVENTS,
    };
    feeds.iter().map(|f| f.to_vec()).collect()
}

pub fn sync_config(db: &Path, url: &str) -> SyncConfig {
    quiet_logs();
    SyncConfig {
        provider: planbox::model::DEFAULT_PROVIDER.into(),
        fetch: FetchConfig {
            url: planbox::secret::SecretUrl::parse(url).expect("test URL"),
            roots: Default::default(),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            max_bytes: 16 << 20,
        },
        interval: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        db: db.to_owned(),
    }
}

/// Fetches `n` times from `provider` into the store at `db`.
pub fn fetch_n(db: &Path, provider: &FakeProvider, n: usize) -> Vec<planbox::model::FetchRun> {
    quiet_logs();
    let mut store = Store::open(db).expect("store");
    let cfg = sync_config(db, &provider.url());
    let metrics = Metrics::new();
    (0..n)
        .map(|_| sync::fetch_once(&mut store, &cfg, &metrics, None).run)
        .collect()
}

/// A real server on 127.0.0.1:0 over the store at `db`.
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub base: String,
    pub metrics: Arc<Metrics>,
}

impl TestServer {
    pub fn start(db: &Path, tz: Tz) -> TestServer {
        Self::start_with(
            db,
            tz,
            ServerConfig {
                workers: 2,
                ..ServerConfig::default()
            },
        )
    }

    pub fn start_with(db: &Path, tz: Tz, cfg: ServerConfig) -> TestServer {
        quiet_logs();
        drop(Store::open(db).expect("store opens and migrates"));
        let metrics = Arc::new(Metrics::new());
        let api = Arc::new(Api::new(
            tz,
            metrics.clone(),
            Arc::new(ServiceInfo::default()),
        ));
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let server = RunningServer::start(listener, api, db.to_owned(), cfg).unwrap();
        let base = format!("http://{}", server.local_addr());
        TestServer {
            server: Some(server),
            base,
            metrics,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> Reply {
        get(&self.url(path), &[])
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(2));
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A GET with extra headers; any status is a reply, not an error.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    request("GET", url, headers)
}

pub fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .accept_encoding("")
        .build()
        .into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(()).unwrap();
    let mut resp = agent
        .run(req)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()
        .unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

/// The built `planbox` binary.
pub fn planbox() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_planbox"));
    c.env_remove("PLANBOX_LOG").env("PLANBOX_LOG", "warn");
    for (k, _) in std::env::vars() {
        if k.starts_with("PLANBOX_") && k != "PLANBOX_LOG" {
            c.env_remove(k);
        }
    }
    c
}

/// The newest journal row of the store at `db`, as `planbox status --json`
/// prints it.
pub fn last_run(db: &Path) -> serde_json::Value {
    let out = run_ok(planbox().args(["status", "--json", "--db"]).arg(db));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["runs"][0].clone()
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("planbox runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Writes the fixture feeds of a dialect into `dir`, returning the paths in
/// order.
pub fn fixture_files(dir: &Path, d: Dialect) -> Vec<PathBuf> {
    fixture_feeds(d)
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let p = dir.join(format!("feed_{i}.xml"));
            std::fs::write(&p, f).unwrap();
            p
        })
        .collect()
}

/// The four plans of `assets/fixtures/README.md`, as (title, start, end,
/// min, max) with the exact JSON number text of the prices.
pub const EXPECTED: [(&str, &str, &str, &str, &str); 4] = [
    (
        "Pantomima Full",
        "2021-02-10 20:00:00",
        "2021-02-10 21:30:00",
        "55.00",
        "55.00",
    ),
    (
        "Pantomima Full",
        "2021-02-11 20:00:00",
        "2021-02-11 21:30:00",
        "55.00",
        "55.00",
    ),
    (
        "Camela en concierto",
        "2021-06-30 21:00:00",
        "2021-06-30 21:30:00",
        "15.00",
        "30.00",
    ),
    (
        "Los Morancos",
        "2021-07-31 20:00:00",
        "2021-07-31 21:00:00",
        "65.00",
        "75.00",
    ),
];
