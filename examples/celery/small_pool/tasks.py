"""A connection pool of two for a worker that runs 16 tasks at once.

``psycopg_pool.ConnectionPool(max_size=2)`` with its default 30 s checkout timeout: two
tasks hold the two connections, the others queue for one. Nothing fails and the hub runs
on time: tasks wait. Expected: the worker OK, ``tasks.query`` SERIALIZED, a pool of 2.

    celery -A tasks worker -P gevent -c 16
"""

import os

from celery import Celery
from psycopg_pool import ConnectionPool

app = Celery("tasks", broker="redis://127.0.0.1:6379/0")

pool = ConnectionPool(os.environ["DATABASE_URL"], min_size=2, max_size=2,
                      kwargs={"autocommit": True}, open=False)


@app.task
def query(seconds=0.2):
    """Wait ``seconds`` on the server through a connection from the pool."""
    if pool.closed:
        pool.open(wait=True)
    with pool.connection() as conn:
        conn.execute("SELECT pg_sleep(%s)", (seconds,))
    return seconds
