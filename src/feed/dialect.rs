//! The dialect state machine: which elements of the document are the
//! root, groups, items and zones, and how an item's attributes become a
//! [`FeedPlan`] or a [`Skip`].
//!
//! Two halves: the state machine reads tags and hands out each item as a
//! [`RawItem`] (its start tag and its zones' tags, copied out of the event
//! buffer); understanding an item (its attributes, references, dates,
//! prices, zones, why it is skipped) is a function of that raw item alone,
//! so it may run on any thread. Where it cannot (a document with a
//! DOCTYPE, whose entity expansion budget is spent in document order, or an
//! item with more than [`MAX_PENDING_ZONES`] zones or
//! [`MAX_PENDING_BYTES`] of tags, which must not be held whole) the state
//! machine understands the item itself, in document order, exactly as the
//! same function would elsewhere. A malformed attribute found while
//! understanding is the document's error, as if the reader had found it.

use std::borrow::Cow;
use std::sync::Arc;

use quick_xml::events::{BytesStart, Event};

use super::entities::{Entities, Repairs, Unresolved};
use super::input::{Undecodable, SUBSTITUTE};
use super::markup::{
    check_attributes, for_each_attribute, is_blank, is_xml_name, is_xml_space, quoted, xml_at,
};
use super::{Dialect, FeedItem, ParseError, Skip, MAX_DEPTH, MAX_EVENT_BYTES};
use crate::model::{parse_feed_datetime, FeedPlan, Price, PriceRange, RepairReason, SkipReason};

// ---------------------------------------------------------------------------
// Document state machine
// ---------------------------------------------------------------------------

/// Element and attribute names of one dialect.
pub(super) struct Vocabulary {
    pub(super) root: &'static str,
    pub(super) group: &'static str,
    pub(super) group_id: &'static str,
    pub(super) item: &'static str,
    pub(super) item_id: &'static str,
    pub(super) start: &'static str,
    pub(super) end: &'static str,
}

pub(super) const PLANS: Vocabulary = Vocabulary {
    root: "planList",
    group: "base_plan",
    group_id: "base_plan_id",
    item: "plan",
    item_id: "plan_id",
    start: "plan_start_date",
    end: "plan_end_date",
};

pub(super) const EVENTS: Vocabulary = Vocabulary {
    root: "eventList",
    group: "base_event",
    group_id: "base_event_id",
    item: "event",
    item_id: "event_id",
    start: "event_start_date",
    end: "event_end_date",
};

// Names shared by both dialects.
const OUTPUT: &str = "output";
const ZONE: &str = "zone";
pub(super) const ZONE_ID: &str = "zone_id";
pub(super) const PRICE: &str = "price";
pub(super) const SELL_MODE: &str = "sell_mode";
pub(super) const TITLE: &str = "title";

#[derive(Default)]
pub(super) enum Phase {
    /// Before the root element.
    #[default]
    Prolog,
    /// Inside the root element.
    Root,
    /// After the root element closed: only white space, comments and PIs.
    Epilog,
    /// `Ok(None)` was returned.
    Finished,
    /// An error was returned; later calls repeat it.
    Failed(ParseError),
}

/// An open element the parser understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Root,
    Output,
    Group,
    Item,
    Zone,
}

/// Zones an item may collect before it is understood where it is read
/// (bounds the memory of one raw item whatever the feed).
pub(super) const MAX_PENDING_ZONES: usize = 4096;
/// Bytes of tags an item may collect before it is understood where it is
/// read.
pub(super) const MAX_PENDING_BYTES: usize = 256 * 1024;

/// The open base plan.
#[derive(Default)]
struct Group {
    /// Id as written (references expanded when they could be); `None` when
    /// absent.
    id: Option<String>,
    title: String,
    online: bool,
    /// Why a value of the base plan could not be read: each of its plans
    /// is skipped with it.
    unresolved: Option<String>,
    /// Undecodable bytes in the base plan's tag: each of its plans is
    /// skipped for them.
    undecodable: Option<String>,
}

