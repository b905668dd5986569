//! The SQLite store: all SQL lives here.
//!
//! Owns the schema (through the refinery migrations in `migrations/`), the
//! single-writer ingest transaction, the fetch journal and the read path of
//! `/search`. Invariants:
//! - one fetch or import is one transaction: callers either `commit` an
//!   [`Ingest`] or drop it, and a dropped ingest changes nothing;
//! - nothing is ever deleted from `plans`; `ever_online` never goes back to 0;
//! - a plan row is rewritten only when its content hash changes;
//! - `meta.generation` grows in every commit that changes what a search can
//!   return, and only then.
//!
//! This module must not know about HTTP, XML or the network, and it must not
//! hold a write transaction open while waiting on anything but SQLite.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::model::{
    local_seconds, plan_uuid, FeedPlan, FetchRun, Outcome, PlanCounts, ProviderWindow, Window,
};
pub use crate::model::{Position, SearchQuery};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// `PRAGMA application_id` of a planbox store ("PLBX").
pub const APPLICATION_ID: i32 = 0x504c_4258;

/// How many journal rows are kept.
pub const JOURNAL_LIMIT: i64 = 10_000;

/// How long a writer waits for another writer (e.g. `import` while `serve`
/// ingests) before failing with [`StoreError::Busy`].
const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(60);
const READER_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: not a planbox store ({reason}); refusing to touch it")]
    Foreign { path: PathBuf, reason: String },
    #[error("{path}: the store is damaged ({detail}); restore it from a backup")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path}: cannot open the store: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("store is busy: another planbox process held the write lock for too long")]
    Busy,
    #[error("migrating the store failed: {0}")]
    Migration(String),
    #[error("store error: {0}")]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Busy
            }
            _ => StoreError::Sqlite(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The writable store. There is one per process; SQLite's lock makes it one
/// writer per file at a time across processes too.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// Counts shown on the status page and in metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreCounts {
    pub plans_stored: u64,
    pub plans_searchable: u64,
}

/// What the last successful fetch of a provider told us.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedState {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub body_hash: Option<String>,
}

fn open_conn(path: &Path, flags: OpenFlags) -> Result<Connection> {
    Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })
}

/// Classifies the errors SQLite gives for a file that is not a database or
/// is damaged into the typed errors operators can act on.
fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => StoreError::Foreign {
            path: path.to_owned(),
            reason: "the file is not an SQLite database".into(),
        },
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_owned(),
            detail: e.to_string(),
        },
        _ => StoreError::from(e),
    }
}

impl Store {
    /// Opens (creating if absent) and migrates the store at `path`, after
    /// checking that an existing file is a healthy planbox store.
    pub fn open(path: &Path) -> Result<Store> {
        let mut conn = open_conn(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(WRITER_BUSY_TIMEOUT)?;
        check_identity(&conn, path)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| classify(path, e))?;
        // FULL: a commit is on disk before `commit` returns, so a journaled
        // ingest survives power loss too, not only `kill -9`.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let report = embedded::migrations::runner()
            .run(&mut conn)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        if report.applied_migrations().iter().any(|m| m.version() == 4) {
            // V4 copies every plan into new tables and drops the old one:
            // give the space back once (~2 s at 1M plans) rather than
            // carrying a file half free pages.
            let (free, pages): (i64, i64) = conn.query_row(
                "SELECT (SELECT freelist_count FROM pragma_freelist_count),
                        (SELECT page_count FROM pragma_page_count)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if free > pages / 4 {
                conn.execute_batch("VACUUM")?;
            }
        }
        // Written only when it differs: opening a store that needs nothing
        // writes nothing, so a damaged store that `serve` then refuses is
        // left byte-identical.
        let app_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        if app_id != APPLICATION_ID {
            conn.pragma_update(None, "application_id", APPLICATION_ID)?;
        }
        ensure_content_digest(&mut conn)?;
        Ok(Store {
            conn,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `PRAGMA quick_check`: `Ok` when SQLite finds the file sound.
    pub fn quick_check(&self) -> Result<()> {
        integrity(&self.conn, &self.path, "quick_check")
    }

    /// `PRAGMA integrity_check`, the thorough one.
    pub fn integrity_check(&self) -> Result<()> {
        integrity(&self.conn, &self.path, "integrity_check")
    }

    /// Called by `serve` as it takes the store over: returns whether the
    /// last `serve` stopped cleanly (and nothing has written since) and
    /// when the store last passed a full check, and clears the clean-stop
    /// mark, so a crash from now on is seen at the next start. Writes only
    /// when the mark was set.
    pub fn begin_serving(&mut self) -> Result<StartState> {
        let (clean, checked_at): (i64, i64) = self
            .conn
            .query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'clean_stop'),
                        (SELECT value FROM meta WHERE key = 'checked_at')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| classify(&self.path, e))?;
        if clean != 0 {
            self.conn
                .execute("UPDATE meta SET value = 0 WHERE key = 'clean_stop'", [])
                .map_err(|e| classify(&self.path, e))?;
        }
        Ok(StartState {
            was_clean: clean != 0,
            checked_at: (checked_at > 0).then_some(checked_at),
        })
    }

    /// Sets the clean-stop mark: called last by a `serve` that stopped
    /// cleanly (no ingest running, the store not found damaged).
    pub fn mark_clean(&mut self) -> Result<()> {
        self.conn
            .execute("UPDATE meta SET value = 1 WHERE key = 'clean_stop'", [])?;
        Ok(())
    }

    /// Starts the one transaction of an ingest. Waits (up to a minute) for
    /// another process's ingest to finish first.
    pub fn begin_ingest(&mut self, provider: &str) -> Result<Ingest<'_>> {
        // An ingest outside a running serve (`import`, `fetch`) clears the
        // clean-stop mark first, in its own commit: a crash in the middle of
        // it must be seen by the next start. (Under serve it is clear.)
        self.conn.execute(
            "UPDATE meta SET value = 0 WHERE key = 'clean_stop' AND value <> 0",
            [],
        )?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let run_marker: i64 =
            tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM fetch_runs", [], |r| {
                r.get(0)
            })?;
        let known = KnownPlans::load(&tx, provider)?;
        // Rows for `plans_search` wait here (appended in feed order) and
        // land sorted at the end: see `Ingest::flush_searchable`.
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS plans_search_staged
                 (start_at INTEGER NOT NULL, end_at INTEGER NOT NULL, id BLOB NOT NULL,
                  provider TEXT NOT NULL, json TEXT NOT NULL);
             DELETE FROM temp.plans_search_staged;",
        )?;
        Ok(Ingest {
            tx,
            provider: provider.to_owned(),
            run_marker,
            counts: PlanCounts::default(),
            became_searchable: 0,
            digest_delta: 0,
            known,
            staged: 0,
        })
    }

    /// Journals an attempt that did not ingest (or ingested nothing).
    pub fn record_run(&mut self, run: &FetchRun) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        insert_run(&tx, run)?;
        tx.commit()?;
        Ok(())
    }

    pub fn feed_state(&self, provider: &str) -> Result<FeedState> {
        feed_state(&self.conn, provider)
    }

    /// Records conditional-GET validators after a `304` (body unchanged).
    pub fn set_validators(&mut self, provider: &str, state: &FeedState) -> Result<()> {
        upsert_feed_state(&self.conn, provider, state)
    }

    /// The newest `limit` journal rows, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<FetchRun>> {
        runs(&self.conn, limit)
    }

    pub fn counts(&self) -> Result<StoreCounts> {
        counts(&self.conn)
    }

    pub fn generation(&self) -> Result<u64> {
        generation(&self.conn)
    }

    /// The search body for `window` (same bytes as `GET /search`), in
    /// memory: for tests and small windows.
    pub fn search(&self, window: &Window) -> Result<Vec<u8>> {
        self.stream(&SearchQuery::from(*window), |_, r| {
            let mut body = Vec::new();
            r.read_to_end(&mut body).map(|_| body)
        })?
        .map_err(io_to_store)
    }

    /// Streams the answer to `q` from one read snapshot (see
    /// [`Reader::stream`]).
    pub fn stream<T>(
        &self,
        q: &SearchQuery,
        f: impl FnOnce(&Snapshot, &mut dyn Read) -> T,
    ) -> Result<T> {
        let tx = self.conn.unchecked_transaction()?;
        let out = stream_search(&tx, q, f)?;
        tx.finish()?;
        Ok(out)
    }

    /// Generation, content digest and searchable count.
    pub fn version(&self) -> Result<DataVersion> {
        data_version(&self.conn)
    }

    /// A consistent online copy of the store at `dest` (which must not
    /// exist), verified with `integrity_check` before this returns.
    pub fn backup_to(&self, dest: &Path) -> Result<()> {
        if dest.exists() {
            return Err(StoreError::Foreign {
                path: dest.to_owned(),
                reason: "the destination exists; backup never overwrites".into(),
            });
        }
        let dest_str = dest.to_string_lossy();
        self.conn.execute("VACUUM INTO ?1", [dest_str.as_ref()])?;
        let copy = open_conn(dest, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        integrity(&copy, dest, "integrity_check")?;
        Ok(())
    }

    /// Moves every commit from the write-ahead log into the store file at
    /// `path` and empties the log (`PRAGMA wal_checkpoint(TRUNCATE)`), on a
    /// connection of its own, waiting at most `wait` for a reader or writer
    /// still in a transaction. `serve` calls it last, once its own
    /// connections are closed: when the call closes the last connection,
    /// SQLite also deletes the `-wal` and `-shm` files. `Ok(true)`: the store
    /// file alone holds every commit (a reader still open may have kept the
    /// log from being emptied); `Ok(false)`: a busy writer or an old reader
    /// kept part of the log out of it (the log stays valid and is applied on
    /// the next open).
    pub fn checkpoint(path: &Path, wait: Duration) -> Result<bool> {
        let conn = open_conn(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(wait)?;
        // (busy, frames in the log, frames now in the store file); both
        // counts are -1 when the store is not in WAL mode.
        let (_busy, log, done): (i64, i64, i64) =
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        Ok(log == done)
    }
}

/// What `serve` learns about a store as it starts ([`Store::begin_serving`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartState {
    /// The last `serve` stopped cleanly and nothing wrote since.
    pub was_clean: bool,
    /// Unix seconds of the last integrity check that passed.
    pub checked_at: Option<i64>,
}

/// The result of [`check_integrity`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    Sound,
    /// SQLite's findings, `; `-joined (bounded).
    Damaged(String),
    /// `pace` asked to stop.
    Interrupted,
}

/// `PRAGMA integrity_check` on its own read-only connection (one read
/// transaction: a WAL snapshot, so ingests go on meanwhile). `pace` is
/// called every few hundred B-tree steps; it may sleep to throttle the
/// check and returns false to interrupt it. The store has no secondary
/// index, so the thorough check costs what `quick_check` costs.
pub fn check_integrity(
    path: &Path,
    pace: impl FnMut() -> bool + Send + 'static,
) -> Result<CheckOutcome> {
    let conn = open_conn(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(READER_BUSY_TIMEOUT)?;
    let mut pace = pace;
    conn.progress_handler(200, Some(move || !pace()));
    let result = integrity(&conn, path, "integrity_check(100)");
    conn.progress_handler(200, None::<fn() -> bool>);
    match result {
        Ok(()) => Ok(CheckOutcome::Sound),
        Err(StoreError::Corrupt { detail, .. }) => Ok(CheckOutcome::Damaged(detail)),
        Err(StoreError::Sqlite(e))
            if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) =>
        {
            Ok(CheckOutcome::Interrupted)
        }
        Err(e) => Err(e),
    }
}

