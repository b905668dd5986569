//! The bytes the XML reader reads: each event bounded in size, made valid
//! UTF-8, a byte order mark stripped.

use std::io::{self, BufRead, Read};

use super::{CHUNK_BYTES, MAX_EVENT_BYTES, UTF8_BOM};

// ---------------------------------------------------------------------------
// Input: size bound and lossy UTF-8
// ---------------------------------------------------------------------------

/// Why [`BoundedInput`] stopped handing out bytes.
pub(super) enum Failure {
    /// The wrapped reader failed; kept here so it reaches the caller unchanged.
    Io(io::Error),
    /// The current event needs more than [`MAX_EVENT_BYTES`].
    TooLarge { position: u64 },
}

/// The reader the XML parser reads through. It
///
/// * bounds every event: the parser calls [`start_event`](Self::start_event)
///   before each event, and once that event has consumed
///   [`MAX_EVENT_BYTES`] the input fails instead of letting the parser's
///   buffer grow;
/// * makes the bytes valid UTF-8 without changing their length (quick-xml
///   0.42 rejects a whole event on invalid UTF-8): each byte of an invalid
///   sequence becomes NUL, which no XML document can contain and which
///   [`replace_nul`] turns into U+FFFD inside values;
/// * strips a UTF-8 byte order mark, remembering its length for positions;
/// * keeps the wrapped reader's own errors aside, so they are passed on
///   unchanged rather than through quick-xml's `Arc`.
pub(super) struct BoundedInput<R> {
    inner: R,
    chunk: Box<[u8]>,
    /// `chunk[start..end]` is ready for the parser.
    start: usize,
    end: usize,
    /// `chunk[end..end + held]` is the start of a UTF-8 sequence whose
    /// remaining bytes have not been read yet.
    held: usize,
    inner_done: bool,
    bom_checked: bool,
    pub(super) bom_len: u64,
    /// Bytes handed to (and consumed by) the parser, counting the BOM.
    pub(super) consumed: u64,
    /// Bytes consumed by the current event.
    event_bytes: usize,
    pub(super) failure: Option<Failure>,
}

impl<R: BufRead> BoundedInput<R> {
    pub(super) fn new(inner: R) -> Self {
        BoundedInput {
            inner,
            chunk: vec![0; CHUNK_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            held: 0,
            inner_done: false,
            bom_checked: false,
            bom_len: 0,
            consumed: 0,
            event_bytes: 0,
            failure: None,
        }
    }

    pub(super) fn start_event(&mut self) {
        self.event_bytes = 0;
    }

    /// Everything was read and consumed.
    pub(super) fn exhausted(&self) -> bool {
        self.inner_done && self.start == self.end && self.held == 0
    }

    fn stop(&mut self, failure: Failure) -> io::Error {
        self.failure = Some(failure);
        stopped()
    }

    /// Reads the next piece of the wrapped reader into the chunk. Afterwards
    /// either `start < end` or the wrapped reader is at its end.
    fn refill(&mut self) -> io::Result<()> {
        let held = self.held;
        self.chunk.copy_within(self.end..self.end + held, 0);
        let mut len = held;
        self.start = 0;
        self.end = 0;
        self.held = 0;
        while !self.inner_done {
            let available = loop {
                match self.inner.fill_buf() {
                    Ok(bytes) => break bytes,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(self.stop(Failure::Io(e))),
                }
            };
            if available.is_empty() {
                self.inner_done = true;
                break;
            }
            // Never zero: at most 3 bytes are held between rounds.
            let n = available.len().min(self.chunk.len() - len);
            self.chunk[len..len + n].copy_from_slice(&available[..n]);
            self.inner.consume(n);
            len += n;
            let ready = make_utf8(&mut self.chunk[..len], false);
            if ready > 0 {
                self.end = ready;
                self.held = len - ready;
                return Ok(());
            }
        }
        self.end = make_utf8(&mut self.chunk[..len], true);
        Ok(())
    }
}

fn stopped() -> io::Error {
    io::Error::other("feed input stopped")
}

/// Replaces each byte of every invalid UTF-8 sequence in `bytes` with NUL and
/// returns how many leading bytes are final. Unless `at_end`, an incomplete
/// sequence at the very end is left for the next round (not counted).
fn make_utf8(bytes: &mut [u8], at_end: bool) -> usize {
    let mut from = 0;
    loop {
        match std::str::from_utf8(&bytes[from..]) {
            Ok(_) => return bytes.len(),
            Err(e) => {
                let bad = from + e.valid_up_to();
                match e.error_len() {
                    Some(n) => {
                        bytes[bad..bad + n].fill(0);
                        from = bad + n;
                    }
                    None if at_end => {
                        bytes[bad..].fill(0);
                        return bytes.len();
                    }
                    None => return bad,
                }
            }
        }
    }
}

impl<R: BufRead> BufRead for BoundedInput<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.failure.is_some() {
            return Err(stopped());
        }
        while self.start == self.end && !self.exhausted() {
            self.refill()?;
            if !self.bom_checked {
                self.bom_checked = true;
                if self.chunk[self.start..self.end].starts_with(UTF8_BOM) {
                    self.start += UTF8_BOM.len();
                    self.bom_len = UTF8_BOM.len() as u64;
                    self.consumed += self.bom_len;
                }
            }
        }
        let available = self.end - self.start;
        if available > 0 && self.event_bytes >= MAX_EVENT_BYTES {
            let position = self.consumed - self.event_bytes as u64;
            return Err(self.stop(Failure::TooLarge { position }));
        }
        let allowed = available.min(MAX_EVENT_BYTES - self.event_bytes);
        Ok(&self.chunk[self.start..self.start + allowed])
    }

    fn consume(&mut self, amount: usize) {
        let amount = amount.min(self.end - self.start);
        self.start += amount;
        self.consumed += amount as u64;
        self.event_bytes += amount;
    }
}

impl<R: BufRead> Read for BoundedInput<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}
