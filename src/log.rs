//! Logging to stderr: one line per event, `text` or `json`, level from
//! `PLANBOX_LOG` (`error`, `warn`, `info`, `debug`; default `info`).
//!
//! Deliberately tiny: no global registry, no macros, no allocation when a
//! level is off. It must not block on anything but stderr.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" | "trace" => Some(Level::Debug),
            _ => None,
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static JSON: AtomicBool = AtomicBool::new(false);

/// Sets the level and format for the whole process.
pub fn init(level: Level, json: bool) {
    LEVEL.store(level as u8, Relaxed);
    JSON.store(json, Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Relaxed)
}

/// Writes one line with optional `key=value` fields.
pub fn log(level: Level, msg: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    if !enabled(level) {
        return;
    }
    let ts = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
    let line = if JSON.load(Relaxed) {
        let mut obj = serde_json::Map::new();
        obj.insert("ts".into(), ts.to_string().into());
        obj.insert("level".into(), level.as_str().into());
        obj.insert("msg".into(), msg.into());
        for (k, v) in fields {
            obj.insert((*k).into(), v.to_string().into());
        }
        serde_json::Value::Object(obj).to_string()
    } else {
        let mut s = format!("{ts} {:5} {msg}", level.as_str());
        for (k, v) in fields {
            let v = v.to_string();
            if v.is_empty() || v.contains(char::is_whitespace) || v.contains('"') {
                s.push_str(&format!(" {k}={v:?}"));
            } else {
                s.push_str(&format!(" {k}={v}"));
            }
        }
        s
    };
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

pub fn error(msg: &str) {
    log(Level::Error, msg, &[]);
}

pub fn warn(msg: &str) {
    log(Level::Warn, msg, &[]);
}

pub fn info(msg: &str) {
    log(Level::Info, msg, &[]);
}
