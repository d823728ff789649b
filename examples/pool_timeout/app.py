"""A psycopg_pool pool of 2 per worker with ``timeout=0.5``: a burst runs out of connections.

Each ``/query`` holds a connection for a 0.2 s query. With 8–10 requests at once in a
worker, 2 run and the others queue for the pool; whoever is still waiting after 0.5 s
gets ``psycopg_pool.PoolTimeout: couldn't get a connection after 0.50 sec`` and answers
500. Expected: FAILING; the cause is the pool (2 for the burst's concurrency), raised at
``app.py`` in ``application`` (``with pool.connection()``).

    geventprobe run --app app:application --chdir examples/pool_timeout --route /query

Measured by hand (docs/causes.md): plain gunicorn, 2 gevent workers, 20 requests at once:
8–9 of 20 answered 500 with that PoolTimeout after 0.5 s (0.2 s alone).
"""

import os

from psycopg_pool import ConnectionPool

DATABASE_URL = os.environ.get("DATABASE_URL", "")

# Made when each worker imports the app, after gevent patched it (no preload).
pool = ConnectionPool(DATABASE_URL, min_size=2, max_size=2, kwargs={"autocommit": True},
                      timeout=0.5, open=True)


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
