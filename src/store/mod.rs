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
//!
//! This file holds `Store` (open, migrations, errors), the counters, the
//! journal, feed state, the clean-stop mark, checkpoint and backup. The
//! rest, by concern: `ingest` (the write transaction of a fetch), `search`
//! (the `/search` read and `Reader`), `providers` (several providers),
//! `check` (integrity checks) and `space` (the files' sizes on disk).

mod check;
mod ingest;
mod providers;
mod search;
mod space;
#[cfg(test)]
mod test_support;

pub use check::{check_integrity, record_check_passed, CheckOutcome};
pub use ingest::{local_changes, plan_term, Ingest, PreparedPlan, Preparer, NO_END};
pub use providers::MonthCount;
pub use search::{Answer, Reader, Snapshot};
pub use space::StoreSpace;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use check::{check_identity, integrity};
use ingest::ensure_content_digest;
use search::stream_search;

use crate::model::{FetchRun, Outcome, PlanCounts, Window};
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

/// What went wrong with the store. Each variant says what planbox was
/// doing; the underlying error is its `source` (print the chain with
/// [`crate::log::chain`]), never folded into the text.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: not a planbox store ({reason}); refusing to touch it")]
    Foreign { path: PathBuf, reason: String },
    #[error("{path}: the store is damaged ({detail}); restore it from a backup")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path}: cannot open the store")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store is busy: another planbox process held the write lock for too long")]
    Busy,
    #[error("{path}: migrating the store failed")]
    Migrate {
        path: PathBuf,
        #[source]
        source: refinery::Error,
    },
    /// An SQL statement failed (not busy, not a damaged or foreign file).
    #[error("a statement on the store failed")]
    Sqlite(#[source] rusqlite::Error),
    /// Reading a body out of the store failed for a reason that is not
    /// SQLite's (see [`StoreError::from_read`]).
    #[error("reading an answer out of the store failed")]
    Read(#[source] std::io::Error),
    /// A stored plan id is not 16 bytes of a UUID: the store was written by
    /// something other than planbox, or damaged.
    #[error("a stored plan id is not a UUID")]
    BadPlanId(#[source] uuid::Error),
    /// A journal row planbox cannot read back.
    #[error("journal row {row}: {what}")]
    BadJournal {
        row: i64,
        what: &'static str,
        #[source]
        source: Option<serde_json::Error>,
    },
    #[error("the store's content digest is missing; open it read-write once")]
    NoContentDigest,
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

impl StoreError {
    /// An error out of a body reader of this module ([`Reader::stream`],
    /// [`Store::stream`]): SQLite's own error when it is one (they travel
    /// inside `io::Error`), else the I/O error itself.
    pub fn from_read(e: std::io::Error) -> StoreError {
        match e.downcast::<rusqlite::Error>() {
            Ok(sqlite) => StoreError::from(sqlite),
            Err(e) => StoreError::Read(e),
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
            .map_err(|source| StoreError::Migrate {
                path: path.to_owned(),
                source,
            })?;
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
        .map_err(StoreError::from_read)
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
                plans_new, plans_updated, plans_unchanged, skipped, error, repaired, provider, id
         FROM fetch_runs WHERE ?2 IS NULL OR provider = ?2 ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![limit as i64, provider], |r| {
        let text: [String; 3] = [r.get(3)?, r.get(10)?, r.get(12)?];
        let run = FetchRun {
            started_at: r.get(0)?,
            duration_ms: r.get::<_, i64>(1)?.max(0) as u64,
            source: r.get(2)?,
            outcome: Outcome::Ok,
            http_status: r.get(4)?,
            bytes: r.get::<_, i64>(5)?.max(0) as u64,
            counts: PlanCounts {
                plans_seen: r.get::<_, i64>(6)?.max(0) as u64,
                plans_new: r.get::<_, i64>(7)?.max(0) as u64,
                plans_updated: r.get::<_, i64>(8)?.max(0) as u64,
                plans_unchanged: r.get::<_, i64>(9)?.max(0) as u64,
            },
            skipped: BTreeMap::new(),
            error: r.get(11)?,
            repaired: BTreeMap::new(),
            provider: r.get(13)?,
        };
        Ok((r.get::<_, i64>(14)?, text, run))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, [outcome, skipped, repaired], mut run) = row?;
        // planbox wrote these; anything else is a damaged or foreign row,
        // said as such rather than shown as a network error or no skips.
        let bad = |what, source| StoreError::BadJournal {
            row: id,
            what,
            source,
        };
        run.outcome = Outcome::parse(&outcome).ok_or(bad("unknown outcome", None))?;
        run.skipped = serde_json::from_str(&skipped)
            .map_err(|e| bad("skipped items are not a JSON map of counts", Some(e)))?;
        run.repaired = serde_json::from_str(&repaired)
            .map_err(|e| bad("repaired values are not a JSON map of counts", Some(e)))?;
        out.push(run);
    }
    Ok(out)
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
    let content = content.ok_or(StoreError::NoContentDigest)?;
    Ok(DataVersion {
        generation: generation.max(0) as u64,
        content: content as u64,
        searchable: searchable.max(0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{local_seconds, plan_uuid, ProviderWindow};
    use crate::store::test_support::*;

    /// A store in the version 2 layout (as the previous release wrote it)
    /// holding `plans` (provider, plan), each with the price 10.50; the
    /// connection is left open for the caller's own additions.
    fn version_2_store(path: &Path, plans: &[(&str, &crate::model::FeedPlan)]) -> Connection {
        let mut conn = Connection::open(path).unwrap();
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(2))
            .run(&mut conn)
            .unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        for (provider, p) in plans {
            let uuid = plan_uuid(provider, &p.base_plan_id, &p.plan_id);
            conn.execute(
                "INSERT INTO plans (id, provider, base_plan_id, plan_id, title, start_at,
                     end_at, min_price, max_price, online, ever_online, content_hash,
                     json, first_seen_run, changed_run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '10.50', '10.50', ?8, ?8, ?9, ?10, 1, 1)",
                params![
                    uuid.hyphenated().to_string(),
                    provider,
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
        conn
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
            let conn = version_2_store(&path, &[("p", &a), ("p", &b), ("p", &c)]);
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
        // V1..V8, in order, on the old file.
        let applied: Vec<i64> = {
            let mut stmt = store
                .conn
                .prepare("SELECT version FROM refinery_schema_history ORDER BY version")
                .unwrap();
            let rows = stmt.query_map([], |r| r.get(0)).unwrap();
            rows.collect::<Result<_, _>>().unwrap()
        };
        assert_eq!(applied, [1, 2, 3, 4, 5, 6, 7, 8]);
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
        // V6: the month counters of the plans carried over.
        let (kept, recounted) = plan_months_kept_and_recounted(&store.conn);
        assert_eq!(kept, recounted);
        assert_eq!(kept, [("p".to_string(), 202101, 2)]);
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
        let (kept, recounted) = plan_months_kept_and_recounted(&store.conn);
        assert_eq!(kept, recounted);
        assert_eq!(kept, [("p".to_string(), 202101, 3)]);
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
        let with_providers: Vec<_> = plans.iter().map(|(provider, p)| (*provider, p)).collect();
        version_2_store(&path, &with_providers);
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
        let (kept, recounted) = plan_months_kept_and_recounted(&store.conn);
        assert_eq!(kept, recounted);
        assert_eq!(
            kept,
            [("p".to_string(), 202101, 1), ("q".to_string(), 202101, 2)]
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

    #[test]
    fn migrating_twice_is_a_no_op() {
        let path = temp_db("migrate");
        drop(Store::open(&path).unwrap());
        let store = Store::open(&path).unwrap();
        store.quick_check().unwrap();
        assert_eq!(store.generation().unwrap(), 0);
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
    fn a_damaged_journal_row_is_an_error_naming_it() {
        let path = temp_db("journal-damaged");
        let mut store = Store::open(&path).unwrap();
        store.record_run(&run(Outcome::Ok)).unwrap();
        for (sql, what) in [
            ("UPDATE fetch_runs SET skipped = '{\"x\":'", "skipped items"),
            (
                "UPDATE fetch_runs SET skipped = '{}', repaired = '[1]'",
                "repaired values",
            ),
            (
                "UPDATE fetch_runs SET repaired = '{}', outcome = 'gone'",
                "unknown outcome",
            ),
        ] {
            store.conn.execute(sql, []).unwrap();
            let err = store.runs(10).unwrap_err();
            assert!(
                matches!(err, StoreError::BadJournal { row: 1, .. }),
                "{sql}: {err:?}"
            );
            let text = crate::log::chain(&err);
            assert!(text.starts_with("journal row 1: "), "{text}");
            assert!(text.contains(what), "{text}");
            assert!(store.runs_of("provider", 10).is_err());
        }
    }

    #[test]
    fn read_errors_say_what_they_are() {
        let plain = StoreError::from_read(std::io::Error::other("disk on fire"));
        assert!(matches!(plain, StoreError::Read(_)), "{plain:?}");
        assert_eq!(
            crate::log::chain(&plain),
            "reading an answer out of the store failed: disk on fire"
        );
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let busy = StoreError::from_read(std::io::Error::other(busy));
        assert!(matches!(busy, StoreError::Busy), "{busy:?}");
    }

    #[test]
    fn a_failed_migration_names_the_store_and_keeps_its_cause() {
        let path = temp_db("migrate-fails");
        drop(Store::open(&path).unwrap());
        // A migration this planbox does not know was applied (a newer
        // planbox wrote the store).
        let c = Connection::open(&path).unwrap();
        c.execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES (999, 'future', '2030-01-01T00:00:00Z', '0')",
            [],
        )
        .unwrap();
        drop(c);
        let Err(err) = Store::open(&path) else {
            panic!("opened a store of a newer planbox");
        };
        assert!(matches!(err, StoreError::Migrate { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("{}: migrating the store failed", path.display())
        );
        assert!(std::error::Error::source(&err).is_some());
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
