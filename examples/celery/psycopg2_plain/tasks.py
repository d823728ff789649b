"""psycopg2 without psycogreen: libpq waits in C and the whole worker stops.

Under ``-P gevent`` one process runs every task on one hub: a task waiting in libpq
holds the hub, so the other 15 tasks (and the broker connection) wait their turn.
Each task still reports 0.2 s to celery: the waiting shows only as queue time.
Expected: BLOCKING (16 tasks of 0.2 s at once take ~3.4 s).

    celery -A tasks worker -P gevent -c 16
"""

import os

import psycopg2
from celery import Celery

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
