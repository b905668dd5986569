//! Which character encoding a feed document is written in.
//!
//! Decided from the first bytes of the document and the charset of the
//! HTTP `Content-Type` (when the feed was fetched), in this order:
//!
//! 1. a byte order mark (UTF-8, UTF-16 LE, UTF-16 BE): it cannot be mistaken,
//!    and RFC 7303 gives it precedence over the `charset` parameter;
//! 2. the `charset` of the `Content-Type` (RFC 7303: it wins over the XML
//!    declaration);
//! 3. UTF-16 without a BOM, recognised by `<` as a 16-bit unit (XML 1.0
//!    appendix F);
//! 4. the `encoding` of the XML declaration;
//! 5. UTF-8.
//!
//! Servers often send a `charset` that does not describe the body (a
//! default the server adds to every response). The document's *own*
//! encoding (3 to 5, or its BOM) is then used instead, and the mismatch
//! counted (`charset_mismatch`): when the charset is a label planbox does
//! not know, names UTF-16 over bytes that are not, or names an
//! ASCII-compatible encoding over UTF-16 recognised by its first
//! character; and when the charset and the XML declaration name two
//! encodings that both read ASCII as ASCII, the first byte beyond ASCII
//! decides (`input.rs`): the charset's encoding
//! unless it cannot decode that character and the document's own can, or
//! the document's own is UTF-8 and the character is valid UTF-8 beyond
//! ASCII.
//!
//! Labels are resolved by `encoding_rs` as the WHATWG Encoding Standard
//! says (so `ISO-8859-1` and `US-ASCII` read as windows-1252, a superset
//! that differs only in bytes 0x80-0x9F, which are C1 controls in Latin-1
//! and are what windows-1252 producers mean). An unknown label, or one that
//! contradicts the bytes (UTF-16 declared over ASCII bytes), is an error
//! that names it. This module must not read the input itself: it judges the
//! bytes it is shown.

use std::fmt;

use encoding_rs::{Encoding, REPLACEMENT, UTF_16BE, UTF_16LE, UTF_8};

use super::ParseError;

/// How many leading bytes are enough to decide (an XML declaration is far
/// shorter; a longer one is looked for no further).
pub(super) const SNIFF_BYTES: usize = 1024;

/// Where the encoding of a document came from, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodingSource {
    ContentType,
    ByteOrderMark,
    Declaration,
    /// No BOM, no charset, no declaration (or one without `encoding`).
    Default,
    /// UTF-16 recognised from its first character.
    Sniffed,
}

impl fmt::Display for EncodingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodingSource::ContentType => "named by the Content-Type charset",
            EncodingSource::ByteOrderMark => "named by its byte order mark",
            EncodingSource::Declaration => "named by its XML declaration",
            EncodingSource::Default => "the default when none is named",
            EncodingSource::Sniffed => "recognised from its first character",
        })
    }
}

/// The decision for one document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Detected {
    pub encoding: &'static Encoding,
    /// Length of the byte order mark to skip.
    pub bom_len: usize,
    pub source: EncodingSource,
    /// The document's own encoding, when it differs from the charset's
    /// (`encoding`) and the first byte beyond ASCII is to decide.
    pub alternative: Option<(&'static Encoding, EncodingSource)>,
    /// The charset did not describe the document (already decided).
    pub mismatch: bool,
}

impl Detected {
    fn new(encoding: &'static Encoding, source: EncodingSource) -> Detected {
        Detected {
            encoding,
            bom_len: 0,
            source,
            alternative: None,
            mismatch: false,
        }
    }

    fn mismatched(self) -> Detected {
        Detected {
            mismatch: true,
            ..self
        }
    }
}

/// Decides the encoding of a document that starts with `head` (at least
/// [`SNIFF_BYTES`] bytes unless the document is shorter).
pub(super) fn detect(head: &[u8], charset: Option<&str>) -> Result<Detected, ParseError> {
    let own = own_encoding(head);
    let Some(label) = charset.map(str::trim).filter(|l| !l.is_empty()) else {
        return own;
    };
    let named = lookup(label, EncodingSource::ContentType);
    if let Ok(o) = &own {
        if o.source == EncodingSource::ByteOrderMark {
            let agrees = named
                .as_ref()
                .is_ok_and(|e| *e == o.encoding || (is_utf16(e) && is_utf16(o.encoding)));
            return Ok(if agrees { *o } else { o.mismatched() });
        }
    }
    let Ok(encoding) = named else {
        // A label nobody knows says nothing about the bytes.
        return own.map(Detected::mismatched);
    };
    let sniffed = own
        .as_ref()
        .is_ok_and(|o| o.source == EncodingSource::Sniffed);
    if is_utf16(encoding) {
        // `charset=utf-16` says nothing of the byte order: the first
        // character does; without a `<` as a 16-bit unit, the bytes are
        // not UTF-16.
        return match own {
            Ok(o) if sniffed => Ok(Detected::new(o.encoding, EncodingSource::ContentType)),
            own => own.map(Detected::mismatched),
        };
    }
    if sniffed {
        // `<` as a 16-bit unit: U+0000 in an ASCII-compatible encoding,
        // which XML does not allow.
        return own.map(Detected::mismatched);
    }
    let mut detected = Detected::new(encoding, EncodingSource::ContentType);
    if let Ok(o) = own {
        // Only a declaration is evidence enough to question the charset:
        // without one, UTF-8 is only a default.
        if o.source == EncodingSource::Declaration
            && o.encoding != encoding
            && o.encoding.is_ascii_compatible()
            && encoding.is_ascii_compatible()
        {
            detected.alternative = Some((o.encoding, o.source));
        }
    }
    Ok(detected)
}

