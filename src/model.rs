//! Domain types: what a feed item is once understood, exact decimal prices,
//! local times, plan identity and the reasons an item can be skipped.
//!
//! This module owns the domain rules that need no I/O (identity, price
//! folding, date validation). It must not read files, sockets or the store.

use std::cmp::Ordering;
use std::fmt;

use chrono::NaiveDateTime;
use uuid::Uuid;

/// Namespace of every plan id planbox hands out. Never change it: ids are
/// promised to be stable across restarts, re-imports, machines and versions.
pub const PLAN_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a4e_8d3b_5e7a_9c10_b2d4_f6a8_0e13);

/// The provider name used when none is configured.
pub const DEFAULT_PROVIDER: &str = "provider";

/// The API id of a plan: UUID v5 of (provider, base plan id, plan id).
///
/// The three parts are joined with U+001F, a character XML 1.0 cannot carry
/// (not even as a character reference), so two different triples can never
/// produce the same name.
pub fn plan_uuid(provider: &str, base_plan_id: &str, plan_id: &str) -> Uuid {
    let name = format!("{provider}\u{1f}{base_plan_id}\u{1f}{plan_id}");
    Uuid::new_v5(&PLAN_ID_NAMESPACE, name.as_bytes())
}

/// A wall-clock date-time in the provider's time zone, without offset.
pub type LocalDateTime = NaiveDateTime;

/// Seconds of a [`LocalDateTime`] on a proleptic UTC-like scale. Used as the
/// sortable integer form of local times in the store and in queries.
pub fn local_seconds(t: &LocalDateTime) -> i64 {
    t.and_utc().timestamp()
}

/// The instant (Unix seconds) of provider-local seconds in zone `tz`, for
/// ordering plans of providers in different zones. A wall-clock time that
/// exists twice (the hour after a DST fall-back) is its first occurrence; one
/// that does not exist (the hour skipped at a spring-forward) is the instant
/// the clocks jumped, so later local times never map to earlier instants.
pub fn local_to_instant(local: i64, tz: chrono_tz::Tz) -> i64 {
    use chrono::{offset::LocalResult, TimeZone, Timelike};
    let Some(naive) = from_local_seconds(local) else {
        return local;
    };
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.timestamp(),
        LocalResult::Ambiguous(first, _) => first.timestamp(),
        LocalResult::None => {
            // Walk to the end of the gap, minute by minute (gaps are an hour
            // in practice; the longest on record is a day).
            for minutes in 1..=(26 * 60) {
                let later = naive + chrono::Duration::minutes(minutes);
                let later = later.with_second(0).unwrap_or(later);
                if let Some(t) = tz.from_local_datetime(&later).earliest() {
                    return t.timestamp();
                }
            }
            local
        }
    }
}

/// Inverse of [`local_seconds`].
pub fn from_local_seconds(secs: i64) -> Option<LocalDateTime> {
    chrono::DateTime::from_timestamp(secs, 0).map(|d| d.naive_utc())
}

/// Parses a feed date-time (`2021-06-30T21:00:00`, optional fraction).
/// Impossible dates such as `2021-09-31T20:00:00` are `None`.
pub fn parse_feed_datetime(s: &str) -> Option<LocalDateTime> {
    let s = s.trim();
    // The shape nearly every feed value has, read without chrono's format
    // machinery (a visible share of a large ingest); anything else, and any
    // value the fast path does not accept, takes chrono's parser.
    fast_feed_datetime(s.as_bytes())
        .or_else(|| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok())
}

/// `YYYY-MM-DDTHH:MM:SS` exactly, when it is a real date-time.
fn fast_feed_datetime(b: &[u8]) -> Option<LocalDateTime> {
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 7)?, num(8, 10)?)?;
    date.and_hms_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?)
}

/// An exact, non-negative decimal amount as written by the provider
/// (`55.00`, `9.9`, `100`). Never a float: comparisons are exact and the
/// value is rendered with the scale it was written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Price {
    units: u64,
    scale: u8,
}

impl Price {
    /// Most digits after the point we keep exactly.
    const MAX_SCALE: usize = 9;

