"""Schemathesis hooks for scripts/conformance.sh (loaded through SCHEMATHESIS_HOOKS).

One hook, and it only reinterprets one keyword of the upstream document and
names the valid values of one parameter of planbox's own document:

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
`format: time`, so there this part changes nothing.

planbox's `provider` query parameter takes the name of a provider the box under
test is configured with; any other name is a 400 (PRODUCT.md section 8). Which
names those are is configuration, so the document types the parameter as a
string. Before loading, its schema gets `enum` = the names in
CONFORMANCE_PROVIDERS (whitespace-separated; default `provider`, the name of
`serve --demo`'s provider): schema-valid requests then use a known name and must
be accepted, every other string is schema-violating and must be rejected.
"""

from __future__ import annotations

import os
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


def _name_providers(node: Any, names: list[str], rewritten: list[str]) -> None:
    if isinstance(node, dict):
        if node.get("in") == "query" and node.get("name") == "provider":
            schema = node.get("schema")
            if isinstance(schema, dict) and schema.get("type") == "string":
                schema["enum"] = names
                schema.pop("example", None)
                rewritten.append("provider")
        for value in node.values():
            _name_providers(value, names, rewritten)
    elif isinstance(node, list):
        for value in node:
            _name_providers(value, names, rewritten)


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    names = os.environ.get("CONFORMANCE_PROVIDERS", "provider").split()
    named: list[str] = []
    _name_providers(raw_schema, names, named)
    if named:
        print(
            f"conformance_hooks: query parameter `provider` takes this box's names {names}",
            file=sys.stderr,
        )
    rewritten: list[str] = []
    _rewrite(raw_schema, "", rewritten)
    for path in rewritten:
        print(
            f"conformance_hooks: {path}: `format: time` read as provider-local "
            f"HH:MM:SS (pattern {LOCAL_TIME_PATTERN}), per PRODUCT.md section 3",
            file=sys.stderr,
        )
