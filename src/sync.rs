//! Fetch → parse → store, and the journal of every attempt.
//!
//! Owns the fetch loop (its own thread: fetch at start, then every interval,
//! exponential backoff with full jitter after failures, `Retry-After`
//! honoured), the ingest of one document as one transaction, the
//! classification of every attempt into a journal outcome, and `import`.
//!
//! Invariants: a document that fails to parse, is truncated or is too large
//! is rolled back whole; the journal row of a successful ingest commits in
//! the same transaction as its plans; a failed attempt never stops the loop.
//! This module must not contain SQL or HTTP details (see `store/`,
//! `fetch.rs`).

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::feed::{FeedItem, FeedReader, FeedUnit, ParseError, Skip, Understander};
use crate::fetch::{self, FetchConfig, FetchError, Fetched, Validators};
use crate::metrics::Metrics;
use crate::model::{FetchRun, Outcome, PlanCounts, RepairReason};
use crate::service::ServiceInfo;
use crate::stop::Stop;
use crate::store::{FeedState, PreparedPlan, Preparer, Store, StoreError};

/// The reader side of the body limit: errors once more than `limit` bytes
/// were read, with a [`TooLarge`] inside the `io::Error`.
pub struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("feed is over the {0}-byte limit")]
pub struct TooLarge(pub u64);

impl<R: Read> Limited<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        Limited {
            inner,
            left: limit,
            limit,
        }
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Read one byte past the limit to tell "exactly at" from "over".
        let max = (self.left.saturating_add(1)).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..max])?;
        if n as u64 > self.left {
            return Err(io::Error::other(TooLarge(self.limit)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Why an ingest did not land.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("interrupted by shutdown before commit")]
    Interrupted,
}

impl IngestError {
    /// The journal outcome of a failed ingest.
    pub fn outcome(&self) -> Outcome {
        match self {
            IngestError::Parse(ParseError::Io(e))
                if e.get_ref().is_some_and(|inner| inner.is::<TooLarge>()) =>
            {
                Outcome::TooLarge
            }
            _ => Outcome::ParseError,
        }
    }
}

/// How an ingest reports and stops.
pub struct IngestOptions<'a> {
    /// The provider's feed state to commit with the plans.
    pub state: Option<&'a FeedState>,
    /// When the attempt started (for the journal's duration).
    pub started: Instant,
    /// Checked every 1024 items: a stop rolls the ingest back.
    pub stop: Option<&'a Stop>,
    /// Called with the parser's byte position as it advances.
    pub progress: &'a mut dyn FnMut(u64),
    /// The `charset` of the response's `Content-Type`, if any: it wins
    /// over the document's XML declaration.
    pub charset: Option<&'a str>,
}

/// Ingests one feed document from `reader` as one transaction, committed
/// together with `run` (whose counts, skips and duration are filled in here)
/// and the feed state. On any error nothing is written.
pub fn ingest<R: BufRead + Send>(
    store: &mut Store,
    provider: &str,
    reader: R,
    run: &mut FetchRun,
    opts: IngestOptions<'_>,
) -> Result<PlanCounts, IngestError> {
    let IngestOptions {
        state,
        started,
        stop,
        progress,
        charset,
    } = opts;
    let mut tx = store.begin_ingest(provider)?;
    let mut skipped: BTreeMap<String, u64> = BTreeMap::new();
    // The first skip of each reason, for its one log line.
    let mut examples: BTreeMap<String, Skip> = BTreeMap::new();
    let preparer = tx.preparer();
    let pool = prepare_pool().map_err(|e| IngestError::Parse(ParseError::Io(e)))?;
    // Three stages, a few batches apart (memory: at most 2 * PARSE_AHEAD
    // batches waiting, plus one in each stage):
    // - the tag reader (`planbox-parse`) hands out items raw, in batches;
    // - `planbox-prepare` has each batch understood and prepared for the
    //   store (dates, prices, zones, content hash, id, rendered JSON) by
    //   rayon's threads, across the cores, in order;
    // - this thread, the single writer, lands them: the known-plans check
    //   and SQLite.
    let (position, repaired) = std::thread::scope(|scope| {
        let (send_raw, raw_batches) = sync_channel::<(Vec<FeedUnit>, u64)>(PARSE_AHEAD);
        let (send_ready, ready_batches) = sync_channel::<(Vec<Ready>, u64)>(PARSE_AHEAD);
        // Understood batches go back to the tag reader, which reads the
        // next items into their buffers.
        let (send_spent, spent_batches) = sync_channel::<Vec<FeedUnit>>(PARSE_AHEAD);
        let parser = std::thread::Builder::new()
            .name("planbox-parse".into())
            .spawn_scoped(scope, move || -> Result<Parsed, ParseError> {
                let mut feed = FeedReader::with_charset(reader, charset);
                let mut batch = Vec::with_capacity(PARSE_BATCH);
                let mut bytes = 0;
                loop {
                    let unit = match feed.next_unit() {
                        Ok(Some(unit)) => unit,
                        Ok(None) => break,
                        Err(e) => {
                            // The items before the error may hold an
                            // earlier one: they go first.
                            let _ = send_raw.send((batch, feed.position()));
                            return Err(e);
                        }
                    };
                    if let FeedUnit::Raw(raw) = &unit {
                        bytes += raw.size();
                    }
                    batch.push(unit);
                    if batch.len() == PARSE_BATCH || bytes >= PARSE_BATCH_BYTES {
                        let next = match spent_batches.try_recv() {
                            Ok(mut spent) => {
                                feed.recycle(spent.drain(..));
                                spent
                            }
                            Err(_) => Vec::with_capacity(PARSE_BATCH),
                        };
                        let full = std::mem::replace(&mut batch, next);
                        bytes = 0;
                        if send_raw.send((full, feed.position())).is_err() {
                            // The writer gave up; its error is the answer.
                            return Ok(Parsed::default());
                        }
                    }
                }
                let _ = send_raw.send((batch, feed.position()));
                Ok(Parsed {
                    position: feed.position(),
                    repaired: feed
                        .repairs()
                        .map(|(reason, n)| (reason.as_str().to_owned(), n))
                        .collect(),
                })
            })
            .map_err(|e| IngestError::Parse(ParseError::Io(e)))?;
        let prepare = std::thread::Builder::new()
            .name("planbox-prepare".into())
            .spawn_scoped(scope, move || {
                let mut repaired = BTreeMap::new();
                for (mut units, position) in raw_batches {
                    let ready =
                        pool.install(|| prepare_batch(&mut units, &preparer, &mut repaired));
                    if send_ready.send((ready, position)).is_err() {
                        break;
                    }
                    // The tag reader may not want it (then it is dropped).
                    let _ = send_spent.try_send(units);
                }
                repaired
            })
            .map_err(|e| IngestError::Parse(ParseError::Io(e)))?;
        let mut write = || -> Result<(), IngestError> {
            for (items, position) in &ready_batches {
                if stop.is_some_and(Stop::is_stopped) {
                    return Err(IngestError::Interrupted);
                }
                for item in items {
                    match item {
                        Ready::Plan(plan) => tx.land(plan)?,
                        Ready::Failed(e) => return Err(IngestError::Parse(e)),
                        Ready::Skipped(skip) => {
                            let reason = skip.reason.as_str();
                            *skipped.entry(reason.to_owned()).or_default() += 1;
                            examples.entry(reason.to_owned()).or_insert(skip);
                        }
                    }
                }
                progress(position);
            }
            Ok(())
        };
        let written = write();
        // Unblocks the stages waiting to send, so they end.
        drop(ready_batches);
        let understood = prepare
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let parsed = parser
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        written?;
        let mut parsed = parsed?;
        for (reason, n) in understood {
            *parsed.repaired.entry(reason).or_default() += n;
        }
        Ok::<_, IngestError>((parsed.position, parsed.repaired))
    })?;
    log_damage(run, &skipped, &examples, &repaired);
    // An import learns its size only by reading it: the whole document was.
    run.bytes = run.bytes.max(position);
    run.counts = tx.counts();
    run.skipped = skipped;
    run.repaired = repaired;
    run.duration_ms = started.elapsed().as_millis() as u64;
    Ok(tx.commit(run, state)?)
}

