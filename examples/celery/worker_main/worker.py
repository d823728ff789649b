"""The worker started from the app's own module with ``app.worker_main([...])``.

``python worker.py`` runs celery's worker command in-process. Only the ``celery``
program patches gevent (``celery/__main__.py`` calls ``maybe_patch_concurrency()``);
``worker_main`` does not, so with ``-P gevent`` nothing is patched at all: the
consumer waits for the broker on a plain blocking socket and the task greenlets it
spawns never get the hub. Measured: tasks received, never run (docs/celery.md).

    python worker.py
"""

import os

import psycopg
from celery import Celery

app = Celery("tasks", broker="redis://127.0.0.1:6379/0")


@app.task(name="tasks.query")  # run as __main__, it would be "__main__.query"
def query(seconds=0.2):
    """Open a connection, wait ``seconds`` on the server, close it."""
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SELECT pg_sleep(%s)", (seconds,))
    return seconds


if __name__ == "__main__":
    app.worker_main(["worker", "-P", "gevent", "-c", "16", "-l", "info", "-E"])
