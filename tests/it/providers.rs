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
                error: None,
            })
            .unwrap();
    }
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
            "provider name `Big` is invalid",
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
            let config = config.clone();
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
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes());
                let _ = tls.write_all(body);
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
