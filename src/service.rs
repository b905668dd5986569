//! Facts about the running service that the fetch loop writes and the API
//! and the status page read (the provider shown, the next scheduled fetch).
//!
//! Plain shared values: it must not do I/O or know HTTP or the store.

use std::sync::atomic::AtomicI64;

/// Facts about the running service shown on the status page.
#[derive(Debug, Default)]
pub struct ServiceInfo {
    pub provider_url: String,
    pub version: &'static str,
    /// Unix seconds of the next scheduled fetch; 0 = unknown.
    pub next_fetch: AtomicI64,
}
