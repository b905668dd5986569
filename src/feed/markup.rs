//! Attributes, names and references of one tag, and the wording of
//! well-formedness errors.

use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::Hash;

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
    let mut seen = SeenNames::new();
    let mut attributes = e.attributes();
    attributes.with_checks(false);
    for attr in attributes {
        let attr = attr.map_err(|err| attribute_error(&err, at, element))?;
        let key = attr.key.into_inner();
        if !seen.insert(key) {
            let offset = (key.as_ptr() as usize).wrapping_sub(tag.as_ptr() as usize);
            let prev = 0;
            return Err(attribute_error(
                &AttrError::Duplicated(offset.min(tag.len()), prev),
                at,
                element,
            ));
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

/// The attribute names of one tag seen so far: the first
/// [`INLINE_NAMES`] in an array (ordinary tags allocate nothing), any
/// further ones in a hash set, so that checking a tag for duplicates costs
/// time linear in its attributes (a 1 MiB tag holds 120k of them).
struct SeenNames<K> {
    first: [K; INLINE_NAMES],
    len: usize,
    rest: Option<HashSet<K>>,
}

const INLINE_NAMES: usize = 16;

impl<K: Copy + Default + Eq + Hash> SeenNames<K> {
    fn new() -> Self {
        SeenNames {
            first: [K::default(); INLINE_NAMES],
            len: 0,
            rest: None,
        }
    }

    /// Adds `name`; false when it was already there.
    fn insert(&mut self, name: K) -> bool {
        if self.first[..self.len].contains(&name) {
            return false;
        }
        if self.len < INLINE_NAMES {
            self.first[self.len] = name;
            self.len += 1;
            return true;
        }
        self.rest.get_or_insert_with(HashSet::new).insert(name)
    }
}

/// The name of the attribute whose quoted value holds `tag[offset]`
/// (`tag`: a start tag's text between `<` and `>`), or `None` when that
/// byte is markup (a name, `=`, white space between attributes).
pub(super) fn attribute_at(tag: &[u8], offset: usize) -> Option<&str> {
    let mut quote = None;
    let mut value_from = 0;
    for (i, &b) in tag.iter().enumerate().take(offset) {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => {
                quote = Some(b);
                value_from = i;
            }
            None => {}
        }
    }
    quote?;
    // The name before `=` before the opening quote.
    let before = tag[..value_from].trim_ascii_end().strip_suffix(b"=")?;
    let before = before.trim_ascii_end();
    let start = before
        .iter()
        .rposition(|&b| is_xml_space(b))
        .map_or(0, |i| i + 1);
    std::str::from_utf8(&before[start..]).ok()
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        static COMPARISONS: Cell<u64> = const { Cell::new(0) };
    }

    /// A name that counts how often it is compared.
    #[derive(Clone, Copy, Debug, Default, Eq)]
    struct Counted(u32);

    impl Hash for Counted {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.0.hash(state);
        }
    }

    impl PartialEq for Counted {
        fn eq(&self, other: &Self) -> bool {
            COMPARISONS.with(|c| c.set(c.get() + 1));
            self.0 == other.0
        }
    }

    #[test]
    fn the_duplicate_check_is_linear_in_the_attributes() {
        let n = 20_000;
        let mut seen = SeenNames::new();
        COMPARISONS.with(|c| c.set(0));
        for i in 0..n {
            assert!(seen.insert(Counted(i)));
        }
        assert!(!seen.insert(Counted(3)));
        assert!(!seen.insert(Counted(n - 1)));
        let comparisons = COMPARISONS.with(Cell::get);
        // At most the inline names for each insert, plus hash collisions:
        // a quadratic check would compare n^2/2 = 2e8 times.
        assert!(
            comparisons < u64::from(n) * (INLINE_NAMES as u64 + 2),
            "{comparisons} comparisons for {n} names"
        );
    }
}
