#!/usr/bin/env python3
"""How long a change made by another process takes to show in /search.

Usage: freshness.py BASE_URL PLANBOX_BIN DB ROUNDS FEED...

A `planbox serve` on DB must answer at BASE_URL. Each round runs `PLANBOX_BIN
import --db DB FEED` (the FEEDs in turn, so every import changes the data),
then polls /search over one keep-alive connection, every millisecond, until
its ETag differs from the one before the import. Prints the delays from the
import process's exit (its commit happened a little earlier) to the first
answer showing the change: min / median / max over ROUNDS."""

import http.client
import statistics
import subprocess
import sys
import time
import urllib.parse


def main():
    base, bin_, db, rounds, feeds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)

    def etag():
        conn.request("GET", "/search")
        r = conn.getresponse()
        r.read()
        return r.getheader("ETag")

    delays = []
    for i in range(rounds):
        before = etag()
        # Keep asking while the import runs, so the server's cached version
        # is always recent: the worst case for seeing the change.
        p = subprocess.Popen([bin_, "import", "--db", db, feeds[i % len(feeds)]],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while p.poll() is None:
            etag()
            time.sleep(0.001)
        if p.returncode != 0:
            sys.exit("import failed")
        t0 = time.monotonic()
        while etag() == before:
            if time.monotonic() - t0 > 5:
                sys.exit("no change within 5 s")
            time.sleep(0.001)
        delays.append((time.monotonic() - t0) * 1000)
    print(f"{rounds} imports: delay from import exit to the first changed answer "
          f"min {min(delays):.1f} ms, median {statistics.median(delays):.1f} ms, "
          f"max {max(delays):.1f} ms")


if __name__ == "__main__":
    main()