/// What handling one event produced.
pub(super) enum Step {
    Continue,
    /// An item to understand (anywhere).
    Raw(RawItem),
    /// Items already understood, in document order.
    Items(Vec<FeedItem>),
    End,
}

/// One start tag kept in [`RawItem::text`]: `text[from..to]` is its
/// content (name and attributes), `at` where it starts in the document.
#[derive(Clone, Copy)]
struct Tag {
    from: u32,
    to: u32,
    name_len: u32,
    at: u64,
    /// Its attribute values hold undecodable bytes: only checked.
    damaged: bool,
}

/// One item element as the tag reader saw it: its start tag and those of
/// its zones, copied out of the event buffer (attributes not parsed yet),
/// with its base plan.
pub struct RawItem {
    words: &'static Vocabulary,
    group: Arc<Group>,
    /// Every tag below, one after the other.
    text: String,
    head: Tag,
    /// The zones' tags, in document order.
    zones: Vec<Tag>,
    /// Undecodable bytes in the start tag (what they are): the item is
    /// skipped for them.
    head_damage: Option<String>,
    /// The first undecodable bytes inside the element: a valid plan is
    /// skipped for them.
    inner_damage: Option<String>,
    /// The encoding the document was decoded from, when not UTF-8
    /// (positions in errors count the decoded text: see `FeedReader`).
    pub(super) decoded_from: Option<&'static str>,
}

impl RawItem {
    fn new(words: &'static Vocabulary, group: Arc<Group>, e: &BytesStart<'_>, at: u64) -> Self {
        let content: &str = e;
        let mut raw = RawItem {
            words,
            group,
            // Room for a typical item and its zones in one allocation.
            text: String::with_capacity(content.len().max(128) * 4),
            head: Tag {
                from: 0,
                to: 0,
                name_len: 0,
                at,
                damaged: false,
            },
            zones: Vec::with_capacity(4),
            head_damage: None,
            inner_damage: None,
            decoded_from: None,
        };
        raw.head = raw.keep(e, at);
        raw
    }

    /// The same as [`new`](Self::new), in this item's buffers.
    fn reuse(
        &mut self,
        words: &'static Vocabulary,
        group: Arc<Group>,
        e: &BytesStart<'_>,
        at: u64,
    ) {
        self.words = words;
        self.group = group;
        self.text.clear();
        self.zones.clear();
        self.head_damage = None;
        self.inner_damage = None;
        self.decoded_from = None;
        self.head = self.keep(e, at);
    }

    fn keep(&mut self, e: &BytesStart<'_>, at: u64) -> Tag {
        let content: &str = e;
        let from = self.text.len() as u32;
        self.text.push_str(content);
        Tag {
            from,
            to: self.text.len() as u32,
            name_len: e.name().into_inner().len() as u32,
            at,
            damaged: false,
        }
    }

