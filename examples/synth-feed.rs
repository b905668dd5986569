//! synth-feed: writes a large, realistic, deterministic provider feed for
//! benchmarks (issue: performance at scale).
//!
//! The output has the exact shape of the provider samples in
//! `shared/fixtures/provider/` (either dialect), streams through a
//! `BufWriter` (memory stays flat at any size) and depends only on the
//! arguments: the same `--seed` and flags give the same bytes.
//!
//! ```text
//! cargo run --release --example synth-feed -- \
//!     --base-plans 5000 --plans 2 --zones 200 --seed 42 --dialect plans \
//!     --out bench/out/feed-5000.xml [--gzip] [--generation 1]
//! ```
//!
//! Every base plan has exactly `--plans` plans and every plan `--zones` zones
//! (plus one extra zone per `duplicate_zone_id` dirty zone), so sizes scale
//! linearly: 5000 x 2 x 200 in the plans dialect is about 194 MB.
//!
//! Realism: titles with entities (`&amp;`, `&#211;`) and raw UTF-8, prices
//! with two decimals, `sell_mode` online/offline (`--online-ratio`), plan ids
//! that repeat across base plans, starts spread over `--days` from `--start`,
//! end = start + 1..4 h.
//!
//! Dirty data (`--dirty-ratio`, rolled independently per base plan, per plan
//! and per zone; stable across generations): impossible dates, missing start,
//! end before start, missing end / id / sell attributes, duplicate zone ids
//! with different prices, non-numeric capacity and price, missing price,
//! unknown elements and attributes.
//!
//! `--generation N` models consecutive provider responses: in each generation
//! `1..=N` about `--change-ratio` of the plans get a new end time and new
//! prices, and about `--drop-ratio` leave the feed for good.
//!
//! A summary goes to stderr; its last line is `stats: {json}` for scripts.
//! Counts include `plans_expected_skipped` (items a correct importer must
//! skip) and `plans_expected_searchable` (plans of online base plans that are
//! not skipped): what one import of this file alone should make searchable.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike};
use clap::{Parser, ValueEnum};
use flate2::write::GzEncoder;
use flate2::Compression;

