"""A plain WSGI app that imports psycopg at module level and queries per request.

Harmless on its own: what makes it block is --preload (see
gunicorn.conf.py beside it).
"""

import os

import psycopg

DATABASE_URL = os.environ.get("DATABASE_URL", "")


def application(environ, start_response):
    """``/now`` asks the database for the time, ``/query`` waits 0.2 s on it (a connection
    per request); everything else says hello."""
    if environ.get("PATH_INFO") == "/now":
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            body = f"{conn.execute('SELECT now()').fetchone()[0]}\n".encode()
    elif environ.get("PATH_INFO") == "/query":
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute("SELECT pg_sleep(0.2)")
        body = b"done\n"
    else:
        body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
