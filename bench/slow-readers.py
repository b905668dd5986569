#!/usr/bin/env python3
"""bench/slow-readers.py: clients that ask for a large answer and never read it.

Opens --clients connections with a 4 KiB receive buffer, each sending
GET /search (the whole store) and reading nothing; after --settle seconds
asks GET /health and a one-day /search on fresh connections (--probes
times each) and prints one JSON line: the clients, the slowest and median
probe times, the server's RSS, peak RSS and threads (from /proc/PID) while
the clients hold their answers, and its threads again --after seconds after
they closed.
"""
import argparse
import json
import socket
import statistics
import time
import urllib.request


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) // 1024  # MiB
            elif k == "Threads":
                out[k] = int(v)
    return out


def timed_get(url, timeout):
    t0 = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body = r.read()
        assert r.status == 200, r.status
    return time.monotonic() - t0, len(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--probes", type=int, default=3)
    ap.add_argument("--after", type=float, default=3.0)
    a = ap.parse_args()
    base = f"http://{a.host}:{a.port}"
    held = []
    for _ in range(a.clients):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((a.host, a.port))
        s.sendall(b"GET /search HTTP/1.1\r\nHost: x\r\n\r\n")
        held.append(s)
    time.sleep(a.settle)
    health, small, small_bytes = [], [], 0
    for _ in range(a.probes):
        health.append(timed_get(base + "/health", 60)[0])
        t, small_bytes = timed_get(
            base + "/search?starts_at=2021-06-02T00:00:00&ends_at=2021-06-02T23:59:59", 60
        )
        small.append(t)
    during = status(a.pid)
    for s in held:
        s.close()
    time.sleep(a.after)
    after = status(a.pid)
    print(json.dumps({
        "clients": a.clients,
        "health_max_s": round(max(health), 3),
        "health_median_s": round(statistics.median(health), 3),
        "day_search_max_s": round(max(small), 3),
        "day_search_bytes": small_bytes,
        "rss_mib": during["VmRSS"],
        "peak_rss_mib": during["VmHWM"],
        "threads": during["Threads"],
        "threads_after": after["Threads"],
    }))


if __name__ == "__main__":
    main()
