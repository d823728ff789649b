"""A connection pool smaller than the worker's concurrency, with a short checkout timeout.

``psycopg_pool.ConnectionPool(max_size=2, timeout=0.5)`` for a worker that runs 16 tasks
at once: two tasks hold the two connections, the others queue for one, and those still
waiting after 0.5 s raise ``PoolTimeout``. The hub runs on time: nothing blocks, tasks
fail. Expected: the worker OK, ``tasks.query`` FAILING (most of the 16 at once raise).

    celery -A tasks worker -P gevent -c 16
"""

import os

from celery import Celery
from psycopg_pool import ConnectionPool

app = Celery("tasks", broker="redis://127.0.0.1:6379/0")

pool = ConnectionPool(os.environ["DATABASE_URL"], min_size=2, max_size=2, timeout=0.5,
                      kwargs={"autocommit": True}, open=False)


@app.task
def query(seconds=0.2):
    """Wait ``seconds`` on the server through a connection from the pool."""
    if pool.closed:
        pool.open(wait=True)
    with pool.connection() as conn:
        conn.execute("SELECT pg_sleep(%s)", (seconds,))
    return seconds
