//! Several providers in one box: provider secrets never shown, the status
//! page on its own listener, providers from a file only the service reads,
//! and TLS to providers with a private CA.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;

use planbox::model::{FetchRun, Outcome, PlanCounts};
use planbox::provider_sim::FakeProvider;
use planbox::store::Store;

use crate::ops::{addr_in, Serve};
use crate::support::*;

const PASSWORD: &str = "s3cretpw";
const TOKEN: &str = "TOPSECRET";

fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD) && !text.contains(TOKEN),
        "{what} shows a credential:\n{text}"
    );
}

/// `http://user:PASSWORD@ADDR/feed?api_key=TOKEN` for a provider's URL.
fn with_credentials(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    format!("http://user:{PASSWORD}@{rest}?api_key={TOKEN}&lang=es")
}

#[test]
fn provider_credentials_appear_in_no_page_log_line_journal_row_status_or_metric() {
    let t = temp_store();
    // A journal row as an older planbox wrote it: the URL in full.
    {
        let mut store = Store::open(&t.db).unwrap();
        store
            .record_run(&FetchRun {
                provider: "good".into(),
                started_at: "2026-01-01T00:00:00Z".into(),
                duration_ms: 1,
                source: with_credentials("http://old.example/feed"),
                outcome: Outcome::Ok,
                http_status: Some(200),
                bytes: 1,
                counts: PlanCounts::default(),
                skipped: BTreeMap::new(),
                repaired: BTreeMap::new(),
                error: None,
            })
            .unwrap();
    }
    // ...in a store of that planbox: before the migrations that redact the
    // journal (a store of this version is refused by older ones).
    rusqlite::Connection::open(&t.db)
        .unwrap()
        .execute("DELETE FROM refinery_schema_history WHERE version >= 7", [])
        .unwrap();
    let good = FakeProvider::demo().unwrap();
    // Nothing listens there: every fetch fails, with an error message.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/feed", l.local_addr().unwrap())
    };
    let file = t.db.with_file_name("providers");
    std::fs::write(
        &file,
        format!(
            "# two providers, credentials in both URLs\nname=good,url={}\nname=dead,url={}\n",
            with_credentials(&good.url()),
            with_credentials(&dead)
        ),
    )
    .unwrap();
    let mut s = Serve::start(
        &t.db,
        &[
            "--providers-file",
            file.to_str().unwrap(),
            "--status-listen",
            "127.0.0.1:0",
            "--fetch-interval",
            "1h",
        ],
        &[],
    );
    s.wait_count(|l| l.contains("fetch run"), 2);
    let status_addr = addr_in(&s.wait_line(|l| l.contains("status page on its own listener")));

    // The status page moved: 404 on the public listener, served on its own.
    assert_eq!(get(&s.url("/"), &[]).status, 404);
    let page = get(&format!("http://{status_addr}/"), &[]);
    assert_eq!(page.status, 200);
    let html = page.text();
    assert_no_secret("the status page", &html);
    assert!(html.contains("user") || html.contains("***@"), "{html}");
    assert!(html.contains("api_key=***"), "{html}");
    assert!(html.contains("<code>good</code>") && html.contains("<code>dead</code>"));
    let metrics = get(&s.url("/metrics"), &[]).text();
    assert_no_secret("/metrics", &metrics);
    assert!(
        metrics.contains("planbox_fetch_runs_total{provider=\"dead\",outcome=\"network_error\"} 1")
    );
    assert!(metrics.contains("planbox_fetch_runs_total{provider=\"good\",outcome=\"ok\"} 1"));
    for path in ["/search", "/openapi.yaml", "/health", "/ready"] {
        assert_no_secret(path, &get(&s.url(path), &[]).text());
    }
    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
    assert_no_secret("the log", &err);
    assert!(err.contains("provider=dead"), "{err}");

    let store = Store::open(&t.db).unwrap();
    let runs = store.runs(100).unwrap();
    assert_eq!(runs.len(), 3, "{runs:?}");
    for r in &runs {
        assert_no_secret("a journal row", &format!("{r:?}"));
    }
    let dead_run = runs.iter().find(|r| r.provider == "dead").unwrap();
    assert_eq!(dead_run.outcome, Outcome::NetworkError);
    assert!(dead_run.source.contains("api_key=***"), "{dead_run:?}");
    for args in [&["status", "--json"][..], &["status"][..]] {
        let out = run_ok(planbox().args(args).arg("--db").arg(&t.db));
        let text = String::from_utf8(out.stdout).unwrap();
        assert_no_secret("status", &text);
        assert!(text.contains("dead"), "{text}");
    }
    let json = run_ok(planbox().args(["status", "--json", "--db"]).arg(&t.db));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let providers: Vec<&str> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["provider"].as_str().unwrap())
        .collect();
    assert!(
        providers.contains(&"good") && providers.contains(&"dead"),
        "{providers:?}"
    );
}

