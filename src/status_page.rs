//! The status page for people (`GET /`): each provider (URL with its
//! credentials redacted, zone, next and last successful fetch) with two
//! small inline SVG pictures (its last fetches as a timeline, its searchable
//! plans per month as a histogram), counts, the recent fetches and a search
//! form whose results render as a table. No JavaScript, no external assets;
//! the pictures carry their facts as text too (a title per bar, a summary
//! line), so they read without colour.
//!
//! Pure rendering from values handed in; every interpolated value is
//! HTML-escaped. It must not read the store or the clock itself.

use std::fmt::Write;

use crate::model::EventRow;
use crate::model::FetchRun;
use crate::percent;
use crate::service::{ProviderInfo, ServiceInfo};
use crate::store::StoreCounts;

pub struct PageInput<'a> {
    pub info: &'a ServiceInfo,
    /// One panel per configured provider, in configuration order.
    pub providers: Vec<ProviderPanel<'a>>,
    pub counts: Option<StoreCounts>,
    /// The newest runs of all providers; `None`: the store could not be
    /// read (not the same as no fetch yet).
    pub runs: Option<Vec<FetchRun>>,
    /// The raw query string, to refill the form.
    pub query: &'a str,
    /// The search answer (JSON envelope) or the error message, when the form
    /// was submitted.
    pub search: Option<Result<std::sync::Arc<[u8]>, String>>,
    /// Whether `/metrics` is served on this listener (link it).
    pub metrics_here: bool,
    pub store_check: crate::check_state::StoreCheck,
    /// Whether `/search` is served on this listener (link it).
    pub search_here: bool,
}

/// What the page shows of one provider.
pub struct ProviderPanel<'a> {
    pub info: &'a ProviderInfo,
    pub last_success: Option<i64>,
    /// Its plans stored and searchable, when the store counts them.
    pub counts: Option<StoreCounts>,
    /// Its newest runs, newest first; `None`: the store could not be read.
    pub runs: Option<Vec<FetchRun>>,
    /// Searchable plans by month of their local start (`YYYY-MM`), in
    /// order; `None`: the store could not be read.
    pub months: Option<Vec<(String, u64)>>,
}

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn unix_to_text(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A journal timestamp (RFC 3339, UTC) as `YYYY-MM-DD HH:MM:SS`.
fn journal_time(t: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| t.to_owned())
}

/// The `/search` URL for the form's values (empty values left out, as the
/// API rejects empty parameters).
fn json_link(starts_at: &str, ends_at: &str, provider: &str) -> String {
    let params: Vec<String> = [
        ("starts_at", starts_at),
        ("ends_at", ends_at),
        ("provider", provider),
    ]
    .iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| format!("{k}={}", percent::encode(v)))
    .collect();
    if params.is_empty() {
        "/search".into()
    } else {
        format!("/search?{}", params.join("&"))
    }
}

