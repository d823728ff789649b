"""The in-worker workload: wait windows with a hub heartbeat, then a SELECT 1 loop.

Runs in a greenlet of a gunicorn gevent worker. It talks to the parent only
through files in ``GEVENTPROBE_RUN_DIR`` (``ready-<pid>.json`` when its
connections are open, then it waits for ``go``; ``result-<pid>.json`` at the
end), never through stdout or the log. All times are ``time.monotonic()``,
which on Linux is the same clock in every process, so the parent can line its
CPU samples up with the windows reported here.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
import traceback
from importlib import metadata

RESULT_VERSION = 1


def _env_workload() -> dict:
    return json.loads(os.environ["GEVENTPROBE_WORKLOAD"])


def _run_dir() -> str:
    return os.environ["GEVENTPROBE_RUN_DIR"]


def _write_json(name: str, data: dict) -> None:
    # Write then rename, so the parent never reads half a file.
    path = os.path.join(_run_dir(), name)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _libpq_version(number: int) -> str:
    # libpq encodes 15.18 as 150018 (and 9.6.24 as 90624).
    if number >= 100000:
        return f"{number // 10000}.{number % 10000}"
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


def _callable_name(func) -> str | None:
    if func is None:
        return None
    module = getattr(func, "__module__", None) or ""
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    return f"{module}.{name}" if module else name


def collect_facts(worker=None) -> dict:
    """What this worker really runs: driver, wait function, patching, versions."""
    import gevent
    import greenlet
    from gevent import monkey
    from geventprobe.harness import app

    facts: dict = {
        "pid": os.getpid(),
        "build": app.BUILD,
        "python": platform.python_version(),
        "gevent": gevent.__version__,
        "greenlet": greenlet.__version__,
        "gunicorn": _dist_version("gunicorn"),
        "worker_class": type(worker).__module__ + "." + type(worker).__name__ if worker else None,
        "select_patched": bool(monkey.is_module_patched("select")),
        "socket_patched": bool(monkey.is_module_patched("socket")),
        "env": {k: os.environ.get(k) for k in ("PSYCOPG_IMPL", "PSYCOPG_WAIT_FUNC")},
        "driver_import": dict(app.IMPORT_FACTS),
        "driver_imported_in_master": app.IMPORT_FACTS["pid"] != os.getpid(),
        "import_error": app.IMPORT_ERROR,
        "driver": None,
    }
    if "psycopg" in sys.modules:
        import psycopg
        from psycopg import pq, waiting

        facts["driver"] = "psycopg"
        # Old releases lack some of these attributes: report what exists (issue reports
        # often come from exactly those releases).
        build_version = getattr(pq, "__build_version__", None)
        wait = getattr(waiting, "wait", None)
        facts["psycopg"] = {
            "version": psycopg.__version__,
            "impl": getattr(pq, "__impl__", None),
            "libpq": _libpq_version(pq.version()),
            "libpq_build": _libpq_version(build_version) if build_version else None,
            "wait": getattr(wait, "__name__", None),
        }
    if "psycopg2" in sys.modules:
        import psycopg2
        import psycopg2.extensions as ext

        facts["driver"] = facts["driver"] or "psycopg2"
        facts["psycopg2"] = {
            "version": psycopg2.__version__.split()[0],
            "libpq": _libpq_version(ext.libpq_version()),
            "wait_callback": _callable_name(ext.get_wait_callback()),
        }
        facts["psycogreen"] = _dist_version("psycogreen")
    return facts


class _Driver:
    """The few calls the workload needs, for psycopg 3 and psycopg2 alike."""

    def __init__(self, module, workload: dict):
        self.module = module
        self.is_psycopg2 = module.__name__ == "psycopg2"
        self.dsn = os.environ.get("GEVENTPROBE_DSN", "")
        self.kwargs = {
            "application_name": "geventprobe",
            "connect_timeout": int(workload["connect_timeout_s"]),
            "options": f"-c statement_timeout={int(workload['statement_timeout_ms'])}",
        }

    def connect(self):
        if self.is_psycopg2:
            conn = self.module.connect(self.dsn, **self.kwargs)
            conn.autocommit = True
            return conn
        return self.module.connect(self.dsn, autocommit=True, **self.kwargs)

    @staticmethod
    def query(cursor, sql: str, params=None):
        cursor.execute(sql, params)
        return cursor.fetchone()


class _Heartbeat:
    """Ticks every ``period`` s; each late tick is hub lag: time the hub could not run us."""

    def __init__(self, period: float):
        self.period = period
        self.expected: list[float] = []
        self.lag: list[float] = []
        self._running = True

    def run(self):
        import gevent

        period = self.period
        while self._running:
            before = time.monotonic()
            gevent.sleep(period)
            now = time.monotonic()
            self.expected.append(before + period)
            self.lag.append(now - before - period)

    def stop(self):
        self._running = False


def _wait_for_go(timeout: float) -> None:
    import gevent

    go = os.path.join(_run_dir(), "go")
    deadline = time.monotonic() + timeout
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the parent did not say go within {timeout:.0f} s")
        gevent.sleep(0.005)


def run(worker=None) -> None:
    """Run the whole workload once and write ``result-<pid>.json``."""
    import gevent
    from geventprobe.harness import app

    pid = os.getpid()
    workload = _env_workload()
    result: dict = {"version": RESULT_VERSION, "pid": pid, "error": None}
    conns: list = []
    heartbeat = _Heartbeat(workload["heartbeat_ms"] / 1000.0)
    try:
        result["facts"] = collect_facts(worker)
        if app.IMPORT_ERROR:
            raise ImportError(app.IMPORT_ERROR)
        driver = _Driver(app.driver, workload)
        greenlets = int(workload["greenlets"])
        jobs = [gevent.spawn(driver.connect) for _ in range(greenlets)]
        gevent.joinall(jobs, raise_error=True)
        conns = [job.value for job in jobs]
        cursors = [conn.cursor() for conn in conns]
        port = None
        if worker is not None and worker.sockets:
            port = worker.sockets[0].getsockname()[1]
        _write_json(f"ready-{pid}.json", {"pid": pid, "port": port})
        _wait_for_go(float(workload["go_timeout_s"]))

        hb = gevent.spawn(heartbeat.run)
        # One query per connection first, so first-use costs stay out of the windows.
        gevent.joinall([gevent.spawn(driver.query, c, "SELECT 1") for c in cursors],
                       raise_error=True)
        w = float(workload["wait_seconds"])
        windows = []
        for _ in range(int(workload["wait_rounds"])):
            gevent.sleep(0.05)  # let the heartbeat tick between windows
            t0 = time.monotonic()
            jobs = [gevent.spawn(driver.query, c, "SELECT pg_sleep(%s)", (w,)) for c in cursors]
            gevent.joinall(jobs, raise_error=True)
            windows.append([t0, time.monotonic()])
        gevent.sleep(0.05)

        latencies: list[int] = []
        t_end = time.monotonic() + float(workload["select1_seconds"])

        def select1_loop(cursor):
            clock = time.perf_counter_ns
            record = latencies.append
            while time.monotonic() < t_end:
                t = clock()
                driver.query(cursor, "SELECT 1")
                record((clock() - t) // 1000)

        s0 = time.monotonic()
        gevent.joinall([gevent.spawn(select1_loop, c) for c in cursors], raise_error=True)
        s1 = time.monotonic()
        heartbeat.stop()
        hb.join(timeout=1)

        result.update(
            wait_seconds=w,
            windows=windows,
            select1_window=[s0, s1],
            select1_latencies_us=latencies,
            heartbeat_expected=heartbeat.expected,
            heartbeat_lag=heartbeat.lag,
            # The wait function may be looked up again on every query: report what it is now.
            facts_after=collect_facts(worker),
        )
    except BaseException as exc:
        heartbeat.stop()
        result["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        result["traceback"] = traceback.format_exc()
    finally:
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        _write_json(f"result-{pid}.json", result)


def start(worker) -> None:
    """Entry point from ``post_worker_init``: apply the build's set-up, spawn the probe."""
    import gevent
    from geventprobe.harness import app, controls

    controls.apply()
    if app.BUILD == "psycopg2-green" and app.IMPORT_ERROR is None:
        # What a gevent app using psycopg2 does once per worker.
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
    gevent.spawn(run, worker)
