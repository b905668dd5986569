//! planbox: mirror a flaky XML events feed into a fast, always-available
//! date-range search API backed by one SQLite file.
//!
//! See `ARCHITECTURE.md` for the codemap and the data path.

pub mod model;
pub mod parse;
