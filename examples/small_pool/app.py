"""A psycopg_pool ConnectionPool of 2 connections per worker, smaller than the concurrency.

Created when each worker imports the app (after gevent patched it). Each request
holds a connection for one 0.2 s query; with 8 requests at once, 6 wait for a
connection. Expected: SERIALIZED (2 connections for 8 concurrent requests).

    geventprobe run --app app:application --chdir examples/small_pool --route /query
"""

import os

from psycopg_pool import ConnectionPool

DATABASE_URL = os.environ.get("DATABASE_URL", "")
POOL_SIZE = 2


def _make_pool() -> ConnectionPool:
    """The worker's pool, open: its connections are made in the background at once."""
    return ConnectionPool(DATABASE_URL, min_size=POOL_SIZE, max_size=POOL_SIZE,
                          kwargs={"autocommit": True}, timeout=30, open=True)


# Made when gunicorn imports the app in each worker, after gevent patched it (no preload):
# the pool's threads are then greenlets of that worker. (Made lazily on the first request
# instead, 8 concurrent first requests would each make a pool of their own.)
pool = _make_pool()


def application(environ, start_response):
    """``/query`` waits 0.2 s on the server; everything else says hello."""
    if environ.get("PATH_INFO") == "/query":
        with pool.connection() as conn:
            conn.execute("SELECT pg_sleep(0.2)")
        body = b"done\n"
    else:
        body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
