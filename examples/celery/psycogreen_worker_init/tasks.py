"""psycopg2 with psycogreen installed in ``worker_init``: a signal every pool sends.

``worker_init`` is sent once in the worker process, before the pool starts, whatever
the pool (a gevent worker has only that one process). psycogreen's wait callback calls
gevent's own ``wait_read``/``wait_write`` and is process-wide, so once installed every
task's queries yield to the hub. Expected: OK.

    celery -A tasks worker -P gevent -c 16
"""

import os

import psycopg2
from celery import Celery
from celery.signals import worker_init

app = Celery("tasks", broker="redis://127.0.0.1:6379/0")


@worker_init.connect
def make_psycopg2_green(**_):
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()


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
