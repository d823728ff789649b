"""psycopg2 with psycogreen installed at the top of the app module.

The module is imported once in the worker process; the wait callback it installs is
process-wide. (Imported by ``celery -A tasks ...`` after gevent patched; psycogreen's
callback does not need the patching anyway.) Expected: OK.

    celery -A tasks worker -P gevent -c 16
"""

import os

from psycogreen.gevent import patch_psycopg

patch_psycopg()

import psycopg2  # noqa: E402
from celery import Celery  # noqa: E402

app = Celery("tasks", broker="redis://127.0.0.1:6379/0")


@app.task
def query(seconds=0.2):
    """Open a connection, wait ``seconds`` on the server, close it."""
    conn = psycopg2.connect(os.environ["DATABASE_URL"])
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(%s)", (seconds,))
    finally:
        conn.close()
    return seconds