    /// Parses `digits[.digits]` (surrounding white space allowed). Anything
    /// else (signs, exponents, `NaN`, too many digits) is not a usable price.
    pub fn parse(s: &str) -> Option<Price> {
        let s = s.trim();
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > Self::MAX_SCALE {
            return None;
        }
        if s.contains('.') && frac.is_empty() {
            return None;
        }
        let mut units: u64 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            units = units.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        }
        Some(Price {
            units,
            scale: frac.len() as u8,
        })
    }

    fn scaled_to(&self, scale: u8) -> u128 {
        u128::from(self.units) * 10u128.pow(u32::from(scale - self.scale))
    }
}

impl Ord for Price {
    fn cmp(&self, other: &Self) -> Ordering {
        let scale = self.scale.max(other.scale);
        self.scaled_to(scale)
            .cmp(&other.scaled_to(scale))
            // Equal amounts: the one written with fewer digits first, so
            // that min/max folding is deterministic.
            .then(self.scale.cmp(&other.scale))
    }
}

impl PartialOrd for Price {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Price {
    /// Canonical form, also a valid JSON number: no leading zeros, the
    /// fraction digits as written (`55.00`, `0.5`, `100`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pow = 10u64.pow(u32::from(self.scale));
        let (int, frac) = (self.units / pow, self.units % pow);
        if self.scale == 0 {
            write!(f, "{int}")
        } else {
            write!(f, "{int}.{frac:0width$}", width = usize::from(self.scale))
        }
    }
}

/// Minimum and maximum over a plan's usable zone prices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PriceRange {
    pub min: Option<Price>,
    pub max: Option<Price>,
}

impl PriceRange {
    /// Folds one more zone price in. Duplicate zones simply count again.
    pub fn add(&mut self, p: Price) {
        self.min = Some(self.min.map_or(p, |m| m.min(p)));
        // For equal amounts keep the longer spelling as max so that
        // `min <= max` also holds for the rendered forms' ordering.
        self.max = Some(self.max.map_or(p, |m| m.max(p)));
    }
}

/// One plan as understood from one feed, with the values that feed gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedPlan {
    pub base_plan_id: String,
    pub plan_id: String,
    /// From the base plan.
    pub title: String,
    /// The base plan's `sell_mode` was `online` in this feed.
    pub online: bool,
    pub start: LocalDateTime,
    pub end: Option<LocalDateTime>,
    pub prices: PriceRange,
}

/// Why an item (or a zone) was left out. Counted per fetch and journaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// The item or its base plan has no id.
    MissingId,
    /// No start date-time attribute.
    MissingStart,
    /// The start is not a real date-time (`2021-09-31T20:00:00`).
    InvalidStart,
    /// The end is present but not a real date-time.
    InvalidEnd,
    /// The end lies before the start.
    EndBeforeStart,
    /// A zone whose price is missing or not a decimal (the zone, not the plan,
    /// is skipped).
    ZoneInvalidPrice,
    /// A value planbox reads holds a reference it cannot resolve: an
    /// undeclared entity, an external or unparsed one, a character
    /// reference to a character XML forbids, or an expansion over the
    /// bounds.
    UnresolvedReference,
    /// A value of the item (or of its base plan), or text inside the
    /// item, holds bytes that do not decode in the document's encoding.
    UndecodableText,
}

impl SkipReason {
    pub const ALL: [SkipReason; 8] = [
        SkipReason::MissingId,
        SkipReason::MissingStart,
        SkipReason::InvalidStart,
        SkipReason::InvalidEnd,
        SkipReason::EndBeforeStart,
        SkipReason::ZoneInvalidPrice,
        SkipReason::UnresolvedReference,
        SkipReason::UndecodableText,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::MissingId => "missing_id",
            SkipReason::MissingStart => "missing_start",
            SkipReason::InvalidStart => "invalid_start",
            SkipReason::InvalidEnd => "invalid_end",
            SkipReason::EndBeforeStart => "end_before_start",
            SkipReason::ZoneInvalidPrice => "zone_invalid_price",
            SkipReason::UnresolvedReference => "unresolved_reference",
            SkipReason::UndecodableText => "undecodable_text",
        }
    }
}

/// Damage that was repaired rather than skipped. Counted per fetch and
/// journaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RepairReason {
    /// An HTML named reference (`&nbsp;`, `&eacute;`) that XML does not
    /// define, resolved as HTML does.
    HtmlEntity,
    /// A `&` that starts no reference (`Tom & Jerry`), kept as `&`.
    BareAmpersand,
    /// A character XML forbids (a C0 control such as U+000B or U+001B,
    /// U+FFFE, U+FFFF), dropped from a value.
    ControlCharacter,
    /// The `Content-Type` charset did not describe the body (an unknown
    /// label, or bytes that contradict it): the document was read in the
    /// encoding its own byte order mark or declaration names. Once per
    /// document.
    CharsetMismatch,
}

