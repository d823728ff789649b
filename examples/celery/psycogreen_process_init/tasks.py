"""psycopg2 with psycogreen installed in ``worker_process_init``, the advice for prefork.

``worker_process_init`` is sent in each child process of the prefork pool (and by the
solo pool). The gevent pool has no child processes and never sends it: the receiver
below never runs, psycopg2 keeps no wait callback and libpq waits in C.
Measured: BLOCKING, the same as no psycogreen at all (docs/celery.md).

    celery -A tasks worker -P gevent -c 16
"""

import os

import psycopg2
from celery import Celery
from celery.signals import worker_process_init

app = Celery("tasks", broker="redis://127.0.0.1:6379/0")


@worker_process_init.connect
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
