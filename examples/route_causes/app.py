"""One app, five routes, one cause each: what geventprobe's route verdicts say and why.

    geventprobe run --app app:application --chdir examples/route_causes \
        --route /pool-timeout --route /small-pool --route /lock --route /validate \
        --route /upstream

- ``/pool-timeout``: a psycopg_pool pool of 2 that gives up after 0.5 s; a burst of 0.2 s
  queries gets ``PoolTimeout``: FAILING, raised at ``with pool.connection()``.
- ``/small-pool``: a SQLAlchemy engine whose pool holds one connection: the requests
  queue at ``engine.connect()``: SERIALIZED, a pool of 1.
- ``/lock``: a lock of the app's around a shared client (0.1 s under the lock):
  SERIALIZED, a lock, at ``with CLIENT_LOCK:``.
- ``/validate``: a backtracking regular expression (~0.2 s of C that keeps the GIL):
  BLOCKING, at ``PATTERN.match``, caught by the stall watch (gevent's monitor thread
  cannot look).
- ``/upstream``: ``from time import sleep`` in ``upstream.py``, imported by the gunicorn
  config in the master, before gevent patched: BLOCKING, the binding at
  ``upstream.py:10``, and a fix that does not mention preload (nothing preloads here).

The single-cause apps beside this one
(``pool_timeout/``, ``sqlalchemy_small_pool/``, ``app_lock/``, ``regex_route/``,
``preload_sleep/``) were measured by hand with plain gunicorn (docs/routes.md).
"""

import os
import re
import threading
import time

from psycopg_pool import ConnectionPool
from sqlalchemy import create_engine, text
from upstream import call_upstream

DATABASE_URL = os.environ.get("DATABASE_URL", "")
# Made when each worker imports the app, after gevent patched it (no preload). Neither
# connects before its route's first request: a burst's server connections are its own
# route's and those of the routes before it (``/pool-timeout`` is first).
pool = ConnectionPool(DATABASE_URL, min_size=0, max_size=2, kwargs={"autocommit": True},
                      timeout=0.5, open=True)
engine = create_engine(DATABASE_URL.replace("postgresql://", "postgresql+psycopg://", 1),
                       pool_size=1, max_overflow=0)
CLIENT_LOCK = threading.Lock()  # a gevent lock: made after gevent patched
PATTERN = re.compile(r"^(a|aa)+$")  # catastrophic backtracking on "aaa…a!"
SUBJECT = "a" * 30 + "!"


def pool_timeout() -> bytes:
    with pool.connection() as conn:
        conn.execute("SELECT pg_sleep(0.2)")
    return b"done\n"


def small_pool() -> bytes:
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(0.2)"))
    return b"done\n"


def shared_client() -> bytes:
    with CLIENT_LOCK:
        time.sleep(0.1)  # the shared client's round trip (cooperative: patched)
    return b"upstream said ok\n"


def validate(value: str) -> bool:
    return PATTERN.match(value) is not None


ROUTES = {
    "/pool-timeout": pool_timeout,
    "/small-pool": small_pool,
    "/lock": shared_client,
    "/validate": lambda: b"valid\n" if validate(SUBJECT) else b"invalid\n",
    "/upstream": call_upstream,
}


def application(environ, start_response):
    """Each route above; anything else says hello."""
    route = ROUTES.get(environ.get("PATH_INFO", ""))
    body = route() if route else b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
