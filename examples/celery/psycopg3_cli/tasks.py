"""psycopg 3, the worker started by the ``celery`` command: the healthy case.

``celery`` patches gevent in ``maybe_patch_concurrency()`` (it reads ``-P gevent`` from
its own argv) before it imports this module, so psycopg is imported after ``select`` was
patched and picks a cooperative wait function. Each task opens its own connection.
Expected: OK (16 tasks of 0.2 s at once take ~0.3 s).

    CELERY_BROKER_URL=redis://... DATABASE_URL=postgresql://... \\
        celery -A tasks worker -P gevent -c 16
"""

import os

import psycopg
from celery import Celery

# The broker a deployment names in its config; CELERY_BROKER_URL in the environment wins.
app = Celery("tasks", broker="redis://127.0.0.1:6379/0")


@app.task
def query(seconds=0.2):
    """Open a connection, wait ``seconds`` on the server, close it."""
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SELECT pg_sleep(%s)", (seconds,))
    return seconds