/// Records a passed check (`checked_at`), through its own short write
/// transaction (waits for a running ingest).
pub fn record_check_passed(path: &Path, at: i64) -> Result<()> {
    let conn = open_conn(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(WRITER_BUSY_TIMEOUT)?;
    conn.execute("UPDATE meta SET value = ?1 WHERE key = 'checked_at'", [at])?;
    Ok(())
}

fn check_identity(conn: &Connection, path: &Path) -> Result<()> {
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| classify(path, e))?;
    if tables > 0 && app_id != APPLICATION_ID {
        return Err(StoreError::Foreign {
            path: path.to_owned(),
            reason: format!(
                "it is an SQLite database of another application (application_id {app_id:#x})"
            ),
        });
    }
    Ok(())
}

fn integrity(conn: &Connection, path: &Path, pragma: &str) -> Result<()> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA {pragma}"))
        .map_err(|e| classify(path, e))?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| classify(path, e))?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: rows.join("; "),
        })
    }
}

/// One ingest in progress: a write transaction. Dropping it rolls back.
pub struct Ingest<'a> {
    tx: rusqlite::Transaction<'a>,
    provider: String,
    run_marker: i64,
    counts: PlanCounts,
    /// Plans that became searchable in this ingest (new and online, or
    /// online for the first time).
    became_searchable: u64,
    /// What this ingest adds to `meta.content_digest` (wrapping).
    digest_delta: u64,
    known: KnownPlans,
    /// Rows in `temp.plans_search_staged`.
    staged: u64,
}

/// `end_at` of a plan without an end (primary-key columns cannot be NULL;
/// the smallest integer keeps such plans first among equal starts).
pub const NO_END: i64 = i64::MIN;

/// Above this many stored plans an ingest does not load [`KnownPlans`]
/// and looks every plan up in `plans` instead: 18 bytes a plan, so the
/// check costs at most 36 MiB of memory whatever the store size.
const KNOWN_PLANS_LIMIT: u64 = 2 << 20;

/// The content hash of every stored plan of one provider, by a 64-bit
/// digest of its identity, sorted: loaded with one sequential read of the
/// provider's rows when an ingest begins, so that an unchanged plan costs a
/// binary search in memory instead of a B-tree lookup in SQLite.
///
/// Only a hint: a hit with an equal content hash means unchanged (the hash
/// covers `online`, and `ever_online` is never below `online`); anything
/// else goes to `plans` by primary key, so identity collisions of the
/// 64-bit digest cost a lookup, never a wrong answer.
struct KnownPlans {
    /// (identity digest, content hash), sorted; empty when not `loaded`.
    entries: Vec<(u64, u64)>,
    /// `dir[b]` is the first entry whose digest's top `bits` bits are >=
    /// `b`: a lookup reads one slot of it and the one or two entries of
    /// its bucket (two cache misses) instead of ~20 steps of a binary search.
    dir: Vec<u32>,
    bits: u32,
    /// False above [`KNOWN_PLANS_LIMIT`]: every plan is looked up.
    loaded: bool,
}

enum Known {
    /// Stored with this content hash.
    Hash(u64),
    /// Not stored when the ingest began.
    Absent,
    /// Not known here: look it up.
    Unknown,
}

fn identity_digest(base_plan_id: &str, plan_id: &str) -> u64 {
    let mut d = crate::digest::Digest::new();
    d.field(base_plan_id.as_bytes());
    d.field(plan_id.as_bytes());
    d.finish()
}

impl KnownPlans {
    fn load(conn: &Connection, provider: &str) -> Result<KnownPlans> {
        let stored = counts(conn)?.plans_stored;
        if stored > KNOWN_PLANS_LIMIT {
            return Ok(KnownPlans::unloaded());
        }
        let mut entries = Vec::with_capacity(stored as usize);
        let mut stmt = conn.prepare_cached(
            "SELECT base_plan_id, plan_id, content_hash FROM plans WHERE provider = ?1",
        )?;
        let mut rows = stmt.query([provider])?;
        while let Some(r) = rows.next()? {
            let base = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
            let plan = r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
            entries.push((identity_digest(base, plan), r.get::<_, i64>(2)? as u64));
        }
        entries.sort_unstable();
        // About two entries a bucket: 2 bytes of directory a plan.
        let bits = (entries.len().max(2) / 2).ilog2().max(1);
        let mut dir = Vec::with_capacity((1 << bits) + 1);
        let mut i = 0;
        for b in 0..=(1u64 << bits) {
            while i < entries.len() && entries[i].0 >> (64 - bits) < b {
                i += 1;
            }
            dir.push(i as u32);
        }
        Ok(KnownPlans {
            entries,
            dir,
            bits,
            loaded: true,
        })
    }

    /// Knows nothing: every plan is looked up in `plans`.
    fn unloaded() -> KnownPlans {
        KnownPlans {
            entries: Vec::new(),
            dir: Vec::new(),
            bits: 0,
            loaded: false,
        }
    }

    fn get(&self, key: u64) -> Known {
        if !self.loaded {
            return Known::Unknown;
        }
        let b = (key >> (64 - self.bits)) as usize;
        let bucket = &self.entries[self.dir[b] as usize..self.dir[b + 1] as usize];
        match bucket.iter().find(|e| e.0 == key) {
            Some(e) => Known::Hash(e.1),
            None => Known::Absent,
        }
    }
}

/// What `plans` holds about one plan.
struct StoredPlan {
    id: [u8; 16],
    start_at: i64,
    end_at: i64,
    ever_online: bool,
    content_hash: u64,
    /// The run that last wrote it (this ingest's `run_marker`: written by
    /// this ingest, so its search row may still be staged).
    changed_run: i64,
}

impl Ingest<'_> {
    /// Lands one plan: inserts it, rewrites it if its values changed, or
    /// leaves it alone. `ever_online` only ever turns on.
    pub fn upsert(&mut self, plan: &FeedPlan) -> Result<()> {
        self.counts.plans_seen += 1;
        let hash = plan.content_hash();
        match self
            .known
            .get(identity_digest(&plan.base_plan_id, &plan.plan_id))
        {
            Known::Hash(h) if h == hash => {
                self.counts.plans_unchanged += 1;
                return Ok(());
            }
            // A plan listed twice in one feed is absent here the second
            // time too: the insert sees the first one and it is looked up.
            Known::Absent if self.insert_new(plan, hash)? => return Ok(()),
            _ => {}
        }
        match self.stored(plan)? {
            None => {
                let inserted = self.insert_new(plan, hash)?;
                debug_assert!(inserted);
                Ok(())
            }
            Some(old) if old.content_hash == hash => {
                self.counts.plans_unchanged += 1;
                Ok(())
            }
            Some(old) => self.update(plan, hash, &old),
        }
    }

    fn stored(&self, plan: &FeedPlan) -> Result<Option<StoredPlan>> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT id, start_at, end_at, ever_online, content_hash, changed_run FROM plans
                 WHERE provider = ?1 AND base_plan_id = ?2 AND plan_id = ?3",
            )?
            .query_row(
                params![self.provider, plan.base_plan_id, plan.plan_id],
                |r| {
                    let mut id = [0u8; 16];
                    let blob = r.get_ref(0)?.as_blob()?;
                    if blob.len() == 16 {
                        id.copy_from_slice(blob);
                    }
                    Ok(StoredPlan {
                        id,
                        start_at: r.get(1)?,
                        end_at: r.get(2)?,
                        ever_online: r.get(3)?,
                        content_hash: r.get::<_, i64>(4)? as u64,
                        changed_run: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// Inserts a plan that was not stored; false (and nothing written) when
    /// it is stored after all (listed twice in this feed).
    fn insert_new(&mut self, plan: &FeedPlan, hash: u64) -> Result<bool> {
        let uuid = plan_uuid(&self.provider, &plan.base_plan_id, &plan.plan_id);
        let (start_at, end_at) = plan_times(plan);
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT INTO plans (provider, base_plan_id, plan_id, id, start_at, end_at,
                     online, ever_online, content_hash, first_seen_run, changed_run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?9)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                self.provider,
                plan.base_plan_id,
                plan.plan_id,
                uuid.as_bytes(),
                start_at,
                end_at,
                plan.online,
                hash as i64,
                self.run_marker,
            ])?;
        if inserted == 0 {
            return Ok(false);
        }
        self.counts.plans_new += 1;
        if plan.online {
            self.became_searchable += 1;
            self.digest_delta = self
                .digest_delta
                .wrapping_add(plan_term_of(&uuid, hash as i64));
            self.insert_searchable(plan, &uuid)?;
        }
        Ok(true)
    }

    /// Stages the plan's search row; it lands in `flush_searchable`.
    fn insert_searchable(&mut self, plan: &FeedPlan, uuid: &uuid::Uuid) -> Result<()> {
        let (start_at, end_at) = plan_times(plan);
        self.tx
            .prepare_cached(
                "INSERT INTO temp.plans_search_staged (start_at, end_at, id, provider, json)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                start_at,
                end_at,
                uuid.as_bytes(),
                self.provider,
                plan.event_summary_json(uuid)
            ])?;
        self.staged += 1;
        Ok(())
    }

    /// Lands the staged search rows in key order. Rows inserted one by one
    /// in feed order would each hit a random page of `plans_search` (start
    /// times are in no order in a feed), and with a bounded page cache
    /// every such page is read back and written again: sorted, the inserts
    /// walk the B-tree once, front to back. A staged row replaces a row
    /// with the same key (a plan whose rendering changed but not its times).
    fn flush_searchable(&mut self) -> Result<()> {
        if self.staged == 0 {
            return Ok(());
        }
        self.tx.execute_batch(
            "INSERT OR REPLACE INTO plans_search (start_at, end_at, id, provider, json)
                 SELECT start_at, end_at, id, provider, json FROM temp.plans_search_staged
                 ORDER BY start_at, end_at, id;
             DELETE FROM temp.plans_search_staged;",
        )?;
        self.staged = 0;
        Ok(())
    }

    /// Rewrites a stored plan whose content hash changed.
    fn update(&mut self, plan: &FeedPlan, hash: u64, old: &StoredPlan) -> Result<()> {
        self.counts.plans_updated += 1;
        let ever_online = old.ever_online || plan.online;
        let (start_at, end_at) = plan_times(plan);
        self.tx
            .prepare_cached(
                "UPDATE plans SET start_at = ?4, end_at = ?5, online = ?6, ever_online = ?7,
                     content_hash = ?8, changed_run = ?9
                 WHERE provider = ?1 AND base_plan_id = ?2 AND plan_id = ?3",
            )?
            .execute(params![
                self.provider,
                plan.base_plan_id,
                plan.plan_id,
                start_at,
                end_at,
                plan.online,
                ever_online,
                hash as i64,
                self.run_marker,
            ])?;
        if !ever_online {
            return Ok(());
        }
        let uuid = uuid::Uuid::from_bytes(old.id);
        // The content digest covers searchable plans: the old term leaves
        // with the old values, the new one comes with the new.
        if old.ever_online {
            self.digest_delta = self
                .digest_delta
                .wrapping_sub(plan_term_of(&uuid, old.content_hash as i64));
        }
        self.digest_delta = self
            .digest_delta
            .wrapping_add(plan_term_of(&uuid, hash as i64));
        if !old.ever_online {
            self.became_searchable += 1;
            return self.insert_searchable(plan, &uuid);
        }
        if old.changed_run == self.run_marker {
            // Listed earlier in this feed with other values: its search row
            // may be staged, so land the staged rows before touching it.
            self.flush_searchable()?;
        }
        if (old.start_at, old.end_at) != (start_at, end_at) {
            self.tx
                .prepare_cached(
                    "DELETE FROM plans_search WHERE start_at = ?1 AND end_at = ?2 AND id = ?3",
                )?
                .execute(params![old.start_at, old.end_at, &old.id[..]])?;
        }
        // Same times: the staged row replaces the old one.
        self.insert_searchable(plan, &uuid)
    }

    pub fn counts(&self) -> PlanCounts {
        self.counts
    }

    /// Commits the ingest together with its journal row and the provider's
    /// new feed state, as one transaction.
    pub fn commit(mut self, run: &FetchRun, state: Option<&FeedState>) -> Result<PlanCounts> {
        self.flush_searchable()?;
        if self.counts.plans_new + self.counts.plans_updated > 0 {
            self.tx.execute(
                "UPDATE meta SET value = value + CASE key
                     WHEN 'generation' THEN 1
                     WHEN 'plans_stored' THEN ?1
                     WHEN 'plans_searchable' THEN ?2 END
                 WHERE key IN ('generation', 'plans_stored', 'plans_searchable')",
                params![self.counts.plans_new as i64, self.became_searchable as i64],
            )?;
            if self.digest_delta != 0 {
                let old = content_digest(&self.tx)?;
                set_content_digest(&self.tx, old.wrapping_add(self.digest_delta))?;
            }
            add_provider_counts(
                &self.tx,
                &self.provider,
                self.counts.plans_new,
                self.became_searchable,
            )?;
        }
        let changed = self.counts.plans_new + self.counts.plans_updated > 0;
        if let Some(state) = state {
            upsert_feed_state(&self.tx, &self.provider, state)?;
        }
        insert_run(&self.tx, run)?;
        self.tx.commit()?;
        if changed {
            LOCAL_CHANGES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(self.counts)
    }
}

/// Commits in this process that changed what a search can return (any
/// store). Readers that cache the data version compare it instead of asking
/// SQLite on every request; changes made by other processes are only seen
/// by asking SQLite.
static LOCAL_CHANGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// See [`LOCAL_CHANGES`]: grows after every commit of this process that
/// bumped a store's generation.
pub fn local_changes() -> u64 {
    LOCAL_CHANGES.load(std::sync::atomic::Ordering::SeqCst)
}

/// A plan's (start_at, end_at) as stored: provider-local seconds, [`NO_END`]
/// for a plan without an end.
fn plan_times(plan: &FeedPlan) -> (i64, i64) {
    (
        local_seconds(&plan.start),
        plan.end.as_ref().map_or(NO_END, local_seconds),
    )
}

fn insert_run(conn: &Connection, run: &FetchRun) -> Result<()> {
    let skipped = serde_json::to_string(&run.skipped).unwrap_or_else(|_| "{}".into());
    let repaired = serde_json::to_string(&run.repaired).unwrap_or_else(|_| "{}".into());
    conn.prepare_cached(
        "INSERT INTO fetch_runs (started_at, duration_ms, source, outcome, http_status, bytes,
             plans_seen, plans_new, plans_updated, plans_unchanged, skipped, error, repaired,
             provider)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        run.started_at,
        run.duration_ms as i64,
        run.source,
        run.outcome.as_str(),
        run.http_status,
        run.bytes as i64,
        run.counts.plans_seen as i64,
        run.counts.plans_new as i64,
        run.counts.plans_updated as i64,
        run.counts.plans_unchanged as i64,
        skipped,
        run.error,
        repaired,
        run.provider,
    ])?;
    conn.prepare_cached(
        "DELETE FROM fetch_runs WHERE id <= (SELECT MAX(id) FROM fetch_runs) - ?1",
    )?
    .execute([JOURNAL_LIMIT])?;
    Ok(())
}

