//! Integrity checks of the store file: `quick_check`/`integrity_check` on a
//! connection, the paced background check on its own read-only connection,
//! recording a passed check, and refusing files that are not a planbox
//! store.
//!
//! Must not repair, rewrite or delete anything: a check only reads (its one
//! write is the `checked_at` mark of a check that passed).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{
    classify, open_conn, Result, StoreError, APPLICATION_ID, READER_BUSY_TIMEOUT,
    WRITER_BUSY_TIMEOUT,
};

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

pub(super) fn check_identity(conn: &Connection, path: &Path) -> Result<()> {
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

pub(super) fn integrity(conn: &Connection, path: &Path, pragma: &str) -> Result<()> {
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
