use super::dialect::{PRICE, SELL_MODE, TITLE, ZONE_ID};
use super::markup::is_xml_space;
use super::*;
use crate::model::{parse_feed_datetime, LocalDateTime, Price, PriceRange};
use std::io::{BufReader, Read};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

const RESPONSES: [&str; 3] = [
    include_str!("../../assets/fixtures/response_1.xml"),
    include_str!("../../assets/fixtures/response_2.xml"),
    include_str!("../../assets/fixtures/response_3.xml"),
];
const EVENT_RESPONSES: [&str; 3] = [
    include_str!("../../assets/fixtures/eventlist_response_1.xml"),
    include_str!("../../assets/fixtures/eventlist_response_2.xml"),
    include_str!("../../assets/fixtures/eventlist_response_3.xml"),
];

fn parse_from(reader: impl BufRead) -> Result<Vec<FeedItem>, ParseError> {
    let mut feed = FeedReader::new(reader);
    let mut items = Vec::new();
    while let Some(item) = feed.next_item()? {
        items.push(item);
    }
    Ok(items)
}

fn parse(xml: &str) -> Result<Vec<FeedItem>, ParseError> {
    parse_from(xml.as_bytes())
}

fn parse_ok(xml: &str) -> Vec<FeedItem> {
    match parse(xml) {
        Ok(items) => items,
        Err(e) => panic!("expected a feed, got: {e}\n{xml}"),
    }
}

fn dt(s: &str) -> LocalDateTime {
    parse_feed_datetime(s).unwrap()
}

fn price(s: &str) -> Price {
    Price::parse(s).unwrap()
}

fn plans(items: &[FeedItem]) -> Vec<&FeedPlan> {
    items
        .iter()
        .filter_map(|i| match i {
            FeedItem::Plan(p) => Some(p),
            FeedItem::Skipped(_) => None,
        })
        .collect()
}

fn skips(items: &[FeedItem]) -> Vec<&Skip> {
    items
        .iter()
        .filter_map(|i| match i {
            FeedItem::Skipped(s) => Some(s),
            FeedItem::Plan(_) => None,
        })
        .collect()
}

fn only_plan(items: &[FeedItem]) -> &FeedPlan {
    let found = plans(items);
    assert_eq!(found.len(), 1, "{items:#?}");
    found[0]
}

/// A plans feed around `body` (the content of one `base_plan` with id 1).
fn feed(body: &str) -> String {
    format!(
        r#"<?xml version="1.0"?><planList><output><base_plan base_plan_id="1" sell_mode="online" title="T">{body}</base_plan></output></planList>"#
    )
}

const PLAN_ATTRS: &str = r#"plan_id="7" plan_start_date="2021-06-30T21:00:00""#;

// ----- fixtures --------------------------------------------------------

struct Expected {
    base: &'static str,
    plan: &'static str,
    title: &'static str,
    online: bool,
    start: &'static str,
    end: &'static str,
    min: &'static str,
    max: &'static str,
}

fn expected_plan(e: &Expected) -> FeedItem {
    FeedItem::Plan(FeedPlan {
        base_plan_id: e.base.into(),
        plan_id: e.plan.into(),
        title: e.title.into(),
        online: e.online,
        start: dt(e.start),
        end: Some(dt(e.end)),
        prices: PriceRange {
            min: Some(price(e.min)),
            max: Some(price(e.max)),
        },
    })
}

fn camela(end: &'static str) -> FeedItem {
    expected_plan(&Expected {
        base: "291",
        plan: "291",
        title: "Camela en concierto",
        online: true,
        start: "2021-06-30T21:00:00",
        end,
        min: "15.00",
        max: "30.00",
    })
}

fn pantomima(plan: &'static str, day: u32) -> FeedItem {
    let (start, end) = match day {
        10 => ("2021-02-10T20:00:00", "2021-02-10T21:30:00"),
        _ => ("2021-02-11T20:00:00", "2021-02-11T21:30:00"),
    };
    expected_plan(&Expected {
        base: "322",
        plan,
        title: "Pantomima Full",
        online: true,
        start,
        end,
        min: "55.00",
        max: "55.00",
    })
}

fn morancos(end: &'static str) -> FeedItem {
    expected_plan(&Expected {
        base: "1591",
        plan: "1642",
        title: "Los Morancos",
        online: true,
        start: "2021-07-31T20:00:00",
        end,
        min: "65.00",
        max: "75.00",
    })
}

fn valderrama_skip(item: &FeedItem) {
    let FeedItem::Skipped(skip) = item else {
        panic!("expected a skip, got {item:?}");
    };
    assert_eq!(skip.reason, SkipReason::InvalidStart);
    assert_eq!(
        (skip.base_plan_id.as_str(), skip.plan_id.as_str()),
        ("444", "1642")
    );
    assert!(
        skip.detail.contains("2021-09-31T20:00:00"),
        "{}",
        skip.detail
    );
}

#[test]
fn fixture_response_1_parses_to_the_expected_plans() {
    let items = parse_ok(RESPONSES[0]);
    assert_eq!(items.len(), 5, "{items:#?}");
    assert_eq!(items[0], camela("2021-06-30T22:00:00"));
    assert_eq!(items[1], pantomima("1642", 10));
    assert_eq!(items[2], pantomima("1643", 11));
    assert_eq!(items[3], morancos("2021-07-31T21:00:00"));
    valderrama_skip(&items[4]);
    let morancos = plans(&items)[3];
    assert_eq!(morancos.prices.min.unwrap().to_string(), "65.00");
    assert_eq!(morancos.prices.max.unwrap().to_string(), "75.00");
}

#[test]
fn fixture_responses_2_and_3_parse_to_the_expected_plans() {
    let two = parse_ok(RESPONSES[1]);
    assert_eq!(two.len(), 3, "{two:#?}");
    assert_eq!(two[0], camela("2021-06-30T22:00:00"));
    assert_eq!(two[1], morancos("2021-07-31T21:20:00"));
    valderrama_skip(&two[2]);

    let three = parse_ok(RESPONSES[2]);
    assert_eq!(three.len(), 3, "{three:#?}");
    assert_eq!(three[0], camela("2021-06-30T21:30:00"));
    assert_eq!(three[1], morancos("2021-07-31T21:00:00"));
    valderrama_skip(&three[2]);
}

#[test]
fn both_dialects_of_each_fixture_give_identical_items() {
    for (plans_xml, events_xml) in RESPONSES.iter().zip(EVENT_RESPONSES) {
        let mut a = FeedReader::new(plans_xml.as_bytes());
        let mut b = FeedReader::new(events_xml.as_bytes());
        assert_eq!(a.dialect(), None);
        loop {
            let (x, y) = (a.next_item().unwrap(), b.next_item().unwrap());
            assert_eq!(x, y);
            if x.is_none() {
                break;
            }
        }
        assert_eq!(a.dialect(), Some(Dialect::Plans));
        assert_eq!(b.dialect(), Some(Dialect::Events));
        assert_eq!(a.position(), plans_xml.len() as u64);
        assert_eq!(b.position(), events_xml.len() as u64);
    }
}