impl RepairReason {
    pub const ALL: [RepairReason; 4] = [
        RepairReason::HtmlEntity,
        RepairReason::BareAmpersand,
        RepairReason::ControlCharacter,
        RepairReason::CharsetMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RepairReason::HtmlEntity => "html_entity",
            RepairReason::BareAmpersand => "bare_ampersand",
            RepairReason::ControlCharacter => "control_character",
            RepairReason::CharsetMismatch => "charset_mismatch",
        }
    }
}

impl fmt::Display for RepairReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A search window in provider-local seconds: `start >= starts_at` and
/// `end <= ends_at`, both inclusive, either side unbounded when `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Window {
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
}

/// One provider's part of a search over several providers: its window in
/// its own local seconds, and its zone (to order its plans by instant).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProviderWindow {
    pub provider: String,
    pub tz: chrono_tz::Tz,
    pub window: Window,
}

impl Window {
    /// `starts_at` after `ends_at` is a well-formed query with no answer.
    pub fn is_empty(&self) -> bool {
        matches!((self.starts_at, self.ends_at), (Some(s), Some(e)) if s > e)
    }
}

/// A keyset position in answer order: the last plan a page returned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Position {
    pub start: i64,
    pub end: Option<i64>,
    pub id: Uuid,
}

/// What `/search` asks: a window, and optionally a page of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SearchQuery {
    pub window: Window,
    /// At most this many plans (1..=100,000); `None` is the whole window.
    pub limit: Option<u32>,
    /// Only plans after this position. Over several providers (`parts`
    /// not empty) its start and end are instants (Unix seconds), else the
    /// one zone's local seconds.
    pub after: Option<Position>,
    /// Empty: every plan in one zone, the one `window` (the store's order is
    /// the answer order). Otherwise each provider with its window in its own
    /// zone, merged by (start instant, end instant, id); `window` is then
    /// unused.
    pub parts: Vec<ProviderWindow>,
}

impl From<Window> for SearchQuery {
    fn from(window: Window) -> Self {
        SearchQuery {
            window,
            ..SearchQuery::default()
        }
    }
}

impl FeedPlan {
    /// Digest of every value planbox keeps for the plan, to skip rewriting
    /// a plan the provider sent again unchanged.
    pub fn content_hash(&self) -> u64 {
        let mut d = crate::digest::Digest::new();
        d.field(self.title.as_bytes());
        d.field(&[u8::from(self.online)]);
        d.field(&local_seconds(&self.start).to_le_bytes());
        d.field(
            &self
                .end
                .map_or(i64::MIN, |e| local_seconds(&e))
                .to_le_bytes(),
        );
        let mut text = String::with_capacity(24);
        for p in [self.prices.min, self.prices.max] {
            text.clear();
            if let Some(p) = p {
                use std::fmt::Write;
                let _ = write!(text, "{p}");
            }
            d.field(text.as_bytes());
        }
        d.finish()
    }

