#!/usr/bin/env bash
# bench/answers.sh: whole-store answers (the widest window) side by side.
#
# Usage: bench/answers.sh OUTDIR AFTER_BIN AFTER_DB [BEFORE_BIN BEFORE_DB]
#
# AFTER_DB / BEFORE_DB: stores with the same plans, each in the schema its
# binary expects (e.g. a 1M-plan store: `examples/synth-feed --base-plans
# 500000 --plans 2 --zones 3 > big.xml; planbox import --max-feed-bytes 1GiB
# --db DB big.xml`). For each binary, `serve --workers 2` on 127.0.0.1:
#   1. one client pulls GET /search (no parameters) 3 times: first byte,
#      total time, size (curl -w); the server's peak RSS (VmHWM) after;
#   2. a fresh server, 8 clients pull it at once: peak RSS, and every body's
#      sha256 must equal the single client's;
#   3. (AFTER only) gzip and br answers decode to the same bytes; walking
#      `limit=100000` pages through `Link` yields exactly the whole answer's
#      ids (bench/walk-pages.py);
#   4. wrk -t2 -c64 -d${WRK_DURATION:-10s} on fixed windows (day ~265 KB,
#      week ~1.9 MB on the 1M store: the cached path) and on random one-day
#      windows (bench/random-window.lua: nearly all cache misses).
# Then nginx (1 worker, sendfile) serves the AFTER body from a file: the
# transfer-speed anchor, 5 rounds alternating with AFTER, same curl.
# Writes OUTDIR/summary.txt.
# Servers are stopped by PID at exit; nothing listens beyond loopback.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/nginx-conf.sh
. "$ROOT/bench/nginx-conf.sh"
OUT=$1 AFTER_BIN=$2 AFTER_DB=$3 BEFORE_BIN=${4:-} BEFORE_DB=${5:-}
PORT=${PORT:-18095} NGINX_PORT=${NGINX_PORT:-18096}
D=${WRK_DURATION:-10s}
export PATH=$PATH:/usr/sbin:/sbin
mkdir -p "$OUT"
SUM=$OUT/summary.txt
: >"$SUM"
SERVE_PID="" NGINX_PID="" NGINX_DIR=""
cleanup() {
  for pid in $SERVE_PID $NGINX_PID; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  if [[ -n $NGINX_DIR ]]; then rm -rf "$NGINX_DIR"; fi
}
trap cleanup EXIT
say() { echo "$*" | tee -a "$SUM"; }
wait_http() {
  for ((i = 0; i < 600; i++)); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
start() { # bin db
  "$1" serve --db "$2" --listen "127.0.0.1:$PORT" --workers 2 >>"$OUT/serve.log" 2>&1 &
  SERVE_PID=$!
  wait_http "http://127.0.0.1:$PORT/ready" || { echo "serve failed" >&2; exit 1; }
}
stop() { kill -TERM "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true; SERVE_PID=""; }
kib() { awk '/^(VmHWM|VmRSS)/ { printf "%s %d MiB  ", $1, $2 / 1024 }' "/proc/$1/status"; }
URL="http://127.0.0.1:$PORT/search"

run_one() { # who bin db
  local who=$1 bin=$2 db=$3
  say "== $who: $bin on $db"
  start "$bin" "$db"
  say "   idle: $(kib "$SERVE_PID")"
  for r in 1 2 3; do
    say "   one client, round $r: $(curl -sS -o "$OUT/body-$who.json" -w 'first byte %{time_starttransfer} s, total %{time_total} s, %{size_download} bytes, %{speed_download} B/s' "$URL")"
  done
  say "   after one client: $(kib "$SERVE_PID")"
  stop
  sha256sum "$OUT/body-$who.json" | cut -d' ' -f1 >"$OUT/sha-$who"
  start "$bin" "$db"
  local pids=()
  for c in 1 2 3 4 5 6 7 8; do
    (curl -sS "$URL" | sha256sum | cut -d' ' -f1 >"$OUT/sha-$who-$c") &
    pids+=($!)
  done
  local t0=$SECONDS
  wait "${pids[@]}"
  local same=yes
  for c in 1 2 3 4 5 6 7 8; do cmp -s "$OUT/sha-$who-$c" "$OUT/sha-$who" || same=NO; done
  say "   8 clients at once: $((SECONDS - t0)) s, identical bodies: $same, $(kib "$SERVE_PID")"
  if [[ $who == after ]]; then
    for enc in gzip br; do
      local dec="gzip -dc"
      [[ $enc == br ]] && dec="brotli -dc"
      local got
      got=$(curl -sS -H "Accept-Encoding: $enc" -w '' "$URL" | $dec | sha256sum | cut -d' ' -f1)
      say "   $enc: decodes to the identity body: $([[ $got == $(cat "$OUT/sha-$who") ]] && echo yes || echo NO), $(curl -sS -o /dev/null -H "Accept-Encoding: $enc" -w '%{size_download} bytes in %{time_total} s' "$URL")"
    done
    say "   pages: $(python3 "$ROOT/bench/walk-pages.py" "http://127.0.0.1:$PORT" 100000 "$OUT/body-$who.json")"
  fi
  for q in "day=starts_at=2021-02-01T00:00:00&ends_at=2021-02-02T00:00:00" \
    "week=starts_at=2021-02-01T00:00:00&ends_at=2021-02-08T00:00:00"; do
    local name=${q%%=*} qs=${q#*=}
    wrk -t2 -c64 -d"$D" --latency "$URL?$qs" >"$OUT/wrk-$who-$name.txt"
    say "   wrk $name: $(awk '/Requests\/sec/ { print $2 " req/s" } / 99%/ { print "p99 " $2 }' "$OUT/wrk-$who-$name.txt" | paste -sd' ')"
  done
  WINDOW_DAYS=1 wrk -t2 -c64 -d"$D" --latency -s "$ROOT/bench/random-window.lua" "http://127.0.0.1:$PORT" >"$OUT/wrk-$who-random-day.txt"
  say "   wrk random one-day windows (uncached): $(awk '/Requests\/sec/ { print $2 " req/s" } / 99%/ { print "p99 " $2 }' "$OUT/wrk-$who-random-day.txt" | paste -sd' ')"
  stop
}

if [[ -n $BEFORE_BIN ]]; then run_one before "$BEFORE_BIN" "$BEFORE_DB"; fi
run_one after "$AFTER_BIN" "$AFTER_DB"

NGINX_DIR=$(mktemp -d /tmp/planbox-answers-nginx.XXXXXX)
chmod 755 "$NGINX_DIR"
write_nginx_conf "$NGINX_DIR" "$NGINX_PORT"
sed -i 's/^worker_processes 2;/worker_processes 1;/' "$NGINX_DIR/nginx.conf"
cp "$OUT/body-after.json" "$NGINX_DIR/www/all.json"
chmod -R a+rX "$NGINX_DIR"
nginx -c "$NGINX_DIR/nginx.conf" -p "$NGINX_DIR" &
NGINX_PID=$!
wait_http "http://127.0.0.1:$NGINX_PORT/all.json" || { echo "nginx failed" >&2; exit 1; }
# The anchor must answer 200 with exactly planbox's bytes (a worker that
# cannot read the file answers 403/404 very fast).
nginx_sha=$(curl -fsS "http://127.0.0.1:$NGINX_PORT/all.json" | sha256sum | cut -d' ' -f1)
if [[ $nginx_sha != "$(cat "$OUT/sha-after")" ]]; then
  echo "nginx does not serve planbox's body (sha256 $nginx_sha)" >&2
  exit 1
fi
say "== nginx (1 worker, sendfile) serving body-after.json, rounds interleaved with AFTER"
start "$AFTER_BIN" "$AFTER_DB"
curl -sS -o /dev/null "$URL"
for r in 1 2 3 4 5; do
  n=$(curl -sS -o /dev/null -w '%{time_total}' "http://127.0.0.1:$NGINX_PORT/all.json")
  p=$(curl -sS -o /dev/null -w '%{time_total}' "$URL")
  say "   round $r: nginx $n s, planbox $p s, planbox speed / nginx speed $(awk -v n="$n" -v p="$p" 'BEGIN { printf "%.2f", n / p }')"
done
stop
