"""The tests' own WSGI app for the route faults (issue 19): one path per way a route can
answer something else than its work. No database: the routes' figures are the point.

- ``/ok``: 200 at once.
- ``/nothere`` (anything unknown): 404; ``/redirect``: 302 to /login; ``/auth``: 401.
- ``/uni/…``: 200 for any path under it (reached only if the request line is ASCII).
- ``/stream``: 4,194,304 bytes (64 chunks of 64 KiB), streamed: over the 1 MiB from which
  the route rules call the burst's extra time transfer time.
- ``/cpu``: PBKDF2 in C, about 0.3 s of CPU that never yields to gevent.
- ``/spin``: ``SPIN_S`` seconds (default 3.5) of CPU in pure Python that never yields to
  gevent: longer than a gunicorn ``timeout = 2`` and the arbiter's second, so gunicorn kills
  the worker every time, and its SIGABRT handler runs at once (between two bytecodes, not
  after a C call).
- ``/sleep``: sleeps ``SLEEP_S`` seconds (default 40), cooperatively.
- ``/lazy``: 200 at once, but a worker's first request builds a catalogue first (0.15 s of
  CPU that never yields), as an app that loads something lazily does (Django's URLconf).
"""

import hashlib
import os
import time

CHUNK = b"x" * 65536
CHUNKS = 64
_catalogue: list = []


def build_catalogue() -> None:
    """0.15 s of CPU in pure Python, once per worker."""
    lines, end = 0, time.thread_time() + 0.15
    while time.thread_time() < end:
        lines += 1
    _catalogue.append(lines)


def hold_hub(seconds: float) -> int:
    """``seconds`` of CPU in pure Python."""
    rounds, end = 0, time.thread_time() + seconds
    while time.thread_time() < end:
        rounds += 1
    return rounds


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/ok":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]
    if path == "/lazy":
        if not _catalogue:
            build_catalogue()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]
    if path == "/redirect":
        start_response("302 Found", [("Location", "/login"), ("Content-Length", "0")])
        return [b""]
    if path == "/auth":
        start_response("401 Unauthorized", [("WWW-Authenticate", "Basic")])
        return [b"log in first\n"]
    if path.startswith("/uni/"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"unicode ok\n"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(CHUNK) * CHUNKS))])
        return (CHUNK for _ in range(CHUNKS))
    if path == "/cpu":
        digest = hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 600_000)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [digest.hex()[:16].encode()]
    if path == "/spin":
        rounds = hold_hub(float(os.environ.get("SPIN_S", "3.5")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(rounds).encode()]
    if path == "/sleep":
        time.sleep(float(os.environ.get("SLEEP_S", "40")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept\n"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]
