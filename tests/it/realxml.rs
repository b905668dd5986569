//! Real providers' XML end to end: every fixture of
//! `tests/fixtures/real-xml/`, in both dialects, through `planbox import`
//! and `planbox search --json` (the binary), and through a fetch from the
//! in-process provider serving the same bytes with a `Content-Type`.

use std::path::{Path, PathBuf};

use planbox::metrics::Metrics;
use planbox::provider_sim::{Behaviour, FakeProvider};
use planbox::store::Store;
use planbox::sync;

use crate::support::*;

fn fixture(name: &str, dialect: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/real-xml")
        .join(format!("{name}.{dialect}.xml"))
}

/// What a row of the table must give: the special plan's title (`None`:
/// that plan is skipped, the control plan still lands), and the skips and
/// repairs of the run.
struct Row {
    name: &'static str,
    title: Option<&'static str>,
    skipped: &'static [(&'static str, u64)],
    repaired: &'static [(&'static str, u64)],
    /// Content-Type charset for the fetch (import has none).
    charset: Option<&'static str>,
}

const ROWS: [Row; 15] = [
    Row {
        name: "latin1-declared",
        title: Some("Ópera para el Niño"),
        skipped: &[],
        repaired: &[],
        charset: None,
    },
    Row {
        name: "cp1252-declared",
        title: Some("Gala – “Año Nuevo” 25 €"),
        skipped: &[],
        repaired: &[],
        charset: None,
    },
    Row {
        name: "latin1-undeclared",
        title: Some("Ópera para el Niño"),
        skipped: &[],
        repaired: &[],
        charset: Some("ISO-8859-1"),
    },
    Row {
        name: "utf16le-bom",
        title: Some("Ópera “Año” 😀"),
        skipped: &[],
        repaired: &[],
        charset: None,
    },
    Row {
        name: "utf16be-bom",
        title: Some("Ópera “Año” 😀"),
        skipped: &[],
        repaired: &[],
        charset: None,
    },
    Row {
        name: "dtd-entity",
        title: Some("Ópera\u{a0}Real"),
        skipped: &[],
        repaired: &[],
        charset: None,
    },
    Row {
        name: "html-entities",
        title: Some("Café\u{a0}Teatro"),
        skipped: &[],
        repaired: &[("html_entity", 2)],
        charset: None,
    },
    Row {
        name: "bare-ampersand",
        title: Some("Tom & Jerry"),
        skipped: &[],
        repaired: &[("bare_ampersand", 1)],
        charset: None,
    },
    Row {
        name: "unknown-entity",
        title: None,
        skipped: &[("unresolved_reference", 1)],
        repaired: &[],
        charset: None,
    },
    Row {
        name: "external-entity",
        title: None,
        skipped: &[("unresolved_reference", 1)],
        repaired: &[],
        charset: None,
    },
    Row {
        name: "empty-entities",
        title: None,
        skipped: &[("unresolved_reference", 1)],
        repaired: &[],
        charset: None,
    },
    Row {
        name: "undecodable-title",
        title: None,
        skipped: &[("undecodable_text", 1)],
        repaired: &[],
        charset: None,
    },
    Row {
        name: "control-character",
        title: Some("VerticalTab [31mRed"),
        skipped: &[],
        repaired: &[("control_character", 2)],
        charset: None,
    },
    // A server that calls every body UTF-8.
    Row {
        name: "latin1-declared",
        title: Some("Ópera para el Niño"),
        skipped: &[],
        repaired: &[("charset_mismatch", 1)],
        charset: Some("UTF-8"),
    },
    Row {
        name: "utf16le-bom",
        title: Some("Ópera “Año” 😀"),
        skipped: &[],
        repaired: &[("charset_mismatch", 1)],
        charset: Some("ISO-8859-1"),
    },
];

