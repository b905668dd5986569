//! Facts about the running service that the fetch loops write and the API
//! and the status page read: each provider as shown (its URL redacted), its
//! zone, and its next scheduled fetch; and the store check's state.
//!
//! Plain shared values: it must not do I/O or know HTTP or the store.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;

use crate::check_state::CheckState;

/// Facts about the running service shown on the status page.
#[derive(Debug, Default)]
pub struct ServiceInfo {
    pub version: &'static str,
    /// In configuration order; empty when nothing is fetched.
    pub providers: Vec<ProviderInfo>,
    /// The background store check's state (written by `checker.rs`).
    pub store_check: Arc<CheckState>,
}

/// One provider as people may see it.
#[derive(Debug, Default)]
pub struct ProviderInfo {
    pub name: String,
    /// The feed URL with its credentials redacted; empty: not fetched.
    pub url: String,
    /// IANA zone of the feed's local times.
    pub timezone: String,
    /// Unix seconds of the next scheduled fetch; 0 = unknown.
    pub next_fetch: AtomicI64,
}

impl ServiceInfo {
    pub fn provider(&self, name: &str) -> Option<&ProviderInfo> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// Records the next fetch of `provider` (unknown names are ignored).
    pub fn set_next_fetch(&self, provider: &str, unix: i64) {
        if let Some(p) = self.provider(provider) {
            p.next_fetch.store(unix, Relaxed);
        }
    }
}

impl ProviderInfo {
    pub fn next_fetch(&self) -> Option<i64> {
        Some(self.next_fetch.load(Relaxed)).filter(|t| *t > 0)
    }
}
