"""A psycopg connection made at import, in an app the gunicorn master loads (``preload_app``).

The master opens the connection, then forks: both workers inherit the same socket to
the same server backend and talk over each other. Most requests still answer 200 (with
a neighbour's rows now and then); some fail with ``psycopg.InternalError: got no result
from the query`` or ``psycopg.errors.DuplicatePreparedStatement: prepared statement
"_pg3_0" already exists``. And psycopg, imported before the workers patched, waits in C.
Expected: FAILING or BLOCKING; the cause is a connection made in the master, the fix is
to open connections in each worker (not at import under preload_app), or close them in
``post_fork``.

    geventprobe run --app app:application --chdir examples/master_connection --route /query

Measured by hand (docs/causes.md): plain gunicorn, 2 gevent workers, preload_app, 20
requests at once: 1.0 s for the 20 (0.055 s alone); 2 of 60 answered 500.
"""

import os

import psycopg

# Opened when the module is imported: in the master, under preload_app (the bug).
conn = psycopg.connect(os.environ.get("DATABASE_URL", ""), autocommit=True)


def application(environ, start_response):
    """``/query`` waits 0.05 s on the server and says which backend answered."""
    if environ.get("PATH_INFO") == "/query":
        row = conn.execute("SELECT pg_sleep(0.05), pg_backend_pid()").fetchone()
        body = f"{row[1]}\n".encode()
    else:
        body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
