//! Responses on the wire: status line and headers written by planbox (one
//! `write` for an answer held in memory), chunked bodies for streamed
//! answers, and the minimum read rate of a streamed answer.
//!
//! Must not contain API logic or SQL.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::api::Response;

/// What of the request and the connection shapes the response on the wire.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wire {
    pub(crate) http10: bool,
    head: bool,
    /// The connection closes after this answer (`Connection: close`); an
    /// HTTP/1.0 answer on a kept connection says `Connection: keep-alive`.
    pub(crate) close: bool,
}

impl Wire {
    pub(crate) fn new(http10: bool, head: bool, close: bool) -> Wire {
        Wire {
            http10,
            head,
            close,
        }
    }

    /// An HTTP/1.1 answer after which the connection closes.
    pub(crate) fn closing() -> Wire {
        Wire::new(false, false, true)
    }
}

/// `Date` header value, formatted once a second per thread.
pub(crate) fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(i64, String)> = const {
            std::cell::RefCell::new((i64::MIN, String::new()))
        };
    }
    let now = chrono::Utc::now();
    DATE.with_borrow_mut(|(secs, text)| {
        if *secs != now.timestamp() {
            *secs = now.timestamp();
            *text = now.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// Status line and headers (without the blank line).
pub(crate) fn write_head(
    buf: &mut Vec<u8>,
    wire: &Wire,
    status: u16,
    headers: &[(&'static str, String)],
) {
    let version: &[u8] = if wire.http10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    };
    buf.extend_from_slice(version);
    let mut code = [b'0'; 3];
    for (i, d) in code.iter_mut().enumerate() {
        *d = b'0' + ((status / 10u16.pow(2 - i as u32)) % 10) as u8;
    }
    buf.extend_from_slice(&code);
    buf.push(b' ');
    buf.extend_from_slice(
        tiny_http::StatusCode(status)
            .default_reason_phrase()
            .as_bytes(),
    );
    buf.extend_from_slice(b"\r\nDate: ");
    http_date(buf);
    buf.extend_from_slice(b"\r\n");
    if wire.close {
        buf.extend_from_slice(b"Connection: close\r\n");
    } else if wire.http10 {
        buf.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    for (k, v) in headers {
        buf.extend_from_slice(k.as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(v.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
}

/// Bodies up to this size go out in the same `write` as the head; larger
/// ones in a second `write`, not copied.
pub(crate) const COPY_MAX: usize = 64 << 10;

/// Writes a response held in memory, in one `write` (head and body
/// together) when the body is small; without the body for `HEAD`, 204 and
/// 304.
pub(crate) fn write_whole(out: &mut dyn Write, wire: &Wire, r: &Response) -> io::Result<()> {
    let no_body = matches!(r.status, 204 | 304);
    let send_body = !wire.head && !no_body;
    let copy = send_body && r.body.len() <= COPY_MAX;
    let mut buf = Vec::with_capacity(256 + if copy { r.body.len() } else { 0 });
    write_head(&mut buf, wire, r.status, &r.headers);
    if !no_body {
        buf.extend_from_slice(b"Content-Length: ");
        buf.extend_from_slice(r.body.len().to_string().as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    if copy {
        buf.extend_from_slice(&r.body);
    }
    out.write_all(&buf)?;
    if send_body && !copy {
        out.write_all(&r.body)?;
    }
    out.flush()
}

/// Bytes of body per chunk (and per `write`) of a streamed answer.
pub(crate) const CHUNK: usize = 128 << 10;

/// Slowest average rate (bytes/s) a streamed answer may be read at once it
/// has run for the send timeout. With the send timeout this bounds how long
/// a reader holds its worker and its WAL snapshot (which keeps checkpoints
/// from recycling the WAL past it): at most `timeout + bytes / MIN_RATE`.
pub const MIN_STREAM_RATE: u64 = 32 << 10;

/// Writes a streamed answer: chunked, or for HTTP/1.0 (which has no
/// chunks) as raw bytes ended by closing the connection (the caller
/// closes it). A read error mid-body breaks the chunk framing on purpose,
/// so a client sees a failed transfer instead of a short, well-formed
/// answer. A `HEAD` gets the head only: nothing of the body is read.
pub(crate) fn write_streamed(
    out: &mut dyn Write,
    wire: &Wire,
    headers: &[(&'static str, String)],
    body: &mut dyn Read,
    min_rate_after: Duration,
    wrote: &mut bool,
) -> io::Result<()> {
    let chunked = !wire.http10;
    let wire = Wire {
        close: wire.close || !chunked,
        ..*wire
    };
    let mut head = Vec::with_capacity(512);
    write_head(&mut head, &wire, 200, headers);
    // A HEAD says nothing of a length or framing it never computed.
    if chunked && !wire.head {
        head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    head.extend_from_slice(b"\r\n");
    if wire.head {
        *wrote = true;
        out.write_all(&head)?;
        return out.flush();
    }
    // [room for the chunk-size line][data][CRLF + last chunk]
    const ROOM: usize = 8;
    let mut frame = vec![0u8; ROOM + CHUNK + 7];
    let started = Instant::now();
    let mut sent = 0u64;
    let mut pending_head = Some(head);
    loop {
        let mut n = 0;
        let mut eof = false;
        while n < CHUNK {
            match body.read(&mut frame[ROOM + n..ROOM + CHUNK]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if *wrote && chunked {
                        let _ = out.write_all(b"\r\n!broken answer\r\n");
                        let _ = out.flush();
                    }
                    return Err(e);
                }
            }
        }
        let (mut from, mut to) = (ROOM, ROOM + n);
        if chunked {
            if n > 0 {
                let size = format!("{n:x}\r\n");
                from -= size.len();
                frame[from..ROOM].copy_from_slice(size.as_bytes());
                frame[to..to + 2].copy_from_slice(b"\r\n");
                to += 2;
            }
            if eof {
                frame[to..to + 5].copy_from_slice(b"0\r\n\r\n");
                to += 5;
            }
        }
        *wrote = true;
        match pending_head.take() {
            // The head goes out with the first chunk: one write.
            Some(mut head) => {
                head.extend_from_slice(&frame[from..to]);
                out.write_all(&head)?;
            }
            None => out.write_all(&frame[from..to])?,
        }
        sent += (to - from) as u64;
        if eof {
            return out.flush();
        }
        let elapsed = started.elapsed();
        if elapsed > min_rate_after && sent < elapsed.as_secs() * MIN_STREAM_RATE {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client reads the answer too slowly",
            ));
        }
    }
}
