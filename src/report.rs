//! What the one-shot commands print for people: a fetch run, the journal
//! table of `planbox status`, the event table of `planbox search`, and the
//! progress line of `planbox import` on a terminal.
//!
//! Writes to the `Write` it is handed (stdout or stderr in `app.rs`, a
//! buffer in tests). It must not read the store or decide exit codes.
//!
//! Text that came from a feed or the store (titles, sources, error texts,
//! provider names) never reaches the output with a character a terminal
//! acts on: [`Shown`] escapes control characters in tables and messages,
//! [`TerminalJson`] writes DEL and the C1 controls of JSON text as `\u`
//! escapes.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::model::{EventRow, FetchRun};
use crate::store::StoreCounts;

/// One fetch or import run: a summary line, then its skips and repairs by
/// reason; `json`: the run as pretty JSON.
pub fn run(out: &mut dyn Write, run: &FetchRun, json: bool) -> io::Result<()> {
    if json {
        return self::json(out, run);
    }
    writeln!(
        out,
        "{}: {} (HTTP {}) {} bytes in {} ms: {} seen, {} new, {} updated, {} unchanged, {} skipped{}",
        Shown(&run.source),
        run.outcome,
        run.http_status_text(),
        run.bytes,
        run.duration_ms,
        run.counts.plans_seen,
        run.counts.plans_new,
        run.counts.plans_updated,
        run.counts.plans_unchanged,
        run.skipped_total(),
        run.error
            .as_ref()
            .map(|e| format!(": {}", Shown(e)))
            .unwrap_or_default()
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
            Shown(if r.provider.is_empty() {
                "-"
            } else {
                &r.provider
            }),
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
            Shown(r.error.as_deref().unwrap_or(""))
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
        Shown(&e.title)
    )
}

/// `value` as pretty JSON on one [`TerminalJson`], then a line feed.
pub fn json(out: &mut dyn Write, value: &impl serde::Serialize) -> io::Result<()> {
    let mut out = TerminalJson::new(out);
    serde_json::to_writer_pretty(&mut out, value).map_err(io::Error::other)?;
    writeln!(out)?;
    out.finish()
}

/// A value from a feed or the store as shown on one line of a terminal:
/// every control character (C0 including tab, line feed and carriage
/// return, DEL, C1) written as its Unicode escape (`\u{1b}`), so no title
/// or error text can break a table's lines, move the cursor, recolour or
/// clear the screen. Padding (`{:<12}`) applies to the escaped text.
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = if self.0.contains(char::is_control) {
            let mut s = String::with_capacity(self.0.len() + 8);
            for c in self.0.chars() {
                if c.is_control() {
                    s.extend(c.escape_unicode());
                } else {
                    s.push(c);
                }
            }
            Cow::Owned(s)
        } else {
            Cow::Borrowed(self.0)
        };
        f.pad(&text)
    }
}

/// A writer of UTF-8 JSON text that writes DEL and the C1 controls
/// (U+0080-U+009F), which JSON allows raw and `serde_json` writes raw, as
/// `\u007f`..`\u009f` escapes: the same JSON value, nothing a terminal
/// acts on (C0 controls are always escaped by `serde_json`). In JSON text
/// these characters only stand inside strings, and their bytes (`7f`, and
/// `c2` before `80`..`9f`) are never part of another character, so the
/// bytes are rewritten as they stream, whatever the chunks.
pub struct TerminalJson<W: Write> {
    inner: W,
    /// A `c2` byte that ended the last write: its character is decided by
    /// the next byte.
    pending_c2: bool,
}

impl<W: Write> TerminalJson<W> {
    pub fn new(inner: W) -> TerminalJson<W> {
        TerminalJson {
            inner,
            pending_c2: false,
        }
    }

    /// Writes a `c2` still pending (text that ended inside a character)
    /// and flushes.
    pub fn finish(mut self) -> io::Result<()> {
        if std::mem::take(&mut self.pending_c2) {
            self.inner.write_all(&[0xc2])?;
        }
        self.inner.flush()
    }
}

impl<W: Write> Write for TerminalJson<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let c1 = |b: u8| (0x80..=0x9f).contains(&b);
        let (mut start, mut i) = (0, 0);
        if std::mem::take(&mut self.pending_c2) {
            match buf.first() {
                Some(&b) if c1(b) => {
                    write!(self.inner, "\\u{b:04x}")?;
                    (start, i) = (1, 1);
                }
                Some(_) => self.inner.write_all(&[0xc2])?,
                None => self.pending_c2 = true,
            }
        }
        while i < buf.len() {
            let escaped = match (buf[i], buf.get(i + 1)) {
                (0x7f, _) => Some((0x7f, 1)),
                (0xc2, Some(&b)) if c1(b) => Some((b, 2)),
                (0xc2, None) => {
                    self.inner.write_all(&buf[start..i])?;
                    self.pending_c2 = true;
                    return Ok(buf.len());
                }
                _ => None,
            };
            match escaped {
                Some((b, len)) => {
                    self.inner.write_all(&buf[start..i])?;
                    write!(self.inner, "\\u{b:04x}")?;
                    i += len;
                    start = i;
                }
                None => i += 1,
            }
        }
        self.inner.write_all(&buf[start..])?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
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

    #[test]
    fn shown_escapes_every_control_character_and_pads_the_escaped_text() {
        let text = "a\u{1b}[2J\tb\r\nc\u{7f}\u{9b}d\u{85}é";
        let shown = format!("[{:<50}]", Shown(text));
        assert_eq!(
            shown,
            "[a\\u{1b}[2J\\u{9}b\\u{d}\\u{a}c\\u{7f}\\u{9b}d\\u{85}é   ]"
        );
        assert_eq!(format!("{:<5}|", Shown("ab")), "ab   |");
    }

    #[test]
    fn terminal_json_escapes_del_and_c1_in_any_chunks_and_keeps_the_value() {
        let value = serde_json::json!({ "t": "x\u{7f}\u{80}\u{9b}\u{9f}\u{a0}éÂ\u{85}\u{1b}" });
        let plain = serde_json::to_vec(&value).unwrap();
        for chunk in 1..=plain.len() {
            let mut out = Vec::new();
            let mut w = TerminalJson::new(&mut out);
            for part in plain.chunks(chunk) {
                w.write_all(part).unwrap();
            }
            w.finish().unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(!text.chars().any(char::is_control), "{text:?}");
            assert!(
                text.contains("x\\u007f\\u0080\\u009b\\u009f\u{a0}"),
                "{text}"
            );
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back, value);
        }
    }
}