fn upsert_feed_state(conn: &Connection, provider: &str, s: &FeedState) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO feed_state (provider, etag, last_modified, body_hash) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (provider) DO UPDATE SET etag = excluded.etag,
             last_modified = excluded.last_modified,
             body_hash = COALESCE(excluded.body_hash, feed_state.body_hash)",
    )?
    .execute(params![provider, s.etag, s.last_modified, s.body_hash])?;
    Ok(())
}

fn feed_state(conn: &Connection, provider: &str) -> Result<FeedState> {
    Ok(conn
        .prepare_cached(
            "SELECT etag, last_modified, body_hash FROM feed_state WHERE provider = ?1",
        )?
        .query_row([provider], |r| {
            Ok(FeedState {
                etag: r.get(0)?,
                last_modified: r.get(1)?,
                body_hash: r.get(2)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

fn runs(conn: &Connection, limit: usize) -> Result<Vec<FetchRun>> {
    runs_where(conn, None, limit)
}

/// The newest `limit` runs, of one provider when `provider` is given.
fn runs_where(conn: &Connection, provider: Option<&str>, limit: usize) -> Result<Vec<FetchRun>> {
    let mut stmt = conn.prepare_cached(
        "SELECT started_at, duration_ms, source, outcome, http_status, bytes, plans_seen,
                plans_new, plans_updated, plans_unchanged, skipped, error, repaired, provider
         FROM fetch_runs WHERE ?2 IS NULL OR provider = ?2 ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![limit as i64, provider], |r| {
        let outcome: String = r.get(3)?;
        let skipped: String = r.get(10)?;
        let repaired: String = r.get(12)?;
        Ok(FetchRun {
            started_at: r.get(0)?,
            duration_ms: r.get::<_, i64>(1)?.max(0) as u64,
            source: r.get(2)?,
            outcome: Outcome::parse(&outcome).unwrap_or(Outcome::NetworkError),
            http_status: r.get(4)?,
            bytes: r.get::<_, i64>(5)?.max(0) as u64,
            counts: PlanCounts {
                plans_seen: r.get::<_, i64>(6)?.max(0) as u64,
                plans_new: r.get::<_, i64>(7)?.max(0) as u64,
                plans_updated: r.get::<_, i64>(8)?.max(0) as u64,
                plans_unchanged: r.get::<_, i64>(9)?.max(0) as u64,
            },
            skipped: serde_json::from_str::<BTreeMap<String, u64>>(&skipped).unwrap_or_default(),
            error: r.get(11)?,
            repaired: serde_json::from_str::<BTreeMap<String, u64>>(&repaired).unwrap_or_default(),
            provider: r.get(13)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn counts(conn: &Connection) -> Result<StoreCounts> {
    // Counters kept by every ingest (migration V2): this runs at start, after
    // every fetch and on every `/metrics` scrape, and must not scan.
    Ok(conn
        .prepare_cached(
            "SELECT (SELECT value FROM meta WHERE key = 'plans_stored'),
                (SELECT value FROM meta WHERE key = 'plans_searchable')",
        )?
        .query_row([], |r| {
            Ok(StoreCounts {
                plans_stored: r.get::<_, i64>(0)?.max(0) as u64,
                plans_searchable: r.get::<_, i64>(1)?.max(0) as u64,
            })
        })?)
}

fn generation(conn: &Connection) -> Result<u64> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'generation'")?
        .query_row([], |r| r.get::<_, i64>(0))?
        .max(0) as u64)
}

/// What a search can see of the store, read in one statement (so from one
/// snapshot when inside a read transaction).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DataVersion {
    /// Grows with every commit that changes what a search can return; local
    /// to this file (a fresh replica counts from 0).
    pub generation: u64,
    /// `meta.content_digest`: equal on stores holding the same searchable
    /// plans, whatever the order or the number of fetches that landed them.
    pub content: u64,
    pub searchable: u64,
}

fn data_version(conn: &Connection) -> Result<DataVersion> {
    let (generation, content, searchable) = conn
        .prepare_cached(
            "SELECT (SELECT value FROM meta WHERE key = 'generation'),
                (SELECT value FROM meta WHERE key = 'content_digest'),
                (SELECT value FROM meta WHERE key = 'plans_searchable')",
        )?
        .query_row([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
    let content = content.ok_or_else(|| {
        StoreError::Migration(
            "the store's content digest is missing; open it read-write once".into(),
        )
    })?;
    Ok(DataVersion {
        generation: generation.max(0) as u64,
        content: content as u64,
        searchable: searchable.max(0) as u64,
    })
}

/// One searchable plan's part of `meta.content_digest`.
pub fn plan_term(id: &str, content_hash: i64) -> u64 {
    let mut d = crate::digest::Digest::new();
    d.field(id.as_bytes());
    d.field(&content_hash.to_le_bytes());
    d.finish()
}

/// [`plan_term`] of a plan id held as its 16 bytes (the hyphenated text
/// form is hashed, as stores before the V4 layout did, so digests carried
/// over stay valid).
fn plan_term_of(id: &uuid::Uuid, content_hash: i64) -> u64 {
    plan_term(
        id.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
        content_hash,
    )
}

fn content_digest(conn: &Connection) -> Result<u64> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'content_digest'")?
        .query_row([], |r| r.get::<_, i64>(0))? as u64)
}

fn set_content_digest(conn: &Connection, value: u64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('content_digest', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([value as i64])?;
    Ok(())
}

/// Computes `meta.content_digest` once for a store migrated to V3 that
/// already held searchable plans (the migration cannot: see
/// `migrations/V3__content_digest.sql`). Runs after every migration, so
/// on the V4 layout (ids as 16 bytes): one pass over `plans` (about 1 s
/// per million plans); nothing to do on every later open.
fn ensure_content_digest(conn: &mut Connection) -> Result<()> {
    let present: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'content_digest'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if present.is_some() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut sum = 0u64;
    {
        let mut stmt = tx.prepare("SELECT id, content_hash FROM plans WHERE ever_online = 1")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id =
                uuid::Uuid::from_slice(r.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?)
                    .map_err(|e| StoreError::Migration(format!("a plan id is not a UUID: {e}")))?;
            sum = sum.wrapping_add(plan_term_of(&id, r.get(1)?));
        }
    }
    set_content_digest(&tx, sum)?;
    tx.commit()?;
    Ok(())
}

// ---- The `/search` read ------------------------------------------------
// Everything SQL about answering a search is in this block: one query for
// the rows of a page and one for where the page ends. Both read one range
// of `plans_search`'s primary key (start, end, id), in its order, from an
// optional keyset position. A plan without an end has `end_at` = [`NO_END`],
// first among equal starts; ids are the UUID's 16 bytes, whose order is the
// order of the text form.
//
// Parameters: ?1 lowest start (the window's, or the cursor's if later),
// ?2 highest start and end (i64::MAX when open), ?3 whether `ends_at` was
// given (then a plan without end is left out: since end >= start,
// `start_at <= ends_at` bounds the range), ?4/?5/?6 the cursor's start,
// end ([`NO_END`] for none) and id bytes (all NULL without cursor), ?7
// LIMIT / OFFSET.
macro_rules! search_sql {
    ($columns:literal, $tail:literal) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM plans_search
             WHERE start_at >= ?1 AND start_at <= ?2
               AND (?3 = 0 OR (end_at <= ?2 AND end_at > -9223372036854775808))
               AND (?4 IS NULL OR (start_at, end_at, id) > (?4, ?5, ?6))
             ORDER BY start_at, end_at, id ",
            $tail
        )
    };
}

/// The rows of a page (`?7` = -1: no limit).
const SEARCH_ROWS: &str = search_sql!("json", "LIMIT ?7");
/// The last row of a page and, if any, the one after it (`?7` = limit - 1).
const SEARCH_PAGE_END: &str = search_sql!("start_at, end_at, id", "LIMIT 2 OFFSET ?7");

const ENVELOPE_HEAD: &[u8] = br#"{"data":{"events":["#;
const ENVELOPE_TAIL: &[u8] = br#"]},"error":null}"#;

/// What one read snapshot says about an answer before its first byte.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub version: DataVersion,
    /// Where the next page starts, when `limit` was given and more remain.
    pub next: Option<Position>,
}

fn search_params(q: &SearchQuery, tail: i64) -> [rusqlite::types::Value; 7] {
    use rusqlite::types::Value::{Blob, Integer, Null};
    let w = &q.window;
    let mut lo = w.starts_at.unwrap_or(i64::MIN);
    if let Some(p) = &q.after {
        lo = lo.max(p.start);
    }
    let (c_start, c_end, c_id) = match &q.after {
        Some(p) => (
            Integer(p.start),
            Integer(p.end.unwrap_or(NO_END)),
            // Cursors carry a UUID (checked when parsed); compared as the
            // 16 bytes the table holds.
            Blob(
                uuid::Uuid::parse_str(&p.id)
                    .unwrap_or_default()
                    .as_bytes()
                    .to_vec(),
            ),
        ),
        None => (Null, Null, Null),
    };
    [
        Integer(lo),
        Integer(w.ends_at.unwrap_or(i64::MAX)),
        Integer(i64::from(w.ends_at.is_some())),
        c_start,
        c_end,
        c_id,
        Integer(tail),
    ]
}

/// Reads the snapshot facts and streams the body of `q` from the read
/// transaction `tx` is in: `f` gets them and a reader of the identity body
/// (the upstream envelope around the stored `EventSummary` objects). Memory
/// stays one row plus the caller's buffers, whatever the answer's size.
fn stream_search<T>(
    tx: &Connection,
    q: &SearchQuery,
    f: impl FnOnce(&Snapshot, &mut dyn Read) -> T,
) -> Result<T> {
    if !q.parts.is_empty() {
        return stream_providers(tx, q, f);
    }
    let version = data_version(tx)?;
    let empty = q.window.is_empty();
    let mut next = None;
    if let (Some(limit), false) = (q.limit, empty) {
        let mut stmt = tx.prepare_cached(SEARCH_PAGE_END)?;
        let ends: Vec<Position> = stmt
            .query_map(search_params(q, i64::from(limit.max(1)) - 1), |r| {
                let end: i64 = r.get(1)?;
                let id = uuid::Uuid::from_slice(r.get_ref(2)?.as_blob()?).unwrap_or_default();
                Ok(Position {
                    start: r.get(0)?,
                    end: (end != NO_END).then_some(end),
                    id: id.hyphenated().to_string(),
                })
            })?
            .collect::<Result<_, _>>()?;
        if ends.len() == 2 {
            next = ends.into_iter().next();
        }
    }
    let snapshot = Snapshot { version, next };
    let mut stmt = tx.prepare_cached(SEARCH_ROWS)?;
    let rows = if empty {
        None
    } else {
        Some(stmt.query(search_params(q, q.limit.map_or(-1, i64::from)))?)
    };
    let mut body = RowsBody {
        rows,
        stage: Stage::Head,
        pending: Vec::new(),
        at: 0,
    };
    Ok(f(&snapshot, &mut body))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Head,
    First,
    Rest,
    Done,
}

/// The body of an answer as a `Read` over the rows of a running query.
struct RowsBody<'s> {
    rows: Option<rusqlite::Rows<'s>>,
    stage: Stage,
    /// Bytes of the current piece that did not fit the caller's buffer.
    pending: Vec<u8>,
    at: usize,
}

impl RowsBody<'_> {
    /// The next piece of the body (`,` + row, or the envelope's ends) is
    /// copied into `buf` if it fits whole, else kept in `pending`.
    fn next_piece(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let sep: &[u8] = match self.stage {
            Stage::Head => {
                self.stage = Stage::First;
                return Ok(Some(self.put(buf, &[ENVELOPE_HEAD])));
            }
            Stage::First => b"",
            Stage::Rest => b",",
            Stage::Done => return Ok(None),
        };
        let row = match &mut self.rows {
            Some(rows) => rows.next().map_err(io::Error::other)?,
            None => None,
        };
        let Some(row) = row else {
            self.stage = Stage::Done;
            self.rows = None;
            return Ok(Some(self.put(buf, &[ENVELOPE_TAIL])));
        };
        self.stage = Stage::Rest;
        let json = row
            .get_ref(0)
            .and_then(|v| v.as_bytes().map_err(rusqlite::Error::from))
            .map_err(io::Error::other)?;
        // `put` needs `&mut self` while `json` borrows the rows: copy here.
        if sep.len() + json.len() <= buf.len() {
            buf[..sep.len()].copy_from_slice(sep);
            buf[sep.len()..sep.len() + json.len()].copy_from_slice(json);
            return Ok(Some(sep.len() + json.len()));
        }
        self.pending.clear();
        self.pending.extend_from_slice(sep);
        self.pending.extend_from_slice(json);
        self.at = 0;
        Ok(Some(self.drain(buf)))
    }

    fn put(&mut self, buf: &mut [u8], parts: &[&[u8]]) -> usize {
        self.pending.clear();
        for p in parts {
            self.pending.extend_from_slice(p);
        }
        self.at = 0;
        self.drain(buf)
    }

    fn drain(&mut self, buf: &mut [u8]) -> usize {
        let n = (self.pending.len() - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        n
    }
}

impl Read for RowsBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        if self.at < self.pending.len() {
            n = self.drain(buf);
        }
        while n < buf.len() && self.at >= self.pending.len() {
            match self.next_piece(&mut buf[n..])? {
                Some(k) => n += k,
                None => break,
            }
        }
        Ok(n)
    }
}
// ---- end of the `/search` read -----------------------------------------

/// A read-only connection for one HTTP worker. Reads never wait on an
/// ingest: WAL gives each read transaction the last committed snapshot.
pub struct Reader {
    conn: Connection,
    path: PathBuf,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader> {
        let conn = open_conn(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(READER_BUSY_TIMEOUT)?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(Reader {
            conn,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current data generation (cheap: one row by primary key).
    pub fn generation(&self) -> Result<u64> {
        generation(&self.conn)
    }

    /// Generation, content digest and searchable count, from one snapshot.
    pub fn version(&self) -> Result<DataVersion> {
        data_version(&self.conn)
    }

    /// Streams the answer to `q` from one read transaction (a WAL
    /// snapshot): the version, the next page's position and every row come
    /// from the same state of the store. The snapshot is held until `f`
    /// returns.
    pub fn stream<T>(
        &mut self,
        q: &SearchQuery,
        f: impl FnOnce(&Snapshot, &mut dyn Read) -> T,
    ) -> Result<T> {
        let tx = self.conn.transaction()?;
        let out = stream_search(&tx, q, f)?;
        tx.finish()?;
        Ok(out)
    }

    /// The whole answer in memory (tests and small pages only).
    pub fn search(&mut self, window: &Window) -> Result<Answer> {
        let (generation, body) = self
            .stream(&SearchQuery::from(*window), |s, r| {
                let mut body = Vec::new();
                r.read_to_end(&mut body)
                    .map(|_| (s.version.generation, body))
            })?
            .map_err(io_to_store)?;
        Ok(Answer { generation, body })
    }

    pub fn counts(&self) -> Result<StoreCounts> {
        counts(&self.conn)
    }

    pub fn runs(&self, limit: usize) -> Result<Vec<FetchRun>> {
        runs(&self.conn, limit)
    }

    /// The store is open and migrated (the `/ready` check).
    pub fn ready(&self) -> bool {
        self.generation().is_ok()
    }
}

/// A search answer in memory and the generation of its snapshot.
#[derive(Debug)]
pub struct Answer {
    pub generation: u64,
    pub body: Vec<u8>,
}

/// An I/O error while reading a body back out of SQLite.
fn io_to_store(e: io::Error) -> StoreError {
    match e.into_inner().map(|e| e.downcast::<rusqlite::Error>()) {
        Some(Ok(e)) => StoreError::from(*e),
        Some(Err(e)) => StoreError::Migration(e.to_string()),
        None => StoreError::Migration("read error".into()),
    }
}

// ---- Several providers: the journal per provider, searchable plans per
// provider and month, and scrubbing credentials out of old journal rows.

/// Searchable plans of one provider whose start falls in one month.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonthCount {
    pub provider: String,
    /// `YYYY-MM` of the plans' local start.
    pub month: String,
    pub plans: u64,
}

fn plans_per_month(conn: &Connection) -> Result<Vec<MonthCount>> {
    // Reads the small (provider, start_at) index only, never the rendered
    // plans. Local seconds are seconds of a wall-clock time taken as UTC, so
    // `unixepoch` gives back the local calendar month.
    let mut stmt = conn.prepare_cached(
        "SELECT provider, strftime('%Y-%m', start_at, 'unixepoch') AS month, COUNT(*)
         FROM plans INDEXED BY plans_provider_start WHERE ever_online = 1
         GROUP BY provider, month ORDER BY provider, month",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(MonthCount {
            provider: r.get(0)?,
            month: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            plans: r.get::<_, i64>(2)?.max(0) as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

macro_rules! search_provider_sql {
    ($columns:literal) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM plans_search
             WHERE provider = ?1 AND start_at >= ?2 AND start_at <= ?3
               AND (?4 IS NULL OR (end_at <= ?4 AND end_at > -9223372036854775808))
             ORDER BY start_at, end_at, id"
        )
    };
}

/// One provider's plans in its own local order, for [`stream_providers`].
const SEARCH_PROVIDER: &str = search_provider_sql!("start_at, end_at, id, json");
/// The same, positions only (where the next page starts).
const SEARCH_PROVIDER_KEYS: &str = search_provider_sql!("start_at, end_at, id");

/// A plan on its way into a merged answer, keyed by instants.
struct Merged {
    start: i64,
    /// `i64::MIN` for no end: those sort first, as in one provider's order.
    end: i64,
    id: String,
    /// Empty when only positions are read.
    json: Vec<u8>,
}

impl Merged {
    fn key(&self) -> (i64, i64, &str) {
        (self.start, self.end, &self.id)
    }
}

/// A merged position as a key: no end sorts first.
fn position_key(p: &Position) -> (i64, i64, &str) {
    (p.start, p.end.unwrap_or(i64::MIN), &p.id)
}

/// One provider's rows as a stream ordered by (start instant, end instant,
/// id). Its SQL order (local start, end, id) already orders start instants
/// (see `model::local_to_instant`); only plans sharing a start instant are
/// re-sorted, in a group held in memory. Rows at or before `after` (a
/// merged position) are skipped.
struct ProviderRows<'s> {
    rows: rusqlite::Rows<'s>,
    tz: chrono_tz::Tz,
    group: std::collections::VecDeque<Merged>,
    ahead: Option<Merged>,
    after: Option<&'s Position>,
}

impl ProviderRows<'_> {
    fn read(&mut self) -> Result<Option<Merged>> {
        loop {
            let Some(r) = self.rows.next()? else {
                return Ok(None);
            };
            let start: i64 = r.get(0)?;
            let end: i64 = r.get(1)?;
            let id =
                uuid::Uuid::from_slice(r.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?)
                    .map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            2,
                            rusqlite::types::Type::Blob,
                            e.into(),
                        )
                    })?;
            let m = Merged {
                start: crate::model::local_to_instant(start, self.tz),
                // [`NO_END`] is `i64::MIN`, the merged order's "no end" too.
                end: if end == NO_END {
                    i64::MIN
                } else {
                    crate::model::local_to_instant(end, self.tz)
                },
                id: id.hyphenated().to_string(),
                json: match r.as_ref().column_count() {
                    4 => r
                        .get_ref(3)?
                        .as_bytes()
                        .map_err(rusqlite::Error::from)?
                        .to_vec(),
                    _ => Vec::new(),
                },
            };
            if self.after.is_some_and(|p| m.key() <= position_key(p)) {
                continue;
            }
            return Ok(Some(m));
        }
    }

    /// The next plan of this provider in merged order, without taking it.
    fn head(&mut self) -> Result<Option<&Merged>> {
        if self.group.is_empty() {
            let first = match self.ahead.take() {
                Some(m) => Some(m),
                None => self.read()?,
            };
            if let Some(first) = first {
                let start = first.start;
                self.group.push_back(first);
                while let Some(m) = self.read()? {
                    if m.start != start {
                        self.ahead = Some(m);
                        break;
                    }
                    self.group.push_back(m);
                }
                self.group
                    .make_contiguous()
                    .sort_by(|a, b| (a.end, &a.id).cmp(&(b.end, &b.id)));
            }
        }
        Ok(self.group.front())
    }
}