fn titles_of(search: &serde_json::Value) -> Vec<String> {
    let mut t: Vec<String> = search["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap().to_owned())
        .collect();
    t.sort();
    t
}

/// The titles `planbox search --json` finds in the store at `db`, sorted.
fn search_titles(db: &Path) -> Vec<String> {
    let out = run_ok(planbox().args(["search", "--json", "--db"]).arg(db));
    titles_of(&serde_json::from_slice(&out.stdout).unwrap())
}

fn expected_titles(row: &Row) -> Vec<String> {
    let mut t: Vec<String> = row
        .title
        .into_iter()
        .chain(Some("Control"))
        .map(str::to_owned)
        .collect();
    t.sort();
    t
}

fn counts(v: &serde_json::Value) -> Vec<(String, u64)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

fn owned(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

#[test]
fn every_row_imports_exactly_through_the_binary_in_both_dialects() {
    for dialect in ["plans", "events"] {
        for row in ROWS.iter().filter(|r| r.charset.is_none()) {
            let t = temp_store();
            let file = fixture(row.name, dialect);
            run_ok(planbox().arg("import").arg("--db").arg(&t.db).arg(&file));
            assert_eq!(
                search_titles(&t.db),
                expected_titles(row),
                "{} {dialect}",
                row.name
            );
            let run = &last_run(&t.db);
            assert_eq!(run["outcome"], "ok", "{} {dialect}", row.name);
            let size = std::fs::metadata(&file).unwrap().len();
            assert_eq!(run["bytes"], size, "{} {dialect}", row.name);
            assert_eq!(counts(&run["skipped"]), owned(row.skipped), "{}", row.name);
            assert_eq!(
                counts(&run["repaired"]),
                owned(row.repaired),
                "{}",
                row.name
            );
        }
    }
}

#[test]
fn an_undeclared_latin1_file_costs_the_plans_it_cannot_decode_naming_the_offset() {
    let t = temp_store();
    let file = fixture("latin1-undeclared", "plans");
    let bytes = std::fs::read(&file).unwrap();
    let first = bytes.iter().position(|b| *b >= 0x80).unwrap();
    let out = run_ok(planbox().arg("import").arg("--db").arg(&t.db).arg(&file));
    // The log line of the skip names the encoding and the offset.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("undecodable_text")
            && log.contains("UTF-8")
            && log.contains(&format!("byte {first}")),
        "{log}"
    );
    let run = last_run(&t.db);
    assert_eq!(run["outcome"], "ok");
    assert_eq!(counts(&run["skipped"]), owned(&[("undecodable_text", 1)]));
    assert_eq!(search_titles(&t.db), ["Control"]);
    // Told the encoding, import reads it exactly.
    run_ok(
        planbox()
            .args(["import", "--charset", "ISO-8859-1", "--db"])
            .arg(&t.db)
            .arg(&file),
    );
    assert_eq!(search_titles(&t.db), ["Control", "Ópera para el Niño"]);
    // A label nobody knows is refused before anything is read.
    let out = planbox()
        .args(["import", "--charset", "x-klingon", "--db"])
        .arg(&t.db)
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("x-klingon"), "{err}");
}

#[test]
fn a_one_byte_damage_in_a_large_feed_costs_one_plan() {
    let t = temp_store();
    let mut feed = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<planList><output>\n");
    for b in 0..5000 {
        feed += &format!(
            "<base_plan base_plan_id=\"{b}\" sell_mode=\"online\" title=\"Función {b}\">\
             <plan plan_id=\"1\" plan_start_date=\"2024-01-01T20:00:00\"><zone zone_id=\"1\" price=\"5\"/></plan></base_plan>\n"
        );
    }
    feed += "</output></planList>\n";
    let mut bytes = feed.into_bytes();
    let at = bytes
        .windows(10)
        .position(|w| w == b"Funci\xc3\xb3n 4".as_slice())
        .unwrap();
    bytes[at + 6] = b'\xf3'; // "Funci\xc3\xf3n": broken UTF-8
    let file = t.dir.path().join("big.xml");
    std::fs::write(&file, &bytes).unwrap();
    run_ok(planbox().arg("import").arg("--db").arg(&t.db).arg(&file));
    let run = last_run(&t.db);
    assert_eq!(run["outcome"], "ok");
    assert_eq!(run["plans_new"], 4999, "{run}");
    assert_eq!(counts(&run["skipped"]), owned(&[("undecodable_text", 1)]));
    let titles = search_titles(&t.db);
    assert_eq!(titles.len(), 4999);
    assert!(!titles.contains(&"Función 4".to_owned()));
    assert!(titles
        .iter()
        .all(|t| !t.contains('\u{FFFD}') && !t.contains('\u{1A}')));
}

