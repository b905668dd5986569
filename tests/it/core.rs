//! The core appliance end to end: fixture feeds through the real fetch path
//! into a store, answered by the real server.

use chrono_tz::Tz;
use planbox::model::Outcome;
use planbox::provider_sim::{Behaviour, FakeProvider};

use crate::support::*;

/// A store that has fetched feeds 1, 2, 3 of a dialect.
fn fixture_store(d: Dialect) -> TempStore {
    let t = temp_store();
    let provider = FakeProvider::start(fixture_feeds(d)).unwrap();
    let runs = fetch_n(&t.db, &provider, 3);
    assert!(runs.iter().all(|r| r.outcome == Outcome::Ok), "{runs:?}");
    t
}

fn titles_and_starts(r: &Reply) -> Vec<String> {
    r.json()["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["title"].as_str().unwrap(),
                e["start_date"].as_str().unwrap(),
                e["start_time"].as_str().unwrap()
            )
        })
        .collect()
}

fn count(r: &Reply) -> usize {
    r.json()["data"]["events"].as_array().unwrap().len()
}

fn assert_fixture_table(r: &Reply) {
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let v = r.json();
    assert!(v["error"].is_null());
    let events = v["data"]["events"].as_array().unwrap();
    assert_eq!(events.len(), EXPECTED.len(), "{}", r.text());
    let text = r.text();
    for (e, (title, start, end, min, max)) in events.iter().zip(EXPECTED) {
        assert_eq!(e["title"], title);
        let (sd, st) = start.split_once(' ').unwrap();
        let (ed, et) = end.split_once(' ').unwrap();
        assert_eq!(
            (e["start_date"].as_str(), e["start_time"].as_str()),
            (Some(sd), Some(st))
        );
        assert_eq!(
            (e["end_date"].as_str(), e["end_time"].as_str()),
            (Some(ed), Some(et))
        );
        // Exact decimal text, not a float rendering.
        let raw = format!(r#""end_time":"{et}","min_price":{min},"max_price":{max}}}"#);
        assert!(text.contains(&raw), "{raw} not in {text}");
        let id = e["id"].as_str().unwrap();
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 5);
    }
}

#[test]
fn fixture_feeds_give_exactly_the_readme_table_in_both_dialects() {
    let mut bodies = Vec::new();
    for d in [Dialect::Plans, Dialect::Events] {
        let t = fixture_store(d);
        let server = TestServer::start(&t.db, Tz::UTC);
        let r = server.get("/search");
        assert_fixture_table(&r);
        assert_fixture_table(&server.get("/search?starts_at=2021-01-01T00:00:00Z"));
        bodies.push(r.body);
    }
    // Same plans, same ids, whatever the dialect or store.
    assert_eq!(bodies[0], bodies[1]);
}

#[test]
fn window_bounds_are_inclusive_and_offsets_convert() {
    let t = fixture_store(Dialect::Plans);
    let s = TestServer::start(&t.db, Tz::UTC);
    let q = |q: &str| titles_and_starts(&s.get(&format!("/search?{q}")));
    // starts_at equal to a start includes it; one second later excludes it.
    assert_eq!(
        q("starts_at=2021-06-30T21:00:00Z"),
        [
            "Camela en concierto 2021-06-30 21:00:00",
            "Los Morancos 2021-07-31 20:00:00"
        ]
    );
    assert_eq!(
        q("starts_at=2021-06-30T21:00:01Z"),
        ["Los Morancos 2021-07-31 20:00:00"]
    );
    // ends_at equal to an end includes it.
    assert_eq!(
        q("starts_at=2021-06-30T00:00:00&ends_at=2021-06-30T21:30:00"),
        ["Camela en concierto 2021-06-30 21:00:00"]
    );
    assert!(q("starts_at=2021-06-30T00:00:00&ends_at=2021-06-30T21:29:59").is_empty());
    // Offsets are converted to the provider zone (UTC here).
    assert_eq!(
        q("starts_at=2021-06-30T23:00:00%2B02:00&ends_at=2021-06-30T22:30:00%2B01:00"),
        ["Camela en concierto 2021-06-30 21:00:00"]
    );
    assert_eq!(
        q("starts_at=2021-06-30T22:59:59.5+02:00&ends_at=2021-07-01T00:00:00Z"),
        ["Camela en concierto 2021-06-30 21:00:00"]
    );
    // Any year 0001-9999.
    assert_eq!(
        q("starts_at=0001-01-01T00:00:00Z&ends_at=9999-12-31T23:59:59Z").len(),
        4
    );
    // starts_at after ends_at: well-formed, empty.
    let r = s.get("/search?starts_at=2022-01-01T00:00:00Z&ends_at=2021-01-01T00:00:00Z");
    assert_eq!((r.status, count(&r)), (200, 0));
}

