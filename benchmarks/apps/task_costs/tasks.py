"""Celery tasks of a chosen cost, for the task rule's margin (issue 24).

- ``tasks.cpu(ms)``: ``ms`` of CPU in pure Python (the worker's thread clock), nothing else;
- ``tasks.conn(ms)``: a fresh psycopg connection, ``SELECT 1``, closed; then ``ms`` of CPU
  (what a task does with the answer).

    celery -A tasks worker -P gevent -c 16
"""

import os
import time

import psycopg
from celery import Celery

app = Celery("tasks", broker="redis://127.0.0.1:6379/0")


def burn(ms: float) -> None:
    """Spend ``ms`` of this thread's CPU without yielding to gevent."""
    end = time.thread_time() + ms / 1000
    while time.thread_time() < end:
        pass


@app.task
def cpu(ms=5.0):
    """CPU only."""
    burn(ms)
    return ms


@app.task
def conn(ms=0.0):
    """A connection of its own, one quick query, then ``ms`` of CPU."""
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as c:
        one = c.execute("SELECT 1").fetchone()[0]
    burn(ms)
    return one