#[test]
fn every_row_fetches_exactly_with_its_content_type_in_both_dialects() {
    for dialect in ["plans", "events"] {
        for row in &ROWS {
            let t = temp_store();
            let provider = FakeProvider::start(vec![]).unwrap();
            let content_type = match row.charset {
                Some(c) => format!("text/xml; charset={c}"),
                None => "application/xml".to_owned(),
            };
            provider.push(Behaviour::Typed {
                body: std::fs::read(fixture(row.name, dialect)).unwrap(),
                content_type,
            });
            let mut store = Store::open(&t.db).unwrap();
            let metrics = Metrics::new();
            let cfg = sync_config(&t.db, &provider.url());
            let run = sync::fetch_once(&mut store, &cfg, &metrics, None).run;
            assert_eq!(
                run.outcome.as_str(),
                "ok",
                "{} {dialect}: {:?}",
                row.name,
                run.error
            );
            let body = store.search(&Default::default()).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                titles_of(&v),
                expected_titles(row),
                "{} {dialect}",
                row.name
            );
            let pairs = |m: &std::collections::BTreeMap<String, u64>| {
                m.iter().map(|(k, n)| (k.clone(), *n)).collect::<Vec<_>>()
            };
            assert_eq!(pairs(&run.skipped), owned(row.skipped), "{}", row.name);
            assert_eq!(pairs(&run.repaired), owned(row.repaired), "{}", row.name);
            // The journal and /metrics say the same.
            let journaled = &store.runs(1).unwrap()[0];
            assert_eq!(journaled.repaired, run.repaired);
            assert_eq!(journaled.skipped, run.skipped);
            let text = metrics.render();
            for (reason, n) in row.repaired {
                assert!(
                    text.contains(&format!(
                        "planbox_feed_repaired_total{{provider=\"{}\",reason=\"{reason}\"}} {n}",
                        run.provider
                    )),
                    "{text}"
                );
            }
            for (reason, n) in row.skipped {
                assert!(
                    text.contains(&format!(
                        "planbox_feed_skipped_total{{provider=\"{}\",reason=\"{reason}\"}} {n}",
                        run.provider
                    )),
                    "{text}"
                );
            }
        }
    }
}