/// The encoding the document itself says it is in: its BOM, UTF-16
/// recognised from its first character, its declaration, else UTF-8.
fn own_encoding(head: &[u8]) -> Result<Detected, ParseError> {
    if let Some((encoding, bom_len)) = Encoding::for_bom(head) {
        return Ok(Detected {
            bom_len,
            ..Detected::new(encoding, EncodingSource::ByteOrderMark)
        });
    }
    let found = |encoding, source| Ok(Detected::new(encoding, source));
    let sniffed_utf16 = match head {
        [b'<', 0, ..] => Some(UTF_16LE),
        [0, b'<', ..] => Some(UTF_16BE),
        _ => None,
    };
    if let Some(encoding) = sniffed_utf16 {
        return found(encoding, EncodingSource::Sniffed);
    }
    match declared_encoding(head) {
        Some(label) => {
            let encoding = lookup(label, EncodingSource::Declaration)?;
            if is_utf16(encoding) {
                // Declared UTF-16, but the declaration itself was readable
                // as ASCII: the label does not describe these bytes.
                return Err(lying(encoding, EncodingSource::Declaration));
            }
            found(encoding, EncodingSource::Declaration)
        }
        None => found(UTF_8, EncodingSource::Default),
    }
}

/// `label` when it names an encoding planbox can read.
pub(super) fn known_label(label: &str) -> Result<&str, ParseError> {
    lookup(label.trim(), EncodingSource::ContentType).map(|_| label)
}

fn is_utf16(e: &'static Encoding) -> bool {
    e == UTF_16LE || e == UTF_16BE
}

fn lookup(label: &str, from: EncodingSource) -> Result<&'static Encoding, ParseError> {
    match Encoding::for_label_no_replacement(label.as_bytes()) {
        Some(e) if e != REPLACEMENT => Ok(e),
        _ => Err(ParseError::UnknownEncoding {
            label: label.chars().take(40).collect(),
            from,
        }),
    }
}

fn lying(encoding: &'static Encoding, from: EncodingSource) -> ParseError {
    ParseError::Undecodable {
        encoding: encoding.name(),
        from,
        position: 0,
    }
}

