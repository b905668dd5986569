//! The text the XML reader reads: the document's bytes decoded to UTF-8 as
//! they stream by, every event bounded in size, a byte order mark stripped.

use std::io::{self, BufRead, Read};

use encoding_rs::{Decoder, DecoderResult, Encoding, UTF_8};

use super::decode::{detect, EncodingSource, SNIFF_BYTES};
use super::{ParseError, CHUNK_BYTES, MAX_EVENT_BYTES};

/// Why [`BoundedInput`] stopped handing out bytes.
pub(super) enum Failure {
    /// The wrapped reader failed; kept here so it reaches the caller unchanged.
    Io(io::Error),
    /// The current event needs more than [`MAX_EVENT_BYTES`].
    TooLarge { position: u64 },
    /// The encoding is unknown, or the bytes do not decode in it.
    Encoding(ParseError),
}

/// How the bytes become UTF-8, once the encoding is known.
enum Decoding {
    /// Not decided yet: the first [`SNIFF_BYTES`] are being collected.
    Undecided,
    /// UTF-8: bytes are checked in place and handed on unchanged.
    Utf8,
    /// Anything else: `encoding_rs` streams them into UTF-8.
    Transcode(Box<Decoder>),
}

/// The reader the XML parser reads through. It
///
/// * decides the document's encoding from its first bytes and the
///   `Content-Type` charset (see `decode.rs`) and decodes the document into
///   UTF-8 a chunk at a time (valid UTF-8 is only checked, not copied
///   twice); bytes that do not decode stop the input with an error naming
///   the encoding and the byte offset: nothing is ever replaced;
/// * bounds every event: the parser calls [`start_event`](Self::start_event)
///   before each event, and once that event has consumed
///   [`MAX_EVENT_BYTES`] the input fails instead of letting the parser's
///   buffer grow;
/// * strips a byte order mark, remembering its length for positions;
/// * keeps the wrapped reader's own errors aside, so they are passed on
///   unchanged rather than through quick-xml's `Arc`.
pub(super) struct BoundedInput<R> {
    inner: R,
    charset: Option<String>,
    decoding: Decoding,
    encoding: &'static Encoding,
    source: EncodingSource,
    chunk: Box<[u8]>,
    /// `chunk[start..end]` is ready for the parser.
    start: usize,
    end: usize,
    /// `chunk[end..end + held]` is the start of a UTF-8 sequence whose
    /// remaining bytes have not been read yet (UTF-8 only).
    held: usize,
    /// Raw bytes read while deciding the encoding, not yet decoded
    /// (`pending[pending_at..]`; transcoding only).
    pending: Vec<u8>,
    pending_at: usize,
    inner_done: bool,
    pub(super) bom_len: u64,
    /// Bytes handed to (and consumed by) the parser, counting the BOM: in
    /// UTF-8, offsets in the document; otherwise in its decoded text.
    pub(super) consumed: u64,
    /// Raw bytes of the document decoded so far (transcoding only).
    raw_decoded: u64,
    /// Bytes consumed by the current event.
    event_bytes: usize,
    pub(super) failure: Option<Failure>,
}

