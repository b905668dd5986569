#!/usr/bin/env bash
# bench/run.sh: planbox's benchmark kit (issue: performance at scale).
#
# Usage: bench/run.sh [--big] [--plan-heavy] [--reuse] [--no-install] [-h|--help]
#
#   --big         also generate and measure the ~1 GB feed (25000 base plans)
#   --plan-heavy  also generate the plan-heavy feed (500000 base plans x 2
#                 plans x 3 zones: 1M plans, ~559 MB) and run
#                 bench/plan-heavy.sh on it (ingest beside the scan, store
#                 bytes, cold start, the size limit; results in
#                 bench/out/plan-heavy/results.txt)
#   --reuse       keep feeds already in bench/out/ (the generator is
#                 deterministic, so same flags = same bytes) instead of
#                 writing them again
#   --no-install  fail instead of installing missing tools with apt-get
#
# Steps, in order:
#   1. ensure_tools: installs wrk, nginx, hyperfine, time (Debian packages)
#      if missing: one `apt-get update`, then `apt-get install -y`.
#   2. build: cargo build --release --examples --bins
#   3. gen_feeds: examples/synth-feed writes feeds into bench/out/ (plans
#      dialect, 2 plans x 200 zones per base plan, seed $SEED):
#        small    500 base plans  (~20 MB)
#        medium  5000 base plans  (~196 MB)
#        big    25000 base plans  (~980 MB, only with --big)
#      each as generation 0 and 1 (the next provider response: ~1% of the
#      plans changed, ~1% dropped). Time and peak RSS via /usr/bin/time -v.
#   4. bench_baseline: examples/xml-scan (bare quick-xml scan, the ingest
#      baseline) timed with hyperfine --warmup 1 --runs 3, peak RSS via
#      /usr/bin/time -v.
#   5. bench_import: `planbox import --db DB FILE` into a fresh store, again
#      for a re-import of the unchanged feed, and the next generation over
#      the generation-0 store. Goal: import <= 3x baseline.
#   6. bench_search: `planbox serve` on the medium store, wrk on /search for
#      each query in QUERIES; the response bytes are saved.
#   7. bench_search_vs_nginx: nginx (foreground, 2 workers, loopback) serving
#      those same bytes from files, same wrk command: the ceiling to compare to.
#   8. bench/report.py prints the table of figures and ratios and writes
#      bench/out/summary.json.
# Steps 5-7 need a planbox binary with `import` and `serve` subcommands
# (target/release/planbox, or $PLANBOX); they are skipped with a message
# when it has none.
#
# Environment (defaults): SEED (42), PORT (18080, planbox), NGINX_PORT
# (18081), WRK_THREADS (2), WRK_CONNECTIONS (64), WRK_DURATION (10s),
# IMPORT_RUNS (3; 1 for the big feed), PLANBOX (target/release/planbox),
# MAX_FEED (2GiB: `import --max-feed-bytes`, the big feed is over the
# default 512MiB).
#
# Everything it writes goes to bench/out/ (gitignored), except nginx's
# scratch directory, which lives in a mktemp dir under /tmp and is removed
# at exit. Servers it starts listen on 127.0.0.1 only and are stopped by
# PID at exit. Machine note: on a 2-core box wrk and the server share the
# cores, so rps figures are comparable to each other, not absolute.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/nginx-conf.sh
. "$ROOT/bench/nginx-conf.sh"
OUT=$ROOT/bench/out
REL=$ROOT/target/release
PLANBOX=${PLANBOX:-$REL/planbox}
SEED=${SEED:-42}
PORT=${PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-64}
WRK_DURATION=${WRK_DURATION:-10s}
IMPORT_RUNS=${IMPORT_RUNS:-3}
# The ~1 GB feed is over planbox's default 512MiB limit.
MAX_FEED=${MAX_FEED:-2GiB}
export PATH=$PATH:/usr/sbin:/sbin

# Search queries: label=query string. Feeds start on 2021-01-01 and spread
# over 730 days, about 14 plans a day.
QUERIES=(
  "day=starts_at=2021-06-01T00:00:00&ends_at=2021-06-02T00:00:00"
  "week=starts_at=2021-06-01T00:00:00&ends_at=2021-06-08T00:00:00"
  "month=starts_at=2021-06-01T00:00:00&ends_at=2021-07-01T00:00:00"
)