#[test]
fn fixtures_parse_the_same_through_tiny_read_chunks() {
    for xml in RESPONSES.iter().chain(&EVENT_RESPONSES) {
        let whole = parse_ok(xml);
        for capacity in [1, 2, 3, 7, 64] {
            let chunked = parse_from(BufReader::with_capacity(capacity, xml.as_bytes())).unwrap();
            assert_eq!(chunked, whole, "capacity {capacity}");
        }
    }
}

// ----- prices and zones -------------------------------------------------

#[test]
fn prices_fold_to_exact_min_and_max() {
    let items = parse_ok(&feed(&format!(
        r#"<plan {PLAN_ATTRS}><zone zone_id="1" price="10.10"/><zone zone_id="2" price="9.90"/><zone zone_id="3" price="100"/></plan>"#
    )));
    let plan = only_plan(&items);
    assert_eq!(plan.prices.min.unwrap().to_string(), "9.90");
    assert_eq!(plan.prices.max.unwrap().to_string(), "100");
    assert!(skips(&items).is_empty());
}

#[test]
fn duplicate_zone_ids_both_count() {
    let items = parse_ok(&feed(&format!(
        r#"<plan {PLAN_ATTRS}><zone zone_id="186" price="75.00"/><zone zone_id="186" price="65.00"></zone></plan>"#
    )));
    let plan = only_plan(&items);
    assert_eq!(plan.prices.min, Some(price("65.00")));
    assert_eq!(plan.prices.max, Some(price("75.00")));
}

#[test]
fn zones_with_unusable_prices_are_skipped_and_reported_right_before_their_plan() {
    let items = parse_ok(&feed(&format!(
        r#"<plan {PLAN_ATTRS}>
             <zone zone_id="1" price="abc"/>
             <zone zone_id="2"/>
             <zone zone_id="3" price="12.50"></zone>
             <zone price="-4"/>
           </plan>"#
    )));
    assert_eq!(items.len(), 4, "{items:#?}");
    for (item, zone) in items[..3]
        .iter()
        .zip(["zone 1", "zone 2", "without zone_id"])
    {
        let FeedItem::Skipped(skip) = item else {
            panic!("expected a zone skip, got {item:?}");
        };
        assert_eq!(skip.reason, SkipReason::ZoneInvalidPrice);
        assert_eq!(
            (skip.base_plan_id.as_str(), skip.plan_id.as_str()),
            ("1", "7")
        );
        assert!(skip.detail.contains(zone), "{}", skip.detail);
    }
    let FeedItem::Plan(plan) = &items[3] else {
        panic!("the plan comes last: {items:#?}");
    };
    assert_eq!(plan.prices.min, Some(price("12.50")));
    assert_eq!(plan.prices.max, Some(price("12.50")));
}

#[test]
fn plan_without_usable_price_has_no_prices() {
    let items = parse_ok(&feed(&format!(
        r#"<plan {PLAN_ATTRS}><zone zone_id="1" price="n/a"/></plan><plan plan_id="8" plan_start_date="2021-06-30T21:00:00"/>"#
    )));
    let found = plans(&items);
    assert_eq!(found.len(), 2);
    for plan in found {
        assert_eq!(plan.prices, PriceRange::default());
    }
    assert_eq!(skips(&items).len(), 1);
}

// ----- values -------------------------------------------------------------

#[test]
fn entities_and_character_references_are_decoded() {
    let xml = r#"<planList><base_plan base_plan_id="a&amp;b" sell_mode="online" title="&#211;pera &amp; Caf&#xe9; &lt;3&gt; &quot;x&quot; &apos;y&apos;">
        <plan plan_id="&#49;" plan_start_date="2021-06-30T21:00:00">text &amp; &#211; refs</plan>
    </base_plan></planList>"#;
    let items = parse_ok(xml);
    let plan = only_plan(&items);
    assert_eq!(plan.title, "Ópera & Café <3> \"x\" 'y'");
    assert_eq!(plan.base_plan_id, "a&b");
    assert_eq!(plan.plan_id, "1");
}

/// A feed of two base plans: `special` (id 1, plan 10; [`SPECIAL_PLAN`]
/// with its placeholders) holds `@` where the `bad` bytes go, `Control`
/// (id 2, plan 20) does not. Returns the bytes and the offset of `bad`.
fn damaged(special: &str, bad: &[u8]) -> (Vec<u8>, u64) {
    let special = special
        .replace("TITLE", "S")
        .replace("TEXT", "")
        .replace("PRICE", "5")
        .replace("NAME", "Platea");
    let text = format!(
        "<?xml version=\"1.0\"?><planList><output>\n{special}\n\
         <base_plan base_plan_id=\"2\" sell_mode=\"online\" title=\"Control\">\
         <plan plan_id=\"20\" plan_start_date=\"2021-06-30T21:00:00\"><zone zone_id=\"1\" price=\"5\"/></plan>\
         </base_plan></output></planList>"
    );
    let at = text.find('@').expect("a place for the bad bytes");
    let mut bytes = text.into_bytes();
    bytes.splice(at..at + 1, bad.iter().copied());
    (bytes, at as u64)
}

const SPECIAL_PLAN: &str = r#"<base_plan base_plan_id="1" sell_mode="online" title="TITLE"><plan plan_id="10" plan_start_date="2021-06-30T21:00:00">TEXT<zone zone_id="1" price="PRICE" name="NAME"/></plan></base_plan>"#;

fn read_all(bytes: &[u8], capacity: usize) -> Result<Vec<FeedItem>, ParseError> {
    parse_from(BufReader::with_capacity(capacity, bytes))
}

