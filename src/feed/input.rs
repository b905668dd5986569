//! The text the XML reader reads: the document's bytes decoded to UTF-8 as
//! they stream by, every event bounded in size, a byte order mark stripped.
//!
//! Bytes that do not decode are not an error here: each is replaced by
//! one [`SUBSTITUTE`] byte and its place recorded as a [`Damage`], so that
//! the reader can charge it to the item whose value or text holds it, or
//! reject the document when it lies in markup. The substitute is never
//! text: the reader never lets a value that covers a recorded place out.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};

use encoding_rs::{Decoder, DecoderResult, Encoding, UTF_8};

use super::decode::{detect, EncodingSource, SNIFF_BYTES};
use super::{ParseError, CHUNK_BYTES, MAX_EVENT_BYTES};

/// What replaces each undecodable byte sequence in the text (one byte per
/// byte in UTF-8, so positions stay those of the document; one per
/// sequence otherwise): ASCII SUB, which is no XML delimiter, so the
/// parser's reading of the markup around it is unchanged, and which XML
/// forbids, so it is never text.
pub(super) const SUBSTITUTE: u8 = 0x1A;

/// Recorded places not yet passed by the reader; beyond this many, a new
/// one is merged into the last (a coarser place, which can only make the
/// verdict stricter).
const MAX_PENDING_DAMAGE: usize = 4096;

/// Where bytes that do not decode were substituted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Damage {
    /// Offset of the first substitute in the text handed out (the space of
    /// [`BoundedInput::consumed`]).
    pub at: u64,
    /// Substitutes in a row (at least 1).
    pub len: u64,
    /// Offset of the first undecodable byte in the document.
    pub raw: u64,
}

/// Undecodable bytes in data (an attribute value, text), handed to the
/// document so that it charges them to the item that holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Undecodable {
    /// The attribute whose value holds them; `None` for text.
    pub attribute: Option<String>,
    pub encoding: &'static str,
    pub from: EncodingSource,
    /// Offset of the first undecodable byte in the document.
    pub position: u64,
}

impl Undecodable {
    /// The verdict when no item can be charged: the document is rejected.
    pub(super) fn error(&self) -> ParseError {
        ParseError::Undecodable {
            encoding: self.encoding,
            from: self.from,
            position: self.position,
        }
    }

