//! The commands: wiring of config, store, fetch loop and server into the
//! processes `planbox <command>` runs. This is the edge: errors become
//! `anyhow` messages and exit codes here, and only here.
//!
//! It must not contain domain rules, SQL or HTTP handling of its own.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;

use crate::api::Api;
use crate::check_state::CheckState;
use crate::cli::{self, Cli, Command, LogFormat};
use crate::config::{ProviderConfig, ServeConfig};
use crate::fetch::FetchConfig;
use crate::metrics::{Listener, Metrics};
use crate::model::{FetchRun, Outcome};
use crate::provider_sim::FakeProvider;
use crate::report;
use crate::secret::SecretUrl;
use crate::server::{self, RunningServer, ServerConfig};
use crate::service::{ProviderInfo, ServiceInfo};
use crate::stop::Stop;
use crate::store::Store;
use crate::sync::{self, SyncConfig};
use crate::tls::TrustRoots;

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
        Command::Search(args) => {
            quit_quietly_on_a_closed_pipe();
            search(args)
        }
        Command::Status(args) => {
            quit_quietly_on_a_closed_pipe();
            status(args)
        }
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
        Command::Generate(args) => {
            for path in crate::manual::generate(&args.dir)? {
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
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
/// an interval that never comes into play. Fails on an unreadable `ca=`.
fn sync_config(
    provider: &ProviderConfig,
    url: SecretUrl,
    db: &Path,
    interval: Duration,
    max_backoff: Duration,
) -> Result<SyncConfig> {
    let roots = TrustRoots::with_ca_file(provider.ca.as_deref())
        .with_context(|| format!("provider `{}`", provider.name))?;
    Ok(SyncConfig {
        provider: provider.name.clone(),
        fetch: FetchConfig {
            url,
            roots,
            connect_timeout: provider.connect_timeout,
            timeout: provider.fetch_timeout,
            max_bytes: provider.max_feed_bytes,
        },
        interval,
        max_backoff,
        db: db.to_owned(),
    })
}

/// Unix seconds of the newest successful run in the journal.
fn last_success(runs: &[FetchRun]) -> Option<i64> {
    runs.iter().find(|r| r.outcome.is_success()).and_then(|r| {
        chrono::DateTime::parse_from_rfc3339(&r.started_at)
            .ok()
            .map(|t| t.timestamp() + (r.duration_ms / 1000) as i64)
    })
}

/// Reads `--providers-file`. The file holds credentials: a warning when
/// other users may read it (a systemd credential never is).
fn read_providers_file(path: &Path, defaults: &ProviderConfig) -> Result<Vec<ProviderConfig>> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--providers-file {}", path.display()))?;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o004 != 0 {
            crate::log::warn(&format!(
                "{} is readable by every user, and provider URLs may hold credentials: chmod 600 it, or load it as a systemd credential",
                path.display()
            ));
        }
    }
    crate::config::parse_provider_list(&text, defaults)
        .with_context(|| format!("--providers-file {}", path.display()))
}

/// The providers `serve` fetches, each with its fetch-loop settings.
fn provider_loops(
    cfg: &ServeConfig,
    demo: Option<&FakeProvider>,
) -> Result<Vec<(ProviderConfig, SyncConfig)>> {
    let mut out = Vec::new();
    for p in &cfg.providers {
        let url = match (demo, &p.url) {
            (Some(d), _) => SecretUrl::parse(&d.url()).map_err(|e| anyhow!(e))?,
            (None, Some(u)) => u.clone(),
            (None, None) => continue,
        };
        let sc = sync_config(p, url, &cfg.db, cfg.fetch_interval, cfg.max_backoff)?;
        out.push((p.clone(), sc));
    }
    Ok(out)
}

fn serve(cfg: ServeConfig) -> Result<ExitCode> {
    // Before anything else: a SIGTERM that arrives while the store is being
    // checked or the demo feeds land must still mean a clean stop.
    let signalled = install_signal_handlers()?;
    let serve = Serve::setup(cfg, signalled)?;
    let woke = serve.run();
    Ok(serve.shutdown(woke))
}

