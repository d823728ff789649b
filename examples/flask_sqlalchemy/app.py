"""Flask with a SQLAlchemy engine at its defaults: the app a team probes first.

``create_engine(DATABASE_URL)`` with nothing else: SQLAlchemy's QueuePool, 5 connections
kept and 10 more on demand (``pool_size=5, max_overflow=10``), opened as requests need
them; psycopg 3 (SQLAlchemy 2.1's default driver for ``postgresql://``). ``/health`` runs
``SELECT 1`` on a pooled connection. Expected: OK (a few ms of CPU per request, which
8 requests at once share in a gevent worker; nothing they wait on each other for).

    geventprobe run --app app:app --chdir examples/flask_sqlalchemy --route /health
"""

import os

from flask import Flask
from sqlalchemy import create_engine, text


def _url(dsn: str) -> str:
    """SQLAlchemy URL on psycopg 3 for a ``postgresql://`` DSN."""
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1).replace(
        "postgres://", "postgresql+psycopg://", 1)


app = Flask(__name__)
# Made when each worker imports the app, after gevent patched it (no preload).
engine = create_engine(_url(os.environ.get("DATABASE_URL", "")))


@app.get("/health")
def health():
    with engine.connect() as conn:
        conn.execute(text("SELECT 1")).scalar_one()
    return "ok\n"
