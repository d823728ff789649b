"""Checks before a run starts anything, and the guards that bound it while it runs.

Each check raises ``ProbeError`` with one line naming the problem and the fix,
so that a bad input costs a second, not a half-started run:

- the connection cap: more connections at once (``Workload.connections()``) than
  ``CONNECTION_CAP`` need ``--allow-many-connections`` (a probe must not be able
  to exhaust a production server by a typo);
- the DSN parses (libpq's own parser), before any connection is tried;
- gevent, gunicorn and packaging import in the interpreter that runs gunicorn;
- the temp dir can be written (a TMPDIR that cannot is refused, not silently
  replaced by /tmp as Python's ``tempfile`` would);
- the embedded server's programs exist, when no server was given;
- once connected: the server has room for the run's connections.

While the run goes on, ``time_limit`` is a guard (``procs.guarded``) that every
wait loop checks, so the run ends at its time limit whatever phase it is in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from geventprobe.errors import ProbeError
from geventprobe.processes import children
from geventprobe.processes.server import ServerInfo, parse_dsn
from geventprobe.settings import Workload

CONNECTION_CAP = 100
"""Connections one build may open at once without ``--allow-many-connections``:
PostgreSQL's default ``max_connections``."""

DEFAULT_TIME_LIMIT_S = 600.0
"""``--time-limit`` default: the default run takes about 25 s on 2 cores."""

# Imported in a fresh interpreter, exactly as the gunicorn workers will need them.
_IMPORTS = r"""
import importlib, json
out = {}
for name in ("gevent", "gunicorn", "packaging"):
    try:
        importlib.import_module(name)
    except BaseException as exc:
        out[name] = ("%s: %s" % (type(exc).__name__, exc)).strip().splitlines()[0]
print(json.dumps(out))
"""

_INSTALL = {
    "gevent": "pip install gevent",
    "gunicorn": "pip install gunicorn packaging",
    # gunicorn's gevent worker imports packaging (docs/field-facts.md)
    "packaging": "pip install packaging",
}


def check_connection_cap(workload: Workload, allow: bool) -> None:
    """Refuse to open more than ``CONNECTION_CAP`` connections at once unless confirmed."""
    needed = workload.connections()
    if needed > CONNECTION_CAP and not allow:
        raise ProbeError(
            f"this run would open {needed} connections at once ({workload.workers} workers × "
            f"{needed // workload.workers} each), more than the {CONNECTION_CAP} geventprobe "
            "opens without asking: lower --workers/--greenlets, or pass "
            "--allow-many-connections to confirm the server can take it")


def check_imports(python: str | None = None, env: dict[str, str] | None = None) -> None:
    """gevent, gunicorn and packaging import in ``python`` (the workers' interpreter: ours,
    or a version matrix's isolated one run with the environment its gunicorn gets)."""
    python = python or sys.executable
    try:
        out = subprocess.run([python, "-c", _IMPORTS], capture_output=True, text=True,
                             timeout=60, check=False, env=env)
        failed = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise ProbeError(f"cannot run {python} to check gevent and gunicorn ({exc}): "
                         "reinstall geventprobe in a working Python environment") from exc
    for name, error in failed.items():
        missing = error.startswith("ModuleNotFoundError")
        raise ProbeError(
            f"{name} is {'not installed' if missing else 'broken'} in {python} ({error}): "
            f"{_INSTALL[name]}")


def check_temp_dir() -> str:
    """The temp dir runs will use, after proving a directory can be made in it."""
    wanted = os.environ.get("TMPDIR")
    if wanted and not os.path.isdir(wanted):
        raise ProbeError(f"TMPDIR={wanted} is not a directory: set TMPDIR to a writable "
                         "directory, or unset it")
    target = children.temp_root()
    try:
        os.rmdir(tempfile.mkdtemp(prefix="geventprobe-check-", dir=target))
    except OSError as exc:
        raise ProbeError(f"cannot create a directory in the temp dir {target} ({exc.strerror}): "
                         "set TMPDIR to a writable directory") from exc
    return target


def check_before_start(workload: Workload, dsn: str | None, embedded: bool, *,
                       allow_many_connections: bool = False) -> None:
    """Everything that can be refused before a server or gunicorn is started."""
    check_connection_cap(workload, allow_many_connections)
    if dsn:
        parse_dsn(dsn)
    check_temp_dir()
    check_imports()
    if embedded:
        from geventprobe.processes.postgres import find_binaries

        find_binaries()


def check_budget(info: ServerInfo, needed: int) -> None:
    """The server has room for ``needed`` more connections of our role."""
    free = info.free_connections()
    if free >= needed:
        return
    parts = [f"max_connections {info.max_connections}", f"{info.connections_in_use} in use"]
    if info.reserved_connections:
        parts.append(f"{info.reserved_connections} reserved for superusers")
    if info.role_connection_limit >= 0:
        parts.append(f"this role's limit {info.role_connection_limit}, "
                     f"{info.role_connections_in_use} of them in use")
    raise ProbeError(
        f"the server has {free} free connections ({', '.join(parts)}) and the run needs "
        f"{needed} at once: lower --workers or --greenlets, or free connections on the server")


LESS_WORK = "probe fewer builds (--builds) or connections"
"""How a run can do less, in the time limit's words (a target may say it its own way:
``Target.less_work``)."""


def time_limit(limit_s: float, less_work: str = LESS_WORK) -> Callable[[], None]:
    """A guard that ends the run once it has lasted ``limit_s`` seconds."""
    deadline = time.monotonic() + limit_s

    def check() -> None:
        if time.monotonic() > deadline:
            raise ProbeError(
                f"the run took longer than --time-limit {limit_s:g} s and was stopped "
                f"(everything it started was removed): raise --time-limit, or {less_work}")

    return check
