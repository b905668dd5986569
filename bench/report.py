#!/usr/bin/env python3
"""bench/report.py: the table of figures and ratios of bench/run.sh.

Usage: bench/report.py [OUT_DIR]   (default: bench/out next to this file)

Reads what run.sh left in OUT_DIR (file names are the contract):
  gen-LABEL-gN.log / .time       synth-feed stderr (last line `stats: {json}`)
                                 and /usr/bin/time -v output
  scan-LABEL.json / .time        hyperfine JSON and time -v of xml-scan
  import-LABEL.*, reimport-LABEL.*, nextgen-LABEL.*
                                 the same for `planbox import`
  search-Q.json                  the response bytes of query Q
  wrk-planbox-Q.txt, wrk-nginx-Q.txt
                                 wrk --latency output
Prints the tables to stdout and writes OUT_DIR/summary.json.
Sections whose files are missing are reported as skipped.
"""

import json
import re
import sys
from pathlib import Path

LABELS = ["small", "medium", "big"]


def read_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def gen_stats(out, label, gen):
    try:
        lines = (out / f"gen-{label}-g{gen}.log").read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("stats: "):
            return json.loads(line[len("stats: "):])
    return None


def time_v(path):
    """Peak RSS (max over all runs appended to the file) in MB and the last
    wall-clock time in seconds, from /usr/bin/time -v output."""
    try:
        text = path.read_text()
    except OSError:
        return None
    rss = [int(m) for m in re.findall(r"Maximum resident set size \(kbytes\): (\d+)", text)]
    walls = re.findall(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    codes = [int(c) for c in re.findall(r"Exit status: (\d+)", text)]
    wall = None
    if walls:
        secs = 0.0
        for part in walls[-1].split(":"):
            secs = secs * 60 + float(part)
        wall = secs
    return {
        "peak_rss_mb": max(rss) / 1024 if rss else None,
        "wall_s": wall,
        "runs": len(rss),
        "failed_runs": sum(1 for c in codes if c != 0),
    }


def hyperfine(path):
    data = read_json(path)
    if not data or not data.get("results"):
        return None
    r = data["results"][0]
    return {
        "mean_s": r["mean"],
        "stddev_s": r.get("stddev"),
        "min_s": r["min"],
        "max_s": r["max"],
        "runs": len(r.get("times", [])),
    }


UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * UNIT[m.group(2)] if m else None


def wrk(path):
    try:
        text = path.read_text()
    except OSError:
        return None
    out = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else None
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        out[f"p{pct}_ms"] = to_ms(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = sum(int(g) for g in m.groups()) if m else 0
    return out


def errors(w):
    """Non-2xx/3xx answers plus socket errors of one wrk run."""
    return "-" if not w else w["non_2xx"] + w["socket_errors"]


def fmt(v, spec=".2f", none="-"):
    return none if v is None else format(v, spec)


def ratio(a, b):
    return a / b if a is not None and b else None


def table(title, header, rows):
    print(f"\n## {title}\n")
    if not rows:
        print("(skipped: no data)")
        return
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "out"
    summary = {"feeds": {}, "baseline": {}, "import": {}, "search": {}}

    rows = []
    for label in LABELS:
        for gen in (0, 1):
            st = gen_stats(out, label, gen)
            if not st:
                continue
            tv = time_v(out / f"gen-{label}-g{gen}.time") or {}
            dirty = sum(st["dirty"].values())
            summary["feeds"][f"{label}-g{gen}"] = {**st, "time_v": tv}
            rows.append([
                label, gen, st["xml_bytes"], fmt(st["xml_bytes"] / 1e6, ".1f"),
                st["base_plans"], st["plans"], st["zones"], dirty,
                st["plans_expected_searchable"], fmt(st["seconds"]),
                fmt(tv.get("peak_rss_mb"), ".1f"),
            ])
    table("Feeds (synth-feed)",
          ["feed", "gen", "bytes", "MB", "base", "plans", "zones", "dirty",
           "searchable", "gen s", "RSS MB"], rows)

    rows = []
    for label in LABELS:
        hf = hyperfine(out / f"scan-{label}.json")
        if not hf:
            continue
        st = gen_stats(out, label, 0) or {}
        tv = time_v(out / f"scan-{label}.time") or {}
        mb = st.get("xml_bytes", 0) / 1e6
        summary["baseline"][label] = {**hf, "time_v": tv,
                                      "mb_per_s": ratio(mb, hf["mean_s"])}
        rows.append([label, fmt(hf["mean_s"], ".3f"), fmt(hf["stddev_s"], ".3f"),
                     fmt(hf["min_s"], ".3f"), fmt(ratio(mb, hf["mean_s"]), ".0f"),
                     fmt(tv.get("peak_rss_mb"), ".1f")])
    table("Baseline: xml-scan (bare quick-xml scan), hyperfine",
          ["feed", "mean s", "stddev", "min s", "MB/s", "RSS MB"], rows)

    rows = []
    for label in LABELS:
        base = summary["baseline"].get(label, {}).get("mean_s")
        figs = {}
        for kind in ("import", "reimport", "nextgen"):
            hf = hyperfine(out / f"{kind}-{label}.json")
            tv = time_v(out / f"{kind}-{label}.time") or {}
            if hf:
                figs[kind] = {**hf, "time_v": tv, "x_baseline": ratio(hf["mean_s"], base)}
        if not figs:
            continue
        summary["import"][label] = figs
        g = lambda k, f: figs.get(k, {}).get(f)
        rss = lambda k: figs.get(k, {}).get("time_v", {}).get("peak_rss_mb")
        failed = sum(figs[k]["time_v"].get("failed_runs", 0) for k in figs)
        rows.append([
            label,
            fmt(g("import", "mean_s"), ".3f"), fmt(g("import", "x_baseline"), ".2f") + "x",
            fmt(g("reimport", "mean_s"), ".3f"), fmt(g("reimport", "x_baseline"), ".2f") + "x",
            fmt(g("nextgen", "mean_s"), ".3f"), fmt(g("nextgen", "x_baseline"), ".2f") + "x",
            fmt(rss("import"), ".0f"), fmt(rss("reimport"), ".0f"), fmt(rss("nextgen"), ".0f"),
            failed,
        ])
    table("Import: planbox import vs baseline (goal: import <= 3x)",
          ["feed", "fresh s", "/base", "reimport s", "/base", "next gen s", "/base",
           "RSS fresh", "RSS re", "RSS next", "failed runs"], rows)

    rows = []
    for label in LABELS:
        try:
            before, after = [int(x) for x in (out / f"reimport-{label}.bytes").read_text().split()]
        except (OSError, ValueError):
            continue
        st = read_json(out / f"reimport-{label}.status.json") or {}
        run = (st.get("runs") or [{}])[0]
        summary["import"].setdefault(label, {})["reimport_writes"] = {
            "store_bytes_before": before, "store_bytes_after": after, "run": run}
        rows.append([label, before, after, after - before, run.get("plans_seen", "-"),
                     run.get("plans_new", "-"), run.get("plans_updated", "-"),
                     run.get("plans_unchanged", "-")])
    table("Re-import of an unchanged feed: store bytes (db + WAL) and counts",
          ["feed", "bytes before", "bytes after", "delta", "seen", "new", "updated",
           "unchanged"], rows)

    rows = []
    # In the order run.sh ran them (QUERIES order).
    runs = sorted(out.glob("wrk-planbox-*.txt"), key=lambda p: p.stat().st_mtime)
    names = [p.stem[len("wrk-planbox-"):] for p in runs]
    for name in names:
        pb = wrk(out / f"wrk-planbox-{name}.txt")
        ng = wrk(out / f"wrk-nginx-{name}.txt")
        body = out / f"search-{name}.json"
        size = body.stat().st_size if body.exists() else None
        events = None
        doc = read_json(body)
        if doc and isinstance(doc.get("data"), dict):
            events = len(doc["data"].get("events") or [])
        summary["search"][name] = {"bytes": size, "events": events, "planbox": pb, "nginx": ng,
                                   "rps_ratio": ratio((pb or {}).get("rps"), (ng or {}).get("rps"))}
        rows.append([
            name, fmt(size, "d"), fmt(events, "d"),
            fmt((pb or {}).get("rps"), ".0f"), fmt((pb or {}).get("p50_ms")),
            fmt((pb or {}).get("p99_ms")),
            fmt((ng or {}).get("rps"), ".0f"), fmt((ng or {}).get("p50_ms")),
            fmt((ng or {}).get("p99_ms")),
            fmt(summary["search"][name]["rps_ratio"], ".2f"),
            f"{errors(pb)}/{errors(ng)}",
        ])
    table("Search: planbox serve vs nginx serving the same bytes (wrk)",
          ["query", "bytes", "events", "planbox rps", "p50 ms", "p99 ms",
           "nginx rps", "p50 ms", "p99 ms", "rps ratio", "errors pb/ng"], rows)

    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nsummary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
