"""A SQLAlchemy engine whose pool holds ONE connection (``pool_size=1, max_overflow=0``).

Every request of a worker checks a connection out of SQLAlchemy's QueuePool; with one
connection, concurrent requests queue at the checkout (``engine.connect()``) for 0.2 s
each while the hub runs on time. Nothing fails (the pool's timeout is 30 s): users wait.
Expected: SERIALIZED, a pool of 1 for the concurrency a worker serves, waited on at
``app.py`` in ``application`` (``with engine.connect()``).

    geventprobe run --app app:application --chdir examples/sqlalchemy_small_pool --route /query

Measured by hand (docs/causes.md): plain gunicorn, 2 gevent workers, 20 requests at once:
2.0–2.7 s for the 20 (p50 1.2 s; 0.2 s alone), all 200.
"""

import os

from sqlalchemy import create_engine, text


def _url(dsn: str) -> str:
    """SQLAlchemy URL on psycopg 3 for a ``postgresql://`` DSN."""
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1).replace(
        "postgres://", "postgresql+psycopg://", 1)


# Made when each worker imports the app, after gevent patched it (no preload).
engine = create_engine(_url(os.environ.get("DATABASE_URL", "")), pool_size=1, max_overflow=0,
                       pool_pre_ping=False)


def application(environ, start_response):
    """``/query`` waits 0.2 s on the server; everything else says hello."""
    if environ.get("PATH_INFO") == "/query":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(0.2)"))
        body = b"done\n"
    else:
        body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
