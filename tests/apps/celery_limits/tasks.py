"""Tasks that celery stops, or that run long (tests/test_celery_run.py): under the celery
program ``time.sleep`` is gevent's, so each only waits.

- ``hard``: its hard time limit (1 s) stops it: celery's gevent pool raises a gevent
  Timeout through it (task_postrun with no state, then TimeLimitExceeded);
- ``soft``: a soft time limit (0.3 s) that celery's gevent pool never enforces;
- ``slow``: waits ``seconds``, for a worker stopped or killed from outside meanwhile.
"""

import time

from celery import Celery

app = Celery("tasks")


@app.task(time_limit=1)
def hard(seconds=2.0):
    time.sleep(seconds)
    return seconds


@app.task(soft_time_limit=0.3)
def soft(seconds=0.6):
    time.sleep(seconds)
    return seconds


@app.task
def slow(seconds=4.0):
    time.sleep(seconds)
    return seconds
