#!/usr/bin/env python3
"""Walks /search?limit=N through `Link: <...>; rel="next"` and checks that the
pages' ids, concatenated, are exactly the ids of a whole answer.

Usage: walk-pages.py BASE_URL LIMIT WHOLE_BODY.json
Prints one line: pages, plans, seconds, and whether the ids match.
Exits 1 when they do not."""

import json
import re
import sys
import time
import urllib.request


def ids(body):
    return [e["id"] for e in json.loads(body)["data"]["events"]]


def main():
    base, limit, whole_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(whole_path, "rb") as f:
        want = ids(f.read())
    got, pages = [], 0
    url = f"{base}/search?limit={limit}"
    t0 = time.monotonic()
    while url:
        with urllib.request.urlopen(url, timeout=120) as r:
            got.extend(ids(r.read()))
            link = r.headers.get("Link")
        pages += 1
        m = re.fullmatch(r'<([^>]*)>; rel="next"', link) if link else None
        url = base + m.group(1) if m else None
    ok = got == want
    print(
        f"{pages} pages of <= {limit}, {len(got)} plans in {time.monotonic() - t0:.1f} s, "
        f"ids equal to the whole answer: {'yes' if ok else 'NO'}"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