    /// The upstream API's `EventSummary` object for this plan, as JSON text.
    /// Dates and times are the provider's local wall-clock values, unchanged.
    pub fn event_summary_json(&self, id: &Uuid) -> String {
        let title = serde_json::to_string(&self.title).unwrap_or_else(|_| "\"\"".into());
        let mut out = String::with_capacity(200 + title.len());
        out.push_str(r#"{"id":""#);
        out.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        out.push_str(r#"","title":"#);
        out.push_str(&title);
        out.push_str(r#","start_date":""#);
        push_date(&mut out, &self.start);
        out.push_str(r#"","start_time":""#);
        push_time(&mut out, &self.start);
        out.push_str("\",");
        match self.end {
            Some(e) => {
                out.push_str(r#""end_date":""#);
                push_date(&mut out, &e);
                out.push_str(r#"","end_time":""#);
                push_time(&mut out, &e);
                out.push_str("\",");
            }
            None => out.push_str(r#""end_date":null,"end_time":null,"#),
        }
        let price = |out: &mut String, p: Option<Price>| {
            use std::fmt::Write;
            match p {
                Some(p) => {
                    let _ = write!(out, "{p}");
                }
                None => out.push_str("null"),
            }
        };
        out.push_str(r#""min_price":"#);
        price(&mut out, self.prices.min);
        out.push_str(r#","max_price":"#);
        price(&mut out, self.prices.max);
        out.push('}');
        out
    }
}

/// Appends `n` as exactly `width` decimal digits (`n < 10^width`).
fn push_digits(out: &mut String, n: u32, width: u32) {
    for i in (0..width).rev() {
        out.push(char::from(b'0' + ((n / 10u32.pow(i)) % 10) as u8));
    }
}

/// `%Y-%m-%d`, written by hand for the years a feed can hold (0000-9999):
/// chrono's format machinery was a visible share of a large ingest.
fn push_date(out: &mut String, t: &LocalDateTime) {
    use chrono::Datelike;
    match u32::try_from(t.year()) {
        Ok(y) if y <= 9999 => {
            push_digits(out, y, 4);
            out.push('-');
            push_digits(out, t.month(), 2);
            out.push('-');
            push_digits(out, t.day(), 2);
        }
        _ => {
            use std::fmt::Write;
            let _ = write!(out, "{}", t.format("%Y-%m-%d"));
        }
    }
}

/// `%H:%M:%S` (a leap second shows as `:60`, like chrono).
fn push_time(out: &mut String, t: &LocalDateTime) {
    use chrono::Timelike;
    push_digits(out, t.hour(), 2);
    out.push(':');
    push_digits(out, t.minute(), 2);
    out.push(':');
    let leap = u32::from(t.nanosecond() >= 1_000_000_000);
    push_digits(out, t.second() + leap, 2);
}

/// How one fetch or import attempt ended (PRODUCT.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    NotModified,
    Unchanged,
    HttpError,
    Timeout,
    NetworkError,
    ParseError,
    TooLarge,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::NotModified,
        Outcome::Unchanged,
        Outcome::HttpError,
        Outcome::Timeout,
        Outcome::NetworkError,
        Outcome::ParseError,
        Outcome::TooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotModified => "not_modified",
            Outcome::Unchanged => "unchanged",
            Outcome::HttpError => "http_error",
            Outcome::Timeout => "timeout",
            Outcome::NetworkError => "network_error",
            Outcome::ParseError => "parse_error",
            Outcome::TooLarge => "too_large",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The attempt reached the provider and learned its current state.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            Outcome::Ok | Outcome::NotModified | Outcome::Unchanged
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Plan counts of one ingest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlanCounts {
    pub plans_seen: u64,
    pub plans_new: u64,
    pub plans_updated: u64,
    pub plans_unchanged: u64,
}

/// One journaled attempt, as `planbox status --json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FetchRun {
    /// The provider's name (empty for journal rows older than that).
    pub provider: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_ms: u64,
    pub source: String,
    #[serde(serialize_with = "outcome_str")]
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    pub bytes: u64,
    #[serde(flatten)]
    pub counts: PlanCounts,
    /// Reason -> count; zone skips are counted as `zone_invalid_price`.
    pub skipped: std::collections::BTreeMap<String, u64>,
    /// Reason -> count of repairs made to values read (see `RepairReason`).
    pub repaired: std::collections::BTreeMap<String, u64>,
    pub error: Option<String>,
}

impl FetchRun {
    /// Items and zones skipped, all reasons together.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    /// Values repaired, all reasons together.
    pub fn repaired_total(&self) -> u64 {
        self.repaired.values().sum()
    }

    /// The HTTP status for tables and logs, `-` when there was none.
    pub fn http_status_text(&self) -> String {
        self.http_status
            .map_or_else(|| "-".into(), |s| s.to_string())
    }
}

fn outcome_str<S: serde::Serializer>(o: &Outcome, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(o.as_str())
}

/// One event of a `/search` answer, decoded for people (status page, CLI
/// table) with the prices' exact JSON text kept.
#[derive(Debug, serde::Deserialize)]
pub struct EventRow {
    pub id: String,
    pub title: String,
    pub start_date: String,
    pub start_time: Option<String>,
    pub end_date: Option<String>,
    pub end_time: Option<String>,
    pub min_price: Box<serde_json::value::RawValue>,
    pub max_price: Box<serde_json::value::RawValue>,
}

impl EventRow {
    /// `date time`, or `-` when absent.
    pub fn start(&self) -> String {
        join_date_time(Some(&self.start_date), self.start_time.as_deref())
    }

    pub fn end(&self) -> String {
        join_date_time(self.end_date.as_deref(), self.end_time.as_deref())
    }

    /// The price as the API wrote it (`15.00`), `-` for null.
    pub fn price(raw: &serde_json::value::RawValue) -> &str {
        match raw.get() {
            "null" => "-",
            p => p,
        }
    }
}

fn join_date_time(date: Option<&str>, time: Option<&str>) -> String {
    match (date, time) {
        (Some(d), Some(t)) => format!("{d} {t}"),
        (Some(d), None) => d.to_owned(),
        _ => "-".to_owned(),
    }
}

/// Decodes the events of a `/search` success body.
pub fn decode_events(body: &[u8]) -> Result<Vec<EventRow>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        data: Data,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        events: Vec<EventRow>,
    }
    Ok(serde_json::from_slice::<Envelope>(body)?.data.events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Price {
        Price::parse(s).unwrap()
    }

    #[test]
    fn price_parse_accepts_plain_decimals_only() {
        for ok in ["0", "55.00", "9.9", "100", " 7.5 ", "007.50"] {
            assert!(Price::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "-1",
            "+1",
            "1e3",
            "NaN",
            "abc",
            "1.",
            ".5",
            "1.2.3",
            "1,5",
            "1.0000000001",
            "99999999999999999999",
        ] {
            assert!(Price::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn price_renders_canonically_with_written_scale() {
        assert_eq!(p("55.00").to_string(), "55.00");
        assert_eq!(p("007.50").to_string(), "7.50");
        assert_eq!(p("0.05").to_string(), "0.05");
        assert_eq!(p("100").to_string(), "100");
    }

    #[test]
    fn price_range_is_exact() {
        let mut r = PriceRange::default();
        for s in ["10.10", "9.90", "100"] {
            r.add(p(s));
        }
        assert_eq!(r.min.unwrap().to_string(), "9.90");
        assert_eq!(r.max.unwrap().to_string(), "100");
        assert!(p("0.1") < p("0.11") && p("2") > p("1.99"));
    }

    #[test]
    fn plan_uuid_is_stable_and_distinguishes_parts() {
        let a = plan_uuid("provider", "322", "1642");
        assert_eq!(a, plan_uuid("provider", "322", "1642"));
        assert_ne!(a, plan_uuid("provider", "1591", "1642"));
        assert_ne!(plan_uuid("p", "1", "23"), plan_uuid("p", "12", "3"));
        assert_eq!(a.get_version_num(), 5);
        // Pinned: changing this breaks every client's stored ids.
        assert_eq!(a.to_string(), "d15fb038-ee28-5248-86d0-4764c3f38782");
    }

    #[test]
    fn event_json_follows_the_upstream_schema() {
        let plan = FeedPlan {
            base_plan_id: "291".into(),
            plan_id: "291".into(),
            title: "Camela \"en\" concierto".into(),
            online: true,
            start: parse_feed_datetime("2021-06-30T21:00:00").unwrap(),
            end: None,
            prices: PriceRange {
                min: Price::parse("15.00"),
                max: Price::parse("30.00"),
            },
        };
        let id = plan_uuid("p", "291", "291");
        let v: serde_json::Value = serde_json::from_str(&plan.event_summary_json(&id)).unwrap();
        assert_eq!(v["id"], id.to_string());
        assert_eq!(v["title"], "Camela \"en\" concierto");
        assert_eq!(v["start_date"], "2021-06-30");
        assert_eq!(v["start_time"], "21:00:00");
        assert!(v["end_date"].is_null() && v["end_time"].is_null());
        assert!(plan
            .event_summary_json(&id)
            .ends_with(r#""min_price":15.00,"max_price":30.00}"#));
    }

    #[test]
    fn fast_date_parsing_agrees_with_chrono() {
        for text in [
            "2021-06-30T21:00:00",
            "2021-09-31T20:00:00",
            "2020-02-29T00:00:00",
            "2021-02-29T00:00:00",
            "2021-06-30T24:00:00",
            "2021-06-30T23:59:60",
            "2021-06-30T23:60:00",
            "2021-13-01T00:00:00",
            "0000-01-01T00:00:00",
            "0001-01-01T00:00:00",
            "9999-12-31T23:59:59",
            "2021-06-30T21:00:00.5",
            "2021-6-30T21:00:00",
            "2021-06-30 21:00:00",
            "+2021-06-30T21:00:0",
            "2021-06-30T2a:00:00",
        ] {
            let chrono = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok();
            assert_eq!(parse_feed_datetime(text), chrono, "{text}");
        }
    }

    #[test]
    fn hand_written_dates_and_times_match_chrono() {
        for text in [
            "0001-01-01T00:00:00",
            "0999-12-31T23:59:59",
            "2021-06-30T21:00:00",
            "2021-02-03T04:05:06.789",
            "9999-12-31T23:59:59",
        ] {
            let t = parse_feed_datetime(text).unwrap();
            let (mut d, mut h) = (String::new(), String::new());
            push_date(&mut d, &t);
            push_time(&mut h, &t);
            assert_eq!(d, t.format("%Y-%m-%d").to_string(), "{text}");
            assert_eq!(h, t.format("%H:%M:%S").to_string(), "{text}");
        }
        let far = chrono::NaiveDate::from_ymd_opt(12345, 1, 2)
            .unwrap()
            .and_hms_opt(3, 4, 5)
            .unwrap();
        let mut d = String::new();
        push_date(&mut d, &far);
        assert_eq!(d, far.format("%Y-%m-%d").to_string());
    }

    #[test]
    fn content_hash_sees_every_kept_value() {
        let base = FeedPlan {
            base_plan_id: "1".into(),
            plan_id: "1".into(),
            title: "t".into(),
            online: true,
            start: parse_feed_datetime("2021-06-30T21:00:00").unwrap(),
            end: parse_feed_datetime("2021-06-30T22:00:00"),
            prices: PriceRange::default(),
        };
        let mut other = base.clone();
        assert_eq!(base.content_hash(), other.content_hash());
        other.online = false;
        assert_ne!(base.content_hash(), other.content_hash());
        let mut other = base.clone();
        other.end = None;
        assert_ne!(base.content_hash(), other.content_hash());
        let mut other = base.clone();
        other.prices.add(Price::parse("1.0").unwrap());
        assert_ne!(base.content_hash(), other.content_hash());
    }

    #[test]
    fn feed_dates_reject_impossible_days() {
        assert!(parse_feed_datetime("2021-06-30T21:00:00").is_some());
        assert!(parse_feed_datetime("2021-09-31T20:00:00").is_none());
        assert!(parse_feed_datetime("2021-06-30").is_none());
        let t = parse_feed_datetime("0001-01-01T00:00:00").unwrap();
        assert_eq!(from_local_seconds(local_seconds(&t)), Some(t));
    }
}

#[cfg(test)]
mod instant_tests {
    use super::*;
    use chrono_tz::Europe::Madrid;

    fn local(s: &str) -> i64 {
        local_seconds(&parse_feed_datetime(s).unwrap())
    }

    fn utc(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn local_times_become_instants_with_the_dst_edges_decided() {
        assert_eq!(
            local_to_instant(local("2021-06-30T21:00:00"), Madrid),
            utc("2021-06-30T19:00:00Z")
        );
        assert_eq!(
            local_to_instant(local("2021-01-10T21:00:00"), Madrid),
            utc("2021-01-10T20:00:00Z")
        );
        // 2021-03-28: clocks jump 02:00 -> 03:00; 02:30 never happened and
        // counts as the instant of the jump (= 03:00 CEST).
        assert_eq!(
            local_to_instant(local("2021-03-28T02:30:00"), Madrid),
            utc("2021-03-28T01:00:00Z")
        );
        assert_eq!(
            local_to_instant(local("2021-03-28T03:00:00"), Madrid),
            utc("2021-03-28T01:00:00Z")
        );
        // 2021-10-31: 02:00-02:59 happens twice; the first (CEST) counts.
        assert_eq!(
            local_to_instant(local("2021-10-31T02:30:00"), Madrid),
            utc("2021-10-31T00:30:00Z")
        );
        assert_eq!(
            local_to_instant(local("2021-10-31T03:00:00"), Madrid),
            utc("2021-10-31T02:00:00Z")
        );
        assert_eq!(
            local_to_instant(local("2021-06-30T21:00:00"), chrono_tz::UTC),
            local("2021-06-30T21:00:00")
        );
    }

    #[test]
    fn later_local_times_never_map_to_earlier_instants() {
        for day in ["2021-03-28T00:00:00", "2021-10-31T00:00:00"] {
            let start = local(day);
            let mut last = i64::MIN;
            for minute in 0..(24 * 60) {
                let i = local_to_instant(start + minute * 60, Madrid);
                assert!(i >= last, "{day} + {minute} min");
                last = i;
            }
        }
    }
}
