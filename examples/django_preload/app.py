"""A Django 5.2 project (settings module ``shop.settings``, one view) as gunicorn loads it.

With ``preload_app = True`` the master imports it, and Django makes its database
connection object there, before the gevent worker patched threading. In the workers
every request that touches the database then answers 500 (``DatabaseError:
DatabaseWrapper objects created in a thread can only be used in that same thread``).
Expected: FAILING, with that line.

    geventprobe run --app app:application --chdir examples/django_preload \
        --route /items
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

from django.core.wsgi import get_wsgi_application
from django.urls import resolve

application = get_wsgi_application()
resolve("/items")  # load the URLconf now, as a warm-up or a check at start-up would
