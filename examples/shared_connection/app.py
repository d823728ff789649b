"""One psycopg connection shared by every request of a worker (a "singleton" connection).

The connection is opened when each worker imports the app (after gevent patched it) and
kept in a module global, the way a ``db = connect(...)`` at the top of a module is.
psycopg 3 guards a connection with a lock, so under the gevent worker concurrent requests
queue on it one query at a time while the hub stays free: nothing blocks, yet users wait.
Expected: SERIALIZED.

    geventprobe run --app app:application --chdir examples/shared_connection \
        --route /query
"""

import os

import psycopg

DATABASE_URL = os.environ.get("DATABASE_URL", "")
# The worker's one connection, shared by every request it serves.
conn = psycopg.connect(DATABASE_URL, autocommit=True)


def application(environ, start_response):
    """``/query`` waits 0.2 s on the server; everything else says hello."""
    if environ.get("PATH_INFO") == "/query":
        conn.execute("SELECT pg_sleep(0.2)")
        body = b"done\n"
    else:
        body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
