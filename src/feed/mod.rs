//! Streaming parser for the provider's XML feed, in both dialects
//! (`planList`/`base_plan`/`plan` and the older `eventList`/`base_event`/`event`).
//!
//! This module owns two decisions:
//!
//! * **per item**: turn each plan element into a [`FeedPlan`], or into a
//!   counted [`Skip`] when it cannot be understood (no id, no or impossible
//!   start, end before start, unusable zone price, a reference that cannot
//!   be resolved, bytes inside it that do not decode), and count the values
//!   it repaired (HTML named references, lone `&`s, characters XML
//!   forbids) and a `Content-Type` charset that did not describe the body;
//! * **per document**: whether the bytes are an acceptable feed at all. Any
//!   `Err` from [`FeedReader::next_item`] means "reject the whole document"
//!   (an unknown encoding, bytes that do not decode in markup or outside
//!   any item, not well-formed, truncated, unknown root, a tag or text run
//!   over [`MAX_EVENT_BYTES`], or the reader failed). `Ok(None)` is
//!   returned only at the well-formed end of a complete document.
//!
//! Bytes that do not decode are substituted by `input` and their places
//! recorded; after each event the reader looks for places inside it
//! (one comparison when there are none). A place in an attribute value or
//! in text is handed to the document, which skips the item that holds it
//! (`undecodable_text`) or, outside any item, rejects the document; a
//! place anywhere else in markup rejects the document. So no value that
//! holds a substitute is ever read.
//!
//! Parts: `decode` (which encoding), `input` (the document streamed into
//! UTF-8, bounded per event), `dialect` (the document state machine),
//! `entities` (references and the internal DTD), `markup` (one tag's
//! attributes and names, error wording).
//!
//! [`FeedReader::next_item`] yields understood items in document order.
//! [`FeedReader::next_unit`] hands items out raw (their tags), to be
//! understood on any thread by an [`Understander`]: the same items, the
//! same repairs, the same first error.
//!
//! Memory is bounded whatever the feed size: no DOM, one reusable event
//! buffer, one fixed input chunk, a cap on every single tag or text run,
//! on element nesting and on entity expansion, and on the tags one raw
//! item holds.
//!
//! It must not do I/O of its own (it reads only the reader it is given), touch
//! the store or the network, or know about fetching, time zones or identity.

mod decode;
mod dialect;
mod entities;
mod input;
mod markup;
#[cfg(test)]
mod real_xml_tests;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead};

use quick_xml::errors::{Error as XmlError, IllFormedError, SyntaxError};
use quick_xml::events::Event;
use quick_xml::reader::Reader;

use crate::model::{FeedPlan, RepairReason, SkipReason};

pub use decode::EncodingSource;
pub use dialect::RawItem;
use dialect::{Document, Phase, Reading, Step, Vocabulary, EVENTS, PLANS};
use entities::{Entities, Repairs};
use input::{BoundedInput, Damage, Failure, Undecodable};
use markup::{attribute_at, quoted, shown_id};

/// Bound on any single tag (with all its attributes) or text run, in bytes.
/// A document with a longer one is rejected with [`ParseError::TooLarge`]
/// before the parser buffers it.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Deepest element nesting accepted. Real feeds nest five levels; the bound
/// only keeps the parser's stack of open elements small on hostile input.
const MAX_DEPTH: usize = 256;

/// Size of the fixed chunk the input is read through.
const CHUNK_BYTES: usize = 64 * 1024;

/// Raw items [`FeedReader::recycle`] keeps, and the largest it keeps.
pub const MAX_SPARE_ITEMS: usize = 1024;
const MAX_SPARE_BYTES: usize = 4096;

/// Longest piece of feed text quoted in an error or skip message.
const MAX_QUOTED_CHARS: usize = 80;

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// The two spellings of the feed, decided by the root element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Current dialect: root `planList`.
    Plans,
    /// Older dialect: root `eventList`.
    Events,
}

impl Dialect {
    /// The dialect whose root element is `name`, if any.
    pub fn from_root(name: &str) -> Option<Dialect> {
        [Dialect::Plans, Dialect::Events]
            .into_iter()
            .find(|d| d.vocabulary().root == name)
    }

