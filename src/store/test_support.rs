//! Helpers shared by the store's unit tests: a fresh store path per test,
//! plans and journal rows to land, and reading titles back out of a body.
//! Test-only; must not hold assertions of its own.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::model::{
    parse_feed_datetime, FeedPlan, FetchRun, Outcome, PlanCounts, Price, PriceRange,
};

pub(super) fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "planbox-store-{}-{}-{name}",
        std::process::id(),
        std::thread::current()
            .name()
            .unwrap_or("t")
            .replace("::", "_")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("planbox.db")
}

/// A store as an earlier planbox left it: migrated up to `version` only.
pub(super) fn store_at_version(path: &std::path::Path, version: i32) -> Connection {
    let mut conn = Connection::open(path).unwrap();
    super::embedded::migrations::runner()
        .set_target(refinery::Target::Version(version))
        .run(&mut conn)
        .unwrap();
    conn.pragma_update(None, "application_id", APPLICATION_ID)
        .unwrap();
    conn
}

pub(super) fn plan(base: &str, id: &str, start: &str, end: Option<&str>, online: bool) -> FeedPlan {
    let mut prices = PriceRange::default();
    prices.add(Price::parse("10.50").unwrap());
    FeedPlan {
        base_plan_id: base.into(),
        plan_id: id.into(),
        title: format!("plan {base}/{id}"),
        online,
        start: parse_feed_datetime(start).unwrap(),
        end: end.map(|e| parse_feed_datetime(e).unwrap()),
        prices,
    }
}

pub(super) fn run(outcome: Outcome) -> FetchRun {
    FetchRun {
        started_at: "2026-01-01T00:00:00Z".into(),
        duration_ms: 1,
        source: "test".into(),
        outcome,
        http_status: Some(200),
        bytes: 0,
        counts: PlanCounts::default(),
        skipped: BTreeMap::new(),
        repaired: BTreeMap::new(),
        error: None,
        provider: "provider".into(),
    }
}

pub(super) fn ingest(store: &mut Store, plans: &[FeedPlan]) -> PlanCounts {
    let mut tx = store.begin_ingest("p").unwrap();
    for p in plans {
        tx.upsert(p).unwrap();
    }
    tx.commit(&run(Outcome::Ok), None).unwrap()
}

pub(super) fn ids(body: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap().to_string())
        .collect()
}

/// (provider, yyyymm, plans) rows of month counters, sorted.
pub(super) type MonthRows = Vec<(String, i64, i64)>;

/// `plan_months` as kept (zeros skipped), and the same counts recounted
/// with one GROUP BY over `plans`.
pub(super) fn plan_months_kept_and_recounted(conn: &Connection) -> (MonthRows, MonthRows) {
    let read = |sql: &str| -> MonthRows {
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    (
        read(
            "SELECT provider, month, plans FROM plan_months WHERE plans > 0
             ORDER BY provider, month",
        ),
        read(
            "SELECT provider,
                    CASE WHEN start_at BETWEEN -62167219200 AND 253402300799
                        THEN CAST(strftime('%Y%m', start_at, 'unixepoch') AS INTEGER) ELSE 0 END AS m,
                    COUNT(*)
             FROM plans WHERE ever_online = 1 GROUP BY provider, m ORDER BY provider, m",
        ),
    )
}
