"""The parent's side of the run directory, the files it exchanges with the probed workers.

Every run of probed workers (a WSGI server's, ``app/wsgi_run.py``; a celery worker's,
``kinds/celery/workers.py``) shares one protocol with them: a private run directory
(``GEVENTPROBE_RUN_DIR``) in which each worker writes its typed records
(``worker/record.py``) and the parent writes ``go``. This module reads and waits for those
records, refusing any the workers wrote in another record version (one line, exit 2).
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Callable

import psutil

from geventprobe import files
from geventprobe.dsn import redact
from geventprobe.errors import ProbeError
from geventprobe.processes import children
from geventprobe.worker import record
from geventprobe.worker.record import Ready


def read_records(run_dir: str, prefix: str, parsed: dict[str, object] | None = None
                 ) -> dict[int, object]:
    """Every worker's ``<prefix>-<pid>.json`` (``record.PREFIXES`` names its type), by pid.

    ``parsed`` caches files across calls of a wait loop: a file is renamed into place whole
    and never changes, so it is read once. A record of another version, or with fields of
    the wrong type, is a ``ProbeError`` (one line, exit 2).
    """
    kind = record.PREFIXES[prefix]
    found: dict[int, object] = {}
    for path in glob.glob(os.path.join(run_dir, f"{prefix}-*.json")):
        if parsed is not None and path in parsed:
            rec = parsed[path]
        else:
            try:
                rec = record.read(kind, path)
            except (OSError, ValueError):
                continue  # a rename is atomic, so this is someone else's file: ignore it
            except record.RecordError as exc:
                raise ProbeError(f"cannot read a worker's report: {exc}") from None
            if parsed is not None:
                parsed[path] = rec
        found[rec.pid] = rec
    return found


def log_tail(path: str, lines: int = 30) -> list[str]:
    """The last ``lines`` lines of a server's log, each redacted (none if it is unreadable)."""
    try:
        with open(path, errors="replace") as f:
            return [redact(ln.rstrip()) for ln in f.readlines()[-lines:]]
    except OSError:
        return []


def still_importing(run_dir: str) -> record.Importing | None:
    """The first process still importing the user's app (``importing-<pid>.json`` written,
    no ``ready`` yet, still alive); None when none is."""
    ready = read_records(run_dir, "ready")
    importing = [r for r in read_records(run_dir, "importing").values()
                 if r.pid not in ready and not gone(r.pid)]
    return min(importing, key=lambda r: r.t) if importing else None


def slow_import_fix(timeout: float) -> str:
    """What to do when the app's import outlasted the workers' boot timeout."""
    return (f"if it is meant to take that long, raise boot_timeout_s (now {timeout:g} s) in a "
            "profile ([workload] boot_timeout_s = 300, --config FILE); otherwise find what the "
            "import waits for (a connection or a network call made at import time)")


def gone(pid: int) -> bool:
    """True once a worker has exited (a zombie its master has not reaped yet counts)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(run_dir: str, prefix: str, count: int, timeout: float, alive: Callable[[], bool],
             pids: list[int] | None = None) -> dict[int, object] | None:
    """Wait until ``count`` workers wrote ``<prefix>-<pid>.json``; None on timeout, when
    ``alive()`` turns false (the workers' master exited), or when a worker of ``pids`` died
    without writing it."""
    deadline = time.monotonic() + timeout
    parsed: dict[str, object] = {}
    while True:
        found = read_records(run_dir, prefix, parsed)
        if pids is not None:
            found = {p: d for p, d in found.items() if p in pids}
        # The embedded server's death or the run's time limit end the run here.
        children.check_guards()
        if len(found) >= count:
            return found
        if prefix == "ready" and glob.glob(os.path.join(run_dir, "result-*.json")):
            return None  # a worker gave up before getting ready
        if not alive() or time.monotonic() > deadline:
            return None
        if pids is not None and any(gone(p) for p in pids if p not in found):
            return None  # a worker died without reporting: its report will never come
        time.sleep(0.01)


def say_go(run_dir: str, order: list[int]) -> None:
    """Tell the ready workers to start; they take turns in the connect phase in ``order``."""
    files.write_atomic(os.path.join(run_dir, "go"), json.dumps({"order": order}))


def ready_port(ready: dict[int, Ready]) -> int | None:
    """The port the workers listen on, from their ready records (None: none said)."""
    return next((r.port for r in ready.values() if r.port is not None), None)
