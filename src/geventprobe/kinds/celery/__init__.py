"""A celery worker under ``-P gevent`` and its tasks (``run --celery``).

``app`` plans and judges the run, ``workers`` starts the user's worker with the probe
inside and measures its tasks, ``task_rules`` judges each task and ``causes`` says why
and how to fix it in celery's words.
"""
