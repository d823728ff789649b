"""psycopg2 with psycogreen's wait callback installed at the app's top, under uWSGI's
gevent loop engine with the usual --gevent-monkey-patch: psycopg2 waits through gevent
whenever psycogreen runs before the first connection. Each /query opens one, waits 0.2 s."""

import os

import psycogreen.gevent
import psycopg2

psycogreen.gevent.patch_psycopg()

DSN = os.environ["DATABASE_URL"]


def application(environ, start_response):
    if environ.get("PATH_INFO") != "/query":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not here\n"]
    conn = psycopg2.connect(DSN)
    try:
        conn.cursor().execute("SELECT pg_sleep(0.2)")
    finally:
        conn.close()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
