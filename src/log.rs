//! Logging to stderr: one line per event, `text` or `json`, level from
//! `PLANBOX_LOG` (`error`, `warn`, `info`, `debug`; default `info`).
//!
//! When stderr is the systemd journal (`JOURNAL_STREAM` names stderr's
//! device and inode), each line starts with its syslog priority (`<4>`), which
//! journald strips and records, so `journalctl -p warning` works.
//!
//! Deliberately tiny: no global registry, no macros, no allocation when a
//! level is off. It must not block on anything but stderr.
//!
//! Tests: lines go through `eprint!` instead (always in unit tests, after
//! [`to_test_output`] in integration tests), which the test harness
//! captures per test, also from the threads a test spawns, and shows only
//! when the test fails.

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
    /// The syslog priority journald records for the level.
    fn syslog_priority(self) -> u8 {
        match self {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug => 7,
        }
    }

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
static JOURNAL: AtomicBool = AtomicBool::new(false);
static TEST_OUTPUT: AtomicBool = AtomicBool::new(cfg!(test));

/// Sends log lines through `eprint!`, which the test harness captures per
/// test: a test's server logs stay quiet unless it fails. For tests only
/// (`eprint!` panics when stderr fails; a served process must not).
pub fn to_test_output() {
    TEST_OUTPUT.store(true, Relaxed);
}

/// Sets the level and format for the whole process, and whether stderr is
/// the journal.
pub fn init(level: Level, json: bool) {
    LEVEL.store(level as u8, Relaxed);
    JSON.store(json, Relaxed);
    JOURNAL.store(stderr_is_journal(), Relaxed);
}

/// `JOURNAL_STREAM` (`DEV:INODE`, set by systemd) names our stderr. A child
/// whose stderr was redirected elsewhere inherits the variable, hence the
/// comparison (see `systemd.exec(5)`).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(want) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    // Follows the /proc magic link to the open file, pipe or socket itself.
    std::fs::metadata("/proc/self/fd/2")
        .is_ok_and(|m| journal_stream_matches(&want.to_string_lossy(), m.dev(), m.ino()))
}

fn journal_stream_matches(var: &str, dev: u64, ino: u64) -> bool {
    var.split_once(':').is_some_and(|(d, i)| {
        d.trim().parse::<u64>() == Ok(dev) && i.trim().parse::<u64>() == Ok(ino)
    })
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
        json_without_raw_controls(serde_json::Value::Object(obj).to_string())
    } else {
        let mut s = format!("{ts} {:5} {msg}", level.as_str());
        for (k, v) in fields {
            push_text_field(&mut s, k, &v.to_string());
        }
        s
    };
    let priority = if JOURNAL.load(Relaxed) {
        format!("<{}>", level.syslog_priority())
    } else {
        String::new()
    };
    if TEST_OUTPUT.load(Relaxed) {
        eprintln!("{priority}{line}");
        return;
    }
    let _ = writeln!(std::io::stderr().lock(), "{priority}{line}");
}

/// A JSON line with DEL and the C1 controls, which `serde_json` writes raw
/// (JSON allows them), as `\u007f`..`\u009f`: the same value, nothing a
/// terminal acts on. They can only stand inside strings of JSON text.
fn json_without_raw_controls(line: String) -> String {
    if !line.contains(|c: char| c.is_control()) {
        return line;
    }
    let mut out = String::with_capacity(line.len() + 12);
    for c in line.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// ` key=value` of a text line; quoted (with Rust's escapes) when the
/// value is empty or holds whitespace, a quote or a control character, so
/// a value from a feed can neither split a line nor drive a terminal.
fn push_text_field(line: &mut String, key: &str, value: &str) {
    let plain = !value.is_empty()
        && !value.contains(|c: char| c.is_whitespace() || c.is_control() || c == '"');
    if plain {
        line.push_str(&format!(" {key}={value}"));
    } else {
        line.push_str(&format!(" {key}={value:?}"));
    }
}

/// An error and its sources joined by `: ` (the text of the error alone
/// when it has none): for a log line, the journal, or a message to people.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_this_device_and_inode() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(!journal_stream_matches("8:12345", 8, 12346));
        assert!(!journal_stream_matches("9:12345", 8, 12345));
        assert!(!journal_stream_matches("", 8, 12345));
        assert!(!journal_stream_matches("8-12345", 8, 12345));
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        let p: Vec<u8> = [Level::Error, Level::Warn, Level::Info, Level::Debug]
            .iter()
            .map(|l| l.syslog_priority())
            .collect();
        assert_eq!(p, [3, 4, 6, 7]);
        assert_eq!(Level::parse(" WARNING "), Some(Level::Warn));
        assert_eq!(Level::parse("trace"), Some(Level::Debug));
        assert_eq!(Level::parse("loud"), None);
    }

    #[test]
    fn a_text_field_with_a_control_character_is_quoted_and_escaped() {
        let mut line = String::new();
        for (k, v) in [("a", "plain"), ("b", "x\u{1b}[2J\u{9b}y\u{7f}"), ("c", "")] {
            push_text_field(&mut line, k, v);
        }
        assert_eq!(line, " a=plain b=\"x\\u{1b}[2J\\u{9b}y\\u{7f}\" c=\"\"");
    }

    #[test]
    fn a_json_line_escapes_del_and_c1_and_keeps_the_value() {
        let value = serde_json::json!({ "error": "</a\u{7f}\u{9b}b\u{1b}>" });
        let line = json_without_raw_controls(value.to_string());
        assert_eq!(line, r#"{"error":"</a\u007f\u009bb\u001b>"}"#);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&line).unwrap(),
            value
        );
    }

    #[test]
    fn a_chain_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
        assert_eq!(chain(&std::io::Error::other("alone")), "alone");
    }
}