    /// For a skip's detail: "`title` holds bytes …" (after "its") or
    /// "text holds bytes …".
    pub(super) fn what(&self) -> String {
        let place = match &self.attribute {
            Some(name) => format!("`{}`", super::markup::quoted(name)),
            None => "text".to_owned(),
        };
        format!(
            "{place} holds bytes that do not decode as {} (at byte {})",
            self.encoding, self.position
        )
    }
}

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
    /// The `Content-Type` charset and the document's own encoding differ,
    /// and both read ASCII as ASCII: ASCII bytes are handed on as they are
    /// (the same text in both) and the first other byte decides which of
    /// the two the document is in (see [`prefer_alternative`]).
    Ascii {
        alternative: &'static Encoding,
        source: EncodingSource,
    },
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
///   twice); bytes that do not decode are substituted and recorded (see
///   the module header);
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
    /// Substituted places the reader has not passed yet, in order.
    damage: VecDeque<Damage>,
    /// The `Content-Type` charset did not describe the document.
    pub(super) charset_mismatch: bool,
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
            damage: VecDeque::new(),
            charset_mismatch: false,
        }
    }

    /// Removes and returns the recorded places that start before `end`
    /// (the end of the event just read); a place that runs past it keeps
    /// its rest.
    pub(super) fn take_damage(&mut self, end: u64) -> Vec<Damage> {
        let mut taken = Vec::new();
        while let Some(d) = self.damage.front_mut() {
            if d.at >= end {
                break;
            }
            if d.at + d.len > end {
                let inside = end - d.at;
                taken.push(Damage { len: inside, ..*d });
                d.at = end;
                d.len -= inside;
                d.raw += inside;
                break;
            }
            taken.extend(self.damage.pop_front());
        }
        taken
    }

    /// Whether a recorded place starts before `end`: the check made after
    /// every event, so it must be cheap.
    #[inline]
    pub(super) fn damaged_before(&self, end: u64) -> bool {
        self.damage.front().is_some_and(|d| d.at < end)
    }

    /// The bytes at `damage` as a verdict on the whole document.
    pub(super) fn undecodable(&self, damage: &Damage, attribute: Option<String>) -> Undecodable {
        Undecodable {
            attribute,
            encoding: self.encoding.name(),
            from: self.source,
            position: damage.raw,
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
        self.charset_mismatch = detected.mismatch;
        head.drain(..detected.bom_len);
        if let Some((alternative, source)) = detected.alternative {
            self.decoding = Decoding::Ascii {
                alternative,
                source,
            };
            self.chunk[..head.len()].copy_from_slice(&head);
            self.end = 0;
            self.held = head.len();
        } else if detected.encoding == UTF_8 {
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
        match self.decoding {
            Decoding::Utf8 => self.refill_utf8(),
            Decoding::Ascii { .. } => self.refill_ascii(),
            _ => self.refill_transcoded(),
        }
    }

    /// Hands on the ASCII bytes before the first other one; there, decides
    /// between the charset's encoding and the document's own, and goes on
    /// in the one chosen.
    fn refill_ascii(&mut self) -> io::Result<()> {
        /// Bytes looked at to decide (the longest character in UTF-8 or
        /// GB18030).
        const LOOKAHEAD: usize = 4;
        let Decoding::Ascii {
            alternative,
            source,
        } = self.decoding
        else {
            return Ok(());
        };
        let mut len = self.restart_chunk();
        loop {
            let ascii = self.chunk[..len]
                .iter()
                .position(|b| !b.is_ascii())
                .unwrap_or(len);
            if ascii > 0 {
                self.end = ascii;
                self.held = len - ascii;
                return Ok(());
            }
            if len >= LOOKAHEAD || (self.inner_done && len > 0) {
                break;
            }
            if self.inner_done {
                return Ok(());
            }
            if let Some(more) = self.read_more(len)? {
                len = more;
            }
        }
        let first = &self.chunk[..len];
        if prefer_alternative(self.encoding, alternative, first, self.inner_done) {
            self.encoding = alternative;
            self.source = source;
            self.charset_mismatch = true;
        }
        // Everything handed on so far was ASCII and consumed: the chosen
        // decoding starts here, with these bytes.
        if self.encoding == UTF_8 {
            self.decoding = Decoding::Utf8;
            self.held = len;
        } else {
            self.decoding =
                Decoding::Transcode(Box::new(self.encoding.new_decoder_without_bom_handling()));
            self.raw_decoded = self.consumed - self.bom_len;
            self.pending = first.to_vec();
            self.pending_at = 0;
        }
        self.refill()
    }

    /// Moves the held bytes to the front of the chunk, which is then
    /// empty of bytes to hand out; returns how many were held.
    fn restart_chunk(&mut self) -> usize {
        let held = self.held;
        self.chunk.copy_within(self.end..self.end + held, 0);
        self.start = 0;
        self.end = 0;
        self.held = 0;
        held
    }

    /// Reads more of the document into `chunk[len..]` (never full: at
    /// most a few bytes are held between rounds); returns the new length,
    /// or `None` at the end of the document.
    fn read_more(&mut self, len: usize) -> io::Result<Option<usize>> {
        let available = match fill(&mut self.inner) {
            Ok(bytes) => bytes,
            Err(e) => return Err(self.stop(Failure::Io(e))),
        };
        if available.is_empty() {
            self.inner_done = true;
            return Ok(None);
        }
        let n = available.len().min(self.chunk.len() - len);
        self.chunk[len..len + n].copy_from_slice(&available[..n]);
        self.inner.consume(n);
        Ok(Some(len + n))
    }

    fn refill_utf8(&mut self) -> io::Result<()> {
        let mut len = self.restart_chunk();
        // Offset of chunk[0] in the document.
        let chunk_at = self.consumed;
        while !self.inner_done {
            let Some(more) = self.read_more(len)? else {
                break;
            };
            len = more;
            let ready = self.check_utf8(chunk_at, len, false);
            if ready > 0 {
                self.end = ready;
                self.held = len - ready;
                return Ok(());
            }
        }
        self.end = self.check_utf8(chunk_at, len, true);
        Ok(())
    }

    /// Checks `chunk[..len]` (at `chunk_at` in the document) as UTF-8,
    /// substituting and recording what does not decode, and returns how
    /// many leading bytes are ready: all of them, but for an incomplete
    /// sequence at the very end, left for the next round unless `at_end`.
    fn check_utf8(&mut self, chunk_at: u64, len: usize, at_end: bool) -> usize {
        let mut from = 0;
        loop {
            let error = match std::str::from_utf8(&self.chunk[from..len]) {
                Ok(_) => return len,
                Err(e) => e,
            };
            let bad = from + error.valid_up_to();
            let bad_len = match error.error_len() {
                Some(n) => n,
                None if !at_end => return bad,
                None => len - bad,
            };
            self.chunk[bad..bad + bad_len].fill(SUBSTITUTE);
            let at = chunk_at + bad as u64;
            record(&mut self.damage, at, bad_len as u64, at);
            from = bad + bad_len;
        }
    }

    fn refill_transcoded(&mut self) -> io::Result<()> {
        self.start = 0;
        self.end = 0;
        let mut written = 0;
        let Decoding::Transcode(decoder) = &mut self.decoding else {
            return Ok(());
        };
        // One byte is kept free for a substitute.
        let room = self.chunk.len() - 1;
        let stopped_by = loop {
            if written >= room {
                break None;
            }
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
            let (result, read, out) = decoder.decode_to_utf8_without_replacement(
                src,
                &mut self.chunk[written..room],
                last,
            );
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
                    let raw = decoded_before + read as u64 - u64::from(bad) - u64::from(after);
                    self.chunk[written] = SUBSTITUTE;
                    let at = self.consumed + written as u64;
                    written += 1;
                    record(&mut self.damage, at, 1, self.bom_len + raw);
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
}

/// Records substitutes at `at` (`len` of them, for the bytes at `raw` in
/// the document): joined to the last place when they follow it, or when
/// [`MAX_PENDING_DAMAGE`] places are pending.
fn record(damage: &mut VecDeque<Damage>, at: u64, len: u64, raw: u64) {
    let full = damage.len() >= MAX_PENDING_DAMAGE;
    if let Some(last) = damage.back_mut() {
        if last.at + last.len == at || full {
            last.len = at + len - last.at;
            return;
        }
    }
    damage.push_back(Damage { at, len, raw });
}

/// Whether a document whose first byte beyond ASCII starts `first` is in
/// `alternative` (its own encoding) rather than `charset`'s encoding: when
/// the charset's cannot decode that character and its own can, or when its
/// own is UTF-8 and the character is UTF-8 beyond ASCII (text in another
/// encoding practically never is).
fn prefer_alternative(
    charset: &'static Encoding,
    alternative: &'static Encoding,
    first: &[u8],
    at_end: bool,
) -> bool {
    let decodes = |encoding: &'static Encoding| {
        let window = &first[..first.len().min(4)];
        let mut decoder = encoding.new_decoder_without_bom_handling();
        let mut out = [0u8; 16];
        let (result, _, written) = decoder.decode_to_utf8_without_replacement(
            window,
            &mut out,
            at_end && window.len() == first.len(),
        );
        written > 0 || matches!(result, DecoderResult::OutputFull)
    };
    decodes(alternative) && (alternative == UTF_8 || !decodes(charset))
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
