//! planbox: mirror a flaky XML events feed into a fast, always-available
//! date-range search API backed by one SQLite file.
//!
//! See `ARCHITECTURE.md` for the codemap and the data path.

pub mod app;
pub mod check_state;
pub mod checker;
pub mod cli;
pub mod config;
pub mod digest;
pub mod feed;
pub mod fetch;
pub mod http;
pub mod log;
pub mod manual;
pub mod metrics;
pub mod model;
pub mod percent;
pub mod provider_sim;
pub mod query;
pub mod report;
pub mod secret;
pub mod service;
pub mod status_page;
pub mod stop;
pub mod store;
pub mod sync;
pub mod systemd;
pub mod tls;

pub use http::{api, server};
