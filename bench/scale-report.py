#!/usr/bin/env python3
"""bench/scale-report.py: table of bench/search-scale.sh results.

Usage: bench/scale-report.py OUTDIR

One row per (store, query): answer bytes and events, then rps / p50 / p99
of each planbox binary and of nginx serving the same bytes, and the rps
ratio of each binary to nginx. Random-window rows (randweek) have no nginx
figure: every request is a different answer.
"""
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from report import wrk  # noqa: E402

out = Path(sys.argv[1])
runs = {}
for p in sorted(out.glob("wrk-*.txt")):
    m = re.fullmatch(r"wrk-([^-]+)-([^-]+)-(.+)\.txt", p.name)
    if m:
        runs.setdefault((m.group(1), m.group(2)), {})[m.group(3)] = wrk(p)
whos = sorted({w for r in runs.values() for w in r if w != "nginx"})
order = {"fixture": 0, "p10k": 1, "p100k": 2, "p1m": 3}
qorder = {"all": 0, "day": 1, "week": 2, "month": 3, "randweek": 4}
head = ["store", "query", "bytes", "events"]
for w in whos:
    head += [f"{w} rps", "p50 ms", "p99 ms", "/nginx"]
head += ["nginx rps", "p50 ms", "p99 ms"]
rows = []
for (store, q) in sorted(runs, key=lambda k: (order.get(k[0], 9), qorder.get(k[1], 9))):
    r = runs[(store, q)]
    body = out / f"body-{store}-{q}.json"
    size, events = "-", "-"
    if body.exists():
        size = body.stat().st_size
        events = len(json.loads(body.read_text())["data"]["events"])
    ng = r.get("nginx")
    row = [store, q, size, events]
    for w in whos:
        x = r.get(w)
        if not x:
            row += ["-"] * 4
            continue
        ratio = f"{x['rps'] / ng['rps']:.2f}" if ng and ng["rps"] else "-"
        row += [f"{x['rps']:.0f}", f"{x['p50_ms']:.2f}", f"{x['p99_ms']:.2f}", ratio]
    row += [f"{ng['rps']:.0f}", f"{ng['p50_ms']:.2f}", f"{ng['p99_ms']:.2f}"] if ng else ["-"] * 3
    rows.append(row)
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for row in rows:
    print("| " + " | ".join(str(c) for c in row) + " |")
