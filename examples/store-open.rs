//! store-open: what `planbox serve` does with the store before it answers,
//! step by step, timed.
//!
//! `serve` opens and migrates the store, reads the journal (100 runs) and
//! the counts, then opens one reader per HTTP worker; the integrity check
//! runs in the background (throttled). This prints the wall time of each of
//! those steps on the given store, and last the check itself, unthrottled,
//! so the cold-start figures in docs/PERFORMANCE.md can be split into their
//! parts. Run it after dropping the page cache (or not) to see cold and
//! warm costs.
//!
//! ```text
//! cargo run --release --example store-open -- bench/out/db-p1m/planbox.db
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use planbox::model::{local_seconds, parse_feed_datetime, Window};
use planbox::store::{Reader, Store};

fn main() -> Result<()> {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("usage: store-open DB"))?;
    let mut step = Instant::now();
    let mut lap = |what: &str| {
        println!("{what:<28} {:>9.1} ms", step.elapsed().as_secs_f64() * 1e3);
        step = Instant::now();
    };
    let t0 = Instant::now();
    let store = Store::open(&path)?;
    lap("open + migrate");
    let runs = store.runs(100)?;
    lap(&format!("journal ({} runs)", runs.len()));
    let counts = store.counts()?;
    lap(&format!("counts ({} plans)", counts.plans_stored));
    let mut reader = Reader::open(&path)?;
    lap("reader open");
    let ready = reader.ready();
    lap(&format!("ready check ({ready})"));
    let at = |s: &str| parse_feed_datetime(s).map(|t| local_seconds(&t));
    let week = Window {
        starts_at: at("2021-02-01T00:00:00"),
        ends_at: at("2021-02-08T00:00:00"),
    };
    let answer = reader.search(&week)?;
    lap(&format!("week search ({} bytes)", answer.body.len()));
    println!(
        "{:<28} {:>9.1} ms",
        "total",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let outcome = planbox::store::check_integrity(&path, || true)?;
    lap(&format!("integrity_check ({outcome:?})"));
    Ok(())
}
