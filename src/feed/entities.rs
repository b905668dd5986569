//! References in the attribute values planbox reads, and what the
//! document's internal DTD subset declares for them: general entities and
//! attribute defaults.
//!
//! A value is expanded the way XML 1.0 §3.3.3 normalizes an attribute
//! value (white space characters become spaces; references are replaced),
//! with two repairs feed readers make: an HTML named reference that XML
//! does not define (`&nbsp;`, `&eacute;`; the WHATWG table from the
//! `htmlize` crate) is resolved, and a `&` that starts no complete
//! reference is kept as a literal `&`. Both are counted. Anything else that
//! cannot be resolved is an [`Unresolved`]: the caller skips the item that
//! holds the value.
//!
//! Characters XML forbids (C0 controls other than tab, line feed and
//! carriage return; U+FFFE, U+FFFF) written raw in a value are dropped and
//! counted (`control_character`): they are never meant as text, and would
//! otherwise reach terminals through `search` and `status`.
//!
//! Safety: external and unparsed entities (`SYSTEM`, `PUBLIC`, `NDATA`) are
//! recorded as such and never read; every internal entity's expanded size
//! and the number of entity references its expansion follows are computed
//! once, when the DTD is read (memoised, so a billion-laughs DTD costs one
//! pass over its declarations), and one over [`MAX_VALUE_BYTES`] or
//! [`MAX_VALUE_REFERENCES`], nested deeper than [`MAX_DEPTH`] or recursive
//! is unusable; a value is charged per byte produced and per entity
//! reference expanded (so entities that expand to nothing cost their
//! references), and all expansions of one document together are bounded by
//! [`MAX_DOCUMENT_EXPANSION`] bytes and [`MAX_DOCUMENT_REFERENCES`]
//! references. This module must not do I/O.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use crate::model::RepairReason;

/// Deepest nesting of entity references inside entity values.
pub(super) const MAX_DEPTH: usize = 16;
/// Longest value an expansion may produce.
pub(super) const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Bound on the text all entity expansions of one document produce.
pub(super) const MAX_DOCUMENT_EXPANSION: u64 = 256 << 20;
/// Most references to DTD entities one value may expand, nested ones
/// included (an entity that expands to nothing still costs its lookup).
pub(super) const MAX_VALUE_REFERENCES: u64 = 64 * 1024;
/// Bound on the references to DTD entities all values of one document
/// expand, nested ones included.
pub(super) const MAX_DOCUMENT_REFERENCES: u64 = 16 << 20;
/// Most general entities one DTD may declare; later ones are ignored.
const MAX_ENTITIES: usize = 10_000;
/// Longest entity name looked at.
const MAX_NAME_BYTES: usize = 256;

/// Why a value cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Unresolved {
    Undeclared(String),
    External(String),
    Unparsed(String),
    Recursive(String),
    TooLarge(String),
    /// Markup (`<`) in the replacement text of an entity used in a value.
    Markup(String),
    /// A character reference to a character XML does not allow.
    InvalidChar(String),
    /// The entity's value uses a parameter entity, which is not expanded.
    ParameterEntity(String),
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unresolved::Undeclared(n) => write!(f, "the entity `&{n};` is not declared"),
            Unresolved::External(n) => write!(
                f,
                "`&{n};` is an external entity, which planbox never reads"
            ),
            Unresolved::Unparsed(n) => write!(f, "`&{n};` is an unparsed (NDATA) entity"),
            Unresolved::Recursive(n) => write!(f, "the entity `&{n};` refers to itself"),
            Unresolved::TooLarge(n) if n.is_empty() => write!(
                f,
                "the value expands to more than {MAX_VALUE_BYTES} bytes"
            ),
            Unresolved::TooLarge(n) => write!(
                f,
                "expanding `&{n};` goes over the bounds ({MAX_VALUE_BYTES} bytes and {MAX_VALUE_REFERENCES} entity references a value, {MAX_DEPTH} levels, {MAX_DOCUMENT_EXPANSION} bytes and {MAX_DOCUMENT_REFERENCES} references a document)"
            ),
            Unresolved::Markup(n) => write!(
                f,
                "the entity `&{n};` contains markup, which a value cannot hold"
            ),
            Unresolved::InvalidChar(r) => {
                write!(f, "`&{r};` refers to a character XML does not allow")
            }
            Unresolved::ParameterEntity(n) => write!(
                f,
                "the entity `&{n};` is defined with a parameter entity, which planbox does not expand"
            ),
        }
    }
}

