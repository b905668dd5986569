//! Several providers: the k-way merge of each provider's rows by start
//! instant, per-provider counters and journal, searchable plans per
//! provider and month, and scrubbing credentials out of old journal rows.
//!
//! Must not hold more than one row per provider (plus one start-instant
//! group) in memory while merging, and must not scan plans for counters.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};

use rusqlite::{params, Connection};

use super::search::{Answer, Reader, Snapshot, Stage, ENVELOPE_HEAD, ENVELOPE_TAIL};
use super::{data_version, generation, runs_where, Result, Store, StoreCounts, StoreError, NO_END};
use crate::model::{FetchRun, Position, ProviderWindow, SearchQuery};

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

/// The `plan_months.month` of provider-local seconds: yyyymm of the local
/// calendar month, as `strftime('%Y%m', start_at, 'unixepoch')` gives it
/// (migration V6 fills the table that way); 0 for a year outside 0000-9999
/// (seconds outside -62167219200..=253402300799, which V6 maps to 0 too).
pub(super) fn month_of(local: i64) -> i64 {
    use chrono::Datelike;
    match crate::model::from_local_seconds(local) {
        Some(t) if (0..=9999).contains(&t.year()) => {
            i64::from(t.year()) * 100 + i64::from(t.month())
        }
        _ => 0,
    }
}

/// Moves the provider's month counters (`plan_months`) by `deltas` (month
/// → plans gained, negative for plans lost) in the ingest's transaction.
pub(super) fn add_plan_months(
    conn: &Connection,
    provider: &str,
    deltas: &HashMap<i64, i64>,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO plan_months (provider, month, plans) VALUES (?1, ?2, ?3)
         ON CONFLICT (provider, month) DO UPDATE SET plans = plans + excluded.plans",
    )?;
    for (&month, &delta) in deltas {
        if delta != 0 {
            stmt.execute(params![provider, month, delta])?;
        }
    }
    Ok(())
}

