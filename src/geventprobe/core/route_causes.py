"""The cause and fix of a non-OK route (or celery task), in one call per verdict.

What ``app/route_rules.judge`` (and the celery tasks' rules) should call once the class
is decided; each returns None when its evidence says nothing, and the caller keeps its
current words then:

- ``failing(log_lines, deployment)`` → ``Failure``: the exception (type, message, the
  user's frame) the workers logged most, with the known error's cause and fix
  (``core/tracebacks.py``, ``core/known_errors.py``);
- ``serialized(workers, window, deployment)`` → ``waits.WaitFinding``: where the requests
  waited — a pool of N for C, one shared connection, a lock — from the parked-greenlet
  samples (``worker/parked.py``, ``core/waits.py``);
- ``blocking(stacks, workers, deployment)`` → ``early_bindings.BindingCause``: the hub
  stalled in a name the app bound before gevent patched (``worker/bindings.py``,
  ``core/early_bindings.py``). Who blocked under a held GIL needs no call: the worker's
  monitor events already carry the stall watch's stacks (an alarm re-armed by the hub)
  (``worker/stall_watch.py``), which ``core/blocked.stacks`` counts as before.

``workers`` is what the route rules get: pid → ``worker.record.RoutePhase``, whose
``parked`` and ``bindings`` fields these read (plain JSON dicts of the same shape work
too: the recorded runs of the tests).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from geventprobe.core import early_bindings, known_errors, tracebacks, waits
from geventprobe.core.known_errors import Deployment
from geventprobe.record import BlockedStack


@dataclass(frozen=True)
class Failure:
    """A FAILING route's exception, cause and fix."""

    error: tracebacks.LoggedError
    explained: known_errors.ErrorCause

    @property
    def first_error(self) -> str:
        """``type: message`` (what ``RouteResult.first_error`` should hold)."""
        return self.error.line


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
                          connections=deployment.connections, kind=deployment.kind)


def _bindings_of(report) -> list:
    value = (report.get("bindings") if isinstance(report, dict)
             else getattr(report, "bindings", None))
    return value or []


def blocking(stacks: Iterable[BlockedStack], workers: dict, deployment: Deployment
             ) -> early_bindings.BindingCause | None:
    """The cause when the most frequent stall was a call through a binding made before
    patching (``stacks``: the counted stacks of the burst, most frequent first)."""
    bindings = early_bindings.parse(b for report in workers.values()
                                    for b in _bindings_of(report))
    if not bindings:
        return None
    for stack in stacks:
        found = early_bindings.explain(stack, bindings, deployment.preload)
        if found is not None:
            return found
    return None
