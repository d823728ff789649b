"""A Flask-style app with a module-level connection pool, as plain WSGI (no Flask needed).

The pool is made when the module is imported, the way ``db = SQLAlchemy(app)`` or
``pool = psycopg_pool.ConnectionPool(...)`` is. Without ``--preload`` gunicorn
imports this module in each worker after gevent has patched it, so psycopg picks
its cooperative wait function. Expected: OK.

    geventprobe run --app app:application --chdir examples/pool_app
"""

import os
import queue
import threading
from contextlib import contextmanager

import psycopg

DATABASE_URL = os.environ.get("DATABASE_URL", "")


class Pool:
    """The few lines of a connection pool: open on demand up to ``size``, then reuse."""

    def __init__(self, conninfo: str, size: int = 4):
        self.conninfo = conninfo
        self.size = size
        self.opened = 0
        self.idle: queue.LifoQueue = queue.LifoQueue()
        self.lock = threading.Lock()

    @contextmanager
    def connection(self):
        try:
            conn = self.idle.get_nowait()
        except queue.Empty:
            with self.lock:
                room = self.opened < self.size
                self.opened += room
            conn = (psycopg.connect(self.conninfo, autocommit=True) if room
                    else self.idle.get(timeout=30))
        try:
            yield conn
        finally:
            self.idle.put(conn)


pool = Pool(DATABASE_URL)


def application(environ, start_response):
    """``/items`` reads from the database; everything else says hello."""
    if environ.get("PATH_INFO") == "/items":
        with pool.connection() as conn:
            rows = conn.execute("SELECT generate_series(1, 3)").fetchall()
        body = (", ".join(str(r[0]) for r in rows) + "\n").encode()
    else:
        body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
