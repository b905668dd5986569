#!/usr/bin/env bash
# bench/pinned.sh: the request path at the stack's floor, one core each.
#
# Usage: bench/pinned.sh OUTDIR ROUNDS BIN...
#
# Every BIN (a planbox binary) imports the three fixture feeds
# (assets/fixtures/response_{1,2,3}.xml) into its own store under OUTDIR;
# GET /search (no parameters) is then the 849-byte fixture answer. Each
# round, in turn:
#   * nginx, 1 worker, serving those bytes from a file;
#   * examples/bare-tiny-http (2 workers, Response::from_data) serving them;
#   * each BIN: `serve --workers 2` (cached answer after the first request);
# the server pinned with `taskset -c 0`, `taskset -c 1 wrk -t1 -c32
# -d$WRK_DURATION --latency` on the other core. Every server's body is
# checked byte-identical to the first BIN's before it is measured.
# With STRACE=1, one more pass per server under `strace -c -f` (3 s of the
# same wrk) gives syscalls per request (OUTDIR/strace-*.txt).
# Writes OUTDIR/pinned.txt. Servers listen on 127.0.0.1 and are stopped by PID.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/nginx-conf.sh
. "$ROOT/bench/nginx-conf.sh"
OUT=$1 ROUNDS=$2
shift 2
BINS=("$@")
PORT=${PORT:-18097}
D=${WRK_DURATION:-10s}
BARE=${BARE:-$ROOT/target/release/examples/bare-tiny-http}
export PATH=$PATH:/usr/sbin:/sbin
mkdir -p "$OUT"
SUM=$OUT/pinned.txt
: >"$SUM"
trap stop_bench_servers EXIT
say() { echo "$*" | tee -a "$SUM"; }
URL="http://127.0.0.1:$PORT/search"
FIX=("$ROOT"/assets/fixtures/response_{1,2,3}.xml)
for i in "${!BINS[@]}"; do
  rm -f "$OUT/fixture-$i.db"*
  "${BINS[$i]}" import --db "$OUT/fixture-$i.db" "${FIX[@]}" >/dev/null 2>&1
done
NGINX_DIR=$(mktemp -d /tmp/planbox-pinned-nginx.XXXXXX)
chmod 755 "$NGINX_DIR"
write_nginx_conf "$NGINX_DIR" "$PORT"
sed -i 's/^worker_processes 2;/worker_processes 1;/' "$NGINX_DIR/nginx.conf"

start() { # label, then the command
  local label=$1
  shift
  taskset -c 0 "$@" >>"$OUT/server-$label.log" 2>&1 &
  PID=$!
  wait_http "$URL" || { echo "$label did not start" >&2; exit 1; }
  curl -fsS -o "$OUT/body-$label" "$URL"
  if [[ -f $OUT/body-want ]] && ! cmp -s "$OUT/body-$label" "$OUT/body-want"; then
    echo "$label: body differs from the planbox answer" >&2
    exit 1
  fi
}
stop() { kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }
server() { # label -> start it
  case $1 in
    nginx) start nginx nginx -c "$NGINX_DIR/nginx.conf" -p "$NGINX_DIR" ;;
    bare) start bare "$BARE" "127.0.0.1:$PORT" "$NGINX_DIR/www/search" 2 ;;
    bin*) local i=${1#bin}
      start "$1" "${BINS[$i]}" serve --db "$OUT/fixture-$i.db" --listen "127.0.0.1:$PORT" --workers 2 ;;
  esac
}
LABELS=(nginx bare)
for i in "${!BINS[@]}"; do LABELS+=("bin$i"); done
# The reference bytes: the first binary's answer.
server bin0
cp "$OUT/body-bin0" "$OUT/body-want"
cp "$OUT/body-bin0" "$NGINX_DIR/www/search"
chmod -R a+rX "$NGINX_DIR"
stop
say "answer: $(wc -c <"$OUT/body-want") bytes; wrk -t1 -c32 -d$D, server on cpu 0, wrk on cpu 1"
for i in "${!BINS[@]}"; do say "bin$i = ${BINS[$i]}"; done
for ((r = 1; r <= ROUNDS; r++)); do
  for l in "${LABELS[@]}"; do
    server "$l"
    taskset -c 1 wrk -t1 -c32 -d"$D" --latency "$URL" >"$OUT/wrk-$l-$r.txt"
    stop
    say "round $r $l: $(awk '/Requests\/sec/ { print $2 " req/s" } / 99%/ { print "p99 " $2 } /Non-2xx/ { print "NON-2xx " $4 }' "$OUT/wrk-$l-$r.txt" | paste -sd' ')"
  done
done
if [[ ${STRACE:-} == 1 ]]; then
  for l in "${LABELS[@]}"; do
    [[ $l == nginx ]] && continue
    server "$l"
    strace -c -f -o "$OUT/strace-$l.txt" -p "$PID" 2>/dev/null &
    SPID=$!
    sleep 0.5
    taskset -c 1 wrk -t1 -c32 -d3s "$URL" >"$OUT/wrk-strace-$l.txt"
    kill -INT "$SPID"
    wait "$SPID" 2>/dev/null || true
    stop
    n=$(awk '/requests in/ { print $1 }' "$OUT/wrk-strace-$l.txt")
    say "syscalls per request, $l ($n requests): $(awk -v n="$n" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" { t += $4; if ($4 / n >= 0.005) printf "%s %.2f, ", $NF, $4 / n } END { printf "all %.2f", t / n }' "$OUT/strace-$l.txt")"
  done
fi
