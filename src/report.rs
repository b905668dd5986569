//! What the one-shot commands print for people: a fetch run, the journal
//! table of `planbox status`, the event table of `planbox search`, and the
//! progress line of `planbox import` on a terminal.
//!
//! Writes to the `Write` it is handed (stdout or stderr in `app.rs`, a
//! buffer in tests). It must not read the store or decide exit codes.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::model::{EventRow, FetchRun};
use crate::store::StoreCounts;

/// One fetch or import run: a summary line, then its skips and repairs by
/// reason; `json`: the run as pretty JSON.
pub fn run(out: &mut dyn Write, run: &FetchRun, json: bool) -> io::Result<()> {
    if json {
        let text = serde_json::to_string_pretty(run).map_err(io::Error::other)?;
        return writeln!(out, "{text}");
    }
    writeln!(
        out,
        "{}: {} (HTTP {}) {} bytes in {} ms: {} seen, {} new, {} updated, {} unchanged, {} skipped{}",
        run.source,
        run.outcome,
        run.http_status_text(),
        run.bytes,
        run.duration_ms,
        run.counts.plans_seen,
        run.counts.plans_new,
        run.counts.plans_updated,
        run.counts.plans_unchanged,
        run.skipped_total(),
        run.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
    )?;
    for (reason, n) in &run.skipped {
        writeln!(out, "  skipped {reason}: {n}")?;
    }
    for (reason, n) in &run.repaired {
        writeln!(out, "  repaired {reason}: {n}")?;
    }
    Ok(())
}

/// `planbox status`: the store's counts, then one line per journal run.
pub fn status(
    out: &mut dyn Write,
    db: &Path,
    counts: &StoreCounts,
    generation: u64,
    runs: &[FetchRun],
) -> io::Result<()> {
    writeln!(
        out,
        "{}: {} plans stored, {} searchable, data generation {}",
        db.display(),
        counts.plans_stored,
        counts.plans_searchable,
        generation
    )?;
    writeln!(
        out,
        "{:<12}  {:<24}  {:<13}  {:>4}  {:>10}  {:>7}  {:>6}  {:>5}  {:>7}  {:>7}  {:>8}  error",
        "provider",
        "started_at",
        "outcome",
        "http",
        "bytes",
        "ms",
        "seen",
        "new",
        "updated",
        "skipped",
        "repaired"
    )?;
    for r in runs {
        writeln!(
            out,
            "{:<12}  {:<24}  {:<13}  {:>4}  {:>10}  {:>7}  {:>6}  {:>5}  {:>7}  {:>7}  {:>8}  {}",
            if r.provider.is_empty() {
                "-"
            } else {
                &r.provider
            },
            r.started_at,
            r.outcome.as_str(),
            r.http_status_text(),
            r.bytes,
            r.duration_ms,
            r.counts.plans_seen,
            r.counts.plans_new,
            r.counts.plans_updated,
            r.skipped_total(),
            r.repaired_total(),
            r.error.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

/// The head line of `planbox search`'s table.
pub fn event_header(out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{:<36}  {:<19}  {:<19}  {:>9}  {:>9}  title",
        "id", "start", "end", "min", "max"
    )
}

/// One event of `planbox search`'s table.
pub fn event_row(out: &mut dyn Write, e: &EventRow) -> io::Result<()> {
    writeln!(
        out,
        "{:<36}  {:<19}  {:<19}  {:>9}  {:>9}  {}",
        e.id,
        e.start(),
        e.end(),
        EventRow::price(&e.min_price),
        EventRow::price(&e.max_price),
        e.title
    )
}

/// A progress line on a terminal: bytes, rate and ETA, at most 10 per second.
pub struct Progress {
    enabled: bool,
    name: String,
    started: Instant,
    last: Instant,
}

impl Progress {
    /// Shown on stderr, only when stderr is a terminal.
    pub fn new(name: &str) -> Progress {
        Progress {
            enabled: io::stderr().is_terminal(),
            name: name.to_owned(),
            started: Instant::now(),
            last: Instant::now() - Duration::from_secs(1),
        }
    }

    pub fn update(&mut self, pos: u64, total: u64) {
        if !self.enabled || self.last.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = pos as f64 / secs;
        let eta = if rate > 0.0 && total > pos {
            format!("{:.0}s", (total - pos) as f64 / rate)
        } else {
            "-".into()
        };
        let pct = if total > 0 {
            pos as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        let mut err = io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{}: {:.1}/{:.1} MB ({pct:.0}%)  {:.1} MB/s  ETA {eta}",
            self.name,
            pos as f64 / 1e6,
            total as f64 / 1e6,
            rate / 1e6
        );
        let _ = err.flush();
    }

    pub fn done(&self) {
        if self.enabled {
            let _ = write!(io::stderr().lock(), "\r\x1b[2K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;

    fn sample() -> FetchRun {
        FetchRun {
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_ms: 12,
            source: "feed.xml".into(),
            outcome: Outcome::Ok,
            http_status: None,
            bytes: 300,
            counts: Default::default(),
            skipped: [("bad_date".to_owned(), 2)].into(),
            repaired: [("html_entity".to_owned(), 1)].into(),
            error: None,
            provider: String::new(),
        }
    }

    #[test]
    fn a_run_shows_its_skips_and_repairs_by_reason() {
        let mut out = Vec::new();
        run(&mut out, &sample(), false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("feed.xml: ok (HTTP -) 300 bytes in 12 ms:"),
            "{text}"
        );
        assert!(text.contains("2 skipped\n"), "{text}");
        assert!(
            text.contains("  skipped bad_date: 2\n  repaired html_entity: 1\n"),
            "{text}"
        );
        let mut out = Vec::new();
        run(&mut out, &sample(), true).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(back["source"], "feed.xml");
    }

    #[test]
    fn the_status_table_names_a_run_without_provider_with_a_dash() {
        let mut out = Vec::new();
        let counts = StoreCounts {
            plans_stored: 3,
            plans_searchable: 2,
        };
        status(&mut out, Path::new("p.db"), &counts, 7, &[sample()]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "p.db: 3 plans stored, 2 searchable, data generation 7"
        );
        assert!(lines[1].starts_with("provider "), "{text}");
        assert!(lines[2].starts_with("-  "), "{text}");
        assert_eq!(lines.len(), 3);
    }
}
