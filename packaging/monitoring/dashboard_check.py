#!/usr/bin/env python3
"""Checks planbox-dashboard.json without Grafana; stdlib only.

  dashboard_check.py --metrics-rs src/metrics.rs --rules-out FILE
                     [--queries-out FILE] DASHBOARD [ALERT_RULES...]

- The file is a dashboard model as Grafana's file provisioning loads it: a
  JSON object with uid, title, schemaVersion and panels, no numeric `id`
  (provisioning assigns it), panel ids unique, every panel inside the 24
  columns and not overlapping another.
- The data source is the `$datasource` variable everywhere; the variables
  `datasource`, `job` and `instance` exist, and every variable an
  expression uses is defined.
- Every rate()/increase() window is `$__rate_interval`, and every
  expression selects `job` and `instance` through the variables.
- Every `planbox_*` series an expression (or an alert rule) names is one
  that src/metrics.rs renders.
- Every expression, with the variables substituted ($__rate_interval -> 5m,
  $job/$instance/$provider -> ".+"), is written to RULES_OUT as a recording
  rule to --rules-out, for `promtool check rules` to parse; --queries-out,
  if given, gets one substituted expression per line (for `promtool query
  instant` against a running Prometheus), after `needs-data` or, for a
  panel that sets `noValue` (says what empty means), `may-be-empty` and a tab.
Exits 1 with every problem listed.
"""
import argparse
import json
import re
import sys

SUBST = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": ".+",
    "$instance": ".+",
    "$provider": ".+",
}


def exprs(dash):
    for p in dash.get("panels", []):
        for sub in [p] + p.get("panels", []):
            for t in sub.get("targets", []):
                yield sub, t


def main(dash_path, metrics_rs, rules_out, queries_out, alert_files):
    problems = []
    dash = json.load(open(dash_path, encoding="utf-8"))
    if "dashboard" in dash:
        problems.append("wrapped in {\"dashboard\": ...}: file provisioning wants the model itself")
    for key in ("uid", "title", "schemaVersion", "panels", "templating"):
        if key not in dash:
            problems.append(f"no `{key}`")
    if dash.get("id") is not None:
        problems.append("a numeric `id`: provisioning assigns it (leave it out)")
    if not (0 < len(dash.get("uid", "")) <= 40):
        problems.append("uid must be 1-40 characters")

    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    for need in ("datasource", "job", "instance"):
        if need not in variables:
            problems.append(f"no `{need}` variable")
    if variables.get("datasource", {}).get("query") != "prometheus":
        problems.append("the datasource variable must list Prometheus data sources")

    ids, cells = set(), {}
    for p in dash.get("panels", []):
        if p["id"] in ids:
            problems.append(f"panel id {p['id']} twice")
        ids.add(p["id"])
        g = p["gridPos"]
        if g["x"] < 0 or g["x"] + g["w"] > 24:
            problems.append(f"panel {p['title']!r} outside the 24 columns")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    problems.append(f"panels {cells[(x, y)]!r} and {p['title']!r} overlap")
                    break
                cells[(x, y)] = p["title"]
        if p["type"] != "row":
            if p.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"panel {p['title']!r}: datasource is not ${{datasource}}")
            if not p.get("targets"):
                problems.append(f"panel {p['title']!r}: no query")

    known = set(re.findall(r"planbox_[a-z0-9_]+", open(metrics_rs, encoding="utf-8").read()))
    rules, queries = [], []
    for i, (panel, t) in enumerate(exprs(dash)):
        expr, where = t.get("expr", ""), f"panel {panel['title']!r} query {t.get('refId')}"
        if not expr.strip():
            problems.append(f"{where}: empty expression")
            continue
        if t.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{where}: datasource is not ${{datasource}}")
        for window in re.findall(r"\[([^\]]+)\]", expr):
            if window != "$__rate_interval":
                problems.append(f"{where}: window [{window}] (use $__rate_interval)")
        for sel in re.findall(r"\{([^}]*)\}", expr):
            if 'job=~"$job"' not in sel or 'instance=~"$instance"' not in sel:
                problems.append(f"{where}: selector {{{sel}}} does not use $job and $instance")
        for var in re.findall(r"\$(\w+)", expr):
            if not var.startswith("__") and var not in variables:
                problems.append(f"{where}: ${var} is not a variable")
        for name in re.findall(r"planbox_[a-z0-9_]+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in known and base not in known:
                problems.append(f"{where}: {name} is not a series planbox renders")
        q = expr
        for k in sorted(SUBST, key=len, reverse=True):
            q = q.replace(k, SUBST[k])
        if "$" in q:
            problems.append(f"{where}: unsubstituted variable in {q}")
        rules.append({"record": f"dashboard:query_{i + 1}", "expr": q})
        # A panel that says what "no data" means may be empty; others not.
        may_be_empty = "noValue" in panel.get("fieldConfig", {}).get("defaults", {})
        queries.append(("may-be-empty" if may_be_empty else "needs-data") + "\t" + " ".join(q.split()))

    # Alert rules and their tests name real series too.
    for path in alert_files:
        for name in set(re.findall(r"planbox_[a-z0-9_]+", open(path, encoding="utf-8").read())):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in known and base not in known:
                problems.append(f"{path}: {name} is not a series planbox renders")

    with open(rules_out, "w", encoding="utf-8") as f:
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, indent=1)
    if queries_out:
        with open(queries_out, "w", encoding="utf-8") as f:
            f.write("\n".join(queries) + "\n")
    for p in problems:
        print(f"dashboard: {p}", file=sys.stderr)
    print(f"dashboard: {len(dash['panels'])} panels, {len(rules)} expressions, "
          f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--metrics-rs", required=True)
    ap.add_argument("--rules-out", required=True)
    ap.add_argument("--queries-out")
    ap.add_argument("dashboard")
    ap.add_argument("alert_rules", nargs="*")
    a = ap.parse_args()
    sys.exit(main(a.dashboard, a.metrics_rs, a.rules_out, a.queries_out, a.alert_rules))
