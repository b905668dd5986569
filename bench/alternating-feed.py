#!/usr/bin/env python3
"""bench/alternating-feed.py: a provider whose every response is a new feed.

Usage: alternating-feed.py PORT FILE_A FILE_B

Answers every GET with FILE_A, FILE_B, FILE_A, ... (no ETag, no
Last-Modified), so each fetch of `planbox serve --fetch-interval 1s` is a
full ingest of a feed that differs from the last one. Used to measure
search latency while the fetch loop ingests (bench/ingest-p99.sh).
Listens on 127.0.0.1 only.
"""
import http.server
import itertools
import os
import sys

port, files = int(sys.argv[1]), sys.argv[2:4]
order = itertools.cycle(files)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = next(order)
        size = os.path.getsize(path)
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                self.wfile.write(chunk)

    def log_message(self, fmt, *args):
        sys.stderr.write("feed %s\n" % (fmt % args))


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