/// The k-way merge of every provider's stream: the next plan in answer
/// order. Holds one row per provider plus one start-instant group.
struct MergedRows<'s> {
    streams: Vec<ProviderRows<'s>>,
}

impl Iterator for MergedRows<'_> {
    type Item = Result<Merged>;

    fn next(&mut self) -> Option<Result<Merged>> {
        let mut best: Option<(usize, (i64, i64, String))> = None;
        for (i, s) in self.streams.iter_mut().enumerate() {
            match s.head() {
                Ok(Some(m)) => {
                    let (start, end, id) = m.key();
                    if best
                        .as_ref()
                        .is_none_or(|(_, k)| (start, end, id) < (k.0, k.1, k.2.as_str()))
                    {
                        best = Some((i, (start, end, id.to_owned())));
                    }
                }
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
        let (i, _) = best?;
        self.streams[i].group.pop_front().map(Ok)
    }
}

/// The lowest local start of `tz` whose instant can be at or after
/// `instant`: the wall-clock time at `instant`, moved back over a skipped
/// hour that ends there (its times order as the instant the clocks jumped).
fn local_floor(instant: i64, tz: chrono_tz::Tz) -> i64 {
    use chrono::{Offset, TimeZone};
    let Some(utc) = chrono::DateTime::from_timestamp(instant, 0) else {
        return i64::MIN;
    };
    let offset = tz.offset_from_utc_datetime(&utc.naive_utc()).fix();
    let mut lo = instant.saturating_add(i64::from(offset.local_minus_utc()));
    // Gaps are an hour in practice; the longest on record is a day.
    let floor = lo.saturating_sub(26 * 3600);
    while lo > floor && crate::model::local_to_instant(lo - 60, tz) >= instant {
        lo -= 60;
    }
    lo.saturating_sub(60)
}

/// Starts every provider's stream of `q` (its `parts`) on `stmts`.
fn provider_streams<'s>(
    stmts: &'s mut [rusqlite::CachedStatement<'_>],
    q: &'s SearchQuery,
) -> Result<MergedRows<'s>> {
    let parts = q.parts.iter().filter(|p| !p.window.is_empty());
    let mut streams = Vec::with_capacity(q.parts.len());
    for (stmt, p) in stmts.iter_mut().zip(parts) {
        let mut lo = p.window.starts_at.unwrap_or(i64::MIN);
        if let Some(after) = &q.after {
            lo = lo.max(local_floor(after.start, p.tz));
        }
        let hi = p.window.ends_at.unwrap_or(i64::MAX);
        streams.push(ProviderRows {
            rows: stmt.query(params![p.provider, lo, hi, p.window.ends_at])?,
            tz: p.tz,
            group: Default::default(),
            ahead: None,
            after: q.after.as_ref(),
        });
    }
    Ok(MergedRows { streams })
}

