#!/usr/bin/env bash
# bench/slow-readers.sh: clients that ask for the whole store and never read.
#
# Usage: bench/slow-readers.sh OUTDIR BIN DB [CLIENTS...]
#
# DB: a store whose whole-store answer is far larger than the kernel's
# socket buffers (e.g. ~38 MB: `examples/synth-feed --base-plans 100000
# --plans 2 --zones 3 > f.xml; planbox import --db DB f.xml`). For each
# count in CLIENTS (default: 2 6 40), a fresh `serve --workers 2` on
# 127.0.0.1 and bench/slow-readers.py: that many clients with a 4 KiB
# receive buffer ask GET /search and read nothing; then /health and a
# one-day /search are timed on fresh connections, the server's RSS, peak
# RSS and threads read from /proc, and its threads again after the
# clients closed. Writes OUTDIR/slow-readers.txt (one JSON line per count).
# Run it under `flock /tmp/planbox-bench.lock`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/nginx-conf.sh
. "$ROOT/bench/nginx-conf.sh"
OUT=$1 BIN=$2 DB=$3
shift 3
COUNTS=("$@")
[[ ${#COUNTS[@]} -gt 0 ]] || COUNTS=(2 6 40)
PORT=${PORT:-18097}
URL="http://127.0.0.1:$PORT"
mkdir -p "$OUT"
SUM=$OUT/slow-readers.txt
: >"$SUM"
trap stop_bench_servers EXIT

for n in "${COUNTS[@]}"; do
  "$BIN" serve --db "$DB" --listen "127.0.0.1:$PORT" --workers 2 >"$OUT/server-$n.log" 2>&1 &
  PID=$!
  wait_http "$URL/health" || { echo "planbox did not start" >&2; exit 1; }
  bytes=$(curl -fsS -o /dev/null -w '%{size_download}' "$URL/search")
  python3 "$ROOT/bench/slow-readers.py" --port "$PORT" --pid "$PID" --clients "$n" \
    | sed "s/^{/{\"whole_store_bytes\": $bytes, /" | tee -a "$SUM"
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
done
