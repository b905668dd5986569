//! systemd integration without libsystemd or any extra crate: the `sd_notify`
//! datagram protocol (`READY=1`, `STOPPING=1`, `WATCHDOG=1`, `STATUS=...`,
//! `EXTEND_TIMEOUT_USEC=...`) and the watchdog ping period derived from
//! `WATCHDOG_USEC` / `WATCHDOG_PID`.
//!
//! This module owns reading `NOTIFY_SOCKET`, `WATCHDOG_USEC` and
//! `WATCHDOG_PID` and turning notifications into datagrams. It must not decide
//! *when* to notify: that is `serve`'s job (`READY=1` only once the store is
//! migrated and the listener is bound, `WATCHDOG=1` only from a loop whose
//! progress proves the process is healthy, `STOPPING=1` when shutdown
//! begins). It must not panic, block for more than [`SEND_TIMEOUT`], or
//! modify the process environment (`std::env::remove_var` is unsound once
//! other threads run; planbox spawns no children, so leaving the variables set
//! is harmless). Outside systemd (`NOTIFY_SOCKET` unset) [`Notifier::from_env`]
//! returns `None` and [`watchdog_interval`] returns `None`, so callers holding
//! an `Option<Notifier>` need no other special case.
//!
//! Protocol reference: `sd_notify(3)` and `sd_watchdog_enabled(3)`. One
//! datagram carries newline-separated `KEY=VALUE` assignments; systemd ignores
//! a datagram that contains a NUL byte or is longer than 4096 bytes, so
//! [`Notifier::status`] flattens newlines and NULs and truncates.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

/// Largest datagram systemd accepts on the notification socket
/// (`NOTIFY_BUFFER_MAX`, which is `PIPE_BUF`). Longer messages are dropped
/// whole by the service manager, so we never send one.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Upper bound on how long one notification may block. A datagram send to a
/// Unix socket only blocks when the receiver's queue is full; a stalled
/// service manager must not stall the caller (often the watchdog loop).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a notification socket could not be set up or used, or why the
/// watchdog variables could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is set but is neither an absolute path nor an
    /// abstract name (`@name`). systemd ≥ 254 also knows `vsock:` addresses;
    /// planbox does not speak them.
    #[error(
        "NOTIFY_SOCKET={0:?} is not supported: expected an absolute path or an abstract name starting with '@'"
    )]
    UnsupportedAddress(String),
    /// The address has the right shape but the OS rejects it (for example a
    /// path longer than `sun_path`, or an abstract name on a non-Linux OS).
    #[error("NOTIFY_SOCKET={addr:?} is not a usable socket address")]
    InvalidAddress {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// The local, unbound datagram socket could not be created or configured.
    #[error("cannot create the sd_notify socket")]
    Socket(#[source] io::Error),
    /// Sending one notification failed (service manager gone, socket removed,
    /// queue full for longer than [`SEND_TIMEOUT`], ...).
    #[error("cannot send {what} to NOTIFY_SOCKET={addr:?}")]
    Send {
        what: &'static str,
        addr: String,
        #[source]
        source: io::Error,
    },
    /// `WATCHDOG_USEC` is set for this process but is not a whole number of
    /// microseconds.
    #[error("WATCHDOG_USEC={0:?} is not a whole number of microseconds")]
    InvalidWatchdogUsec(String),
    /// `WATCHDOG_PID` is set but is not a process id.
    #[error("WATCHDOG_PID={0:?} is not a process id")]
    InvalidWatchdogPid(String),
}

/// A handle on the service manager's notification socket.
///
/// Cheap to share: every method takes `&self` and the type is `Send + Sync`,
/// so one `Arc<Notifier>` can serve the HTTP, fetch and watchdog threads.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    display: String,
}

impl Notifier {
    /// The notifier systemd asked for through `NOTIFY_SOCKET`, or `None` when
    /// the variable is unset or empty (not started by systemd, or
    /// `Type=` is not `notify`).
    ///
    /// A malformed `NOTIFY_SOCKET` also yields `None`: notification is best
    /// effort and the service still serves without it; systemd itself never
    /// sets a malformed value. Callers that want to log the reason use
    /// [`Notifier::try_from_env`].
    pub fn from_env() -> Option<Notifier> {
        Self::try_from_env().ok().flatten()
    }

