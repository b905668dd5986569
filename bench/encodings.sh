#!/usr/bin/env bash
# bench/encodings.sh: what reading a feed that is not UTF-8 costs.
#
# Usage: bench/encodings.sh [BASE_PLANS] [RUNS] [PLANBOX...]
#
# Writes a synth feed (BASE_PLANS, default 2500: ~98 MB, 5,000 plans, 1M
# zones) into bench/out/, then a "dense" copy whose every zone name carries
# accented text and typographic punctuation (~13 % non-ASCII bytes in
# UTF-8), and re-encodes that copy to windows-1252 (declared in its XML
# declaration). Each feed is imported once into its own store, then
# re-imported RUNS times (default 5) with hyperfine: a re-import writes
# (almost) nothing, so it times the parse, where decoding happens. Peak RSS
# of one re-import each via /usr/bin/time -v. Prints hyperfine's table; the
# ratio to read is dense windows-1252 / dense UTF-8. With several PLANBOX
# binaries, each is measured on the UTF-8 feed too (before/after).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/out
N=${1:-2500} RUNS=${2:-5}
shift || true
shift || true
BINS=("$@")
if ((${#BINS[@]} == 0)); then BINS=("$ROOT/target/release/planbox"); fi
mkdir -p "$OUT"
(cd "$ROOT" && cargo build --release --example synth-feed --bin planbox >&2)
"$ROOT/target/release/examples/synth-feed" --base-plans "$N" --out "$OUT/enc-utf8.xml" >&2
python3 - "$OUT" <<'PY'
import sys
out = sys.argv[1]
text = open(f"{out}/enc-utf8.xml", "rb").read().decode("utf-8")
dense = text.replace(' name="', ' name="Platea baja – izquierda, señoría, año, niño, café ')
open(f"{out}/enc-dense-utf8.xml", "wb").write(dense.encode("utf-8"))
cp = dense.replace('encoding="UTF-8"', 'encoding="windows-1252"', 1)
open(f"{out}/enc-dense-cp1252.xml", "wb").write(cp.encode("cp1252", errors="xmlcharrefreplace"))
PY
cmds=()
for i in "${!BINS[@]}"; do
  db=$OUT/enc-utf8-$i.db
  rm -f "$db" "$db-wal" "$db-shm"
  "${BINS[$i]}" import --db "$db" "$OUT/enc-utf8.xml" >/dev/null 2>&1
  cmds+=(-n "utf8 [$i]" "${BINS[$i]} import --db $db $OUT/enc-utf8.xml")
done
main=${BINS[-1]}
for f in dense-utf8 dense-cp1252; do
  db=$OUT/enc-$f.db
  rm -f "$db" "$db-wal" "$db-shm"
  "$main" import --db "$db" "$OUT/enc-$f.xml" >/dev/null 2>&1
  cmds+=(-n "$f" "$main import --db $db $OUT/enc-$f.xml")
done
hyperfine --warmup 1 --runs "$RUNS" --export-json "$OUT/encodings.json" "${cmds[@]}"
for f in dense-utf8 dense-cp1252; do
  /usr/bin/time -v "$main" import --db "$OUT/enc-$f.db" "$OUT/enc-$f.xml" 2>&1 >/dev/null |
    sed -n "s/^.*Maximum resident set size (kbytes): /$f peak RSS KiB: /p"
done