/// One log line per skip reason and per repair reason of an ingest, with
/// the first skipped item of each reason as an example. Each names the
/// provider and the run's source, which is already redacted (never a
/// credential of the provider URL).
fn log_damage(
    run: &FetchRun,
    skipped: &BTreeMap<String, u64>,
    examples: &BTreeMap<String, Skip>,
    repaired: &BTreeMap<String, u64>,
) {
    for (reason, n) in skipped {
        let Some(first) = examples.get(reason) else {
            continue;
        };
        crate::log::log(
            crate::log::Level::Warn,
            "skipped feed items",
            &[
                ("provider", &run.provider),
                ("source", &run.source),
                ("reason", reason),
                ("count", n),
                ("first", &first.to_string()),
            ],
        );
    }
    for (reason, n) in repaired {
        crate::log::log(
            crate::log::Level::Info,
            "repaired feed values",
            &[
                ("provider", &run.provider),
                ("source", &run.source),
                ("reason", reason),
                ("count", n),
            ],
        );
    }
}

/// Items the parser hands on at a time, and how many such batches may wait
/// between two stages of an ingest: the parser runs at most this far ahead.
const PARSE_BATCH: usize = 1024;
const PARSE_AHEAD: usize = 2;
/// A batch also ends once its raw items hold this many bytes of tags.
const PARSE_BATCH_BYTES: usize = 2 << 20;

/// Items one rayon task understands and prepares in a row.
const PREPARE_CHUNK: usize = 64;

/// An item ready for the writer.
enum Ready {
    Plan(PreparedPlan),
    Skipped(Skip),
    /// Understanding the item found the document malformed.
    Failed(ParseError),
}

/// rayon's threads that understand and prepare items: one per core but the
/// one the tag reader keeps busy (at least one). More threads than the
/// cores left only add context switches: on 2 cores, two understanding
/// threads beside the tag reader cost 1-2 s of system time a 1M-plan
/// ingest, one 0.4-0.5 s, for the same wall time.
fn prepare_pool() -> io::Result<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    if let Some(pool) = POOL.get() {
        return Ok(pool);
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cores.saturating_sub(1).max(1))
        .thread_name(|i| format!("planbox-understand-{i}"))
        .build()
        .map_err(io::Error::other)?;
    Ok(POOL.get_or_init(|| pool))
}

