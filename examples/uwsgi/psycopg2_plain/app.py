"""psycopg2 without psycogreen under uWSGI's gevent loop engine, patched early: libpq waits
in C, whatever gevent patched. Each /query opens a connection and waits 0.2 s."""

import os

import psycopg2

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
