"""The cause and fix of a non-OK route (or celery task), one call per verdict.

``app/route_rules.judge`` calls these once the class is decided (a celery task's rules
can call the same: every word that depends on the kind of worker comes from
``Deployment``). Each returns an ``Explained``: the cause, the fix, what the cause rests
on (``kind``) and the evidence a report shows beside it:

- ``for_failing(log_lines, deployment)``: the exception the workers logged most (type,
  message, the user's frame), with a known error's deployment cause and fix
  (``core/tracebacks.py``, ``core/known_errors.py``);
- ``for_serialized(workers, window, deployment)``: where the requests waited — a pool of N
  for C, one shared connection, a lock — from the parked-greenlet samples
  (``worker/parked.py``, ``core/waits.py``); without samples, the server connections;
- ``for_blocking(stacks, workers, deployment, lag_ms)``: who blocked the hub, and why: a
  name the app bound before gevent patched (``worker/bindings.py``,
  ``core/early_bindings.py``), the driver waiting in C (the driver verdict's own cause), a
  call that kept the GIL (the stall watch's helper thread could not run while it stalled:
  ``worker/stall_watch.py``),
  or CPU work / a blocking call in the request.

A fix never names what this deployment does not do: "preload" only when the app was
preloaded, gunicorn's settings only for gunicorn. ``workers`` is pid →
``worker.record.RoutePhase`` (or the same as plain JSON: the recorded runs of the tests).
The lower-level calls (``failing``, ``serialized``, ``blocking``) return None when their
evidence says nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from geventprobe.core import blocked, early_bindings, known_errors, tracebacks, waits
from geventprobe.core.known_errors import Deployment
from geventprobe.record import BlockedStack, RouteWait

# Frames of a database driver or of what calls one: a stall there is the driver's wait.
_DRIVER_FRAME = re.compile(r"^(psycopg|psycopg2|psycopg_c|psycopg_pool|sqlalchemy|django/db)/")
# The user's line calls the driver directly (psycopg2's execute is C: no frame of its own).
_DRIVER_CALL = re.compile(r"\.(execute|executemany|fetch\w*|connect|commit)\(")
# A regular expression's call: the usual call that keeps the GIL for a long time.
_REGEX_CALL = re.compile(r"\.(match|fullmatch|search|findall|finditer|sub|subn|split)\(|"
                         r"\bre\.\w+\(")
_MAX_WAITS = 3


@dataclass(frozen=True)
class Explained:
    """A non-OK route's (task's) cause and fix, and the evidence they rest on."""

    kind: str | None
    """What the cause rests on (``RouteResult.cause_kind``); None: nothing specific."""
    cause: str
    fix: str
    error: str | None = None
    """FAILING: ``type: message`` of the exception the workers logged most."""
    error_at: str | None = None
    """FAILING: the user's frame that raised it, with its source line."""
    waited_at: tuple[RouteWait, ...] = ()
    """SERIALIZED: where the requests waited, busiest first."""


@dataclass(frozen=True)
class Failure:
    """A FAILING route's exception, cause and fix."""

    error: tracebacks.LoggedError
    explained: known_errors.ErrorCause

    @property
    def first_error(self) -> str:
        """``type: message`` (what ``RouteResult.first_error`` holds)."""
        return self.error.line


# ---------------------------------------------------------------- the evidence, one call each


def failing(log_lines: Iterable[str], deployment: Deployment) -> Failure | None:
    """The exception the workers logged most during the lone request and the burst, and
    its cause and fix in this deployment; None when they logged no traceback."""
    error = tracebacks.main_error(log_lines)
    if error is None:
        return None
    return Failure(error, known_errors.explain(error, deployment))


def serialized(workers: dict, window: tuple[float, float], deployment: Deployment
               ) -> waits.WaitFinding | None:
    """Where the requests of the burst (``window``: its due time and end) waited."""
    return waits.classify(waits.read(workers, window), concurrency=deployment.concurrency,
                          connections=deployment.connections,
                          setting=deployment.concurrency_setting, unit=deployment.unit)


def _bindings(workers: dict) -> list[early_bindings.Binding]:
    """Every worker's bindings made before patching, once each."""
    return early_bindings.parse(b for report in workers.values() for b in _bindings_of(report))


