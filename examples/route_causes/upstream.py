"""The app's client of an upstream service; the gunicorn config imports it (``when_ready``).

gunicorn reads its config in the master, before any worker patched: this module is
imported there, and ``from time import sleep`` binds the standard library's blocking
``time.sleep``. The workers inherit the module as it is; gevent patches ``time.sleep``
in each worker afterwards, but the name here still points at the original, which stops
the whole worker (its hub and every other request) for each call.
"""

from time import sleep  # bound in the master, before gevent patched: blocks the worker

UPSTREAM_DELAY_S = 0.1


def check_upstream() -> bool:
    """Is the upstream service there? (The config's ``when_ready`` asks once.)"""
    return True


def call_upstream() -> bytes:
    """Ask the upstream service (stands for any call that waits 0.1 s)."""
    sleep(UPSTREAM_DELAY_S)
    return b"upstream said ok\n"