/// Repairs made, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Repairs {
    pub html_entity: u64,
    pub bare_ampersand: u64,
    pub control_character: u64,
}

impl Repairs {
    pub(super) fn by_reason(&self) -> impl Iterator<Item = (RepairReason, u64)> {
        [
            (RepairReason::HtmlEntity, self.html_entity),
            (RepairReason::BareAmpersand, self.bare_ampersand),
            (RepairReason::ControlCharacter, self.control_character),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
    }
}

enum Def {
    /// Replacement text (character references already replaced) and what
    /// expanding it costs, or why it cannot be expanded.
    Internal {
        text: String,
        cost: Result<Cost, Unresolved>,
    },
    External,
    Unparsed,
    ParameterEntity,
}

/// What expanding one entity costs, computed once per DTD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cost {
    /// Expanded size in bytes (an upper bound: white space counts as
    /// written).
    size: usize,
    /// Nesting height (1: no entity inside).
    height: usize,
    /// References to DTD entities its expansion follows, all levels.
    references: u64,
}

/// What expansions charged: the document's totals, or one value's.
#[derive(Clone, Copy, Debug, Default)]
struct Spent {
    bytes: u64,
    references: u64,
}

/// The general entities of one document, the attribute defaults its DTD
/// declares, and what expanding entities cost so far.
#[derive(Default)]
pub(super) struct Entities {
    defs: HashMap<String, Def>,
    /// (element, attribute) -> raw default value (`<!ATTLIST>`).
    defaults: HashMap<(String, String), String>,
    spent: Spent,
}

impl Entities {
    /// Reads the general entity declarations of a DOCTYPE (the text between
    /// `<!DOCTYPE` and its closing `>`, as the XML reader checked it).
    pub(super) fn from_doctype(doctype: &str) -> Entities {
        let mut entities = Entities::default();
        if let Some(subset) = internal_subset(doctype) {
            entities.read_subset(subset);
        }
        entities.compute_sizes();
        entities
    }