#[test]
fn undecodable_bytes_in_an_item_cost_that_item_only() {
    let cases = [
        ("title", SPECIAL_PLAN.replace("TITLE", "Caf@ Teatro")),
        ("price", SPECIAL_PLAN.replace("PRICE", "1@")),
        (
            "an attribute planbox does not read",
            SPECIAL_PLAN.replace("NAME", "Pl@tea"),
        ),
        ("text", SPECIAL_PLAN.replace("TEXT", "some @ text")),
        ("a comment", SPECIAL_PLAN.replace("TEXT", "<!-- @ -->")),
        ("CDATA", SPECIAL_PLAN.replace("TEXT", "<![CDATA[ @ ]]>")),
        (
            "a nested element",
            SPECIAL_PLAN.replace("TEXT", "<info note=\"@\">x</info>"),
        ),
        (
            "the plan id",
            SPECIAL_PLAN.replace("plan_id=\"10\"", "plan_id=\"1@\""),
        ),
        (
            "the base plan id",
            SPECIAL_PLAN.replace("base_plan_id=\"1\"", "base_plan_id=\"1@\""),
        ),
    ];
    // A Latin-1 byte, a lone continuation byte, a truncated sequence, an
    // overlong form, a surrogate, bytes never used: one or several in a row.
    let bads: [&[u8]; 6] = [
        b"\xE9",
        b"\x80",
        b"\xE2\x82",
        b"\xC0\xAF",
        b"\xED\xA0\x80",
        b"\xFF\xFE\xE9",
    ];
    for (place, special) in &cases {
        for bad in bads {
            let (bytes, _) = damaged(special, bad);
            for capacity in [1, 2, 5, 4096] {
                let items = read_all(&bytes, capacity)
                    .unwrap_or_else(|e| panic!("{place} {bad:?} {capacity}: {e}"));
                let plan = only_plan(&items);
                assert_eq!(plan.title, "Control");
                let found = skips(&items);
                assert_eq!(found.len(), 1, "{place}: {items:#?}");
                assert_eq!(found[0].reason, SkipReason::UndecodableText, "{place}");
                assert!(
                    found[0].detail.contains("do not decode as UTF-8"),
                    "{}",
                    found[0]
                );
                assert!(!format!("{items:?}").contains('\u{1A}'), "{items:?}");
            }
        }
    }
    // The skip names the value and says where.
    let (bytes, at) = damaged(&SPECIAL_PLAN.replace("TITLE", "Caf@"), b"\xE9");
    let items = read_all(&bytes, 4096).unwrap();
    let skip = skips(&items)[0];
    assert_eq!(
        (skip.base_plan_id.as_str(), skip.plan_id.as_str()),
        ("1", "10")
    );
    assert!(
        skip.detail.contains("title") && skip.detail.contains(&format!("byte {at}")),
        "{skip}"
    );
    let (bytes, _) = damaged(
        &SPECIAL_PLAN.replace("plan_id=\"10\"", "plan_id=\"1@\""),
        b"\xE9",
    );
    let skip = skips(&read_all(&bytes, 7).unwrap())[0].clone();
    assert_eq!(skip.plan_id, "1\u{FFFD}");
    // A plan already skipped for another reason is skipped once.
    let invalid = SPECIAL_PLAN
        .replace("2021-06-30T21", "2021-06-31T21")
        .replace("TEXT", "@");
    let items = read_all(&damaged(&invalid, b"\xE9").0, 3).unwrap();
    assert_eq!(skips(&items).len(), 1);
    assert_eq!(skips(&items)[0].reason, SkipReason::InvalidStart);
}

#[test]
fn undecodable_bytes_in_markup_or_outside_any_item_reject_the_document() {
    let cases = [
        ("an element name", SPECIAL_PLAN.replace("<zone", "<zo@ne")),
        ("an end tag", SPECIAL_PLAN.replace("</plan>", "</pl@an>")),
        ("an attribute name", SPECIAL_PLAN.replace("name=", "na@me=")),
        (
            "between attributes",
            SPECIAL_PLAN.replace(" name=", "@name="),
        ),
        ("between items", format!("{SPECIAL_PLAN} @ ")),
        (
            "the base plan's text",
            SPECIAL_PLAN.replace("<plan ", "@<plan "),
        ),
        (
            "an element outside items",
            format!("<meta note=\"@\"/>{SPECIAL_PLAN}"),
        ),
        (
            "a comment outside items",
            format!("<!-- @ -->{SPECIAL_PLAN}"),
        ),
        (
            "a processing instruction",
            SPECIAL_PLAN.replace("TEXT", "<?pi @?>"),
        ),
    ];
    for (place, special) in &cases {
        let (bytes, at) = damaged(special, b"\xE9");
        for capacity in [1, 2, 5, 4096] {
            match read_all(&bytes, capacity) {
                Err(e @ ParseError::Undecodable { .. }) => {
                    let message = e.to_string();
                    assert!(
                        message.contains("UTF-8") && message.contains(&format!("offset {at}")),
                        "{place}: {message}"
                    );
                }
                other => panic!("{place}, capacity {capacity}: {other:?}"),
            }
        }
    }
    for (xml, at) in [
        (&b"<planList/>\xE2\x82"[..], 11),
        (b"<planList><base\xFF_plan/></planList>", 15),
        (b"<planList a=\"\xFF\"/>", 13),
        (
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\xFF<planList/>",
            38,
        ),
        (b"<!DOCTYPE planList [<!ENTITY e \"\xFF\">]><planList/>", 32),
        (b"<planList><!\xFF", 12),
    ] {
        match parse_from(xml) {
            Err(ParseError::Undecodable { position, .. }) => assert_eq!(position, at, "{xml:?}"),
            other => panic!("{xml:?}: {other:?}"),
        }
    }
}

#[test]
fn thousands_of_undecodable_bytes_in_one_item_still_cost_only_that_item() {
    // More places than are kept apart (they are merged into coarser ones).
    let text = "x@".repeat(10_000);
    let special = SPECIAL_PLAN.replace("TEXT", &text);
    let text = special.replace('@', "\u{1}");
    let mut bytes = damaged(&text.replacen('\u{1}', "@", 1), b"\xFF").0;
    for b in bytes.iter_mut().filter(|b| **b == 1) {
        *b = 0xFF;
    }
    for capacity in [7, 4096] {
        let items = read_all(&bytes, capacity).unwrap();
        assert_eq!(only_plan(&items).title, "Control");
        assert_eq!(skips(&items)[0].reason, SkipReason::UndecodableText);
    }
    // Spread over the values of one tag, merged places cover its markup
    // too: the document is rejected rather than a value read.
    let attributes: String = (0..5000).map(|i| format!(" a{i}=\"@\"")).collect();
    let special = SPECIAL_PLAN.replace("TEXT", &format!("<info{attributes}/>"));
    let text = special.replace('@', "\u{1}");
    let mut bytes = damaged(&text.replacen('\u{1}', "@", 1), b"\xFF").0;
    for b in bytes.iter_mut().filter(|b| **b == 1) {
        *b = 0xFF;
    }
    for capacity in [7, 4096] {
        assert!(matches!(
            read_all(&bytes, capacity),
            Err(ParseError::Undecodable { .. })
        ));
    }
}

#[test]
fn undecodable_bytes_in_a_transcoded_item_cost_that_item_only() {
    // windows-1253 has no character for 0xAA; UTF-16 has no lone surrogate.
    let special = SPECIAL_PLAN.replace("TITLE", "Caf@");
    let (latin, at) = damaged(&special, b"\xAA");
    let greek = [
        &b"<?xml version=\"1.0\" encoding=\"windows-1253\"?>"[..],
        &latin[21..],
    ]
    .concat();
    let mut utf16 = vec![0xFF, 0xFE];
    let text = String::from_utf8_lossy(&latin).replace('\u{FFFD}', "@");
    let utf16_at = 2 + 2 * text.find('@').unwrap() as u64;
    for unit in text.encode_utf16() {
        let unit = if unit == u16::from(b'@') {
            0xD800
        } else {
            unit
        };
        utf16.extend(unit.to_le_bytes());
    }
    for (bytes, encoding, position) in [
        (greek, "windows-1253", at + 24),
        (utf16, "UTF-16LE", utf16_at),
    ] {
        for capacity in [1, 3, 4096] {
            let items = read_all(&bytes, capacity).unwrap_or_else(|e| panic!("{encoding}: {e}"));
            assert_eq!(only_plan(&items).title, "Control");
            let skip = skips(&items)[0];
            assert_eq!(skip.reason, SkipReason::UndecodableText);
            assert!(
                skip.detail.contains(encoding) && skip.detail.contains(&format!("byte {position}")),
                "{skip}"
            );
        }
    }
}

