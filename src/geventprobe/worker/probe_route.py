"""A WSGI wrapper: one reserved path runs one query, every other path goes to the app.

The parent's HTTP load (``geventprobe.app.http_load``) requests ``/__geventprobe__``
at a fixed rate while the probe runs, so the report shows the latency a user of
this worker would feel. The route is served by the same gunicorn gevent worker,
in the same hub, as the app; each request takes one of the probe's own
connections (opened with the driver the worker really uses, before the parent
said go), runs one query and gives the connection back. A request that finds
every connection busy waits for one: that queueing is part of what a user feels.

In the route phase (``run --app --route``) the wrapper also notes when each request of
the app starts, and leaves a marker file the first time it serves a route's warm-up
request (the parent's header ``X-Geventprobe-Warm``, taken out before the app sees it), so
the parent knows every worker has served the route before it measures it.

Imports nothing at module level: the worker decides when gevent and the driver
are imported (see ``worker/__init__.py``).
"""

from __future__ import annotations

import contextlib
import os
import time

PATH = "/__geventprobe__"
ROUTES_GO = "routes-go"
"""Written in the run dir once the request phase's load has stopped (every answer in): a
worker closes the probe route's connections then, not when its own request phase ends. A
blocked hub answers the queued requests after that, and would have answered them 503
(measured: 25 of 26 under uWSGI with --gevent-monkey-patch)."""
WARM_HEADER = "X-Geventprobe-Warm"
"""Marks the parent's warm-up requests of a route (``app/routes.warm_up``): the value names
the route; the wrapper takes the header out before the app sees the request."""
_WARM_ENVIRON = "HTTP_" + WARM_HEADER.upper().replace("-", "_")

_state: dict = {"pool": None, "sql": None, "params": None, "seen": None, "phase": None,
                "run_dir": None, "warmed": set()}


def warm_marker(mark: str, pid: int) -> str:
    """The file a worker leaves in the run directory once it served a warm-up request."""
    return f"warm-{mark}-{pid}"


def configure(connections: list, sleep_ms: float) -> None:
    """Serve the route with ``connections``: each request runs pg_sleep(sleep_ms), or SELECT 1."""
    from gevent.queue import Queue

    pool: Queue = Queue()
    for conn in connections:
        pool.put(conn)
    if sleep_ms > 0:
        _state.update(sql="SELECT pg_sleep(%s)", params=(sleep_ms / 1000.0,))
    else:
        _state.update(sql="SELECT 1", params=None)
    _state["pool"] = pool


def _respond(start_response, status: str, text: str) -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")])
    return [body]


def _answer(start_response) -> list[bytes]:
    pool = _state["pool"]
    if pool is None:
        return _respond(start_response, "503 Service Unavailable", "geventprobe: not ready\n")
    conn = pool.get()
    try:
        cursor = conn.cursor()
        try:
            cursor.execute(_state["sql"], _state["params"])
            cursor.fetchone()
        finally:
            cursor.close()
    except Exception as exc:
        return _respond(start_response, "500 Internal Server Error",
                        f"geventprobe: {type(exc).__name__}\n")
    finally:
        pool.put(conn)
    return _respond(start_response, "200 OK", f"geventprobe ok {os.getpid()}\n")


def wrap(app):
    """``app`` with ``PATH`` answered by the probe; every other request passes through."""

    def application(environ, start_response):
        if environ.get("PATH_INFO") == PATH:
            return _answer(start_response)
        warm = environ.pop(_WARM_ENVIRON, None)  # ours: the app sees the request as sent
        seen = _state["seen"]
        if seen is not None:  # the route phase: which worker served how many, and when
            seen.append(time.monotonic())
            _track_request()  # issue 20 hook: where this request waits (worker/parked.py)
            if warm is not None:
                _mark_warm(warm)
        return app(environ, start_response)

    application.__wrapped__ = app
    return application


def _mark_warm(mark: str) -> None:
    """Tell the parent this worker serves the route it warms (once per route): a marker
    file, written as the request starts; the parent waits for the answers anyway."""
    run_dir, done = _state["run_dir"], _state["warmed"]
    if run_dir is None or mark in done or not mark.isdigit() or len(mark) > 6:
        return
    done.add(mark)
    path = os.path.join(run_dir, warm_marker(mark, os.getpid()))
    with contextlib.suppress(OSError), open(path, "w"):
        pass