    /// Expands the raw text of an attribute value.
    pub(super) fn expand<'a>(
        &mut self,
        raw: &'a str,
        repairs: &mut Repairs,
    ) -> Result<Cow<'a, str>, Unresolved> {
        // References, white space to normalize (all below 0x20) and
        // characters XML forbids (C0 controls; U+FFFE and U+FFFF start with
        // 0xEF) need work; most values have none of them.
        if !raw.bytes().any(|b| b < 0x20 || b == b'&' || b == 0xEF) {
            return Ok(Cow::Borrowed(raw));
        }
        let mut out = String::with_capacity(raw.len());
        let mut value = Spent::default();
        let result = self.expand_into(raw, &mut out, repairs, &mut value, 0);
        // Charged whether or not the value could be read: a value that
        // fails late did the work all the same.
        self.spent.bytes += value.bytes;
        self.spent.references += value.references;
        result?;
        Ok(Cow::Owned(out))
    }

    fn expand_into(
        &self,
        text: &str,
        out: &mut String,
        repairs: &mut Repairs,
        value: &mut Spent,
        depth: usize,
    ) -> Result<(), Unresolved> {
        let bytes = text.as_bytes();
        let (mut i, mut literal) = (0, 0);
        while i < bytes.len() {
            match bytes[i] {
                b'&' => {
                    out.push_str(&text[literal..i]);
                    let (reference, len) = parse_reference(&text[i..]);
                    match reference {
                        Reference::Char(Some(c)) => out.push(c),
                        Reference::Char(None) => {
                            return Err(Unresolved::InvalidChar(text[i + 1..i + len - 1].into()))
                        }
                        Reference::Named(name) => {
                            self.named(name, out, repairs, value, depth)?;
                        }
                        Reference::None => {
                            out.push('&');
                            repairs.bare_ampersand += 1;
                        }
                    }
                    i += len;
                    literal = i;
                }
                b'\t' | b'\n' | b'\r' => {
                    out.push_str(&text[literal..i]);
                    out.push(' ');
                    // A CR LF line end is one line end.
                    i += if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                        2
                    } else {
                        1
                    };
                    literal = i;
                }
                b if b < 0x20 => {
                    out.push_str(&text[literal..i]);
                    repairs.control_character += 1;
                    i += 1;
                    literal = i;
                }
                // U+FFFE and U+FFFF: EF BF BE, EF BF BF.
                0xEF if matches!(bytes.get(i + 1..i + 3), Some([0xBF, 0xBE | 0xBF])) => {
                    out.push_str(&text[literal..i]);
                    repairs.control_character += 1;
                    i += 3;
                    literal = i;
                }
                _ => i += 1,
            }
        }
        out.push_str(&text[literal..]);
        if out.len() > MAX_VALUE_BYTES {
            return Err(Unresolved::TooLarge(String::new()));
        }
        Ok(())
    }

    fn named(
        &self,
        name: &str,
        out: &mut String,
        repairs: &mut Repairs,
        value: &mut Spent,
        depth: usize,
    ) -> Result<(), Unresolved> {
        if let Some(c) = predefined(name) {
            out.push(c);
            return Ok(());
        }
        match self.defs.get(name) {
            Some(Def::Internal { text, cost }) => {
                let cost = cost.clone()?;
                // A reference written in the value pays for its whole
                // expansion, nested references included, before any of
                // it is done; the nested ones are then paid for.
                if depth == 0 {
                    value.bytes += cost.size as u64;
                    value.references += 1 + cost.references;
                }
                if depth >= MAX_DEPTH
                    || out.len() + cost.size > MAX_VALUE_BYTES
                    || value.references > MAX_VALUE_REFERENCES
                    || self.spent.bytes + value.bytes > MAX_DOCUMENT_EXPANSION
                    || self.spent.references + value.references > MAX_DOCUMENT_REFERENCES
                {
                    return Err(Unresolved::TooLarge(name.into()));
                }
                self.expand_into(text, out, repairs, value, depth + 1)
            }
            Some(Def::External) => Err(Unresolved::External(name.into())),
            Some(Def::Unparsed) => Err(Unresolved::Unparsed(name.into())),
            Some(Def::ParameterEntity) => Err(Unresolved::ParameterEntity(name.into())),
            None => match html_entity(name) {
                Some(value) => {
                    out.push_str(value);
                    repairs.html_entity += 1;
                    Ok(())
                }
                None => Err(Unresolved::Undeclared(name.into())),
            },
        }
    }

    fn read_subset(&mut self, subset: &str) {
        let mut rest = subset;
        loop {
            rest = rest.trim_start_matches(is_space);
            if rest.is_empty() {
                return;
            }
            if let Some(after) = rest.strip_prefix("<!--") {
                rest = after.find("-->").map_or("", |at| &after[at + 3..]);
            } else if let Some(after) = rest.strip_prefix("<?") {
                rest = after.find("?>").map_or("", |at| &after[at + 2..]);
            } else if let Some(after) = rest.strip_prefix("<!ENTITY") {
                let end = declaration_end(after);
                self.read_entity(&after[..end]);
                rest = after.get(end + 1..).unwrap_or("");
            } else if let Some(after) = rest.strip_prefix("<!ATTLIST") {
                let end = declaration_end(after);
                self.read_attlist(&after[..end]);
                rest = after.get(end + 1..).unwrap_or("");
            } else if let Some(after) = rest.strip_prefix("<!") {
                let end = declaration_end(after);
                rest = after.get(end + 1..).unwrap_or("");
            } else if rest.starts_with('%') {
                // XML 1.0 §5.1: after a parameter-entity reference it does
                // not read, a processor must not process later declarations.
                return;
            } else {
                let skip = rest.chars().next().map_or(1, char::len_utf8);
                rest = &rest[skip..];
            }
        }
    }

    /// The default value the DTD declares for `attribute` of `element`
    /// (raw: references are expanded like a written value's).
    pub(super) fn attribute_default(&self, element: &str, attribute: &str) -> Option<&str> {
        if self.defaults.is_empty() {
            return None;
        }
        self.defaults
            .get(&(element.to_owned(), attribute.to_owned()))
            .map(String::as_str)
    }

    /// One `<!ATTLIST …>` declaration, without `<!ATTLIST` and `>`: the
    /// defaults of its attributes (`"v"` or `#FIXED "v"`; `#REQUIRED` and
    /// `#IMPLIED` have none). The first declaration of an attribute wins.
    fn read_attlist(&mut self, decl: &str) {
        let mut words = Words(decl);
        let Some(element) = words.next() else {
            return;
        };
        while let Some(attribute) = words.next() {
            // The type: a name, an enumeration `(a|b)`, or NOTATION (…).
            let Some(kind) = words.next() else {
                return;
            };
            if kind == "NOTATION" {
                words.next();
            }
            let default = match words.next() {
                Some("#FIXED") => words.next(),
                other => other,
            };
            let Some(literal) = default.and_then(unquote) else {
                continue;
            };
            if self.defaults.len() < MAX_ENTITIES {
                self.defaults
                    .entry((element.to_owned(), attribute.to_owned()))
                    .or_insert_with(|| literal.to_owned());
            }
        }
    }

    /// One `<!ENTITY …>` declaration, without `<!ENTITY` and `>`.
    fn read_entity(&mut self, decl: &str) {
        let decl = decl.trim_start_matches(is_space);
        if decl.starts_with('%') {
            // A parameter entity: only ever used inside the DTD.
            return;
        }
        let name_len = decl.find(|c: char| is_space(c)).unwrap_or(decl.len());
        let (name, rest) = decl.split_at(name_len);
        let rest = rest.trim_start_matches(is_space);
        if name.is_empty() || self.defs.contains_key(name) || self.defs.len() >= MAX_ENTITIES {
            // First declaration wins (XML 1.0 §4.2).
            return;
        }
        let def = match rest.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let literal = rest[1..].split(quote).next().unwrap_or("");
                if literal.contains('%') {
                    Def::ParameterEntity
                } else {
                    Def::Internal {
                        text: replace_char_refs(literal),
                        cost: Ok(Cost::default()),
                    }
                }
            }
            _ if rest.contains("NDATA") => Def::Unparsed,
            _ => Def::External,
        };
        self.defs.insert(name.to_owned(), def);
    }

    /// Computes every internal entity's [`Cost`] once, children first,
    /// without recursion: each entity is visited once however often it is
    /// referred to, so the cost is one pass over the DTD. An entity that
    /// refers to itself, nests deeper than [`MAX_DEPTH`], expands past
    /// [`MAX_VALUE_BYTES`] or [`MAX_VALUE_REFERENCES`] or refers to one that
    /// cannot be expanded is unusable.
    fn compute_sizes(&mut self) {
        let mut names: Vec<&String> = self
            .defs
            .iter()
            .filter(|(_, d)| matches!(d, Def::Internal { .. }))
            .map(|(n, _)| n)
            .collect();
        names.sort();
        let scans: HashMap<&str, Scan> = names
            .iter()
            .filter_map(|n| match &self.defs[*n] {
                Def::Internal { text, .. } => Some((n.as_str(), scan(n, text))),
                _ => None,
            })
            .collect();
        let mut done: HashMap<&str, Result<Cost, Unresolved>> = HashMap::new();
        let mut open: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for root in &names {
            if done.contains_key(root.as_str()) {
                continue;
            }
            // (entity, next reference to look at, refers back to an open one)
            let mut stack: Vec<(&str, usize, bool)> = vec![(root.as_str(), 0, false)];
            open.insert(root.as_str());
            while let Some(frame) = stack.last_mut() {
                let (name, next) = (frame.0, frame.1);
                let scan = &scans[name];
                if next < scan.refs.len() && scan.error.is_none() {
                    frame.1 += 1;
                    let child = scan.refs[next].as_str();
                    if !scans.contains_key(child) || done.contains_key(child) {
                        continue;
                    }
                    if open.contains(child) {
                        frame.2 = true;
                        continue;
                    }
                    open.insert(child);
                    stack.push((child, 0, false));
                    continue;
                }
                let recursive = frame.2;
                stack.pop();
                open.remove(name);
                let result = if recursive {
                    Err(Unresolved::Recursive(name.to_owned()))
                } else {
                    self.combine(name, scan, &done)
                };
                done.insert(name, result);
            }
        }
        let done: HashMap<String, Result<Cost, Unresolved>> =
            done.into_iter().map(|(n, r)| (n.to_owned(), r)).collect();
        for (name, def) in self.defs.iter_mut() {
            if let Def::Internal { cost, .. } = def {
                *cost = done
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| Err(Unresolved::Undeclared(name.clone())));
            }
        }
    }

    /// The cost of `name` from its scan and its (finished) children.
    fn combine(
        &self,
        name: &str,
        scan: &Scan,
        done: &HashMap<&str, Result<Cost, Unresolved>>,
    ) -> Result<Cost, Unresolved> {
        if let Some(e) = &scan.error {
            return Err(e.clone());
        }
        let mut cost = Cost {
            size: scan.base,
            height: 1,
            references: 0,
        };
        for child in &scan.refs {
            let child_cost = match done.get(child.as_str()) {
                Some(result) => {
                    let c = result.clone()?;
                    cost.references = cost.references.saturating_add(1 + c.references);
                    c
                }
                None => match self.defs.get(child) {
                    Some(Def::External) => return Err(Unresolved::External(child.clone())),
                    Some(Def::Unparsed) => return Err(Unresolved::Unparsed(child.clone())),
                    Some(Def::ParameterEntity) => {
                        return Err(Unresolved::ParameterEntity(child.clone()))
                    }
                    // Still open: a cycle through an ancestor.
                    Some(Def::Internal { .. }) => return Err(Unresolved::Recursive(child.clone())),
                    None => match html_entity(child) {
                        Some(v) => Cost {
                            size: v.len(),
                            height: 0,
                            references: 0,
                        },
                        None => return Err(Unresolved::Undeclared(child.clone())),
                    },
                },
            };
            cost.size = cost.size.saturating_add(child_cost.size);
            cost.height = cost.height.max(child_cost.height + 1);
            if cost.size > MAX_VALUE_BYTES
                || cost.height > MAX_DEPTH
                || cost.references > MAX_VALUE_REFERENCES
            {
                return Err(Unresolved::TooLarge(name.to_owned()));
            }
        }
        Ok(cost)
    }
}