#[test]
fn a_large_tag_of_many_attributes_is_read_and_a_late_duplicate_found() {
    let attributes: String = (0..100_000).map(|i| format!(" a{i}=\"\"")).collect();
    let xml = feed(&format!(
        r#"<plan {PLAN_ATTRS}><zone zone_id="1" price="5"{attributes}/></plan>"#
    ));
    assert!(xml.len() < MAX_EVENT_BYTES);
    assert_eq!(only_plan(&parse_ok(&xml)).prices.min, Some(price("5")));
    let duplicated = xml.replacen(" a99999=", " a5=", 1);
    let e = parse(&duplicated).unwrap_err();
    assert!(e.to_string().contains("appears twice"), "{e}");
}

#[test]
fn attribute_white_space_is_normalized_and_title_may_be_missing() {
    let xml = "<planList><base_plan base_plan_id=\"1\" sell_mode=\"online\">\
               <plan plan_id=\"2\" plan_start_date=\"2021-06-30T21:00:00\"/></base_plan>\
               <base_plan base_plan_id=\"3\" title=\"two\nlines\"><plan plan_id=\"4\" plan_start_date=\"2021-06-30T21:00:00\"/></base_plan></planList>";
    let items = parse_ok(xml);
    let found = plans(&items);
    assert_eq!(found[0].title, "");
    assert_eq!(found[1].title, "two lines");
}

#[test]
fn online_means_exactly_sell_mode_online() {
    for (mode, online) in [
        ("online", true),
        ("offline", false),
        ("Online", false),
        (" online", false),
        ("", false),
    ] {
        let xml = format!(
            r#"<planList><base_plan base_plan_id="1" sell_mode="{mode}"><plan {PLAN_ATTRS}/></base_plan></planList>"#
        );
        assert_eq!(only_plan(&parse_ok(&xml)).online, online, "{mode:?}");
    }
    let without = format!(
        r#"<planList><base_plan base_plan_id="1"><plan {PLAN_ATTRS}/></base_plan></planList>"#
    );
    assert!(!only_plan(&parse_ok(&without)).online);
}

