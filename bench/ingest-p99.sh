#!/usr/bin/env bash
# bench/ingest-p99.sh: /search latency with and without a full ingest
# running through the fetch loop at the same time.
#
# Usage: bench/ingest-p99.sh OUTDIR DB FEED_A FEED_B [PLANBOX]
#
# 1. `planbox serve` on a copy of DB without a provider: wrk on a one-week
#    window (the quiet figure).
# 2. The same with --provider-url pointing at bench/alternating-feed.py
#    (FEED_A, FEED_B, FEED_A, ... each fetch a full, different feed) and
#    --fetch-interval 1s: wrk again while ingests run back to back.
# Both runs use the same wrk command (-t2 -c64 -d$WRK_DURATION --latency).
# Writes OUTDIR/p99-quiet.txt, OUTDIR/p99-ingest.txt and the serve logs
# (the fetch runs with their durations are in p99-ingest-serve.log).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$1 DB=$2 A=$3 B=$4 PLANBOX=${5:-$ROOT/target/release/planbox}
PORT=${PORT:-18095} FEED_PORT=${FEED_PORT:-18096} D=${WRK_DURATION:-20s}
Q="starts_at=2021-06-01T00:00:00&ends_at=2021-06-08T00:00:00"
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/planbox-p99.XXXXXX)
SERVE_PID="" FEED_PID=""
cleanup() {
  for pid in $SERVE_PID $FEED_PID; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
wait_http() {
  for ((i = 0; i < 300; i++)); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
serve() { # name, extra args...
  local name=$1; shift
  cp "$DB" "$WORK/planbox.db"; rm -f "$WORK/planbox.db-wal" "$WORK/planbox.db-shm"
  "$PLANBOX" serve --db "$WORK/planbox.db" --listen "127.0.0.1:$PORT" "$@" >"$OUT/p99-$name-serve.log" 2>&1 &
  SERVE_PID=$!
  wait_http "http://127.0.0.1:$PORT/ready"
}
stop_serve() { kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || true; SERVE_PID=""; }

serve quiet
wrk -t2 -c64 -d"$D" --latency "http://127.0.0.1:$PORT/search?$Q" >"$OUT/p99-quiet.txt"
stop_serve

python3 "$ROOT/bench/alternating-feed.py" "$FEED_PORT" "$A" "$B" 2>"$OUT/p99-feed.log" &
FEED_PID=$!
sleep 0.5
serve ingest --provider-url "http://127.0.0.1:$FEED_PORT/feed.xml" --fetch-interval 1s
# Let the first fetch start (its download) before measuring.
sleep 1
wrk -t2 -c64 -d"$D" --latency "http://127.0.0.1:$PORT/search?$Q" >"$OUT/p99-ingest.txt"
stop_serve
grep -E "Requests/sec|99%" "$OUT"/p99-quiet.txt "$OUT"/p99-ingest.txt
grep -c '"fetch run"\|fetch run' "$OUT/p99-ingest-serve.log" || true
