"""A small Django 5.2 project on psycopg2: DATABASES from DATABASE_URL.

Django's PostgreSQL backend uses psycopg 3 whenever it imports; this project runs on
psycopg2, as a deployment with only psycopg2 installed does, so psycopg 3 is hidden from
it (``sys.modules["psycopg"] = None`` makes ``import psycopg`` raise ImportError).
"""

import os
import sys
from urllib.parse import unquote, urlsplit

sys.modules["psycopg"] = None  # type: ignore[assignment]  # psycopg2 only, see above

_url = urlsplit(os.environ.get("DATABASE_URL", "postgresql://localhost/postgres"))

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "mysite.urls"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth",
                  "django.contrib.sessions"]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware",
              "django.contrib.auth.middleware.AuthenticationMiddleware"]
USE_TZ = True
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(_url.path.lstrip("/")) or "postgres",
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
    }
}
