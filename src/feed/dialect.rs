//! The dialect state machine: which elements of the document are the
//! root, groups, items and zones, and how an item's attributes become a
//! [`FeedPlan`] or a [`Skip`].

use std::borrow::Cow;

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
    Item(FeedItem),
    End,
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
    group: Group,
    /// The open, valid plan element collecting its zones.
    plan: Option<FeedPlan>,
    /// General entities of the internal DTD subset.
    entities: Entities,
    repairs: Repairs,
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

    /// A value planbox reads, its references expanded.
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

    /// Borrowed from `raw` unless a reference or white space needed work.
    fn value<'v>(
        &mut self,
        raw: Option<&'v Cow<'_, str>>,
    ) -> Result<Option<Cow<'v, str>>, Unresolved> {
        raw.map(|v| self.entities.expand(v, &mut self.repairs))
            .transpose()
    }

    /// Charges undecodable bytes in data to the item being read: that
    /// item is skipped. Outside any item, they reject the document.
    fn charge(&mut self, damage: Undecodable) -> Result<(), ParseError> {
        if self.item_from.is_none() {
            return Err(damage.error());
        }
        if self.plan.is_some() && self.plan_damage.is_none() {
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
                self.read_group(e, at)?;
                if let Some(damage) = damage {
                    // Nothing read from a damaged tag counts.
                    self.repairs = repairs;
                    self.group.id = raw_attribute(e, at, words.group_id)?;
                    self.group.undecodable = Some(format!("its base plan's {}", damage.what()));
                }
                (Step::Continue, Some(Level::Group))
            }
            Some(Level::Group) if name == words.item => {
                if has_content {
                    self.item_from = Some(self.depth);
                }
                let read = match damage {
                    None => self.read_item(e, at)?,
                    Some(damage) => Err(Skip {
                        reason: SkipReason::UndecodableText,
                        base_plan_id: self.group.id.clone().unwrap_or_default(),
                        plan_id: raw_attribute(e, at, words.item_id)?.unwrap_or_default(),
                        detail: format!("its {}", damage.what()),
                    }),
                };
                match read {
                    Ok(plan) if has_content => {
                        self.plan = Some(plan);
                        (Step::Continue, Some(Level::Item))
                    }
                    Ok(plan) => (Step::Item(FeedItem::Plan(plan)), None),
                    // A skipped plan's zones are not looked at.
                    Err(skip) => (Step::Item(FeedItem::Skipped(skip)), None),
                }
            }
            Some(Level::Item) if name == ZONE => {
                let step = match damage {
                    None => match self.read_zone(e, at)? {
                        Some(skip) => Step::Item(FeedItem::Skipped(skip)),
                        None => Step::Continue,
                    },
                    Some(damage) => {
                        check_attributes(e, at)?;
                        self.charge(damage)?;
                        Step::Continue
                    }
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
            Some(Level::Item) => match (self.plan.take(), self.plan_damage.take()) {
                (Some(plan), Some(why)) => Step::Item(FeedItem::Skipped(Skip {
                    reason: SkipReason::UndecodableText,
                    base_plan_id: plan.base_plan_id,
                    plan_id: plan.plan_id,
                    detail: why,
                })),
                (Some(plan), None) => Step::Item(FeedItem::Plan(plan)),
                (None, _) => Step::Continue,
            },
            Some(Level::Group) => {
                self.group = Group::default();
                Step::Continue
            }
            Some(Level::Root) => {
                self.phase = Phase::Epilog;
                Step::Continue
            }
            Some(Level::Output | Level::Zone) | None => Step::Continue,
        }
    }

    fn read_group(&mut self, e: &BytesStart<'_>, at: u64) -> Result<(), ParseError> {
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
        let id = self.defaulted(id, words.group, words.group_id);
        let mode = self.defaulted(mode, words.group, SELL_MODE);
        let title = self.defaulted(title, words.group, TITLE);
        let mut group = Group::default();
        let mut unresolved = Vec::new();
        match self.value(id.as_ref()) {
            Ok(v) => group.id = v.map(Cow::into_owned),
            Err(why) => {
                group.id = id.map(Cow::into_owned);
                unresolved.push(format!("its {}: {why}", words.group_id));
            }
        }
        match self.value(mode.as_ref()) {
            Ok(v) => group.online = v.as_deref() == Some("online"),
            Err(why) => unresolved.push(format!("its {SELL_MODE}: {why}")),
        }
        match self.value(title.as_ref()) {
            Ok(v) => group.title = v.map(Cow::into_owned).unwrap_or_default(),
            Err(why) => unresolved.push(format!("its {TITLE}: {why}")),
        }
        if !unresolved.is_empty() {
            group.unresolved = Some(format!(
                "its base plan cannot be read: {}",
                unresolved.join("; ")
            ));
        }
        self.group = group;
        Ok(())
    }

    /// The plan an item element describes, or why it is skipped. Everything
    /// needed is on the start tag, so a skipped plan's content is ignored.
    /// Details do not name the dialect's attributes, so both dialects of one
    /// feed give identical items.
    fn read_item(
        &mut self,
        e: &BytesStart<'_>,
        at: u64,
    ) -> Result<Result<FeedPlan, Skip>, ParseError> {
        let words = self.vocabulary();
        let (mut raw_id, mut raw_start, mut raw_end) = (None, None, None);
        for_each_attribute(e, at, |key, value| {
            if key == words.item_id {
                raw_id = Some(value);
            } else if key == words.start {
                raw_start = Some(value);
            } else if key == words.end {
                raw_end = Some(value);
            }
        })?;
        let raw_id = self.defaulted(raw_id, words.item, words.item_id);
        let raw_start = self.defaulted(raw_start, words.item, words.start);
        let raw_end = self.defaulted(raw_end, words.item, words.end);
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
                return Ok(Err(Skip {
                    reason: SkipReason::UnresolvedReference,
                    base_plan_id: self.group.id.clone().unwrap_or_default(),
                    plan_id: raw_id.map(Cow::into_owned).unwrap_or_default(),
                    detail: format!("the plan cannot be read: {why}"),
                }));
            }
        };

        let group = &self.group;
        let skip = |reason, detail: String| Skip {
            reason,
            base_plan_id: group.id.clone().unwrap_or_default(),
            plan_id: id.clone().unwrap_or_default(),
            detail,
        };
        if let Some(why) = &group.undecodable {
            return Ok(Err(skip(SkipReason::UndecodableText, why.clone())));
        }
        if let Some(why) = &group.unresolved {
            return Ok(Err(skip(SkipReason::UnresolvedReference, why.clone())));
        }
        if is_blank(group.id.as_deref()) {
            let detail = "its base plan has no id".to_owned();
            return Ok(Err(skip(SkipReason::MissingId, detail)));
        }
        if is_blank(id.as_deref()) {
            let detail = "the plan has no id".to_owned();
            return Ok(Err(skip(SkipReason::MissingId, detail)));
        }
        let start_text = match start.as_deref() {
            Some(s) if !s.trim().is_empty() => s,
            _ => {
                let detail = "the plan has no start date".to_owned();
                return Ok(Err(skip(SkipReason::MissingStart, detail)));
            }
        };
        let Some(start_time) = parse_feed_datetime(start_text) else {
            let detail = format!(
                "the start date \"{}\" is not a real date-time",
                quoted(start_text)
            );
            return Ok(Err(skip(SkipReason::InvalidStart, detail)));
        };
        // An empty end is the same as no end.
        let end_time = match end.as_deref() {
            Some(s) if !s.trim().is_empty() => match parse_feed_datetime(s) {
                Some(t) => Some(t),
                None => {
                    let detail = format!("the end date \"{}\" is not a real date-time", quoted(s));
                    return Ok(Err(skip(SkipReason::InvalidEnd, detail)));
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
                return Ok(Err(skip(SkipReason::EndBeforeStart, detail)));
            }
        }
        Ok(Ok(FeedPlan {
            base_plan_id: group.id.clone().unwrap_or_default(),
            plan_id: id.unwrap_or_default(),
            title: group.title.clone(),
            online: group.online,
            start: start_time,
            end: end_time,
            prices: PriceRange::default(),
        }))
    }

    /// Folds a zone's price into the open plan, or says why it cannot.
    fn read_zone(&mut self, e: &BytesStart<'_>, at: u64) -> Result<Option<Skip>, ParseError> {
        // Values stay borrowed from the event buffer: a zone allocates
        // nothing unless it is skipped.
        let (mut zone_id, mut price) = (None, None);
        for_each_attribute(e, at, |key, value| {
            if key == ZONE_ID {
                zone_id = Some(value);
            } else if key == PRICE {
                price = Some(value);
            }
        })?;
        let zone_id = self.defaulted(zone_id, ZONE, ZONE_ID);
        let price = self.defaulted(price, ZONE, PRICE);
        if self.plan.is_none() {
            return Ok(None);
        }
        let price = match self.value(price.as_ref()) {
            Ok(price) => price,
            Err(why) => {
                let plan = self
                    .plan
                    .as_ref()
                    .map_or(("", ""), |p| (p.base_plan_id.as_str(), p.plan_id.as_str()));
                return Ok(Some(Skip {
                    reason: SkipReason::UnresolvedReference,
                    base_plan_id: plan.0.to_owned(),
                    plan_id: plan.1.to_owned(),
                    detail: format!("a zone's price cannot be read: {why}"),
                }));
            }
        };
        let Some(plan) = self.plan.as_mut() else {
            return Ok(None);
        };
        if let Some(p) = price.as_deref().and_then(Price::parse) {
            plan.prices.add(p);
            return Ok(None);
        }
        let zone = match zone_id.as_deref() {
            Some(id) if !id.trim().is_empty() => format!("zone {}", quoted(id)),
            _ => "a zone without zone_id".to_owned(),
        };
        let detail = match price.as_deref() {
            None => format!("{zone} has no price"),
            Some(p) => format!("{zone} has price \"{}\", not a plain decimal", quoted(p)),
        };
        Ok(Some(Skip {
            reason: SkipReason::ZoneInvalidPrice,
            base_plan_id: plan.base_plan_id.clone(),
            plan_id: plan.plan_id.clone(),
            detail,
        }))
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