def _track_request() -> None:
    """issue 20 hook: the parked-greenlet sampler looks at this request's greenlet."""
    import greenlet

    from geventprobe.worker import parked

    parked.track(greenlet.getcurrent())


def _close_pool() -> None:
    """Close the route's own connections: the request phase is over, and in the route
    phase the parent counts the app's connections to the server, not ours."""
    pool, _state["pool"] = _state["pool"], None
    while pool is not None and not pool.empty():
        conn = pool.get()
        with contextlib.suppress(Exception):
            conn.close()


def route_phase(run_dir: str, heartbeat, monitor, timeout_s: float, write) -> None:
    """``run --app --route``: stay out of the way while the parent drives the user's routes.

    The worker's hub keeps a heartbeat (``heartbeat``: a probe ``Heartbeat``) and gevent's
    monitor thread (``monitor``: a ``monitor.Monitor``) running, notes when each
    request of the app starts, and says ``route-ready-<pid>.json``. When the parent writes
    ``routes-stop`` (or ``timeout_s`` passed) it writes all of it to ``routes-<pid>.json``
    (``write(name, record)``: the probe's writer of ``record.py``'s records).
    """
    import gevent

    from geventprobe.worker import record

    pid = os.getpid()
    stop = os.path.join(run_dir, "routes-stop")
    deadline = time.monotonic() + timeout_s
    # The parent's load may still wait for answers queued behind a blocked hub: they take the
    # probe route's connections until it says the route phase begins (``ROUTES_GO``).
    go = os.path.join(run_dir, ROUTES_GO)
    while not os.path.exists(go) and not os.path.exists(stop) and time.monotonic() < deadline:
        gevent.sleep(0.01)
    _close_pool()
    from geventprobe.worker import parked

    heartbeat.count_waits()  # a late beat on a loaded machine may be the kernel's (issue 24)
    beat = gevent.spawn(heartbeat.run)
    monitor.stall_watch = True  # issue 20 hook: who blocked under a held GIL
    monitor.start()
    sampler = parked.Sampler().start()  # issue 20 hook: where the requests wait
    _state["seen"] = []
    _state["run_dir"] = run_dir  # where the warm-up's markers go
    # What ``on_abort`` writes if gunicorn kills this worker for WORKER TIMEOUT meanwhile.
    _state["phase"] = (heartbeat, monitor, write)
    try:
        write(f"route-ready-{pid}.json", record.RouteReady(pid=pid))
        while not os.path.exists(stop) and time.monotonic() < deadline:
            gevent.sleep(0.01)
    finally:
        _state["phase"] = None
        heartbeat.stop()
        events = monitor.stop()
        waits = sampler.stop()  # issue 20 hook
        beat.join(timeout=1)
        seen, _state["seen"] = _state["seen"], None
        write(f"routes-{pid}.json", record.RoutePhase(
            pid=pid, heartbeat_expected=heartbeat.expected, heartbeat_lag=heartbeat.lag,
            heartbeat_waited=list(heartbeat.waited or []),
            requests=seen, blocked=events,
            parked=waits, bindings=_bindings(),  # issue 20 hook: parked.py, bindings.py
            stall_watch_off=monitor.stall_watch_off))


def on_abort() -> None:
    """gunicorn is killing this worker (``worker_abort``: WORKER TIMEOUT, its hub blocked for
    longer than the timeout) in the route phase: write what it saw so far, above all the
    monitor's stacks, which name the line that held the hub. Called in the signal handler,
    in the greenlet that was running: nothing here may switch greenlets."""
    from geventprobe.worker import record

    phase, _state["phase"] = _state["phase"], None
    if phase is None:
        return
    heartbeat, monitor, write = phase
    n = len(heartbeat.lag)  # the heartbeat may be appending: cut both lists at one length
    write(f"routes-{os.getpid()}.json", record.RoutePhase(
        pid=os.getpid(), heartbeat_expected=list(heartbeat.expected[:n]),
        heartbeat_lag=list(heartbeat.lag[:n]), requests=list(_state["seen"] or []),
        heartbeat_waited=list((heartbeat.waited or [])[:n]),
        blocked=list(monitor.events), aborted=True))


def _bindings() -> list:
    """issue 20 hook: the app's names bound to an original before gevent patched."""
    from geventprobe.worker import bindings

    try:
        return bindings.scan()
    except Exception:  # a module whose globals cannot be read must not lose the record
        return []
