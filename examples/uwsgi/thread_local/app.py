"""One connection per thread, kept in a threading.local made at import, the driver imported
in the view (so its wait function is gevent's): under uWSGI's --gevent-monkey-patch the app
is loaded before the worker patches threading, so the local is the real thread's and every
greenlet of the worker gets the same connection: the requests queue on it. With
--gevent-early-monkey-patch the local is gevent's, one connection per greenlet. Each /query
waits 0.2 s on the server."""

import os
import threading

DSN = os.environ["DATABASE_URL"]
_local = threading.local()


def connection():
    import psycopg

    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg.connect(DSN, autocommit=True)
    return conn


def application(environ, start_response):
    if environ.get("PATH_INFO") != "/query":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not here\n"]
    connection().execute("SELECT pg_sleep(0.2)")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