    fn tag(&self, tag: Tag) -> BytesStart<'_> {
        let content = &self.text[tag.from as usize..tag.to as usize];
        BytesStart::from_content(content, tag.name_len as usize)
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.text.len()
    }

    /// Understands the item: its zone skips, then the plan or why it is
    /// skipped (a skipped item's zones are only checked). An error is the
    /// first malformed attribute among its tags: the document's verdict.
    pub(super) fn understand(
        &self,
        reading: &mut Reading<'_>,
    ) -> Result<Vec<FeedItem>, ParseError> {
        let mut open = self.understand_open(reading)?;
        if let Some(plan) = open.plan {
            open.items.push(plan_at_end(plan, open.damage));
        }
        Ok(open.items)
    }

    /// [`understand`](Self::understand), with the plan (when valid) and the
    /// undecodable bytes inside it kept apart: the reader goes on with them
    /// when the item is not complete yet.
    fn understand_open(&self, reading: &mut Reading<'_>) -> Result<OpenItem, ParseError> {
        let head = self.tag(self.head);
        let read = match &self.head_damage {
            None => {
                let values = item_values(&head, self.head.at, self.words)?;
                reading.head(self, values)
            }
            // Nothing is read from a damaged tag.
            Some(what) => Err(Skip {
                reason: SkipReason::UndecodableText,
                base_plan_id: self.group.id.clone().unwrap_or_default(),
                plan_id: raw_attribute(&head, self.head.at, self.words.item_id)?
                    .unwrap_or_default(),
                detail: format!("its {what}"),
            }),
        };
        match read {
            Err(skip) => {
                for &zone in &self.zones {
                    check_attributes(&self.tag(zone), zone.at)?;
                }
                Ok(OpenItem {
                    items: vec![FeedItem::Skipped(skip)],
                    plan: None,
                    damage: None,
                })
            }
            Ok(mut plan) => {
                let mut items = Vec::new();
                for &zone in &self.zones {
                    let tag = self.tag(zone);
                    if zone.damaged {
                        check_attributes(&tag, zone.at)?;
                        continue;
                    }
                    let [zone_id, price] = zone_values(&tag, zone.at)?;
                    if let Some(skip) = reading.zone(&mut plan, zone_id, price) {
                        items.push(FeedItem::Skipped(skip));
                    }
                }
                Ok(OpenItem {
                    items,
                    plan: Some(plan),
                    damage: self.inner_damage.clone(),
                })
            }
        }
    }

    /// The first malformed attribute among its tags, if any.
    pub(super) fn check(&self) -> Result<(), ParseError> {
        check_attributes(&self.tag(self.head), self.head.at)?;
        for &zone in &self.zones {
            check_attributes(&self.tag(zone), zone.at)?;
        }
        Ok(())
    }
}

/// A valid plan at its end: itself, or skipped for the undecodable bytes
/// found inside it.
fn plan_at_end(plan: FeedPlan, damage: Option<String>) -> FeedItem {
    match damage {
        Some(why) => FeedItem::Skipped(Skip {
            reason: SkipReason::UndecodableText,
            base_plan_id: plan.base_plan_id,
            plan_id: plan.plan_id,
            detail: why,
        }),
        None => FeedItem::Plan(plan),
    }
}

/// An item understood so far: what to hand out now, the valid plan still
/// open, and the undecodable bytes found inside it.
struct OpenItem {
    items: Vec<FeedItem>,
    plan: Option<FeedPlan>,
    damage: Option<String>,
}

/// The item id, start and end attributes of an item's start tag, raw.
fn item_values<'a>(
    e: &'a BytesStart<'_>,
    at: u64,
    words: &Vocabulary,
) -> Result<[Option<Cow<'a, str>>; 3], ParseError> {
    let [mut id, mut start, mut end] = [None, None, None];
    for_each_attribute(e, at, |key, value| {
        if key == words.item_id {
            id = Some(value);
        } else if key == words.start {
            start = Some(value);
        } else if key == words.end {
            end = Some(value);
        }
    })?;
    Ok([id, start, end])
}

/// The zone id and price attributes of a zone's start tag, raw.
fn zone_values<'a>(
    e: &'a BytesStart<'_>,
    at: u64,
) -> Result<[Option<Cow<'a, str>>; 2], ParseError> {
    let [mut zone_id, mut price] = [None, None];
    for_each_attribute(e, at, |key, value| {
        if key == ZONE_ID {
            zone_id = Some(value);
        } else if key == PRICE {
            price = Some(value);
        }
    })?;
    Ok([zone_id, price])
}

/// How values are read: the document's entities and the repairs counted.
pub(super) struct Reading<'a> {
    pub(super) entities: &'a mut Entities,
    pub(super) repairs: &'a mut Repairs,
}

