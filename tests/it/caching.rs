//! HTTP caches in front of planbox: `/search` answers (and their 304s)
//! say how long a shared cache may keep them, derived from the fetch
//! interval; what describes one moment of one process (status page,
//! metrics, health, errors) is never stored. Runs the built binary.

use crate::ops::Serve;
use crate::support::*;

/// The `Cache-Control` of every `/search` answer of a box fetching every
/// 90 s.
const SEARCH_90S: &str = "public, max-age=90, stale-while-revalidate=90, stale-if-error=86400";

#[test]
fn search_answers_may_be_kept_for_the_fetch_interval_and_304s_say_the_same() {
    let t = temp_store();
    let s = Serve::start(&t.db, &["--demo", "--fetch-interval", "90s"], &[]);
    let url = s.url("/search?starts_at=2021-01-01T00:00:00Z");
    for coding in ["", "gzip", "br"] {
        let r = get(&url, &[("Accept-Encoding", coding)]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Cache-Control"), Some(SEARCH_90S), "{coding:?}");
        assert_eq!(r.header("Vary"), Some("Accept-Encoding"), "{coding:?}");
        let etag = r.header("ETag").unwrap();
        let again = get(
            &url,
            &[("Accept-Encoding", coding), ("If-None-Match", etag)],
        );
        assert_eq!(again.status, 304, "{coding:?}");
        assert_eq!(
            again.header("Cache-Control"),
            Some(SEARCH_90S),
            "{coding:?}"
        );
        assert_eq!(again.header("Vary"), Some("Accept-Encoding"), "{coding:?}");
        assert_eq!(again.header("ETag"), Some(etag), "{coding:?}");
    }
    let head = request("HEAD", &url, &[]);
    assert_eq!(head.header("Cache-Control"), Some(SEARCH_90S));
}

#[test]
fn operator_pages_health_and_errors_are_never_stored_by_a_cache() {
    let t = temp_store();
    let s = Serve::start(&t.db, &["--demo"], &[]);
    for (path, status) in [
        ("/", 200),
        ("/metrics", 200),
        ("/health", 200),
        ("/ready", 200),
        ("/search?starts_at=soon", 400),
        ("/nowhere", 404),
    ] {
        let r = get(&s.url(path), &[]);
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.header("Cache-Control"), Some("no-store"), "{path}");
    }
    let r = request("POST", &s.url("/search"), &[]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
}

#[test]
fn cache_max_age_flag_and_variable_override_the_fetch_interval() {
    let t = temp_store();
    let s = Serve::start(&t.db, &["--demo", "--cache-max-age", "0"], &[]);
    let r = get(&s.url("/search"), &[]);
    assert_eq!(r.header("Cache-Control"), Some("no-cache"));
    drop(s);
    let s = Serve::start(&t.db, &["--demo"], &[("PLANBOX_CACHE_MAX_AGE", "5m")]);
    let r = get(&s.url("/search"), &[]);
    assert_eq!(
        r.header("Cache-Control"),
        Some("public, max-age=300, stale-while-revalidate=300, stale-if-error=86400")
    );
}

#[test]
fn the_deployment_guide_shows_the_nginx_config_its_rehearsal_runs() {
    let root = env!("CARGO_MANIFEST_DIR");
    let guide = std::fs::read_to_string(format!("{root}/docs/DEPLOYMENT.md")).unwrap();
    let conf =
        std::fs::read_to_string(format!("{root}/packaging/nginx/planbox-cache.conf")).unwrap();
    assert!(
        guide.contains(&format!("```nginx\n{conf}```")),
        "docs/DEPLOYMENT.md must show packaging/nginx/planbox-cache.conf as it is"
    );
}
