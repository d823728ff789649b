"""The probe's WSGI app: imports the driver the way a real app does.

gunicorn imports this module in each worker after ``monkey.patch_all()`` or,
with ``--preload``, once in the master before any patching. Which of the two
happened decides psycopg's wait function, so the module records what it saw at
import time. The build under test comes from ``GEVENTPROBE_BUILD``; psycopg 3's
implementation is chosen by ``PSYCOPG_IMPL``, set by the parent.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

BUILD = os.environ.get("GEVENTPROBE_BUILD", "binary")

#: What the process looked like when the driver was imported.
IMPORT_FACTS: dict = {
    "pid": os.getpid(),
    "time": time.time(),
    "driver_already_imported": "psycopg" in sys.modules or "psycopg2" in sys.modules,
}


def _patched(name: str) -> bool:
    if "gevent.monkey" not in sys.modules:
        return False
    return bool(sys.modules["gevent.monkey"].is_module_patched(name))


IMPORT_FACTS["select_patched"] = _patched("select")
IMPORT_FACTS["socket_patched"] = _patched("socket")

IMPORT_ERROR: str | None = None
driver = None
try:
    if BUILD.startswith("psycopg2"):
        import psycopg2 as driver
        import psycopg2.extensions  # noqa: F401

        if BUILD == "psycopg2-green":
            # Imported here, not patched (each worker does that): a missing psycogreen is
            # this build's import error, which tells the parent the build is unavailable.
            import psycogreen.gevent  # noqa: F401
    else:
        import psycopg as driver  # noqa: F401
except Exception as exc:  # the probe reports it; a crash here would only say "failed to boot"
    IMPORT_ERROR = "".join(traceback.format_exception_only(type(exc), exc)).strip()


def application(environ, start_response):
    """Answer every request with a short text: the probe itself runs beside the server."""
    body = f"geventprobe harness, build {BUILD}, pid {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