/// A running `planbox serve`. [`Serve::setup`] opens the store and starts
/// the check, the HTTP fronts and the fetch loops; [`Serve::run`] waits for
/// a signal; [`Serve::shutdown`] stops everything in order and leaves the
/// store whole (checkpointed, with its clean-stop mark when it may).
struct Serve {
    db: PathBuf,
    /// The serve lock, held until the process ends.
    _lock: File,
    signalled: Arc<AtomicBool>,
    stop: Arc<Stop>,
    check_state: Arc<CheckState>,
    check: JoinHandle<()>,
    /// The demo provider lives as long as `serve`.
    demo: Option<FakeProvider>,
    http: RunningServer,
    /// `/metrics` and the status page on listeners of their own.
    side_fronts: Vec<RunningServer>,
    fetchers: Vec<JoinHandle<()>>,
    notifier: Option<crate::systemd::Notifier>,
}

impl Serve {
    fn setup(mut cfg: ServeConfig, signalled: Arc<AtomicBool>) -> Result<Serve> {
        resolve_providers(&mut cfg)?;
        let lock = lock_store(&cfg.db)?;
        let mut store = Store::open(&cfg.db)?;
        // No full read of the file before serving: the check runs in the
        // background (at once, with writes waiting for it, unless the last
        // serve stopped cleanly); see checker.rs.
        let start = store
            .begin_serving()
            .context("refusing to serve a damaged store")?;
        let demo = if cfg.demo {
            Some(FakeProvider::demo().context("cannot start the demo provider")?)
        } else {
            None
        };
        let loops = provider_loops(&cfg, demo.as_ref())?;
        let known = known_providers(&store, &loops)?;

        let metrics = Arc::new(Metrics::new());
        let stop = Stop::new();
        let check_state = Arc::new(CheckState::default());
        let check =
            crate::checker::spawn(cfg.db.clone(), start, check_state.clone(), stop.clone())?;
        for name in &known {
            metrics.register_provider(name);
            if let Some(t) = last_success(&store.runs_of(name, 100)?) {
                metrics.set_last_success(name, t);
            }
        }
        metrics.set_plans_searchable(store.counts()?.plans_searchable);
        let info = Arc::new(service_info(
            &cfg,
            &loops,
            &known,
            demo.is_some(),
            &check_state,
        ));
        if let (Some((_, sc)), true) = (loops.first(), demo.is_some()) {
            // Land the three sample feeds before answering, so the first
            // search already sees the fixtures' final state.
            if crate::checker::wait_for_first_check(&check_state, &stop) {
                for _ in 0..crate::provider_sim::DEMO_FEEDS.len() {
                    sync::fetch_once(&mut store, sc, &metrics, None);
                }
            }
            metrics.set_plans_searchable(store.counts()?.plans_searchable);
        }
        // The demo has just fetched: its loops start one interval later.
        // Known before the server answers, so the status page never shows
        // "-" for it.
        let first_wait = if demo.is_some() {
            cfg.fetch_interval
        } else {
            Duration::ZERO
        };
        for (p, _) in &loops {
            info.set_next_fetch(
                &p.name,
                chrono::Utc::now().timestamp() + first_wait.as_secs() as i64,
            );
        }

        let (http, side_fronts) = start_fronts(&cfg, &known, &metrics, &info)?;
        let fetchers = if loops.is_empty() {
            crate::log::warn("no provider URL given: serving the store as it is, without fetching");
            Vec::new()
        } else {
            let shared = LoopShared {
                metrics,
                info,
                stop: stop.clone(),
                check_state: check_state.clone(),
                first_wait,
            };
            spawn_fetch_loops(store, loops, &shared)?
        };
        Ok(Serve {
            db: cfg.db,
            _lock: lock,
            signalled,
            stop,
            check_state,
            check,
            demo,
            http,
            side_fronts,
            fetchers,
            notifier: crate::systemd::Notifier::try_from_env().unwrap_or_else(|e| {
                // systemd will wait for READY in vain: say why.
                crate::log::warn(&format!("cannot notify systemd: {}", crate::log::chain(&e)));
                None
            }),
        })
    }