/// Understands and prepares one batch on rayon's threads, keeping document
/// order; adds the repairs made to `repaired`.
fn prepare_batch(
    units: &mut [FeedUnit],
    preparer: &Preparer,
    repaired: &mut BTreeMap<String, u64>,
) -> Vec<Ready> {
    type Repaired = Vec<(RepairReason, u64)>;
    let chunks: Vec<(Vec<Ready>, Repaired)> = units
        .par_chunks_mut(PREPARE_CHUNK)
        .map(|units| {
            let mut understander = Understander::new();
            let mut items = Vec::with_capacity(units.len());
            let mut failed = None;
            for unit in units {
                match unit {
                    FeedUnit::Raw(raw) => match understander.understand(raw) {
                        Ok(understood) => items.extend(understood),
                        Err(e) => {
                            // The document's verdict: nothing after it counts.
                            failed = Some(Ready::Failed(e));
                            break;
                        }
                    },
                    FeedUnit::Items(understood) => items.append(understood),
                }
            }
            // Skips keep their place among the plans, prepared together.
            let mut plans = Vec::with_capacity(items.len());
            let mut order = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    FeedItem::Plan(plan) => {
                        plans.push(plan);
                        order.push(None);
                    }
                    FeedItem::Skipped(skip) => order.push(Some(skip)),
                }
            }
            let mut prepared = preparer.prepare_many(plans).into_iter();
            let mut out: Vec<Ready> = order
                .into_iter()
                .map(|skip| match skip {
                    Some(skip) => Ready::Skipped(skip),
                    None => Ready::Plan(prepared.next().expect("one prepared plan a plan")),
                })
                .collect();
            out.extend(failed);
            (out, understander.repairs().collect())
        })
        .collect();
    let mut all = Vec::with_capacity(chunks.iter().map(|c| c.0.len()).sum());
    for (items, repairs) in chunks {
        all.extend(items);
        for (reason, n) in repairs {
            *repaired.entry(reason.as_str().to_owned()).or_default() += n;
        }
    }
    all
}

/// What the parse thread knows once the whole document was read.
#[derive(Default)]
struct Parsed {
    /// Bytes of the document read.
    position: u64,
    /// Values repaired, by reason.
    repaired: BTreeMap<String, u64>,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn new_run(provider: &str, source: &str) -> FetchRun {
    FetchRun {
        provider: provider.to_owned(),
        started_at: now_rfc3339(),
        duration_ms: 0,
        source: source.to_owned(),
        outcome: Outcome::Ok,
        http_status: None,
        bytes: 0,
        counts: PlanCounts::default(),
        skipped: BTreeMap::new(),
        repaired: BTreeMap::new(),
        error: None,
    }
}

/// What the fetch loop needs.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Provider name: part of every plan's identity.
    pub provider: String,
    pub fetch: FetchConfig,
    pub interval: Duration,
    pub max_backoff: Duration,
    pub db: PathBuf,
}

/// The result of one attempt, for the loop's scheduling.
#[derive(Debug)]
pub struct Attempt {
    pub run: FetchRun,
    /// `Retry-After` from a 429/503.
    pub retry_after: Option<Duration>,
}

/// How a fetch reaches the store's single writer: directly (`fetch`,
/// `import`, tests) or shared by the fetch loops of several providers
/// (`Arc<Mutex<Store>>`), held only while the store is read or written,
/// never during the download, so one provider hanging never delays
/// another's ingest; ingests serialize on the writer.
pub trait WithStore {
    fn with<R>(&mut self, f: impl FnOnce(&mut Store) -> R) -> R;
}

impl WithStore for Store {
    fn with<R>(&mut self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(self)
    }
}

impl WithStore for &mut Store {
    fn with<R>(&mut self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(self)
    }
}