    /// Name of the root element (`planList` / `eventList`).
    pub fn root_element(self) -> &'static str {
        self.vocabulary().root
    }

    fn vocabulary(self) -> &'static Vocabulary {
        match self {
            Dialect::Plans => &PLANS,
            Dialect::Events => &EVENTS,
        }
    }
}

/// An item (or one zone of an item) left out, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    pub reason: SkipReason,
    /// As written in the feed; empty when absent.
    pub base_plan_id: String,
    /// As written in the feed; empty when absent.
    pub plan_id: String,
    /// One human sentence for the logs, quoting the offending value.
    pub detail: String,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (base plan {}, plan {}): {}",
            self.reason,
            shown_id(&self.base_plan_id),
            shown_id(&self.plan_id),
            self.detail
        )
    }
}

/// What [`FeedReader::next_item`] yields, in document order. Zone skips of a
/// plan come right before that plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedItem {
    Plan(FeedPlan),
    Skipped(Skip),
}

/// What [`FeedReader::next_unit`] yields, in document order.
pub enum FeedUnit {
    /// An item read but not understood yet: [`Understander::understand`]
    /// gives its items, on any thread.
    Raw(RawItem),
    /// Items the reader understood itself, in document order (a document
    /// with a DOCTYPE, whose entities are expanded in document order, or an
    /// item with very many zones).
    Items(Vec<FeedItem>),
}

/// Understands [`RawItem`]s anywhere: the part of reading a feed that
/// needs no other item (references, dates, prices, zones, skips). The
/// values repaired on the way are counted here; add them to the reader's
/// own [`FeedReader::repairs`].
#[derive(Default)]
pub struct Understander {
    /// The entities of a document without a DOCTYPE (the only one whose
    /// items are handed out raw): none but the predefined ones.
    entities: Entities,
    repairs: Repairs,
}

impl Understander {
    pub fn new() -> Understander {
        Understander::default()
    }

    /// The item's zone skips, then its plan or why it is skipped: what
    /// [`FeedReader::next_item`] yields for it. An error rejects the
    /// document, as if the reader had returned it at this item.
    pub fn understand(&mut self, raw: &RawItem) -> Result<Vec<FeedItem>, ParseError> {
        let reading = &mut Reading {
            entities: &mut self.entities,
            repairs: &mut self.repairs,
        };
        raw.understand(reading)
            .map_err(|e| in_decoded_terms(e, raw.decoded_from))
    }

    /// Repairs made so far, by reason.
    pub fn repairs(&self) -> impl Iterator<Item = (RepairReason, u64)> + '_ {
        self.repairs.by_reason()
    }
}

/// Why a whole document is rejected. Messages are meant for people (fetch
/// journal, logs).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The underlying reader failed; its error is passed through unchanged.
    #[error("reading the feed failed: {0}")]
    Io(std::io::Error),
    /// The document is not well-formed XML.
    #[error("the feed is not well-formed XML (at byte {position}): {message}")]
    Xml { position: u64, message: String },
    /// Well-formed so far, but the root element is not a feed.
    #[error("the document is not a plans feed: its root element is <{root}>, expected <planList> or <eventList>")]
    NotAFeed { root: String },
    /// The input ended before the root element was closed (or was empty).
    #[error("the feed is truncated: the input ended at byte {position} before the root element was closed")]
    Truncated { position: u64 },
    /// One tag or text run is longer than `limit` bytes.
    #[error(
        "the feed has a tag or text run longer than {limit} bytes (starting at byte {position})"
    )]
    TooLarge { position: u64, limit: usize },
    /// The document names an encoding planbox cannot read.
    #[error("the feed's encoding \"{label}\" ({from}) is not one planbox can read")]
    UnknownEncoding { label: String, from: EncodingSource },
    /// Bytes that do not decode in the document's encoding (or an encoding
    /// label that contradicts the bytes, at position 0).
    #[error(
        "the feed is not valid {encoding} ({from}): the bytes at offset {position} do not decode"
    )]
    Undecodable {
        encoding: &'static str,
        from: EncodingSource,
        position: u64,
    },
}

