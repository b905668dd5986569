//! The store's integrity check, in the background.
//!
//! `serve` does not read the whole file before it answers (that is O(store)
//! at every start: ~10 s at 1M plans with a cold page cache). Instead:
//! - after a clean stop (the store's clean-stop mark, see
//!   `Store::begin_serving`) the next check is due one interval after the
//!   last one that passed;
//! - after anything else (a crash, power loss, a store never served, or one
//!   that `import` wrote) a check starts at once, and writes wait for it
//!   (the fetch loop does not ingest until it passed);
//! - then every [`CHECK_INTERVAL`].
//!
//! A check runs `integrity_check` on its own read-only connection, throttled
//! to about half of one core's time, interruptible at shutdown. Its state is
//! in `check_state::CheckState` (`/metrics`, the status page) and the log; a damaged store
//! makes `/ready` fail with what to do. This module must not write plans or
//! hold the writer.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::check_state::{CheckState, DAMAGE_ADVICE};
use crate::log::{log, Level};
use crate::stop::Stop;
use crate::store::{self, CheckOutcome, StartState};

/// How often the store is checked while `serve` runs (and how old the last
/// passed check may be at a clean start).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// After a check that could not run to the end, the next try.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(3600);

/// The check works for at most this long at a time, then sleeps as long:
/// about half of one core, leaving the disk and the other core to searches.
const WORK_SLICE: Duration = Duration::from_millis(50);

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Starts the check thread. With `start.was_clean == false` the first check
/// runs at once and is marked blocking (see [`wait_for_first_check`]).
pub fn spawn(
    db: PathBuf,
    start: StartState,
    state: Arc<CheckState>,
    stop: Arc<Stop>,
) -> std::io::Result<JoinHandle<()>> {
    let now = now_unix();
    let first_due = match (start.was_clean, start.checked_at) {
        (true, Some(at)) => at.saturating_add(CHECK_INTERVAL.as_secs() as i64),
        _ => now,
    };
    state.update(|c| {
        c.blocking = !start.was_clean;
        c.last_passed = start.checked_at.unwrap_or(0);
    });
    thread::Builder::new()
        .name("planbox-check".into())
        .spawn(move || run(db, first_due, state, stop))
}

fn run(db: PathBuf, mut due: i64, state: Arc<CheckState>, stop: Arc<Stop>) {
    loop {
        let wait = Duration::from_secs(due.saturating_sub(now_unix()).max(0) as u64);
        if stop.wait(wait) {
            return;
        }
        state.update(|c| c.running = true);
        let started = Instant::now();
        let s = stop.clone();
        let mut slice = Instant::now();
        let pace = move || {
            if s.is_stopped() {
                return false;
            }
            let worked = slice.elapsed();
            if worked >= WORK_SLICE {
                // Sleeps as long as it worked, unless asked to stop.
                if s.wait(worked) {
                    return false;
                }
                slice = Instant::now();
            }
            true
        };
        let result = store::check_integrity(&db, pace);
        let ms = started.elapsed().as_millis() as u64;
        let at = now_unix();
        match result {
            Ok(CheckOutcome::Sound) => {
                if let Err(e) = store::record_check_passed(&db, at) {
                    crate::log::warn(&format!(
                        "cannot record the passed store check: {}",
                        crate::log::chain(&e)
                    ));
                }
                state.update(|c| {
                    c.running = false;
                    c.blocking = false;
                    c.passed += 1;
                    c.last_passed = at;
                });
                log(Level::Info, "store check passed", &[("ms", &ms)]);
                due = at + CHECK_INTERVAL.as_secs() as i64;
            }
            Ok(CheckOutcome::Damaged(detail)) => {
                let detail = brief(&detail);
                // State first, then the log line: whoever reads the line
                // finds /ready and /metrics already saying so.
                state.update(|c| {
                    c.running = false;
                    c.damaged += 1;
                    c.damage = Some(detail.clone());
                });
                log(
                    Level::Error,
                    "the store is damaged",
                    &[
                        ("db", &db.display()),
                        ("detail", &detail),
                        ("what_to_do", &DAMAGE_ADVICE),
                    ],
                );
                // Nothing more to learn: it stays damaged until replaced.
                return;
            }
            Ok(CheckOutcome::Interrupted) => {
                state.update(|c| c.running = false);
                return;
            }
            Err(e) => {
                crate::log::warn(&format!(
                    "the store check could not run: {}",
                    crate::log::chain(&e)
                ));
                state.update(|c| {
                    c.running = false;
                    c.blocking = false;
                    c.failed += 1;
                });
                due = at + RETRY_AFTER_FAILURE.as_secs() as i64;
            }
        }
    }
}