/// Everything known about the document so far, independent of the reader.
#[derive(Default)]
pub(super) struct Document {
    pub(super) phase: Phase,
    pub(super) dialect: Option<Dialect>,
    seen_doctype: bool,
    /// Open elements.
    depth: usize,
    /// Total length of the open elements' names (what the XML reader keeps
    /// to check end tags), bounded like one event.
    open_name_bytes: usize,
    /// Understood open elements, outermost first (at most five).
    levels: Vec<Level>,
    /// Depth of the outermost open element being ignored with its content.
    ignore_from: Option<usize>,
    group: Arc<Group>,
    /// The open plan element collecting its zones, not understood yet.
    raw: Option<RawItem>,
    /// Raw items handed back once understood, to be filled again.
    pub(super) spare: Vec<RawItem>,
    /// The open, valid plan element collecting its zones, understood
    /// where it is read.
    plan: Option<FeedPlan>,
    /// General entities of the internal DTD subset.
    pub(super) entities: Entities,
    pub(super) repairs: Repairs,
    /// Set by the reader before an event whose attribute values or text
    /// hold undecodable bytes; taken by that event.
    pub(super) damage: Option<Undecodable>,
    /// Depth of the open item element (read or skipped), if any.
    item_from: Option<usize>,
    /// Undecodable bytes inside the open plan: it is skipped at its end.
    plan_damage: Option<String>,
}

