//! A stop request shared by the threads of a process.
//!
//! Owns `Stop`: a flag the loops poll and a condition variable their sleeps
//! wait on, so a stop wakes every sleeper at once. Must not know what the
//! loops do (fetching, checking, serving): every layer may take it.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A stop request shared by the loops of a process.
#[derive(Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
    flag: AtomicBool,
}

impl Stop {
    pub fn new() -> Arc<Stop> {
        Arc::new(Stop::default())
    }

    pub fn stop(&self) {
        self.flag.store(true, Relaxed);
        if let Ok(mut s) = self.stopped.lock() {
            *s = true;
        }
        self.cv.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        self.flag.load(Relaxed)
    }

    /// Sleeps up to `d`; returns `true` when stopped meanwhile.
    pub fn wait(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let Ok(mut stopped) = self.stopped.lock() else {
            return true;
        };
        while !*stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.cv.wait_timeout(stopped, left) {
                Ok((g, _)) => stopped = g,
                Err(_) => return true,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_wakes_a_waiting_loop() {
        let stop = Stop::new();
        let s = stop.clone();
        let t = std::thread::spawn(move || s.wait(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        stop.stop();
        assert!(t.join().unwrap());
        assert!(!Stop::new().wait(Duration::from_millis(1)));
    }
}
