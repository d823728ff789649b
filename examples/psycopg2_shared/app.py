"""psycopg2 made green by psycogreen, with ONE module-level connection used by every request.

psycogreen's wait callback makes the connection asynchronous underneath: while one
greenlet waits for its query's answer, another greenlet of the same worker may call
``execute`` on the same connection, and psycopg2 refuses: ``psycopg2.ProgrammingError:
execute cannot be used while an asynchronous query is underway``. Nothing here preloads:
gunicorn imports this module in each worker, after gevent patched it. Expected: FAILING;
the fix is a connection per greenlet (a pool), not anything about preload.

    geventprobe run --app app:application --chdir examples/psycopg2_shared --route /query

Measured by hand (docs/causes.md): plain gunicorn, 2 gevent workers, 20 requests at once:
18 of 20 answered 500 with that ProgrammingError (the first request of
each worker got the connection and answered 200), raised at ``app.py`` (``cur.execute``).
"""

import os

import psycopg2
from psycogreen.gevent import patch_psycopg

# Make psycopg2 cooperative before the connection is made (a green connection).
patch_psycopg()

DATABASE_URL = os.environ.get("DATABASE_URL", "")
# The worker's one connection, shared by every request (the bug).
conn = psycopg2.connect(DATABASE_URL)
conn.autocommit = True


def application(environ, start_response):
    """``/query`` waits 0.2 s on the server; everything else says hello."""
    if environ.get("PATH_INFO") == "/query":
        with conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(0.2)")
        body = b"done\n"
    else:
        body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