/// [`stream_search`] over several providers (`q.parts`): the body is the
/// k-way merge of each provider's rows of the window index, pulled as the
/// caller reads, in the read transaction `tx` is in.
fn stream_providers<T>(
    tx: &Connection,
    q: &SearchQuery,
    f: impl FnOnce(&Snapshot, &mut dyn Read) -> T,
) -> Result<T> {
    let version = data_version(tx)?;
    let live = q.parts.iter().filter(|p| !p.window.is_empty()).count();
    let mut next = None;
    if let Some(limit) = q.limit {
        let mut stmts = (0..live)
            .map(|_| tx.prepare_cached(SEARCH_PROVIDER_KEYS))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut merged = provider_streams(&mut stmts, q)?;
        let mut last = None;
        for _ in 0..limit.max(1) {
            match merged.next().transpose()? {
                Some(m) => last = Some(m),
                None => break,
            }
        }
        if let (Some(m), Some(_)) = (last, merged.next().transpose()?) {
            next = Some(Position {
                start: m.start,
                end: (m.end != i64::MIN).then_some(m.end),
                id: m.id,
            });
        }
    }
    let snapshot = Snapshot { version, next };
    let mut stmts = (0..live)
        .map(|_| tx.prepare_cached(SEARCH_PROVIDER))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let merged = provider_streams(&mut stmts, q)?;
    let mut body = MergedBody {
        rows: merged,
        left: q.limit.map_or(u64::MAX, u64::from),
        stage: Stage::Head,
        pending: Vec::new(),
        at: 0,
    };
    Ok(f(&snapshot, &mut body))
}

/// The body of a merged answer as a `Read` (cf. [`RowsBody`]).
struct MergedBody<'s> {
    rows: MergedRows<'s>,
    /// Plans still to send (the page's limit).
    left: u64,
    stage: Stage,
    pending: Vec<u8>,
    at: usize,
}

impl Read for MergedBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            if self.at < self.pending.len() {
                let k = (self.pending.len() - self.at).min(buf.len() - n);
                buf[n..n + k].copy_from_slice(&self.pending[self.at..self.at + k]);
                self.at += k;
                n += k;
                continue;
            }
            self.pending.clear();
            self.at = 0;
            match self.stage {
                Stage::Head => {
                    self.pending.extend_from_slice(ENVELOPE_HEAD);
                    self.stage = Stage::First;
                }
                Stage::First | Stage::Rest => {
                    let row = if self.left == 0 {
                        None
                    } else {
                        self.rows.next().transpose().map_err(io::Error::other)?
                    };
                    match row {
                        Some(m) => {
                            self.left -= 1;
                            if self.stage == Stage::Rest {
                                self.pending.push(b',');
                            }
                            self.pending.extend_from_slice(&m.json);
                            self.stage = Stage::Rest;
                        }
                        None => {
                            self.pending.extend_from_slice(ENVELOPE_TAIL);
                            self.stage = Stage::Done;
                        }
                    }
                }
                Stage::Done => break,
            }
        }
        Ok(n)
    }
}

/// The whole merged body in memory (CLI and tests).
fn search_providers_body(conn: &Connection, parts: &[ProviderWindow]) -> Result<Vec<u8>> {
    let q = SearchQuery {
        parts: parts.to_vec(),
        ..SearchQuery::default()
    };
    stream_providers(conn, &q, |_, r| {
        let mut body = Vec::with_capacity(4096);
        r.read_to_end(&mut body).map(|_| body)
    })?
    .map_err(io_to_store)
}

/// Moves the provider's counters (`plans_stored:NAME`,
/// `plans_searchable:NAME` in `meta`) in the ingest's transaction.
fn add_provider_counts(
    conn: &Connection,
    provider: &str,
    stored: u64,
    searchable: u64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('plans_stored:' || ?1, ?2), ('plans_searchable:' || ?1, ?3)
         ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
    )?
    .execute(params![provider, stored as i64, searchable as i64])?;
    Ok(())
}

/// Each provider's counters, by name.
fn provider_counts(conn: &Connection) -> Result<BTreeMap<String, StoreCounts>> {
    let mut stmt = conn.prepare_cached(
        "SELECT key, value FROM meta WHERE key LIKE 'plans_stored:%' OR key LIKE 'plans_searchable:%'",
    )?;
    let mut out: BTreeMap<String, StoreCounts> = BTreeMap::new();
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (key, value) = row?;
        let value = value.max(0) as u64;
        if let Some(name) = key.strip_prefix("plans_stored:") {
            out.entry(name.to_owned()).or_default().plans_stored = value;
        } else if let Some(name) = key.strip_prefix("plans_searchable:") {
            out.entry(name.to_owned()).or_default().plans_searchable = value;
        }
    }
    Ok(out)
}

fn providers(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT provider FROM feed_state ORDER BY provider")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl Store {
    /// The newest `limit` runs of one provider.
    pub fn runs_of(&self, provider: &str, limit: usize) -> Result<Vec<FetchRun>> {
        runs_where(&self.conn, Some(provider), limit)
    }

    /// The providers the store has fetched or imported.
    pub fn providers(&self) -> Result<Vec<String>> {
        providers(&self.conn)
    }

    /// Each provider's plans stored and searchable (counters, no scan).
    pub fn provider_counts(&self) -> Result<BTreeMap<String, StoreCounts>> {
        provider_counts(&self.conn)
    }

    /// [`Reader::search_providers`] on the writer's connection (CLI).
    pub fn search_providers(&self, parts: &[ProviderWindow]) -> Result<Vec<u8>> {
        search_providers_body(&self.conn, parts)
    }

    /// Rewrites every journal `source` through `redact` (journal rows of an
    /// older planbox may hold a provider URL with its credentials). Writes
    /// only rows that change; returns how many.
    pub fn redact_journal_sources(&mut self, redact: &dyn Fn(&str) -> String) -> Result<usize> {
        let sources: Vec<String> = self
            .conn
            .prepare("SELECT DISTINCT source FROM fetch_runs")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let tx = self.conn.transaction()?;
        let mut changed = 0;
        for s in sources {
            let r = redact(&s);
            if r != s {
                changed += tx.execute(
                    "UPDATE fetch_runs SET source = ?1 WHERE source = ?2",
                    params![r, s],
                )?;
            }
        }
        tx.commit()?;
        Ok(changed)
    }
}

impl Reader {
    /// The newest `limit` runs of one provider.
    pub fn runs_of(&self, provider: &str, limit: usize) -> Result<Vec<FetchRun>> {
        runs_where(&self.conn, Some(provider), limit)
    }

    /// Searches several providers, each in its own zone, in one snapshot
    /// (see [`search_providers_body`]).
    pub fn search_providers(&mut self, parts: &[ProviderWindow]) -> Result<Answer> {
        let tx = self.conn.transaction()?;
        let generation = generation(&tx)?;
        let body = search_providers_body(&tx, parts)?;
        tx.finish()?;
        Ok(Answer { generation, body })
    }

    /// The providers the store has fetched or imported.
    pub fn providers(&self) -> Result<Vec<String>> {
        providers(&self.conn)
    }

    /// Each provider's plans stored and searchable (counters, no scan).
    pub fn provider_counts(&self) -> Result<BTreeMap<String, StoreCounts>> {
        provider_counts(&self.conn)
    }

    /// Searchable plans by provider and month of their local start, in
    /// provider then month order. Reads one index entry per searchable plan.
    pub fn plans_per_month(&self) -> Result<Vec<MonthCount>> {
        plans_per_month(&self.conn)
    }
}