    /// Like [`Notifier::from_env`], but reports a set-yet-unusable
    /// `NOTIFY_SOCKET` instead of ignoring it.
    pub fn try_from_env() -> Result<Option<Notifier>, NotifyError> {
        Self::from_var(std::env::var_os("NOTIFY_SOCKET"))
    }

    fn from_var(value: Option<OsString>) -> Result<Option<Notifier>, NotifyError> {
        match value {
            Some(v) if !v.is_empty() => Self::new(v).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for an explicit address in `NOTIFY_SOCKET` syntax: an
    /// absolute filesystem path, or `@name` for a Linux abstract socket.
    pub fn new(address: impl AsRef<OsStr>) -> Result<Notifier, NotifyError> {
        let raw = address.as_ref();
        let display = raw.to_string_lossy().into_owned();
        let bytes = raw.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(Path::new(raw)),
            Some(b'@') if bytes.len() > 1 => abstract_addr(&bytes[1..]),
            _ => return Err(NotifyError::UnsupportedAddress(display)),
        }
        .map_err(|source| NotifyError::InvalidAddress {
            addr: display.clone(),
            source,
        })?;
        let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        socket
            .set_write_timeout(Some(SEND_TIMEOUT))
            .map_err(NotifyError::Socket)?;
        Ok(Notifier {
            socket,
            addr,
            display,
        })
    }

    /// The address notifications go to, as given (`/run/...` or `@name`).
    pub fn address(&self) -> &str {
        &self.display
    }

    /// `READY=1`: startup is complete. With `Type=notify` systemd keeps the
    /// unit in "activating" (and ordered units waiting) until this arrives.
    pub fn ready(&self) -> Result<(), NotifyError> {
        self.send("READY=1", "READY=1")
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.send("STOPPING=1", "STOPPING=1")
    }

    /// `WATCHDOG=1`: a keep-alive ping. With `WatchdogSec=` set, systemd
    /// aborts and (per `Restart=`) restarts the service when pings stop.
    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.send("WATCHDOG=1", "WATCHDOG=1")
    }

    /// `STATUS=...`: one line shown by `systemctl status`. Newlines and NUL
    /// bytes are replaced by spaces (a newline would start a new assignment,
    /// a NUL makes systemd drop the datagram) and the text is cut, on a
    /// character boundary, to fit one datagram.
    pub fn status(&self, status: &str) -> Result<(), NotifyError> {
        self.send("STATUS", &status_message(status))
    }

    /// `EXTEND_TIMEOUT_USEC=...`: ask for `by` more time than the configured
    /// start/stop timeout, from now (for a long migration before `READY=1`,
    /// or a long final flush after `STOPPING=1`). Needs systemd ≥ 236.
    pub fn extend_timeout(&self, by: Duration) -> Result<(), NotifyError> {
        let usec = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.send(
            "EXTEND_TIMEOUT_USEC",
            &format!("EXTEND_TIMEOUT_USEC={usec}"),
        )
    }

