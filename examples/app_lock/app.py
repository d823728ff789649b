"""A lock of the app's around every request's work: a client that is not safe to share.

The app keeps one client for an upstream service and, because the client is not safe to
use from two threads at once, guards it with a module-level ``threading.Lock``. Under the
gevent worker that lock is gevent's (patched): the hub runs on time, but the requests of
a worker take the lock one at a time, 0.1 s each. Expected: SERIALIZED, a lock of the
app's at ``app.py`` in ``call_upstream`` (``with CLIENT_LOCK``); the server connections
do not matter here (none are used).

    geventprobe run --app app:application --chdir examples/app_lock --route /upstream

Measured by hand (docs/causes.md): plain gunicorn, 2 gevent workers, 20 requests at once:
0.10 s alone, 1.0–1.5 s for the 20 (p50 0.60 s), all 200.
"""

import threading
import time

CLIENT_LOCK = threading.Lock()  # made after gevent patched: a gevent lock


def call_upstream() -> bytes:
    """Ask the upstream service (0.1 s) through the one shared client."""
    with CLIENT_LOCK:
        time.sleep(0.1)  # stands for the client's round trip (cooperative: patched)
    return b"upstream said ok\n"


def application(environ, start_response):
    """``/upstream`` waits for the upstream service; everything else says hello."""
    body = call_upstream() if environ.get("PATH_INFO") == "/upstream" else b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
