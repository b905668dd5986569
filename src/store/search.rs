//! The `/search` read of one provider's plans: the SQL of a page and of
//! where it ends, keyset cursor binding, the streaming body over the rows of
//! a running query (`RowsBody`), and the read-only [`Reader`] of an HTTP
//! worker.
//!
//! Must not write (readers are `query_only`), and must not build an answer
//! in memory except for the tests' and CLI's small windows.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::providers::stream_providers;
use super::{
    counts, data_version, generation, open_conn, runs, DataVersion, Result, StoreCounts,
    StoreError, NO_END, READER_BUSY_TIMEOUT,
};
use crate::model::{FetchRun, Position, SearchQuery, Window};

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

pub(super) const ENVELOPE_HEAD: &[u8] = br#"{"data":{"events":["#;
pub(super) const ENVELOPE_TAIL: &[u8] = br#"]},"error":null}"#;

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
            // Compared as the 16 bytes the table holds.
            Blob(p.id.as_bytes().to_vec()),
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
pub(super) fn stream_search<T>(
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
        let rows: Vec<(i64, i64, Vec<u8>)> = stmt
            .query_map(search_params(q, i64::from(limit.max(1)) - 1), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        let ends = rows
            .into_iter()
            .map(|(start, end, id)| {
                Ok(Position {
                    start,
                    end: (end != NO_END).then_some(end),
                    id: uuid::Uuid::from_slice(&id).map_err(StoreError::BadPlanId)?,
                })
            })
            .collect::<Result<Vec<Position>>>()?;
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
pub(super) enum Stage {
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
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
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
            .map_err(StoreError::from_read)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{local_seconds, parse_feed_datetime};
    use crate::store::providers::{SEARCH_PROVIDER, SEARCH_PROVIDER_KEYS};
    use crate::store::test_support::*;
    use crate::store::Store;

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
    fn a_stored_id_that_is_not_a_uuid_fails_the_page_instead_of_a_nil_cursor() {
        let path = temp_db("bad-id");
        let mut store = Store::open(&path).unwrap();
        let day = "2021-01-01T10:00:00";
        ingest(
            &mut store,
            &[
                plan("a", "1", day, None, true),
                plan("b", "1", day, None, true),
            ],
        );
        store
            .conn
            .execute(
                "UPDATE plans_search SET id = x'0102' WHERE id = (SELECT MIN(id) FROM plans_search)",
                [],
            )
            .unwrap();
        let q = SearchQuery {
            window: Window::default(),
            limit: Some(1),
            after: None,
            parts: Vec::new(),
        };
        let err = store.stream(&q, |s, _| s.next.clone()).unwrap_err();
        assert!(matches!(err, StoreError::BadPlanId(_)), "{err:?}");
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
                            assert_eq!(p.id.to_string(), walked.last().unwrap().0);
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
}