fn param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| percent::decode_form(v).ok())
        .unwrap_or_default()
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;\
padding:0 1rem;color:#222}h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}\
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;\
padding:.3rem .5rem;border-bottom:1px solid #ddd}th{background:#f4f4f4}\
.ok{color:#176b1f}.bad{color:#a31515}.muted{color:#777}dl{display:grid;\
grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}\
input{font:inherit;padding:.2rem .4rem;width:16rem}button{font:inherit;padding:.2rem .8rem}\
.err{background:#fdecea;padding:.5rem .8rem;border-radius:4px}\
.pics{display:flex;flex-wrap:wrap;gap:1rem 3rem}figure{margin:0}\
figcaption{font-size:.85rem;font-weight:600;margin-bottom:.2rem}.small{font-size:.8rem;margin:.2rem 0}";

pub fn render(p: &PageInput<'_>) -> String {
    let mut h = String::with_capacity(8192);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>planbox status</title><style>{STYLE}</style></head><body>\
         <h1>planbox <span class=\"muted\">{}</span></h1><dl>",
        esc(p.info.version)
    );
    if p.providers.is_empty() {
        h.push_str("<dt>Providers</dt><dd>(none configured: the store is served as it is)</dd>");
    }
    match p.counts {
        Some(c) => {
            let _ = write!(
                h,
                "<dt>Plans stored</dt><dd>{}</dd><dt>Plans searchable</dt><dd>{}</dd>",
                c.plans_stored, c.plans_searchable
            );
        }
        None => h.push_str("<dt>Store</dt><dd class=\"bad\">unavailable</dd>"),
    }
    let c = &p.store_check;
    let last = if c.last_passed > 0 {
        format!("passed {}", unix_to_text(c.last_passed))
    } else {
        "none passed yet".into()
    };
    match &c.damage {
        Some(d) => {
            let _ = write!(
                h,
                "<dt>Store check</dt><dd class=\"bad\">DAMAGED: {}. To do: {}.</dd>",
                esc(d),
                esc(crate::check_state::DAMAGE_ADVICE)
            );
        }
        None if c.running => {
            let _ = write!(h, "<dt>Store check</dt><dd>running ({})</dd>", esc(&last));
        }
        None => {
            let _ = write!(h, "<dt>Store check</dt><dd>{}</dd>", esc(&last));
        }
    }
    h.push_str("</dl>");
    for panel in &p.providers {
        render_provider(&mut h, panel);
    }

    let (s, e) = (param(p.query, "starts_at"), param(p.query, "ends_at"));
    let chosen = param(p.query, "provider");
    // With several providers, a choice of one (or all).
    let select = if p.info.providers.len() > 1 {
        let mut sel = String::from(
            "<label>provider <select name=\"provider\"><option value=\"\">all</option>",
        );
        for i in &p.info.providers {
            let _ = write!(
                sel,
                "<option{}>{}</option>",
                if i.name == chosen { " selected" } else { "" },
                esc(&i.name)
            );
        }
        sel.push_str("</select></label> ");
        sel
    } else {
        String::new()
    };
    let _ = write!(
        h,
        "<h2>Search</h2><form method=\"get\" action=\"/\">\
         <label>starts_at <input name=\"starts_at\" value=\"{}\" placeholder=\"2021-06-30T00:00:00Z\"></label> \
         <label>ends_at <input name=\"ends_at\" value=\"{}\" placeholder=\"2021-07-31T23:59:59\"></label> \
         {select}<button type=\"submit\">Search</button></form>\
         <p class=\"muted\">RFC 3339 with <code>Z</code> or an offset, or provider-local without offset; \
         either may be empty.{}</p>",
        esc(&s),
        esc(&e),
        if p.search_here {
            let link = esc(&json_link(&s, &e, &chosen));
            format!(" The same query as JSON: <a href=\"{link}\"><code>{link}</code></a>")
        } else {
            String::new()
        },
    );
    match &p.search {
        None => {}
        Some(Err(msg)) => {
            let _ = write!(h, "<p class=\"err\">{}</p>", esc(msg));
        }
        Some(Ok(body)) => render_results(&mut h, body),
    }

    h.push_str("<h2>Recent fetches</h2>");
    match p.runs.as_deref() {
        None => h.push_str(UNREADABLE),
        Some([]) => h.push_str("<p class=\"muted\">No fetch yet.</p>"),
        Some(runs) => render_runs(&mut h, runs),
    }
    let _ = write!(
        h,
        "<p class=\"muted\"><a href=\"/openapi.yaml\">OpenAPI</a> · {}\
         <a href=\"/health\">health</a> · <a href=\"/ready\">ready</a></p></body></html>",
        if p.metrics_here {
            "<a href=\"/metrics\">metrics</a> · "
        } else {
            ""
        }
    );
    h
}