BIG=""
PLAN_HEAVY=""
REUSE=""
NO_INSTALL=""
for arg in "$@"; do
  case $arg in
    --big) BIG=1 ;;
    --plan-heavy) PLAN_HEAVY=1 ;;
    --reuse) REUSE=1 ;;
    --no-install) NO_INSTALL=1 ;;
    -h | --help)
      sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "run.sh: unknown argument: $arg (see --help)" >&2
      exit 2
      ;;
  esac
done

log() { printf '\n==> %s\n' "$*" >&2; }
die() {
  echo "run.sh: $*" >&2
  exit 1
}

# Processes and files this script started or made, cleaned up at exit.
SERVE_PID=""
NGINX_PID=""
NGINX_DIR=""
cleanup() {
  local pid
  for pid in "$SERVE_PID" "$NGINX_PID"; do
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [[ -n $NGINX_DIR ]]; then rm -rf "$NGINX_DIR"; fi
}
trap cleanup EXIT

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi

# --- 1. tools ---------------------------------------------------------------

ensure_tools() {
  local need=()
  command -v wrk >/dev/null || need+=(wrk)
  command -v nginx >/dev/null || need+=(nginx)
  command -v hyperfine >/dev/null || need+=(hyperfine)
  [[ -x /usr/bin/time ]] || need+=(time)
  command -v curl >/dev/null || need+=(curl)
  command -v python3 >/dev/null || need+=(python3)
  if ((${#need[@]} == 0)); then return; fi
  if [[ -n $NO_INSTALL ]]; then die "missing tools: ${need[*]} (and --no-install given)"; fi
  log "installing ${need[*]} (Debian packages)"
  # Keep the nginx package from starting a system-wide nginx on port 80:
  # policy-rc.d exit 101 is Debian's "do not start services" switch.
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    made_policy=1
  fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >&2 ||
    { if [[ -n $made_policy ]]; then $SUDO rm -f "$policy"; fi; die "apt-get install failed"; }
  if [[ -n $made_policy ]]; then $SUDO rm -f "$policy"; fi
}

# --- 2. build ---------------------------------------------------------------

build() {
  log "cargo build --release --examples --bins"
  (cd "$ROOT" && cargo build --release --examples --bins) >&2
}

# True when $PLANBOX is a planbox with the given subcommand.
have_planbox() {
  local help
  [[ -x $PLANBOX ]] || return 1
  # Captured first: `grep -q` closing the pipe early would trip pipefail.
  help=$("$PLANBOX" --help 2>/dev/null) || return 1
  grep -qE "^[[:space:]]+$1([[:space:]]|$)" <<<"$help"
}

# --- 3. feeds ---------------------------------------------------------------

feed_file() { echo "$OUT/feed-$1-g$2.xml"; }

# gen_feed LABEL BASE_PLANS GENERATION
gen_feed() {
  local label=$1 n=$2 g=$3
  local file tag=$1-g$3
  file=$(feed_file "$label" "$g")
  if [[ -n $REUSE && -s $file && -s $OUT/gen-$tag.log ]]; then
    log "reusing $file"
    return
  fi
  log "synth-feed $label generation $g: $n base plans x 2 plans x 200 zones"
  /usr/bin/time -v -o "$OUT/gen-$tag.time" \
    "$REL/examples/synth-feed" --base-plans "$n" --plans 2 --zones 200 --seed "$SEED" \
    --dialect plans --generation "$g" --out "$file" 2>"$OUT/gen-$tag.log"
  grep -v '^stats:' "$OUT/gen-$tag.log" >&2
}

# --- 4. baseline ------------------------------------------------------------

# bench_baseline LABEL
bench_baseline() {
  local label=$1 file
  file=$(feed_file "$label" 0)
  log "baseline: xml-scan $label ($file)"
  "$REL/examples/xml-scan" --json "$file" >"$OUT/scan-$label.out"
  rm -f "$OUT/scan-$label.time"
  hyperfine --warmup 1 --runs 3 --export-json "$OUT/scan-$label.json" \
    --command-name "xml-scan $label" \
    "/usr/bin/time -v -a -o $OUT/scan-$label.time $REL/examples/xml-scan $file" >&2
}

# --- 5. import --------------------------------------------------------------

# store_bytes DB: bytes of the store file plus its WAL (if any).
store_bytes() {
  local n=0 f
  for f in "$1" "$1-wal"; do
    if [[ -e $f ]]; then n=$((n + $(stat -c %s "$f"))); fi
  done
  echo "$n"
}

# bench_import LABEL: fresh import, re-import of the unchanged feed, and the
# next generation over a copy of the generation-0 store. Leaves the store at
# $OUT/db-LABEL/planbox.db holding generation 0.
bench_import() {
  local label=$1 runs=$IMPORT_RUNS
  local f0 f1 dir=$OUT/db-$label db snap=$OUT/db-$label/snapshot
  f0=$(feed_file "$label" 0)
  f1=$(feed_file "$label" 1)
  db=$dir/planbox.db
  if [[ $label == big ]]; then runs=1; fi
  mkdir -p "$dir"

  log "import $label: fresh store ($runs runs)"
  rm -f "$OUT/import-$label.time"
  hyperfine --warmup 0 --runs "$runs" --export-json "$OUT/import-$label.json" \
    --command-name "import $label" \
    --prepare "rm -f $db $db-wal $db-shm" \
    "/usr/bin/time -v -a -o $OUT/import-$label.time $PLANBOX import --max-feed-bytes $MAX_FEED --db $db $f0" >&2

  # Snapshot of the generation-0 store (no process has it open now).
  rm -rf "$snap" && mkdir -p "$snap"
  cp "$db" "$snap/"
  if [[ -e $db-wal ]]; then cp "$db-wal" "$snap/"; fi

  log "import $label: re-import of the unchanged feed ($runs runs)"
  rm -f "$OUT/reimport-$label.time"
  hyperfine --warmup 0 --runs "$runs" --export-json "$OUT/reimport-$label.json" \
    --command-name "reimport $label" \
    "/usr/bin/time -v -a -o $OUT/reimport-$label.time $PLANBOX import --max-feed-bytes $MAX_FEED --db $db $f0" >&2
  # Re-import writes (almost) nothing: the store's bytes before and after
  # one more re-import (after a checkpoint, so the WAL is included).
  store_bytes "$db" >"$OUT/reimport-$label.bytes"
  "$PLANBOX" import --max-feed-bytes "$MAX_FEED" --db "$db" "$f0" 2>/dev/null
  ls -l "$db"* >"$OUT/reimport-$label.files"
  store_bytes "$db" >>"$OUT/reimport-$label.bytes"
  "$PLANBOX" status --db "$db" --json --limit 1 >"$OUT/reimport-$label.status.json" 2>/dev/null || true

  log "import $label: next generation over the generation-0 store ($runs runs)"
  rm -f "$OUT/nextgen-$label.time"
  hyperfine --warmup 0 --runs "$runs" --export-json "$OUT/nextgen-$label.json" \
    --command-name "nextgen $label" \
    --prepare "rm -f $db $db-wal $db-shm && cp $snap/* $dir/" \
    "/usr/bin/time -v -a -o $OUT/nextgen-$label.time $PLANBOX import --max-feed-bytes $MAX_FEED --db $db $f1" >&2

  # Leave the store at generation 0 for bench_search.
  rm -f "$db" "$db-wal" "$db-shm" && cp "$snap"/* "$dir/"
  "$PLANBOX" status --db "$db" --json >"$OUT/status-$label.json" 2>/dev/null || true
}

# --- 6/7. search ------------------------------------------------------------

# wait_http URL SECONDS: until URL answers 2xx.
wait_http() {
  local url=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# run_wrk URL OUTFILE
run_wrk() {
  wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$WRK_DURATION" --latency "$1" | tee "$2" >&2
}

# bench_search LABEL: planbox serve on the LABEL store, wrk on each query.
# Saves each response body to $OUT/search-QUERY.json for nginx.
bench_search() {
  # Two statements: in one, `$label` would expand before it is assigned
  # (to the caller's `label`, e.g. the last store imported).
  local label=$1
  local db=$OUT/db-$label/planbox.db q name qs base=http://127.0.0.1:$PORT
  if [[ ! -s $db ]]; then
    log "no $label store yet: importing $(feed_file "$label" 0)"
    mkdir -p "$OUT/db-$label"
    "$PLANBOX" import --max-feed-bytes "$MAX_FEED" --db "$db" "$(feed_file "$label" 0)"
  fi
  log "planbox serve on $base ($label store)"
  # No --provider-url: serve answers from the store and does not fetch.
  "$PLANBOX" serve --db "$db" --listen "127.0.0.1:$PORT" --fetch-interval 1h \
    >"$OUT/serve-$label.log" 2>&1 &
  SERVE_PID=$!
  wait_http "$base/ready" 60 || die "planbox serve did not get ready (see $OUT/serve-$label.log)"
  for q in "${QUERIES[@]}"; do
    name=${q%%=*}
    qs=${q#*=}
    curl -fsS -o "$OUT/search-$name.json" "$base/search?$qs"
    log "wrk planbox /search ($name: $qs, $(wc -c <"$OUT/search-$name.json") bytes)"
    run_wrk "$base/search?$qs" "$OUT/wrk-planbox-$name.txt"
  done
  kill -TERM "$SERVE_PID"
  wait "$SERVE_PID" || true
  SERVE_PID=""
}

# bench_search_vs_nginx: nginx serving the saved response bytes, same wrk.
bench_search_vs_nginx() {
  local q name base=http://127.0.0.1:$NGINX_PORT
  NGINX_DIR=$(mktemp -d /tmp/planbox-bench-nginx.XXXXXX)
  # Workers run as nobody when started by root: let them read the files.
  chmod 755 "$NGINX_DIR"
  mkdir -p "$NGINX_DIR/www" "$NGINX_DIR/logs" "$NGINX_DIR/tmp"
  for q in "${QUERIES[@]}"; do
    name=${q%%=*}
    cp "$OUT/search-$name.json" "$NGINX_DIR/www/search-$name.json"
  done
  chmod -R a+rX "$NGINX_DIR/www"
  write_nginx_conf "$NGINX_DIR" "$NGINX_PORT"
  log "nginx on $base (same response bytes)"
  nginx -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" &
  NGINX_PID=$!
  local first=${QUERIES[0]%%=*}
  wait_http "$base/search-$first.json" 30 || die "nginx did not start (see $NGINX_DIR/logs/error.log)"
  for q in "${QUERIES[@]}"; do
    name=${q%%=*}
    log "wrk nginx /search-$name.json"
    run_wrk "$base/search-$name.json" "$OUT/wrk-nginx-$name.txt"
  done
  kill -QUIT "$NGINX_PID" # graceful stop of a foreground nginx
  wait "$NGINX_PID" || true
  NGINX_PID=""
  rm -rf "$NGINX_DIR"
  NGINX_DIR=""
}

# --- main -------------------------------------------------------------------

# Results of an earlier run must not show up in this run's report. Feeds
# (and their gen-* logs) and stores stay; --reuse decides about feeds.
clean_results() {
  rm -f "$OUT"/scan-* "$OUT"/import-* "$OUT"/reimport-* "$OUT"/nextgen-* \
    "$OUT"/status-* "$OUT"/serve-* "$OUT"/search-* "$OUT"/wrk-* "$OUT"/summary.json
}

main() {
  mkdir -p "$OUT"
  clean_results
  ensure_tools
  build

  local -a sizes=("small:500" "medium:5000")
  if [[ -n $BIG ]]; then sizes+=("big:25000"); fi
  local s label
  for s in "${sizes[@]}"; do
    gen_feed "${s%%:*}" "${s#*:}" 0
    gen_feed "${s%%:*}" "${s#*:}" 1
  done
  for s in "${sizes[@]}"; do
    bench_baseline "${s%%:*}"
  done

  if have_planbox import; then
    for s in "${sizes[@]}"; do
      label=${s%%:*}
      bench_import "$label"
    done
  else
    log "SKIPPED bench_import: $PLANBOX has no 'import' subcommand yet"
  fi

  if have_planbox serve && have_planbox import; then
    bench_search medium
    bench_search_vs_nginx
  else
    log "SKIPPED bench_search, bench_search_vs_nginx: $PLANBOX has no 'serve' subcommand yet"
  fi

  if [[ -n $PLAN_HEAVY ]] && have_planbox import; then
    local heavy=$OUT/feed-plan-heavy.xml
    if [[ -z $REUSE || ! -s $heavy ]]; then
      log "feed: plan-heavy (1M plans)"
      "$REL/examples/synth-feed" --base-plans 500000 --plans 2 --zones 3 \
        --seed "$SEED" --out "$heavy" >/dev/null
    fi
    log "plan-heavy: bench/plan-heavy.sh"
    rm -rf "$OUT/plan-heavy"
    ROUNDS=${IMPORT_RUNS} SCAN=$REL/examples/xml-scan \
      "$ROOT/bench/plan-heavy.sh" "$OUT/plan-heavy" "$heavy" "planbox=$PLANBOX"
  fi

  log "report"
  python3 "$ROOT/bench/report.py" "$OUT"
}

main