impl ParseError {
    /// A copy to answer later calls with after the reader has failed.
    /// (`io::Error` is not `Clone`; the copy keeps its kind and message.)
    fn duplicate(&self) -> ParseError {
        match self {
            ParseError::Io(e) => ParseError::Io(io::Error::new(e.kind(), e.to_string())),
            ParseError::Xml { position, message } => ParseError::Xml {
                position: *position,
                message: message.clone(),
            },
            ParseError::NotAFeed { root } => ParseError::NotAFeed { root: root.clone() },
            ParseError::Truncated { position } => ParseError::Truncated {
                position: *position,
            },
            ParseError::TooLarge { position, limit } => ParseError::TooLarge {
                position: *position,
                limit: *limit,
            },
            ParseError::UnknownEncoding { label, from } => ParseError::UnknownEncoding {
                label: label.clone(),
                from: *from,
            },
            ParseError::Undecodable {
                encoding,
                from,
                position,
            } => ParseError::Undecodable {
                encoding,
                from: *from,
                position: *position,
            },
        }
    }
}

/// Checks an encoding label given by a person (`import --charset`): one
/// planbox can read, or an error that says so. (A `Content-Type` charset
/// planbox does not know is passed over instead: see `decode.rs`.)
pub fn parse_charset(label: &str) -> Result<String, String> {
    match decode::known_label(label) {
        Ok(label) => Ok(label.to_owned()),
        Err(_) => Err(format!(
            "\"{label}\" is not an encoding planbox can read (a label of the WHATWG Encoding Standard: UTF-8, ISO-8859-1, windows-1252, UTF-16, Shift_JIS, ...)"
        )),
    }
}

/// Pull parser over one feed document.
///
/// Call [`next_item`](Self::next_item) until it returns `Ok(None)` (complete,
/// well-formed document) or `Err` (reject the document). After either, later
/// calls repeat the same answer.
pub struct FeedReader<R: BufRead> {
    xml: Reader<BoundedInput<R>>,
    /// The one event buffer, reused for every event.
    buf: Vec<u8>,
    doc: Document,
    /// Items understood but not handed out yet (`next_item`).
    queue: VecDeque<FeedItem>,
}

impl<R: BufRead> FeedReader<R> {
    /// A reader of a document whose encoding is told by its own bytes (BOM,
    /// XML declaration; UTF-8 without either).
    pub fn new(reader: R) -> Self {
        Self::with_charset(reader, None)
    }

    /// A reader of a document served with `charset` in its `Content-Type`:
    /// the charset wins over the XML declaration (a BOM still wins over it).
    pub fn with_charset(reader: R, charset: Option<&str>) -> Self {
        let input = BoundedInput::new(reader, charset.map(str::to_owned));
        let mut xml = Reader::from_reader(input);
        let config = xml.config_mut();
        // Mismatched end tags and `--` inside comments are errors.
        config.enable_all_checks(true);
        // A `&` that starts no reference in text is kept as text: text is
        // never read, and a lone `&` is damage to repair, not to reject.
        config.allow_dangling_amp = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
        FeedReader {
            xml,
            buf: Vec::new(),
            doc: Document::default(),
            queue: VecDeque::new(),
        }
    }

