//! planbox: mirror a flaky XML events feed into a fast, always-available
//! date-range search API backed by one SQLite file.
//!
//! See `ARCHITECTURE.md` for the codemap and the data path.

pub mod api;
pub mod digest;
pub mod log;
pub mod metrics;
pub mod model;
pub mod query;
pub mod status_page;
pub mod store;