/// Command line of the generator.
#[derive(Parser, Debug)]
#[command(about = "Write a large deterministic provider feed for benchmarks")]
struct Args {
    /// Number of base plans (groups).
    #[arg(long, default_value_t = 5000)]
    base_plans: u64,
    /// Plans per base plan.
    #[arg(long, default_value_t = 2)]
    plans: u64,
    /// Zones per plan.
    #[arg(long, default_value_t = 200)]
    zones: u64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Feed dialect: `plans` (planList, current) or `events` (eventList, older).
    #[arg(long, value_enum, default_value_t = Dialect::Plans)]
    dialect: Dialect,
    /// Output file (stdout when absent).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Gzip the output (as a provider sending `Content-Encoding: gzip`).
    #[arg(long)]
    gzip: bool,
    /// First day plans can start on.
    #[arg(long, default_value = "2021-01-01")]
    start: NaiveDate,
    /// Plans start within this many days of `--start`.
    #[arg(long, default_value_t = 730)]
    days: u32,
    /// Fraction of base plans with `sell_mode="online"`.
    #[arg(long, default_value_t = 0.9)]
    online_ratio: f64,
    /// Chance that a base plan, a plan or a zone is dirty.
    #[arg(long, default_value_t = 0.01)]
    dirty_ratio: f64,
    /// Provider response number: 0 is the first, each next one changes and
    /// drops a few plans.
    #[arg(long, default_value_t = 0)]
    generation: u64,
    /// Chance per generation that a plan gets a new end time and prices.
    #[arg(long, default_value_t = 0.01)]
    change_ratio: f64,
    /// Chance per generation that a plan leaves the feed (for good).
    #[arg(long, default_value_t = 0.01)]
    drop_ratio: f64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Dialect {
    Plans,
    Events,
}

/// Element and attribute names of one dialect.
struct Names {
    root: &'static str,
    xsd: &'static str,
    group: &'static str,
    group_id: &'static str,
    item: &'static str,
    item_id: &'static str,
    start: &'static str,
    end: &'static str,
}

impl Dialect {
    fn names(self) -> Names {
        match self {
            Dialect::Plans => Names {
                root: "planList",
                xsd: "planList.xsd",
                group: "base_plan",
                group_id: "base_plan_id",
                item: "plan",
                item_id: "plan_id",
                start: "plan_start_date",
                end: "plan_end_date",
            },
            Dialect::Events => Names {
                root: "eventList",
                xsd: "eventList.xsd",
                group: "base_event",
                group_id: "base_event_id",
                item: "event",
                item_id: "event_id",
                start: "event_start_date",
                end: "event_end_date",
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Deterministic randomness: splitmix64, keyed per entity so that any plan's
// content depends only on (seed, indices, version), never on the order of
// generation or on other flags.

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of a tuple of integers (order-sensitive).
fn key(parts: &[u64]) -> u64 {
    parts.iter().fold(0x243f_6a88_85a3_08d3, |h, &p| {
        mix64(h ^ p.wrapping_add(GOLDEN))
    })
}

/// splitmix64 stream.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

// Stream tags, so the streams of different entities never coincide.
const T_BASE: u64 = 1;
const T_PLAN: u64 = 2;
const T_VERSION: u64 = 3;
const T_TOUCH: u64 = 4;
const T_DROP: u64 = 5;
const T_ZONE: u64 = 6;

// ---------------------------------------------------------------------------
// Vocabulary. Strings are already XML-escaped attribute values.

const ARTISTS: &[&str] = &[
    "Camela",
    "Los Morancos",
    "Pantomima Full",
    "Juanito Valderrama",
    "Simon &amp; Garfunkel Revival",
    "&#211;scar Mulero",
    "Mar&#237;a Jim&#233;nez",
    "Rosalía",
    "Niña Pastori",
    "Estopa",
    "Dani Martín",
    "La Oreja de Van Gogh",
    "Orquesta Sinfónica de Galicia",
    "El Cascanueces",
    "Les Luthiers",
    "Antònia Font",
    "Sergio Dalma",
    "Ballet Nacional de España",
    "Tom &amp; Jerry: el musical",
    "Mónica Naranjo",
    "El &quot;Brujo&quot;",
    "Cor Jove de l'Orfeó Català",
    "Los Planetas",
    "Zoé",
    "Björk",
    "Ludovico Einaudi",
    "Ara Malikian",
    "Hombres G",
    "Joan Manuel Serrat",
    "Café Quijano",
];

const FORMATS: &[&str] = &[
    "en concierto",
    "- Gira 2021",
    "en directo",
    "&lt;Unplugged&gt;",
    "Gran Gala",
    "Edición especial",
    "+ invitados",
    "- Última función",
    "&#8212; 25 aniversario",
    "(sesión matinal)",
];

/// Zone names; `numbered` comes with the name like in the samples.
const ZONE_NAMES: &[(&str, bool)] = &[
    ("Platea", true),
    ("Grada 2", false),
    ("A28", true),
    ("Amfiteatre", true),
    ("Anfiteatro", false),
    ("Palco 4", true),
    ("Pista", false),
    ("Tribuna Norte", true),
    ("Fila 12", true),
    ("Sector B", false),
    ("Gallinero", false),
    ("Butaca VIP", true),
    ("Zona Sur", false),
    ("Preferente", true),
];

const SHOW_TIMES: &[(u32, u32)] = &[
    (11, 0),
    (12, 0),
    (17, 0),
    (18, 0),
    (19, 0),
    (19, 30),
    (20, 0),
    (20, 0),
    (20, 30),
    (21, 0),
    (21, 0),
    (21, 30),
    (22, 0),
];

const BAD_CAPACITIES: &[&str] = &["", "n/a", "-", "ilimitado", "12.5", "∞", "1e3"];
const BAD_PRICES: &[&str] = &[
    "", "gratis", "12,50", "N/A", "-5.00", "1e3", "€20.00", "20.00.00",
];

// ---------------------------------------------------------------------------
// Dirty data kinds and counters.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BaseDirt {
    MissingTitle,
    UnknownElement,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PlanDirt {
    ImpossibleDate,
    MissingStart,
    EndBeforeStart,
    MissingEnd,
    MissingPlanId,
    MissingSellAttributes,
    UnknownMarkup,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ZoneDirt {
    DuplicateZoneId,
    NonNumericCapacity,
    NonNumericPrice,
    MissingPrice,
    UnknownAttribute,
}

const BASE_DIRT: &[BaseDirt] = &[BaseDirt::MissingTitle, BaseDirt::UnknownElement];
const PLAN_DIRT: &[PlanDirt] = &[
    PlanDirt::ImpossibleDate,
    PlanDirt::MissingStart,
    PlanDirt::EndBeforeStart,
    PlanDirt::MissingEnd,
    PlanDirt::MissingPlanId,
    PlanDirt::MissingSellAttributes,
    PlanDirt::UnknownMarkup,
];
const ZONE_DIRT: &[ZoneDirt] = &[
    ZoneDirt::DuplicateZoneId,
    ZoneDirt::NonNumericCapacity,
    ZoneDirt::NonNumericPrice,
    ZoneDirt::MissingPrice,
    ZoneDirt::UnknownAttribute,
];

impl BaseDirt {
    fn name(self) -> &'static str {
        match self {
            BaseDirt::MissingTitle => "base_missing_title",
            BaseDirt::UnknownElement => "base_unknown_element",
        }
    }
}

impl PlanDirt {
    fn name(self) -> &'static str {
        match self {
            PlanDirt::ImpossibleDate => "plan_impossible_date",
            PlanDirt::MissingStart => "plan_missing_start",
            PlanDirt::EndBeforeStart => "plan_end_before_start",
            PlanDirt::MissingEnd => "plan_missing_end",
            PlanDirt::MissingPlanId => "plan_missing_id",
            PlanDirt::MissingSellAttributes => "plan_missing_sell_attributes",
            PlanDirt::UnknownMarkup => "plan_unknown_markup",
        }
    }

    /// Whether a correct importer must skip the item.
    fn must_skip(self) -> bool {
        matches!(
            self,
            PlanDirt::ImpossibleDate
                | PlanDirt::MissingStart
                | PlanDirt::EndBeforeStart
                | PlanDirt::MissingPlanId
        )
    }
}

impl ZoneDirt {
    fn name(self) -> &'static str {
        match self {
            ZoneDirt::DuplicateZoneId => "zone_duplicate_id",
            ZoneDirt::NonNumericCapacity => "zone_non_numeric_capacity",
            ZoneDirt::NonNumericPrice => "zone_non_numeric_price",
            ZoneDirt::MissingPrice => "zone_missing_price",
            ZoneDirt::UnknownAttribute => "zone_unknown_attribute",
        }
    }
}

#[derive(Default)]
struct Stats {
    base_plans: u64,
    base_plans_online: u64,
    plans: u64,
    plans_changed: u64,
    plans_dropped: u64,
    plans_expected_skipped: u64,
    plans_expected_searchable: u64,
    zones: u64,
    dirty: BTreeMap<&'static str, u64>,
}

impl Stats {
    fn dirty(&mut self, kind: &'static str) {
        *self.dirty.entry(kind).or_default() += 1;
    }
}

// ---------------------------------------------------------------------------
// Generation.

struct Gen<'a> {
    args: &'a Args,
    names: Names,
    epoch: NaiveDateTime,
}

/// A base plan's stable properties.
struct Base {
    id: u64,
    online: bool,
    organizer: Option<u64>,
    title_artist: &'static str,
    title_format: Option<&'static str>,
    tribute: bool,
    run_start: NaiveDateTime,
    day_gap: i64,
    duration_min: i64,
    lead_days: i64,
    first_plan_id: u64,
    price_cents: u64,
    dirt: Option<BaseDirt>,
}

fn fmt_dt(t: &NaiveDateTime) -> DateText {
    DateText(*t)
}

/// `YYYY-MM-DDTHH:MM:SS` rendering of a date-time.
struct DateText(NaiveDateTime);

impl std::fmt::Display for DateText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }
}

