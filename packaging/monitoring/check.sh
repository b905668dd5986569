#!/usr/bin/env bash
# Offline checks of the monitoring kit (no Prometheus running, no network):
#   1. promtool check rules planbox-alerts.yml
#   2. promtool test rules planbox-alerts.test.yml (each alert fires on its
#      shape, at its time, and stays quiet on a healthy box)
#   3. the dashboard: provisioning format, $datasource/$job/$instance,
#      $__rate_interval, only series src/metrics.rs renders
#      (dashboard_check.py), and every PromQL expression in it parsed by
#      `promtool check rules`; the checker itself must reject a broken copy.
# Needs promtool (Debian: apt-get install prometheus) and python3. .ci/run
# runs this when promtool is on the PATH and says it skipped it otherwise.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
command -v promtool >/dev/null || { echo "check: promtool not found (apt-get install prometheus)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "--- promtool check rules planbox-alerts.yml"
promtool check rules "$here/planbox-alerts.yml"
echo "--- promtool test rules planbox-alerts.test.yml"
(cd "$here" && promtool test rules planbox-alerts.test.yml)
echo "--- dashboard"
python3 "$here/dashboard_check.py" --metrics-rs "$repo/src/metrics.rs" \
    --rules-out "$tmp/dashboard-rules.yml" "$here/planbox-dashboard.json" \
    "$here/planbox-alerts.yml" "$here/planbox-alerts.test.yml"
promtool check rules "$tmp/dashboard-rules.yml"
# The checker can fail: a window that is not $__rate_interval and a series
# planbox does not render must both be reported.
sed 's/planbox_store_damaged/planbox_store_broken/; 0,/\[\$__rate_interval\]/s//[5m]/' \
    "$here/planbox-dashboard.json" > "$tmp/broken.json"
if python3 "$here/dashboard_check.py" --metrics-rs "$repo/src/metrics.rs" \
    --rules-out "$tmp/broken-rules.yml" "$tmp/broken.json" 2> "$tmp/broken.err" > /dev/null; then
    echo "check: dashboard_check.py accepted a broken dashboard" >&2
    exit 1
fi
grep -q 'planbox_store_broken is not a series' "$tmp/broken.err"
grep -q 'window \[5m\]' "$tmp/broken.err"
echo "    (a broken copy is rejected: $(wc -l < "$tmp/broken.err") problems)"
echo "monitoring: ok"
