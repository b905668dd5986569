#!/usr/bin/env bash
# bench/plan-heavy.sh: the per-plan costs on a plan-heavy feed (by default
# 500k base plans x 2 plans x 3 zones: 1M plans, ~559 MB), for one or more
# planbox binaries in the same run, against two anchors timed on the same
# file right before each import: the raw attribute pass (`xml-scan --raw`:
# quick-xml visiting every attribute's raw bytes, the floor of any reader)
# and the bare scan (`xml-scan`: the same, unescaping every value).
#
# For each binary, ROUNDS times: cold `import` into a new store (wall time,
# CPU time, peak RSS), the same with the feed's pages also evicted from the
# page cache (and the raw pass timed evicted too), store bytes (database +
# WAL after the import), re-`import` of the unchanged feed, `serve` until
# the first 200 on /ready with the store's
# pages evicted from the page cache (posix_fadvise DONTNEED on the store
# files; first start after the import, then a restart after a clean stop),
# and `import` of the feed with a `--max-feed-bytes` below its size.
# Every timed step runs under `flock /tmp/planbox-bench.lock`.
#
# Usage: bench/plan-heavy.sh OUT FEED LABEL=PLANBOX [LABEL=PLANBOX...]
#   ROUNDS (3), PORT (18099), SCAN (target/release/examples/xml-scan),
#   MAX_FEED (1GiB: the --max-feed-bytes of the imports; the default limit,
#   512 MiB, is below this feed's size)
# Make the feed with:
#   cargo run --release --example synth-feed -- --base-plans 500000 --plans 2 \
#       --zones 3 --out FEED
# Prints one line per measure: `label measure round value unit [...]`, and
# the machine's load average before each round.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$1 FEED=$2; shift 2
ROUNDS=${ROUNDS:-3} PORT=${PORT:-18099} MAX_FEED=${MAX_FEED:-1GiB}
SCAN=${SCAN:-$ROOT/target/release/examples/xml-scan}
LOCK=/tmp/planbox-bench.lock
mkdir -p "$OUT"

evict() {
  python3 -c 'import os,sys
for p in sys.argv[1:]:
    if os.path.exists(p):
        fd=os.open(p,os.O_RDONLY); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED); os.close(fd)' "$@"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
say() { echo "$*" | tee -a "$OUT/results.txt"; }

# wall seconds, peak RSS (KiB) and CPU seconds (user + system) of a
# command, from GNU time.
timed() {
  local tf=$OUT/time.$$
  flock "$LOCK" /usr/bin/time -f '%e %M %U %S' -o "$tf" "$@" >/dev/null 2>"$OUT/last.err" || true
  tail -1 "$tf" | awk '{print $1, $2, $3 + $4}'
}

ratio() { echo "$1 / $2" | bc -l | cut -c1-4; }

# Times the raw pass and the scan, then the command, and says all three and
# the ratios: on a shared machine only anchors taken right beside a run are
# comparable. With EVICT_FEED=1 the feed leaves the page cache before the
# raw pass and before the command (the scan is then not timed).
beside_scan() {
  local label=$1 measure=$2 r=$3; shift 3
  local rw rc sw sc w kb c
  [[ ${EVICT_FEED:-} ]] && evict "$FEED"
  read -r rw _ rc < <(timed "$SCAN" --raw "$FEED")
  if [[ ${EVICT_FEED:-} ]]; then
    evict "$FEED"
    read -r w kb c < <(timed "$@")
    say "$label $measure $r $w s (raw $rw s: $(ratio "$w" "$rw")x; cpu $c s, raw cpu $rc s)"
  else
    read -r sw _ sc < <(timed "$SCAN" "$FEED")
    read -r w kb c < <(timed "$@")
    say "$label $measure $r $w s (raw $rw s: $(ratio "$w" "$rw")x; scan $sw s: $(ratio "$w" "$sw")x; cpu $c s, raw cpu $rc s, scan cpu $sc s)"
  fi
  say "$label $measure-rss $r $((kb / 1024)) MiB"
}

ready_ms() {
  local bin=$1 db=$2 t0 t1 pid
  evict "$db" "$db-wal" "$db-shm"
  t0=$(now_ms)
  "$bin" serve --db "$db" --listen "127.0.0.1:$PORT" >/dev/null 2>>"$OUT/serve.err" &
  pid=$!
  until curl -fs -o /dev/null "http://127.0.0.1:$PORT/ready" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "serve exited" >&2; return 1; }
    sleep 0.005
  done
  t1=$(now_ms)
  kill -TERM "$pid"; wait "$pid" || true
  echo $((t1 - t0))
}

for ((r = 1; r <= ROUNDS; r++)); do
  say "load $r $(cut -d' ' -f1-3 /proc/loadavg)"
  for spec in "$@"; do
    label=${spec%%=*} bin=${spec#*=}
    db=$OUT/$label.db
    rm -f "$db" "$db-wal" "$db-shm"
    EVICT_FEED=1 beside_scan "$label" import-feed-evicted "$r" "$bin" import --max-feed-bytes "$MAX_FEED" --db "$db" "$FEED"
    rm -f "$db" "$db-wal" "$db-shm"
    beside_scan "$label" import "$r" "$bin" import --max-feed-bytes "$MAX_FEED" --db "$db" "$FEED"
    bytes=$(($(stat -c %s "$db") + $(stat -c %s "$db-wal" 2>/dev/null || echo 0)))
    plans=$(sqlite3 "$db" "SELECT value FROM meta WHERE key = 'plans_stored'" 2>/dev/null || echo 0)
    say "$label store-bytes $r $bytes B"
    [[ $plans -gt 0 ]] && say "$label bytes-per-plan $r $((bytes / plans)) B"
    beside_scan "$label" reimport "$r" "$bin" import --max-feed-bytes "$MAX_FEED" --db "$db" "$FEED"
    say "$label ready-first-cold $r $(flock "$LOCK" bash -c "$(declare -f evict now_ms ready_ms); OUT=$OUT PORT=$PORT ready_ms $bin $db") ms"
    say "$label ready-restart-cold $r $(flock "$LOCK" bash -c "$(declare -f evict now_ms ready_ms); OUT=$OUT PORT=$PORT ready_ms $bin $db") ms"
    small=$(($(stat -c %s "$FEED") / 4))
    read -r s _ < <(timed "$bin" import --db "$db" --max-feed-bytes "$small" "$FEED")
    say "$label over-limit-import $r $s s"
  done
done