/// What an entity's replacement text holds: its own bytes (references
/// resolved without entities) and the entities it refers to, once per
/// reference.
struct Scan {
    base: usize,
    refs: Vec<String>,
    error: Option<Unresolved>,
}

fn scan(name: &str, text: &str) -> Scan {
    let mut result = Scan {
        base: 0,
        refs: Vec::new(),
        error: None,
    };
    if text.contains('<') {
        result.error = Some(Unresolved::Markup(name.into()));
        return result;
    }
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        result.base += at;
        let (reference, len) = parse_reference(&rest[at..]);
        match reference {
            Reference::Char(Some(c)) => result.base += c.len_utf8(),
            Reference::Char(None) => {
                result.error = Some(Unresolved::InvalidChar(rest[at + 1..at + len - 1].into()));
                return result;
            }
            Reference::Named(inner) => match predefined(inner) {
                Some(_) => result.base += 1,
                None => result.refs.push(inner.to_owned()),
            },
            Reference::None => result.base += 1,
        }
        rest = &rest[at + len..];
    }
    result.base += rest.len();
    result
}

/// The words of a markup declaration: names, `#KEYWORDS`, quoted literals
/// (with their quotes) and parenthesised groups, split on white space.
struct Words<'a>(&'a str);

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.0.trim_start_matches(is_space);
        let first = rest.chars().next()?;
        let end = match first {
            '"' | '\'' => rest[1..].find(first).map_or(rest.len(), |at| at + 2),
            '(' => rest.find(')').map_or(rest.len(), |at| at + 1),
            _ => rest
                .find(|c: char| is_space(c) || c == '(')
                .unwrap_or(rest.len()),
        };
        self.0 = &rest[end..];
        Some(&rest[..end])
    }
}

