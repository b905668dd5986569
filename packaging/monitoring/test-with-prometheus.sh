#!/usr/bin/env bash
# A real Prometheus scraping a running planbox, with the alert rules of this
# directory loaded; run by hand (Debian: apt-get install prometheus):
#
#   packaging/monitoring/test-with-prometheus.sh
#
#   1. a provider (python3 http.server over a copy of a fixture feed, with
#      one item planbox must skip and one value it must repair), planbox
#      fetching it every 2 s, /metrics on its own listener, and Prometheus
#      (2 s scrapes and rule evaluations, temp config and data dir) on
#      loopback ports of 18600-18699 (OPS_PORT_BASE moves them);
#   2. some /search traffic (200, 304, 400);
#   3. every planbox_* series of /metrics is in Prometheus (job="planbox"),
#      and every metric family metrics.rs can render is among them;
#   4. every alert rule evaluates without error (Prometheus' /api/v1/rules
#      health), and every dashboard expression (variables substituted) runs
#      through `promtool query instant` against it;
#   5. the provider starts sending a broken feed: PlanboxFeedRejected fires
#      (and the data stays what it was).
# Prints what it checks; exit status 0 when everything held. Needs
# prometheus, promtool, python3, curl, and a planbox binary (PLANBOX_BIN,
# default target/release/planbox).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${PLANBOX_BIN:-$repo/target/release/planbox}
base=${OPS_PORT_BASE:-18600}
api=127.0.0.1:$((base + 1)) metrics=127.0.0.1:$((base + 2))
provider=127.0.0.1:$((base + 3)) prom=127.0.0.1:$((base + 10))
for tool in prometheus promtool python3 curl; do
    command -v $tool >/dev/null || { echo "needs $tool (apt-get install prometheus curl)" >&2; exit 2; }
done
[ -x "$bin" ] || { echo "no planbox binary at $bin (cargo build --release, or PLANBOX_BIN)" >&2; exit 2; }

. "$repo/packaging/checks.sh"
tmp=$(mktemp -d)
cleanup() {
    stop_started
    rm -rf "$tmp"
}
trap cleanup EXIT
# q EXPR: Prometheus' instant query result as "labels value" lines.
q() {
    curl -fsS "http://$prom/api/v1/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
for r in json.load(sys.stdin)["data"]["result"]:
    m = r["metric"]
    print(",".join(f"{k}={v}" for k, v in sorted(m.items())) or "{}", r["value"][1])'
}

step "provider, planbox and Prometheus on $api, $metrics, $provider, $prom"
mkdir -p "$tmp/provider" "$tmp/prometheus"
# The fixture, plus an item without a start (skipped) and a title with an
# HTML entity (repaired): every counter family gets samples.
python3 - "$repo/assets/fixtures/response_1.xml" "$tmp/provider/feed.xml" <<'PY'
import sys
feed = open(sys.argv[1], encoding="utf-8").read()
extra = """      <base_plan base_plan_id="9001" sell_mode="online" title="Tom&nbsp;y Jerry">
         <plan plan_start_date="2021-08-01T20:00:00" plan_end_date="2021-08-01T21:00:00" plan_id="9001" sell_from="2021-01-01T00:00:00" sell_to="2021-07-31T20:00:00" sold_out="false">
            <zone zone_id="1" capacity="10" price="12.00" name="Sala" numbered="false" />
         </plan>
         <plan plan_end_date="2021-08-02T21:00:00" plan_id="9002" sell_from="2021-01-01T00:00:00" sell_to="2021-07-31T20:00:00" sold_out="false">
            <zone zone_id="1" capacity="10" price="12.00" name="Sala" numbered="false" />
         </plan>
      </base_plan>
   </output>"""
open(sys.argv[2], "w", encoding="utf-8").write(feed.replace("   </output>", extra, 1))
PY
python3 -m http.server "${provider#*:}" --bind 127.0.0.1 --directory "$tmp/provider" \
    > "$tmp/provider.log" 2>&1 &
started $!
PLANBOX_LOG=warn "$bin" serve --db "$tmp/planbox.db" --listen "$api" --metrics-listen "$metrics" \
    --provider-url "http://$provider/feed.xml" --provider-name acme \
    --fetch-interval 2s --max-backoff 2s > "$tmp/planbox.log" 2>&1 &
started $!
cat > "$tmp/prometheus.yml" <<YML
global:
  scrape_interval: 2s
  evaluation_interval: 2s
rule_files:
  - $here/planbox-alerts.yml
scrape_configs:
  - job_name: planbox
    static_configs:
      - targets: ["$metrics"]
YML
promtool check config "$tmp/prometheus.yml" | sed 's/^/    /'
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/prometheus" \
    --web.listen-address="$prom" > "$tmp/prometheus.log" 2>&1 &
started $!
wait_for "Prometheus ready" 30 curl -fsS "http://$prom/-/ready"
echo "    $(prometheus --version 2>&1 | head -n 1)"
wait_for "planbox ready" 30 curl -fsS "http://$api/ready"
wait_for "a successful fetch" 30 sh -c "curl -fsS http://$metrics/metrics | grep -q 'planbox_fetch_runs_total{provider=\"acme\",outcome=\"ok\"} [1-9]'"
ok "planbox fetched the provider"

