#!/usr/bin/env python3
"""bench/connections.py: many idle keep-alive clients and slowloris clients at
once against one HTTP server, while a separate process probes GET PATH.

Usage: connections.py --url http://127.0.0.1:PORT --pid PID --expect FILE
                      [--idle 10000] [--slow 1000] [--duration 20]
                      [--ping 7] [--drip 1] [--path /health]

* idle: connections opened in batches of 500; each sends one keep-alive
  GET PATH, checks the answer (200, the bytes of FILE), then stays idle,
  asking again every --ping seconds (jittered; below the server's idle
  timeout, so a connection the server closes is one it shed).
* slow: slowloris connections that send a request line, then one header
  line every --drip seconds and never end the head; one the server closes
  is counted and replaced at once, so --slow stay open.
* the probe (its own process): a fresh connection per GET PATH, every 10 ms,
  from when every idle connection got its first answer until --duration
  ends; latency = connect to last byte of the answer.
* the server: peak RSS and peak threads of PID and its children
  (/proc/PID/status), sampled every 0.2 s.

Prints one JSON object: answers checked, idle connections the server closed,
non-200 answers, slowloris closed and replaced, probe p50/p99/max (ms),
peak RSS (MiB) and threads. Exits non-zero when the first answer is not
200 with the expected bytes (a wrong anchor is never timed).
"""
import argparse
import json
import multiprocessing
import os
import random
import resource
import selectors
import socket
import time
import urllib.parse


def parse_answer(buf):
    """(status, body, rest) once buf holds a whole answer with a length, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = 0
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
    if len(buf) < end + 4 + length:
        return None
    body = buf[end + 4 : end + 4 + length]
    return status, body, buf[end + 4 + length :]


def get_once(host, port, path, timeout=10.0):
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    buf = b""
    while True:
        got = parse_answer(buf)
        if got:
            s.close()
            return got[0], got[1]
        chunk = s.recv(65536)
        if not chunk:
            raise IOError("closed before the answer")
        buf += chunk


def probe(host, port, path, start_at, stop_at, out):
    lat, errors = [], 0
    while time.time() < start_at:
        time.sleep(0.005)
    while time.time() < stop_at:
        t0 = time.perf_counter()
        try:
            status, _ = get_once(host, port, path)
            if status != 200:
                errors += 1
            else:
                lat.append(time.perf_counter() - t0)
        except Exception:
            errors += 1
        time.sleep(0.01)
    out.put((lat, errors))


def proc_stats(pid):
    """(RSS bytes, threads) of pid and its children."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    rss = threads = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Threads:"):
                        threads += int(line.split()[1])
        except OSError:
            pass
    return rss, threads


class Conn:
    __slots__ = ("sock", "kind", "buf", "next_at", "sent_head", "waiting")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--expect", required=True)
    ap.add_argument("--path", default="/health")
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--slow", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--ping", type=float, default=7)
    ap.add_argument("--drip", type=float, default=1)
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    host, port = u.hostname, u.port
    want = open(a.expect, "rb").read()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    status, body = get_once(host, port, a.path)
    if status != 200 or body != want:
        raise SystemExit(f"anchor check failed: {status}, {len(body)} bytes, want 200 and {len(want)} bytes")

    sel = selectors.DefaultSelector()
    request = f"GET {a.path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    slow_head = f"GET {a.path} HTTP/1.1\r\nHost: {host}\r\n".encode()
    stats = dict(answers=0, non_200=0, wrong_body=0, idle_closed=0,
                 slow_closed=0, connect_errors=0)
    peak = [0, 0]

    def sample():
        rss, th = proc_stats(a.pid)
        peak[0] = max(peak[0], rss)
        peak[1] = max(peak[1], th)

    def open_conn(kind):
        s = socket.socket()
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            s.connect((host, port))
        except BlockingIOError:
            pass
        c = Conn()
        c.sock, c.kind, c.buf, c.sent_head, c.waiting = s, kind, b"", False, False
        c.next_at = time.time()
        sel.register(s, selectors.EVENT_WRITE | selectors.EVENT_READ, c)
        return c

    def closed_by_server(c):
        sel.unregister(c.sock)
        c.sock.close()
        if c.kind == "idle":
            stats["idle_closed"] += 1
        else:
            stats["slow_closed"] += 1
            conns.append(open_conn("slow"))

    def on_event(c, ev, now):
        """Sends a new connection's first bytes; reads and checks answers.
        True when an answer arrived."""
        if ev & selectors.EVENT_WRITE and not c.sent_head:
            try:
                c.sock.send(slow_head if c.kind == "slow" else request)
            except OSError:
                stats["connect_errors"] += 1
                closed_by_server(c)
                return False
            c.sent_head, c.waiting = True, c.kind == "idle"
            c.next_at = now + a.drip
            sel.modify(c.sock, selectors.EVENT_READ, c)
            return False
        if not ev & selectors.EVENT_READ:
            return False
        try:
            data = c.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            closed_by_server(c)
            return False
        c.buf += data
        got = parse_answer(c.buf)
        if not got:
            return False
        st, b, c.buf = got
        stats["answers"] += 1
        stats["non_200"] += st != 200
        stats["wrong_body"] += b != want
        c.waiting = False
        c.next_at = now + a.ping * random.uniform(0.5, 1.0)
        return True

    conns = []
    # Idle clients in batches, each answered once before the next batch.
    first_answered = 0
    for start in range(0, a.idle, 500):
        for _ in range(min(500, a.idle - start)):
            conns.append(open_conn("idle"))
        target = min(start + 500, a.idle)
        deadline = time.time() + 30
        while first_answered < target and time.time() < deadline:
            for key, ev in sel.select(0.1):
                first_answered += on_event(key.data, ev, time.time())
        sample()
    established = time.time()
    for _ in range(a.slow):
        conns.append(open_conn("slow"))

    q = multiprocessing.Queue()
    stop_at = established + a.duration
    pr = multiprocessing.Process(target=probe, args=(host, port, a.path, established + 1, stop_at, q))
    pr.start()
    last_sample = 0
    while time.time() < stop_at:
        now = time.time()
        for key, ev in sel.select(0.05):
            on_event(key.data, ev, now)
        for c in conns:
            if c.sock.fileno() < 0 or not c.sent_head or c.next_at > now:
                continue
            try:
                if c.kind == "slow":
                    c.sock.send(b"X-a: b\r\n")
                    c.next_at = now + a.drip
                elif not c.waiting:
                    c.sock.send(request)
                    c.waiting = True
            except OSError:
                pass
        if now - last_sample > 0.2:
            sample()
            last_sample = now
    lat, errors = q.get()
    pr.join()
    lat.sort()
    pct = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None
    open_idle = sum(1 for c in conns if c.kind == "idle" and c.sock.fileno() >= 0)
    print(json.dumps(dict(
        idle=a.idle, slow=a.slow, duration_s=a.duration,
        idle_open_at_end=open_idle, **stats,
        probes=len(lat), probe_errors=errors,
        probe_p50_ms=pct(0.50), probe_p99_ms=pct(0.99), probe_max_ms=pct(1.0),
        peak_rss_mib=round(peak[0] / 2**20, 1), peak_threads=peak[1],
    )))


if __name__ == "__main__":
    main()