#[test]
fn another_provider_time_zone_shifts_offset_queries_only() {
    let t = fixture_store(Dialect::Plans);
    let madrid: Tz = "Europe/Madrid".parse().unwrap();
    let s = TestServer::start(&t.db, madrid);
    let q = |q: &str| titles_and_starts(&s.get(&format!("/search?{q}")));
    // 19:00Z on 30 June is 21:00 in Madrid (CEST): Camela starts then.
    assert_eq!(q("starts_at=2021-06-30T19:00:00Z").len(), 2);
    assert_eq!(q("starts_at=2021-06-30T19:00:01Z").len(), 1);
    // A naive value is Madrid wall-clock time, unchanged.
    assert_eq!(q("starts_at=2021-06-30T21:00:00").len(), 2);
    // Answers show the feed's local times unchanged.
    assert_eq!(
        q("starts_at=2021-06-30T19:00:00Z")[0],
        "Camela en concierto 2021-06-30 21:00:00"
    );
}

#[test]
fn every_bad_request_is_a_400_envelope_naming_the_parameter() {
    let t = fixture_store(Dialect::Plans);
    let s = TestServer::start(&t.db, Tz::UTC);
    for (q, param) in [
        ("starts_at=", "starts_at"),
        ("ends_at=", "ends_at"),
        ("starts_at=yesterday", "starts_at"),
        ("ends_at=2021-13-01T00:00:00Z", "ends_at"),
        ("starts_at=2021-02-29T00:00:00Z", "starts_at"),
        ("starts_at=2021-06-30", "starts_at"),
        ("starts_at=2021-06-30T21:00:00%2B25:00", "starts_at"),
        ("starts_at=%E0%A4%A", "starts_at"),
        ("starts_at=%C3%28", "starts_at"),
        (
            "ends_at=2021-06-30T21:00:00Z&ends_at=2021-06-30T21:00:00Z",
            "ends_at",
        ),
        (
            "starts_at=2021-06-30T21:00:00Z&starts_at=2021-07-30T21:00:00Z",
            "starts_at",
        ),
        ("starts_at=10000-01-01T00:00:00Z", "starts_at"),
    ] {
        let r = s.get(&format!("/search?{q}"));
        assert_eq!(r.status, 400, "{q}");
        let v = r.json();
        assert!(v["data"].is_null(), "{q}");
        assert_eq!(v["error"]["code"], "invalid_parameter", "{q}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with(param), "{q}: {msg}");
    }
    // Unknown parameters are ignored.
    assert_eq!(
        count(&s.get("/search?page=1&starts_at=2021-01-01T00:00:00Z")),
        4
    );
}

#[test]
fn other_paths_and_methods_get_404_and_405_in_the_envelope() {
    let t = fixture_store(Dialect::Plans);
    let s = TestServer::start(&t.db, Tz::UTC);
    let r = s.get("/events");
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    for m in ["POST", "PUT", "DELETE", "PATCH", "TRACE", "OPTIONS"] {
        let r = request(m, &s.url("/search"), &[]);
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("Allow"), Some("GET, HEAD"), "{m}");
        if m != "HEAD" {
            assert_eq!(r.json()["error"]["code"], "method_not_allowed");
        }
    }
    let head = request("HEAD", &s.url("/search"), &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(s.get("/health").status, 200);
    assert_eq!(s.get("/ready").json()["status"], "ready");
}

#[test]
fn etag_304_and_gzip_over_the_wire() {
    let t = fixture_store(Dialect::Plans);
    let s = TestServer::start(&t.db, Tz::UTC);
    let r = s.get("/search");
    let etag = r.header("ETag").unwrap().to_string();
    let again = get(&s.url("/search"), &[("If-None-Match", &etag)]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let gz = get(&s.url("/search"), &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.header("Content-Encoding"), Some("gzip"));
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut plain)
        .unwrap();
    assert_eq!(plain, r.body);
}

#[test]
fn a_truncated_or_garbage_feed_changes_nothing() {
    let t = fixture_store(Dialect::Plans);
    let before = {
        let s = TestServer::start(&t.db, Tz::UTC);
        s.get("/search").body
    };
    let provider = FakeProvider::start(fixture_feeds(Dialect::Plans)).unwrap();
    // Feed 1 would turn Camela's end back to 22:00: cut it short instead.
    provider.push(Behaviour::Truncated(1500));
    provider.push(Behaviour::Body(b"<planList><output><base_plan".to_vec()));
    provider.push(Behaviour::Body(b"\x00\x01 not xml at all".to_vec()));
    let runs = fetch_n(&t.db, &provider, 3);
    for r in &runs {
        assert!(
            matches!(r.outcome, Outcome::ParseError | Outcome::NetworkError),
            "{r:?}"
        );
        assert_eq!(r.counts.plans_seen, 0);
    }
    let s = TestServer::start(&t.db, Tz::UTC);
    assert_eq!(s.get("/search").body, before);
}

#[test]
fn plans_never_online_are_never_returned_and_online_is_sticky() {
    let t = temp_store();
    let feed = |mode: &str, end: &str| {
        format!(
            r#"<planList><output><base_plan base_plan_id="1" sell_mode="{mode}" title="T">
            <plan plan_id="7" plan_start_date="2021-01-01T10:00:00" plan_end_date="{end}">
            <zone zone_id="1" price="10.10"/><zone zone_id="2" price="9.90"/><zone zone_id="3" price="100"/>
            </plan></base_plan></output></planList>"#
        )
        .into_bytes()
    };
    let provider = FakeProvider::start(vec![
        feed("offline", "2021-01-01T11:00:00"),
        feed("online", "2021-01-01T11:00:00"),
        feed("offline", "2021-01-01T12:00:00"),
    ])
    .unwrap();
    let s = TestServer::start(&t.db, Tz::UTC);
    fetch_n(&t.db, &provider, 1);
    assert_eq!(count(&s.get("/search")), 0, "never online: not searchable");
    fetch_n(&t.db, &provider, 2);
    let r = s.get("/search");
    assert_eq!(count(&r), 1, "online once: searchable for good");
    // Latest values win, even from a fetch where it was offline.
    assert!(
        r.text()
            .contains(r#""end_time":"12:00:00","min_price":9.90,"max_price":100}"#),
        "{}",
        r.text()
    );
}

#[test]
fn import_then_search_json_through_the_binary_matches_the_api() {
    let t = temp_store();
    let files = fixture_files(t.dir.path(), Dialect::Events);
    run_ok(planbox().arg("import").arg("--db").arg(&t.db).args(&files));
    let out = run_ok(planbox().args(["search", "--json", "--db"]).arg(&t.db));
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = TestServer::start(&t.db, Tz::UTC);
    let api = s.get("/search");
    assert_eq!(cli, api.json());
    assert_fixture_table(&api);
    // A bad bound: the same 400 envelope on stdout, non-zero exit.
    let out = planbox()
        .args(["search", "--json", "--starts-at", "nope", "--db"])
        .arg(&t.db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "invalid_parameter");
}

#[test]
fn import_of_a_truncated_file_fails_and_stores_nothing() {
    let t = temp_store();
    let feed = &fixture_feeds(Dialect::Plans)[0];
    let cut = t.dir.path().join("cut.xml");
    std::fs::write(&cut, &feed[..feed.len() - 40]).unwrap();
    let out = planbox()
        .arg("import")
        .arg("--db")
        .arg(&t.db)
        .arg(&cut)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = run_ok(planbox().args(["search", "--json", "--db"]).arg(&t.db));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"]["events"].as_array().unwrap().len(), 0);
    let out = run_ok(planbox().args(["status", "--json", "--db"]).arg(&t.db));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runs"][0]["outcome"], "parse_error");
    assert_eq!(v["runs"][0]["plans_seen"], 0);
}

#[test]
fn ids_are_equal_across_fresh_stores() {
    let a = fixture_store(Dialect::Plans);
    let b = temp_store();
    let files = fixture_files(b.dir.path(), Dialect::Plans);
    run_ok(planbox().arg("import").arg("--db").arg(&b.db).args(&files));
    let ids = |db: &std::path::Path| {
        let s = TestServer::start(db, Tz::UTC);
        s.get("/search").json()["data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let (ia, ib) = (ids(&a.db), ids(&b.db));
    assert_eq!(ia.len(), 4);
    assert_eq!(ia, ib);
    // Pinned: the id of (provider, 322, 1642) never changes.
    assert_eq!(ia[0], "d15fb038-ee28-5248-86d0-4764c3f38782");
}

#[test]
fn flags_win_over_environment_and_environment_over_defaults() {
    let t = temp_store();
    let (from_env, from_flag) = (t.dir.path().join("env.db"), t.dir.path().join("flag.db"));
    run_ok(
        planbox()
            .arg("migrate")
            .env("PLANBOX_DB", &from_env)
            .current_dir(t.dir.path()),
    );
    assert!(from_env.exists());
    run_ok(
        planbox()
            .arg("migrate")
            .arg("--db")
            .arg(&from_flag)
            .env("PLANBOX_DB", t.dir.path().join("unused.db"))
            .current_dir(t.dir.path()),
    );
    assert!(from_flag.exists());
    assert!(!t.dir.path().join("unused.db").exists());
    run_ok(planbox().arg("migrate").current_dir(t.dir.path()));
    assert!(
        t.dir.path().join("planbox.db").exists(),
        "default --db is planbox.db"
    );
    // A bad value in a serve variable is refused before anything starts.
    let out = planbox()
        .arg("serve")
        .env("PLANBOX_FETCH_INTERVAL", "soon")
        .current_dir(t.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("soon"));
}

#[test]
fn read_only_commands_refuse_a_missing_store_without_creating_it() {
    let t = temp_store();
    for cmd in [&["search"][..], &["status"], &["backup", "copy.db"]] {
        let out = planbox()
            .args(cmd)
            .arg("--db")
            .arg(&t.db)
            .current_dir(t.dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{cmd:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no such store"),
            "{cmd:?}"
        );
        assert!(!t.db.exists(), "{cmd:?} created the store");
    }
}

#[test]
fn search_table_shows_exact_prices() {
    let t = temp_store();
    let files = fixture_files(t.dir.path(), Dialect::Plans);
    run_ok(planbox().arg("import").arg("--db").arg(&t.db).args(&files));
    let out = run_ok(planbox().args(["search", "--db"]).arg(&t.db));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("65.00") && text.contains("75.00"), "{text}");
    assert!(text.contains("4 plan(s)"), "{text}");
}