    /// Next understood plan or skipped item; `Ok(None)` only at the
    /// well-formed end of a complete document.
    pub fn next_item(&mut self) -> Result<Option<FeedItem>, ParseError> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Ok(Some(item));
            }
            let items = match self.next_unit()? {
                None => return Ok(None),
                Some(FeedUnit::Items(items)) => items,
                Some(FeedUnit::Raw(raw)) => {
                    let reading = &mut Reading {
                        entities: &mut self.doc.entities,
                        repairs: &mut self.doc.repairs,
                    };
                    match raw.understand(reading) {
                        Ok(items) => items,
                        Err(e) => {
                            let e = in_decoded_terms(e, raw.decoded_from);
                            self.doc.phase = Phase::Failed(e.duplicate());
                            return Err(e);
                        }
                    }
                }
            };
            self.queue.extend(items);
        }
    }

    /// Next item, raw or understood; `Ok(None)` only at the well-formed end
    /// of a complete document. The repairs of raw items are counted by
    /// whoever understands them, not in [`repairs`](Self::repairs).
    pub fn next_unit(&mut self) -> Result<Option<FeedUnit>, ParseError> {
        match &self.doc.phase {
            Phase::Finished => return Ok(None),
            Phase::Failed(e) => return Err(e.duplicate()),
            _ => {}
        }
        match self.advance() {
            Ok(None) => {
                self.doc.phase = Phase::Finished;
                Ok(None)
            }
            Ok(Some(FeedUnit::Raw(mut raw))) => {
                let input = self.xml.get_ref();
                raw.decoded_from = input
                    .transcoding()
                    .then(|| input.encoding().map_or("?", |(e, _)| e.name()));
                Ok(Some(FeedUnit::Raw(raw)))
            }
            Ok(unit) => Ok(unit),
            Err(e) => {
                // An open item's tags come before what failed.
                let e = self.doc.open_item_error().unwrap_or(e);
                let e = self.in_document_terms(e);
                self.doc.phase = Phase::Failed(e.duplicate());
                Err(e)
            }
        }
    }

    /// The document's encoding (`encoding_rs` name), once known, and how it
    /// was decided.
    pub fn encoding(&self) -> Option<(&'static str, EncodingSource)> {
        self.xml
            .get_ref()
            .encoding()
            .map(|(e, source)| (e.name(), source))
    }

    /// Takes raw items back once understood: the next items are read into
    /// their buffers (at most [`MAX_SPARE_ITEMS`] are kept).
    pub fn recycle(&mut self, units: impl IntoIterator<Item = FeedUnit>) {
        for unit in units {
            if self.doc.spare.len() >= MAX_SPARE_ITEMS {
                return;
            }
            if let FeedUnit::Raw(raw) = unit {
                // Only buffers of a typical size are kept.
                if raw.size() <= MAX_SPARE_BYTES {
                    self.doc.spare.push(raw);
                }
            }
        }
    }

    /// Repairs made so far (HTML named references, lone `&`s, characters
    /// XML forbids, a charset that did not describe the body), by reason:
    /// by this reader (with [`next_item`](Self::next_item), all of them).
    pub fn repairs(&self) -> impl Iterator<Item = (RepairReason, u64)> + '_ {
        let mismatch = self.xml.get_ref().charset_mismatch;
        self.doc
            .repairs()
            .chain(mismatch.then_some((RepairReason::CharsetMismatch, 1)))
    }

    /// Positions in a transcoded document count its text decoded to UTF-8;
    /// say so, and give a truncation at the end in bytes of the document.
    fn in_document_terms(&self, e: ParseError) -> ParseError {
        let input = self.xml.get_ref();
        if !input.transcoding() {
            return e;
        }
        match e {
            ParseError::Truncated { .. } if input.exhausted() => ParseError::Truncated {
                position: input.raw_position(),
            },
            other => in_decoded_terms(other, input.encoding().map(|(e, _)| e.name())),
        }
    }

    /// The feed's dialect, known once the root element was read.
    pub fn dialect(&self) -> Option<Dialect> {
        self.doc.dialect
    }

    /// Bytes of the document read so far (for progress).
    pub fn position(&self) -> u64 {
        self.xml.get_ref().raw_position()
    }

    fn advance(&mut self) -> Result<Option<FeedUnit>, ParseError> {
        loop {
            self.buf.clear();
            let at = self.xml.get_ref().consumed;
            self.xml.get_mut().start_event();
            let event = match self.xml.read_event_into(&mut self.buf) {
                Ok(event) => event,
                Err(e) => return Err(reader_error(&mut self.xml, e)),
            };
            let input = self.xml.get_mut();
            if input.damaged_before(input.consumed) {
                let damage = input.take_damage(input.consumed);
                self.doc.damage = Some(undecodable_data(input, &event, at, &damage)?);
            }
            match self.doc.on_event(event, at)? {
                Step::Continue => {}
                Step::Raw(raw) => return Ok(Some(FeedUnit::Raw(raw))),
                Step::Items(items) if items.is_empty() => {}
                Step::Items(items) => return Ok(Some(FeedUnit::Items(items))),
                Step::End => return Ok(None),
            }
        }
    }
}