/// The first findings of a check, bounded for a page or a metric label.
fn brief(detail: &str) -> String {
    let mut out: String = detail
        .lines()
        .filter(|l| !l.starts_with("***"))
        .take(3)
        .collect::<Vec<_>>()
        .join("; ");
    if out.chars().count() > 300 {
        out = out.chars().take(300).collect::<String>() + "…";
    }
    out
}

/// Blocks until no check is blocking writes (or `stop`). True when the
/// store may be written: not found damaged.
pub fn wait_for_first_check(state: &CheckState, stop: &Stop) -> bool {
    loop {
        let c = state.get();
        if c.damage.is_some() {
            return false;
        }
        if !c.blocking {
            return true;
        }
        if stop.wait(Duration::from_millis(50)) {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_sound_store_passes_and_the_pass_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("planbox.db");
        let mut store = Store::open(&db).unwrap();
        let start = store.begin_serving().unwrap();
        assert_eq!(
            start,
            StartState {
                was_clean: false,
                checked_at: None
            }
        );
        let state = Arc::new(CheckState::default());
        let stop = Stop::new();
        let t = spawn(db.clone(), start, state.clone(), stop.clone()).unwrap();
        assert!(state.get().blocking);
        assert!(wait_for_first_check(&state, &stop));
        let c = state.get();
        assert_eq!((c.passed, c.damaged, c.failed), (1, 0, 0));
        stop.stop();
        t.join().unwrap();
        // A clean stop, then the next start knows both.
        store.mark_clean().unwrap();
        drop(store);
        let mut store = Store::open(&db).unwrap();
        let start = store.begin_serving().unwrap();
        assert!(start.was_clean);
        assert!(start.checked_at.is_some());
        // The mark is cleared: a crash now is seen at the next start.
        drop(store);
        assert!(!Store::open(&db).unwrap().begin_serving().unwrap().was_clean);
        // An ingest outside serve (import) clears it too.
        let mut store = Store::open(&db).unwrap();
        store.mark_clean().unwrap();
        let run = crate::model::FetchRun {
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_ms: 0,
            source: "test".into(),
            outcome: crate::model::Outcome::Ok,
            http_status: None,
            bytes: 0,
            counts: Default::default(),
            skipped: Default::default(),
            repaired: Default::default(),
            error: None,
            provider: "p".into(),
        };
        store.begin_ingest("p").unwrap().commit(&run, None).unwrap();
        assert!(!store.begin_serving().unwrap().was_clean);
    }

    #[test]
    fn a_damaged_store_is_reported_and_blocks_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("planbox.db");
        {
            let store = Store::open(&db).unwrap();
            drop(store);
            let c = rusqlite::Connection::open(&db).unwrap();
            c.execute_batch(
                "CREATE TABLE filler (x TEXT);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
                 INSERT INTO filler SELECT printf('%0200d', i) FROM n;
                 PRAGMA wal_checkpoint(TRUNCATE);",
            )
            .unwrap();
        }
        let mut bytes = std::fs::read(&db).unwrap();
        let mid = bytes.len() / 2;
        for (i, b) in bytes[mid - 8192..mid + 8192].iter_mut().enumerate() {
            *b = (i * 7 + 13) as u8;
        }
        std::fs::write(&db, &bytes).unwrap();
        let state = Arc::new(CheckState::default());
        let stop = Stop::new();
        let start = StartState {
            was_clean: false,
            checked_at: None,
        };
        let t = spawn(db.clone(), start, state.clone(), stop.clone()).unwrap();
        assert!(!wait_for_first_check(&state, &stop));
        t.join().unwrap();
        let c = state.get();
        assert_eq!(c.damaged, 1);
        assert!(c.damage.is_some());
        assert!(std::fs::read(&db).unwrap() == bytes, "left untouched");
    }
}
