"""psycopg 3 imported at the app's top; each /query opens a connection and waits 0.2 s on
the server. Under uWSGI's gevent loop engine whether it cooperates depends on when uWSGI
patches: before it loads the app (--gevent-early-monkey-patch) or after (--gevent-monkey-patch),
or not at all (no flag)."""

import os

import psycopg

DSN = os.environ["DATABASE_URL"]


def application(environ, start_response):
    if environ.get("PATH_INFO") != "/query":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not here\n"]
    with psycopg.connect(DSN) as conn:
        conn.execute("SELECT pg_sleep(0.2)")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