#[test]
fn missing_end_is_fine_and_empty_end_counts_as_missing() {
    for end in ["", r#" plan_end_date="""#, r#" plan_end_date=" ""#] {
        let items = parse_ok(&feed(&format!(r#"<plan {PLAN_ATTRS}{end}/>"#)));
        let plan = only_plan(&items);
        assert_eq!(plan.end, None);
        assert_eq!(plan.start, dt("2021-06-30T21:00:00"));
    }
}

#[test]
fn end_equal_to_start_is_fine() {
    let items = parse_ok(&feed(
        r#"<plan plan_id="7" plan_start_date="2021-06-30T21:00:00" plan_end_date="2021-06-30T21:00:00"/>"#,
    ));
    assert_eq!(only_plan(&items).end, Some(dt("2021-06-30T21:00:00")));
}

fn single_skip(body: &str) -> Skip {
    let items = parse_ok(&feed(body));
    assert_eq!(items.len(), 1, "{items:#?}");
    match &items[0] {
        FeedItem::Skipped(skip) => skip.clone(),
        other => panic!("expected a skip, got {other:?}"),
    }
}

#[test]
fn end_before_start_is_skipped() {
    let skip = single_skip(
        r#"<plan plan_id="7" plan_start_date="2021-06-30T21:00:00" plan_end_date="2021-06-30T20:59:59"><zone zone_id="1" price="bad"/></plan>"#,
    );
    assert_eq!(skip.reason, SkipReason::EndBeforeStart);
    assert_eq!(
        (skip.base_plan_id.as_str(), skip.plan_id.as_str()),
        ("1", "7")
    );
}

#[test]
fn unusable_items_are_skipped_with_their_reason() {
    let cases = [
        (
            r#"<plan plan_start_date="2021-06-30T21:00:00"/>"#,
            SkipReason::MissingId,
        ),
        (
            r#"<plan plan_id=" " plan_start_date="2021-06-30T21:00:00"/>"#,
            SkipReason::MissingId,
        ),
        (r#"<plan plan_id="7"/>"#, SkipReason::MissingStart),
        (
            r#"<plan plan_id="7" plan_start_date=""/>"#,
            SkipReason::MissingStart,
        ),
        (
            r#"<plan plan_id="7" plan_start_date="2021-09-31T20:00:00"/>"#,
            SkipReason::InvalidStart,
        ),
        (
            r#"<plan plan_id="7" plan_start_date="soon"/>"#,
            SkipReason::InvalidStart,
        ),
        (
            r#"<plan plan_id="7" plan_start_date="2021-06-30T21:00:00" plan_end_date="2021-02-30T00:00:00"/>"#,
            SkipReason::InvalidEnd,
        ),
    ];
    for (body, reason) in cases {
        let skip = single_skip(body);
        assert_eq!(skip.reason, reason, "{body}");
        assert!(!skip.detail.is_empty());
        assert!(!skip.to_string().contains("Skip {"), "{skip}");
    }
}

#[test]
fn base_plan_without_id_skips_each_of_its_plans() {
    let xml = r#"<planList><base_plan sell_mode="online" title="x"><plan plan_id="1" plan_start_date="2021-06-30T21:00:00"/><plan plan_id="2" plan_start_date="2021-06-30T21:00:00"/></base_plan>
        <base_plan base_plan_id="" sell_mode="online"><plan plan_id="3" plan_start_date="2021-06-30T21:00:00"/></base_plan></planList>"#;
    let items = parse_ok(xml);
    let found = skips(&items);
    assert_eq!(found.len(), 3, "{items:#?}");
    assert!(found.iter().all(|s| s.reason == SkipReason::MissingId));
    assert_eq!(found[1].plan_id, "2");
    assert_eq!(found[1].base_plan_id, "");
}

// ----- structure ---------------------------------------------------------

#[test]
fn output_wrapper_is_optional_and_zones_may_have_content() {
    let with = parse_ok(RESPONSES[0]);
    let without = RESPONSES[0]
        .replace("<output>", "")
        .replace("</output>", "")
        .replace(
            r#"numbered="true" />"#,
            r#"numbered="true"> <!-- c --> </zone>"#,
        );
    assert_eq!(parse_ok(&without), with);
}

#[test]
fn unknown_elements_and_attributes_are_ignored_at_any_depth() {
    let noise = r#"<extra a="1"><plan plan_id="99" plan_start_date="2021-01-01T00:00:00"/><zone zone_id="9" price="1"/><base_plan base_plan_id="9"><plan plan_id="98" plan_start_date="2021-01-01T00:00:00"/></base_plan></extra>"#;
    let other_dialect = r#"<base_event base_event_id="5" sell_mode="online"><event event_id="5" event_start_date="2021-01-01T00:00:00"/></base_event><event event_id="6" event_start_date="2021-01-01T00:00:00"/>"#;
    let clean = parse_ok(RESPONSES[0]);
    let noisy = RESPONSES[0]
        .replace("<output>", &format!("{noise}<output unknown=\"x\">{noise}{other_dialect}"))
        .replace("</output>", &format!("{other_dialect}</output>{noise}"))
        .replace("title=\"Los Morancos\">", &format!("title=\"Los Morancos\" color=\"red\">{noise}{other_dialect}"))
        .replace("sold_out=\"false\">", &format!("sold_out=\"false\" x:y=\"z\">{noise}<![CDATA[<zone price=\"1\"/>]]>text &amp; more<?pi data?>"))
        .replace("numbered=\"true\" />", &format!("numbered=\"true\">{noise}</zone>"));
    assert_ne!(noisy, RESPONSES[0]);
    assert_eq!(parse_ok(&noisy), clean);
}

#[test]
fn elements_of_the_other_dialect_are_ignored() {
    // An eventList with plan-dialect content has no items at all.
    let swapped = RESPONSES[0]
        .replace("<planList", "<eventList")
        .replace("</planList>", "</eventList>");
    assert_eq!(parse_ok(&swapped), Vec::new());
}

#[test]
fn an_empty_root_is_a_complete_feed_without_items() {
    let mut feed = FeedReader::new(&b"<?xml version=\"1.0\"?>\n<eventList/>\n<!-- bye -->\n"[..]);
    assert!(feed.next_item().unwrap().is_none());
    assert_eq!(feed.dialect(), Some(Dialect::Events));
}

#[test]
fn a_byte_order_mark_is_accepted_and_counted_in_positions() {
    let mut xml = UTF8_BOM.to_vec();
    xml.extend_from_slice(RESPONSES[0].as_bytes());
    let mut feed = FeedReader::new(BufReader::with_capacity(2, &xml[..]));
    let mut n = 0;
    while feed.next_item().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 5);
    assert_eq!(feed.position(), xml.len() as u64);

    let broken = [UTF8_BOM, b"<planList></plan>"].concat();
    match parse_from(&broken[..]) {
        Err(ParseError::Xml { position, .. }) => assert_eq!(position, 13),
        other => panic!("expected an XML error, got {other:?}"),
    }
}

// ----- rejected documents ---------------------------------------------------

fn assert_rejected(xml: &[u8]) -> ParseError {
    let mut feed = FeedReader::new(xml);
    loop {
        match feed.next_item() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("accepted: {}", String::from_utf8_lossy(xml)),
            Err(e) => {
                // Errors are sticky: the document never ends cleanly.
                assert!(feed.next_item().is_err());
                let message = e.to_string();
                assert!(
                    !message.is_empty() && !message.contains("Error {"),
                    "{message}"
                );
                return e;
            }
        }
    }
}

#[test]
fn every_truncation_of_a_fixture_is_an_error() {
    for xml in [RESPONSES[0], EVENT_RESPONSES[0]] {
        let bytes = xml.trim_end().as_bytes();
        for cut in 0..bytes.len() {
            assert_rejected(&bytes[..cut]);
        }
        // Only the whole document (plus white space) is complete.
        assert_eq!(parse_from(bytes).unwrap().len(), 5);
    }
}

#[test]
fn empty_or_rootless_input_is_truncated() {
    for xml in [
        "",
        "   \n",
        "<?xml version=\"1.0\"?>",
        "<!-- only a comment -->",
    ] {
        assert!(
            matches!(
                assert_rejected(xml.as_bytes()),
                ParseError::Truncated { .. }
            ),
            "{xml:?}"
        );
    }
    assert!(matches!(
        assert_rejected(b"<planList><output>"),
        ParseError::Truncated { position: 18 }
    ));
    assert!(matches!(
        assert_rejected(b"<planList><output><base_plan base_plan_id=\"1"),
        ParseError::Truncated { position: 18 }
    ));
}

#[test]
fn garbage_is_an_error() {
    let inputs: [&[u8]; 7] = [
        b"garbage",
        b"\x00\x01\xFF\xFE\x89PNG",
        b"{\"json\": true}",
        b"<planList><output></base_plan></output></planList>",
        b"<planList>&bogus;</plan>",
        b"<planList><<<</planList>",
        b"<planList><base_plan title=\"a \0 b\"/></planList>",
    ];
    for xml in inputs {
        assert_rejected(xml);
    }
}

#[test]
fn a_wrong_root_is_not_a_feed() {
    match assert_rejected(b"<?xml version=\"1.0\"?><html><planList/></html>") {
        ParseError::NotAFeed { root } => assert_eq!(root, "html"),
        other => panic!("{other:?}"),
    }
    let e = assert_rejected(b"<ns:planList></ns:planList>");
    assert!(e.to_string().contains("<ns:planList>"), "{e}");
}

#[test]
fn mismatched_end_tags_are_errors_at_the_end_tag() {
    let xml = b"<planList><output></planList>";
    match assert_rejected(xml) {
        ParseError::Xml { position, message } => {
            assert_eq!(position, 18);
            assert!(
                message.contains("</planList>") && message.contains("<output>"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn content_after_the_root_is_an_error_but_white_space_and_comments_are_not() {
    assert_eq!(
        parse("<planList/>  <!-- x --> <?pi y?>\n").unwrap(),
        Vec::new()
    );
    for tail in [
        "<planList/>",
        "text",
        "<x/>",
        "&amp;",
        "<![CDATA[x]]>",
        "<!DOCTYPE x>",
    ] {
        let xml = format!("<planList></planList>{tail}");
        assert!(
            matches!(assert_rejected(xml.as_bytes()), ParseError::Xml { .. }),
            "{tail}"
        );
    }
}

#[test]
fn malformed_attributes_are_errors() {
    for tag in [
        r#"<base_plan base_plan_id="1" base_plan_id="2"/>"#,
        r#"<base_plan base_plan_id=1/>"#,
        r#"<base_plan base_plan_id/>"#,
        r#"<base_plan title="a<b"/>"#,
        r#"<unknown 1a="x"/>"#,
        r#"<1bad/>"#,
    ] {
        let xml = format!("<planList>{tag}</planList>");
        assert!(
            matches!(assert_rejected(xml.as_bytes()), ParseError::Xml { .. }),
            "{tag}"
        );
    }
}

#[test]
fn a_2_mib_attribute_is_too_large() {
    let big = "A".repeat(2 << 20);
    let xml = format!(
        r#"<planList><output><base_plan base_plan_id="1" title="{big}"></base_plan></output></planList>"#
    );
    match assert_rejected(xml.as_bytes()) {
        ParseError::TooLarge { position, limit } => {
            assert_eq!(position, 18);
            assert_eq!(limit, MAX_EVENT_BYTES);
        }
        other => panic!("{other:?}"),
    }
    // A long text run too.
    let xml = format!("<planList>{big}</planList>");
    assert!(matches!(
        assert_rejected(xml.as_bytes()),
        ParseError::TooLarge { position: 10, .. }
    ));
    // Just under the limit is fine.
    let fits = "A".repeat(MAX_EVENT_BYTES - 100);
    let xml = format!(r#"<planList><base_plan title="{fits}"/></planList>"#);
    assert!(parse(&xml).is_ok());
}

#[test]
fn an_endless_attribute_stops_at_the_limit_with_bounded_memory() {
    let endless = b"<planList><base_plan title=\""
        .chain(io::repeat(b'>'))
        .take(u64::MAX);
    let mut feed = FeedReader::new(BufReader::new(endless));
    assert!(matches!(
        feed.next_item(),
        Err(ParseError::TooLarge { position: 10, .. })
    ));
    assert!(
        feed.buf.capacity() <= 2 * MAX_EVENT_BYTES,
        "{}",
        feed.buf.capacity()
    );
    assert!(feed.position() <= (MAX_EVENT_BYTES + 10) as u64);
}

#[test]
fn deep_nesting_is_an_error_not_a_memory_sink() {
    let xml = format!("<planList>{}", "<a>".repeat(100_000));
    let e = assert_rejected(xml.as_bytes());
    assert!(matches!(e, ParseError::Xml { .. }), "{e}");
    assert!(e.to_string().contains("nested"), "{e}");
}

#[derive(Debug)]
struct LimitHit;
impl fmt::Display for LimitHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("feed larger than the configured limit")
    }
}
impl std::error::Error for LimitHit {}

/// Hands out `data`, then fails like a size-limit wrapper would.
struct FailingReader {
    data: &'static [u8],
}
impl Read for FailingReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.data.is_empty() {
            return Err(io::Error::other(LimitHit));
        }
        let n = out.len().min(self.data.len()).min(100);
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn reader_errors_are_passed_through_unchanged() {
    let reader = BufReader::new(FailingReader {
        data: &RESPONSES[0].as_bytes()[..1000],
    });
    let mut feed = FeedReader::new(reader);
    let e = loop {
        match feed.next_item() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("a failing reader must not end cleanly"),
            Err(e) => break e,
        }
    };
    let ParseError::Io(io) = &e else {
        panic!("expected Io, got {e:?}");
    };
    assert!(
        io.get_ref().is_some_and(|inner| inner.is::<LimitHit>()),
        "{io:?}"
    );
    assert!(
        e.to_string()
            .contains("feed larger than the configured limit"),
        "{e}"
    );
    assert!(matches!(feed.next_item(), Err(ParseError::Io(_))));
}

#[test]
fn error_messages_read_as_sentences() {
    let cases: [&[u8]; 5] = [
        b"",
        b"<html/>",
        b"<planList><a></b></planList>",
        b"<planList><base_plan title=\"a<b\"/></planList>",
        b"<planList><base_plan a=\"1\" a=\"2\"/></planList>",
    ];
    for xml in cases {
        let message = assert_rejected(xml).to_string();
        assert!(message.starts_with("the "), "{message}");
        for debug_marker in ["{", "Some(", "Err(", "Range"] {
            assert!(!message.contains(debug_marker), "{message}");
        }
    }
}

#[test]
fn duplicate_attributes_are_reported_where_quick_xml_reports_them() {
    for (xml, dup) in [
        (&b"<planList><base_plan a=\"1\" a=\"2\"/></planList>"[..], "a=\"2"),
        (b"<planList><output><base_plan base_plan_id=\"1\" title=\"t\" sell_mode=\"online\"><plan plan_id=\"1\" plan_start_date=\"2021-01-01T00:00:00\"><zone zone_id=\"1\" price=\"1\" x=\"\" y=\"\" price=\"2\"/></plan></base_plan></output></planList>", "price=\"2"),
        (b"<planList><z a1=\"\" a2=\"\" a3=\"\" a4=\"\" a5=\"\" a6=\"\" a7=\"\" a8=\"\" a9=\"\" a10=\"\" a11=\"\" a12=\"\" a13=\"\" a14=\"\" a15=\"\" a16=\"\" a17=\"\" a3=\"\"/></planList>", "a3=\"\"/"),
    ] {
        let text = std::str::from_utf8(xml).unwrap();
        let expected = text.rfind(dup).unwrap() as u64;
        match assert_rejected(xml) {
            ParseError::Xml { position, message } => {
                assert_eq!(position, expected, "{message}");
                assert!(message.contains("appears twice"), "{message}");
            }
            other => panic!("{other}"),
        }
    }
    // Distinct attributes, more than the inline list holds: fine.
    let many: String = (0..40).map(|i| format!(" a{i}=\"\"")).collect();
    let xml = format!("<planList><z{many}/></planList>");
    let mut feed = FeedReader::new(xml.as_bytes());
    assert!(feed.next_item().unwrap().is_none());
}

#[test]
fn after_the_end_the_reader_keeps_answering_none() {
    let mut feed = FeedReader::new(&b"<planList/>"[..]);
    assert!(feed.next_item().unwrap().is_none());
    assert!(feed.next_item().unwrap().is_none());
}

// ----- properties ------------------------------------------------------------

mod properties {
    use super::*;
    use chrono::NaiveDate;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::{select, Index};

    /// A date-time attribute as generated, and what it should mean.
    #[derive(Clone, Debug)]
    enum GenTime {
        Absent,
        Empty,
        /// Possibly impossible (day 31 of a 30-day month, 29 February).
        Moment(i32, u32, u32, u32, u32, u32),
        Garbage(&'static str),
    }

    enum Reading {
        Absent,
        Valid(LocalDateTime),
        Invalid,
    }

    impl GenTime {
        fn text(&self) -> Option<String> {
            match self {
                GenTime::Absent => None,
                GenTime::Empty => Some(String::new()),
                GenTime::Moment(y, mo, d, h, mi, s) => {
                    Some(format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}"))
                }
                GenTime::Garbage(g) => Some((*g).to_owned()),
            }
        }

        /// Computed from calendar arithmetic, not from the string parser.
        fn reading(&self) -> Reading {
            match self {
                GenTime::Absent | GenTime::Empty => Reading::Absent,
                GenTime::Garbage(_) => Reading::Invalid,
                GenTime::Moment(y, mo, d, h, mi, s) => {
                    match NaiveDate::from_ymd_opt(*y, *mo, *d)
                        .and_then(|date| date.and_hms_opt(*h, *mi, *s))
                    {
                        Some(t) => Reading::Valid(t),
                        None => Reading::Invalid,
                    }
                }
            }
        }
    }

    #[derive(Clone, Debug)]
    enum GenPrice {
        Absent,
        Valid(String),
        Bad(&'static str),
    }

    #[derive(Clone, Debug)]
    struct GenZone {
        id: String,
        price: GenPrice,
        noise: Vec<usize>,
    }

    #[derive(Clone, Debug)]
    struct GenPlan {
        id: Option<String>,
        start: GenTime,
        end: GenTime,
        zones: Vec<GenZone>,
        noise: Vec<usize>,
    }

    #[derive(Clone, Debug)]
    struct GenGroup {
        id: Option<String>,
        sell_mode: Option<&'static str>,
        title: Option<String>,
        plans: Vec<GenPlan>,
        noise: Vec<usize>,
    }

    #[derive(Clone, Debug)]
    struct GenFeed {
        dialect: Dialect,
        output: bool,
        single_quotes: bool,
        char_refs: bool,
        unknown_attributes: bool,
        groups: Vec<GenGroup>,
        noise: Vec<usize>,
    }

    fn time() -> impl Strategy<Value = GenTime> {
        let moment = (
            1i32..=9999,
            1u32..=12,
            1u32..=31,
            0u32..24,
            0u32..60,
            0u32..60,
        )
            .prop_map(|(y, mo, d, h, mi, s)| GenTime::Moment(y, mo, d, h, mi, s));
        let garbage = select(vec![
            "soon",
            "2021-06-30",
            "2021-13-01T00:00:00",
            "2021-06-30 21:00:00",
            "24:00",
        ])
        .prop_map(GenTime::Garbage);
        prop_oneof![
            8 => moment,
            1 => Just(GenTime::Absent),
            1 => Just(GenTime::Empty),
            1 => garbage,
        ]
    }

    fn id() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            10 => "[a-z0-9]{1,4}".prop_map(Some),
            1 => "[a-z0-9&<>\"'Ó ]{0,4}".prop_map(Some),
            1 => Just(None),
        ]
    }

    fn price_text() -> impl Strategy<Value = GenPrice> {
        let valid = ("0{0,2}", 0u64..100_000, proptest::option::of("[0-9]{1,4}")).prop_map(
            |(zeros, int, frac)| match frac {
                Some(frac) => GenPrice::Valid(format!("{zeros}{int}.{frac}")),
                None => GenPrice::Valid(format!("{zeros}{int}")),
            },
        );
        let bad = select(vec![
            "",
            "abc",
            "-5",
            "1,5",
            "1e3",
            "NaN",
            "1.",
            ".5",
            "12.0000000001",
        ])
        .prop_map(GenPrice::Bad);
        prop_oneof![6 => valid, 1 => bad, 1 => Just(GenPrice::Absent)]
    }

    fn noise() -> impl Strategy<Value = Vec<usize>> {
        vec(0usize..7, 0..2)
    }

    fn zone() -> impl Strategy<Value = GenZone> {
        ("[0-9]{1,2}", price_text(), noise()).prop_map(|(id, price, noise)| GenZone {
            id,
            price,
            noise,
        })
    }

    fn plan() -> impl Strategy<Value = GenPlan> {
        (id(), time(), time(), vec(zone(), 0..4), noise()).prop_map(
            |(id, start, end, zones, noise)| GenPlan {
                id,
                start,
                end,
                zones,
                noise,
            },
        )
    }

    fn group() -> impl Strategy<Value = GenGroup> {
        let sell_mode =
            proptest::option::of(select(vec!["online", "offline", "Online", "online "]));
        let title = proptest::option::of("[a-zA-Z0-9 &<>\"'ÓéЖ😀]{0,12}");
        (id(), sell_mode, title, vec(plan(), 0..4), noise()).prop_map(
            |(id, sell_mode, title, plans, noise)| GenGroup {
                id,
                sell_mode,
                title,
                plans,
                noise,
            },
        )
    }

    fn gen_feed() -> impl Strategy<Value = GenFeed> {
        let dialect = prop_oneof![Just(Dialect::Plans), Just(Dialect::Events)];
        (dialect, any::<[bool; 4]>(), vec(group(), 0..4), noise()).prop_map(
            |(dialect, flags, groups, noise)| GenFeed {
                dialect,
                output: flags[0],
                single_quotes: flags[1],
                char_refs: flags[2],
                unknown_attributes: flags[3],
                groups,
                noise,
            },
        )
    }

    impl GenFeed {
        fn attr(&self, out: &mut String, name: &str, value: Option<&str>) {
            let Some(value) = value else { return };
            let quote = if self.single_quotes { '\'' } else { '"' };
            out.push(' ');
            out.push_str(name);
            out.push('=');
            out.push(quote);
            for c in value.chars() {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '"' => out.push_str("&quot;"),
                    '\'' => out.push_str("&apos;"),
                    c if self.char_refs && !c.is_ascii() => {
                        out.push_str(&format!("&#{};", c as u32))
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
        }

        fn unknown_attributes(&self, out: &mut String) {
            if self.unknown_attributes {
                out.push_str(" sold_out=\"false\" xsi:extra=\"&amp;\"");
            }
        }

        /// Content the parser must ignore wherever it appears.
        fn noise(&self, out: &mut String, picks: &[usize]) {
            let own = self.dialect.vocabulary();
            let other = match self.dialect {
                Dialect::Plans => &EVENTS,
                Dialect::Events => &PLANS,
            };
            for pick in picks {
                let snippet = match pick {
                    0 => "<!-- note -- -->".replace("-- -->", "-->"),
                    1 => "<?pi some data?>".to_owned(),
                    2 => format!(
                        r#"<extra kind="x"><{} {}="99" {}="2021-01-01T00:00:00"/><zone zone_id="1" price="oops"/></extra>"#,
                        own.item, own.item_id, own.start
                    ),
                    3 => r#"<![CDATA[<plan plan_id="97"> & ]]>"#.to_owned(),
                    4 => " text &amp; more &#211; ".to_owned(),
                    5 => format!(
                        r#"<{g} {gid}="7" sell_mode="online"><{i} {iid}="1" {s}="2021-01-01T00:00:00"/></{g}>"#,
                        g = other.group,
                        gid = other.group_id,
                        i = other.item,
                        iid = other.item_id,
                        s = other.start
                    ),
                    _ => format!(
                        r#"<{i} {iid}="2" {s}="2021-01-01T00:00:00"><zone zone_id="1" price="bad"/></{i}>"#,
                        i = other.item,
                        iid = other.item_id,
                        s = other.start
                    ),
                };
                out.push_str(&snippet);
            }
        }

        /// The document, ending exactly with the root's end tag.
        fn render(&self) -> String {
            let words = self.dialect.vocabulary();
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
            out.push_str(&format!(
                "<{} xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" version=\"1.0\">\n",
                words.root
            ));
            if self.output {
                out.push_str("<output>");
            }
            self.noise(&mut out, &self.noise);
            for g in &self.groups {
                out.push_str(&format!("\n  <{}", words.group));
                self.attr(&mut out, words.group_id, g.id.as_deref());
                self.attr(&mut out, SELL_MODE, g.sell_mode);
                self.attr(&mut out, TITLE, g.title.as_deref());
                self.unknown_attributes(&mut out);
                out.push('>');
                self.noise(&mut out, &g.noise);
                for p in &g.plans {
                    out.push_str(&format!("\n    <{}", words.item));
                    self.attr(&mut out, words.start, p.start.text().as_deref());
                    self.attr(&mut out, words.end, p.end.text().as_deref());
                    self.attr(&mut out, words.item_id, p.id.as_deref());
                    self.unknown_attributes(&mut out);
                    if p.zones.is_empty() && p.noise.is_empty() {
                        out.push_str(" />");
                        continue;
                    }
                    out.push('>');
                    for z in &p.zones {
                        out.push_str("\n      <zone");
                        self.attr(&mut out, ZONE_ID, Some(&z.id));
                        let price = match &z.price {
                            GenPrice::Absent => None,
                            GenPrice::Valid(v) => Some(v.as_str()),
                            GenPrice::Bad(b) => Some(*b),
                        };
                        self.attr(&mut out, PRICE, price);
                        self.unknown_attributes(&mut out);
                        if z.noise.is_empty() {
                            out.push_str("/>");
                        } else {
                            out.push('>');
                            self.noise(&mut out, &z.noise);
                            out.push_str("</zone>");
                        }
                    }
                    self.noise(&mut out, &p.noise);
                    out.push_str(&format!("\n    </{}>", words.item));
                }
                out.push_str(&format!("\n  </{}>", words.group));
            }
            if self.output {
                out.push_str("\n</output>");
            }
            out.push_str(&format!("\n</{}>", words.root));
            out
        }

        /// What the parser must produce, details left empty.
        fn expected(&self) -> Vec<FeedItem> {
            let blank = |id: &Option<String>| id.as_deref().is_none_or(|s| s.trim().is_empty());
            let mut items = Vec::new();
            for g in &self.groups {
                for p in &g.plans {
                    let skip = |reason| {
                        FeedItem::Skipped(Skip {
                            reason,
                            base_plan_id: g.id.clone().unwrap_or_default(),
                            plan_id: p.id.clone().unwrap_or_default(),
                            detail: String::new(),
                        })
                    };
                    if blank(&g.id) || blank(&p.id) {
                        items.push(skip(SkipReason::MissingId));
                        continue;
                    }
                    let start = match p.start.reading() {
                        Reading::Absent => {
                            items.push(skip(SkipReason::MissingStart));
                            continue;
                        }
                        Reading::Invalid => {
                            items.push(skip(SkipReason::InvalidStart));
                            continue;
                        }
                        Reading::Valid(t) => t,
                    };
                    let end = match p.end.reading() {
                        Reading::Absent => None,
                        Reading::Invalid => {
                            items.push(skip(SkipReason::InvalidEnd));
                            continue;
                        }
                        Reading::Valid(t) if t < start => {
                            items.push(skip(SkipReason::EndBeforeStart));
                            continue;
                        }
                        Reading::Valid(t) => Some(t),
                    };
                    let mut prices = PriceRange::default();
                    for z in &p.zones {
                        match &z.price {
                            GenPrice::Valid(v) => prices.add(price(v)),
                            GenPrice::Absent | GenPrice::Bad(_) => {
                                items.push(skip(SkipReason::ZoneInvalidPrice))
                            }
                        }
                    }
                    items.push(FeedItem::Plan(FeedPlan {
                        base_plan_id: g.id.clone().unwrap_or_default(),
                        plan_id: p.id.clone().unwrap_or_default(),
                        title: g.title.clone().unwrap_or_default(),
                        online: g.sell_mode == Some("online"),
                        start,
                        end,
                        prices,
                    }));
                }
            }
            items
        }
    }

    fn without_details(items: Vec<FeedItem>) -> Vec<FeedItem> {
        items
            .into_iter()
            .map(|item| match item {
                FeedItem::Skipped(skip) => {
                    assert!(!skip.detail.is_empty());
                    FeedItem::Skipped(Skip {
                        detail: String::new(),
                        ..skip
                    })
                }
                plan => plan,
            })
            .collect()
    }

    /// Whatever the bytes: no panic, and a clean end only for something
    /// that looks like a complete feed.
    fn check_arbitrary(bytes: &[u8], capacity: usize) -> Result<(), TestCaseError> {
        let mut feed = FeedReader::new(BufReader::with_capacity(capacity, bytes));
        let mut steps = 0usize;
        let outcome = loop {
            steps += 1;
            prop_assert!(steps <= bytes.len() + 2, "more items than bytes");
            match feed.next_item() {
                Ok(Some(_)) => {}
                other => break other,
            }
        };
        prop_assert!(feed.position() <= bytes.len() as u64);
        if let Ok(None) = outcome {
            let text = String::from_utf8_lossy(bytes);
            prop_assert!(
                text.contains("<planList") || text.contains("<eventList"),
                "accepted without a feed root: {text:?}"
            );
            let content =
                bytes.len() - bytes.iter().rev().take_while(|b| is_xml_space(**b)).count();
            prop_assert!(
                content > 0 && bytes[content - 1] == b'>',
                "accepted without a final `>`: {text:?}"
            );
            // Without its last `>` an accepted document is incomplete.
            prop_assert!(
                parse_from(&bytes[..content - 1]).is_err(),
                "accepted both {text:?} and its cut"
            );
        }
        Ok(())
    }

    const TOKENS: &[&str] = &[
        "<planList>",
        "</planList>",
        "<eventList>",
        "</eventList>",
        "<planList/>",
        "<output>",
        "</output>",
        r#"<base_plan base_plan_id="1" sell_mode="online">"#,
        "</base_plan>",
        r#"<plan plan_id="2" plan_start_date="2021-06-30T21:00:00">"#,
        "</plan>",
        r#"<zone price="1.5"/>"#,
        r#"<zone price="x">"#,
        "</zone>",
        "<!--",
        "-->",
        "<?pi ?>",
        "<?xml version=\"1.0\"?>",
        "<!DOCTYPE planList>",
        "<![CDATA[",
        "]]>",
        "&amp;",
        "&",
        "<",
        ">",
        "/>",
        "\"",
        "'",
        "=",
        " ",
        "\n",
        "text",
    ];

    proptest! {
        #[test]
        fn generated_feeds_parse_exactly_as_the_model_says(
            feed in gen_feed(),
            capacity in prop_oneof![1usize..16, Just(8192)],
        ) {
            let xml = feed.render();
            let items = parse_from(BufReader::with_capacity(capacity, xml.as_bytes()))
                .map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
            prop_assert_eq!(without_details(items), feed.expected(), "{}", xml);
        }

        #[test]
        fn generated_feeds_cut_anywhere_are_rejected(feed in gen_feed(), cut in any::<Index>()) {
            let xml = feed.render();
            let cut = cut.index(xml.len());
            prop_assert!(parse_from(&xml.as_bytes()[..cut]).is_err(), "accepted a prefix of {} bytes:\n{}", cut, xml);
        }

        #[test]
        fn arbitrary_bytes_never_panic_or_end_cleanly(
            bytes in vec(any::<u8>(), 0..512),
            capacity in 1usize..64,
        ) {
            check_arbitrary(&bytes, capacity)?;
        }

        #[test]
        fn xml_token_soup_never_panics_or_ends_cleanly_unless_a_feed(
            tokens in vec(select(TOKENS), 0..40),
            capacity in 1usize..64,
        ) {
            check_arbitrary(tokens.concat().as_bytes(), capacity)?;
        }

        #[test]
        fn mutated_fixtures_never_panic(
            edits in vec((any::<Index>(), proptest::option::of(any::<u8>())), 1..4),
            which in 0usize..3,
        ) {
            let mut bytes = RESPONSES[which].as_bytes().to_vec();
            for (at, edit) in edits {
                let at = at.index(bytes.len());
                match edit {
                    Some(b) => bytes[at] = b,
                    None => {
                        bytes.remove(at);
                    }
                }
            }
            check_arbitrary(&bytes, 4096)?;
        }
    }
}
