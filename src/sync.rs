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
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::feed::{FeedItem, FeedReader, ParseError, Skip};
use crate::fetch::{self, FetchConfig, FetchError, Fetched, Validators};
use crate::metrics::Metrics;
use crate::model::{FetchRun, Outcome, PlanCounts};
use crate::service::ServiceInfo;
use crate::stop::Stop;
use crate::store::{FeedState, Store, StoreError};

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
    // The parser runs on its own thread, a few batches ahead of the single
    // writer: parsing and SQLite each take a core instead of taking turns
    // (memory: at most PARSE_AHEAD batches of PARSE_BATCH items).
    let (position, repaired) = std::thread::scope(|scope| {
        let (send, batches) = std::sync::mpsc::sync_channel::<(Vec<FeedItem>, u64)>(PARSE_AHEAD);
        let parser = std::thread::Builder::new()
            .name("planbox-parse".into())
            .spawn_scoped(scope, move || -> Result<Parsed, ParseError> {
                let mut feed = FeedReader::with_charset(reader, charset);
                let mut batch = Vec::with_capacity(PARSE_BATCH);
                while let Some(item) = feed.next_item()? {
                    batch.push(item);
                    if batch.len() == PARSE_BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(PARSE_BATCH));
                        if send.send((full, feed.position())).is_err() {
                            // The writer gave up; its error is the answer.
                            return Ok(Parsed::default());
                        }
                    }
                }
                let _ = send.send((batch, feed.position()));
                Ok(Parsed {
                    position: feed.position(),
                    repaired: feed
                        .repairs()
                        .map(|(reason, n)| (reason.as_str().to_owned(), n))
                        .collect(),
                })
            })
            .map_err(|e| IngestError::Parse(ParseError::Io(e)))?;
        let mut write = || -> Result<(), IngestError> {
            for (items, position) in &batches {
                if stop.is_some_and(Stop::is_stopped) {
                    return Err(IngestError::Interrupted);
                }
                for item in items {
                    match item {
                        FeedItem::Plan(plan) => tx.upsert(&plan)?,
                        FeedItem::Skipped(skip) => {
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
        // Unblocks a parser waiting to send, so it ends.
        drop(batches);
        let parsed = parser
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        written?;
        let parsed = parsed?;
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

/// Items the parser hands the writer at a time, and how many such batches
/// may wait: the parser runs at most this far ahead.
const PARSE_BATCH: usize = 1024;
const PARSE_AHEAD: usize = 4;

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
    let mut hasher = HashingReader {
        inner: Limited::new(file, max_bytes),
        digest: crate::digest::Digest::new(),
        bytes: 0,
    };
    let reader = BufReader::with_capacity(256 * 1024, &mut hasher);
    // The digest is only known once the whole file was read; the journal
    // still gets it, through the feed state written after the ingest.
    let result = ingest(store, provider, reader, run, opts);
    run.bytes = hasher.bytes;
    result?;
    let state = FeedState {
        etag: None,
        last_modified: None,
        body_hash: Some(hasher.digest.hex()),
    };
    if let Err(e) = store.set_validators(provider, &state) {
        crate::log::error(&format!(
            "cannot record the imported feed's digest: {}",
            crate::log::chain(&e)
        ));
    }
    Ok(())
}

struct HashingReader<R> {
    inner: R,
    digest: crate::digest::Digest,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
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
