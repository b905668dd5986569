//! The background store check's state, shared below the layers that use it:
//! the checker writes it, HTTP (`/ready`) and the status page read it.
//!
//! Plain values: it must not do I/O or run the check (see `checker.rs`).

/// What the message of a damaged store tells the operator to do.
pub const DAMAGE_ADVICE: &str = "stop planbox, move the store aside, restore the newest backup \
     (`planbox backup` makes verified copies) or delete it to start empty, and start planbox again";
