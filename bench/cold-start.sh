#!/usr/bin/env bash
# bench/cold-start.sh: time from `planbox serve` exec to the first 200 on
# /ready, on a copy-free store DB (warm: file in the page cache; cold: the
# store's own pages evicted first with posix_fadvise(DONTNEED), which
# touches no other file on the machine).
#
# Usage: bench/cold-start.sh DB [RUNS] [PLANBOX...]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DB=$1 RUNS=${2:-3}; shift; shift || true
BINS=("$@"); if ((${#BINS[@]} == 0)); then BINS=("$ROOT/target/release/planbox"); fi
PORT=${PORT:-18098}
evict() {
  python3 -c 'import os,sys
for p in sys.argv[1:]:
    if os.path.exists(p):
        fd=os.open(p,os.O_RDONLY); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED); os.close(fd)' "$DB" "$DB-wal"
}
for mode in warm cold; do
  for bin in "${BINS[@]}"; do
    for ((r = 0; r < RUNS; r++)); do
      if [[ $mode == cold ]]; then evict; else cat "$DB" >/dev/null; fi
      t0=$(date +%s%N)
      "$bin" serve --db "$DB" --listen "127.0.0.1:$PORT" >/dev/null 2>&1 &
      pid=$!
      until curl -fs -o /dev/null "http://127.0.0.1:$PORT/ready" 2>/dev/null; do sleep 0.005; done
      t1=$(date +%s%N)
      kill -TERM "$pid"; wait "$pid" || true
      echo "$mode $bin $(((t1 - t0) / 1000000)) ms"
    done
  done
done
