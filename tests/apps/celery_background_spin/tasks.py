"""The tests' own celery app with a background greenlet that never sleeps (issue 25 row 12).

psycopg 3 under ``celery -A tasks worker -P gevent`` (the celery program patches first: the
driver cooperates). When the worker is ready, the app starts a greenlet that polls an
in-memory queue and "yields" with ``gevent.sleep(0)`` when there is nothing to do: it gives
the hub a turn but never sleeps, so the worker burns a core while nothing happens.
``SPIN=0`` leaves the loop out.

    celery -A tasks worker -P gevent -c 16
"""

import collections
import os

import gevent
import psycopg
from celery import Celery
from celery.signals import worker_ready

# The broker a deployment names in its config; CELERY_BROKER_URL in the environment wins.
app = Celery("tasks", broker="redis://127.0.0.1:6379/0")
JOBS: collections.deque = collections.deque()


def drain_jobs() -> None:
    """The app's background loop: take jobs as they come, never sleeping in between."""
    while True:
        while JOBS:
            JOBS.popleft()()
        # "Yield to the others": a turn of the hub, and no sleep at all.
        gevent.sleep(0)


@worker_ready.connect
def start_background_loop(**_kwargs) -> None:
    if os.environ.get("SPIN", "1") != "0":
        gevent.spawn(drain_jobs)


@app.task
def query(seconds=0.2):
    """Open a connection, wait ``seconds`` on the server, close it."""
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SELECT pg_sleep(%s)", (seconds,))
    return seconds
