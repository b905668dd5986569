//! Feeds written the way other people's software writes them: encodings,
//! byte order marks, DTD entities, HTML entities, lone `&`s, unresolvable
//! and hostile references. Fixtures: `tests/fixtures/real-xml/` (made by
//! its `make.py`), each in both dialects.

use std::io::BufReader;

use encoding_rs::{Encoding, ISO_8859_15};
use proptest::prelude::*;

use super::*;
use crate::model::RepairReason;

macro_rules! fixture {
    ($name:literal) => {
        [
            include_bytes!(concat!(
                "../../tests/fixtures/real-xml/",
                $name,
                ".plans.xml"
            ))
            .as_slice(),
            include_bytes!(concat!(
                "../../tests/fixtures/real-xml/",
                $name,
                ".events.xml"
            ))
            .as_slice(),
        ]
    };
}

struct Read {
    items: Vec<FeedItem>,
    repairs: Vec<(RepairReason, u64)>,
    encoding: (&'static str, EncodingSource),
    position: u64,
}

fn read_with(bytes: &[u8], charset: Option<&str>, capacity: usize) -> Result<Read, ParseError> {
    let mut feed = FeedReader::with_charset(BufReader::with_capacity(capacity, bytes), charset);
    let mut items = Vec::new();
    while let Some(item) = feed.next_item()? {
        items.push(item);
    }
    Ok(Read {
        items,
        repairs: feed.repairs().collect(),
        encoding: feed.encoding().expect("decided"),
        position: feed.position(),
    })
}

/// Reads `bytes` through several read sizes; all must agree.
fn read(bytes: &[u8], charset: Option<&str>) -> Read {
    let whole = read_with(bytes, charset, 64 * 1024).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(whole.position, bytes.len() as u64);
    for capacity in [1, 2, 3, 7] {
        let small = read_with(bytes, charset, capacity).unwrap();
        assert_eq!(small.items, whole.items, "capacity {capacity}");
        assert_eq!(small.repairs, whole.repairs, "capacity {capacity}");
    }
    whole
}

fn titles(items: &[FeedItem]) -> Vec<&str> {
    items
        .iter()
        .filter_map(|i| match i {
            FeedItem::Plan(p) => Some(p.title.as_str()),
            FeedItem::Skipped(_) => None,
        })
        .collect()
}

fn the_skip(items: &[FeedItem]) -> &Skip {
    let skips: Vec<&Skip> = items
        .iter()
        .filter_map(|i| match i {
            FeedItem::Skipped(s) => Some(s),
            FeedItem::Plan(_) => None,
        })
        .collect();
    assert_eq!(skips.len(), 1, "{items:#?}");
    skips[0]
}

#[test]
fn latin1_and_windows_1252_documents_are_read_exactly() {
    for bytes in fixture!("latin1-declared") {
        let r = read(bytes, None);
        assert_eq!(titles(&r.items), ["Ópera para el Niño", "Control"]);
        assert_eq!(r.encoding, ("windows-1252", EncodingSource::Declaration));
    }
    for bytes in fixture!("cp1252-declared") {
        let r = read(bytes, None);
        assert_eq!(titles(&r.items), ["Gala – “Año Nuevo” 25 €", "Control"]);
    }
}

#[test]
fn the_content_type_charset_reads_an_undeclared_latin1_document() {
    for bytes in fixture!("latin1-undeclared") {
        let r = read(bytes, Some("ISO-8859-1"));
        assert_eq!(titles(&r.items), ["Ópera para el Niño", "Control"]);
        assert_eq!(r.encoding.1, EncodingSource::ContentType);
        assert!(r.repairs.is_empty());
        // Without it the bytes are not UTF-8: the plan whose title holds
        // them is skipped, naming the encoding and the offset of the
        // first byte that is not; the rest of the feed is read.
        let first = bytes.iter().position(|b| *b >= 0x80).unwrap() as u64;
        let r = read(bytes, None);
        assert_eq!(titles(&r.items), ["Control"]);
        let skip = the_skip(&r.items);
        assert_eq!(skip.reason, SkipReason::UndecodableText);
        assert!(
            skip.detail.contains("UTF-8") && skip.detail.contains(&format!("byte {first}")),
            "{skip}"
        );
        // The same under a charset that names UTF-8, as the document does.
        assert_eq!(read(bytes, Some("utf-8")).items, r.items);
    }
}

#[test]
fn a_content_type_charset_the_body_contradicts_gives_way_to_its_declaration() {
    // The Latin-1 a document declares, served as UTF-8 (a server default).
    for bytes in fixture!("latin1-declared") {
        let r = read(bytes, Some("utf-8"));
        assert_eq!(titles(&r.items), ["Ópera para el Niño", "Control"]);
        assert_eq!(r.encoding, ("windows-1252", EncodingSource::Declaration));
        assert_eq!(r.repairs, [(RepairReason::CharsetMismatch, 1)]);
    }
    // The other way round: UTF-8 declared, served as Latin-1.
    for bytes in fixture!("dtd-entity") {
        for charset in ["ISO-8859-1", "windows-1252", "ISO-8859-15"] {
            let r = read(bytes, Some(charset));
            assert_eq!(
                titles(&r.items),
                ["Ópera\u{a0}Real", "Control"],
                "{charset}"
            );
            assert_eq!(r.encoding, ("UTF-8", EncodingSource::Declaration));
            assert_eq!(r.repairs, [(RepairReason::CharsetMismatch, 1)]);
        }
    }
    // UTF-16 with a byte order mark under an 8-bit charset, and an 8-bit
    // document under a UTF-16 charset.
    for bytes in fixture!("utf16le-bom")
        .into_iter()
        .chain(fixture!("utf16be-bom"))
    {
        for charset in ["utf-8", "iso-8859-1"] {
            let r = read(bytes, Some(charset));
            assert_eq!(titles(&r.items), ["Ópera “Año” 😀", "Control"]);
            assert_eq!(r.repairs, [(RepairReason::CharsetMismatch, 1)]);
        }
        assert!(read(bytes, Some("utf-16")).repairs.is_empty());
    }
    for bytes in fixture!("latin1-declared") {
        let r = read(bytes, Some("utf-16"));
        assert_eq!(titles(&r.items), ["Ópera para el Niño", "Control"]);
        assert_eq!(r.repairs, [(RepairReason::CharsetMismatch, 1)]);
    }
    // UTF-16 without a BOM, recognised by its first character.
    let text = String::from_utf8(fixture!("dtd-entity")[0].to_vec())
        .unwrap()
        .replace("encoding=\"UTF-8\"", "encoding=\"UTF-16\"");
    let utf16: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let r = read(&utf16, Some("utf-8"));
    assert_eq!(titles(&r.items), ["Ópera\u{a0}Real", "Control"]);
    assert_eq!(r.repairs, [(RepairReason::CharsetMismatch, 1)]);
    // A label nobody knows is no reason to stop.
    for bytes in fixture!("latin1-declared") {
        let r = read(bytes, Some("x-klingon"));
        assert_eq!(titles(&r.items), ["Ópera para el Niño", "Control"]);
        assert_eq!(r.repairs, [(RepairReason::CharsetMismatch, 1)]);
    }
}

#[test]
fn a_charset_the_body_agrees_with_is_kept_and_nothing_is_counted() {
    // Latin-1 bytes declared UTF-8 but served as Latin-1: the server is
    // right and the declaration wrong; the first byte beyond ASCII says so.
    let declared = String::from_utf8(fixture!("latin1-undeclared")[0].to_vec())
        .err()
        .map(|e| e.into_bytes())
        .unwrap();
    let bytes = [
        &b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"[..],
        &declared,
    ]
    .concat();
    let r = read(&bytes, Some("ISO-8859-1"));
    assert_eq!(titles(&r.items), ["Ópera para el Niño", "Control"]);
    assert_eq!(r.encoding, ("windows-1252", EncodingSource::ContentType));
    assert!(r.repairs.is_empty());
    // All ASCII: both read the same, nothing to count.
    for bytes in fixture!("bare-ampersand") {
        let latin = String::from_utf8(bytes.to_vec())
            .unwrap()
            .replace("UTF-8", "ISO-8859-1");
        let r = read(latin.as_bytes(), Some("utf-8"));
        assert_eq!(r.repairs, [(RepairReason::BareAmpersand, 1)]);
    }
    // A UTF-8 feed with one bad byte after real UTF-8, served as Latin-1
    // while declaring UTF-8: UTF-8, and the bad byte costs its plan.
    let text = String::from_utf8(fixture!("dtd-entity")[0].to_vec()).unwrap();
    let bytes = text
        .replacen("Control", "Contr\u{0}l", 1)
        .replace('\u{0}', "\u{1}");
    let mut bytes = bytes.into_bytes();
    let at = bytes.iter().position(|b| *b == 1).unwrap();
    bytes[at] = 0xF3;
    let r = read(&bytes, Some("iso-8859-1"));
    assert_eq!(titles(&r.items), ["Ópera\u{a0}Real"]);
    assert_eq!(the_skip(&r.items).reason, SkipReason::UndecodableText);
    assert_eq!(r.repairs, [(RepairReason::CharsetMismatch, 1)]);
}

#[test]
fn utf16_with_a_byte_order_mark_is_read_in_both_byte_orders() {
    for (bytes, name) in fixture!("utf16le-bom")
        .into_iter()
        .map(|b| (b, "UTF-16LE"))
        .chain(fixture!("utf16be-bom").into_iter().map(|b| (b, "UTF-16BE")))
    {
        let r = read(bytes, None);
        assert_eq!(titles(&r.items), ["Ópera “Año” 😀", "Control"]);
        assert_eq!(r.encoding, (name, EncodingSource::ByteOrderMark));
        // A BOM wins over a charset that contradicts it.
        assert_eq!(read(bytes, Some("iso-8859-1")).items, r.items);
    }
}

#[test]
fn internal_dtd_entities_are_resolved_without_repairs() {
    for bytes in fixture!("dtd-entity") {
        let r = read(bytes, None);
        assert_eq!(titles(&r.items), ["Ópera\u{a0}Real", "Control"]);
        assert!(r.repairs.is_empty(), "{:?}", r.repairs);
    }
}

#[test]
fn html_named_references_and_lone_ampersands_are_repaired_and_counted() {
    for bytes in fixture!("html-entities") {
        let r = read(bytes, None);
        assert_eq!(titles(&r.items), ["Café\u{a0}Teatro", "Control"]);
        assert_eq!(r.repairs, [(RepairReason::HtmlEntity, 2)]);
    }
    for bytes in fixture!("bare-ampersand") {
        let r = read(bytes, None);
        assert_eq!(titles(&r.items), ["Tom & Jerry", "Control"]);
        assert_eq!(r.repairs, [(RepairReason::BareAmpersand, 1)]);
    }
}

#[test]
fn an_unresolvable_reference_costs_only_its_item() {
    for (bytes, why) in fixture!("unknown-entity")
        .into_iter()
        .map(|b| (b, "not declared"))
        .chain(
            fixture!("external-entity")
                .into_iter()
                .map(|b| (b, "external entity")),
        )
        .chain(
            fixture!("billion-laughs")
                .into_iter()
                .map(|b| (b, "over the bounds")),
        )
    {
        let r = read(bytes, None);
        assert_eq!(titles(&r.items), ["Control"]);
        let skip = the_skip(&r.items);
        assert_eq!(skip.reason, SkipReason::UnresolvedReference);
        assert_eq!(
            (skip.base_plan_id.as_str(), skip.plan_id.as_str()),
            ("1", "10")
        );
        assert!(skip.detail.contains(why), "{}", skip.detail);
    }
}

#[test]
fn references_in_values_planbox_does_not_read_cost_nothing() {
    let xml = r#"<planList><base_plan base_plan_id="1" sell_mode="online" title="T" note="&bogus; & x">
        <plan plan_id="7" plan_start_date="2021-06-30T21:00:00">a &bogus; text &#0; & more
        <zone zone_id="1" price="5" name="Platea &unknown;"/></plan></base_plan></planList>"#;
    let r = read(xml.as_bytes(), None);
    assert_eq!(titles(&r.items), ["T"]);
    assert!(r.repairs.is_empty());
}

#[test]
fn a_zone_with_an_unresolvable_price_is_skipped_alone() {
    let xml = r#"<planList><base_plan base_plan_id="1" sell_mode="online" title="T">
        <plan plan_id="7" plan_start_date="2021-06-30T21:00:00">
        <zone zone_id="1" price="&five;"/><zone zone_id="2" price="6"/></plan></base_plan></planList>"#;
    let r = read(xml.as_bytes(), None);
    assert_eq!(titles(&r.items), ["T"]);
    assert_eq!(the_skip(&r.items).reason, SkipReason::UnresolvedReference);
}

#[test]
fn unknown_and_lying_encodings_reject_the_document_naming_them() {
    let e = read_with(
        b"<?xml version=\"1.0\" encoding=\"x-klingon\"?><planList/>",
        None,
        64,
    )
    .err()
    .unwrap();
    assert!(matches!(e, ParseError::UnknownEncoding { .. }), "{e}");
    assert!(e.to_string().contains("x-klingon"), "{e}");
    let e = read_with(
        b"<?xml version=\"1.0\" encoding=\"UTF-16\"?><planList/>",
        Some("utf-16"),
        64,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("UTF-16"), "{e}");
    // UTF-16 cut in the middle of a character, after the root: outside
    // any item.
    let mut odd = fixture!("utf16le-bom")[0].to_vec();
    odd.push(b'x');
    assert!(matches!(
        read_with(&odd, None, 64),
        Err(ParseError::Undecodable { .. })
    ));
}

#[test]
fn a_large_transcoded_document_streams_through_many_chunks() {
    let mut text = String::from("<?xml version=\"1.0\" encoding=\"ISO-8859-15\"?><planList>");
    for i in 0..3000 {
        text += &format!(
            "<base_plan base_plan_id=\"{i}\" sell_mode=\"online\" title=\"Ópera nº{i} €\">\
             <plan plan_id=\"1\" plan_start_date=\"2021-06-30T21:00:00\"/></base_plan>"
        );
    }
    text += "</planList>";
    let (bytes, _, unmappable) = ISO_8859_15.encode(&text);
    assert!(!unmappable);
    assert!(bytes.len() > 3 * CHUNK_BYTES);
    let r = read_with(&bytes, None, 8192).unwrap();
    let got = titles(&r.items);
    assert_eq!(got.len(), 3000);
    assert_eq!(got[2999], "Ópera nº2999 €");
    assert_eq!(r.position, bytes.len() as u64);
    // Broken structure far into it is still an error, with a position.
    let mut cut = bytes.to_vec();
    cut.truncate(cut.len() - 5);
    assert!(matches!(
        read_with(&cut, None, 8192),
        Err(ParseError::Truncated { .. })
    ));
}

/// Escapes `title` for an attribute so it survives exactly: markup
/// characters and white space XML would normalize become references.
fn escaped(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars() {
        match c {
            '&' => out += "&amp;",
            '<' => out += "&lt;",
            '"' => out += "&quot;",
            '\t' | '\n' | '\r' => out += &format!("&#{};", c as u32),
            c => out.push(c),
        }
    }
    out
}

fn document(title: &str, label: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"{label}\"?>\n<planList><base_plan base_plan_id=\"1\" \
         sell_mode=\"online\" title=\"{}\"><plan plan_id=\"2\" \
         plan_start_date=\"2021-06-30T21:00:00\"/></base_plan></planList>",
        escaped(title)
    )
}

