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

const ROWS: [Row; 10] = [
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
            let out = run_ok(planbox().args(["search", "--json", "--db"]).arg(&t.db));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                titles_of(&v),
                expected_titles(row),
                "{} {dialect}",
                row.name
            );
            let out = run_ok(planbox().args(["status", "--json", "--db"]).arg(&t.db));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let run = &v["runs"][0];
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
fn an_undeclared_latin1_file_is_rejected_naming_the_encoding_and_offset() {
    let t = temp_store();
    let file = fixture("latin1-undeclared", "plans");
    let bytes = std::fs::read(&file).unwrap();
    let first = bytes.iter().position(|b| *b >= 0x80).unwrap();
    let out = planbox()
        .arg("import")
        .arg("--db")
        .arg(&t.db)
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = run_ok(planbox().args(["status", "--json", "--db"]).arg(&t.db));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &v["runs"][0];
    assert_eq!(run["outcome"], "parse_error");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("UTF-8") && error.contains(&format!("offset {first}")),
        "{error}"
    );
    let out = run_ok(planbox().args(["search", "--json", "--db"]).arg(&t.db));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(titles_of(&v).is_empty());
    // Told the encoding, import reads it exactly.
    run_ok(
        planbox()
            .args(["import", "--charset", "ISO-8859-1", "--db"])
            .arg(&t.db)
            .arg(&file),
    );
    let out = run_ok(planbox().args(["search", "--json", "--db"]).arg(&t.db));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(titles_of(&v), ["Control", "Ópera para el Niño"]);
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
fn a_lying_content_type_charset_changes_nothing() {
    let t = temp_store();
    let provider = FakeProvider::start(fixture_feeds(Dialect::Plans)).unwrap();
    let mut store = Store::open(&t.db).unwrap();
    let cfg = sync_config(&t.db, &provider.url());
    let metrics = Metrics::new();
    assert!(sync::fetch_once(&mut store, &cfg, &metrics, None)
        .run
        .outcome
        .is_success());
    let before = store.search(&Default::default()).unwrap();
    // Latin-1 bytes served as UTF-8.
    provider.push(Behaviour::Typed {
        body: std::fs::read(fixture("latin1-undeclared", "plans")).unwrap(),
        content_type: "text/xml; charset=utf-8".into(),
    });
    let run = sync::fetch_once(&mut store, &cfg, &metrics, None).run;
    assert_eq!(run.outcome.as_str(), "parse_error");
    let error = run.error.unwrap();
    assert!(
        error.contains("UTF-8") && error.contains("Content-Type"),
        "{error}"
    );
    // An encoding nobody knows.
    provider.push(Behaviour::Typed {
        body: std::fs::read(fixture("html-entities", "plans")).unwrap(),
        content_type: "text/xml; charset=x-klingon".into(),
    });
    let run = sync::fetch_once(&mut store, &cfg, &metrics, None).run;
    assert_eq!(run.outcome.as_str(), "parse_error");
    assert!(run.error.unwrap().contains("x-klingon"));
    assert_eq!(store.search(&Default::default()).unwrap(), before);
}

#[test]
fn a_billion_laughs_feed_costs_only_its_item() {
    for dialect in ["plans", "events"] {
        let t = temp_store();
        let file = fixture("billion-laughs", dialect);
        run_ok(planbox().arg("import").arg("--db").arg(&t.db).arg(&file));
        let out = run_ok(planbox().args(["search", "--json", "--db"]).arg(&t.db));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(titles_of(&v), ["Control"]);
    }
}

#[test]
fn the_same_bytes_under_a_corrected_charset_are_read_again() {
    let t = temp_store();
    let provider = FakeProvider::start(vec![]).unwrap();
    let mut store = Store::open(&t.db).unwrap();
    let cfg = sync_config(&t.db, &provider.url());
    let metrics = Metrics::new();
    let body = std::fs::read(fixture("dtd-entity", "plans")).unwrap();
    for (charset, outcome, title) in [
        // A lying header over UTF-8 bytes reads as (well-formed) mojibake...
        ("windows-1252", "ok", "Ã“pera\u{a0}Real"),
        ("windows-1252", "unchanged", "Ã“pera\u{a0}Real"),
        // ...until the provider fixes the header: then it is read again.
        ("utf-8", "ok", "Ópera\u{a0}Real"),
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