#[test]
fn a_failed_fetch_shows_no_credentials() {
    let t = temp_store();
    // Nothing listens on port 1: the fetch fails with an error message.
    let out = planbox()
        .args(["fetch", "--db"])
        .arg(&t.db)
        .args([
            "--provider-url",
            &format!("http://user:{PASSWORD}@127.0.0.1:1/feed?api_key={TOKEN}"),
            "--connect-timeout",
            "1s",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_no_secret("fetch stdout", &String::from_utf8_lossy(&out.stdout));
    assert_no_secret("fetch stderr", &String::from_utf8_lossy(&out.stderr));
    let runs = Store::open(&t.db).unwrap().runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_no_secret("the journal", &format!("{runs:?}"));
}

#[test]
fn bad_provider_configuration_is_refused_at_start_with_a_clear_error() {
    let t = temp_store();
    for (args, says) in [
        (
            vec![
                "--provider",
                "name=a,url=http://h/",
                "--provider",
                "name=a,url=http://g/",
            ],
            "`a` is configured twice",
        ),
        (
            vec!["--provider", "name=Big,url=http://h/"],
            "provider entry 1: the name is invalid",
        ),
        (
            vec![
                "--provider",
                &*format!("name=a;url=http://u:{PASSWORD}@h/?k={TOKEN}"),
            ],
            "provider entry 1: the name is invalid",
        ),
        (
            vec!["--provider", &*format!("http://u:{PASSWORD}@h/?{TOKEN}")],
            "provider entry 1: expected name=NAME",
        ),
        (
            vec!["--provider", &*format!("name=a,url=ftp://{TOKEN}@h/")],
            "scheme must be http or https",
        ),
        (
            vec!["--provider", "name=a,url=http://h/,timezone=Europe/Nowhere"],
            "is not an IANA time zone",
        ),
        (
            vec![
                "--provider",
                "name=a,url=http://h/",
                "--provider-url",
                "http://h/",
            ],
            "--provider-url is the one-provider shorthand",
        ),
        (
            vec!["--provider", "name=a,url=http://h/,ca=/nonexistent/ca.pem"],
            "ca=/nonexistent/ca.pem",
        ),
    ] {
        let out = planbox()
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(&t.db)
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert_no_secret("the error", &err);
    }
    // PLANBOX_PROVIDERS, whitespace-separated, checked the same way.
    let out = planbox()
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&t.db)
        .env(
            "PLANBOX_PROVIDERS",
            "name=a,url=http://h/\n\tname=a,url=http://g/",
        )
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("`a` is configured twice"));
}

// ---------------------------------------------------------------------------
// TLS to providers with a private CA.

struct Pki {
    ca_pem: String,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

/// A private CA and a certificate for 127.0.0.1 it issued.
fn private_pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "planbox test private CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        chain: vec![cert.der().clone()],
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    }
}

/// An HTTPS provider on loopback serving `body` to every request, until the
/// process ends.
fn tls_provider(pki: &Pki, body: &'static [u8]) -> String {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls_server(pki, [head.as_bytes(), body].concat())
}