impl Document {
    fn vocabulary(&self) -> &'static Vocabulary {
        self.dialect.unwrap_or(Dialect::Plans).vocabulary()
    }

    pub(super) fn repairs(&self) -> impl Iterator<Item = (RepairReason, u64)> {
        self.repairs.by_reason()
    }

    fn reading(&mut self) -> Reading<'_> {
        Reading {
            entities: &mut self.entities,
            repairs: &mut self.repairs,
        }
    }

    /// Charges undecodable bytes in data to the item being read: that
    /// item is skipped. Outside any item, they reject the document.
    fn charge(&mut self, damage: Undecodable) -> Result<(), ParseError> {
        if self.item_from.is_none() {
            return Err(damage.error());
        }
        if let Some(raw) = self.raw.as_mut() {
            // Decided once the item is understood (if its head is valid).
            raw.inner_damage
                .get_or_insert_with(|| format!("inside it, {}", damage.what()));
        } else if self.plan.is_some() && self.plan_damage.is_none() {
            self.plan_damage = Some(format!("inside it, {}", damage.what()));
        }
        Ok(())
    }

    pub(super) fn on_event(&mut self, event: Event<'_>, at: u64) -> Result<Step, ParseError> {
        let in_root = matches!(self.phase, Phase::Root);
        if let Some(damage) = self.damage.take() {
            match event {
                Event::Start(_) | Event::Empty(_) => self.damage = Some(damage),
                _ => self.charge(damage)?,
            }
        }
        match event {
            Event::Start(e) => self.on_start(&e, at, true),
            Event::Empty(e) => self.on_start(&e, at, false),
            Event::End(e) => Ok(self.on_end(e.name().into_inner())),
            Event::Text(t) => {
                if !in_root && !t.bytes().all(is_xml_space) {
                    return Err(xml_at(at, "text outside the root element"));
                }
                Ok(Step::Continue)
            }
            // Text is never read, so neither are the references in it.
            Event::GeneralRef(_) => {
                if !in_root {
                    return Err(xml_at(at, "a reference outside the root element"));
                }
                Ok(Step::Continue)
            }
            Event::CData(_) => {
                if !in_root {
                    return Err(xml_at(at, "a CDATA section outside the root element"));
                }
                Ok(Step::Continue)
            }
            Event::Comment(_) | Event::PI(_) => Ok(Step::Continue),
            Event::Decl(_) => {
                if !matches!(self.phase, Phase::Prolog) {
                    return Err(xml_at(
                        at,
                        "an XML declaration is only allowed before the root element",
                    ));
                }
                Ok(Step::Continue)
            }
            Event::DocType(doctype) => {
                if !matches!(self.phase, Phase::Prolog) || self.seen_doctype {
                    return Err(xml_at(
                        at,
                        "a DOCTYPE is only allowed once, before the root element",
                    ));
                }
                self.seen_doctype = true;
                self.entities = Entities::from_doctype(&doctype);
                Ok(Step::Continue)
            }
            Event::Eof => match self.phase {
                Phase::Epilog => Ok(Step::End),
                _ => Err(ParseError::Truncated { position: at }),
            },
        }
    }

    fn on_start(
        &mut self,
        e: &BytesStart<'_>,
        at: u64,
        has_content: bool,
    ) -> Result<Step, ParseError> {
        let name = e.name().into_inner();
        if !is_xml_name(name) {
            return Err(xml_at(
                at,
                format!("`{}` is not a valid element name", quoted(name)),
            ));
        }
        if matches!(self.phase, Phase::Epilog) {
            return Err(xml_at(
                at,
                format!(
                    "element <{}> after the root element was closed",
                    quoted(name)
                ),
            ));
        }
        if has_content {
            self.depth += 1;
            self.open_name_bytes += name.len();
            if self.depth > MAX_DEPTH {
                return Err(xml_at(
                    at,
                    format!("elements are nested more than {MAX_DEPTH} levels deep"),
                ));
            }
            if self.open_name_bytes > MAX_EVENT_BYTES {
                return Err(ParseError::TooLarge {
                    position: at,
                    limit: MAX_EVENT_BYTES,
                });
            }
        }

        let damage = self.damage.take();
        if matches!(self.phase, Phase::Prolog) {
            if let Some(damage) = damage {
                return Err(damage.error());
            }
            let dialect = Dialect::from_root(name).ok_or_else(|| ParseError::NotAFeed {
                root: quoted(name).into_owned(),
            })?;
            check_attributes(e, at)?;
            self.dialect = Some(dialect);
            if has_content {
                self.phase = Phase::Root;
                self.levels.push(Level::Root);
            } else {
                self.phase = Phase::Epilog;
            }
            return Ok(Step::Continue);
        }

        if self.ignore_from.is_some() {
            check_attributes(e, at)?;
            if let Some(damage) = damage {
                self.charge(damage)?;
            }
            return Ok(Step::Continue);
        }

        let words = self.vocabulary();
        let top = self.levels.last().copied();
        let (step, opened) = match top {
            Some(Level::Root | Level::Output) if name == words.group => {
                let repairs = self.repairs;
                let mut group = self.read_group(e, at)?;
                if let Some(damage) = damage {
                    // Nothing read from a damaged tag counts.
                    self.repairs = repairs;
                    group.id = raw_attribute(e, at, words.group_id)?;
                    group.undecodable = Some(format!("its base plan's {}", damage.what()));
                }
                self.group = Arc::new(group);
                (Step::Continue, Some(Level::Group))
            }
            Some(Level::Group) if name == words.item => {
                if has_content {
                    self.item_from = Some(self.depth);
                }
                let group = Arc::clone(&self.group);
                let mut raw = match self.spare.pop() {
                    Some(mut raw) => {
                        raw.reuse(words, group, e, at);
                        raw
                    }
                    None => RawItem::new(words, group, e, at),
                };
                raw.head_damage = damage.map(|d| d.what());
                if !self.seen_doctype && !has_content {
                    (Step::Raw(raw), None)
                } else if !self.seen_doctype {
                    self.raw = Some(raw);
                    (Step::Continue, Some(Level::Item))
                } else {
                    // Understood here, in document order: see the header.
                    self.raw = Some(raw);
                    let mut items = self.settle()?;
                    if !has_content {
                        items.extend(self.end_plan());
                    }
                    (Step::Items(items), has_content.then_some(Level::Item))
                }
            }
            Some(Level::Item) if name == ZONE => {
                let mut items = Vec::new();
                if self.raw.as_ref().is_some_and(|r| {
                    r.zones.len() >= MAX_PENDING_ZONES || r.size() >= MAX_PENDING_BYTES
                }) {
                    items = self.settle()?;
                }
                if let Some(raw) = self.raw.as_mut() {
                    let mut zone = raw.keep(e, at);
                    if let Some(damage) = damage {
                        zone.damaged = true;
                        raw.inner_damage
                            .get_or_insert_with(|| format!("inside it, {}", damage.what()));
                    }
                    raw.zones.push(zone);
                } else if let Some(damage) = damage {
                    check_attributes(e, at)?;
                    self.charge(damage)?;
                } else {
                    let [zone_id, price] = zone_values(e, at)?;
                    if let Some(mut plan) = self.plan.take() {
                        items.extend(
                            self.reading()
                                .zone(&mut plan, zone_id, price)
                                .map(FeedItem::Skipped),
                        );
                        self.plan = Some(plan);
                    }
                }
                let step = if items.is_empty() {
                    Step::Continue
                } else {
                    Step::Items(items)
                };
                (step, Some(Level::Zone))
            }
            _ => {
                check_attributes(e, at)?;
                if let Some(damage) = damage {
                    self.charge(damage)?;
                }
                let opened = (top == Some(Level::Root) && name == OUTPUT).then_some(Level::Output);
                (Step::Continue, opened)
            }
        };
        if has_content {
            match opened {
                Some(level) => self.levels.push(level),
                None => self.ignore_from = Some(self.depth),
            }
        }
        Ok(step)
    }

    /// The XML reader has already checked that `name` closes the innermost
    /// open element.
    fn on_end(&mut self, name: &str) -> Step {
        let depth = self.depth;
        self.depth = depth.saturating_sub(1);
        self.open_name_bytes = self.open_name_bytes.saturating_sub(name.len());
        if self.item_from == Some(depth) {
            self.item_from = None;
        }
        if let Some(from) = self.ignore_from {
            if depth == from {
                self.ignore_from = None;
            }
            return Step::Continue;
        }
        match self.levels.pop() {
            Some(Level::Item) => match self.raw.take() {
                Some(raw) => Step::Raw(raw),
                None => match self.end_plan() {
                    Some(item) => Step::Items(vec![item]),
                    None => Step::Continue,
                },
            },
            Some(Level::Group) => {
                self.group = Arc::default();
                Step::Continue
            }
            Some(Level::Root) => {
                self.phase = Phase::Epilog;
                Step::Continue
            }
            Some(Level::Output | Level::Zone) | None => Step::Continue,
        }
    }

    /// Understands the open raw item here: its head, then the zones it
    /// collected. Returns what to hand out now (the item's skip, or the
    /// zones' skips); a valid plan stays open in `plan` for its next zones.
    fn settle(&mut self) -> Result<Vec<FeedItem>, ParseError> {
        let Some(raw) = self.raw.take() else {
            return Ok(Vec::new());
        };
        let open = raw.understand_open(&mut self.reading())?;
        self.plan = open.plan;
        self.plan_damage = open.damage;
        Ok(open.items)
    }

    /// The open plan, understood here, at its end: itself, or why it is
    /// skipped.
    fn end_plan(&mut self) -> Option<FeedItem> {
        let plan = self.plan.take()?;
        Some(plan_at_end(plan, self.plan_damage.take()))
    }

    /// The first malformed attribute of the open item not understood yet:
    /// it comes before any error the reader meets later.
    pub(super) fn open_item_error(&mut self) -> Option<ParseError> {
        self.raw.take().and_then(|raw| raw.check().err())
    }

    fn read_group(&mut self, e: &BytesStart<'_>, at: u64) -> Result<Group, ParseError> {
        let words = self.vocabulary();
        let (mut id, mut mode, mut title) = (None, None, None);
        for_each_attribute(e, at, |key, value| {
            if key == words.group_id {
                id = Some(value);
            } else if key == SELL_MODE {
                mode = Some(value);
            } else if key == TITLE {
                title = Some(value);
            }
        })?;
        let mut reading = self.reading();
        let id = reading.defaulted(id, words.group, words.group_id);
        let mode = reading.defaulted(mode, words.group, SELL_MODE);
        let title = reading.defaulted(title, words.group, TITLE);
        let mut group = Group::default();
        let mut unresolved = Vec::new();
        match reading.value(id.as_ref()) {
            Ok(v) => group.id = v.map(Cow::into_owned),
            Err(why) => {
                group.id = id.map(Cow::into_owned);
                unresolved.push(format!("its {}: {why}", words.group_id));
            }
        }
        match reading.value(mode.as_ref()) {
            Ok(v) => group.online = v.as_deref() == Some("online"),
            Err(why) => unresolved.push(format!("its {SELL_MODE}: {why}")),
        }
        match reading.value(title.as_ref()) {
            Ok(v) => group.title = v.map(Cow::into_owned).unwrap_or_default(),
            Err(why) => unresolved.push(format!("its {TITLE}: {why}")),
        }
        if !unresolved.is_empty() {
            group.unresolved = Some(format!(
                "its base plan cannot be read: {}",
                unresolved.join("; ")
            ));
        }
        Ok(group)
    }
}