impl WithStore for Arc<Mutex<Store>> {
    fn with<R>(&mut self, f: impl FnOnce(&mut Store) -> R) -> R {
        // A panic while holding the writer leaves no open transaction
        // behind (a dropped `Ingest` rolls back), so the store stays usable.
        let mut guard = self.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

/// Journals `run`, logs it and counts it in `metrics`. A journal write that
/// fails is logged; it never stops the loop.
fn finish(store: &mut impl WithStore, run: &FetchRun, journaled: bool, metrics: &Metrics) {
    if !journaled {
        if let Err(e) = store.with(|s| s.record_run(run)) {
            crate::log::error(&format!(
                "cannot journal the fetch run: {}",
                crate::log::chain(&e)
            ));
        }
    }
    metrics.observe_fetch(&run.provider, run.outcome, chrono::Utc::now().timestamp());
    metrics.observe_damage(run);
    log_run(run);
}

/// One line per fetch run.
pub fn log_run(run: &FetchRun) {
    let level = if run.outcome.is_success() {
        crate::log::Level::Info
    } else {
        crate::log::Level::Warn
    };
    let skipped = run.skipped_total();
    let status = run.http_status_text();
    let error = run.error.clone().unwrap_or_default();
    crate::log::log(
        level,
        "fetch run",
        &[
            ("provider", &run.provider),
            ("source", &run.source),
            ("outcome", &run.outcome),
            ("http_status", &status),
            ("bytes", &run.bytes),
            ("ms", &run.duration_ms),
            ("seen", &run.counts.plans_seen),
            ("new", &run.counts.plans_new),
            ("updated", &run.counts.plans_updated),
            ("unchanged", &run.counts.plans_unchanged),
            ("skipped", &skipped),
            ("repaired", &run.repaired_total()),
            ("error", &error),
        ],
    );
}

/// One fetch attempt, journaled. The journal, the logs and the metrics see
/// the provider's URL redacted and its error text scrubbed of credentials.
pub fn fetch_once(
    store: &mut impl WithStore,
    cfg: &SyncConfig,
    metrics: &Metrics,
    stop: Option<&Stop>,
) -> Attempt {
    let started = Instant::now();
    let mut run = new_run(&cfg.provider, cfg.fetch.url.redacted());
    let mut retry_after = None;
    let state = store
        .with(|s| s.feed_state(&cfg.provider))
        .unwrap_or_else(|e| {
            // The fetch goes on unconditional; the ingest then meets the
            // same store and journals what it finds.
            crate::log::warn(&format!(
                "cannot read the feed validators; fetching without them: {}",
                crate::log::chain(&e)
            ));
            FeedState::default()
        });
    let validators = Validators {
        etag: state.etag.clone(),
        last_modified: state.last_modified.clone(),
    };
    let mut journaled = false;
    let cancelled = || stop.is_some_and(Stop::is_stopped);
    match fetch::fetch(
        &cfg.fetch,
        &validators,
        &fetch::spool_path(&cfg.db, &cfg.provider),
        &cancelled,
    ) {
        Ok(Fetched::NotModified) => {
            run.outcome = Outcome::NotModified;
            run.http_status = Some(304);
        }
        Ok(Fetched::Body {
            status,
            body,
            validators,
            charset,
        }) => {
            run.http_status = Some(status);
            run.bytes = body.bytes;
            // The same bytes under another charset are another document.
            let body_key = match &charset {
                Some(c) => format!("{}; charset={}", body.hash, c.to_ascii_lowercase()),
                None => body.hash.clone(),
            };
            let new_state = FeedState {
                etag: validators.etag,
                last_modified: validators.last_modified,
                body_hash: Some(body_key.clone()),
            };
            if state.body_hash.as_deref() == Some(body_key.as_str()) {
                run.outcome = Outcome::Unchanged;
                // Only new validators are worth a write; the plans are not
                // touched at all.
                if new_state != state {
                    if let Err(e) = store.with(|s| s.set_validators(&cfg.provider, &new_state)) {
                        crate::log::error(&format!(
                            "cannot record the feed validators: {}",
                            crate::log::chain(&e)
                        ));
                    }
                }
            } else {
                match body.open() {
                    Ok(reader) => {
                        let opts = IngestOptions {
                            state: Some(&new_state),
                            started,
                            stop,
                            progress: &mut |_| {},
                            charset: charset.as_deref(),
                        };
                        let landed =
                            store.with(|s| ingest(s, &cfg.provider, reader, &mut run, opts));
                        match landed {
                            Ok(_) => journaled = true,
                            Err(IngestError::Interrupted) => {
                                crate::log::info("ingest interrupted by shutdown; nothing written");
                                return Attempt { run, retry_after };
                            }
                            Err(e) => {
                                run.outcome = e.outcome();
                                run.counts = PlanCounts::default();
                                run.skipped.clear();
                                run.repaired.clear();
                                run.error = Some(crate::log::chain(&e));
                            }
                        }
                    }
                    Err(e) => {
                        run.outcome = Outcome::NetworkError;
                        run.error = Some(format!("cannot read the spooled feed: {e}"));
                    }
                }
            }
        }
        Err(FetchError::Cancelled) => {
            // Not an attempt the provider failed: nothing to journal.
            crate::log::info("fetch interrupted by shutdown; nothing written");
            return Attempt { run, retry_after };
        }
        Err(e) => {
            run.http_status = e.http_status();
            retry_after = e.retry_after();
            run.outcome = e.outcome();
            run.error = Some(e.report());
        }
    }
    run.duration_ms = started.elapsed().as_millis() as u64;
    if let Some(e) = &mut run.error {
        *e = cfg.fetch.url.scrub(e);
    }
    finish(store, &run, journaled, metrics);
    Attempt { run, retry_after }
}

/// A small xorshift generator for backoff jitter (no need for a crate).
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Jitter(seed | 1)
    }

    /// Uniform in `0..=max`.
    fn below(&mut self, max: Duration) -> Duration {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        let nanos = max.as_nanos().min(u128::from(u64::MAX)) as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { x % (nanos + 1) })
    }
}

/// The wait before the next attempt after `failures` consecutive failures:
/// the interval after a success; after failures, full jitter between the
/// interval and `min(max_backoff, interval * 2^failures)`; never shorter than
/// a `Retry-After` (itself capped at the larger of interval and max backoff).
pub fn next_delay(
    interval: Duration,
    max_backoff: Duration,
    failures: u32,
    retry_after: Option<Duration>,
    rand: &mut dyn FnMut(Duration) -> Duration,
) -> Duration {
    let mut delay = if failures == 0 {
        interval
    } else {
        let cap = interval
            .saturating_mul(1u32 << failures.min(20))
            .min(max_backoff)
            .max(interval);
        interval + rand(cap - interval)
    };
    if let Some(ra) = retry_after {
        delay = delay.max(ra.min(max_backoff.max(interval)));
    }
    delay
}

/// What one turn of the fetch loop did, for observers.
#[derive(Clone, Debug)]
pub struct Tick {
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    /// Consecutive failures so far (0 after a success).
    pub failures: u32,
    /// `Retry-After` the provider sent, if any.
    pub retry_after: Option<Duration>,
    /// The wait chosen before the next attempt.
    pub delay: Duration,
}

/// The fetch loop: runs until `stop`. Owns the store's write connection.
pub fn run_loop(
    store: impl WithStore,
    cfg: SyncConfig,
    metrics: Arc<Metrics>,
    info: Arc<ServiceInfo>,
    stop: Arc<Stop>,
) {
    run_loop_observed(store, cfg, metrics, info, stop, |_| {});
}

/// [`run_loop`], telling `on_tick` after every attempt what happened and how
/// long the loop will wait. The loop never gives up: every failure only
/// lengthens the wait, up to `max_backoff`.
pub fn run_loop_observed(
    mut store: impl WithStore,
    cfg: SyncConfig,
    metrics: Arc<Metrics>,
    info: Arc<ServiceInfo>,
    stop: Arc<Stop>,
    mut on_tick: impl FnMut(&Tick),
) {
    let mut failures: u32 = 0;
    let mut jitter = Jitter::new();
    while !stop.is_stopped() {
        let attempt = fetch_once(&mut store, &cfg, &metrics, Some(&stop));
        if attempt.run.outcome.is_success() {
            failures = 0;
        } else {
            failures = failures.saturating_add(1);
        }
        if let Ok(c) = store.with(|s| s.counts()) {
            metrics.set_plans_searchable(c.plans_searchable);
        }
        let delay = next_delay(
            cfg.interval,
            cfg.max_backoff,
            failures,
            attempt.retry_after,
            &mut |d| jitter.below(d),
        );
        on_tick(&Tick {
            outcome: attempt.run.outcome,
            http_status: attempt.run.http_status,
            failures,
            retry_after: attempt.retry_after,
            delay,
        });
        let next = chrono::Utc::now().timestamp() + delay.as_secs() as i64;
        info.set_next_fetch(&cfg.provider, next);
        if stop.wait(delay) {
            break;
        }
    }
}

