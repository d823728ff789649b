"""geventprobe: does your PostgreSQL driver block or busy-wait under gunicorn + gevent?

Kept import-free on purpose: gunicorn loads ``geventprobe.worker`` in the
master, and nothing there may import a driver or patch anything by accident.
"""

__version__ = "0.1.0"