/// `units.cc` rendering of an amount in cents.
struct Cents(u64);

impl std::fmt::Display for Cents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl Gen<'_> {
    fn base(&self, b: u64) -> Base {
        let a = self.args;
        let mut r = Rng::new(key(&[a.seed, T_BASE, b]));
        let day = r.below(u64::from(a.days.max(1))) as i64;
        let (h, m) = r.pick(SHOW_TIMES);
        let run_start = self.epoch
            + Duration::days(day)
            + Duration::hours(i64::from(h))
            + Duration::minutes(i64::from(m));
        // Plan ids come from a pool about as large as the number of base
        // plans, so the same plan id shows up under several base plans.
        let pool = (a.base_plans * a.plans).max(1);
        Base {
            // Unique, increasing, with gaps.
            id: 100 + b * 3 + r.below(3),
            online: r.chance(a.online_ratio),
            organizer: r.chance(0.7).then(|| r.range(1, 60)),
            title_artist: r.pick(ARTISTS),
            title_format: r.chance(0.8).then(|| r.pick(FORMATS)),
            tribute: r.chance(0.1),
            run_start,
            day_gap: r.range(1, 7) as i64,
            duration_min: r.range(4, 16) as i64 * 15,
            lead_days: r.range(30, 180) as i64,
            first_plan_id: 100 + r.below(pool),
            price_cents: r.range(10, 80) * 100,
            dirt: r.chance(a.dirty_ratio).then(|| r.pick(BASE_DIRT)),
        }
    }

    /// The generation that last changed plan (b, p), 0 if none did.
    fn version(&self, b: u64, p: u64) -> u64 {
        let a = self.args;
        (1..=a.generation)
            .rev()
            .find(|&g| Rng::new(key(&[a.seed, T_TOUCH, b, p, g])).chance(a.change_ratio))
            .unwrap_or(0)
    }

    /// Whether plan (b, p) has left the feed by this generation.
    fn dropped(&self, b: u64, p: u64) -> bool {
        let a = self.args;
        (1..=a.generation).any(|g| Rng::new(key(&[a.seed, T_DROP, b, p, g])).chance(a.drop_ratio))
    }

    fn write<W: Write>(&self, w: &mut W, st: &mut Stats) -> io::Result<()> {
        let n = &self.names;
        writeln!(w, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
        writeln!(
            w,
            r#"<{} xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="1.0" xsi:noNamespaceSchemaLocation="{}">"#,
            n.root, n.xsd
        )?;
        writeln!(w, "   <output>")?;
        let mut kept = Vec::with_capacity(self.args.plans as usize);
        for b in 0..self.args.base_plans {
            kept.clear();
            for p in 0..self.args.plans {
                if self.dropped(b, p) {
                    st.plans_dropped += 1;
                } else {
                    kept.push(p);
                }
            }
            if kept.is_empty() {
                continue; // the whole base plan left the feed
            }
            let base = self.base(b);
            self.write_base(w, st, b, &base, &kept)?;
        }
        writeln!(w, "   </output>")?;
        writeln!(w, "</{}>", n.root)?;
        Ok(())
    }

    fn write_base<W: Write>(
        &self,
        w: &mut W,
        st: &mut Stats,
        b: u64,
        base: &Base,
        plans: &[u64],
    ) -> io::Result<()> {
        let n = &self.names;
        st.base_plans += 1;
        if base.online {
            st.base_plans_online += 1;
        }
        if let Some(d) = base.dirt {
            st.dirty(d.name());
        }
        let mode = if base.online { "online" } else { "offline" };
        write!(
            w,
            r#"      <{} {}="{}" sell_mode="{mode}""#,
            n.group, n.group_id, base.id
        )?;
        if let Some(org) = base.organizer {
            write!(w, r#" organizer_company_id="{org}""#)?;
        }
        if base.dirt != Some(BaseDirt::MissingTitle) {
            match (base.tribute, base.title_format) {
                (true, _) => write!(w, r#" title="Tributo a {}""#, base.title_artist)?,
                (false, Some(f)) => write!(w, r#" title="{} {f}""#, base.title_artist)?,
                (false, None) => write!(w, r#" title="{}""#, base.title_artist)?,
            }
        }
        if base.dirt == Some(BaseDirt::UnknownElement) {
            write!(w, r#" genre_code="MUS-{}""#, base.id % 97)?;
        }
        writeln!(w, ">")?;
        if base.dirt == Some(BaseDirt::UnknownElement) {
            writeln!(
                w,
                "         <description lang=\"es\">Espect&#225;culo &amp; m&#250;sica<br/> <![CDATA[<b>¡No te lo pierdas!</b>]]></description>"
            )?;
            writeln!(
                w,
                r#"         <category id="{}" name="Música" />"#,
                base.id % 13
            )?;
        }
        for &p in plans {
            self.write_plan(w, st, b, p, base)?;
        }
        writeln!(w, "      </{}>", n.group)?;
        Ok(())
    }

    fn write_plan<W: Write>(
        &self,
        w: &mut W,
        st: &mut Stats,
        b: u64,
        p: u64,
        base: &Base,
    ) -> io::Result<()> {
        let a = self.args;
        let n = &self.names;
        let plan_seed = key(&[a.seed, T_PLAN, b, p]);
        let mut r = Rng::new(plan_seed);
        let version = self.version(b, p);
        let mut rv = Rng::new(key(&[a.seed, T_VERSION, b, p, version]));
        st.plans += 1;
        if version > 0 {
            st.plans_changed += 1;
        }

        let plan_id = base.first_plan_id + p;
        let start = base.run_start + Duration::days(base.day_gap * p as i64);
        let mut duration = base.duration_min;
        if version > 0 {
            let d = rv.range(4, 16) as i64 * 15;
            duration = if d == duration { d + 10 } else { d };
        }
        let sell_from = (start - Duration::days(base.lead_days))
            .date()
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists");
        let sell_to = start - Duration::minutes(10);
        let sold_out = r.chance(0.03);
        let dirt = r.chance(a.dirty_ratio).then(|| r.pick(PLAN_DIRT));
        if let Some(d) = dirt {
            st.dirty(d.name());
        }
        if dirt.is_some_and(PlanDirt::must_skip) {
            st.plans_expected_skipped += 1;
        } else if base.online {
            st.plans_expected_searchable += 1;
        }

        let start_s;
        let end_s;
        let sell_to_s;
        if dirt == Some(PlanDirt::ImpossibleDate) {
            // A day the month does not have, like the provider's 2021-09-31.
            let (month, day) = r.pick(&[(2, 30), (2, 31), (4, 31), (6, 31), (9, 31), (11, 31)]);
            let y = start.year();
            let (h, m) = (start.hour(), start.minute());
            start_s = format!("{y:04}-{month:02}-{day:02}T{h:02}:{m:02}:00");
            end_s = format!("{y:04}-{month:02}-{day:02}T{:02}:{m:02}:00", (h + 1) % 24);
            sell_to_s = format!("{y:04}-{month:02}-{day:02}T{:02}:50:00", (h + 23) % 24);
        } else {
            let end = if dirt == Some(PlanDirt::EndBeforeStart) {
                start - Duration::minutes(r.range(1, 12) as i64 * 15)
            } else {
                start + Duration::minutes(duration)
            };
            start_s = fmt_dt(&start).to_string();
            end_s = fmt_dt(&end).to_string();
            sell_to_s = fmt_dt(&sell_to).to_string();
        }

        write!(w, "         <{}", n.item)?;
        if dirt != Some(PlanDirt::MissingStart) {
            write!(w, r#" {}="{start_s}""#, n.start)?;
        }
        if dirt != Some(PlanDirt::MissingEnd) {
            write!(w, r#" {}="{end_s}""#, n.end)?;
        }
        if dirt != Some(PlanDirt::MissingPlanId) {
            write!(w, r#" {}="{plan_id}""#, n.item_id)?;
        }
        if dirt != Some(PlanDirt::MissingSellAttributes) {
            write!(
                w,
                r#" sell_from="{}" sell_to="{sell_to_s}" sold_out="{sold_out}""#,
                fmt_dt(&sell_from)
            )?;
        }
        if dirt == Some(PlanDirt::UnknownMarkup) {
            write!(w, r#" venue_id="{}" xsi:type="planType""#, r.range(1, 400))?;
        }
        writeln!(w, ">")?;
        if dirt == Some(PlanDirt::UnknownMarkup) {
            writeln!(
                w,
                r#"            <promo code="EARLY{}" discount="10%" valid_to="{}" />"#,
                plan_id % 100,
                fmt_dt(&sell_from)
            )?;
        }

        // Plan-level price scale: changes with the version.
        let price_pct = if version > 0 {
            let d = rv.range(5, 30);
            if rv.chance(0.3) {
                100 - d.min(20)
            } else {
                100 + d
            }
        } else {
            100
        };
        let zone_base = r.range(1, 900);
        let zone_step = r.range(1, 3);
        for z in 0..a.zones {
            let mut zr = Rng::new(key(&[plan_seed, T_ZONE, z]));
            let zone_id = zone_base + z * zone_step;
            let (name, numbered) = zr.pick(ZONE_NAMES);
            let capacity = zr.range(0, 400);
            let cents = zone_cents(base.price_cents, zr.range(50, 200), price_pct);
            let zdirt = zr.chance(a.dirty_ratio).then(|| zr.pick(ZONE_DIRT));
            if let Some(d) = zdirt {
                st.dirty(d.name());
            }
            st.zones += 1;
            write!(w, r#"            <zone zone_id="{zone_id}""#)?;
            match zdirt {
                Some(ZoneDirt::NonNumericCapacity) => {
                    write!(w, r#" capacity="{}""#, zr.pick(BAD_CAPACITIES))?
                }
                _ => write!(w, r#" capacity="{capacity}""#)?,
            }
            match zdirt {
                Some(ZoneDirt::NonNumericPrice) => {
                    write!(w, r#" price="{}""#, zr.pick(BAD_PRICES))?
                }
                Some(ZoneDirt::MissingPrice) => {}
                _ => write!(w, r#" price="{}""#, Cents(cents))?,
            }
            write!(w, r#" name="{name}" numbered="{numbered}""#)?;
            if zdirt == Some(ZoneDirt::UnknownAttribute) {
                write!(w, r#" section_code="S{}""#, zr.range(1, 99))?;
            }
            writeln!(w, " />")?;
            if zdirt == Some(ZoneDirt::DuplicateZoneId) {
                // Same id, other price and capacity, like zone 186 in the samples.
                let other = zone_cents(base.price_cents, zr.range(50, 200), price_pct);
                let other = if other == cents { other + 500 } else { other };
                st.zones += 1;
                writeln!(
                    w,
                    r#"            <zone zone_id="{zone_id}" capacity="{}" price="{}" name="{name}" numbered="{}" />"#,
                    zr.range(0, 400),
                    Cents(other),
                    !numbered
                )?;
            }
        }
        writeln!(w, "         </{}>", n.item)?;
        Ok(())
    }
}

/// A zone price: the base price scaled by two percentages, rounded to 0.50.
fn zone_cents(base: u64, zone_pct: u64, plan_pct: u64) -> u64 {
    let c = base * zone_pct / 100 * plan_pct / 100;
    (c / 50).max(1) * 50
}

// ---------------------------------------------------------------------------
// Output plumbing.

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Counting<W> {
    fn new(inner: W) -> Self {
        Counting { inner, count: 0 }
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

const BUF: usize = 256 * 1024;

/// Writes the feed; returns (XML bytes, bytes written to the output).
fn run(g: &Gen, st: &mut Stats) -> Result<(u64, u64)> {
    let out: Box<dyn Write> = match &g.args.out {
        Some(path) => Box::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    let out = Counting::new(out);
    if g.args.gzip {
        let enc = GzEncoder::new(out, Compression::default());
        let mut w = BufWriter::with_capacity(BUF, Counting::new(enc));
        g.write(&mut w, st)?;
        let xml = w.into_inner().map_err(|e| e.into_error())?;
        let mut out = xml.inner.finish()?;
        out.flush()?;
        Ok((xml.count, out.count))
    } else {
        let mut w = BufWriter::with_capacity(BUF, out);
        g.write(&mut w, st)?;
        let mut out = w.into_inner().map_err(|e| e.into_error())?;
        out.flush()?;
        Ok((out.count, out.count))
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    for (name, v) in [
        ("--online-ratio", args.online_ratio),
        ("--dirty-ratio", args.dirty_ratio),
        ("--change-ratio", args.change_ratio),
        ("--drop-ratio", args.drop_ratio),
    ] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{name} must be between 0 and 1, got {v}");
        }
    }
    let g = Gen {
        args: &args,
        names: args.dialect.names(),
        epoch: args.start.and_hms_opt(0, 0, 0).expect("midnight exists"),
    };
    let t0 = Instant::now();
    let mut st = Stats::default();
    let (xml_bytes, out_bytes) = run(&g, &mut st)?;
    let secs = t0.elapsed().as_secs_f64();

    let dirty_total: u64 = st.dirty.values().sum();
    let mut e = io::stderr().lock();
    writeln!(
        e,
        "synth-feed: {} XML bytes ({:.1} MB){} in {secs:.2} s ({:.0} MB/s)",
        xml_bytes,
        xml_bytes as f64 / 1e6,
        if args.gzip {
            format!(
                ", {out_bytes} gzip bytes ({:.1} MB)",
                out_bytes as f64 / 1e6
            )
        } else {
            String::new()
        },
        xml_bytes as f64 / 1e6 / secs.max(1e-9)
    )?;
    writeln!(
        e,
        "  base plans {} ({} online), plans {} ({} changed, {} dropped by generation {}), zones {}",
        st.base_plans,
        st.base_plans_online,
        st.plans,
        st.plans_changed,
        st.plans_dropped,
        args.generation,
        st.zones
    )?;
    writeln!(
        e,
        "  expected: {} plans skipped, {} plans searchable after importing this file alone",
        st.plans_expected_skipped, st.plans_expected_searchable
    )?;
    writeln!(e, "  dirty items: {dirty_total}")?;
    for (k, v) in &st.dirty {
        writeln!(e, "    {k:<30} {v}")?;
    }
    let json = serde_json::json!({
        "dialect": format!("{:?}", args.dialect).to_lowercase(),
        "seed": args.seed,
        "generation": args.generation,
        "xml_bytes": xml_bytes,
        "output_bytes": out_bytes,
        "gzip": args.gzip,
        "seconds": secs,
        "base_plans": st.base_plans,
        "base_plans_online": st.base_plans_online,
        "plans": st.plans,
        "plans_changed": st.plans_changed,
        "plans_dropped": st.plans_dropped,
        "plans_expected_skipped": st.plans_expected_skipped,
        "plans_expected_searchable": st.plans_expected_searchable,
        "zones": st.zones,
        "dirty": st.dirty,
    });
    writeln!(e, "stats: {json}")?;
    Ok(())
}
