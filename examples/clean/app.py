"""A route that cooperates: a psycopg_pool pool as large as the concurrency it will see.

The pool is made when each worker imports the app, after gevent patched it; it opens 16
connections at once (up to 32), so 8 concurrent 0.2 s queries each get their own and overlap.
Expected: OK.

    geventprobe run --app app:application --chdir examples/clean --route /query
"""

import os

from psycopg_pool import ConnectionPool

DATABASE_URL = os.environ.get("DATABASE_URL", "")


def _make_pool() -> ConnectionPool:
    """The worker's pool, open: its connections are made in the background at once."""
    return ConnectionPool(DATABASE_URL, min_size=16, max_size=32,
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
