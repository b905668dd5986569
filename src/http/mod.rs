//! HTTP: the API as a function (`api`, with the `/search` answer machinery
//! in `answer` and decoding for people in `events`) and the front that
//! serves it (`server`: the worker pool; `conn`: the poller that holds
//! connections; `request`: what a head says about its body; `wire` writing
//! responses; `limits` deciding who may ask how often). `api` and `answer`
//! never touch sockets; `server`, `conn` and `wire` never contain API logic
//! or SQL.

pub mod answer;
pub mod api;
mod conn;
pub mod events;
pub mod limits;
mod poll;
mod request;
pub mod server;
pub mod wire;
