#!/usr/bin/env bash
# bench/search-scale.sh: /search at several store sizes, planbox vs nginx.
#
# Usage: bench/search-scale.sh OUTDIR LABEL=DB:DAYS... [-- BINARY...]
#
# For each store LABEL (a planbox store DB whose plans spread over DAYS days
# from 2021-01-01) and each planbox BINARY (default target/release/planbox):
#   * `serve` without a provider (no fetching), wrk on fixed windows
#     (day, week, month from 2021-02-01; "all" for the fixture store), i.e.
#     the cached path, and on random one-week windows (bench/random-window.lua,
#     nearly every request a cache miss: the SQLite read path);
#   * nginx (2 workers, sendfile) serving the same answer bytes, same wrk.
# wrk: -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION --latency (2/64/10s).
# Writes OUTDIR/wrk-LABEL-QUERY-WHO.txt and OUTDIR/body-LABEL-QUERY.json.
# Servers listen on 127.0.0.1 only and are stopped by PID.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/nginx-conf.sh
. "$ROOT/bench/nginx-conf.sh"
OUT=$1; shift
mkdir -p "$OUT"
STORES=()
while (($#)) && [[ $1 != -- ]]; do STORES+=("$1"); shift; done
if (($#)); then shift; fi
BINS=("$@")
if ((${#BINS[@]} == 0)); then BINS=("$ROOT/target/release/planbox"); fi
PORT=${PORT:-18090}
NGINX_PORT=${NGINX_PORT:-18091}
T=${WRK_THREADS:-2} C=${WRK_CONNECTIONS:-64} D=${WRK_DURATION:-10s}
export PATH=$PATH:/usr/sbin:/sbin
SERVE_PID="" NGINX_PID="" NGINX_DIR=""
cleanup() {
  for pid in $SERVE_PID $NGINX_PID; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  if [[ -n $NGINX_DIR ]]; then rm -rf "$NGINX_DIR"; fi
}
trap cleanup EXIT
wait_http() {
  for ((i = 0; i < 300; i++)); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
queries() { # label -> name=query lines
  if [[ $1 == fixture ]]; then echo "all="; return; fi
  echo "day=starts_at=2021-02-01T00:00:00&ends_at=2021-02-02T00:00:00"
  echo "week=starts_at=2021-02-01T00:00:00&ends_at=2021-02-08T00:00:00"
  echo "month=starts_at=2021-02-01T00:00:00&ends_at=2021-03-01T00:00:00"
}
NGINX_DIR=$(mktemp -d /tmp/planbox-scale-nginx.XXXXXX)
chmod 755 "$NGINX_DIR"; mkdir -p "$NGINX_DIR/www" "$NGINX_DIR/logs" "$NGINX_DIR/tmp"
for s in "${STORES[@]}"; do
  label=${s%%=*} rest=${s#*=}; db=${rest%%:*} days=${rest#*:}
  for bin in "${BINS[@]}"; do
    who=$(basename "$(dirname "$bin")")-$(basename "$bin")
    "$bin" serve --db "$db" --listen "127.0.0.1:$PORT" >"$OUT/serve-$label-$who.log" 2>&1 &
    SERVE_PID=$!
    wait_http "http://127.0.0.1:$PORT/ready" || { echo "serve failed" >&2; exit 1; }
    while IFS= read -r q; do
      name=${q%%=*} qs=${q#*=}
      curl -fsS -o "$OUT/body-$label-$name.json" "http://127.0.0.1:$PORT/search?$qs"
      cp "$OUT/body-$label-$name.json" "$NGINX_DIR/www/$label-$name.json"
      echo "== $label $name $who ($(wc -c <"$OUT/body-$label-$name.json") bytes)" >&2
      wrk -t"$T" -c"$C" -d"$D" --latency "http://127.0.0.1:$PORT/search?$qs" >"$OUT/wrk-$label-$name-$who.txt"
    done < <(queries "$label")
    if [[ $label != fixture ]]; then
      echo "== $label random-week $who" >&2
      DAYS=$days WINDOW_DAYS=7 wrk -t"$T" -c"$C" -d"$D" --latency -s "$ROOT/bench/random-window.lua" \
        "http://127.0.0.1:$PORT" >"$OUT/wrk-$label-randweek-$who.txt"
    fi
    kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || true; SERVE_PID=""
  done
done
chmod -R a+rX "$NGINX_DIR/www"
write_nginx_conf "$NGINX_DIR" "$NGINX_PORT"
nginx -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" &
NGINX_PID=$!
sleep 0.5
for f in "$NGINX_DIR"/www/*.json; do
  n=$(basename "$f" .json)
  echo "== nginx $n" >&2
  wrk -t"$T" -c"$C" -d"$D" --latency "http://127.0.0.1:$NGINX_PORT/$n.json" >"$OUT/wrk-$n-nginx.txt"
done
kill -QUIT "$NGINX_PID"; wait "$NGINX_PID" || true; NGINX_PID=""
