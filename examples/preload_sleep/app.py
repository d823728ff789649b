"""``from time import sleep`` in an app that the gunicorn master loads (``preload_app``).

The master imports this module before any worker patched: ``sleep`` here is bound to
the standard library's ``time.sleep``. Each worker then patches ``time`` — but this
module's name still points at the original, which sleeps the whole process, hub and
all. Expected: BLOCKING, who blocked ``app.py`` in ``call_upstream`` (``sleep(0.1)``);
the cause is the binding ``from time import sleep`` made before gevent patched, and the
fix is ``import time`` … ``time.sleep(…)``, or patching before the app is imported.

    geventprobe run --app app:application --chdir examples/preload_sleep --route /upstream \
        --preload

Measured by hand (docs/causes.md): plain gunicorn --preload, 2 gevent workers, 20 requests
at once: 0.10 s alone, 1.02 s for the 20 (p50 0.60 s), all 200.
"""

from time import sleep  # bound at import: the original when the master imports it


def call_upstream() -> bytes:
    """Wait for a slow upstream service (stands for any blocking call)."""
    sleep(0.1)
    return b"upstream said ok\n"


def application(environ, start_response):
    """``/upstream`` waits 0.1 s; everything else says hello."""
    body = call_upstream() if environ.get("PATH_INFO") == "/upstream" else b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
