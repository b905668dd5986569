//! planbox's integration tests: one test binary (fast to link), one module
//! per area. Tests start the real server on port 0 against the in-process
//! fake provider, or run the built `planbox` binary.

mod answers;
mod caching;
mod connections;
mod core;
mod hostile;
mod layers;
mod ops;
mod providers;
mod realxml;
mod support;