    /// Tells systemd it is ready, then blocks until SIGINT/SIGTERM or a
    /// fetch loop's death.
    fn run(&self) -> Wake {
        if let Some(n) = &self.notifier {
            if let Err(e) = n.ready() {
                crate::log::warn(&format!("cannot notify systemd: {}", crate::log::chain(&e)));
            }
        }
        // A fetch thread only ends on `stop`; if one ends before, it
        // panicked: stop pinging the watchdog and exit non-zero so a
        // supervisor restarts planbox instead of it serving ever older data.
        // The HTTP front must answer too (its poller turns, a worker answers).
        let fetcher_alive = || {
            self.fetchers.iter().all(|f| !f.is_finished())
                && self.http.is_alive(server::FRONT_STALL)
        };
        let woke = wait_for_signal(
            &self.signalled,
            &self.stop,
            self.notifier.as_ref(),
            &fetcher_alive,
        );
        if woke == Wake::FetcherDied {
            crate::log::error("a fetch loop or the HTTP front stopped working; shutting down");
        } else {
            crate::log::info("shutting down");
        }
        woke
    }

    /// Stops the fronts and the loops, checkpoints the store and marks a
    /// clean stop when nothing can still be writing.
    fn shutdown(self, woke: Wake) -> ExitCode {
        if let Some(n) = &self.notifier {
            let _ = n.stopping();
        }
        self.stop.stop();
        // Every front stops accepting now, then gets the same grace to
        // finish in-flight requests. The fetch loops wind down meanwhile;
        // all of shutdown, the final checkpoint included, stays within
        // 12 s, under the unit's TimeoutStopSec=15.
        let fetch_deadline = Instant::now() + Duration::from_secs(10);
        let grace = Duration::from_secs(5);
        let side_threads: Vec<_> = self
            .side_fronts
            .into_iter()
            .map(|m| thread::spawn(move || m.shutdown(grace)))
            .collect();
        self.http.shutdown(grace);
        for t in side_threads {
            let _ = t.join();
        }
        // A running ingest stops at its next checkpoint and rolls back, or
        // commits first; either way the store stays whole.
        let fetchers = self.fetchers;
        while fetchers.iter().any(|f| !f.is_finished()) && Instant::now() < fetch_deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if fetchers.iter().any(|f| !f.is_finished()) {
            // Typically a download from a slow provider (it is not
            // interruptible). Leaving it is safe: nothing of it is in the
            // store yet, and SQLite discards an unfinished transaction.
            crate::log::warn("the fetch in progress did not finish in time; abandoning it");
        }
        let fetch_done = fetchers.iter().all(|f| f.is_finished());
        // The finished loops have dropped their handles on the writer.
        for f in fetchers {
            if f.is_finished() {
                let _ = f.join();
            }
        }
        let _ = self.check.join();
        drop(self.demo);
        // With the workers' readers and every fetch loop's writer closed:
        // the store file alone must hold everything, so that a copy of
        // `planbox.db` without its `-wal` (the usual ad-hoc backup) is whole.
        let db = &self.db;
        match Store::checkpoint(db, Duration::from_secs(2)) {
            Ok(true) => {}
            Ok(false) => crate::log::warn(
                "a connection was still busy: part of the store stays in its -wal file until the next start",
            ),
            Err(e) => crate::log::warn(&format!("cannot checkpoint the store: {}", crate::log::chain(&e))),
        }
        // The clean-stop mark lets the next start skip the check; only when
        // nothing can still be writing and the store was not found damaged.
        // Checkpointed last too, so `planbox.db` alone carries it. A reader
        // stuck since before the mark (a client not reading its answer past
        // the grace) can keep the mark, and only the mark, in the `-wal`: a
        // copy of the file alone is then checked at its first start, the
        // safe side, so that is no reason to wait.
        if woke == Wake::Stop && fetch_done && !self.check_state.damaged() {
            match Store::open(db).and_then(|mut s| s.mark_clean()) {
                Ok(()) => {
                    if let Ok(false) = Store::checkpoint(db, Duration::ZERO) {
                        crate::log::info(
                            "a reader still open kept the clean-stop mark in the -wal file; a copy of planbox.db alone is checked at its first start",
                        );
                    }
                }
                Err(e) => crate::log::warn(&format!(
                    "cannot mark the store as cleanly stopped: {}",
                    crate::log::chain(&e)
                )),
            }
        }
        crate::log::info("stopped");
        if woke == Wake::FetcherDied {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// With no provider configured otherwise, the systemd credential
/// `planbox.providers` (ImportCredential= / LoadCredential=) when present;
/// then `--providers-file`.
fn resolve_providers(cfg: &mut ServeConfig) -> Result<()> {
    let unconfigured = cfg.providers.len() == 1 && cfg.providers[0].url.is_none();
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let cred = Path::new(&dir).join("planbox.providers");
        if cred.is_file() {
            if cfg.providers_file.is_none() && unconfigured && !cfg.demo {
                cfg.providers_file = Some(cred);
            } else {
                crate::log::warn(
                    "ignoring the credential planbox.providers: providers are configured otherwise (flags, PLANBOX_* variables or --demo)",
                );
            }
        }
    }
    if let Some(file) = &cfg.providers_file {
        cfg.providers = read_providers_file(file, &cfg.provider_defaults)?;
    }
    Ok(())
}

/// The providers fetched here, then those only the journal or the store
/// knows (served from the store, not fetched by this process).
fn known_providers(store: &Store, loops: &[(ProviderConfig, SyncConfig)]) -> Result<Vec<String>> {
    let mut known: Vec<String> = loops.iter().map(|(p, _)| p.name.clone()).collect();
    let journal = store.runs(200)?.into_iter().map(|r| r.provider);
    for name in journal.chain(store.providers()?) {
        if !name.is_empty() && !known.contains(&name) {
            known.push(name);
        }
    }
    Ok(known)
}

/// What the status page and the API show of the service: the providers
/// fetched here (URL redacted), then those only in the store.
fn service_info(
    cfg: &ServeConfig,
    loops: &[(ProviderConfig, SyncConfig)],
    known: &[String],
    demo: bool,
    check_state: &Arc<CheckState>,
) -> ServiceInfo {
    let mut providers: Vec<ProviderInfo> = loops
        .iter()
        .map(|(p, sc)| ProviderInfo {
            name: p.name.clone(),
            url: if demo {
                format!("{} (built-in demo feeds)", sc.fetch.url)
            } else {
                sc.fetch.url.to_string()
            },
            timezone: p.timezone.name().to_owned(),
            ..ProviderInfo::default()
        })
        .collect();
    providers.extend(known.iter().skip(loops.len()).map(|name| ProviderInfo {
        name: name.clone(),
        timezone: cfg.provider_defaults.timezone.name().to_owned(),
        ..ProviderInfo::default()
    }));
    ServiceInfo {
        version: env!("CARGO_PKG_VERSION"),
        providers,
        store_check: check_state.clone(),
    }
}

/// Starts the main HTTP front and, when asked, `/metrics` and the status
/// page on listeners of their own (one when both name the same address):
/// a second front with one worker and an API that answers nothing else,
/// over the same counters and store.
fn start_fronts(
    cfg: &ServeConfig,
    known: &[String],
    metrics: &Arc<Metrics>,
    info: &Arc<ServiceInfo>,
) -> Result<(RunningServer, Vec<RunningServer>)> {
    // The zone of the first provider: searches over providers that all
    // share it read one window; otherwise each provider's in its own zone.
    let zone = cfg.providers[0].timezone;
    // Every provider a search covers, with its zone: those fetched here in
    // theirs, the others (only in the store) in the default zone.
    let search_zones: Vec<(String, chrono_tz::Tz)> = known
        .iter()
        .map(|name| {
            let tz = cfg
                .providers
                .iter()
                .find(|p| &p.name == name)
                .map_or(cfg.provider_defaults.timezone, |p| p.timezone);
            (name.clone(), tz)
        })
        .collect();
    let mut api = Api::new(zone, metrics.clone(), info.clone())
        .with_providers(search_zones.clone())
        .with_cache_max_age(cfg.cache_max_age);
    if cfg.metrics_listen.is_some() {
        api = api.without_metrics();
    }
    if cfg.status_listen.is_some() {
        api = api.without_status();
    }
    let server_cfg = ServerConfig {
        workers: cfg.workers,
        max_connections: cfg.max_connections,
        rate_limit: cfg.rate_limit,
        trusted_proxies: cfg.trusted_proxies.clone(),
        ..ServerConfig::default()
    };
    let listener =
        server::bind(cfg.listen).with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let mut side_fronts: Vec<(RunningServer, &str)> = Vec::new();
    let side = [
        (cfg.metrics_listen, true, false, "--metrics-listen"),
        (cfg.status_listen, false, true, "--status-listen"),
    ];
    let same = cfg.metrics_listen.is_some() && cfg.metrics_listen == cfg.status_listen;
    for (addr, metrics_here, status_here, flag) in side {
        let Some(addr) = addr else { continue };
        if same && status_here {
            continue;
        }
        let (metrics_here, status_here) = if same {
            (true, true)
        } else {
            (metrics_here, status_here)
        };
        let mcfg = ServerConfig {
            workers: 1,
            listener: if metrics_here {
                Listener::Metrics
            } else {
                Listener::Status
            },
            ..ServerConfig::default()
        };
        let l = server::bind(addr).with_context(|| format!("cannot listen on {addr} ({flag})"))?;
        let side_api = Api::side(
            zone,
            metrics.clone(),
            info.clone(),
            metrics_here,
            status_here,
        )
        .with_providers(search_zones.clone());
        let what = match (metrics_here, status_here) {
            (true, false) => "metrics listening",
            (false, _) => "status page on its own listener",
            (true, true) => "metrics listening, with the status page",
        };
        side_fronts.push((
            RunningServer::start(l, Arc::new(side_api), cfg.db.clone(), mcfg)?,
            what,
        ));
    }
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
    for (m, what) in &side_fronts {
        crate::log::log(crate::log::Level::Info, what, &[("addr", &m.local_addr())]);
    }
    Ok((http, side_fronts.into_iter().map(|(m, _)| m).collect()))
}

/// What every fetch loop of a `serve` shares.
struct LoopShared {
    metrics: Arc<Metrics>,
    info: Arc<ServiceInfo>,
    stop: Arc<Stop>,
    check_state: Arc<CheckState>,
    /// How long the loops wait before their first fetch.
    first_wait: Duration,
}

/// One fetch loop per provider around the single writer, each on its own
/// thread at a lower priority; none writes before the first store check
/// passed, and none ever writes to a store found damaged.
fn spawn_fetch_loops(
    store: Store,
    loops: Vec<(ProviderConfig, SyncConfig)>,
    shared: &LoopShared,
) -> Result<Vec<JoinHandle<()>>> {
    let writer = Arc::new(std::sync::Mutex::new(store));
    let mut fetchers = Vec::new();
    for (p, sc) in loops {
        let (m, i, s, w) = (
            shared.metrics.clone(),
            shared.info.clone(),
            shared.stop.clone(),
            writer.clone(),
        );
        let (c, first_wait) = (shared.check_state.clone(), shared.first_wait);
        crate::log::log(
            crate::log::Level::Info,
            "fetching",
            &[
                ("provider", &p.name),
                ("url", &sc.fetch.url),
                ("timezone", &p.timezone.name()),
            ],
        );
        fetchers.push(
            thread::Builder::new()
                .name(format!("planbox-fetch-{}", p.name))
                .spawn(move || {
                    lower_thread_priority();
                    if !s.wait(first_wait) {
                        if crate::checker::wait_for_first_check(&c, &s) {
                            sync::run_loop(w, sc, m, i, s);
                        } else {
                            // Damaged: never written again; serve on
                            // (with /ready failing) until stopped.
                            drop(w);
                            while !s.wait(Duration::from_secs(3600)) {}
                        }
                    }
                })?,
        );
    }
    Ok(fetchers)
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

/// For commands whose output is meant for pipes (`search`, `status`):
/// the default SIGPIPE action, so `planbox search | head` ends the way
/// `cat | head` does instead of panicking in `println!` on the closed
/// pipe. Rust ignores SIGPIPE at start; `serve` keeps it ignored, since a
/// client closing its socket must cost only its request.
fn quit_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restores a signal's default action; no handler, no memory of ours.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
                        &[("error", &crate::log::chain(&e))],
                    );
                }
                last_ping = Instant::now();
            }
        }
    }
    Wake::Stop
}

