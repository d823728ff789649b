"""The tests' own app that keeps its worker busy in two ways of its own (issue 25 rows 11, 12).

- A background greenlet (``SPIN=0`` in the environment leaves it out): each worker starts,
  when it imports the app, a greenlet that polls an in-memory queue and "yields" with
  ``gevent.sleep(0)`` when there is nothing to do. It gives the hub a turn but never
  sleeps, so the worker burns a core while nothing happens. The driver (psycopg 3,
  ``wait_poll``) cooperates: the busy-wait is the app's (row 12).
- ``/guarded``: a backtracking regular expression (~0.2 s of C that holds the GIL) behind
  a signal-based request timeout of 2 s, the timeout-decorator pattern:
  ``signal.signal(SIGALRM, h); setitimer(ITIMER_REAL, 2.0)`` per request, after a 20 ms
  cooperative upstream call, the previous handler put back after it. The hub stalls, but
  no request comes near its 2 s: every one answers 200 (row 11).
- ``/query``: ``pg_sleep(0.2)`` on a connection of its own.

By hand (``benchmarks/app_spin_by_hand.py``, ``benchmarks/causes_by_hand.py``): docs/causes.md.
"""

import collections
import os
import re
import signal
import time

import gevent
import psycopg

JOBS: collections.deque = collections.deque()
PATTERN = re.compile(r"^(a|aa)+$")  # catastrophic backtracking on "aaa…a!"
SUBJECT = "a" * 30 + "!"


def drain_jobs() -> None:
    """The app's background loop: take jobs as they come, never sleeping in between."""
    while True:
        while JOBS:
            JOBS.popleft()()
        # "Yield to the others": a turn of the hub, and no sleep at all.
        gevent.sleep(0)


if os.environ.get("SPIN", "1") != "0":
    gevent.spawn(drain_jobs)


class RequestTimeout(Exception):
    """A request ran past its ``timeout``."""


def _on_timeout(signum, frame):
    raise RequestTimeout("the request ran past its time limit")


def timeout(seconds: float):
    """The timeout-decorator pattern: a SIGALRM handler and a wall-clock timer per call,
    the previous handler put back after it."""
    def wrap(fn):
        def guarded(*args, **kwargs):
            old = signal.signal(signal.SIGALRM, _on_timeout)
            signal.setitimer(signal.ITIMER_REAL, seconds)
            try:
                return fn(*args, **kwargs)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, old)
        return guarded
    return wrap


def validate(value: str) -> bool:
    return PATTERN.match(value) is not None


@timeout(2.0)
def guarded() -> bytes:
    time.sleep(0.02)  # an upstream call first (cooperative: patched); other requests run
    return b"valid\n" if validate(SUBJECT) else b"invalid\n"


def query() -> bytes:
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SELECT pg_sleep(0.2)")
    return b"done\n"


def application(environ, start_response):
    """The routes above; anything else says hello (a timeout answers 500)."""
    path = environ.get("PATH_INFO")
    body = guarded() if path == "/guarded" else query() if path == "/query" else b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