step "traffic"
url="http://$api/search?starts_at=2021-01-01T00:00:00Z"
etag=$(curl -fsS -o /dev/null -D - "$url" | sed -n 's/^[Ee][Tt]ag: *//p' | tr -d '\r')
for _ in $(seq 20); do curl -fsS -o /dev/null "$url"; done
code304=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "$url")
code400=$(curl -s -o /dev/null -w '%{http_code}' "http://$api/search?starts_at=soon")
[ "$code304" = 304 ] && [ "$code400" = 400 ] && ok "22 searches: 200s, a 304 and a 400" || fail "304: $code304, 400: $code400"
wait_for "the target up" 30 sh -c "curl -fsS 'http://$prom/api/v1/query?query=up%7Bjob%3D%22planbox%22%7D%3D%3D1' | grep -q '\"value\"'"
# Two scrapes after the traffic, so rates have two points.
sleep 5

step "every planbox series of /metrics is in Prometheus"
curl -fsS "http://$metrics/metrics" > "$tmp/metrics.txt"
names=$(grep -o '^planbox_[a-z0-9_]*' "$tmp/metrics.txt" | sort -u)
scraped=$(grep -c '^planbox_' "$tmp/metrics.txt")
printf '    %-54s %s\n' "series (metric name)" "in /metrics / in Prometheus"
for n in $names; do
    here_n=$(grep -c "^$n[{ ]" "$tmp/metrics.txt" || true)
    there_n=$(q "count({__name__=\"$n\",job=\"planbox\"})" | awk '{print $2}')
    printf '    %-54s %4s / %s\n' "$n" "$here_n" "${there_n:-0}"
    [ "${there_n:-0}" = "$here_n" ] || fail "$n: $here_n in /metrics, ${there_n:-0} in Prometheus"
done
ok "$(wc -w <<<"$names") metric names, $scraped samples per scrape, all stored"
# The families metrics.rs writes a HELP line for (the feed_* pair by a format!).
families="$(grep -o '# HELP planbox_[a-z0-9_]*' "$repo/src/metrics.rs" | awk '{print $3}' | sort -u)
planbox_feed_skipped_total planbox_feed_repaired_total"
for f in $families; do
    grep -q "^$f[_{ ]" "$tmp/metrics.txt" || fail "family $f has no samples"
done
ok "every family metrics.rs renders has samples ($(wc -w <<<"$families") families)"

step "every alert rule evaluates"
wait_for "a rule evaluation" 20 sh -c "curl -fsS http://$prom/api/v1/rules | grep -q lastEvaluation"
sleep 3
curl -fsS "http://$prom/api/v1/rules" | python3 -c '
import json, sys
bad = 0
for g in json.load(sys.stdin)["data"]["groups"]:
    for r in g["rules"]:
        ok = r["health"] == "ok" and not r.get("lastError")
        bad += not ok
        print("    %-5s %-26s %-9s %-8s %s" % ("ok" if ok else "FAIL", r["name"], r["labels"].get("severity", ""),
              r["state"], r.get("lastError", "")))
sys.exit(1 if bad else 0)' || fail "a rule did not evaluate"

step "every dashboard expression runs (promtool query instant)"
python3 "$here/dashboard_check.py" --metrics-rs "$repo/src/metrics.rs" --rules-out "$tmp/dash-rules.yml" \
    --queries-out "$tmp/dash-queries.txt" "$here/planbox-dashboard.json" > /dev/null
n=0 empty=0
while IFS=$'\t' read -r need expr; do
    n=$((n + 1))
    if ! out=$(promtool query instant "http://$prom" "$expr" 2>&1); then
        fail "query $n: $expr: $out"
        continue
    fi
    series=$(grep -c '=>' <<<"$out" || true)
    printf '    %3d series  %s\n' "$series" "$(cut -c1-110 <<<"$expr")"
    if [ "$series" -eq 0 ]; then
        empty=$((empty + 1))
        # Only a panel that says what empty means (noValue) may be empty.
        [ "$need" = may-be-empty ] || fail "query $n returned nothing"
    fi
done < "$tmp/dash-queries.txt"
ok "$n expressions ran, $((n - empty)) with data, $empty empty where the panel says what that means"

step "the provider sends a broken feed: PlanboxFeedRejected fires"
before=$(curl -fsS "$url")
head -c 2000 "$tmp/provider/feed.xml" > "$tmp/provider/feed.xml.part"
mv "$tmp/provider/feed.xml.part" "$tmp/provider/feed.xml"
wait_for "a parse_error" 30 sh -c "curl -fsS http://$metrics/metrics | grep -q 'outcome=\"parse_error\"} [1-9]'"
ok "planbox counts parse_error: $(grep -o 'outcome="parse_error"} [0-9]*' <<<"$(curl -fsS "http://$metrics/metrics")")"
if wait_for "PlanboxFeedRejected firing" 40 sh -c "curl -fsS http://$prom/api/v1/alerts | grep -q '\"alertname\":\"PlanboxFeedRejected\".*\"state\":\"firing\"'"; then
    ok "PlanboxFeedRejected is firing"
else
    fail "PlanboxFeedRejected did not fire"
fi
q 'ALERTS' | sed 's/^/    ALERTS /'
curl -fsS "http://$prom/api/v1/alerts" | python3 -c '
import json, sys
for a in json.load(sys.stdin)["data"]["alerts"]:
    print("    %s %s: %s" % (a["state"], a["labels"]["alertname"], a["annotations"]["summary"]))'
[ "$(curl -fsS "$url")" = "$before" ] && ok "answers unchanged by the broken feed" || fail "answers changed"
echo "    staleness now: $(q 'time() - planbox_last_fetch_success_timestamp_seconds' | awk '{printf "%s %.1f s", $1, $2}')"

if [ $FAILED -eq 0 ]; then echo; echo "prometheus test: ok"; else echo; echo "prometheus test: FAILED"; fi
exit $FAILED