/// The document in `label`'s encoding; characters the encoding cannot
/// represent become numeric references, as XML writers do.
fn encode(text: &str, label: &str) -> Vec<u8> {
    match label {
        "UTF-16LE" | "UTF-16BE" => {
            let le = label == "UTF-16LE";
            let mut out = if le {
                vec![0xFF, 0xFE]
            } else {
                vec![0xFE, 0xFF]
            };
            for unit in text.encode_utf16() {
                out.extend(if le {
                    unit.to_le_bytes()
                } else {
                    unit.to_be_bytes()
                });
            }
            out
        }
        _ => {
            let encoding = Encoding::for_label(label.as_bytes()).unwrap();
            // encoding_rs writes unmappable characters as `&#N;`.
            encoding.encode(text).0.into_owned()
        }
    }
}

/// Characters XML 1.0 allows (a title cannot hold the others at all).
fn xml_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..40).prop_map(|chars| {
        chars
            .into_iter()
            .filter(|c| {
                matches!(*c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_titles_round_trip_through_every_supported_encoding(
        title in xml_text(),
        capacity in 1usize..16,
    ) {
        for label in ["UTF-8", "UTF-16LE", "UTF-16BE", "ISO-8859-1", "ISO-8859-15", "windows-1252"] {
            let bytes = encode(&document(&title, label), label);
            let r = read_with(&bytes, None, capacity)
                .map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;
            prop_assert_eq!(titles(&r.items), vec![title.as_str()], "{}", label);
            prop_assert!(r.repairs.is_empty());
        }
        // And served with a charset instead of a declaration.
        let plain = document(&title, "UTF-8").replacen("encoding=\"UTF-8\"", "", 1);
        let bytes = encode(&plain, "windows-1252");
        let r = read_with(&bytes, Some("windows-1252"), capacity)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(titles(&r.items), vec![title.as_str()]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_title_bytes_cost_at_most_their_plan_and_never_reach_a_value(
        title in proptest::collection::vec(any::<u8>().prop_filter("no markup", |b| !matches!(b, b'"' | b'<' | b'&' | 0)), 0..24),
        capacity in 1usize..16,
    ) {
        let doc = document("@", "UTF-8");
        let at = doc.find('@').unwrap();
        let mut bytes = doc.into_bytes();
        bytes.splice(at..at + 1, title.iter().copied());
        let r = read_with(&bytes, None, capacity).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match std::str::from_utf8(&title) {
            Ok(text) => {
                let expected: String = text
                    .replace("\r\n", " ")
                    .chars()
                    .filter(|c| !matches!(*c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}'))
                    .map(|c| if matches!(c, '\t' | '\n' | '\r') { ' ' } else { c })
                    .collect();
                prop_assert_eq!(titles(&r.items), vec![expected.as_str()]);
            }
            Err(_) => {
                prop_assert!(titles(&r.items).is_empty());
                prop_assert_eq!(the_skip(&r.items).reason, SkipReason::UndecodableText);
            }
        }
        let shown = format!("{:?}", r.items);
        prop_assert!(!shown.contains('\u{1a}'), "{}", shown);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_in_values_and_text_under_any_charset_and_declaration_stay_local(
        title in proptest::collection::vec(any::<u8>().prop_filter("no markup", |b| !matches!(b, b'"' | b'<' | b'&' | 0)), 0..12),
        text in proptest::collection::vec(any::<u8>().prop_filter("no markup", |b| !matches!(b, b'<' | b'&')), 0..12),
        declared in proptest::sample::select(vec!["", " encoding=\"UTF-8\"", " encoding=\"ISO-8859-1\"", " encoding=\"windows-1253\"", " encoding=\"Shift_JIS\""]),
        charset in proptest::sample::select(vec![None, Some("utf-8"), Some("iso-8859-1"), Some("utf-16"), Some("windows-1253"), Some("nonsense")]),
        capacity in 1usize..16,
    ) {
        let head = format!("<?xml version=\"1.0\"{declared}?><planList><base_plan base_plan_id=\"1\" sell_mode=\"online\" title=\"");
        let middle = "\"><plan plan_id=\"1\" plan_start_date=\"2021-06-30T21:00:00\">";
        let tail = "</plan></base_plan><base_plan base_plan_id=\"2\" sell_mode=\"online\" title=\"Control\"><plan plan_id=\"2\" plan_start_date=\"2021-06-30T21:00:00\"/></base_plan></planList>";
        let bytes = [head.as_bytes(), &title, middle.as_bytes(), &text, tail.as_bytes()].concat();
        match read_with(&bytes, charset, capacity) {
            Ok(r) => {
                prop_assert!(titles(&r.items).contains(&"Control"));
                let shown = format!("{:?}", r.items);
                prop_assert!(!shown.contains('\u{1a}'), "{}", shown);
            }
            Err(e) => prop_assert!(false, "{}", e),
        }
    }
}

const DTD_TOKENS: &[&str] = &[
    "<!ENTITY ",
    "<!ENTITY % ",
    "a ",
    "b ",
    "nbsp ",
    "\"",
    "'",
    "&a;",
    "&b;",
    "&#38;",
    "&#x26;",
    "&#0;",
    "&",
    ";",
    "%a;",
    " SYSTEM ",
    " PUBLIC ",
    " NDATA ",
    ">",
    "<",
    "]",
    "[",
    "<!--",
    "-->",
    "<?",
    "?>",
    "é",
    " ",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_in_any_encoding_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        charset in proptest::sample::select(vec![None, Some("utf-16"), Some("UTF-16BE"), Some("windows-1252"), Some("ISO-8859-15"), Some("utf-8"), Some("nonsense")]),
        bom in proptest::sample::select(vec![&b""[..], b"\xEF\xBB\xBF", b"\xFF\xFE", b"\xFE\xFF"]),
        capacity in 1usize..32,
    ) {
        let input = [bom, &bytes[..]].concat();
        let mut feed = FeedReader::with_charset(BufReader::with_capacity(capacity, &input[..]), charset);
        for _ in 0..=input.len() + 2 {
            match feed.next_item() {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        prop_assert!(feed.position() <= input.len() as u64);
    }

    #[test]
    fn arbitrary_dtds_and_values_never_panic_and_stay_bounded(
        dtd in proptest::collection::vec(proptest::sample::select(DTD_TOKENS), 0..60),
        value in proptest::collection::vec(proptest::sample::select(DTD_TOKENS), 0..20),
    ) {
        let mut entities = super::entities::Entities::from_doctype(&format!("x [{}]", dtd.concat()));
        let mut repairs = super::entities::Repairs::default();
        if let Ok(v) = entities.expand(&value.concat(), &mut repairs) {
            prop_assert!(v.len() <= super::entities::MAX_VALUE_BYTES);
        }
    }
}

#[test]
fn attribute_defaults_of_the_internal_dtd_apply_to_both_dialects() {
    for (root, group, item) in [
        ("planList", "base_plan", "plan"),
        ("eventList", "base_event", "event"),
    ] {
        let xml = format!(
            r#"<?xml version="1.0"?>
<!DOCTYPE {root} [
  <!ENTITY org "Teatro">
  <!ATTLIST {group} sell_mode (online|offline) "online" title CDATA #FIXED "&org; Real">
  <!ATTLIST zone price CDATA "12.50">
]>
<{root}><{group} {group}_id="1"><{item} {item}_id="7" {item}_start_date="2021-06-30T21:00:00"><zone zone_id="1"/><zone zone_id="2" price="20"/></{item}></{group}>
<{group} {group}_id="2" sell_mode="offline" title="Own"><{item} {item}_id="8" {item}_start_date="2021-06-30T21:00:00"/></{group}></{root}>"#
        );
        let r = read(xml.as_bytes(), None);
        let plans: Vec<&FeedPlan> = r
            .items
            .iter()
            .filter_map(|i| match i {
                FeedItem::Plan(p) => Some(p),
                FeedItem::Skipped(_) => None,
            })
            .collect();
        assert_eq!(plans.len(), 2, "{root}");
        assert_eq!(
            (plans[0].title.as_str(), plans[0].online),
            ("Teatro Real", true)
        );
        assert_eq!(plans[0].prices.min.unwrap().to_string(), "12.50");
        assert_eq!(plans[0].prices.max.unwrap().to_string(), "20");
        assert_eq!((plans[1].title.as_str(), plans[1].online), ("Own", false));
    }
}