def _bindings_of(report) -> list:
    value = (report.get("bindings") if isinstance(report, dict)
             else getattr(report, "bindings", None))
    return value or []


def _early_local(workers: dict) -> early_bindings.Binding | None:
    """A ``threading.local`` of the app's made before patching: one object for every
    greenlet of the worker (measured under uWSGI's --gevent-monkey-patch: a connection kept
    in it served 16 requests one at a time, 3.23 s against 0.23 s once made after)."""
    found = [b for b in _bindings(workers)
             if b.original == "threading.local" and b.kind == "instance"]
    return found[0] if found else None


def blocking(stacks: Iterable[BlockedStack], workers: dict, deployment: Deployment
             ) -> early_bindings.BindingCause | None:
    """The cause when a stall of the burst was a call through a binding made before
    patching (``stacks``: the counted stacks, most frequent first)."""
    bindings = _bindings(workers)
    if not bindings:
        return None
    for stack in stacks:
        found = early_bindings.explain(stack, bindings, deployment.preload)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------- one explanation per verdict


def _under_preload(d: Deployment) -> str:
    return ("; under preload_app, anything the app made at import (connections, clients, "
            "locks) was made in the master and is shared by every worker: make it in each "
            "worker, or close it in post_fork" if d.preload else "")


def for_failing(log_lines: Sequence[str], d: Deployment, logged: str | None = None
                ) -> Explained:
    """Why the route (task) failed: the exception the workers logged most, its frame, and
    a known error's cause and fix. ``logged``: the first error line found otherwise (no
    traceback: a line gunicorn marked ``[ERROR]``), used when no traceback was logged."""
    found = failing(log_lines, d)
    if found is not None:
        frame = found.error.user_frame
        return Explained(kind=found.explained.key or "error", cause=found.explained.cause,
                         fix=found.explained.fix, error=found.first_error,
                         error_at=frame.text(d.root) if frame else None)
    if logged:
        return Explained(kind=None, cause=logged, error=logged,
                         fix="fix the error the workers logged" + _under_preload(d))
    return Explained(kind=None, cause="the workers logged no error",
                     fix=(f"look at what the {d.unit} answers alone and how long it takes "
                          "(a timeout or a reset leaves nothing in the log)"))


def _wait(site: waits.WaitSite) -> RouteWait:
    return RouteWait(kind=site.kind, where=site.user_frame, wait=site.wait, most=site.most,
                     working=site.working)


def for_serialized(workers: dict, window: tuple[float, float], d: Deployment) -> Explained:
    """Why the requests (tasks) waited on each other while the hub ran on time."""
    seen = waits.read(workers, window)
    found = waits.classify(seen, concurrency=d.concurrency, connections=d.connections,
                           setting=d.concurrency_setting, unit=d.unit)
    if found is not None:
        sites = tuple(_wait(s) for s in seen.sites if s.seen >= 2)[:_MAX_WAITS]
        cause, fix = found.cause, found.fix
        local = _early_local(workers) if found.kind == "shared-connection" else None
        if local is not None:
            cause += (f"; the app keeps it in a threading.local made before gevent patched "
                      f"threading ({local.where}: `{local.statement or local.name}`), so every "
                      f"greenlet of the worker sees the same one")
            fix = f"make the threading.local after the worker patched: {d.unpreload}; or {fix}"
        return Explained(kind=found.kind, cause=cause, fix=fix, waited_at=sites)
    n, conns, unit = d.concurrency, d.connections, d.unit
    if seen.samples:
        # Looked at, and none of them sat on a lock, a pool or a connection of the worker's.
        return Explained(
            kind="outside",
            cause=(f"no {unit} waited on a lock, pool or connection in the worker "
                   f"({seen.samples} looks at its {unit}s, up to {seen.working_most} working "
                   f"at once on I/O or a timer): what they queue on is outside the worker (the "
                   "database server, an upstream service, the network)"),
            fix=(f"look at what each {unit} waits for outside the worker: a lock or a limit "
                 "on the database server or an upstream service, or a response too large for "
                 "the network"))
    if not n:
        return Explained(kind=None,
                         cause=f"the {unit}s waited on each other while the hub ran on time",
                         fix=f"look for what the {unit}s share: a connection, a pool, a lock")
    if conns is None:
        return Explained(
            kind=None,
            cause=(f"{n} concurrent {unit}s in one worker waited on each other while the hub "
                   "ran on time (server connections not counted: the workers reach it "
                   "through a unix socket)"),
            fix=f"look for what the {unit}s share: a connection, a pool, a lock")
    if conns == 0:
        return Explained(
            kind=None,
            cause=(f"{n} concurrent {unit}s in one worker waited on each other while the hub "
                   "ran on time, with no server connection open: not the database"),
            fix=(f"look for what the {unit}s share besides the database: a lock, a client "
                 "of an upstream service, a semaphore"))
    if conns == 1 < n:
        return Explained(
            kind="shared-connection",
            cause=(f"1 server connection for {n} concurrent {unit}s: a connection shared "
                   "between greenlets"),
            fix=(f"give each {unit} (greenlet) its own connection: a pool sized to "
                 f"{d.concurrency_setting}, or a connection per {unit}"))
    if conns < n:
        return Explained(
            kind="pool",
            cause=(f"{conns} server connections for {n} concurrent {unit}s: the pool is "
                   "smaller than the concurrency"),
            fix=(f"size the pool to the {unit}s a worker serves at once, or lower "
                 f"{d.concurrency_setting} to the pool's size"))
    return Explained(
        kind=None,
        cause=(f"{conns} server connections for {n} concurrent {unit}s, yet they waited on "
               "each other: a lock or a limit in the app, not the database connections"),
        fix="look for a lock, semaphore or single shared client around the work")