/// Imports local feed files in order, each as one transaction, as if fetched.
/// `charset` plays the part of a `Content-Type` charset.
/// `progress(file, position, total)` is called as the parse advances.
pub fn import_file(
    store: &mut Store,
    provider: &str,
    path: &Path,
    max_bytes: u64,
    charset: Option<&str>,
    metrics: &Metrics,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<FetchRun, IngestError> {
    let started = Instant::now();
    let mut run = new_run(provider, &path.display().to_string());
    let file = std::fs::File::open(path).map_err(|e| IngestError::Parse(ParseError::Io(e)))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    // A regular file's size is known: one over the limit is refused before
    // a byte is read (the limit still holds while reading, for files that
    // grow or report no size).
    let result = if total > max_bytes {
        Err(IngestError::Parse(ParseError::Io(io::Error::other(
            TooLarge(max_bytes),
        ))))
    } else {
        let opts = IngestOptions {
            state: None,
            started,
            stop: None,
            progress: &mut |pos| progress(pos, total),
            charset,
        };
        ingest_file(store, provider, file, max_bytes, &mut run, opts)
    };
    match result {
        Ok(()) => {
            metrics.observe_fetch(provider, run.outcome, chrono::Utc::now().timestamp());
            metrics.observe_damage(&run);
            log_run(&run);
            Ok(run)
        }
        Err(e) => {
            run.outcome = e.outcome();
            run.error = Some(crate::log::chain(&e));
            run.counts = PlanCounts::default();
            run.skipped.clear();
            run.repaired.clear();
            run.duration_ms = started.elapsed().as_millis() as u64;
            finish(store, &run, false, metrics);
            Err(e)
        }
    }
}

fn ingest_file(
    store: &mut Store,
    provider: &str,
    file: std::fs::File,
    max_bytes: u64,
    run: &mut FetchRun,
    opts: IngestOptions<'_>,
) -> Result<(), IngestError> {
    // The body's digest is taken on a thread of its own, from the chunks
    // the parser reads (shared, not copied): off the parser's path.
    let (send, chunks) = sync_channel::<Arc<Vec<u8>>>(TEE_AHEAD);
    let (result, digest, bytes) = std::thread::scope(|scope| {
        let hasher = std::thread::Builder::new()
            .name("planbox-digest".into())
            .spawn_scoped(scope, move || {
                let (mut digest, mut bytes) = (crate::digest::Digest::new(), 0u64);
                for chunk in chunks {
                    digest.update(&chunk);
                    bytes += chunk.len() as u64;
                }
                (digest, bytes)
            })
            .map_err(|e| IngestError::Parse(ParseError::Io(e)))?;
        let reader = TeeReader {
            inner: Limited::new(file, max_bytes),
            chunk: Arc::new(Vec::new()),
            at: 0,
            send,
        };
        let result = ingest(store, provider, reader, run, opts);
        let (digest, bytes) = hasher
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        Ok::<_, IngestError>((result, digest, bytes))
    })?;
    // The digest is only known once the whole file was read; the journal
    // still gets it, through the feed state written after the ingest.
    run.bytes = bytes;
    result?;
    let state = FeedState {
        etag: None,
        last_modified: None,
        body_hash: Some(digest.hex()),
    };
    if let Err(e) = store.set_validators(provider, &state) {
        crate::log::error(&format!(
            "cannot record the imported feed's digest: {}",
            crate::log::chain(&e)
        ));
    }
    Ok(())
}

/// Chunks of the file the body digest may run behind the parser.
const TEE_AHEAD: usize = 8;
const TEE_CHUNK: usize = 256 * 1024;

/// Reads a file in chunks and hands each one, shared, to the body digest's
/// thread as well (the chunk is reused once that thread is done with it).
struct TeeReader<R> {
    inner: R,
    chunk: Arc<Vec<u8>>,
    /// `chunk[at..]` is not consumed yet.
    at: usize,
    send: std::sync::mpsc::SyncSender<Arc<Vec<u8>>>,
}

impl<R: Read> Read for TeeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(buf.len());
            buf[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for TeeReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.at == self.chunk.len() {
            let mut next = match Arc::get_mut(&mut self.chunk) {
                Some(v) => std::mem::take(v),
                None => Vec::with_capacity(TEE_CHUNK),
            };
            next.resize(TEE_CHUNK, 0);
            let n = self.inner.read(&mut next)?;
            next.truncate(n);
            self.chunk = Arc::new(next);
            self.at = 0;
            if n > 0 && self.send.send(Arc::clone(&self.chunk)).is_err() {
                return Err(io::Error::other("the body digest's thread ended"));
            }
        }
        Ok(&self.chunk[self.at..])
    }

    fn consume(&mut self, n: usize) {
        self.at = (self.at + n).min(self.chunk.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_between_interval_and_cap() {
        let (i, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let mut top = |d: Duration| d;
        let mut bottom = |_: Duration| Duration::ZERO;
        assert_eq!(next_delay(i, max, 0, None, &mut top), i);
        assert_eq!(
            next_delay(i, max, 1, None, &mut top),
            Duration::from_secs(2)
        );
        assert_eq!(
            next_delay(i, max, 3, None, &mut top),
            Duration::from_secs(8)
        );
        assert_eq!(next_delay(i, max, 30, None, &mut top), max);
        assert_eq!(next_delay(i, max, 30, None, &mut bottom), i);
        // Retry-After is honoured, within the max backoff.
        let ra = Some(Duration::from_secs(30));
        assert_eq!(
            next_delay(i, max, 1, ra, &mut bottom),
            Duration::from_secs(30)
        );
        let ra = Some(Duration::from_secs(3600));
        assert_eq!(next_delay(i, max, 1, ra, &mut bottom), max);
        let mut j = Jitter::new();
        for _ in 0..100 {
            assert!(j.below(Duration::from_millis(5)) <= Duration::from_millis(5));
        }
    }

    #[test]
    fn import_refuses_a_file_over_the_limit_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let feed = dir.path().join("feed.xml");
        std::fs::write(&feed, "<planList><output></output></planList>").unwrap();
        let mut store = Store::open(&dir.path().join("planbox.db")).unwrap();
        let metrics = Metrics::new();
        let mut calls = 0;
        let err = import_file(&mut store, "p", &feed, 10, None, &metrics, &mut |_, _| {
            calls += 1
        })
        .unwrap_err();
        assert_eq!(err.outcome(), Outcome::TooLarge);
        assert_eq!(calls, 0, "nothing was parsed");
        let runs = store.runs(1).unwrap();
        assert_eq!((runs[0].outcome, runs[0].bytes), (Outcome::TooLarge, 0));
        // At the limit exactly, it lands.
        let len = std::fs::metadata(&feed).unwrap().len();
        import_file(&mut store, "p", &feed, len, None, &metrics, &mut |_, _| {}).unwrap();
    }

    #[test]
    fn limited_reader_allows_exactly_the_limit() {
        let mut out = Vec::new();
        Limited::new(&b"12345"[..], 5)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"12345");
        let err = Limited::new(&b"123456"[..], 5)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.get_ref().unwrap().is::<TooLarge>());
    }

    mod pipeline {
        //! The ingest's stages (tag reader, understanding on rayon, writer)
        //! land exactly what one thread reading items in order and landing
        //! them one by one lands: the same rows, digest, counts, skips,
        //! repairs and errors.

        use super::*;
        use crate::model::Window;

        /// A dirty feed of `bases` base plans spanning several batches:
        /// skipped items, zone skips, repairs, an item with more zones than
        /// a raw item holds, empty plan elements, unknown markup, and each
        /// `variant` changing some values.
        fn feed(bases: usize, variant: usize, doctype: bool) -> String {
            let mut x = String::from("<?xml version=\"1.0\"?>\n");
            if doctype {
                x.push_str("<!DOCTYPE planList [<!ENTITY co \"Co &amp; Sons\">]>\n");
            }
            x.push_str("<planList><output>\n");
            for b in 0..bases {
                let mode = if b % 7 == 3 { "offline" } else { "online" };
                let title = match b % 5 {
                    0 => format!("Caf&eacute; {b}"),
                    1 => format!("Rock & roll {b}"),
                    2 if doctype => format!("&co; {b}"),
                    _ => format!("Show {b} v{}", variant * (b % 3)),
                };
                x.push_str(&format!(
                    "<base_plan base_plan_id=\"{b}\" sell_mode=\"{mode}\" title=\"{title}\">"
                ));
                if b % 11 == 0 {
                    x.push_str("<unknown a=\"1\"><plan plan_id=\"x\"/></unknown>");
                }
                for p in 0..2 {
                    let day = 1 + (b * 7 + p + variant) % 28;
                    let start = match (b + p) % 97 {
                        5 => String::new(),
                        6 => "2024-02-30T10:00:00".to_owned(),
                        _ => format!("2024-01-{day:02}T1{p}:00:00"),
                    };
                    let end = if (b + p) % 89 == 4 {
                        "2023-01-01T00:00:00".to_owned()
                    } else {
                        format!("2024-01-{day:02}T2{p}:00:00")
                    };
                    let head = format!(
                        "<plan plan_id=\"{p}\" plan_start_date=\"{start}\" plan_end_date=\"{end}\" sold_out=\"false\""
                    );
                    if b % 13 == 12 && p == 1 {
                        x.push_str(&head);
                        x.push_str("/>");
                        continue;
                    }
                    x.push_str(&head);
                    x.push('>');
                    // One item holds more tags than a raw item may: it is
                    // understood by the reader, part way through.
                    let (zones, name) = if b == bases / 2 {
                        (3000, "Z".repeat(100))
                    } else {
                        (3, "Z".to_owned())
                    };
                    for z in 0..zones {
                        let price = match (b + z + variant) % 41 {
                            0 => "abc".to_owned(),
                            1 => "&pound;3".to_owned(),
                            _ => format!("{}.{}", 5 + (b + z + variant) % 30, z % 10),
                        };
                        x.push_str(&format!(
                            "<zone zone_id=\"{z}\" price=\"{price}\" name=\"{name}\"><x/>t</zone>"
                        ));
                    }
                    x.push_str("</plan>");
                }
                x.push_str("</base_plan>\n");
            }
            x.push_str("</output></planList>\n");
            x
        }

        /// `xml` with bytes that do not decode as UTF-8 in a few items: in
        /// a start tag, in a zone (also inside the item too big to be held
        /// raw, before more zone skips) and in text inside an item.
        fn damaged(xml: String) -> Vec<u8> {
            let places = [
                ("sold_out=\"f", 40),
                ("name=\"Z", 300),
                ("name=\"ZZZZZZZZZZ", 2500),
                ("<x/>t", 700),
            ]
            .map(|(pattern, nth)| {
                let (at, _) = xml.match_indices(pattern).nth(nth).unwrap();
                at + pattern.len() - 1
            });
            let mut xml = xml.into_bytes();
            for at in places {
                xml[at] = 0xFF;
            }
            xml
        }

        /// What one thread lands reading the items in order.
        fn land_in_order(
            store: &mut Store,
            xml: &[u8],
        ) -> (PlanCounts, BTreeMap<String, u64>, BTreeMap<String, u64>) {
            let mut reader = FeedReader::new(xml);
            let mut tx = store.begin_ingest(DEFAULT_PROVIDER).unwrap();
            let mut skipped = BTreeMap::new();
            while let Some(item) = reader.next_item().unwrap() {
                match item {
                    FeedItem::Plan(plan) => tx.upsert(&plan).unwrap(),
                    FeedItem::Skipped(skip) => {
                        *skipped.entry(skip.reason.as_str().to_owned()).or_default() += 1
                    }
                }
            }
            let repaired = reader
                .repairs()
                .map(|(r, n)| (r.as_str().to_owned(), n))
                .collect();
            let counts = tx.commit(&new_run(DEFAULT_PROVIDER, "t"), None).unwrap();
            (counts, skipped, repaired)
        }

        fn land_pipelined(store: &mut Store, xml: &[u8]) -> Result<FetchRun, IngestError> {
            let mut run = new_run(DEFAULT_PROVIDER, "t");
            let opts = IngestOptions {
                state: None,
                started: Instant::now(),
                stop: None,
                progress: &mut |_| {},
                charset: None,
            };
            ingest(store, DEFAULT_PROVIDER, xml, &mut run, opts)?;
            Ok(run)
        }

        use crate::model::DEFAULT_PROVIDER;

        #[test]
        fn the_stages_land_exactly_what_reading_in_order_lands() {
            for doctype in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let mut piped = Store::open(&dir.path().join("a.db")).unwrap();
                let mut ordered = Store::open(&dir.path().join("b.db")).unwrap();
                // New plans, then changed ones (and unchanged ones), then
                // the first feed again.
                for variant in [0, 1, 0] {
                    let xml = damaged(feed(1500, variant, doctype));
                    let run = land_pipelined(&mut piped, &xml).unwrap();
                    let (counts, skipped, repaired) = land_in_order(&mut ordered, &xml);
                    assert_eq!(run.counts, counts);
                    assert_eq!(run.skipped, skipped);
                    assert_eq!(run.repaired, repaired);
                    assert!(counts.plans_seen > 2800, "{counts:?}");
                    assert!(skipped["zone_invalid_price"] > 0 && skipped["missing_start"] > 0);
                    assert!(repaired["html_entity"] > 0 && repaired["bare_ampersand"] > 0);
                    assert!(skipped["undecodable_text"] > 3, "{skipped:?}");
                    let (a, b) = (piped.version().unwrap(), ordered.version().unwrap());
                    assert_eq!((a.content, a.searchable), (b.content, b.searchable));
                    let window = Window::default();
                    assert_eq!(
                        piped.search(&window).unwrap(),
                        ordered.search(&window).unwrap()
                    );
                }
            }
        }

        /// The error of reading `xml` in order.
        fn first_error(xml: &str) -> String {
            let mut reader = FeedReader::new(xml.as_bytes());
            loop {
                match reader.next_item() {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("the feed parsed: {xml}"),
                    Err(e) => return e.to_string(),
                }
            }
        }

        #[test]
        fn a_malformed_attribute_late_in_the_feed_fails_it_whole_with_the_readers_error() {
            let good = feed(1500, 0, false);
            // In the last base plan's first zone, then a structural error
            // after it: the attribute comes first, as when read in order.
            let at = good.rfind("<zone zone_id=\"0\"").unwrap();
            let mut bad = good.clone();
            bad.insert_str(at + "<zone".len(), " price=\"1\"");
            bad = bad.replacen("</output></planList>", "</output></nope>", 1);
            let want = first_error(&bad);
            assert!(want.contains("the same attribute appears twice"), "{want}");
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(&dir.path().join("a.db")).unwrap();
            land_pipelined(&mut store, feed(10, 0, false).as_bytes()).unwrap();
            let before = store.version().unwrap();
            let err = land_pipelined(&mut store, bad.as_bytes()).unwrap_err();
            assert_eq!(err.to_string(), want);
            assert_eq!(store.version().unwrap(), before, "nothing landed");
            // The open item's own attribute comes before a reader error at
            // its next tag, too.
            let tag_end = at + bad[at..].find('>').unwrap() + 1;
            let cut = bad[..tag_end].to_owned() + "<zone <";
            let want = first_error(&cut);
            assert!(want.contains("the same attribute appears twice"), "{want}");
            assert_eq!(
                land_pipelined(&mut store, cut.as_bytes())
                    .unwrap_err()
                    .to_string(),
                want
            );
        }

        #[test]
        fn a_stop_between_batches_lands_nothing() {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(&dir.path().join("a.db")).unwrap();
            let before = store.version().unwrap();
            let stop = Stop::new();
            let mut run = new_run(DEFAULT_PROVIDER, "t");
            let xml = feed(3000, 0, false);
            let opts = IngestOptions {
                state: None,
                started: Instant::now(),
                stop: Some(&stop),
                progress: &mut |_| stop.stop(),
                charset: None,
            };
            let err = ingest(&mut store, DEFAULT_PROVIDER, xml.as_bytes(), &mut run, opts);
            assert!(matches!(err, Err(IngestError::Interrupted)));
            assert_eq!(store.version().unwrap(), before);
        }
    }

    mod model {
        //! Generated valid feeds land in a store exactly as a simple model
        //! says: a plan is searchable once seen online (sticky), and shows
        //! the values of the latest occurrence.

        use super::*;
        use crate::model::{plan_uuid, Window, DEFAULT_PROVIDER};
        use proptest::prelude::*;
        use std::collections::HashMap;

        #[derive(Clone, Debug)]
        struct Plan {
            id: u8,
            day: u8,
            hours: Option<u8>,
            prices: Vec<&'static str>,
        }

        #[derive(Clone, Debug)]
        struct Base {
            id: u8,
            online: bool,
            variant: u8,
            plans: Vec<Plan>,
        }

        const PRICES: [&str; 6] = ["5", "10.50", "7.25", "99.9", "abc", "-3"];

        fn plan() -> impl Strategy<Value = Plan> {
            (
                0u8..4,
                1u8..28,
                proptest::option::of(1u8..6),
                proptest::collection::vec(proptest::sample::select(&PRICES[..]), 0..4),
            )
                .prop_map(|(id, day, hours, prices)| Plan {
                    id,
                    day,
                    hours,
                    prices,
                })
        }

        fn feed() -> impl Strategy<Value = Vec<Base>> {
            proptest::collection::vec(
                (
                    0u8..4,
                    any::<bool>(),
                    0u8..3,
                    proptest::collection::vec(plan(), 0..4),
                ),
                0..5,
            )
            .prop_map(|bases| {
                bases
                    .into_iter()
                    .map(|(id, online, variant, plans)| Base {
                        id,
                        online,
                        variant,
                        plans,
                    })
                    .collect()
            })
        }

        fn render(feed: &[Base]) -> String {
            let mut x = String::from("<?xml version=\"1.0\"?><planList><output>");
            for b in feed {
                let mode = if b.online { "online" } else { "offline" };
                x += &format!(
                    "<base_plan base_plan_id=\"{}\" sell_mode=\"{mode}\" title=\"T{}v{}\">",
                    b.id, b.id, b.variant
                );
                for p in &b.plans {
                    let end = p.hours.map_or(String::new(), |h| {
                        format!(
                            " plan_end_date=\"2024-01-{:02}T{:02}:00:00\"",
                            p.day,
                            12 + h
                        )
                    });
                    x += &format!(
                        "<plan plan_id=\"{}\" plan_start_date=\"2024-01-{:02}T12:00:00\"{end}>",
                        p.id, p.day
                    );
                    for (z, price) in p.prices.iter().enumerate() {
                        x += &format!("<zone zone_id=\"{z}\" capacity=\"1\" price=\"{price}\"/>");
                    }
                    x += "</plan>";
                }
                x += "</base_plan>";
            }
            x + "</output></planList>"
        }

        /// The model's event for a plan, as the API's JSON value.
        fn event(b: &Base, p: &Plan) -> serde_json::Value {
            let usable: Vec<f64> = p
                .prices
                .iter()
                .filter_map(|s| s.parse::<f64>().ok())
                .filter(|v| *v >= 0.0)
                .collect();
            let min = usable.iter().cloned().reduce(f64::min);
            let max = usable.iter().cloned().reduce(f64::max);
            serde_json::json!({
                "id": plan_uuid(DEFAULT_PROVIDER, &b.id.to_string(), &p.id.to_string()).to_string(),
                "title": format!("T{}v{}", b.id, b.variant),
                "start_date": format!("2024-01-{:02}", p.day),
                "start_time": "12:00:00",
                "end_date": p.hours.map(|_| format!("2024-01-{:02}", p.day)),
                "end_time": p.hours.map(|h| format!("{:02}:00:00", 12 + h)),
                "min_price": min,
                "max_price": max,
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            #[test]
            fn generated_feeds_land_as_the_model_says(feeds in proptest::collection::vec(feed(), 1..4)) {
                let dir = tempfile::tempdir().unwrap();
                let mut store = Store::open(&dir.path().join("p.db")).unwrap();
                // (base, plan) -> (ever online, latest event)
                let mut model: HashMap<(u8, u8), (bool, serde_json::Value)> = HashMap::new();
                for f in &feeds {
                    let mut run = new_run("provider", "prop");
                    let opts = IngestOptions { state: None, started: Instant::now(), stop: None, progress: &mut |_| {}, charset: None };
                    let xml = render(f);
                    ingest(&mut store, DEFAULT_PROVIDER, xml.as_bytes(), &mut run, opts)
                        .map_err(|e| TestCaseError::fail(format!("{e}: {xml}")))?;
                    for b in f {
                        for p in &b.plans {
                            let e = model.entry((b.id, p.id)).or_insert((false, serde_json::Value::Null));
                            *e = (e.0 || b.online, event(b, p));
                        }
                    }
                }
                let body = store.search(&Window::default()).unwrap();
                let got: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let mut got: Vec<serde_json::Value> = got["data"]["events"].as_array().unwrap().clone();
                let mut want: Vec<serde_json::Value> = model.into_values().filter(|(on, _)| *on).map(|(_, e)| e).collect();
                // Prices compare as numbers (their exact text is tested elsewhere).
                for e in &mut got {
                    for k in ["min_price", "max_price"] {
                        e[k] = e[k].as_f64().map_or(serde_json::Value::Null, serde_json::Value::from);
                    }
                }
                let key = |v: &serde_json::Value| v["id"].as_str().unwrap().to_owned();
                got.sort_by_key(key);
                want.sort_by_key(key);
                prop_assert_eq!(got, want);
            }
        }
    }
}