#[test]
fn a_content_type_charset_the_body_contradicts_is_counted_not_fatal() {
    let t = temp_store();
    let provider = FakeProvider::start(vec![]).unwrap();
    let mut store = Store::open(&t.db).unwrap();
    let cfg = sync_config(&t.db, &provider.url());
    let metrics = Metrics::new();
    for (fixture_name, content_type, skipped, repaired) in [
        // Latin-1 bytes that declare nothing, served as UTF-8: the plan
        // whose title does not decode is skipped, the rest lands.
        (
            "latin1-undeclared",
            "text/xml; charset=utf-8",
            &[("undecodable_text", 1)][..],
            &[][..],
        ),
        // A charset nobody knows: the document's own declaration is read.
        (
            "latin1-declared",
            "text/xml; charset=x-klingon",
            &[],
            &[("charset_mismatch", 1)][..],
        ),
        // UTF-8 declared, served as Latin-1.
        (
            "dtd-entity",
            "text/xml; charset=ISO-8859-1",
            &[],
            &[("charset_mismatch", 1)],
        ),
    ] {
        provider.push(Behaviour::Typed {
            body: std::fs::read(fixture(fixture_name, "plans")).unwrap(),
            content_type: content_type.into(),
        });
        let run = sync::fetch_once(&mut store, &cfg, &metrics, None).run;
        assert_eq!(
            run.outcome.as_str(),
            "ok",
            "{fixture_name}: {:?}",
            run.error
        );
        let pairs: Vec<(String, u64)> = run.skipped.iter().map(|(k, n)| (k.clone(), *n)).collect();
        assert_eq!(pairs, owned(skipped), "{fixture_name}");
        let pairs: Vec<(String, u64)> = run.repaired.iter().map(|(k, n)| (k.clone(), *n)).collect();
        assert_eq!(pairs, owned(repaired), "{fixture_name}");
    }
    // The three documents describe the same two plans: the last one read
    // is what the store holds.
    let v: serde_json::Value =
        serde_json::from_slice(&store.search(&Default::default()).unwrap()).unwrap();
    assert_eq!(titles_of(&v), ["Control", "Ópera\u{a0}Real"]);
    // The status page titles each count with its reasons.
    let server = TestServer::start(&t.db, chrono_tz::UTC);
    let page = server.get("/").text();
    for reason in ["undecodable_text: 1", "charset_mismatch: 1"] {
        assert!(page.contains(reason), "{page}");
    }
    let text = metrics.render();
    for line in [
        "planbox_feed_skipped_total{provider=\"provider\",reason=\"undecodable_text\"} 1",
        "planbox_feed_repaired_total{provider=\"provider\",reason=\"charset_mismatch\"} 2",
    ] {
        assert!(text.contains(line), "{text}");
    }
}

#[test]
fn a_billion_laughs_feed_costs_only_its_item() {
    for dialect in ["plans", "events"] {
        let t = temp_store();
        let file = fixture("billion-laughs", dialect);
        run_ok(planbox().arg("import").arg("--db").arg(&t.db).arg(&file));
        assert_eq!(search_titles(&t.db), ["Control"]);
    }
}

#[test]
fn the_same_bytes_under_a_corrected_charset_are_read_again() {
    let t = temp_store();
    let provider = FakeProvider::start(vec![]).unwrap();
    let mut store = Store::open(&t.db).unwrap();
    let cfg = sync_config(&t.db, &provider.url());
    let metrics = Metrics::new();
    // Undeclared 8-bit text with 0xA4: `¤` in windows-1252, `€` in
    // ISO-8859-15; both decode, so the charset is believed.
    let latin = std::fs::read(fixture("latin1-undeclared", "plans")).unwrap();
    let at = latin.windows(5).position(|w| w == b"Ni\xf1o\"").unwrap();
    let body = [&latin[..at], b"5 \xa4", &latin[at + 4..]].concat();
    for (charset, outcome, title) in [
        // A lying header reads as (well-formed) wrong text...
        ("windows-1252", "ok", "Ópera para el 5 ¤"),
        ("windows-1252", "unchanged", "Ópera para el 5 ¤"),
        // ...until the provider fixes the header: then it is read again.
        ("iso-8859-15", "ok", "Ópera para el 5 €"),
    ] {
        provider.push(Behaviour::Typed {
            body: body.clone(),
            content_type: format!("application/xml; charset={charset}"),
        });
        let run = sync::fetch_once(&mut store, &cfg, &metrics, None).run;
        assert_eq!(run.outcome.as_str(), outcome, "{charset}: {:?}", run.error);
        let v: serde_json::Value =
            serde_json::from_slice(&store.search(&Default::default()).unwrap()).unwrap();
        assert!(titles_of(&v).contains(&title.to_owned()), "{v}");
    }
}
