"""A gevent deployment, no preload; the config imports the app's upstream client to check it.

The import runs in the gunicorn master before any worker patched (``upstream.py``'s
``from time import sleep`` keeps the blocking original).
"""

from upstream import check_upstream  # imported in the master, before gevent patched

worker_class = "gevent"
workers = 2


def when_ready(server):
    """Check the upstream service once, when gunicorn is ready to serve."""
    check_upstream()