impl Reading<'_> {
    /// `raw`, or when the attribute is absent the default the DTD declares
    /// for it.
    fn defaulted<'v>(
        &self,
        raw: Option<Cow<'v, str>>,
        element: &str,
        attribute: &str,
    ) -> Option<Cow<'v, str>> {
        raw.or_else(|| {
            self.entities
                .attribute_default(element, attribute)
                .map(|d| Cow::Owned(d.to_owned()))
        })
    }

    /// A value planbox reads, its references expanded: borrowed from `raw`
    /// unless a reference or white space needed work.
    fn value<'v>(
        &mut self,
        raw: Option<&'v Cow<'_, str>>,
    ) -> Result<Option<Cow<'v, str>>, Unresolved> {
        raw.map(|v| self.entities.expand(v, self.repairs))
            .transpose()
    }

    /// The plan an item element describes, or why it is skipped. Everything
    /// needed is on the start tag, so a skipped plan's content is ignored.
    /// Details do not name the dialect's attributes, so both dialects of one
    /// feed give identical items.
    fn head(
        &mut self,
        item: &RawItem,
        values: [Option<Cow<'_, str>>; 3],
    ) -> Result<FeedPlan, Skip> {
        let words = item.words;
        let [raw_id, raw_start, raw_end] = values;
        let raw_id = self.defaulted(raw_id, words.item, words.item_id);
        let raw_start = self.defaulted(raw_start, words.item, words.start);
        let raw_end = self.defaulted(raw_end, words.item, words.end);
        let group = &*item.group;
        let (id, start, end) = match (
            self.value(raw_id.as_ref()),
            self.value(raw_start.as_ref()),
            self.value(raw_end.as_ref()),
        ) {
            (Ok(id), Ok(start), Ok(end)) => (id.map(Cow::into_owned), start, end),
            (id, start, end) => {
                let why = [id.err(), start.err(), end.err()]
                    .into_iter()
                    .flatten()
                    .map(|why| why.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(Skip {
                    reason: SkipReason::UnresolvedReference,
                    base_plan_id: group.id.clone().unwrap_or_default(),
                    plan_id: raw_id.map(Cow::into_owned).unwrap_or_default(),
                    detail: format!("the plan cannot be read: {why}"),
                });
            }
        };

        let skip = |reason, detail: String| Skip {
            reason,
            base_plan_id: group.id.clone().unwrap_or_default(),
            plan_id: id.clone().unwrap_or_default(),
            detail,
        };
        if let Some(why) = &group.undecodable {
            return Err(skip(SkipReason::UndecodableText, why.clone()));
        }
        if let Some(why) = &group.unresolved {
            return Err(skip(SkipReason::UnresolvedReference, why.clone()));
        }
        if is_blank(group.id.as_deref()) {
            let detail = "its base plan has no id".to_owned();
            return Err(skip(SkipReason::MissingId, detail));
        }
        if is_blank(id.as_deref()) {
            let detail = "the plan has no id".to_owned();
            return Err(skip(SkipReason::MissingId, detail));
        }
        let start_text = match start.as_deref() {
            Some(s) if !s.trim().is_empty() => s,
            _ => {
                let detail = "the plan has no start date".to_owned();
                return Err(skip(SkipReason::MissingStart, detail));
            }
        };
        let Some(start_time) = parse_feed_datetime(start_text) else {
            let detail = format!(
                "the start date \"{}\" is not a real date-time",
                quoted(start_text)
            );
            return Err(skip(SkipReason::InvalidStart, detail));
        };
        // An empty end is the same as no end.
        let end_time = match end.as_deref() {
            Some(s) if !s.trim().is_empty() => match parse_feed_datetime(s) {
                Some(t) => Some(t),
                None => {
                    let detail = format!("the end date \"{}\" is not a real date-time", quoted(s));
                    return Err(skip(SkipReason::InvalidEnd, detail));
                }
            },
            _ => None,
        };
        if let Some(end_time) = end_time {
            if end_time < start_time {
                let detail = format!(
                    "it ends ({}) before it starts ({})",
                    end_time.format("%Y-%m-%dT%H:%M:%S"),
                    start_time.format("%Y-%m-%dT%H:%M:%S")
                );
                return Err(skip(SkipReason::EndBeforeStart, detail));
            }
        }
        Ok(FeedPlan {
            base_plan_id: group.id.clone().unwrap_or_default(),
            plan_id: id.unwrap_or_default(),
            title: group.title.clone(),
            online: group.online,
            start: start_time,
            end: end_time,
            prices: PriceRange::default(),
        })
    }

    /// Folds a zone's price into `plan`, or says why it cannot.
    fn zone(
        &mut self,
        plan: &mut FeedPlan,
        zone_id: Option<Cow<'_, str>>,
        price: Option<Cow<'_, str>>,
    ) -> Option<Skip> {
        let zone_id = self.defaulted(zone_id, ZONE, ZONE_ID);
        let price = self.defaulted(price, ZONE, PRICE);
        let price = match self.value(price.as_ref()) {
            Ok(price) => price,
            Err(why) => {
                return Some(Skip {
                    reason: SkipReason::UnresolvedReference,
                    base_plan_id: plan.base_plan_id.clone(),
                    plan_id: plan.plan_id.clone(),
                    detail: format!("a zone's price cannot be read: {why}"),
                });
            }
        };
        if let Some(p) = price.as_deref().and_then(Price::parse) {
            plan.prices.add(p);
            return None;
        }
        let zone = match zone_id.as_deref() {
            Some(id) if !id.trim().is_empty() => format!("zone {}", quoted(id)),
            _ => "a zone without zone_id".to_owned(),
        };
        let detail = match price.as_deref() {
            None => format!("{zone} has no price"),
            Some(p) => format!("{zone} has price \"{}\", not a plain decimal", quoted(p)),
        };
        Some(Skip {
            reason: SkipReason::ZoneInvalidPrice,
            base_plan_id: plan.base_plan_id.clone(),
            plan_id: plan.plan_id.clone(),
            detail,
        })
    }
}

/// The raw value of attribute `name` of a tag whose values hold
/// undecodable bytes, for messages: references not expanded, the
/// substitutes shown as U+FFFD (never stored).
fn raw_attribute(e: &BytesStart<'_>, at: u64, name: &str) -> Result<Option<String>, ParseError> {
    let mut found = None;
    for_each_attribute(e, at, |key, value| {
        if key == name {
            found = Some(value.replace(char::from(SUBSTITUTE), "\u{FFFD}"));
        }
    })?;
    Ok(found)
}