def _through_driver(stack: BlockedStack) -> bool:
    """The stalled stack is a database call: a driver's frame, or the user's line calling
    one directly (psycopg2's C ``execute`` has no frame of its own)."""
    if any(_DRIVER_FRAME.match(f) for f in stack.frames):
        return True
    inner = stack.innermost or ""
    return inner == stack.user_frame and bool(_DRIVER_CALL.search(inner))


def _source(frame: str | None) -> str:
    match = re.match(r"^.*? in [^:]+:\s(.*)$", frame or "")
    return match.group(1) if match else ""


def for_blocking(stacks: Sequence[BlockedStack], workers: dict, d: Deployment, lag_ms: float
                 ) -> Explained:
    """Why the hub stalled during the burst: who blocked it, and the fix that fits."""
    head = f"the hub stalled {lag_ms:.0f} ms during the burst"
    if not stacks:
        off = sorted({w.stall_watch_off for w in workers.values()
                      if getattr(w, "stall_watch_off", None)})
        seen = (f"gevent's monitor thread did not catch where, and the stall watch was off "
                f"({'; '.join(off)})" if off else
                "neither gevent's monitor thread nor the stall watch caught where")
        return Explained(
            kind=None,
            cause=f"{head}; {seen}",
            fix=(f"find the call in the {d.unit} that waits or computes without yielding "
                 "to gevent, and move it out of the worker (a task queue, a process pool)"))
    top = stacks[0]
    words = blocked.in_words(top)
    bound = blocking(stacks, workers, d)
    if bound is not None:
        return Explained(kind="early-binding", cause=f"{head}: {bound.cause}", fix=bound.fix)
    where = (top.user_frame or top.innermost or "?").split(": ", 1)[0]
    if d.driver_blocking is not None and _through_driver(top):
        cause, fix = d.driver_blocking
        return Explained(kind="driver", cause=f"{head} in a database call: {words}; {cause}",
                         fix=fix)
    if top.gil_held:
        cheaper = (" or make the call cheaper (a regular expression without nested "
                   "repetition, or a bound on the input's length)"
                   if _REGEX_CALL.search(_source(top.user_frame or top.innermost)) else
                   " or make the call cheaper")
        return Explained(
            kind="gil-held",
            cause=(f"{head}: {words}; the call kept the GIL (the stall watch's helper thread "
                   "could not run meanwhile, nor could gevent's monitor thread)"),
            fix=(f"move the call at {where} out of the worker process (a task queue, a process "
                 "pool): a thread does not help while it holds the GIL;" + cheaper))
    return Explained(
        kind="blocking-call",
        cause=f"{head}: {words}",
        fix=(f"move the CPU work or blocking call at {where} out of the {d.unit} (a task "
             "queue), or run it in gevent's threadpool (gevent.get_hub().threadpool) or a "
             "process pool"))
