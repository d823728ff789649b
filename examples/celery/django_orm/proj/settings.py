"""The smallest Django 5.2 settings with celery: DATABASES from DATABASE_URL.

``DJANGO_DB_DRIVER=psycopg2`` makes this project run on psycopg2, as a deployment with
only psycopg2 installed does: Django's PostgreSQL backend uses psycopg 3 whenever it
imports, so here it is hidden from Django (``sys.modules["psycopg"] = None`` makes
``import psycopg`` raise ImportError).
"""

import os
import sys
from urllib.parse import unquote, urlsplit

if os.environ.get("DJANGO_DB_DRIVER") == "psycopg2":
    sys.modules["psycopg"] = None  # type: ignore[assignment]

_url = urlsplit(os.environ.get("DATABASE_URL", "postgresql://localhost/postgres"))

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["items"]
USE_TZ = True
TIME_ZONE = "UTC"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(_url.path.lstrip("/")) or "postgres",
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
        # Django's default: a connection per task, closed by celery's Django fixup after it.
        "CONN_MAX_AGE": 0,
    }
}
# The broker a deployment names here; CELERY_BROKER_URL in the environment wins.
CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