// ---- end of several providers.

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{parse_feed_datetime, Price, PriceRange};

    pub(super) fn temp_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "planbox-store-{}-{}-{name}",
            std::process::id(),
            std::thread::current()
                .name()
                .unwrap_or("t")
                .replace("::", "_")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("planbox.db")
    }

    pub(super) fn plan(
        base: &str,
        id: &str,
        start: &str,
        end: Option<&str>,
        online: bool,
    ) -> FeedPlan {
        let mut prices = PriceRange::default();
        prices.add(Price::parse("10.50").unwrap());
        FeedPlan {
            base_plan_id: base.into(),
            plan_id: id.into(),
            title: format!("plan {base}/{id}"),
            online,
            start: parse_feed_datetime(start).unwrap(),
            end: end.map(|e| parse_feed_datetime(e).unwrap()),
            prices,
        }
    }

    pub(super) fn run(outcome: Outcome) -> FetchRun {
        FetchRun {
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_ms: 1,
            source: "test".into(),
            outcome,
            http_status: Some(200),
            bytes: 0,
            counts: PlanCounts::default(),
            skipped: BTreeMap::new(),
            repaired: BTreeMap::new(),
            error: None,
            provider: "provider".into(),
        }
    }

    fn ingest(store: &mut Store, plans: &[FeedPlan]) -> PlanCounts {
        let mut tx = store.begin_ingest("p").unwrap();
        for p in plans {
            tx.upsert(p).unwrap();
        }
        tx.commit(&run(Outcome::Ok), None).unwrap()
    }

    fn ids(body: &[u8]) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v["data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["title"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn counters_match_the_rows_through_every_kind_of_change() {
        let path = temp_db("counters");
        let mut store = Store::open(&path).unwrap();
        let real = |store: &Store| -> (u64, u64) {
            store
                .conn
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(ever_online), 0) FROM plans",
                    [],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
                )
                .unwrap()
        };
        let check = |store: &Store| {
            let c = store.counts().unwrap();
            assert_eq!((c.plans_stored, c.plans_searchable), real(store));
        };
        let a = plan("1", "1", "2021-01-01T10:00:00", None, false);
        let b = plan("2", "1", "2021-01-02T10:00:00", None, true);
        ingest(&mut store, &[a.clone(), b.clone()]);
        check(&store);
        assert_eq!(store.counts().unwrap().plans_searchable, 1);
        // a turns online: searchable +1; b offline: stays searchable.
        let (mut a2, mut b2) = (a.clone(), b.clone());
        a2.online = true;
        b2.online = false;
        ingest(&mut store, &[a2, b2]);
        check(&store);
        assert_eq!(store.counts().unwrap().plans_searchable, 2);
        // Unchanged, repeated in one feed, and a rolled-back ingest.
        ingest(&mut store, &[b.clone(), b.clone()]);
        {
            let mut tx = store.begin_ingest("p").unwrap();
            tx.upsert(&plan("3", "1", "2021-01-03T10:00:00", None, true))
                .unwrap();
        }
        check(&store);
        assert_eq!(store.counts().unwrap().plans_stored, 2);
    }

    #[test]
    fn searches_read_one_primary_key_range_in_order() {
        let path = temp_db("plan");
        let store = Store::open(&path).unwrap();
        for sql in [
            SEARCH_ROWS,
            SEARCH_PAGE_END,
            SEARCH_PROVIDER,
            SEARCH_PROVIDER_KEYS,
        ] {
            let mut stmt = store
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let zeros = vec![0i64; stmt.parameter_count()];
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(zeros), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let text = plan.join("; ");
            assert!(
                text.contains("SEARCH plans_search USING PRIMARY KEY (start_at>? AND start_at<?)")
                    || text.contains("SEARCH plans_search USING PRIMARY KEY (start_at>?)"),
                "{sql}: {text}"
            );
            assert!(!text.contains("TEMP B-TREE"), "sorts: {sql}: {text}");
        }
    }

    #[test]
    fn a_version_2_store_is_carried_over_in_place() {
        let path = temp_db("v2");
        let a = plan(
            "1",
            "7",
            "2021-01-02T10:00:00",
            Some("2021-01-02T11:00:00"),
            true,
        );
        let b = plan("2", "7", "2021-01-01T10:00:00", None, true);
        let c = plan("3", "7", "2021-01-01T09:00:00", None, false);
        {
            let mut conn = Connection::open(&path).unwrap();
            embedded::migrations::runner()
                .set_target(refinery::Target::Version(2))
                .run(&mut conn)
                .unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            for p in [&a, &b, &c] {
                let uuid = plan_uuid("p", &p.base_plan_id, &p.plan_id);
                conn.execute(
                    "INSERT INTO plans (id, provider, base_plan_id, plan_id, title, start_at,
                         end_at, min_price, max_price, online, ever_online, content_hash,
                         json, first_seen_run, changed_run)
                     VALUES (?1, 'p', ?2, ?3, ?4, ?5, ?6, '10.50', '10.50', ?7, ?7, ?8, ?9, 1, 1)",
                    params![
                        uuid.hyphenated().to_string(),
                        p.base_plan_id,
                        p.plan_id,
                        p.title,
                        local_seconds(&p.start),
                        p.end.as_ref().map(local_seconds),
                        p.online,
                        p.content_hash() as i64,
                        p.event_summary_json(&uuid),
                    ],
                )
                .unwrap();
            }
            conn.execute_batch(
                "UPDATE meta SET value = 3 WHERE key = 'plans_stored';
                 UPDATE meta SET value = 2 WHERE key = 'plans_searchable';
                 INSERT INTO feed_state (provider, body_hash) VALUES ('p', 'x');
                 INSERT INTO fetch_runs (started_at, duration_ms, source, outcome)
                     VALUES ('2021-01-01T00:00:00Z', 5, 'http://feed', 'ok');",
            )
            .unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        store.integrity_check().unwrap();
        // V1..V6, in order, on the old file.
        let applied: Vec<i64> = {
            let mut stmt = store
                .conn
                .prepare("SELECT version FROM refinery_schema_history ORDER BY version")
                .unwrap();
            let rows = stmt.query_map([], |r| r.get(0)).unwrap();
            rows.collect::<Result<_, _>>().unwrap()
        };
        assert_eq!(applied, [1, 2, 3, 4, 5, 6]);
        let body = store.search(&Window::default()).unwrap();
        assert_eq!(ids(&body), ["plan 2/7", "plan 1/7"]);
        // V6: the search rows, the journal and the counters name the one
        // provider; its merged answer is the one-zone answer, byte for byte.
        let untagged: i64 = store
            .conn
            .query_row(
                "SELECT COUNT(*) FROM plans_search WHERE provider <> 'p'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(untagged, 0);
        assert_eq!(store.runs(10).unwrap()[0].provider, "p");
        let by_provider = store.provider_counts().unwrap();
        assert_eq!(
            (
                by_provider["p"].plans_stored,
                by_provider["p"].plans_searchable
            ),
            (3, 2)
        );
        for tz in [chrono_tz::UTC, chrono_tz::Europe::Madrid] {
            let merged = store
                .search_providers(&[ProviderWindow {
                    provider: "p".into(),
                    tz,
                    window: Window::default(),
                }])
                .unwrap();
            assert_eq!(merged, body);
        }
        // The content digest (computed once, after V3..V5) is the one a
        // store that got the same plans on the current layout keeps.
        let mut fresh = Store::open(&temp_db("v2-fresh")).unwrap();
        ingest(&mut fresh, &[a.clone(), b.clone(), c.clone()]);
        assert_eq!(store.version().unwrap(), {
            let mut v = fresh.version().unwrap();
            v.generation = store.version().unwrap().generation;
            v
        });
        assert_eq!(fresh.search(&Window::default()).unwrap(), body);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["data"]["events"][1]["id"],
            plan_uuid("p", "1", "7").hyphenated().to_string()
        );
        // The same feed again: nothing changed, nothing written.
        let counts = ingest(&mut store, &[a.clone(), b.clone(), c.clone()]);
        assert_eq!(counts.plans_unchanged, 3, "{counts:?}");
        let mut c2 = c.clone();
        c2.online = true;
        assert_eq!(ingest(&mut store, &[c2]).plans_updated, 1);
        assert_eq!(store.counts().unwrap().plans_searchable, 3);
        let body = store.search(&Window::default()).unwrap();
        assert_eq!(ids(&body), ["plan 3/7", "plan 2/7", "plan 1/7"]);
        // Rows written after the upgrade name their provider too.
        let merged = store
            .search_providers(&[ProviderWindow {
                provider: "p".into(),
                tz: chrono_tz::Europe::Madrid,
                window: Window::default(),
            }])
            .unwrap();
        assert_eq!(merged, body);
        assert_eq!(store.provider_counts().unwrap()["p"].plans_searchable, 3);
    }

    #[test]
    fn a_version_2_store_of_two_providers_tags_every_search_row_with_its_own() {
        let path = temp_db("v2-two");
        let plans = [
            ("p", plan("1", "7", "2021-01-02T10:00:00", None, true)),
            ("q", plan("1", "7", "2021-01-02T10:00:00", None, true)),
            ("q", plan("2", "7", "2021-01-01T10:00:00", None, true)),
            ("q", plan("3", "7", "2021-01-01T09:00:00", None, false)),
        ];
        {
            let mut conn = Connection::open(&path).unwrap();
            embedded::migrations::runner()
                .set_target(refinery::Target::Version(2))
                .run(&mut conn)
                .unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            for (provider, p) in &plans {
                let uuid = plan_uuid(provider, &p.base_plan_id, &p.plan_id);
                conn.execute(
                    "INSERT INTO plans (id, provider, base_plan_id, plan_id, title, start_at,
                         end_at, min_price, max_price, online, ever_online, content_hash,
                         json, first_seen_run, changed_run)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, '10.50', '10.50', ?7, ?7, ?8, ?9, 1, 1)",
                    params![
                        uuid.hyphenated().to_string(),
                        provider,
                        p.base_plan_id,
                        p.plan_id,
                        p.title,
                        local_seconds(&p.start),
                        p.online,
                        p.content_hash() as i64,
                        p.event_summary_json(&uuid),
                    ],
                )
                .unwrap();
            }
        }
        let store = Store::open(&path).unwrap();
        let tagged: Vec<(Vec<u8>, String)> = {
            let mut stmt = store
                .conn
                .prepare("SELECT id, provider FROM plans_search ORDER BY start_at, end_at, id")
                .unwrap();
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
            rows.collect::<Result<_, _>>().unwrap()
        };
        let mut expected: Vec<(Vec<u8>, String)> = plans
            .iter()
            .filter(|(_, p)| p.online)
            .map(|(provider, p)| {
                let id = plan_uuid(provider, &p.base_plan_id, &p.plan_id);
                (id.as_bytes().to_vec(), provider.to_string())
            })
            .collect();
        expected.sort_by_key(|(id, _)| {
            let (_, p) = plans
                .iter()
                .find(|(pr, p)| plan_uuid(pr, &p.base_plan_id, &p.plan_id).as_bytes()[..] == id[..])
                .unwrap();
            (local_seconds(&p.start), id.clone())
        });
        assert_eq!(tagged, expected);
        let counts = store.provider_counts().unwrap();
        assert_eq!(
            (counts["p"].plans_stored, counts["p"].plans_searchable),
            (1, 1)
        );
        assert_eq!(
            (counts["q"].plans_stored, counts["q"].plans_searchable),
            (3, 2)
        );
        let only_q = store
            .search_providers(&[ProviderWindow {
                provider: "q".into(),
                tz: chrono_tz::UTC,
                window: Window::default(),
            }])
            .unwrap();
        assert_eq!(ids(&only_q), ["plan 2/7", "plan 1/7"]);
    }

    /// `meta.content_digest` as a full recount over the stored plans.
    fn recounted_digest(store: &mut Store) -> u64 {
        store
            .conn
            .execute("DELETE FROM meta WHERE key = 'content_digest'", [])
            .unwrap();
        ensure_content_digest(&mut store.conn).unwrap();
        store.version().unwrap().content
    }

    #[test]
    fn the_content_digest_follows_every_change_and_replicas_agree() {
        let path = temp_db("digest");
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.version().unwrap().content, 0);
        let a = plan("1", "1", "2021-01-01T10:00:00", None, false);
        let b = plan(
            "2",
            "1",
            "2021-01-02T10:00:00",
            Some("2021-01-02T12:00:00"),
            true,
        );
        let c = plan("3", "1", "2021-01-03T10:00:00", None, true);
        let (mut a2, mut b2, mut c2) = (a.clone(), b.clone(), c.clone());
        a2.online = true; // turns searchable
        b2.title = "renamed".into(); // same times, new JSON
        c2.start = parse_feed_datetime("2021-01-04T10:00:00").unwrap(); // moves
        c2.online = false; // and goes offline: stays searchable
        let feeds = [
            vec![a.clone(), b.clone(), c.clone()],
            vec![a.clone(), b.clone(), c.clone()],
            vec![a2.clone(), b2.clone(), c2.clone(), b2.clone()],
        ];
        for feed in &feeds {
            ingest(&mut store, feed);
            let kept = store.version().unwrap().content;
            assert_ne!(kept, 0);
            assert_eq!(kept, recounted_digest(&mut store));
        }
        // A replica that got the feeds in another order, without the
        // repeat, holds the same plans.
        let mut replica = Store::open(&temp_db("digest-replica")).unwrap();
        for feed in [&feeds[0], &feeds[2]] {
            let reversed: Vec<FeedPlan> = feed.iter().rev().cloned().collect();
            ingest(&mut replica, &reversed);
        }
        assert_eq!(
            replica.version().unwrap().content,
            store.version().unwrap().content
        );
        assert_eq!(
            replica.search(&Window::default()).unwrap(),
            store.search(&Window::default()).unwrap()
        );
    }

    #[test]
    fn pages_walk_plans_without_end_first_and_by_id_bytes() {
        let path = temp_db("pages");
        let mut store = Store::open(&path).unwrap();
        let day = "2021-01-01T10:00:00";
        let mut plans = Vec::new();
        for i in 0..6 {
            let end = match i % 3 {
                0 => None,
                1 => Some("2021-01-01T11:00:00"),
                _ => Some("2021-01-01T12:00:00"),
            };
            plans.push(plan(&format!("{i}"), "1", day, end, true));
        }
        plans.push(plan("x", "1", "2021-01-01T09:00:00", None, true));
        plans.push(plan("y", "1", "2021-01-01T11:00:00", None, true));
        ingest(&mut store, &plans);
        let events = |body: &[u8]| -> Vec<(String, String)> {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            v["data"]["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["id"].as_str().unwrap().into(), e["end_date"].to_string()))
                .collect()
        };
        let bounded = Window {
            starts_at: None,
            ends_at: Some(local_seconds(
                &parse_feed_datetime("2021-01-01T12:00:00").unwrap(),
            )),
        };
        for window in [Window::default(), bounded] {
            let whole = events(&store.search(&window).unwrap());
            if window.ends_at.is_some() {
                // A plan without an end is left out when `ends_at` is given.
                assert_eq!(whole.len(), 4, "{whole:?}");
                assert!(whole.iter().all(|(_, end)| end != "null"), "{whole:?}");
            } else {
                assert_eq!(whole.len(), 8);
            }
            for limit in [1, 2, 3] {
                let mut q = SearchQuery {
                    window,
                    limit: Some(limit),
                    after: None,
                    parts: Vec::new(),
                };
                let mut walked = Vec::new();
                loop {
                    let (next, body) = store
                        .stream(&q, |s, r| {
                            let mut body = Vec::new();
                            r.read_to_end(&mut body).unwrap();
                            (s.next.clone(), body)
                        })
                        .unwrap();
                    walked.extend(events(&body));
                    match next {
                        Some(p) => {
                            assert_eq!(&p.id, &walked.last().unwrap().0);
                            assert_eq!(p.end.is_none(), walked.last().unwrap().1 == "null");
                            q.after = Some(p);
                        }
                        None => break,
                    }
                }
                assert_eq!(walked, whole, "limit {limit}, {window:?}");
            }
        }
    }

    #[test]
    fn a_moved_plan_leaves_no_trace_at_its_old_times() {
        let path = temp_db("moved");
        let mut store = Store::open(&path).unwrap();
        let a = plan("1", "1", "2021-01-01T10:00:00", None, true);
        ingest(&mut store, std::slice::from_ref(&a));
        let mut a2 = a.clone();
        a2.start = parse_feed_datetime("2021-03-01T10:00:00").unwrap();
        a2.end = parse_feed_datetime("2021-03-01T12:00:00");
        // Listed twice: the second is unchanged.
        let c = ingest(&mut store, &[a2.clone(), a2]);
        assert_eq!((c.plans_updated, c.plans_unchanged), (1, 1));
        let rows: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM plans_search", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        let body = String::from_utf8(store.search(&Window::default()).unwrap()).unwrap();
        assert!(body.contains(r#""start_date":"2021-03-01""#), "{body}");
    }

    #[test]
    fn known_plans_find_every_stored_plan_and_no_other() {
        let path = temp_db("known");
        let mut store = Store::open(&path).unwrap();
        let plans: Vec<FeedPlan> = (0..3000)
            .map(|i| {
                plan(
                    &(i / 3).to_string(),
                    &i.to_string(),
                    "2021-01-01T10:00:00",
                    None,
                    i % 2 == 0,
                )
            })
            .collect();
        ingest(&mut store, &plans);
        let known = KnownPlans::load(&store.conn, "p").unwrap();
        assert!(known.loaded);
        for p in &plans {
            match known.get(identity_digest(&p.base_plan_id, &p.plan_id)) {
                Known::Hash(h) => assert_eq!(h, p.content_hash()),
                _ => panic!("{} not found", p.plan_id),
            }
        }
        for i in 3000..6000 {
            let key = identity_digest("x", &i.to_string());
            assert!(matches!(known.get(key), Known::Absent));
        }
        assert!(matches!(
            KnownPlans::load(&store.conn, "other").unwrap().get(1),
            Known::Absent
        ));
        let c = ingest(&mut store, &plans);
        assert_eq!(c.plans_unchanged, 3000);
    }

    #[test]
    fn above_the_known_plans_limit_every_plan_is_looked_up_with_the_same_result() {
        let path = temp_db("unloaded");
        let mut store = Store::open(&path).unwrap();
        let a = plan("1", "1", "2021-01-01T10:00:00", None, true);
        let b = plan("2", "1", "2021-01-02T10:00:00", None, false);
        ingest(&mut store, &[a.clone(), b.clone()]);
        let mut b2 = b.clone();
        b2.online = true;
        let c = plan("3", "1", "2021-01-03T10:00:00", None, true);
        let mut tx = store.begin_ingest("p").unwrap();
        tx.known = KnownPlans::unloaded();
        for p in [&a, &b2, &c, &c] {
            tx.upsert(p).unwrap();
        }
        let counts = tx.commit(&run(Outcome::Ok), None).unwrap();
        assert_eq!(
            (
                counts.plans_new,
                counts.plans_updated,
                counts.plans_unchanged
            ),
            (1, 1, 2)
        );
        assert_eq!(
            ids(&store.search(&Window::default()).unwrap()),
            ["plan 1/1", "plan 2/1", "plan 3/1"]
        );
        assert_eq!(store.counts().unwrap().plans_searchable, 3);
        let kept = store.version().unwrap().content;
        assert_eq!(kept, recounted_digest(&mut store));
    }

    #[test]
    fn migrating_twice_is_a_no_op() {
        let path = temp_db("migrate");
        drop(Store::open(&path).unwrap());
        let store = Store::open(&path).unwrap();
        store.quick_check().unwrap();
        assert_eq!(store.generation().unwrap(), 0);
    }

    #[test]
    fn ever_online_is_sticky_and_latest_values_win() {
        let path = temp_db("sticky");
        let mut store = Store::open(&path).unwrap();
        let a = plan(
            "1",
            "1",
            "2021-01-01T10:00:00",
            Some("2021-01-01T11:00:00"),
            true,
        );
        let c = ingest(&mut store, std::slice::from_ref(&a));
        assert_eq!((c.plans_new, c.plans_updated), (1, 0));
        let mut a2 = a.clone();
        a2.online = false;
        a2.end = parse_feed_datetime("2021-01-01T12:00:00");
        let c = ingest(&mut store, &[a2]);
        assert_eq!(c.plans_updated, 1);
        let body = store.search(&Window::default()).unwrap();
        let s = String::from_utf8(body).unwrap();
        assert!(s.contains(r#""end_time":"12:00:00""#), "{s}");
        // Gone from the feed: still there.
        ingest(&mut store, &[]);
        assert_eq!(ids(&store.search(&Window::default()).unwrap()).len(), 1);
    }

    #[test]
    fn never_online_plans_are_not_searchable() {
        let path = temp_db("offline");
        let mut store = Store::open(&path).unwrap();
        ingest(
            &mut store,
            &[plan("1", "1", "2021-01-01T10:00:00", None, false)],
        );
        assert!(ids(&store.search(&Window::default()).unwrap()).is_empty());
        assert_eq!(store.counts().unwrap().plans_stored, 1);
    }

    #[test]
    fn unchanged_plans_are_not_rewritten_and_generation_stays() {
        let path = temp_db("unchanged");
        let mut store = Store::open(&path).unwrap();
        let plans = [
            plan("1", "1", "2021-01-01T10:00:00", None, true),
            plan("2", "1", "2021-01-02T10:00:00", None, true),
        ];
        ingest(&mut store, &plans);
        let g = store.generation().unwrap();
        let c = ingest(&mut store, &plans);
        assert_eq!((c.plans_unchanged, c.plans_new, c.plans_updated), (2, 0, 0));
        assert_eq!(store.generation().unwrap(), g);
    }

    #[test]
    fn dropped_ingest_changes_nothing() {
        let path = temp_db("rollback");
        let mut store = Store::open(&path).unwrap();
        {
            let mut tx = store.begin_ingest("p").unwrap();
            tx.upsert(&plan("1", "1", "2021-01-01T10:00:00", None, true))
                .unwrap();
        }
        assert_eq!(store.counts().unwrap().plans_stored, 0);
        assert!(store.runs(10).unwrap().is_empty());
    }

    #[test]
    fn window_is_inclusive_and_ordered_by_start_end_id() {
        let path = temp_db("window");
        let mut store = Store::open(&path).unwrap();
        ingest(
            &mut store,
            &[
                plan(
                    "b",
                    "1",
                    "2021-01-02T10:00:00",
                    Some("2021-01-02T12:00:00"),
                    true,
                ),
                plan(
                    "a",
                    "1",
                    "2021-01-02T10:00:00",
                    Some("2021-01-02T11:00:00"),
                    true,
                ),
                plan("c", "1", "2021-01-01T10:00:00", None, true),
            ],
        );
        let all = ids(&store.search(&Window::default()).unwrap());
        assert_eq!(all, ["plan c/1", "plan a/1", "plan b/1"]);
        let t = |s: &str| {
            Some(local_seconds(
                &crate::model::parse_feed_datetime(s).unwrap(),
            ))
        };
        let w = Window {
            starts_at: t("2021-01-02T10:00:00"),
            ends_at: t("2021-01-02T11:00:00"),
        };
        assert_eq!(ids(&store.search(&w).unwrap()), ["plan a/1"]);
        // No end: left out once ends_at is given.
        let w = Window {
            starts_at: None,
            ends_at: t("2030-01-01T00:00:00"),
        };
        assert_eq!(ids(&store.search(&w).unwrap()), ["plan a/1", "plan b/1"]);
        let w = Window {
            starts_at: t("2021-01-03T00:00:00"),
            ends_at: t("2021-01-01T00:00:00"),
        };
        assert!(ids(&store.search(&w).unwrap()).is_empty());
    }

    #[test]
    fn journal_is_bounded_and_newest_first() {
        let path = temp_db("journal");
        let mut store = Store::open(&path).unwrap();
        for outcome in [Outcome::Ok, Outcome::Timeout] {
            store.record_run(&run(outcome)).unwrap();
        }
        let runs = store.runs(10).unwrap();
        assert_eq!(runs[0].outcome, Outcome::Timeout);
        assert_eq!(runs.len(), 2);
    }

    #[test]
    fn foreign_files_are_refused_untouched() {
        let path = temp_db("foreign");
        std::fs::write(
            &path,
            b"this is not sqlite at all, just some text file content here",
        )
        .unwrap();
        let before = std::fs::read(&path).unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::Foreign { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), before);

        let other = temp_db("other-app");
        let c = Connection::open(&other).unwrap();
        c.execute_batch("CREATE TABLE notes (x TEXT); INSERT INTO notes VALUES ('mine');")
            .unwrap();
        drop(c);
        assert!(matches!(
            Store::open(&other),
            Err(StoreError::Foreign { .. })
        ));
    }

    #[test]
    fn reader_sees_commits_and_generation() {
        let path = temp_db("reader");
        let mut store = Store::open(&path).unwrap();
        let mut reader = Reader::open(&path).unwrap();
        assert!(reader.ready());
        let g0 = reader.search(&Window::default()).unwrap().generation;
        ingest(
            &mut store,
            &[plan("1", "1", "2021-01-01T10:00:00", None, true)],
        );
        let a = reader.search(&Window::default()).unwrap();
        assert_eq!(a.generation, g0 + 1);
        assert_eq!(ids(&a.body).len(), 1);
    }

    #[test]
    fn backup_is_a_verified_copy() {
        let path = temp_db("backup");
        let mut store = Store::open(&path).unwrap();
        ingest(
            &mut store,
            &[plan("1", "1", "2021-01-01T10:00:00", None, true)],
        );
        let dest = path.with_file_name("copy.db");
        store.backup_to(&dest).unwrap();
        assert!(store.backup_to(&dest).is_err(), "never overwrites");
        let copy = Store::open(&dest).unwrap();
        assert_eq!(copy.counts().unwrap().plans_searchable, 1);
    }
}

#[cfg(test)]
mod provider_tests {
    use super::tests::{plan, run, temp_db};
    use super::*;

    #[test]
    fn plans_per_month_counts_searchable_plans_by_provider_and_local_month() {
        let db = temp_db("months");
        let mut store = Store::open(&db).unwrap();
        let plans = [
            plan("1", "a", "2021-06-30T23:30:00", None, true),
            plan("1", "b", "2021-06-01T00:00:00", None, true),
            plan("1", "c", "2021-07-01T00:00:00", None, true),
            plan("1", "d", "2021-07-15T00:00:00", None, false),
        ];
        for (provider, ps) in [("p", &plans[..]), ("q", &plans[2..3])] {
            let mut tx = store.begin_ingest(provider).unwrap();
            for p in ps {
                tx.upsert(p).unwrap();
            }
            tx.commit(&run(Outcome::Ok), None).unwrap();
        }
        let reader = Reader::open(&db).unwrap();
        let got: Vec<(String, String, u64)> = reader
            .plans_per_month()
            .unwrap()
            .into_iter()
            .map(|m| (m.provider, m.month, m.plans))
            .collect();
        let want = [
            ("p", "2021-06", 2),
            ("p", "2021-07", 1),
            ("q", "2021-07", 1),
        ];
        let want: Vec<(String, String, u64)> = want
            .iter()
            .map(|(p, m, n)| (p.to_string(), m.to_string(), *n))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn journal_rows_name_their_provider_and_old_sources_can_be_redacted() {
        let db = temp_db("journal");
        let mut store = Store::open(&db).unwrap();
        for (p, src) in [("a", "http://u:pw@h/x?k=SECRET"), ("b", "/tmp/feed.xml")] {
            let mut r = run(Outcome::Ok);
            r.provider = p.into();
            r.source = src.into();
            store.record_run(&r).unwrap();
        }
        let n = store
            .redact_journal_sources(&crate::secret::redact_text)
            .unwrap();
        assert_eq!(n, 1);
        let a = store.runs_of("a", 10).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].source, "http://***@h/x?k=***");
        assert_eq!(store.runs_of("b", 10).unwrap()[0].source, "/tmp/feed.xml");
        assert_eq!(store.runs(10).unwrap().len(), 2);
    }

    #[test]
    fn providers_in_two_zones_merge_by_start_instant_then_end_instant_then_id() {
        use chrono_tz::Europe::Madrid;
        let db = temp_db("merge");
        let mut store = Store::open(&db).unwrap();
        let land = |store: &mut Store, provider: &str, plans: &[FeedPlan]| {
            let mut tx = store.begin_ingest(provider).unwrap();
            for p in plans {
                tx.upsert(p).unwrap();
            }
            let mut r = run(Outcome::Ok);
            r.provider = provider.into();
            tx.commit(&r, None).unwrap();
        };
        land(
            &mut store,
            "utc",
            &[
                plan(
                    "1",
                    "a",
                    "2021-06-30T20:00:00",
                    Some("2021-06-30T23:00:00"),
                    true,
                ),
                plan("1", "b", "2021-06-30T21:30:00", None, true),
            ],
        );
        land(
            &mut store,
            "mad",
            &[
                // 19:00Z, 20:00Z (ends 21:30Z, before utc/a's 23:00Z).
                plan("1", "c", "2021-06-30T21:00:00", None, true),
                plan(
                    "1",
                    "d",
                    "2021-06-30T22:00:00",
                    Some("2021-06-30T23:30:00"),
                    true,
                ),
                // The skipped hour (= 01:00Z) and the hour seen twice (00:30Z).
                plan("2", "gap", "2021-03-28T02:30:00", None, true),
                plan("2", "twice", "2021-10-31T02:30:00", None, true),
            ],
        );
        let titles = |body: &[u8]| -> Vec<String> {
            crate::model::decode_events(body)
                .unwrap()
                .into_iter()
                .map(|e| e.title)
                .collect()
        };
        let parts = |w: Window| {
            vec![
                ProviderWindow {
                    provider: "utc".into(),
                    tz: chrono_tz::UTC,
                    window: w,
                },
                ProviderWindow {
                    provider: "mad".into(),
                    tz: Madrid,
                    window: w,
                },
            ]
        };
        let mut reader = Reader::open(&db).unwrap();
        let all = reader.search_providers(&parts(Window::default())).unwrap();
        assert_eq!(
            titles(&all.body),
            [
                "plan 2/gap",
                "plan 1/c",
                "plan 1/d",
                "plan 1/a",
                "plan 1/b",
                "plan 2/twice"
            ]
        );
        // A window per provider in its own local seconds: 2021-06-30 from
        // 20:00Z is 20:00 in UTC and 22:00 in Madrid.
        let from = |s: &str| Window {
            starts_at: Some(local_seconds(
                &crate::model::parse_feed_datetime(s).unwrap(),
            )),
            ends_at: None,
        };
        let some = reader
            .search_providers(&[
                ProviderWindow {
                    provider: "utc".into(),
                    tz: chrono_tz::UTC,
                    window: from("2021-06-30T20:00:00"),
                },
                ProviderWindow {
                    provider: "mad".into(),
                    tz: Madrid,
                    window: from("2021-06-30T22:00:00"),
                },
            ])
            .unwrap();
        assert_eq!(
            titles(&some.body),
            ["plan 1/d", "plan 1/a", "plan 1/b", "plan 2/twice"]
        );
        // One provider alone: its own plans, nothing else.
        let one = reader
            .search_providers(&parts(Window::default())[..1])
            .unwrap();
        assert_eq!(titles(&one.body), ["plan 1/a", "plan 1/b"]);
        assert_eq!(one.generation, all.generation);
    }

    #[test]
    fn one_provider_answers_the_same_bytes_merged_or_alone() {
        use chrono_tz::Europe::Madrid;
        let db = temp_db("same");
        let mut store = Store::open(&db).unwrap();
        let mut plans = Vec::new();
        for i in 0..60 {
            let day = 1 + i % 28;
            let hour = 8 + (i * 7) % 14;
            let start = format!("2021-06-{day:02}T{hour:02}:00:00");
            let end = format!("2021-06-{day:02}T{:02}:30:00", hour + 1);
            plans.push(plan(
                &format!("{}", i % 5),
                &format!("{i}"),
                &start,
                (i % 4 != 0).then_some(end.as_str()),
                i % 9 != 0,
            ));
        }
        let mut tx = store.begin_ingest("p").unwrap();
        for p in &plans {
            tx.upsert(p).unwrap();
        }
        tx.commit(&run(Outcome::Ok), None).unwrap();
        let mut reader = Reader::open(&db).unwrap();
        let at = |s: &str| {
            Some(local_seconds(
                &crate::model::parse_feed_datetime(s).unwrap(),
            ))
        };
        for window in [
            Window::default(),
            Window {
                starts_at: at("2021-06-10T12:00:00"),
                ends_at: None,
            },
            Window {
                starts_at: None,
                ends_at: at("2021-06-20T12:00:00"),
            },
            Window {
                starts_at: at("2021-06-05T09:00:00"),
                ends_at: at("2021-06-25T18:00:00"),
            },
            Window {
                starts_at: at("2021-06-25T09:00:00"),
                ends_at: at("2021-06-05T18:00:00"),
            },
        ] {
            let alone = reader.search(&window).unwrap();
            let merged = reader
                .search_providers(&[ProviderWindow {
                    provider: "p".into(),
                    tz: Madrid,
                    window,
                }])
                .unwrap();
            assert_eq!(merged.body, alone.body, "{window:?}");
        }
    }

    #[test]
    fn provider_counters_match_the_rows_through_every_kind_of_change() {
        let db = temp_db("pcounts");
        let mut store = Store::open(&db).unwrap();
        let feeds: [(&str, Vec<FeedPlan>); 4] = [
            (
                "a",
                vec![
                    plan("1", "x", "2021-06-01T10:00:00", None, false),
                    plan("1", "y", "2021-06-02T10:00:00", None, true),
                ],
            ),
            ("b", vec![plan("1", "x", "2021-06-01T10:00:00", None, true)]),
            // x turns online, y changes, z is new and offline.
            (
                "a",
                vec![
                    plan("1", "x", "2021-06-01T10:00:00", None, true),
                    plan("1", "y", "2021-06-03T10:00:00", None, false),
                    plan("1", "z", "2021-06-04T10:00:00", None, false),
                ],
            ),
            ("b", vec![plan("1", "x", "2021-06-01T10:00:00", None, true)]),
        ];
        for (provider, plans) in &feeds {
            let mut tx = store.begin_ingest(provider).unwrap();
            for p in plans {
                tx.upsert(p).unwrap();
            }
            tx.commit(&run(Outcome::Ok), None).unwrap();
        }
        let counted = store.provider_counts().unwrap();
        for name in ["a", "b"] {
            let (stored, searchable): (i64, i64) = store
                .conn
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(ever_online), 0) FROM plans WHERE provider = ?1",
                    [name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!(counted[name].plans_stored, stored as u64, "{name}");
            assert_eq!(counted[name].plans_searchable, searchable as u64, "{name}");
        }
        assert_eq!(
            (counted["a"].plans_stored, counted["a"].plans_searchable),
            (3, 2)
        );
        assert_eq!(
            (counted["b"].plans_stored, counted["b"].plans_searchable),
            (1, 1)
        );
    }
}
