"""The project's celery app: settings from Django (``CELERY_*``), tasks from every app.

    celery -A proj worker -P gevent -c 16
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
