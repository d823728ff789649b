"""One psycopg connection shared by every task of the worker (a "singleton" connection).

Opened when the worker imports this module (after ``celery`` patched gevent) and kept
in a module global. psycopg guards a connection with a lock: concurrent tasks queue on
it one query at a time while the hub stays free. Nothing blocks, yet tasks wait.
Expected: SERIALIZED (16 tasks of 0.2 s at once take ~3.2 s, the hub on time).

    celery -A tasks worker -P gevent -c 16
"""

import os

import psycopg
from celery import Celery

app = Celery("tasks", broker="redis://127.0.0.1:6379/0")

# The worker's one connection, shared by every task it runs.
conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)


@app.task
def query(seconds=0.2):
    """Wait ``seconds`` on the server through the shared connection."""
    conn.execute("SELECT pg_sleep(%s)", (seconds,))
    return seconds