fn fetch(args: cli::FetchArgs) -> Result<ExitCode> {
    let provider = args.provider.to_config().map_err(|e| anyhow!(e))?;
    let Some(url) = provider.url.clone() else {
        bail!("no provider URL: pass --provider-url or set PLANBOX_PROVIDER_URL");
    };
    let one_minute = Duration::from_secs(60);
    let cfg = sync_config(&provider, url, &args.db.db, one_minute, one_minute)?;
    let mut store = open_store(&args.db)?;
    let attempt = sync::fetch_once(&mut store, &cfg, &Metrics::new(), None);
    report::run(&mut std::io::stdout().lock(), &attempt.run, args.json)?;
    Ok(if attempt.run.outcome.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn import(args: cli::ImportArgs) -> Result<ExitCode> {
    let mut store = open_store(&args.db)?;
    let metrics = Metrics::new();
    let mut failed = false;
    for file in &args.files {
        if !file.is_file() {
            bail!("{}: no such file", file.display());
        }
        let mut progress = report::Progress::new(&file.display().to_string());
        let result = sync::import_file(
            &mut store,
            &args.provider_name,
            file,
            args.max_feed_bytes,
            args.charset.as_deref(),
            &metrics,
            &mut |pos, total| progress.update(pos, total),
        );
        progress.done();
        match result {
            Ok(run) => report::run(&mut std::io::stdout().lock(), &run, false)?,
            Err(e) => {
                failed = true;
                let outcome = e.outcome();
                eprintln!(
                    "planbox: {}: {outcome}: {}; nothing from this file was stored",
                    report::Shown(&file.display().to_string()),
                    report::Shown(&crate::log::chain(&e))
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
    // Streamed from one read snapshot: memory stays flat at any answer size.
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 << 10, stdout.lock());
    let query = crate::store::SearchQuery::from(window);
    if args.json {
        let mut out = report::TerminalJson::new(out);
        store.stream(&query, |_, body| -> std::io::Result<()> {
            std::io::copy(body, &mut out)?;
            writeln!(out)
        })??;
        out.finish()?;
        return Ok(ExitCode::SUCCESS);
    }
    report::event_header(&mut out)?;
    let n = store.stream(&query, |_, body| {
        crate::api::for_each_event(body, &mut |e| report::event_row(&mut out, &e))
    })??;
    writeln!(out, "{n} plan(s)")?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn status(args: cli::StatusArgs) -> Result<ExitCode> {
    let store = open_existing_store(&args.db)?;
    // Journal rows hold no credentials: planbox journals URLs redacted, and
    // migrations V7 and V8 redacted the rows of earlier versions.
    let runs = store.runs(args.limit)?;
    if args.json {
        report::json(
            &mut std::io::stdout().lock(),
            &serde_json::json!({ "runs": runs }),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let stdout = std::io::stdout();
    report::status(
        &mut stdout.lock(),
        store.path(),
        &store.counts()?,
        store.generation()?,
        &runs,
    )?;
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
