"""Routes of a chosen cost, for the by-hand table of docs/routes.md (issue 24).

Plain WSGI, psycopg 3 (imported after gevent patched: no preload). ``N`` is milliseconds:

- ``/cpu/N``: N ms of CPU in pure Python (the worker's thread clock), nothing else;
- ``/wait/N``: a fresh connection per request (Django's default), ``pg_sleep(N)``, closed;
- ``/pool/N``: a connection from a psycopg_pool pool of 16 per worker, ``pg_sleep(N)``;
- ``/conn``: a fresh connection per request, ``SELECT 1``;
- ``/cpuconn/N``: N ms of CPU, then a fresh connection and ``SELECT 1``.

    gunicorn -k gevent -w 2 -c gunicorn.conf.py app:application
"""

import os
import time

import psycopg
from psycopg_pool import ConnectionPool

DATABASE_URL = os.environ.get("DATABASE_URL", "")

# Made when each worker imports the app, after gevent patched it: 16 connections opened at
# once, so the pool never grows during a burst of 8 per worker.
pool = ConnectionPool(DATABASE_URL, min_size=16, max_size=16, kwargs={"autocommit": True},
                      timeout=30, open=True)


def burn(ms: float) -> None:
    """Spend ``ms`` of this thread's CPU without yielding to gevent."""
    end = time.thread_time() + ms / 1000
    while time.thread_time() < end:
        pass


def fresh(sql: str, params=None) -> None:
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(sql, params).fetchone()


def application(environ, start_response):
    parts = environ.get("PATH_INFO", "").strip("/").split("/")
    ms = float(parts[1]) if len(parts) > 1 else 0.0
    kind = parts[0]
    if kind == "cpu":
        burn(ms)
    elif kind == "wait":
        fresh("SELECT pg_sleep(%s)", (ms / 1000,))
    elif kind == "pool":
        with pool.connection() as conn:
            conn.execute("SELECT pg_sleep(%s)", (ms / 1000,)).fetchone()
    elif kind == "conn":
        fresh("SELECT 1")
    elif kind == "cpuconn":
        burn(ms)
        fresh("SELECT 1")
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such route\n"]
    body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