/// The `encoding` pseudo-attribute of an XML declaration at the very start
/// of `head`, read as ASCII.
fn declared_encoding(head: &[u8]) -> Option<&str> {
    let rest = head.strip_prefix(b"<?xml")?;
    if !rest.first().is_some_and(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let end = rest.windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(&rest[..end]).ok()?;
    let at = decl.find("encoding")?;
    let after = decl[at + "encoding".len()..].trim_start();
    let after = after.strip_prefix('=')?.trim_start();
    let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &after[1..];
    let close = value.find(quote)?;
    Some(&value[..close])
}

#[cfg(test)]
mod tests {
    use super::*;
    use encoding_rs::{ISO_8859_15, WINDOWS_1252};

    fn enc(head: &[u8], charset: Option<&str>) -> (&'static str, usize, EncodingSource) {
        let d = detect(head, charset).unwrap();
        (d.encoding.name(), d.bom_len, d.source)
    }

    #[test]
    fn a_bom_wins_then_the_charset_then_the_declaration() {
        use EncodingSource::*;
        let latin = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><planList/>";
        assert_eq!(enc(latin, None), ("windows-1252", 0, Declaration));
        assert_eq!(enc(latin, Some("utf-8")), ("UTF-8", 0, ContentType));
        assert_eq!(
            enc(latin, Some(" ISO-8859-15 ")),
            ("ISO-8859-15", 0, ContentType)
        );
        let bom = [b"\xEF\xBB\xBF".as_slice(), latin].concat();
        assert_eq!(enc(&bom, Some("iso-8859-1")), ("UTF-8", 3, ByteOrderMark));
        assert_eq!(enc(b"\xFF\xFE<\0", None), ("UTF-16LE", 2, ByteOrderMark));
        assert_eq!(enc(b"\xFE\xFF\0<", None), ("UTF-16BE", 2, ByteOrderMark));
        assert_eq!(enc(b"<\0?\0x\0", None), ("UTF-16LE", 0, Sniffed));
        assert_eq!(enc(b"\0<\0?\0x", None), ("UTF-16BE", 0, Sniffed));
        assert_eq!(enc(b"\0<\0p", Some("UTF-16")), ("UTF-16BE", 0, ContentType));
        assert_eq!(enc(b"<planList/>", None), ("UTF-8", 0, Default));
        assert_eq!(
            enc(b"<?xml version='1.0' encoding = 'windows-1252' ?>", None).0,
            WINDOWS_1252.name()
        );
        assert_eq!(
            enc(b"<?xml version=\"1.0\" encoding=\"iso-8859-15\"?>", None).0,
            ISO_8859_15.name()
        );
        // A declaration without an encoding is UTF-8.
        assert_eq!(enc(b"<?xml version=\"1.0\"?><a/>", None).0, "UTF-8");
    }

    #[test]
    fn unknown_or_lying_declarations_are_errors_that_name_them() {
        let e = detect(b"<?xml version=\"1.0\" encoding=\"EBCDIC-X\"?>", None).unwrap_err();
        assert!(e.to_string().contains("EBCDIC-X"), "{e}");
        let e = detect(b"<?xml version=\"1.0\" encoding=\"UTF-16\"?><a/>", None).unwrap_err();
        assert!(e.to_string().contains("UTF-16"), "{e}");
        // Nor does a charset that cannot describe the bytes help them.
        let e = detect(
            b"<?xml version=\"1.0\" encoding=\"UTF-16\"?><a/>",
            Some("utf-16"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("UTF-16"), "{e}");
    }

    fn decided(head: &[u8], charset: &str) -> Detected {
        detect(head, Some(charset)).unwrap()
    }

    #[test]
    fn a_charset_that_cannot_describe_the_body_gives_way_to_the_documents_own() {
        use EncodingSource::*;
        let latin = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><planList/>";
        // Unknown labels (and those the Encoding Standard maps to the
        // replacement decoder) say nothing about the bytes.
        for label in ["klingon", "iso-2022-kr", "utf8mb4"] {
            let d = decided(latin, label);
            assert_eq!(
                (d.encoding, d.source, d.mismatch),
                (WINDOWS_1252, Declaration, true)
            );
            let d = decided(b"<planList/>", label);
            assert_eq!((d.encoding, d.source, d.mismatch), (UTF_8, Default, true));
        }
        // UTF-16 named over bytes that are not.
        let d = decided(b"<a/>", "utf-16");
        assert_eq!((d.encoding, d.mismatch), (UTF_8, true));
        let d = decided(latin, "UTF-16BE");
        assert_eq!((d.encoding, d.mismatch), (WINDOWS_1252, true));
        // UTF-16 recognised by its first character under an 8-bit charset.
        let d = decided(b"<\0p\0", "utf-8");
        assert_eq!(
            (d.encoding, d.source, d.mismatch),
            (UTF_16LE, Sniffed, true)
        );
        // A BOM that contradicts the charset wins, counted; one that
        // agrees with it is not a mismatch.
        let d = decided(b"\xFF\xFE<\0", "iso-8859-1");
        assert_eq!((d.encoding, d.bom_len, d.mismatch), (UTF_16LE, 2, true));
        assert!(!decided(b"\xFE\xFF\0<", "utf-16").mismatch);
        assert!(!decided(b"\xEF\xBB\xBF<a/>", "UTF-8").mismatch);
        assert!(decided(b"\xEF\xBB\xBF<a/>", "windows-1252").mismatch);
    }

    #[test]
    fn an_ascii_compatible_charset_over_another_declaration_leaves_the_choice_to_the_bytes() {
        use EncodingSource::*;
        let latin = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><planList/>";
        let d = decided(latin, "utf-8");
        assert_eq!((d.encoding, d.source), (UTF_8, ContentType));
        assert_eq!(d.alternative, Some((WINDOWS_1252, Declaration)));
        assert!(!d.mismatch);
        let d = decided(
            b"<?xml version='1.0' encoding='utf-8'?><a/>",
            "windows-1252",
        );
        assert_eq!(d.alternative, Some((UTF_8, Declaration)));
        // Without a declaration, UTF-8 is only a default: the charset is
        // read as it is.
        assert_eq!(decided(b"<planList/>", "windows-1252").alternative, None);
        // The same encoding under two labels: nothing to choose.
        assert_eq!(decided(latin, "latin1").alternative, None);
        assert_eq!(decided(b"<planList/>", "utf8").alternative, None);
    }
}
