//! Attributes, names and references of one tag, and the wording of
//! well-formedness errors.

use std::borrow::Cow;

use quick_xml::events::attributes::AttrError;
use quick_xml::events::BytesStart;

use super::{ParseError, MAX_QUOTED_CHARS};

// Attributes, names, references
// ---------------------------------------------------------------------------

/// Checks every attribute of a start tag for well-formedness and hands the
/// raw value of each to `f` (references are expanded, for the values that
/// are read, by `entities.rs`).
pub(super) fn for_each_attribute<'a>(
    e: &'a BytesStart<'_>,
    at: u64,
    mut f: impl FnMut(&str, Cow<'a, str>),
) -> Result<(), ParseError> {
    let element = e.name().into_inner();
    let tag: &str = e;
    // Duplicate attributes are checked here rather than by quick-xml, whose
    // check allocates a list of keys for every element (a zone has five
    // attributes: three allocator calls per zone). Same verdict and
    // position; only a duplicate that is also malformed (`a="1" a=2`) is
    // reported as malformed rather than as a duplicate.
    let mut seen: [&str; 16] = [""; 16];
    let mut seen_len = 0;
    let mut more_seen: Vec<&str> = Vec::new();
    let mut attributes = e.attributes();
    attributes.with_checks(false);
    for attr in attributes {
        let attr = attr.map_err(|err| attribute_error(&err, at, element))?;
        let key = attr.key.into_inner();
        if seen[..seen_len].contains(&key) || more_seen.contains(&key) {
            let offset = (key.as_ptr() as usize).wrapping_sub(tag.as_ptr() as usize);
            let prev = 0;
            return Err(attribute_error(
                &AttrError::Duplicated(offset.min(tag.len()), prev),
                at,
                element,
            ));
        }
        if seen_len < seen.len() {
            seen[seen_len] = key;
            seen_len += 1;
        } else {
            more_seen.push(key);
        }
        if !is_xml_name(key) {
            return Err(xml_at(
                at,
                format!(
                    "`{}` is not a valid attribute name (in <{}>)",
                    quoted(key),
                    quoted(element)
                ),
            ));
        }
        // One pass over the raw value decides whether it needs a closer
        // look: most values have neither `<` nor NUL.
        if !attr.value.bytes().any(needs_attention) {
            f(key, attr.value.clone());
            continue;
        }
        if attr.value.contains('\0') {
            return Err(xml_at(
                at,
                format!(
                    "attribute {} of <{}> contains the character U+0000, which XML does not allow",
                    quoted(key),
                    quoted(element)
                ),
            ));
        }
        if attr.value.contains('<') {
            return Err(xml_at(
                at,
                format!(
                    "attribute {} of <{}> contains a raw `<`",
                    quoted(key),
                    quoted(element)
                ),
            ));
        }
        f(key, attr.value.clone());
    }
    Ok(())
}

/// A raw attribute value byte that no well-formed value holds.
fn needs_attention(b: u8) -> bool {
    matches!(b, b'<' | 0)
}

pub(super) fn check_attributes(e: &BytesStart<'_>, at: u64) -> Result<(), ParseError> {
    for_each_attribute(e, at, |_, _| {})
}

/// XML `Name`: ASCII checked exactly, any non-ASCII character accepted.
///
/// Checked byte by byte: every byte of a non-ASCII character is >= 0x80 and
/// accepted anywhere, so this is the same as checking characters.
pub(super) fn is_xml_name(name: &str) -> bool {
    fn start(b: u8) -> bool {
        b.is_ascii_alphabetic() || b == b'_' || b == b':' || !b.is_ascii()
    }
    match name.as_bytes().split_first() {
        Some((&first, rest)) => {
            start(first)
                && rest
                    .iter()
                    .all(|&b| start(b) || b.is_ascii_digit() || b == b'-' || b == b'.')
        }
        None => false,
    }
}

pub(super) fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

pub(super) fn is_blank(value: Option<&str>) -> bool {
    value.is_none_or(|v| v.trim().is_empty())
}

// ---------------------------------------------------------------------------
// Error messages
// ---------------------------------------------------------------------------

pub(super) fn xml_at(position: u64, message: impl Into<String>) -> ParseError {
    ParseError::Xml {
        position,
        message: message.into(),
    }
}

/// Feed text for a message: at most [`MAX_QUOTED_CHARS`] characters.
pub(super) fn quoted(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
        None => Cow::Borrowed(text),
    }
}

pub(super) fn shown_id(id: &str) -> Cow<'_, str> {
    if id.is_empty() {
        Cow::Borrowed("(none)")
    } else {
        quoted(id)
    }
}

fn attribute_error(err: &AttrError, at: u64, element: &str) -> ParseError {
    let (offset, what) = match err {
        AttrError::ExpectedEq(p) => (p, "an attribute name must be followed by `=`"),
        AttrError::ExpectedValue(p) => (p, "`=` must be followed by a quoted value"),
        AttrError::UnquotedValue(p) => (p, "an attribute value must be in quotes"),
        AttrError::ExpectedQuote(p, _) => (p, "an attribute value is missing its closing quote"),
        AttrError::Duplicated(p, _) => (p, "the same attribute appears twice"),
    };
    // Offsets count from the byte after `<`.
    xml_at(
        at + 1 + *offset as u64,
        format!("in <{}>: {what}", quoted(element)),
    )
}