fn plans_per_month(conn: &Connection) -> Result<Vec<MonthCount>> {
    // Counters kept by every ingest (migration V6): one row per provider
    // and month, never a scan of the plans. A month may have fallen to 0.
    let mut stmt = conn.prepare_cached(
        "SELECT provider, month, plans FROM plan_months WHERE plans > 0
         ORDER BY provider, month",
    )?;
    let rows = stmt.query_map([], |r| {
        let month: i64 = r.get(1)?;
        Ok(MonthCount {
            provider: r.get(0)?,
            month: if month > 0 {
                format!("{:04}-{:02}", month / 100, month % 100)
            } else {
                String::new()
            },
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
pub(super) const SEARCH_PROVIDER: &str = search_provider_sql!("start_at, end_at, id, json");
/// The same, positions only (where the next page starts).
pub(super) const SEARCH_PROVIDER_KEYS: &str = search_provider_sql!("start_at, end_at, id");

/// A plan on its way into a merged answer, keyed by instants.
struct Merged {
    start: i64,
    /// `i64::MIN` for no end: those sort first, as in one provider's order.
    end: i64,
    id: uuid::Uuid,
    /// Empty when only positions are read.
    json: Vec<u8>,
}

impl Merged {
    fn key(&self) -> (i64, i64, uuid::Uuid) {
        (self.start, self.end, self.id)
    }
}

/// A merged position as a key: no end sorts first.
fn position_key(p: &Position) -> (i64, i64, uuid::Uuid) {
    (p.start, p.end.unwrap_or(i64::MIN), p.id)
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
                    .map_err(StoreError::BadPlanId)?;
            let m = Merged {
                start: crate::model::local_to_instant(start, self.tz),
                // [`NO_END`] is `i64::MIN`, the merged order's "no end" too.
                end: if end == NO_END {
                    i64::MIN
                } else {
                    crate::model::local_to_instant(end, self.tz)
                },
                id,
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
        let mut best: Option<(usize, (i64, i64, uuid::Uuid))> = None;
        for (i, s) in self.streams.iter_mut().enumerate() {
            match s.head() {
                Ok(Some(m)) => {
                    let key = m.key();
                    if best.as_ref().is_none_or(|(_, k)| key < *k) {
                        best = Some((i, key));
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
pub(super) fn stream_providers<T>(
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
    .map_err(StoreError::from_read)
}

/// Moves the provider's counters (`plans_stored:NAME`,
/// `plans_searchable:NAME` in `meta`) in the ingest's transaction.
pub(super) fn add_provider_counts(
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
    /// provider then month order. Reads one counter per provider and month.
    pub fn plans_per_month(&self) -> Result<Vec<MonthCount>> {
        plans_per_month(&self.conn)
    }
}

// ---- end of several providers.

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{local_seconds, parse_feed_datetime, FeedPlan, Outcome, Window};
    use crate::store::test_support::*;

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
    fn month_of_local_seconds_agrees_with_sqlite_for_every_month_of_years_0000_to_9999() {
        use chrono::NaiveDate;
        let conn = Connection::open_in_memory().unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT CASE WHEN ?1 BETWEEN -62167219200 AND 253402300799
                     THEN CAST(strftime('%Y%m', ?1, 'unixepoch') AS INTEGER) ELSE 0 END",
            )
            .unwrap();
        let mut sqlite = |secs: i64| -> i64 { stmt.query_row([secs], |r| r.get(0)).unwrap() };
        let mut checked = 0;
        for year in 0..=9999 {
            for month in 1..=12 {
                let first = NaiveDate::from_ymd_opt(year, month, 1)
                    .unwrap()
                    .and_hms_opt(0, 0, 0)
                    .unwrap();
                let secs = local_seconds(&first);
                let want = i64::from(year) * 100 + i64::from(month);
                assert_eq!(month_of(secs), want, "{first}");
                // The month's first second, and the previous month's last.
                for s in [secs, secs - 1] {
                    assert_eq!(month_of(s), sqlite(s), "{s}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 10_000 * 12 * 2);
        // The last second of 9999, a leap second, and years SQLite does not
        // date (both give 0).
        let last = crate::model::parse_feed_datetime("9999-12-31T23:59:59").unwrap();
        let leap = crate::model::parse_feed_datetime("2016-12-31T23:59:60").unwrap();
        assert_eq!(month_of(local_seconds(&last)), 999_912);
        assert_eq!(month_of(local_seconds(&leap)), 201_612);
        let far = NaiveDate::from_ymd_opt(10_000, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let before = NaiveDate::from_ymd_opt(-1, 12, 31)
            .unwrap()
            .and_hms_opt(23, 59, 59)
            .unwrap();
        for t in [last, leap, far, before] {
            let s = local_seconds(&t);
            assert_eq!(month_of(s), sqlite(s), "{t}");
        }
        assert_eq!(month_of(local_seconds(&far)), 0);
        assert_eq!(month_of(local_seconds(&before)), 0);
        // V6's bounds are exactly the first and last second of 0000-9999.
        assert_eq!(month_of(-62_167_219_200), 1);
        assert_eq!(month_of(-62_167_219_201), 0);
        assert_eq!(month_of(253_402_300_799), 999_912);
        assert_eq!(month_of(253_402_300_800), 0);
    }

    #[test]
    fn month_counters_equal_a_recount_through_every_kind_of_change() {
        let db = temp_db("month-counters");
        let mut store = Store::open(&db).unwrap();
        let land = |store: &mut Store, provider: &str, plans: &[FeedPlan]| {
            let mut tx = store.begin_ingest(provider).unwrap();
            for p in plans {
                tx.upsert(p).unwrap();
            }
            tx.commit(&run(Outcome::Ok), None).unwrap();
        };
        let check = |store: &Store| {
            let (kept, recounted) = plan_months_kept_and_recounted(&store.conn);
            assert_eq!(kept, recounted);
            kept
        };
        let a = plan("1", "1", "2021-01-31T23:00:00", None, true);
        let b = plan("2", "1", "2021-02-01T00:00:00", None, false);
        let c = plan("3", "1", "2021-02-10T10:00:00", None, true);
        let d = plan("4", "1", "0001-01-01T00:00:00", None, true);
        let e = plan("5", "1", "9999-12-31T23:59:59", None, true);
        land(
            &mut store,
            "p",
            &[a.clone(), b.clone(), c.clone(), d.clone()],
        );
        land(&mut store, "q", &[a.clone(), e.clone()]);
        let kept = check(&store);
        let months: Vec<i64> = kept.iter().map(|k| k.1).collect();
        assert_eq!(months, [101, 202101, 202102, 202101, 999912]);
        // a moves to another month; b turns online (becomes searchable);
        // c goes offline (stays searchable) and moves; d is unchanged; a
        // plan listed twice in one feed with two starts counts once.
        let mut a2 = a.clone();
        a2.start = parse_feed_datetime("2021-03-01T00:00:00").unwrap();
        let mut b2 = b.clone();
        b2.online = true;
        let mut c2 = c.clone();
        c2.online = false;
        c2.start = parse_feed_datetime("2020-12-31T23:59:59").unwrap();
        let f = plan("6", "1", "2021-04-01T00:00:00", None, true);
        let mut f2 = f.clone();
        f2.start = parse_feed_datetime("2021-05-01T00:00:00").unwrap();
        land(
            &mut store,
            "p",
            &[a2.clone(), b2, c2.clone(), d.clone(), f, f2],
        );
        check(&store);
        // c back to its month while offline; a moves again; a rolled-back
        // ingest leaves the counters alone.
        let mut c3 = c2.clone();
        c3.start = c.start;
        let mut a3 = a2.clone();
        a3.start = a.start;
        land(&mut store, "p", &[a3, c3]);
        {
            let mut tx = store.begin_ingest("p").unwrap();
            tx.upsert(&plan("7", "1", "2022-01-01T00:00:00", None, true))
                .unwrap();
            tx.upsert(&a2).unwrap();
        }
        let kept = check(&store);
        // Months left empty are kept as zeros and skipped when read.
        let zeros: i64 = store
            .conn
            .query_row(
                "SELECT COUNT(*) FROM plan_months WHERE plans = 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(zeros > 0);
        let read: Vec<(String, String, u64)> = Reader::open(&db)
            .unwrap()
            .plans_per_month()
            .unwrap()
            .into_iter()
            .map(|m| (m.provider, m.month, m.plans))
            .collect();
        let want: Vec<(String, String, u64)> = kept
            .iter()
            .map(|(p, m, n)| {
                (
                    p.clone(),
                    format!("{:04}-{:02}", m / 100, m % 100),
                    *n as u64,
                )
            })
            .collect();
        assert_eq!(read, want);
        assert_eq!(read[0], ("p".to_string(), "0001-01".to_string(), 1));
    }

    #[test]
    fn journal_rows_name_their_provider() {
        let db = temp_db("journal");
        let mut store = Store::open(&db).unwrap();
        for (p, src) in [("a", "http://***@h/x?k=***"), ("b", "/tmp/feed.xml")] {
            let mut r = run(Outcome::Ok);
            r.provider = p.into();
            r.source = src.into();
            store.record_run(&r).unwrap();
        }
        let a = store.runs_of("a", 10).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].source, "http://***@h/x?k=***");
        assert_eq!(store.runs_of("b", 10).unwrap()[0].source, "/tmp/feed.xml");
        assert_eq!(store.runs(10).unwrap().len(), 2);
    }

    /// A store at V6 whose journal holds `rows` (source, outcome, error),
    /// opened by this planbox: the store and its journal rows, oldest first.
    fn journal_after_upgrade(
        db: &std::path::Path,
        rows: &[(&str, &str, Option<&str>)],
    ) -> (Store, Vec<(String, Option<String>)>) {
        {
            let conn = store_at_version(db, 6);
            for (source, outcome, error) in rows {
                conn.execute(
                    "INSERT INTO fetch_runs (started_at, duration_ms, source, outcome, error, provider)
                     VALUES ('2026-01-01T00:00:00Z', 1, ?1, ?2, ?3, 'a')",
                    params![source, outcome, error],
                )
                .unwrap();
            }
        }
        let store = Store::open(db).unwrap();
        let mut journal: Vec<(String, Option<String>)> = store
            .runs(10)
            .unwrap()
            .into_iter()
            .map(|r| (r.source, r.error))
            .collect();
        journal.reverse();
        (store, journal)
    }

    #[test]
    fn journal_urls_an_earlier_planbox_wrote_with_leading_whitespace_are_removed() {
        // Before the provider URL was parsed, `--provider-url ' https://…'`
        // was journaled as given; V7 only recognises sources that start
        // with `http`.
        let db = temp_db("v8");
        let (store, rows) = journal_after_upgrade(
            &db,
            &[
                (
                    " https://u:pw9@h/x?k=K3yS3cret",
                    "network_error",
                    Some("bad uri  https://u:pw9@h/x?k=K3yS3cret"),
                ),
                ("\n\thttp://u:pw9@h/x?k=K3yS3cret", "network_error", None),
                (" /srv/feed.xml", "network_error", Some("not well-formed")),
            ],
        );
        let removed = "removed: written by an earlier planbox, this text may have held credentials";
        assert_eq!(
            rows,
            [
                (removed.to_string(), Some(removed.to_string())),
                (removed.to_string(), None),
                (
                    " /srv/feed.xml".to_string(),
                    Some("not well-formed".to_string())
                ),
            ]
        );
        drop(store);
        let file = String::from_utf8_lossy(&std::fs::read(&db).unwrap()).into_owned();
        assert!(!file.contains("K3yS3cret") && !file.contains("pw9"));
    }

    #[test]
    fn journal_rows_of_an_earlier_planbox_are_redacted_whole_also_on_disk() {
        let db = temp_db("v7");
        let old = [
            (
                "https://u:pw@h/feed?S3cretTok",
                "network_error",
                Some("bad uri https://u:pw@h/feed?S3cretTok"),
            ),
            (
                "https://***@h/feed?key=***&S3cretTok",
                "http_error",
                Some("protocol: bad location header: http://cdn/x?X-Amz-Signature=S1gnatur3"),
            ),
            ("http://us3r:p@ss@h:8080/x/y@z#S3cretFrag", "ok", None),
            (
                "http://h/plain",
                "timeout",
                Some("no complete answer within 30s"),
            ),
            (
                "/srv/feeds/S3cretTok.xml",
                "parse_error",
                Some("not well-formed"),
            ),
        ];
        let (store, rows) = journal_after_upgrade(&db, &old);
        let removed = Some(
            "removed: written by an earlier planbox, this text may have held credentials"
                .to_string(),
        );
        assert_eq!(
            rows,
            [
                ("https://***@h/feed?***".to_string(), removed.clone()),
                ("https://***@h/feed?***".to_string(), removed.clone()),
                ("http://***@h:8080/x/y@z#***".to_string(), None),
                ("http://h/plain".to_string(), removed),
                (
                    "/srv/feeds/S3cretTok.xml".to_string(),
                    Some("not well-formed".to_string())
                ),
            ]
        );
        let secure_delete: i64 = store
            .conn
            .query_row("PRAGMA secure_delete", [], |r| r.get(0))
            .unwrap();
        assert_eq!(secure_delete, 0, "off again after the migration");
        drop(store);
        // The bytes the updates freed were zeroed, not left in free space.
        let mut file = std::fs::read(&db).unwrap();
        if let Ok(wal) = std::fs::read(db.with_extension("db-wal")) {
            file.extend(wal);
        }
        let text = String::from_utf8_lossy(&file);
        for secret in ["u:pw@", "p@ss", "S1gnatur3", "S3cretFrag", "feed?S3cretTok"] {
            assert!(!text.contains(secret), "{secret} is still in the file");
        }
        // A second open changes nothing.
        let again = Store::open(&db).unwrap();
        assert_eq!(again.runs(10).unwrap().len(), 5);
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