/// A position in a transcoded document counts its text decoded to UTF-8:
/// the message says so (`from`: the encoding, when not UTF-8).
fn in_decoded_terms(e: ParseError, from: Option<&str>) -> ParseError {
    match (e, from) {
        (ParseError::Xml { position, message }, Some(from)) => ParseError::Xml {
            position,
            message: format!(
                "{message} (the position counts the text decoded from {from} to UTF-8)"
            ),
        },
        (other, _) => other,
    }
}

/// The undecodable bytes `damage` inside `event` (which starts at `at`):
/// data for the document to charge to an item when they all lie in
/// attribute values or text, else the verdict on the document.
fn undecodable_data<R: BufRead>(
    input: &BoundedInput<R>,
    event: &Event<'_>,
    at: u64,
    damage: &[Damage],
) -> Result<Undecodable, ParseError> {
    let first = &damage[0];
    let attribute = match event {
        Event::Text(_) | Event::CData(_) | Event::Comment(_) | Event::GeneralRef(_) => None,
        Event::Start(e) | Event::Empty(e) => {
            // The tag's text starts after its `<`.
            let tag = e.as_bytes();
            let mut first_name = None;
            for d in damage {
                let value = (d.at.checked_sub(at + 1))
                    .map(|o| (o as usize, o as usize + d.len as usize))
                    .filter(|&(from, to)| {
                        to <= tag.len() && !tag[from..to].iter().any(|b| matches!(b, b'"' | b'\''))
                    })
                    .and_then(|(from, _)| attribute_at(tag, from));
                match value {
                    Some(name) => {
                        first_name.get_or_insert(name);
                    }
                    None => return Err(input.undecodable(d, None).error()),
                }
            }
            first_name.map(str::to_owned)
        }
        _ => return Err(input.undecodable(first, None).error()),
    };
    Ok(input.undecodable(first, attribute))
}

/// Maps an error of the XML reader to the document-level verdict.
fn reader_error<R: BufRead>(xml: &mut Reader<BoundedInput<R>>, err: XmlError) -> ParseError {
    let input = xml.get_mut();
    if let Some(failure) = input.failure.take() {
        return match failure {
            Failure::Io(e) => ParseError::Io(e),
            Failure::TooLarge { position } => ParseError::TooLarge {
                position,
                limit: MAX_EVENT_BYTES,
            },
            Failure::Encoding(e) => e,
        };
    }
    // Undecodable bytes in the event that failed (or the byte the parser
    // looked at next) are the cause.
    if let Some(d) = input.take_damage(input.consumed + 1).first() {
        return input.undecodable(d, None).error();
    }
    let at_eof = input.exhausted();
    let position = xml.error_position() + xml.get_ref().bom_len;
    let message = match err {
        XmlError::Syntax(_) | XmlError::IllFormed(IllFormedError::UnclosedReference) if at_eof => {
            return ParseError::Truncated { position };
        }
        XmlError::Io(e) => return ParseError::Io(io::Error::new(e.kind(), e.to_string())),
        XmlError::Syntax(SyntaxError::InvalidBangMarkup) => {
            "`<!` must start a comment, a CDATA section or a DOCTYPE".to_owned()
        }
        XmlError::Syntax(e) => e.to_string(),
        XmlError::IllFormed(IllFormedError::MismatchedEndTag { expected, found }) => format!(
            "end tag </{}> does not close the open element <{}>",
            quoted(&found),
            quoted(&expected)
        ),
        XmlError::IllFormed(IllFormedError::UnmatchedEndTag(name)) => {
            format!("end tag </{}> has no open element to close", quoted(&name))
        }
        XmlError::IllFormed(IllFormedError::UnclosedReference) => {
            "a `&` in text does not start a reference (write `&amp;`)".to_owned()
        }
        XmlError::IllFormed(IllFormedError::DoubleHyphenInComment) => {
            "a comment contains `--`".to_owned()
        }
        XmlError::IllFormed(e) => e.to_string(),
        XmlError::Encoding(e) => format!("undecodable text: {e}"),
        other => other.to_string(),
    };
    ParseError::Xml { position, message }
}