    fn send(&self, what: &'static str, message: &str) -> Result<(), NotifyError> {
        // Unix datagrams are sent whole or not at all, so the byte count
        // carries no extra information.
        self.socket
            .send_to_addr(message.as_bytes(), &self.addr)
            .map(drop)
            .map_err(|source| NotifyError::Send {
                what,
                addr: self.display.clone(),
                source,
            })
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

/// `STATUS=<text>` with newlines and NULs flattened to spaces, cut at a
/// character boundary so the whole message fits [`MAX_MESSAGE_BYTES`].
fn status_message(status: &str) -> String {
    const PREFIX: &str = "STATUS=";
    let mut message = String::with_capacity(PREFIX.len() + status.len().min(MAX_MESSAGE_BYTES));
    message.push_str(PREFIX);
    for c in status.chars() {
        let c = if matches!(c, '\n' | '\r' | '\0') {
            ' '
        } else {
            c
        };
        if message.len() + c.len_utf8() > MAX_MESSAGE_BYTES {
            break;
        }
        message.push(c);
    }
    message
}

/// How often to send [`Notifier::watchdog`]: half of `WATCHDOG_USEC`, as
/// `sd_watchdog_enabled(3)` recommends, or `None` when systemd runs no
/// watchdog for this process (`WATCHDOG_USEC` unset or 0, or `WATCHDOG_PID`
/// naming another process).
///
/// Malformed values also yield `None`; systemd never sets them. Use
/// [`try_watchdog_interval`] to see why.
pub fn watchdog_interval() -> Option<Duration> {
    try_watchdog_interval().ok().flatten()
}

/// Like [`watchdog_interval`], but reports malformed `WATCHDOG_USEC` /
/// `WATCHDOG_PID` values instead of ignoring them.
pub fn try_watchdog_interval() -> Result<Option<Duration>, NotifyError> {
    watchdog_from(
        std::env::var_os("WATCHDOG_USEC").as_deref(),
        std::env::var_os("WATCHDOG_PID").as_deref(),
        std::process::id(),
    )
}

fn watchdog_from(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    our_pid: u32,
) -> Result<Option<Duration>, NotifyError> {
    // WATCHDOG_PID first: a watchdog meant for another process (inherited
    // environment) is not ours to serve, whatever its WATCHDOG_USEC says.
    if let Some(pid) = pid {
        let text = pid.to_string_lossy();
        let parsed: u32 = text
            .trim()
            .parse()
            .map_err(|_| NotifyError::InvalidWatchdogPid(text.clone().into_owned()))?;
        if parsed != our_pid {
            return Ok(None);
        }
    }
    let Some(usec) = usec else {
        return Ok(None);
    };
    let text = usec.to_string_lossy();
    let usec: u64 = text
        .trim()
        .parse()
        .map_err(|_| NotifyError::InvalidWatchdogUsec(text.clone().into_owned()))?;
    // 0 means "no watchdog"; u64::MAX is systemd's USEC_INFINITY.
    if usec == 0 || usec == u64::MAX {
        return Ok(None);
    }
    Ok(Some(Duration::from_micros(usec) / 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("planbox-systemd-test-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A bound receiving socket standing in for systemd, and a notifier
    /// pointed at it.
    fn manager() -> (TempDir, UnixDatagram, Notifier) {
        let dir = TempDir::new();
        let path = dir.0.join("notify.sock");
        let receiver = UnixDatagram::bind(&path).expect("bind receiver");
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let notifier = Notifier::new(&path).expect("notifier");
        (dir, receiver, notifier)
    }

    fn recv(receiver: &UnixDatagram) -> String {
        let mut buf = vec![0u8; MAX_MESSAGE_BYTES * 2];
        let n = receiver.recv(&mut buf).expect("a datagram");
        String::from_utf8(buf[..n].to_vec()).expect("utf-8 datagram")
    }

    #[test]
    fn sends_each_state_as_one_datagram() {
        let (_dir, receiver, notifier) = manager();
        notifier.ready().unwrap();
        assert_eq!(recv(&receiver), "READY=1");
        notifier.watchdog().unwrap();
        assert_eq!(recv(&receiver), "WATCHDOG=1");
        notifier.status("fetching https://provider/feed").unwrap();
        assert_eq!(recv(&receiver), "STATUS=fetching https://provider/feed");
        notifier.extend_timeout(Duration::from_secs(90)).unwrap();
        assert_eq!(recv(&receiver), "EXTEND_TIMEOUT_USEC=90000000");
        notifier.stopping().unwrap();
        assert_eq!(recv(&receiver), "STOPPING=1");
    }

    #[test]
    fn status_cannot_inject_other_assignments() {
        let (_dir, receiver, notifier) = manager();
        notifier.status("ok\nREADY=1\r\0done").unwrap();
        assert_eq!(recv(&receiver), "STATUS=ok READY=1  done");
    }

    #[test]
    fn long_status_is_cut_on_a_char_boundary_to_fit_one_datagram() {
        let (_dir, receiver, notifier) = manager();
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        notifier.status(&long).unwrap();
        let got = recv(&receiver);
        assert!(got.len() <= MAX_MESSAGE_BYTES, "{} bytes", got.len());
        assert!(got.len() > MAX_MESSAGE_BYTES - 2);
        assert!(got.starts_with("STATUS=éé"));
    }

    #[test]
    fn from_var_reads_a_path_and_treats_unset_or_empty_as_absent() {
        let (dir, receiver, _) = manager();
        let path = dir.0.join("notify.sock");
        let notifier = Notifier::from_var(Some(path.clone().into_os_string()))
            .unwrap()
            .expect("a notifier");
        assert_eq!(notifier.address(), path.to_str().unwrap());
        notifier.ready().unwrap();
        assert_eq!(recv(&receiver), "READY=1");

        assert!(Notifier::from_var(None).unwrap().is_none());
        assert!(Notifier::from_var(Some(OsString::new())).unwrap().is_none());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_names_start_with_at() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("planbox-systemd-test-{}-abstract", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).expect("bind abstract receiver");
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier::new(format!("@{name}")).expect("notifier");
        notifier.ready().unwrap();
        assert_eq!(recv(&receiver), "READY=1");
        notifier.watchdog().unwrap();
        assert_eq!(recv(&receiver), "WATCHDOG=1");
    }

    #[test]
    fn unusable_addresses_are_typed_errors() {
        for bad in ["relative/notify.sock", "@", "vsock:2:1234"] {
            assert!(
                matches!(
                    Notifier::new(bad),
                    Err(NotifyError::UnsupportedAddress(ref a)) if a == bad
                ),
                "{bad}"
            );
        }
        let too_long = format!("/{}", "x".repeat(200));
        assert!(matches!(
            Notifier::new(&too_long),
            Err(NotifyError::InvalidAddress { .. })
        ));
        assert!(Notifier::from_var(Some("relative".into())).is_err());
    }

    #[test]
    fn sending_to_a_missing_socket_is_an_error_not_a_panic() {
        let dir = TempDir::new();
        let notifier = Notifier::new(dir.0.join("nobody-listens.sock")).unwrap();
        let err = notifier.ready().unwrap_err();
        assert!(matches!(
            err,
            NotifyError::Send {
                what: "READY=1",
                ..
            }
        ));
        assert!(err.to_string().contains("nobody-listens.sock"));
        // The OS's reason once, as the source.
        let text = crate::log::chain(&err);
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
    }

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn watchdog_period_is_half_the_interval() {
        assert_eq!(
            watchdog_from(os("30000000"), None, 42).unwrap(),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_from(os("30000000"), os("42"), 42).unwrap(),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_from(os("1"), None, 42).unwrap(),
            Some(Duration::from_nanos(500))
        );
    }

    #[test]
    fn watchdog_is_off_when_unset_zero_infinite_or_for_another_pid() {
        assert_eq!(watchdog_from(None, None, 42).unwrap(), None);
        assert_eq!(watchdog_from(None, os("42"), 42).unwrap(), None);
        assert_eq!(watchdog_from(os("0"), None, 42).unwrap(), None);
        assert_eq!(
            watchdog_from(os(&u64::MAX.to_string()), None, 42).unwrap(),
            None
        );
        assert_eq!(watchdog_from(os("30000000"), os("7"), 42).unwrap(), None);
        // Not ours: even a malformed interval is none of our business.
        assert_eq!(watchdog_from(os("soon"), os("7"), 42).unwrap(), None);
    }

    #[test]
    fn malformed_watchdog_values_are_typed_errors() {
        assert!(matches!(
            watchdog_from(os("30s"), None, 42),
            Err(NotifyError::InvalidWatchdogUsec(ref v)) if v == "30s"
        ));
        assert!(matches!(
            watchdog_from(os("-5"), None, 42),
            Err(NotifyError::InvalidWatchdogUsec(_))
        ));
        assert!(matches!(
            watchdog_from(os("30000000"), os("me"), 42),
            Err(NotifyError::InvalidWatchdogPid(ref v)) if v == "me"
        ));
    }

    #[test]
    fn notifier_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Notifier>();
    }
}