/// The text of a quoted literal.
fn unquote(word: &str) -> Option<&str> {
    let quote = word.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    word.strip_prefix(quote)?.strip_suffix(quote)
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// The internal subset of a DOCTYPE: between the first `[` outside quotes
/// and the last `]`.
fn internal_subset(doctype: &str) -> Option<&str> {
    let mut quote = None;
    for (i, c) in doctype.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[') => {
                let inner = &doctype[i + 1..];
                return Some(&inner[..inner.rfind(']').unwrap_or(inner.len())]);
            }
            (None, _) => {}
        }
    }
    None
}

/// Offset of the `>` that ends a markup declaration (quotes respected).
fn declaration_end(text: &str) -> usize {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return i,
            (None, _) => {}
        }
    }
    text.len()
}

/// An entity value literal with its character references replaced (XML 1.0
/// §4.5); general entity references are kept for expansion at use.
fn replace_char_refs(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    let mut rest = literal;
    while let Some(at) = rest.find("&#") {
        out.push_str(&rest[..at]);
        match parse_reference(&rest[at..]) {
            (Reference::Char(Some(c)), len) => {
                out.push(c);
                rest = &rest[at + len..];
            }
            _ => {
                out.push('&');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

enum Reference<'a> {
    /// A character reference: the character, or `None` when XML does not
    /// allow it.
    Char(Option<char>),
    Named(&'a str),
    /// A `&` that starts no complete reference.
    None,
}

/// The reference `text` starts with (`text` starts with `&`) and its length
/// in bytes.
fn parse_reference(text: &str) -> (Reference<'_>, usize) {
    let bytes = text.as_bytes();
    if bytes.get(1) == Some(&b'#') {
        let (digits_at, radix) = match bytes.get(2) {
            Some(b'x') => (3, 16),
            _ => (2, 10),
        };
        let digits = bytes[digits_at..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        let end = digits_at + digits;
        let valid_digits = text[digits_at..end]
            .bytes()
            .all(|b| radix == 16 || b.is_ascii_digit());
        if digits == 0 || !valid_digits || bytes.get(end) != Some(&b';') {
            return (Reference::None, 1);
        }
        let c = u32::from_str_radix(&text[digits_at..end], radix)
            .ok()
            .and_then(char::from_u32)
            .filter(|c| is_xml_char(*c));
        return (Reference::Char(c), end + 1);
    }
    let name_len = text[1..]
        .char_indices()
        .take_while(|(i, c)| {
            *i < MAX_NAME_BYTES
                && (c.is_alphanumeric() || matches!(c, '_' | ':' | '-' | '.') || !c.is_ascii())
        })
        .map(|(i, c)| i + c.len_utf8())
        .last()
        .unwrap_or(0);
    let name = &text[1..1 + name_len];
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == ':' || !c.is_ascii());
    if starts_well && bytes.get(1 + name_len) == Some(&b';') {
        (Reference::Named(name), name_len + 2)
    } else {
        (Reference::None, 1)
    }
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn predefined(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => None,
    }
}

/// The WHATWG HTML named reference `&name;`, if there is one.
fn html_entity(name: &str) -> Option<&'static str> {
    let mut key = [0u8; htmlize::ENTITY_MAX_LENGTH];
    let len = name.len() + 2;
    if len > key.len() {
        return None;
    }
    key[0] = b'&';
    key[1..len - 1].copy_from_slice(name.as_bytes());
    key[len - 1] = b';';
    let value = htmlize::ENTITIES.get(&key[..len])?;
    std::str::from_utf8(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(entities: &mut Entities, raw: &str) -> (Result<String, Unresolved>, Repairs) {
        let mut repairs = Repairs::default();
        let result = entities
            .expand(raw, &mut repairs)
            .map(std::borrow::Cow::into_owned);
        (result, repairs)
    }

    #[test]
    fn xml_references_html_names_and_lone_ampersands() {
        let mut none = Entities::default();
        let (v, r) = expand(&mut none, "&#211;pera &amp; Caf&#xe9;\t&lt;3&gt;");
        assert_eq!(v.unwrap(), "Ópera & Café <3>");
        assert_eq!(r, Repairs::default());
        let (v, r) = expand(&mut none, "Ni&ntilde;o&nbsp;&euro;5 &eacute;");
        assert_eq!(v.unwrap(), "Niño\u{a0}€5 é");
        assert_eq!(r.html_entity, 4);
        let (v, r) = expand(&mut none, "Tom & Jerry &&; AT&T &#; &#xZZ; &eacute");
        assert_eq!(v.unwrap(), "Tom & Jerry &&; AT&T &#; &#xZZ; &eacute");
        assert_eq!(r.bare_ampersand, 7);
        assert_eq!(
            expand(&mut none, "x &bogus; y").0,
            Err(Unresolved::Undeclared("bogus".into()))
        );
        assert!(matches!(
            expand(&mut none, "&#0;").0,
            Err(Unresolved::InvalidChar(_))
        ));
        assert!(matches!(
            expand(&mut none, "&#xD800;").0,
            Err(Unresolved::InvalidChar(_))
        ));
        // White space normalization; a character reference is not normalized.
        assert_eq!(expand(&mut none, "a\r\nb\nc&#10;d").0.unwrap(), "a b c\nd");
    }

    #[test]
    fn internal_subset_entities_expand_recursively_first_declaration_wins() {
        let mut e = Entities::from_doctype(
            r#"planList [
              <!-- a comment with <!ENTITY fake "no"> inside -->
              <!ELEMENT planList ANY>
              <!ATTLIST base_plan title CDATA #IMPLIED>
              <!ENTITY nbsp "&#160;">
              <!ENTITY org 'Teatro &quot;Real&quot;&nbsp;&more;'>
              <!ENTITY more "&#x26;amp; more">
              <!ENTITY org "second">
              <?pi x?>
            ]"#,
        );
        assert_eq!(
            expand(&mut e, "&org;!").0.unwrap(),
            "Teatro \"Real\"\u{a0}& more!"
        );
        assert!(matches!(
            expand(&mut e, "&fake;").0,
            Err(Unresolved::Undeclared(_))
        ));
    }

    #[test]
    fn external_unparsed_recursive_and_markup_entities_are_unresolved() {
        let mut e = Entities::from_doctype(
            r#"planList SYSTEM "http://example.invalid/x.dtd" [
              <!ENTITY ext SYSTEM "file:///etc/passwd">
              <!ENTITY pub PUBLIC "-//X//EN" "http://example.invalid/e">
              <!ENTITY pic SYSTEM "a.gif" NDATA gif>
              <!ENTITY a "&b;"> <!ENTITY b "&a;">
              <!ENTITY tag "<b>bold</b>">
              <!ENTITY % pe "x">
              <!ENTITY usespe "%pe;">
            ]"#,
        );
        for (raw, want) in [
            ("&ext;", Unresolved::External("ext".into())),
            ("&pub;", Unresolved::External("pub".into())),
            ("&pic;", Unresolved::Unparsed("pic".into())),
            ("&tag;", Unresolved::Markup("tag".into())),
            ("&usespe;", Unresolved::ParameterEntity("usespe".into())),
        ] {
            assert_eq!(expand(&mut e, raw).0, Err(want), "{raw}");
        }
        assert!(matches!(
            expand(&mut e, "&a;").0,
            Err(Unresolved::Recursive(_))
        ));
    }

    #[test]
    fn attribute_defaults_are_read_from_attlist_declarations() {
        let mut e = Entities::from_doctype(
            r#"planList [
              <!ATTLIST base_plan
                  sell_mode (online|offline) "online"
                  title CDATA #IMPLIED
                  base_plan_id ID #REQUIRED
                  organizer_company_id CDATA #FIXED 'ACME &#38; co'>
              <!ATTLIST base_plan sell_mode CDATA "offline" kind NOTATION (a|b) "a">
              <!ATTLIST zone price CDATA "0">
            ]"#,
        );
        assert_eq!(
            e.attribute_default("base_plan", "sell_mode"),
            Some("online")
        );
        assert_eq!(e.attribute_default("base_plan", "title"), None);
        assert_eq!(e.attribute_default("base_plan", "base_plan_id"), None);
        let raw = e
            .attribute_default("base_plan", "organizer_company_id")
            .unwrap()
            .to_owned();
        assert_eq!(raw, "ACME &#38; co");
        let (value, repairs) = expand(&mut e, &raw);
        assert_eq!(value.unwrap(), "ACME & co");
        assert_eq!(repairs, Repairs::default());
        assert_eq!(e.attribute_default("base_plan", "kind"), Some("a"));
        assert_eq!(e.attribute_default("zone", "price"), Some("0"));
        assert_eq!(e.attribute_default("plan", "price"), None);
    }

    #[test]
    fn declarations_after_a_parameter_entity_reference_are_not_read() {
        let mut e = Entities::from_doctype(
            r#"x [ <!ENTITY a "A"> <!ENTITY % ext SYSTEM "e.dtd"> %ext; <!ENTITY b "B"> ]"#,
        );
        assert_eq!(expand(&mut e, "&a;").0.unwrap(), "A");
        assert!(expand(&mut e, "&b;").0.is_err());
    }

    #[test]
    fn a_billion_laughs_costs_nothing() {
        let mut dtd = String::from("lolz [ <!ENTITY lol0 \"lol\">");
        for i in 1..=30 {
            let refs = format!("&lol{};", i - 1).repeat(10);
            dtd += &format!("<!ENTITY lol{i} \"{refs}\">");
        }
        // And a wide, empty one: 10^30 references to nothing.
        dtd += "<!ENTITY e0 \"\">";
        for i in 1..=30 {
            dtd += &format!("<!ENTITY e{i} \"{}\">", format!("&e{};", i - 1).repeat(10));
        }
        dtd += "]";
        let mut e = Entities::from_doctype(&dtd);
        for _ in 0..1000 {
            assert!(matches!(
                expand(&mut e, "&lol30;").0,
                Err(Unresolved::TooLarge(_))
            ));
        }
        // Deeper than MAX_DEPTH levels of nesting is refused even when empty.
        assert!(matches!(
            expand(&mut e, "&e30;").0,
            Err(Unresolved::TooLarge(_))
        ));
        assert_eq!(expand(&mut e, "&lol1;").0.unwrap(), "lol".repeat(10));
    }

    /// `e0` is empty, each `e{i}` refers to `e{i-1}` `fan` times.
    fn empty_tower(levels: usize, fan: usize) -> Entities {
        let mut dtd = String::from("d [ <!ENTITY e0 \"\">");
        for i in 1..=levels {
            let refs = format!("&e{};", i - 1).repeat(fan);
            dtd += &format!("<!ENTITY e{i} \"{refs}\">");
        }
        Entities::from_doctype(&(dtd + "]"))
    }

    #[test]
    fn entities_that_expand_to_nothing_are_charged_per_reference() {
        // 10 levels of 10 references each: 10^10 lookups producing no
        // byte. Refused when the DTD is read, not after the lookups.
        let mut e = empty_tower(10, 10);
        assert!(matches!(
            expand(&mut e, "&e10;").0,
            Err(Unresolved::TooLarge(_))
        ));
        // Just over the bound a value may follow: 11^5 references.
        let mut e = empty_tower(5, 11);
        assert!(matches!(
            expand(&mut e, "&e5;").0,
            Err(Unresolved::TooLarge(_))
        ));
        // Small towers still expand (to nothing).
        assert_eq!(expand(&mut e, "a&e3;b").0.unwrap(), "ab");
    }

    #[test]
    fn many_references_to_a_tiny_entity_are_bounded_per_value_and_document() {
        let mut e = Entities::from_doctype("d [ <!ENTITY t \"\"> <!ENTITY x \"x\"> ]");
        let per_value = MAX_VALUE_REFERENCES as usize;
        assert_eq!(expand(&mut e, &"&t;".repeat(per_value)).0.unwrap(), "");
        assert!(matches!(
            expand(&mut e, &"&t;".repeat(per_value + 1)).0,
            Err(Unresolved::TooLarge(_))
        ));
        // A value that fails is charged all the same.
        assert_eq!(e.spent.references, 2 * MAX_VALUE_REFERENCES + 1);
        // The document's budget refuses values once it is spent.
        e.spent.references = MAX_DOCUMENT_REFERENCES - 10;
        assert!(expand(&mut e, &"&t;".repeat(9)).0.is_ok());
        assert!(expand(&mut e, "&x;").0.is_ok());
        assert!(matches!(
            expand(&mut e, "&x;").0,
            Err(Unresolved::TooLarge(_))
        ));
        // References without entities cost nothing.
        assert_eq!(expand(&mut e, "&amp;&#65;").0.unwrap(), "&A");
    }

    #[test]
    fn characters_xml_forbids_are_dropped_and_counted() {
        let mut none = Entities::default();
        let (v, r) = expand(&mut none, "Ca\u{b}fé\u{1b}[31m \u{fffe}x\u{ffff}\u{7}");
        assert_eq!(v.unwrap(), "Café[31m x");
        assert_eq!(r.control_character, 5);
        // Tab, line feed and carriage return are white space, and
        // characters XML allows stay, U+FFFD and U+FFFC included.
        let (v, r) = expand(&mut none, "a\tb\u{fffd}\u{fffc}\u{ef}");
        assert_eq!(v.unwrap(), "a b\u{fffd}\u{fffc}\u{ef}");
        assert_eq!(r, Repairs::default());
        // In an entity's replacement text too.
        let mut e = Entities::from_doctype("d [ <!ENTITY v \"x\u{b}y\"> ]");
        let (v, r) = expand(&mut e, "&v;");
        assert_eq!(v.unwrap(), "xy");
        assert_eq!(r.control_character, 1);
    }

    #[test]
    fn a_document_cannot_expand_more_than_its_budget() {
        let big = "x".repeat(MAX_VALUE_BYTES - 10);
        let mut e = Entities::from_doctype(&format!("d [ <!ENTITY big \"{big}\"> ]"));
        let rounds = MAX_DOCUMENT_EXPANSION / big.len() as u64;
        for _ in 0..rounds {
            assert!(expand(&mut e, "&big;").0.is_ok());
        }
        assert!(matches!(
            expand(&mut e, "&big;").0,
            Err(Unresolved::TooLarge(_))
        ));
    }
}
