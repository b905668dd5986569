#!/usr/bin/env bash
# bench/connections.sh: the connection model under many clients at once.
#
# Usage: bench/connections.sh OUTDIR BIN [IDLE SLOW DURATION]
#
# Runs bench/connections.py (IDLE keep-alive clients that stay idle, asking
# again every ~7 s, below the 10 s idle timeout; SLOW slowloris clients
# that never finish a head and are replaced when closed; a probe process
# asking GET /health on a fresh connection every 10 ms) against:
#   * BIN (a planbox binary): `serve --workers 2` over a store imported
#     from the three fixture feeds;
#   * nginx (2 workers, worker_connections 16384) serving planbox's
#     /health bytes from a file, checked byte-identical before timing.
# Each server is pinned to cpu 0 and the load to cpu 1 (taskset). Defaults:
# IDLE=10000 SLOW=1000 DURATION=20 (seconds). Writes OUTDIR/connections.txt
# (one JSON line per server). Heavy: run it under
# `flock /tmp/planbox-bench.lock`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/nginx-conf.sh
. "$ROOT/bench/nginx-conf.sh"
OUT=$1 BIN=$2
IDLE=${3:-10000} SLOW=${4:-1000} DURATION=${5:-20}
PORT=${PORT:-18098}
export PATH=$PATH:/usr/sbin:/sbin
mkdir -p "$OUT"
SUM=$OUT/connections.txt
: >"$SUM"
trap stop_bench_servers EXIT
URL="http://127.0.0.1:$PORT"
# The load client needs IDLE + SLOW descriptors, the server as many.
ulimit -n "$(ulimit -Hn)"

rm -f "$OUT/fixture.db"*
"$BIN" import --db "$OUT/fixture.db" "$ROOT"/assets/fixtures/response_{1,2,3}.xml >/dev/null 2>&1

run() { # label
  taskset -c 1 python3 "$ROOT/bench/connections.py" --url "$URL" --pid "$PID" \
    --expect "$OUT/health-body" --idle "$IDLE" --slow "$SLOW" --duration "$DURATION" \
    | sed "s/^{/{\"server\": \"$1\", /" | tee -a "$SUM"
}

taskset -c 0 "$BIN" serve --db "$OUT/fixture.db" --listen "127.0.0.1:$PORT" --workers 2 \
  >"$OUT/server-planbox.log" 2>&1 &
PID=$!
wait_http "$URL/health" || { echo "planbox did not start" >&2; exit 1; }
curl -fsS -o "$OUT/health-body" "$URL/health"
run planbox
kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""

NGINX_DIR=$(mktemp -d /tmp/planbox-connections-nginx.XXXXXX)
chmod 755 "$NGINX_DIR"
write_nginx_conf "$NGINX_DIR" "$PORT"
sed -i 's/worker_connections 1024;/worker_connections 16384;/; s/^worker_processes 2;/worker_processes 2;\nworker_rlimit_nofile 40000;/' "$NGINX_DIR/nginx.conf"
cp "$OUT/health-body" "$NGINX_DIR/www/health"
chmod -R a+rX "$NGINX_DIR"
taskset -c 0 nginx -c "$NGINX_DIR/nginx.conf" -p "$NGINX_DIR" >"$OUT/server-nginx.log" 2>&1 &
PID=$!
wait_http "$URL/health" || { echo "nginx did not start" >&2; exit 1; }
run nginx
