"""A gunicorn config with preload_app (what ``gunicorn --preload`` does).

The master imports the app, and with it psycopg, before forking: no worker has
patched yet, so psycopg chooses ``wait_c`` and every worker inherits it.
Expected: BLOCKING, "imported in the gunicorn master, while it loaded the app
(--preload / preload_app = True), by app.py:9". The fix: drop preload_app, or
monkey-patch at the very top of this file.
"""

worker_class = "gevent"
workers = 2
preload_app = True
