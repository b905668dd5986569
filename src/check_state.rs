//! The background store check's state, shared below the layers that use it:
//! the checker writes it, the fetch loops wait on it before they write, and
//! HTTP (`/ready`, `/metrics`) and the status page read it.
//!
//! Plain values: it must not do I/O or run the check (see `checker.rs`).

use std::sync::Mutex;

/// What the message of a damaged store tells the operator to do.
pub const DAMAGE_ADVICE: &str = "stop planbox, move the store aside, restore the newest backup \
     (`planbox backup` makes verified copies) or delete it to start empty, and start planbox again";

/// The background store check's state at one moment (see `checker.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreCheck {
    /// A check is running now.
    pub running: bool,
    /// Writes wait for this check: the store was not stopped cleanly.
    pub blocking: bool,
    pub passed: u64,
    pub damaged: u64,
    /// Checks that could not run to the end (I/O error, store busy).
    pub failed: u64,
    /// Unix seconds of the last check that passed (this run or recorded
    /// in the store); 0 = none.
    pub last_passed: i64,
    /// What the check found, once the store was found damaged.
    pub damage: Option<String>,
}

/// The shared [`StoreCheck`]: written by the checker, read by everyone else.
#[derive(Debug, Default)]
pub struct CheckState(Mutex<StoreCheck>);

impl CheckState {
    pub fn get(&self) -> StoreCheck {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn update(&self, f: impl FnOnce(&mut StoreCheck)) {
        if let Ok(mut c) = self.0.lock() {
            f(&mut c);
        }
    }

    /// A check found the store damaged: it is never written again.
    pub fn damaged(&self) -> bool {
        self.get().damage.is_some()
    }
}