impl<R: BufRead> BoundedInput<R> {
    pub(super) fn new(inner: R, charset: Option<String>) -> Self {
        BoundedInput {
            inner,
            charset,
            decoding: Decoding::Undecided,
            encoding: UTF_8,
            source: EncodingSource::Default,
            chunk: vec![0; CHUNK_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            held: 0,
            pending: Vec::new(),
            pending_at: 0,
            inner_done: false,
            bom_len: 0,
            consumed: 0,
            raw_decoded: 0,
            event_bytes: 0,
            failure: None,
        }
    }

    pub(super) fn start_event(&mut self) {
        self.event_bytes = 0;
    }

    /// Everything was read and consumed.
    pub(super) fn exhausted(&self) -> bool {
        self.inner_done
            && self.start == self.end
            && self.held == 0
            && self.pending_at == self.pending.len()
    }

    /// The document's encoding, once decided, and where it came from.
    pub(super) fn encoding(&self) -> Option<(&'static Encoding, EncodingSource)> {
        match self.decoding {
            Decoding::Undecided => None,
            _ => Some((self.encoding, self.source)),
        }
    }

    /// Whether positions count the decoded text rather than the document's
    /// bytes.
    pub(super) fn transcoding(&self) -> bool {
        matches!(self.decoding, Decoding::Transcode(_))
    }

    /// Bytes of the document read so far (for progress).
    pub(super) fn raw_position(&self) -> u64 {
        match self.decoding {
            Decoding::Transcode(_) => self.raw_decoded + self.bom_len,
            _ => self.consumed,
        }
    }

    fn stop(&mut self, failure: Failure) -> io::Error {
        self.failure = Some(failure);
        stopped()
    }

    /// Collects the first bytes and decides the encoding.
    fn decide(&mut self) -> io::Result<()> {
        let mut head = Vec::with_capacity(SNIFF_BYTES);
        while head.len() < SNIFF_BYTES {
            let available = match fill(&mut self.inner) {
                Ok(bytes) => bytes,
                Err(e) => return Err(self.stop(Failure::Io(e))),
            };
            if available.is_empty() {
                self.inner_done = true;
                break;
            }
            let n = available.len().min(SNIFF_BYTES - head.len());
            head.extend_from_slice(&available[..n]);
            self.inner.consume(n);
        }
        let detected = match detect(&head, self.charset.as_deref()) {
            Ok(d) => d,
            Err(e) => return Err(self.stop(Failure::Encoding(e))),
        };
        self.encoding = detected.encoding;
        self.source = detected.source;
        self.bom_len = detected.bom_len as u64;
        self.consumed = self.bom_len;
        head.drain(..detected.bom_len);
        if detected.encoding == UTF_8 {
            self.decoding = Decoding::Utf8;
            // The head becomes the first held bytes of the chunk.
            self.chunk[..head.len()].copy_from_slice(&head);
            self.end = 0;
            self.held = head.len();
        } else {
            self.decoding = Decoding::Transcode(Box::new(
                detected.encoding.new_decoder_without_bom_handling(),
            ));
            self.pending = head;
        }
        Ok(())
    }

    /// Reads the next piece of the document into the chunk. Afterwards
    /// either `start < end` or the document is at its end.
    fn refill(&mut self) -> io::Result<()> {
        if matches!(self.decoding, Decoding::Undecided) {
            self.decide()?;
        }
        if matches!(self.decoding, Decoding::Utf8) {
            self.refill_utf8()
        } else {
            self.refill_transcoded()
        }
    }

    fn refill_utf8(&mut self) -> io::Result<()> {
        let held = self.held;
        self.chunk.copy_within(self.end..self.end + held, 0);
        let mut len = held;
        self.start = 0;
        self.end = 0;
        self.held = 0;
        // Offset of chunk[0] in the document.
        let chunk_at = self.consumed;
        while !self.inner_done {
            let room = self.chunk.len() - len;
            let available = match fill(&mut self.inner) {
                Ok(bytes) => bytes,
                Err(e) => return Err(self.stop(Failure::Io(e))),
            };
            if available.is_empty() {
                self.inner_done = true;
                break;
            }
            // Never zero: at most 3 bytes are held between rounds.
            let n = available.len().min(room);
            self.chunk[len..len + n].copy_from_slice(&available[..n]);
            self.inner.consume(n);
            len += n;
            match utf8_prefix(&self.chunk[..len], false) {
                Ok(0) => continue,
                Ok(ready) => {
                    self.end = ready;
                    self.held = len - ready;
                    return Ok(());
                }
                Err(bad) => return Err(self.undecodable(chunk_at + bad as u64)),
            }
        }
        match utf8_prefix(&self.chunk[..len], true) {
            Ok(ready) => {
                self.end = ready;
                Ok(())
            }
            Err(bad) => Err(self.undecodable(chunk_at + bad as u64)),
        }
    }

    fn refill_transcoded(&mut self) -> io::Result<()> {
        self.start = 0;
        self.end = 0;
        let mut written = 0;
        let Decoding::Transcode(decoder) = &mut self.decoding else {
            return Ok(());
        };
        let stopped_by = loop {
            let from_pending = self.pending_at < self.pending.len();
            let src: &[u8] = if from_pending {
                &self.pending[self.pending_at..]
            } else if self.inner_done {
                &[]
            } else {
                match fill(&mut self.inner) {
                    Ok(bytes) => bytes,
                    Err(e) => break Some(Failure::Io(e)),
                }
            };
            let last = src.is_empty();
            let (result, read, out) =
                decoder.decode_to_utf8_without_replacement(src, &mut self.chunk[written..], last);
            if from_pending {
                self.pending_at += read;
            } else if !last {
                self.inner.consume(read);
            }
            let decoded_before = self.raw_decoded;
            self.raw_decoded += read as u64;
            written += out;
            match result {
                DecoderResult::Malformed(bad, after) => {
                    let at = decoded_before + read as u64 - u64::from(bad) - u64::from(after);
                    break Some(Failure::Encoding(ParseError::Undecodable {
                        encoding: self.encoding.name(),
                        from: self.source,
                        position: self.bom_len + at,
                    }));
                }
                DecoderResult::OutputFull => break None,
                DecoderResult::InputEmpty if last => {
                    self.inner_done = true;
                    break None;
                }
                DecoderResult::InputEmpty if written > 0 && !from_pending => break None,
                DecoderResult::InputEmpty => {}
            }
        };
        if self.pending_at == self.pending.len() && !self.pending.is_empty() {
            self.pending = Vec::new();
            self.pending_at = 0;
        }
        self.end = written;
        match stopped_by {
            Some(failure) => Err(self.stop(failure)),
            None => Ok(()),
        }
    }

    fn undecodable(&mut self, position: u64) -> io::Error {
        self.stop(Failure::Encoding(ParseError::Undecodable {
            encoding: self.encoding.name(),
            from: self.source,
            position,
        }))
    }
}

/// `inner.fill_buf()`, retried while interrupted.
fn fill<R: BufRead>(inner: &mut R) -> io::Result<&[u8]> {
    loop {
        match inner.fill_buf() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            _ => break,
        }
    }
    inner.fill_buf()
}

fn stopped() -> io::Error {
    io::Error::other("feed input stopped")
}

/// How many leading bytes of `bytes` are complete, valid UTF-8, or the
/// offset of the first byte that is not. Unless `at_end`, an incomplete
/// sequence at the very end is left for the next round (not counted).
fn utf8_prefix(bytes: &[u8], at_end: bool) -> Result<usize, usize> {
    match std::str::from_utf8(bytes) {
        Ok(_) => Ok(bytes.len()),
        Err(e) => match e.error_len() {
            None if !at_end => Ok(e.valid_up_to()),
            _ => Err(e.valid_up_to()),
        },
    }
}

impl<R: BufRead> BufRead for BoundedInput<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.failure.is_some() {
            return Err(stopped());
        }
        while self.start == self.end && !self.exhausted() {
            self.refill()?;
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