/// An HTTPS server on loopback answering every request with `reply` (head
/// and body), until the process ends.
fn tls_server(pki: &Pki, reply: Vec<u8>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(pki.chain.clone(), pki.key.clone_key())
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let (config, reply) = (config.clone(), reply.clone());
            thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                // Read the request head; a client that refuses our
                // certificate ends the handshake here.
                let mut reader = BufReader::new(&mut tls);
                let mut line = String::new();
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let _ = tls.write_all(&reply);
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    format!("https://{addr}/feed")
}

#[test]
fn tls_provider_with_a_private_ca_works_with_ca_file_and_fails_in_plain_words_without() {
    let t = temp_store();
    let pki = private_pki();
    let url = tls_provider(&pki, planbox::provider_sim::DEMO_FEEDS[0]);
    let ca = t.db.with_file_name("private-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();

    // Not trusted: the web roots and this machine's store do not know it.
    let mut cfg = sync_config(&t.db, &url);
    let runs = {
        let mut store = Store::open(&t.db).unwrap();
        planbox::sync::fetch_once(&mut store, &cfg, &planbox::metrics::Metrics::new(), None).run
    };
    assert_eq!(runs.outcome, Outcome::NetworkError, "{runs:?}");
    let err = runs.error.unwrap();
    let server = url.trim_start_matches("https://").trim_end_matches("/feed");
    assert!(
        err.contains(&format!(
            "the certificate that {server} presented was not issued by a CA this box trusts"
        )),
        "{err}"
    );
    assert!(
        err.contains("ca=FILE") && err.contains("update-ca-certificates"),
        "{err}"
    );

    // ca=FILE: trusted.
    cfg.fetch.roots = planbox::tls::TrustRoots::with_ca_file(Some(&ca)).unwrap();
    let mut store = Store::open(&t.db).unwrap();
    let run =
        planbox::sync::fetch_once(&mut store, &cfg, &planbox::metrics::Metrics::new(), None).run;
    assert_eq!(run.outcome, Outcome::Ok, "{run:?}");
    assert!(run.counts.plans_new > 0);
}

#[test]
fn a_redirect_from_https_to_http_is_refused() {
    let t = temp_store();
    let pki = private_pki();
    // Following the redirect would work: the plain-http target serves a feed.
    let plain = FakeProvider::demo().unwrap();
    let target = format!("{}?X-Amz-Signature={TOKEN}", plain.url());
    let url = tls_server(
        &pki,
        format!(
            "HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
    );
    let ca = t.db.with_file_name("private-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let mut cfg = sync_config(&t.db, &url);
    cfg.fetch.roots = planbox::tls::TrustRoots::with_ca_file(Some(&ca)).unwrap();
    let mut store = Store::open(&t.db).unwrap();
    let run =
        planbox::sync::fetch_once(&mut store, &cfg, &planbox::metrics::Metrics::new(), None).run;
    assert_eq!(run.outcome, Outcome::HttpError, "{run:?}");
    assert_eq!(run.http_status, Some(302));
    let err = run.error.clone().unwrap();
    assert!(
        err.contains("redirecting from https to http://127.0.0.1")
            && err.contains("X-Amz-Signature=***")
            && err.contains("refusing to fetch over plain http"),
        "{err}"
    );
    assert_no_secret("the journal", &format!("{run:?}"));
    assert!(plain.seen().is_empty(), "the plain-http target was asked");
}

#[test]
fn help_never_shows_a_url_from_the_environment() {
    let url = format!("https://user:{PASSWORD}@h/feed?api_key={TOKEN}");
    for command in ["serve", "fetch"] {
        for help in ["--help", "-h"] {
            let out = run_ok(
                planbox()
                    .args([command, help])
                    .env("PLANBOX_PROVIDER_URL", &url)
                    .env("PLANBOX_PROVIDERS", format!("name=a,url={url}")),
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert_no_secret(&format!("{command} {help}"), &text);
            assert!(text.contains("PLANBOX_PROVIDER_URL"), "{text}");
        }
    }
}

#[test]
fn tls_provider_with_a_ca_in_the_system_store_is_trusted() {
    let t = temp_store();
    let pki = private_pki();
    let url = tls_provider(&pki, planbox::provider_sim::DEMO_FEEDS[0]);
    // The system store as OpenSSL and curl read it: SSL_CERT_FILE names the
    // bundle (a box's /etc/ssl/certs/ca-certificates.crt).
    let bundle = t.db.with_file_name("system-bundle.pem");
    std::fs::write(&bundle, &pki.ca_pem).unwrap();
    let out = planbox()
        .args(["fetch", "--db"])
        .arg(&t.db)
        .args(["--provider-url", &url])
        .env("SSL_CERT_FILE", &bundle)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And a CA file that is not PEM is refused at start, in plain words.
    let junk = t.db.with_file_name("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let out = planbox()
        .args(["fetch", "--db"])
        .arg(&t.db)
        .args(["--provider-url", &url, "--provider-ca"])
        .arg(&junk)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no certificate in it"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// Several providers, one answer.

/// `(start instant, title)` of every event of a `/search` answer, with the
/// instant computed in the zone of the provider whose answer held the id.
fn instants(
    merged: &serde_json::Value,
    zones: &[(&serde_json::Value, chrono_tz::Tz)],
) -> Vec<(i64, i64, String)> {
    use chrono::TimeZone;
    merged["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let id = e["id"].as_str().unwrap();
            let tz = zones
                .iter()
                .find(|(ans, _)| {
                    ans["data"]["events"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x["id"] == id)
                })
                .map(|(_, tz)| *tz)
                .unwrap_or_else(|| panic!("{id} is in no provider's own answer"));
            let at = |d: &serde_json::Value, t: &serde_json::Value| -> i64 {
                let naive = chrono::NaiveDateTime::parse_from_str(
                    &format!("{} {}", d.as_str().unwrap(), t.as_str().unwrap()),
                    "%Y-%m-%d %H:%M:%S",
                )
                .unwrap();
                tz.from_local_datetime(&naive)
                    .earliest()
                    .unwrap()
                    .timestamp()
            };
            let end = if e["end_date"].is_null() {
                i64::MIN
            } else {
                at(&e["end_date"], &e["end_time"])
            };
            (at(&e["start_date"], &e["start_time"]), end, id.to_string())
        })
        .collect()
}

#[test]
fn two_providers_in_two_zones_and_dialects_answer_as_one_while_a_third_fails() {
    let t = temp_store();
    let a = FakeProvider::start(fixture_feeds(Dialect::Plans)).unwrap();
    let b = FakeProvider::start(fixture_feeds(Dialect::Events)).unwrap();
    // `c` hangs far longer than a fetch of `a` or `b` takes, then fails.
    let c = FakeProvider::start(fixture_feeds(Dialect::Plans)).unwrap();
    c.push(planbox::provider_sim::Behaviour::Delay(
        std::time::Duration::from_secs(60),
    ));
    let mut s = Serve::start(
        &t.db,
        &[
            "--provider",
            &format!("name=a,url={}", a.url()),
            "--provider",
            &format!("name=b,url={},timezone=Europe/Madrid", b.url()),
            "--provider",
            &format!("name=c,url={},timezone=America/New_York", c.url()),
            "--fetch-interval",
            "1h",
            "--fetch-timeout",
            "3s",
        ],
        &[],
    );
    // `a` and `b` land while `c` still hangs: one provider never delays
    // another.
    s.wait_line(|l| l.contains("fetch run provider=a") && l.contains("outcome=ok"));
    s.wait_line(|l| l.contains("fetch run provider=b") && l.contains("outcome=ok"));
    assert!(
        !s.stderr().contains("fetch run provider=c"),
        "c finished first:\n{}",
        s.stderr()
    );

    let search = |q: &str| get(&s.url(&format!("/search{q}")), &[]);
    let all = search("").json();
    let only_a = search("?provider=a").json();
    let only_b = search("?provider=b").json();
    let n = |v: &serde_json::Value| v["data"]["events"].as_array().unwrap().len();
    assert_eq!(n(&only_a), 4);
    assert_eq!(n(&only_b), 4);
    assert_eq!(n(&all), 8, "{all}");
    // Same plans, other provider: other ids; each provider's plans keep
    // the ids they have when served alone.
    let alone = planbox::model::plan_uuid("a", "291", "291").to_string();
    assert!(only_a["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["id"] == alone.as_str()));
    // Ordered by start instant, then end instant, then id, each provider's
    // times in its own zone (b's 21:00 Madrid is 19:00Z, before a's 21:00).
    let keys = instants(
        &all,
        &[
            (&only_a, chrono_tz::UTC),
            (&only_b, chrono_tz::Europe::Madrid),
        ],
    );
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "{all}");
    // Times in answers stay each provider's local times.
    let camela: Vec<&serde_json::Value> = all["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["title"] == "Camela en concierto")
        .collect();
    assert_eq!(camela.len(), 2);
    assert!(camela.iter().all(|e| e["start_time"] == "21:00:00"));

    // An instant is compared in each provider's zone: 2021-06-30T20:00:00Z
    // is 20:00 for a and 22:00 for b, so Camela (21:00 local) is in for a
    // only; a wall-clock time compares with each plan's own local time.
    let with_title = |v: &serde_json::Value, title: &str| {
        v["data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["title"] == title)
            .count()
    };
    let instant = search("?starts_at=2021-06-30T20:00:00Z&ends_at=2021-06-30T23:59:59Z").json();
    assert_eq!(with_title(&instant, "Camela en concierto"), 1, "{instant}");
    let wall = search("?starts_at=2021-06-30T20:00:00&ends_at=2021-06-30T23:59:59").json();
    assert_eq!(with_title(&wall, "Camela en concierto"), 2, "{wall}");

    // provider=: one provider's plans; an unknown one is a 400 naming it.
    for bad in ["?provider=zzz", "?provider=", "?provider=a&provider=b"] {
        let r = search(bad);
        assert_eq!(r.status, 400, "{bad}");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.starts_with("provider"), "{bad}: {msg}");
    }
    assert!(search("?provider=zzz").json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("known: a, b, c"));
    let metrics = get(&s.url("/metrics"), &[]).text();
    for (p, n) in [("a", 4), ("b", 4), ("c", 0)] {
        let line = format!("planbox_provider_plans_searchable{{provider=\"{p}\"}} {n}");
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    // `c` has no plans yet, and that is an answer too.
    assert_eq!(n(&search("?provider=c").json()), 0);

    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
}

/// A plans-dialect feed with one online plan per `(id, start, end)`.
fn feed(plans: &[(&str, &str, &str)]) -> Vec<u8> {
    let mut x = String::from("<?xml version=\"1.0\"?><planList><output>");
    for (id, start, end) in plans {
        x.push_str(&format!(
            "<base_plan base_plan_id=\"{id}\" sell_mode=\"online\" title=\"{id}\">\
             <plan plan_id=\"{id}\" plan_start_date=\"{start}\" plan_end_date=\"{end}\" sell_from=\"2021-01-01T00:00:00\" sell_to=\"2021-12-31T00:00:00\" sold_out=\"false\">\
             <zone zone_id=\"1\" capacity=\"1\" price=\"10.00\" name=\"A\" numbered=\"false\"/></plan></base_plan>"
        ));
    }
    x.push_str("</output></planList>");
    x.into_bytes()
}

#[test]
fn madrid_dst_edges_a_skipped_and_a_doubled_local_time() {
    let t = temp_store();
    // Madrid skips 02:00-03:00 on 2021-03-28 and lives 02:00-03:00 twice on
    // 2021-10-31. `utc` has a plan at each instant that matters.
    let mad = FakeProvider::start(vec![feed(&[
        ("skipped", "2021-03-28T02:30:00", "2021-03-28T04:00:00"),
        ("doubled", "2021-10-31T02:30:00", "2021-10-31T04:00:00"),
    ])])
    .unwrap();
    let utc = FakeProvider::start(vec![feed(&[
        ("utc-0059", "2021-03-28T00:59:00", "2021-03-28T05:00:00"),
        ("utc-0100", "2021-03-28T01:00:00", "2021-03-28T01:30:00"),
        ("utc-0031", "2021-10-31T00:31:00", "2021-10-31T05:00:00"),
    ])])
    .unwrap();
    let mut s = Serve::start(
        &t.db,
        &[
            "--provider",
            &format!("name=mad,url={},timezone=Europe/Madrid", mad.url()),
            "--provider",
            &format!("name=utc,url={}", utc.url()),
            "--fetch-interval",
            "1h",
        ],
        &[],
    );
    s.wait_line(|l| l.contains("fetch run provider=mad") && l.contains("outcome=ok"));
    s.wait_line(|l| l.contains("fetch run provider=utc") && l.contains("outcome=ok"));
    let titles = |q: &str| -> Vec<String> {
        let v = get(&s.url(&format!("/search{q}")), &[]).json();
        v["data"]["events"]
            .as_array()
            .unwrap_or_else(|| panic!("{q}: {v}"))
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["title"].as_str().unwrap(),
                    e["start_time"].as_str().unwrap()
                )
            })
            .collect()
    };
    // Times come back exactly as the feed wrote them, even one that never
    // happened. Order: the skipped 02:30 counts as the instant the clocks
    // jumped (01:00Z = 03:00 CEST): after utc's 00:59, tied with its
    // 01:00 start and then ordered by end (05:00 CEST = 02:00Z after 01:30Z);
    // the doubled 02:30 is its first occurrence (00:30Z), before utc's 00:31.
    assert_eq!(
        titles(""),
        [
            "utc-0059 00:59:00",
            "utc-0100 01:00:00",
            "skipped 02:30:00",
            "doubled 02:30:00",
            "utc-0031 00:31:00"
        ]
    );
    // An instant bound is compared in Madrid's wall-clock time: 01:00Z is
    // 03:00 there, so the skipped 02:30 is before it; 00:59:59Z is 01:59:59.
    let mad_only = |q: &str| titles(&format!("?provider=mad&{q}"));
    assert!(mad_only("starts_at=2021-03-28T01:00:00Z&ends_at=2021-03-28T23:00:00Z").is_empty());
    assert_eq!(
        mad_only("starts_at=2021-03-28T00:59:59Z&ends_at=2021-03-28T23:00:00Z"),
        ["skipped 02:30:00"]
    );
    // The doubled hour: 00:30Z and 01:30Z both read 02:30 in Madrid, so both
    // bounds keep the plan; 01:31Z (02:31 CET) no longer does.
    for q in [
        "starts_at=2021-10-31T00:30:00Z&ends_at=2021-10-31T23:00:00Z",
        "starts_at=2021-10-31T01:30:00Z&ends_at=2021-10-31T23:00:00Z",
    ] {
        assert_eq!(mad_only(q), ["doubled 02:30:00"], "{q}");
    }
    assert!(mad_only("starts_at=2021-10-31T01:31:00Z&ends_at=2021-10-31T23:00:00Z").is_empty());
    // A wall-clock bound compares with the plan's own local time.
    assert_eq!(
        mad_only("starts_at=2021-03-28T02:30:00&ends_at=2021-03-28T04:00:00"),
        ["skipped 02:30:00"]
    );
    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn the_systemd_credential_names_the_providers_when_nothing_else_does() {
    let t = temp_store();
    let p = FakeProvider::demo().unwrap();
    let dir = t.db.with_file_name("credentials");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("planbox.providers"),
        format!("name=cred,url={}\n", with_credentials(&p.url())),
    )
    .unwrap();
    let mut s = Serve::start(
        &t.db,
        &["--fetch-interval", "1h"],
        &[("CREDENTIALS_DIRECTORY", dir.to_str().unwrap())],
    );
    s.wait_line(|l| l.contains("fetch run provider=cred") && l.contains("outcome=ok"));
    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
    assert_no_secret("the log", &err);
    // Configured otherwise: the credential is ignored, and that is said.
    let mut s = Serve::start(
        &t.db,
        &["--provider-url", &p.url(), "--fetch-interval", "1h"],
        &[("CREDENTIALS_DIRECTORY", dir.to_str().unwrap())],
    );
    s.wait_line(|l| l.contains("ignoring the credential planbox.providers"));
    s.wait_line(|l| l.contains("fetch run provider=provider"));
    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
}

/// The path and query of a `Link: <...>; rel="next"` header.
fn next_page(r: &Reply) -> Option<String> {
    let h = r.header("Link")?;
    assert!(h.ends_with(r#">; rel="next""#), "{h}");
    Some(h[1..h.find('>').unwrap()].to_owned())
}

/// Follows `Link: rel="next"` from `first`; every page's events, in order.
fn walk_pages(s: &Serve, first: &str) -> (Vec<serde_json::Value>, usize) {
    let mut events = Vec::new();
    let mut path = Some(first.to_owned());
    let mut pages = 0;
    while let Some(p) = path {
        let r = get(&s.url(&p), &[]);
        assert_eq!(r.status, 200, "{p}: {}", r.text());
        events.extend(r.json()["data"]["events"].as_array().unwrap().clone());
        path = next_page(&r);
        pages += 1;
        assert!(pages < 1000, "the walk does not end");
    }
    (events, pages)
}

#[test]
fn pages_of_a_merged_answer_over_two_zones_walk_the_whole_answer_in_instant_order() {
    let t = temp_store();
    // `u` (UTC) and `m` (Europe/Madrid) share many start instants (10:00Z is
    // 12:00 in Madrid in summer), tie on some ends too, and `m` has plans in
    // the hour Madrid skips and the one it lives twice.
    let mut u_plans = Vec::new();
    let mut m_plans = Vec::new();
    for d in 1..=6 {
        for h in [8, 10, 10, 14] {
            let i = u_plans.len();
            u_plans.push((
                format!("u{i}"),
                format!("2021-07-{d:02}T{h:02}:00:00"),
                format!("2021-07-{d:02}T{:02}:00:00", h + 1 + i % 2),
            ));
            m_plans.push((
                format!("m{i}"),
                format!("2021-07-{d:02}T{:02}:00:00", h + 2),
                format!("2021-07-{d:02}T{:02}:00:00", h + 3 + i % 3),
            ));
        }
    }
    for (id, start, end) in [
        ("mskip", "2021-03-28T02:30:00", "2021-03-28T04:00:00"),
        ("mthree", "2021-03-28T03:00:00", "2021-03-28T04:00:00"),
        ("mtwice", "2021-10-31T02:30:00", "2021-10-31T03:30:00"),
    ] {
        m_plans.push((id.into(), start.into(), end.into()));
    }
    u_plans.push((
        "uskip".into(),
        "2021-03-28T01:00:00".into(),
        "2021-03-28T02:00:00".into(),
    ));
    let as_refs = |v: &Vec<(String, String, String)>| -> Vec<u8> {
        let r: Vec<(&str, &str, &str)> = v
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        feed(&r)
    };
    let u = FakeProvider::start(vec![as_refs(&u_plans)]).unwrap();
    let m = FakeProvider::start(vec![as_refs(&m_plans)]).unwrap();
    let mut s = Serve::start(
        &t.db,
        &[
            "--provider",
            &format!("name=u,url={}", u.url()),
            "--provider",
            &format!("name=m,url={},timezone=Europe/Madrid", m.url()),
            "--fetch-interval",
            "1h",
        ],
        &[],
    );
    s.wait_line(|l| l.contains("fetch run provider=u") && l.contains("outcome=ok"));
    s.wait_line(|l| l.contains("fetch run provider=m") && l.contains("outcome=ok"));

    let whole = get(&s.url("/search"), &[]);
    assert!(whole.header("Link").is_none());
    let whole = whole.json();
    let all = whole["data"]["events"].as_array().unwrap().clone();
    assert_eq!(all.len(), u_plans.len() + m_plans.len(), "{whole}");
    let only_u = get(&s.url("/search?provider=u"), &[]).json();
    let only_m = get(&s.url("/search?provider=m"), &[]).json();
    // (start instant, end instant, id), each plan's local times in its
    // provider's zone by the documented rule (a skipped time is the
    // instant the clocks jumped, a doubled one its first occurrence).
    let in_m: Vec<&serde_json::Value> = only_m["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["id"])
        .collect();
    assert_eq!(
        in_m.len() + only_u["data"]["events"].as_array().unwrap().len(),
        all.len()
    );
    let keys: Vec<(i64, i64, String)> = all
        .iter()
        .map(|e| {
            let tz = if in_m.contains(&&e["id"]) {
                chrono_tz::Europe::Madrid
            } else {
                chrono_tz::UTC
            };
            let at = |d: &serde_json::Value, t: &serde_json::Value| {
                let naive = chrono::NaiveDateTime::parse_from_str(
                    &format!("{} {}", d.as_str().unwrap(), t.as_str().unwrap()),
                    "%Y-%m-%d %H:%M:%S",
                )
                .unwrap();
                planbox::model::local_to_instant(naive.and_utc().timestamp(), tz)
            };
            (
                at(&e["start_date"], &e["start_time"]),
                at(&e["end_date"], &e["end_time"]),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "{whole}");
    // Ties on the start instant across the two zones are in this answer.
    assert!(keys.windows(2).any(|w| w[0].0 == w[1].0));

    // Every page size walks the same answer, each plan once, in order;
    // pages of a bounded window and of one provider too.
    for limit in [1, 2, 3, 7, 20, 1000] {
        let (events, pages) = walk_pages(&s, &format!("/search?limit={limit}"));
        assert_eq!(events, all, "limit={limit}");
        assert_eq!(pages, all.len().div_ceil(limit).max(1), "limit={limit}");
    }
    let window = "starts_at=2021-07-02T09:00:00Z&ends_at=2021-07-04T23:00:00%2B02:00";
    let bounded = get(&s.url(&format!("/search?{window}")), &[]).json();
    let bounded = bounded["data"]["events"].as_array().unwrap().clone();
    assert!(!bounded.is_empty() && bounded.len() < all.len());
    let (events, _) = walk_pages(&s, &format!("/search?{window}&limit=4"));
    assert_eq!(events, bounded);
    let (events, _) = walk_pages(&s, "/search?provider=m&limit=5");
    assert_eq!(&events, only_m["data"]["events"].as_array().unwrap());
    let first = get(&s.url("/search?provider=m&limit=5"), &[]);
    assert!(next_page(&first).unwrap().contains("provider=m"));

    // The ETag depends on which providers are searched.
    let tag = |q: &str| {
        get(&s.url(&format!("/search{q}")), &[])
            .header("ETag")
            .unwrap()
            .to_owned()
    };
    let tags = [tag(""), tag("?provider=u"), tag("?provider=m")];
    assert!(tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2]);
    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn skip_and_repair_log_lines_name_the_provider_and_its_redacted_source() {
    let t = temp_store();
    let read = |name: &str| {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/real-xml")
                .join(name),
        )
        .unwrap()
    };
    let rep = FakeProvider::start(vec![read("html-entities.plans.xml")]).unwrap();
    let skp = FakeProvider::start(vec![read("unknown-entity.plans.xml")]).unwrap();
    let mut s = Serve::start(
        &t.db,
        &[
            "--provider",
            &format!("name=rep,url={}", with_credentials(&rep.url())),
            "--provider",
            &format!("name=skp,url={}", with_credentials(&skp.url())),
            "--fetch-interval",
            "1h",
        ],
        &[],
    );
    let repaired = s.wait_line(|l| l.contains("repaired feed values"));
    let skipped = s.wait_line(|l| l.contains("skipped feed items"));
    let (code, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
    assert_no_secret("the log", &err);
    for (line, name) in [(&repaired, "rep"), (&skipped, "skp")] {
        assert!(line.contains(&format!("provider={name}")), "{line}");
        assert!(line.contains("api_key=***"), "{line}");
    }
}
