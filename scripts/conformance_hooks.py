"""Schemathesis hooks for scripts/conformance.sh (loaded through SCHEMATHESIS_HOOKS).

One hook, and it only reinterprets one keyword of the upstream document:

The upstream spec types `start_time` / `end_time` as `format: time`, and its own
examples ("22:38:19") have no offset. In JSON Schema (RFC 3339 `full-time`),
`format: time` requires an offset, so schemathesis's response validator rejects
the upstream example itself. PRODUCT.md section 3 settles the meaning: times are
provider-local `HH:MM:SS` without an offset, "the upstream schema's `format: time`
(which formally needs an offset) means exactly that", and planbox's own
`assets/openapi.yaml` says so with a pattern.

So, before the document is loaded, every `format: time` is replaced by exactly that
pattern (`^\\d{2}:\\d{2}:\\d{2}$`). Nothing else changes: all checks stay enabled,
format validation stays on for every other format (`uuid`, `date`, `date-time`),
and the pattern is no looser than the contract (a time with an offset, fractional
seconds or a missing field still fails). planbox's own document has no
`format: time`, so there the hook changes nothing.
"""

from __future__ import annotations

import sys
from typing import Any

import schemathesis

LOCAL_TIME_PATTERN = r"^\d{2}:\d{2}:\d{2}$"


def _rewrite(node: Any, path: str, rewritten: list[str]) -> None:
    if isinstance(node, dict):
        if node.get("format") == "time" and node.get("type") in (None, "string"):
            del node["format"]
            node["pattern"] = LOCAL_TIME_PATTERN
            rewritten.append(path or "/")
        for key, value in node.items():
            _rewrite(value, f"{path}/{key}", rewritten)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _rewrite(value, f"{path}/{index}", rewritten)


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    rewritten: list[str] = []
    _rewrite(raw_schema, "", rewritten)
    for path in rewritten:
        print(
            f"conformance_hooks: {path}: `format: time` read as provider-local "
            f"HH:MM:SS (pattern {LOCAL_TIME_PATTERN}), per PRODUCT.md section 3",
            file=sys.stderr,
        )
