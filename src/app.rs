//! The commands: wiring of config, store, fetch loop and server into the
//! processes `planbox <command>` runs. This is the edge: errors become
//! `anyhow` messages and exit codes here, and only here.
//!
//! It must not contain domain rules, SQL or HTTP handling of its own.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;

use crate::api::Api;
use crate::cli::{self, Cli, Command, LogFormat};
use crate::config::{ProviderConfig, ServeConfig};
use crate::fetch::FetchConfig;
use crate::metrics::Metrics;
use crate::model::{FetchRun, Outcome};
use crate::provider_sim::FakeProvider;
use crate::server::{self, RunningServer, ServerConfig};
use crate::service::ServiceInfo;
use crate::store::Store;
use crate::sync::{self, Stop, SyncConfig};

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = std::env::var("PLANBOX_LOG")
        .ok()
        .and_then(|l| crate::log::Level::parse(&l))
        .unwrap_or(crate::log::Level::Info);
    let json = cli.log_format == LogFormat::Json;
    crate::log::init(level, json);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            if json {
                // Keep stderr one JSON object per line.
                crate::log::error(&format!("{e:#}"));
            } else {
                eprintln!("planbox: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let cfg = args.to_config().map_err(|e| anyhow!(e))?;
            serve(cfg)
        }
        Command::Fetch(args) => fetch(args),
        Command::Import(args) => import(args),
        Command::Search(args) => search(args),
        Command::Status(args) => status(args),
        Command::Migrate(args) => {
            let store = open_store(&args)?;
            println!("{}: migrated", store.path().display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup(args) => {
            let store = open_existing_store(&args.db)?;
            let started = Instant::now();
            store
                .backup_to(&args.dest)
                .with_context(|| format!("backup to {} failed", args.dest.display()))?;
            println!(
                "{}: verified backup of {} in {} ms",
                args.dest.display(),
                args.db.db.display(),
                started.elapsed().as_millis()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck(args) => healthcheck(args),
    }
}

/// Opens (creating when absent) and migrates the store.
fn open_store(db: &cli::DbArgs) -> Result<Store> {
    Ok(Store::open(&db.db)?)
}

/// Opens an existing store: commands that only read (`search`, `status`,
/// `backup`) must not leave an empty store behind a typo in `--db`.
fn open_existing_store(db: &cli::DbArgs) -> Result<Store> {
    if !db.db.exists() {
        bail!(
            "{}: no such store (create one with `planbox import`, `fetch` or `serve`)",
            db.db.display()
        );
    }
    open_store(db)
}

/// Takes the per-store serve lock: an advisory `flock` on the database file
/// itself (independent of SQLite's own POSIX locks), so a second `serve` on
/// the same store refuses instead of running two fetch loops.
fn lock_store(db: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(db)
        .with_context(|| format!("cannot open {}", db.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{}: another `planbox serve` is already running on this store",
            db.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", db.display()))
        }
    }
}

/// The fetch loop's settings; `fetch` (one attempt) uses the same with
/// an interval that never comes into play.
fn sync_config(
    provider: &ProviderConfig,
    url: String,
    db: &Path,
    interval: Duration,
    max_backoff: Duration,
) -> SyncConfig {
    SyncConfig {
        provider: provider.name.clone(),
        fetch: FetchConfig {
            url,
            connect_timeout: provider.connect_timeout,
            timeout: provider.fetch_timeout,
            max_bytes: provider.max_feed_bytes,
        },
        interval,
        max_backoff,
        db: db.to_owned(),
    }
}

/// Unix seconds of the newest successful run in the journal.
fn last_success(runs: &[FetchRun]) -> Option<i64> {
    runs.iter().find(|r| r.outcome.is_success()).and_then(|r| {
        chrono::DateTime::parse_from_rfc3339(&r.started_at)
            .ok()
            .map(|t| t.timestamp() + (r.duration_ms / 1000) as i64)
    })
}

fn serve(cfg: ServeConfig) -> Result<ExitCode> {
    // Before anything else: a SIGTERM that arrives while the store is being
    // checked or the demo feeds land must still mean a clean stop.
    let signalled = install_signal_handlers()?;
    let _lock = lock_store(&cfg.db)?;
    let mut store = Store::open(&cfg.db)?;
    store
        .quick_check()
        .context("refusing to serve a damaged store")?;

    let metrics = Arc::new(Metrics::new());
    if let Some(t) = last_success(&store.runs(100)?) {
        metrics.set_last_success(t);
    }
    metrics.set_plans_searchable(store.counts()?.plans_searchable);

    // The demo provider lives as long as `serve`.
    let demo = if cfg.demo {
        Some(FakeProvider::demo().context("cannot start the demo provider")?)
    } else {
        None
    };
    let provider_url = demo
        .as_ref()
        .map(FakeProvider::url)
        .or(cfg.provider.url.clone());
    let info = Arc::new(ServiceInfo {
        provider_url: match (&demo, &provider_url) {
            (Some(_), Some(u)) => format!("{u} (built-in demo feeds)"),
            (_, u) => u.clone().unwrap_or_default(),
        },
        version: env!("CARGO_PKG_VERSION"),
        ..ServiceInfo::default()
    });
    let stop = Stop::new();
    let sync_cfg = provider_url.map(|u| {
        sync_config(
            &cfg.provider,
            u,
            &cfg.db,
            cfg.fetch_interval,
            cfg.max_backoff,
        )
    });
    if let (Some(sc), true) = (&sync_cfg, demo.is_some()) {
        // Land the three sample feeds before answering, so the first search
        // already sees the fixtures' final state.
        for _ in 0..crate::provider_sim::DEMO_FEEDS.len() {
            sync::fetch_once(&mut store, sc, &metrics, None);
        }
        metrics.set_plans_searchable(store.counts()?.plans_searchable);
    }
    // The demo has just fetched: its loop starts one interval later. Known
    // before the server answers, so the status page never shows "-" for it.
    let first_wait = if demo.is_some() {
        cfg.fetch_interval
    } else {
        Duration::ZERO
    };
    if sync_cfg.is_some() {
        info.next_fetch.store(
            chrono::Utc::now().timestamp() + first_wait.as_secs() as i64,
            Ordering::Relaxed,
        );
    }

    let mut api = Api::new(cfg.provider.timezone, metrics.clone(), info.clone());
    if cfg.metrics_listen.is_some() {
        api = api.without_metrics();
    }
    let server_cfg = ServerConfig {
        workers: cfg.workers,
        rate_limit: cfg.rate_limit,
        trusted_proxies: cfg.trusted_proxies.clone(),
        ..ServerConfig::default()
    };
    let listener = server::bind(cfg.listen, server_cfg.idle_timeout)
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    // `/metrics` on its own listener: a second front with one worker and an
    // API that answers nothing else, over the same counters.
    let metrics_http = match cfg.metrics_listen {
        Some(addr) => {
            let mcfg = ServerConfig {
                workers: 1,
                ..ServerConfig::default()
            };
            let l = server::bind(addr, mcfg.idle_timeout)
                .with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?;
            let mapi = Arc::new(Api::metrics_only(metrics.clone()));
            Some(RunningServer::start(l, mapi, cfg.db.clone(), mcfg)?)
        }
        None => None,
    };
    let http = RunningServer::start(listener, Arc::new(api), cfg.db.clone(), server_cfg)?;
    crate::log::log(
        crate::log::Level::Info,
        "listening",
        &[
            ("addr", &http.local_addr()),
            ("workers", &cfg.workers),
            ("db", &cfg.db.display()),
        ],
    );
    if let Some(m) = &metrics_http {
        crate::log::log(
            crate::log::Level::Info,
            "metrics listening",
            &[("addr", &m.local_addr())],
        );
    }

    let fetcher = match sync_cfg {
        Some(sc) => {
            let (m, i, s) = (metrics.clone(), info.clone(), stop.clone());
            Some(
                thread::Builder::new()
                    .name("planbox-fetch".into())
                    .spawn(move || {
                        lower_thread_priority();
                        if !s.wait(first_wait) {
                            sync::run_loop(store, sc, m, i, s);
                        }
                    })?,
            )
        }
        None => {
            crate::log::warn(
                "no --provider-url given: serving the store as it is, without fetching",
            );
            drop(store);
            None
        }
    };

    let notifier = crate::systemd::Notifier::from_env();
    if let Some(n) = &notifier {
        if let Err(e) = n.ready() {
            crate::log::warn(&format!("cannot notify systemd: {e}"));
        }
    }
    // The fetch thread only ends on `stop`; if it ends before, it panicked:
    // stop pinging the watchdog and exit non-zero so a supervisor restarts
    // planbox instead of it serving ever older data.
    let fetcher_alive = || fetcher.as_ref().is_none_or(|f| !f.is_finished());
    let woke = wait_for_signal(&signalled, &stop, notifier.as_ref(), &fetcher_alive);
    if woke == Wake::FetcherDied {
        crate::log::error("the fetch loop ended unexpectedly; shutting down");
    } else {
        crate::log::info("shutting down");
    }
    if let Some(n) = &notifier {
        let _ = n.stopping();
    }
    stop.stop();
    // Both fronts stop accepting now, then get the same grace to finish
    // in-flight requests.
    // The fetch loop winds down meanwhile; all of shutdown stays within 10 s,
    // under the unit's TimeoutStopSec=15.
    let fetch_deadline = Instant::now() + Duration::from_secs(10);
    let grace = Duration::from_secs(5);
    match metrics_http {
        Some(m) => {
            let t = thread::spawn(move || m.shutdown(grace));
            http.shutdown(grace);
            let _ = t.join();
        }
        None => http.shutdown(grace),
    }
    if let Some(f) = fetcher {
        // A running ingest stops at its next checkpoint and rolls back, or
        // commits first; either way the store stays whole.
        while !f.is_finished() && Instant::now() < fetch_deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if !f.is_finished() {
            // Typically a download from a slow provider (it is not
            // interruptible). Leaving it is safe: nothing of it is in the
            // store yet, and SQLite discards an unfinished transaction.
            crate::log::warn("the fetch in progress did not finish in time; abandoning it");
        }
    }
    drop(demo);
    crate::log::info("stopped");
    Ok(if woke == Wake::FetcherDied {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Why [`wait_for_signal`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    /// SIGINT, SIGTERM, or `stop` from elsewhere.
    Stop,
    /// `healthy` turned false.
    FetcherDied,
}

/// SIGINT and SIGTERM set the returned flag; a second one while it is set
/// (a stuck shutdown) exits at once with code 1.
fn install_signal_handlers() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal.
        signal_hook::flag::register_conditional_shutdown(sig, 1, flag.clone())
            .context("cannot install signal handlers")?;
        signal_hook::flag::register(sig, flag.clone()).context("cannot install signal handlers")?;
    }
    Ok(flag)
}

/// Lowers the calling thread's CPU priority (nice 10) so a large ingest
/// yields the cores to the HTTP workers: search p99 during a 196 MB ingest
/// went from 13-15x to 1.0-1.3x of quiet, with the same ingest time
/// (docs/PERFORMANCE.md). On Linux, `setpriority(PRIO_PROCESS, 0, ..)`
/// applies to the calling thread only. Failure is harmless and ignored.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// Blocks until `flag` is set by a signal (or `stop` from elsewhere),
/// pinging the systemd watchdog meanwhile when one is configured, as long as
/// `healthy` holds.
fn wait_for_signal(
    flag: &AtomicBool,
    stop: &Arc<Stop>,
    notifier: Option<&crate::systemd::Notifier>,
    healthy: &dyn Fn() -> bool,
) -> Wake {
    let watchdog = notifier.and(crate::systemd::watchdog_interval());
    let mut last_ping = Instant::now();
    while !flag.load(Ordering::Relaxed) {
        if stop.wait(Duration::from_millis(50)) {
            break;
        }
        if !healthy() {
            return Wake::FetcherDied;
        }
        if let (Some(n), Some(every)) = (notifier, watchdog) {
            if last_ping.elapsed() >= every {
                if let Err(e) = n.watchdog() {
                    crate::log::log(
                        crate::log::Level::Debug,
                        "cannot ping the systemd watchdog",
                        &[("error", &e)],
                    );
                }
                last_ping = Instant::now();
            }
        }
    }
    Wake::Stop
}

fn print_run(run: &FetchRun, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(run).unwrap_or_default());
        return;
    }
    let skipped = run.skipped_total();
    println!(
        "{}: {} (HTTP {}) {} bytes in {} ms: {} seen, {} new, {} updated, {} unchanged, {} skipped{}",
        run.source,
        run.outcome,
        run.http_status_text(),
        run.bytes,
        run.duration_ms,
        run.counts.plans_seen,
        run.counts.plans_new,
        run.counts.plans_updated,
        run.counts.plans_unchanged,
        skipped,
        run.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
    );
    for (reason, n) in &run.skipped {
        println!("  skipped {reason}: {n}");
    }
}

fn fetch(args: cli::FetchArgs) -> Result<ExitCode> {
    let provider = args.provider.to_config();
    let Some(url) = provider.url.clone() else {
        bail!("no provider URL: pass --provider-url or set PLANBOX_PROVIDER_URL");
    };
    let mut store = open_store(&args.db)?;
    let one_minute = Duration::from_secs(60);
    let cfg = sync_config(&provider, url, &args.db.db, one_minute, one_minute);
    let attempt = sync::fetch_once(&mut store, &cfg, &Metrics::new(), None);
    print_run(&attempt.run, args.json);
    Ok(if attempt.run.outcome.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A progress line on a terminal: bytes, rate and ETA, at most 10 per second.
struct Progress {
    enabled: bool,
    name: String,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(name: &str) -> Progress {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            name: name.to_owned(),
            started: Instant::now(),
            last: Instant::now() - Duration::from_secs(1),
        }
    }

    fn update(&mut self, pos: u64, total: u64) {
        if !self.enabled || self.last.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = pos as f64 / secs;
        let eta = if rate > 0.0 && total > pos {
            format!("{:.0}s", (total - pos) as f64 / rate)
        } else {
            "-".into()
        };
        let pct = if total > 0 {
            pos as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{}: {:.1}/{:.1} MB ({pct:.0}%)  {:.1} MB/s  ETA {eta}",
            self.name,
            pos as f64 / 1e6,
            total as f64 / 1e6,
            rate / 1e6
        );
        let _ = err.flush();
    }

    fn done(&self) {
        if self.enabled {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
        }
    }
}

fn import(args: cli::ImportArgs) -> Result<ExitCode> {
    let mut store = open_store(&args.db)?;
    let metrics = Metrics::new();
    let mut failed = false;
    for file in &args.files {
        if !file.is_file() {
            bail!("{}: no such file", file.display());
        }
        let mut progress = Progress::new(&file.display().to_string());
        let result = sync::import_file(
            &mut store,
            &args.provider_name,
            file,
            args.max_feed_bytes,
            &metrics,
            &mut |pos, total| progress.update(pos, total),
        );
        progress.done();
        match result {
            Ok(run) => print_run(&run, false),
            Err(e) => {
                failed = true;
                let outcome = e.outcome();
                eprintln!(
                    "planbox: {}: {outcome}: {e}; nothing from this file was stored",
                    file.display()
                );
                if outcome != Outcome::ParseError && outcome != Outcome::TooLarge {
                    break;
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn search(args: cli::SearchArgs) -> Result<ExitCode> {
    let mut query = Vec::new();
    for (name, value) in [("starts_at", &args.starts_at), ("ends_at", &args.ends_at)] {
        if let Some(v) = value {
            // The API's parser decodes percent-escapes; a literal '%' in a
            // value is encoded so the CLI takes values as typed.
            query.push(format!("{name}={}", v.replace('%', "%25")));
        }
    }
    let window = match crate::query::parse_search_query(&query.join("&"), args.provider_timezone) {
        Ok(w) => w,
        Err(e) => {
            if args.json {
                let body = crate::api::error_response(
                    400,
                    crate::metrics::Route::Search,
                    crate::api::code::INVALID_PARAMETER,
                    &e.message,
                )
                .body;
                println!("{}", String::from_utf8_lossy(&body));
            } else {
                eprintln!("planbox: {}", e.message);
            }
            return Ok(ExitCode::from(2));
        }
    };
    let store = open_existing_store(&args.db)?;
    let body = store.search(&window)?;
    if args.json {
        std::io::stdout().write_all(&body)?;
        println!();
        return Ok(ExitCode::SUCCESS);
    }
    let events = crate::model::decode_events(&body)?;
    println!(
        "{:<36}  {:<19}  {:<19}  {:>9}  {:>9}  title",
        "id", "start", "end", "min", "max"
    );
    for e in &events {
        println!(
            "{:<36}  {:<19}  {:<19}  {:>9}  {:>9}  {}",
            e.id,
            e.start(),
            e.end(),
            crate::model::EventRow::price(&e.min_price),
            crate::model::EventRow::price(&e.max_price),
            e.title
        );
    }
    println!("{} plan(s)", events.len());
    Ok(ExitCode::SUCCESS)
}

fn status(args: cli::StatusArgs) -> Result<ExitCode> {
    let store = open_existing_store(&args.db)?;
    let runs = store.runs(args.limit)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "runs": runs }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let c = store.counts()?;
    println!(
        "{}: {} plans stored, {} searchable, data generation {}",
        store.path().display(),
        c.plans_stored,
        c.plans_searchable,
        store.generation()?
    );
    println!(
        "{:<24}  {:<13}  {:>4}  {:>10}  {:>7}  {:>6}  {:>5}  {:>7}  {:>7}  error",
        "started_at", "outcome", "http", "bytes", "ms", "seen", "new", "updated", "skipped"
    );
    for r in &runs {
        println!(
            "{:<24}  {:<13}  {:>4}  {:>10}  {:>7}  {:>6}  {:>5}  {:>7}  {:>7}  {}",
            r.started_at,
            r.outcome.as_str(),
            r.http_status_text(),
            r.bytes,
            r.duration_ms,
            r.counts.plans_seen,
            r.counts.plans_new,
            r.counts.plans_updated,
            r.skipped_total(),
            r.error.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn healthcheck(args: cli::HealthcheckArgs) -> Result<ExitCode> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(args.timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://{}/ready", args.listen);
    match agent.get(&url).call() {
        Ok(r) if r.status().as_u16() == 200 => {
            println!("ready");
            Ok(ExitCode::SUCCESS)
        }
        Ok(r) => {
            eprintln!("planbox: {url} answered {}", r.status().as_u16());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("planbox: {url}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