/// The recent fetches as a table.
fn render_runs(h: &mut String, runs: &[FetchRun]) {
    h.push_str(
        "<table><thead><tr><th>Provider</th><th>Started (UTC)</th><th>Outcome</th><th>HTTP</th>\
         <th>Bytes</th><th>ms</th><th>Seen</th><th>New</th><th>Updated</th>\
         <th>Skipped</th><th>Repaired</th><th>Error</th></tr></thead><tbody>",
    );
    for r in runs {
        let class = if r.outcome.is_success() { "ok" } else { "bad" };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td>{}{}<td>{}</td></tr>",
            esc(if r.provider.is_empty() { "-" } else { &r.provider }),
            esc(&journal_time(&r.started_at)),
            r.outcome,
            r.http_status_text(),
            r.bytes,
            r.duration_ms,
            r.counts.plans_seen,
            r.counts.plans_new,
            r.counts.plans_updated,
            count_cell(r.skipped_total(), &r.skipped),
            count_cell(r.repaired_total(), &r.repaired),
            esc(r.error.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</tbody></table>");
}

/// Said where the store could not be read (the error is in the log).
const UNREADABLE: &str = "<p class=\"bad\">The store cannot be read right now.</p>";

fn render_provider(h: &mut String, p: &ProviderPanel<'_>) {
    let i = p.info;
    let _ = write!(
        h,
        "<h2>Provider <code>{}</code></h2><dl><dt>Feed</dt><dd>{}</dd>\
         <dt>Time zone</dt><dd>{}</dd><dt>Next fetch</dt><dd>{}</dd>\
         <dt>Last successful fetch</dt><dd>{}</dd>{}</dl>",
        esc(&i.name),
        if i.url.is_empty() {
            "<span class=\"muted\">not fetched by this process</span>".to_string()
        } else {
            format!("<code>{}</code>", esc(&i.url))
        },
        esc(&i.timezone),
        i.next_fetch().map_or_else(|| "-".into(), unix_to_text),
        p.last_success.map_or_else(|| "never".into(), unix_to_text),
        p.counts.map_or_else(String::new, |c| format!(
            "<dt>Plans searchable</dt><dd>{} (of {} stored)</dd>",
            c.plans_searchable, c.plans_stored
        )),
    );
    h.push_str("<div class=\"pics\">");
    match &p.runs {
        Some(runs) => render_timeline(h, runs),
        None => {
            let _ = write!(
                h,
                "<figure><figcaption>Last fetches</figcaption>{UNREADABLE}</figure>"
            );
        }
    }
    match &p.months {
        Some(months) => render_months(h, months),
        None => {
            let _ = write!(
                h,
                "<figure><figcaption>Searchable plans by month of start</figcaption>{UNREADABLE}</figure>"
            );
        }
    }
    h.push_str("</div>");
}

/// How an outcome is drawn: fill colour, and whether it failed (failed bars
/// are hollow and marked with a cross, so they read without colour).
fn outcome_style(o: crate::model::Outcome) -> (&'static str, bool) {
    use crate::model::Outcome as O;
    match o {
        O::Ok => ("#2e7d32", false),
        O::NotModified | O::Unchanged => ("#81c784", false),
        O::ParseError | O::TooLarge => ("#e65100", true),
        O::HttpError | O::Timeout | O::NetworkError => ("#c62828", true),
    }
}

/// The last fetches, oldest left: one bar per run, height = duration
/// (scaled to the slowest shown, at least 3 px), colour and shape = outcome.
fn render_timeline(h: &mut String, runs: &[FetchRun]) {
    const W: usize = 12;
    const GAP: usize = 3;
    const H: usize = 60;
    h.push_str("<figure><figcaption>Last fetches (oldest left; height = duration)</figcaption>");
    if runs.is_empty() {
        h.push_str("<p class=\"muted\">No fetch yet.</p></figure>");
        return;
    }
    let max_ms = runs.iter().map(|r| r.duration_ms).max().unwrap_or(0).max(1);
    let width = runs.len() * (W + GAP) + GAP;
    let failed = runs.iter().filter(|r| !r.outcome.is_success()).count();
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" \
         viewBox=\"0 0 {width} {}\" role=\"img\" aria-label=\"{} fetches, {} failed\">\
         <line x1=\"0\" y1=\"{H}\" x2=\"{width}\" y2=\"{H}\" stroke=\"#999\"/>",
        H + 14,
        H + 14,
        runs.len(),
        failed
    );
    for (i, r) in runs.iter().rev().enumerate() {
        let (colour, bad) = outcome_style(r.outcome);
        let bar = ((r.duration_ms as f64 / max_ms as f64) * (H - 4) as f64).round() as usize;
        let bar = bar.clamp(3, H - 1);
        let x = GAP + i * (W + GAP);
        let title = format!(
            "{} UTC: {} (HTTP {}), {} ms{}",
            journal_time(&r.started_at),
            r.outcome,
            r.http_status_text(),
            r.duration_ms,
            r.error
                .as_deref()
                .map(|e| format!(": {}", e.chars().take(200).collect::<String>()))
                .unwrap_or_default()
        );
        let _ = write!(h, "<g><title>{}</title>", esc(&title));
        if bad {
            let _ = write!(
                h,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#fff\" stroke=\"{colour}\" stroke-width=\"2\"/>\
                 <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\" fill=\"{colour}\">\u{00d7}</text>",
                x + 1,
                H - bar + 1,
                W - 2,
                bar - 1,
                x + W / 2,
                H + 12
            );
        } else {
            let _ = write!(
                h,
                "<rect x=\"{x}\" y=\"{}\" width=\"{W}\" height=\"{bar}\" fill=\"{colour}\"/>",
                H - bar
            );
        }
        h.push_str("</g>");
    }
    h.push_str("</svg>");
    let newest = &runs[0];
    let mut by_outcome: Vec<(String, usize)> = Vec::new();
    for r in runs {
        let name = r.outcome.to_string();
        match by_outcome.iter_mut().find(|(o, _)| *o == name) {
            Some((_, n)) => *n += 1,
            None => by_outcome.push((name, 1)),
        }
    }
    let summary: Vec<String> = by_outcome.iter().map(|(o, n)| format!("{n} {o}")).collect();
    let _ = write!(
        h,
        "<p class=\"small\">{} runs: {}; latest {} ({} ms, {}); slowest {} ms. \
         <span class=\"muted\">Filled: success; hollow with \u{00d7}: failure.</span></p></figure>",
        runs.len(),
        esc(&summary.join(", ")),
        newest.outcome,
        newest.duration_ms,
        esc(&journal_time(&newest.started_at)),
        max_ms
    );
}

/// A journal count as a table cell whose title names the reasons
/// (`bare_ampersand: 2, html_entity: 1`), so the page tells what was
/// skipped or repaired without a column per reason.
fn count_cell(total: u64, by_reason: &std::collections::BTreeMap<String, u64>) -> String {
    if by_reason.is_empty() {
        return format!("<td>{total}</td>");
    }
    let reasons: Vec<String> = by_reason.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("<td title=\"{}\">{total}</td>", esc(&reasons.join(", ")))
}

/// How many months the histogram shows at most (the latest ones).
const MONTHS_SHOWN: usize = 36;

/// Searchable plans per month of their local start, as a histogram.
fn render_months(h: &mut String, months: &[(String, u64)]) {
    const W: usize = 14;
    const GAP: usize = 2;
    const H: usize = 60;
    h.push_str("<figure><figcaption>Searchable plans by month of start</figcaption>");
    if months.is_empty() {
        h.push_str("<p class=\"muted\">No searchable plan.</p></figure>");
        return;
    }
    let shown = &months[months.len().saturating_sub(MONTHS_SHOWN)..];
    let max = shown.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let width = shown.len() * (W + GAP) + GAP;
    let total: u64 = months.iter().map(|(_, n)| n).sum();
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" \
         viewBox=\"0 0 {width} {}\" role=\"img\" aria-label=\"{total} searchable plans over {} months\">\
         <line x1=\"0\" y1=\"{H}\" x2=\"{width}\" y2=\"{H}\" stroke=\"#999\"/>",
        H + 14,
        H + 14,
        months.len()
    );
    // A label needs about 44 px: never closer, at most about six.
    let label_every = shown.len().div_ceil(6).max(44usize.div_ceil(W + GAP));
    for (i, (month, n)) in shown.iter().enumerate() {
        let bar = ((*n as f64 / max as f64) * (H - 2) as f64).round() as usize;
        let bar = bar.max(usize::from(*n > 0));
        let x = GAP + i * (W + GAP);
        let _ = write!(
            h,
            "<g><title>{}: {n} plan(s)</title><rect x=\"{x}\" y=\"{}\" width=\"{W}\" height=\"{bar}\" fill=\"#1565c0\"/></g>",
            esc(month),
            H - bar
        );
        if i % label_every == 0 {
            let _ = write!(
                h,
                "<text x=\"{x}\" y=\"{}\" font-size=\"9\" fill=\"#555\">{}</text>",
                H + 11,
                esc(month)
            );
        }
    }
    h.push_str("</svg>");
    let (peak_month, peak) = shown
        .iter()
        .max_by_key(|(_, n)| *n)
        .cloned()
        .unwrap_or_default();
    let _ = write!(
        h,
        "<p class=\"small\">{total} searchable plan(s) in {} month(s) from {} to {}; most in {} ({peak}){}.</p></figure>",
        months.len(),
        esc(&months[0].0),
        esc(&months[months.len() - 1].0),
        esc(&peak_month),
        if months.len() > shown.len() {
            format!("; the last {} months drawn", shown.len())
        } else {
            String::new()
        }
    );
}

