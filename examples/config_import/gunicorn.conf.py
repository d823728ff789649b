"""A gunicorn config that imports the driver, to check the database before starting.

gunicorn reads this file in the master, before any worker has monkey-patched
anything: psycopg is imported with select unpatched and chooses ``wait_c``, and
every forked worker inherits that choice (docs/field-facts.md). Expected: BLOCKING,
"imported ... while gunicorn read the config file, by gunicorn.conf.py:12".
The fix: import psycopg inside the hook (or not at all here), or patch first.
"""

import os

import psycopg  # the culprit: imported in the master, before gevent patched select

worker_class = "gevent"
workers = 2


def on_starting(server):
    """Fail fast when the database is not there: a common reason to import the driver here."""
    with psycopg.connect(os.environ.get("DATABASE_URL", ""), connect_timeout=5):
        pass
