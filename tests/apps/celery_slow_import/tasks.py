"""A celery app whose module waits at import (tests/test_bad_inputs.py): under the celery
program ``time.sleep`` is gevent's, so the hub runs while the import waits; the worker
never gets ready within a short boot timeout."""

import time

time.sleep(30)

from celery import Celery  # noqa: E402

app = Celery("tasks")


@app.task
def nothing():
    return None