fn render_results(h: &mut String, body: &[u8]) {
    let events = match crate::model::decode_events(body) {
        Ok(events) => events,
        Err(e) => {
            let _ = write!(
                h,
                "<p class=\"bad\">The answer could not be read: {}</p>",
                esc(&e.to_string())
            );
            return;
        }
    };
    // The page asks for at most 1001: enough to know there are more.
    if events.len() > 1000 {
        h.push_str("<p>More than 1000 plans</p>");
    } else {
        let _ = write!(h, "<p>{} plan(s)</p>", events.len());
    }
    if events.is_empty() {
        return;
    }
    h.push_str(
        "<table><thead><tr><th>Title</th><th>Start</th><th>End</th><th>Min price</th>\
         <th>Max price</th><th>id</th></tr></thead><tbody>",
    );
    for e in events.iter().take(1000) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&e.title),
            esc(&e.start()),
            esc(&e.end()),
            esc(EventRow::price(&e.min_price)),
            esc(EventRow::price(&e.max_price)),
            esc(&e.id),
        );
    }
    h.push_str("</tbody></table>");
    if events.len() > 1000 {
        h.push_str("<p class=\"muted\">First 1000 shown; use /search for all.</p>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_results_tabled() {
        let info = ServiceInfo {
            version: "1",
            providers: vec![ProviderInfo {
                name: "a".into(),
                url: "http://x/<script>".into(),
                ..ProviderInfo::default()
            }],
            ..ServiceInfo::default()
        };
        let body = br#"{"data":{"events":[{"id":"a","title":"<b>Camela</b>","start_date":"2021-06-30","start_time":"21:00:00","end_date":null,"end_time":null,"min_price":15.00,"max_price":30.00}]},"error":null}"#;
        let html = render(&PageInput {
            info: &info,
            providers: vec![ProviderPanel {
                info: &info.providers[0],
                last_success: None,
                counts: None,
                runs: Some(vec![]),
                months: Some(vec![]),
            }],
            counts: Some(StoreCounts::default()),
            runs: Some(vec![]),
            query: "starts_at=%3Cx%3E",
            search: Some(Ok(body[..].into())),
            metrics_here: false,
            search_here: true,
            store_check: crate::check_state::StoreCheck {
                damage: Some("page <7>".into()),
                ..Default::default()
            },
        });
        assert!(html.contains("DAMAGED: page &lt;7&gt;"), "{html}");
        assert!(
            html.contains("<code>http://x/&lt;script&gt;</code>"),
            "{html}"
        );
        assert!(!html.contains("href=\"/metrics\""));
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;b&gt;Camela&lt;/b&gt;"));
        assert!(html.contains("value=\"&lt;x&gt;\""));
        assert!(html.contains("<td>15.00</td><td>30.00</td>"), "{html}");
        assert!(
            html.contains("href=\"/search?starts_at=%3Cx%3E\""),
            "{html}"
        );
    }

    #[test]
    fn recent_fetches_show_skips_and_repairs_with_their_reasons() {
        use crate::model::{Outcome, PlanCounts};
        let info = ServiceInfo {
            version: "1",
            providers: vec![],
            ..ServiceInfo::default()
        };
        let run = FetchRun {
            provider: "a".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_ms: 5,
            source: "x".into(),
            outcome: Outcome::Ok,
            http_status: Some(200),
            bytes: 10,
            counts: PlanCounts::default(),
            skipped: [("unresolved_reference".to_owned(), 1)].into(),
            repaired: [
                ("bare_ampersand".to_owned(), 2),
                ("html_entity".to_owned(), 3),
            ]
            .into(),
            error: None,
        };
        let html = render(&PageInput {
            info: &info,
            providers: vec![],
            counts: None,
            runs: Some(vec![run]),
            query: "",
            search: None,
            metrics_here: false,
            search_here: true,
            store_check: Default::default(),
        });
        assert!(html.contains("<th>Repaired</th>"), "{html}");
        assert!(
            html.contains("<td title=\"unresolved_reference: 1\">1</td>"),
            "{html}"
        );
        assert!(
            html.contains("<td title=\"bare_ampersand: 2, html_entity: 3\">5</td>"),
            "{html}"
        );
    }

    #[test]
    fn with_several_providers_the_form_offers_one_or_all() {
        let info = ServiceInfo {
            version: "1",
            providers: ["a", "b"]
                .iter()
                .map(|n| ProviderInfo {
                    name: n.to_string(),
                    ..ProviderInfo::default()
                })
                .collect(),
            ..ServiceInfo::default()
        };
        let html = render(&PageInput {
            info: &info,
            providers: vec![],
            counts: None,
            runs: Some(vec![]),
            query: "starts_at=2021-01-01T00%3A00%3A00Z&provider=b",
            search: None,
            metrics_here: true,
            search_here: true,
            store_check: Default::default(),
        });
        assert!(
            html.contains(
                "<option value=\"\">all</option><option>a</option><option selected>b</option>"
            ),
            "{html}"
        );
        assert!(
            html.contains("href=\"/search?starts_at=2021-01-01T00:00:00Z&amp;provider=b\""),
            "{html}"
        );
    }

    #[test]
    fn pictures_draw_one_bar_per_run_and_month_and_say_it_in_text() {
        use crate::model::{Outcome, PlanCounts};
        let run = |outcome, ms, err: Option<&str>| FetchRun {
            provider: "a".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_ms: ms,
            source: "x".into(),
            outcome,
            http_status: None,
            bytes: 0,
            counts: PlanCounts::default(),
            skipped: Default::default(),
            repaired: Default::default(),
            error: err.map(str::to_owned),
        };
        let mut h = String::new();
        render_timeline(
            &mut h,
            &[
                run(Outcome::NetworkError, 10, Some("<refused>")),
                run(Outcome::Ok, 400, None),
                run(Outcome::Unchanged, 0, None),
            ],
        );
        assert_eq!(h.matches("<rect").count(), 3, "{h}");
        assert_eq!(
            h.matches("\u{00d7}</text>").count(),
            1,
            "one failure marked: {h}"
        );
        assert!(
            h.contains("network_error (HTTP -), 10 ms: &lt;refused&gt;</title>"),
            "{h}"
        );
        assert!(
            h.contains("3 runs: 1 network_error, 1 ok, 1 unchanged; latest network_error"),
            "{h}"
        );
        // The slowest bar is the tallest: 56 px.
        assert!(h.contains("height=\"56\" fill=\"#2e7d32\""), "{h}");
        let mut m = String::new();
        let months: Vec<(String, u64)> = (1..=40).map(|i| (format!("20{:02}-01", i), i)).collect();
        render_months(&mut m, &months);
        assert_eq!(m.matches("<rect").count(), MONTHS_SHOWN, "{m}");
        assert!(m.contains("<title>2040-01: 40 plan(s)</title>"), "{m}");
        assert!(m.contains("820 searchable plan(s) in 40 month(s) from 2001-01 to 2040-01; most in 2040-01 (40); the last 36 months drawn"), "{m}");
        let mut e = String::new();
        render_months(&mut e, &[]);
        assert!(e.contains("No searchable plan."));
    }

    #[test]
    fn an_answer_that_does_not_decode_is_said_not_shown_as_no_plans() {
        let mut h = String::new();
        render_results(&mut h, br#"{"data":{"events":[{"id":1"#);
        assert!(h.contains("The answer could not be read: "), "{h}");
        assert!(!h.contains("0 plan(s)"), "{h}");
    }

    #[test]
    fn decoded_events_keep_exact_prices_whatever_the_title_says() {
        let body = br#"{"data":{"events":[{"id":"x","title":"a\"min_price\":1","start_date":"2021-01-01","start_time":"10:00:00","end_date":null,"end_time":null,"min_price":12.340,"max_price":null}]},"error":null}"#;
        let rows = crate::model::decode_events(body).unwrap();
        assert_eq!(EventRow::price(&rows[0].min_price), "12.340");
        assert_eq!(EventRow::price(&rows[0].max_price), "-");
        assert_eq!(rows[0].start(), "2021-01-01 10:00:00");
        assert_eq!(rows[0].end(), "-");
    }
}
