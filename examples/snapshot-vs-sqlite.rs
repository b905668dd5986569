//! snapshot-vs-sqlite: the measurement behind "SQLite reads per worker, not
//! an in-memory snapshot" (ARCHITECTURE.md, issue: core appliance).
//!
//! Loads every searchable plan of a store into a sorted in-memory snapshot
//! (what a snapshot design would build at start and after every commit),
//! reports its load time and memory, then answers the same seeded random
//! windows both ways (`store::Reader::search` and a binary search over the
//! snapshot), checks that the bodies are byte-identical, and prints the time
//! per answer of each. Answer caching is left out on purpose: it serves
//! repeated windows from the same bytes in both designs.
//!
//! ```text
//! cargo run --release --example snapshot-vs-sqlite -- DB [WINDOW_DAYS] [QUERIES]
//! ```
//!
//! The snapshot query below is the one piece of SQL outside `store/`: it is
//! the alternative design being measured, not part of planbox.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, Result};
use planbox::model::Window;
use planbox::store::Reader;

/// One searchable plan as a snapshot would hold it.
struct Row {
    start: i64,
    end: Option<i64>,
    json: Box<str>,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn snapshot_body(rows: &[Row], w: &Window) -> Vec<u8> {
    let mut body = br#"{"data":{"events":["#.to_vec();
    if !w.is_empty() {
        let lo = w.starts_at.unwrap_or(i64::MIN);
        let hi = w.ends_at.unwrap_or(i64::MAX);
        let first = rows.partition_point(|r| r.start < lo);
        let mut sep = false;
        for r in rows[first..].iter().take_while(|r| r.start <= hi) {
            if w.ends_at.is_some() && r.end.is_none_or(|e| e > hi) {
                continue;
            }
            if sep {
                body.push(b',');
            }
            sep = true;
            body.extend_from_slice(r.json.as_bytes());
        }
    }
    body.extend_from_slice(br#"]},"error":null}"#);
    body
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let db = PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow!("usage: DB [DAYS] [QUERIES]"))?,
    );
    let days: i64 = args.next().map_or(Ok(7), |d| d.parse())?;
    let queries: usize = args.next().map_or(Ok(2000), |q| q.parse())?;

    let rss0 = rss_kib();
    let t = Instant::now();
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(
        "SELECT start_at, NULLIF(end_at, -9223372036854775808), json FROM plans_search
         ORDER BY start_at, end_at, id",
    )?;
    let rows: Vec<Row> = stmt
        .query_map([], |r| {
            Ok(Row {
                start: r.get(0)?,
                end: r.get(1)?,
                json: r.get::<_, String>(2)?.into_boxed_str(),
            })
        })?
        .collect::<Result<_, _>>()?;
    drop(stmt);
    let load = t.elapsed();
    let held: usize = rows
        .iter()
        .map(|r| r.json.len() + std::mem::size_of::<Row>())
        .sum();
    println!(
        "snapshot: {} plans loaded in {:.0} ms; {:.1} MiB of rows; RSS +{:.1} MiB",
        rows.len(),
        load.as_secs_f64() * 1e3,
        held as f64 / (1 << 20) as f64,
        (rss_kib().saturating_sub(rss0)) as f64 / 1024.0
    );
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Err(anyhow!("no searchable plans in {}", db.display()));
    };
    let (min, span) = (first.start, (last.start - first.start).max(1));

    // Seeded windows of `days` days over the stored range.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let windows: Vec<Window> = (0..queries)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let lo = min + (x % span as u64) as i64;
            Window {
                starts_at: Some(lo),
                ends_at: Some(lo + days * 86_400),
            }
        })
        .collect();

    let mut reader = Reader::open(&db)?;
    let (mut sqlite_bytes, mut snap_bytes) = (0usize, 0usize);
    let t = Instant::now();
    let mut sqlite_bodies = Vec::with_capacity(windows.len());
    for w in &windows {
        let body = reader.search(w)?.body;
        sqlite_bytes += body.len();
        sqlite_bodies.push(body);
    }
    let sqlite = t.elapsed();
    let t = Instant::now();
    for (w, expected) in windows.iter().zip(&sqlite_bodies) {
        let body = snapshot_body(&rows, w);
        snap_bytes += body.len();
        if &body != expected {
            return Err(anyhow!("snapshot and SQLite disagree on {w:?}"));
        }
    }
    let snap = t.elapsed();
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / windows.len() as f64;
    println!(
        "{} random {days}-day windows, {:.0} KiB per answer on average, identical bodies",
        windows.len(),
        sqlite_bytes as f64 / windows.len() as f64 / 1024.0
    );
    println!("sqlite reader:  {:>9.1} us per answer", per(sqlite));
    println!(
        "snapshot:       {:>9.1} us per answer ({:.1}x faster)",
        per(snap),
        per(sqlite) / per(snap).max(1e-9)
    );
    debug_assert_eq!(sqlite_bytes, snap_bytes);
    Ok(())
}
