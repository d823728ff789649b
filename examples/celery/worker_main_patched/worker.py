"""``app.worker_main([...])`` from the app's own module, with gevent patched first: the fix.

``worker_main`` does not patch (only the ``celery`` program does), so the module that
starts the worker has to, on its first lines, before it imports anything else: then
kombu's broker connection, psycopg and everything else see the patched ``socket`` and
``select``. Expected: OK.

    python worker.py
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402

import psycopg  # noqa: E402
from celery import Celery  # noqa: E402

app = Celery("tasks", broker="redis://127.0.0.1:6379/0")


@app.task(name="tasks.query")  # run as __main__, it would be "__main__.query"
def query(seconds=0.2):
    """Open a connection, wait ``seconds`` on the server, close it."""
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SELECT pg_sleep(%s)", (seconds,))
    return seconds


if __name__ == "__main__":
    app.worker_main(["worker", "-P", "gevent", "-c", "16", "-l", "info", "-E"])
