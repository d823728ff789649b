"""Who blocked: gevent's monitor thread, switched on in a worker for the measured phases.

gevent can run a monitoring thread beside the hub (``GEVENT_MONITOR_THREAD_ENABLE``):
every ``max_blocking_time`` seconds it checks whether the hub switched greenlets since
its last look, and when it did not, it publishes ``gevent.events.EventLoopBlocked``
through ``zope.event``. We subscribe to that event, take the stack of the hub's thread
at that moment (the code that keeps the hub from running), and keep it with the time
it was seen. The parent lines those times up with its own phases (wait windows, route
bursts) and counts identical stacks together.

The thread is started only around the measured phases and stopped after them: its
greenlet tracer costs a little on every switch, and the SELECT 1 figures must not
carry it. gevent's own printed report is turned off: we record the stack instead.

Imports gevent only inside functions (see ``worker/__init__.py``).
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import time
import traceback

from geventprobe.worker.record import BlockedEvent

# How often the monitor thread looks, in seconds: well below the blocking limits (75 ms
# for the waits, ``route_hub_lag_ms`` for routes), so a block past them is always seen.
DEFAULT_MAX_BLOCKING_S = 0.05
# Frames kept per stack, innermost last: enough to reach the user's code in a web app.
_MAX_FRAMES = 40

# geventprobe's own package (this file is geventprobe/worker/monitor.py), whether installed,
# from a checkout, or the copy a version matrix's shim puts on PYTHONPATH.
_OURS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NOT_USER = tuple(p for p in {sysconfig.get_paths().get("stdlib"),
                              sysconfig.get_paths().get("platstdlib")} if p)


def _package_dir() -> str:
    import geventprobe

    return os.path.dirname(os.path.abspath(geventprobe.__file__))


def short(path: str) -> str:
    """A path the user recognises: from site-packages on, python3.X/... for the standard
    library, relative to the working directory (their project) otherwise."""
    if not path or path.startswith("<"):
        return path
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            return path.split(marker, 1)[1]
    if "/lib/python3" in path:
        return "python3" + path.split("/lib/python3", 1)[1]
    real = os.path.abspath(path)
    if real.startswith(_OURS + os.sep):
        return "geventprobe/" + os.path.relpath(real, _OURS)
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def is_user_code(path: str) -> bool:
    """True for the user's own files: not the standard library, site-packages, gevent or
    geventprobe (whether installed or from a checkout)."""
    if not path or path.startswith("<"):
        return False
    if "site-packages/" in path or "dist-packages/" in path:
        return False
    real = os.path.abspath(path)
    if re.search(r"/lib/python3\.\d+/", real):  # a standard library, ours or another's
        return False
    if real.startswith((_OURS + os.sep, _package_dir() + os.sep)) or "/gevent/" in real:
        return False
    return not real.startswith(_NOT_USER)


def frame_text(fr: traceback.FrameSummary) -> str:
    """``file:line in function: source``, the way a reader looks it up."""
    code = (fr.line or "").strip()
    return f"{short(fr.filename)}:{fr.lineno} in {fr.name}" + (f": {code}" if code else "")


class Monitor:
    """gevent's monitor thread for one phase; ``events`` are what it saw, with times."""

    def __init__(self, max_blocking_s: float = DEFAULT_MAX_BLOCKING_S):
        self.max_blocking_s = max_blocking_s
        self.events: list[BlockedEvent] = []
        self._thread = None
        self._hub = None
        self._stalls = None  # issue 20 hook: worker/stall_watch.py (a GIL-holding call)
        self.stall_watch = False
        """issue 20 hook: also run the stall watch (the route phase turns it on)."""
        self.stall_watch_off: str | None = None
        """Why the stall watch did not watch the whole phase (set by ``stop``)."""

    def start(self) -> Monitor:
        """Switch the monitor thread on for the current hub (a no-op if gevent refuses)."""
        import gevent
        from gevent import config
        from zope.event import subscribers

        config.monitor_thread = True
        config.max_blocking_time = self.max_blocking_s
        config.print_blocking_reports = False  # we keep the stack ourselves
        self._hub = gevent.get_hub()
        if self._on_event not in subscribers:
            subscribers.append(self._on_event)
        self._thread = self._hub.start_periodic_monitoring_thread()
        entries = getattr(self._thread, "_monitoring_functions", None) or []
        if entries and entries[0].function == self._thread.monitor_blocking:
            # gevent formats every thread's stack into a text report each time it finds the
            # hub blocked (measured: ~0.1 CPU-s/s in a blocked worker, enough to show in the
            # BUSY-WAIT figure). The same check and the same event, without that report: we
            # take the one stack we need ourselves.
            entries[0].function = self._check
        self._start_stall_watch()  # issue 20 hook
        return self

    def _start_stall_watch(self) -> None:
        """issue 20 hook: the stall watch sees what this thread cannot (a C call that holds
        the GIL). Only where ``stall_watch`` was set (the route phase): in the driver
        probe's connect phase it also caught psycopg2's back-to-back connects, which the
        monitor never reported, and moved the build's "who blocked" off its waits.
        ``GEVENTPROBE_STALL_WATCH=0`` turns it off, ``=all`` on in every phase (to measure
        its cost where the probe measures CPU: benchmarks/stall_watch.py)."""
        setting = os.environ.get("GEVENTPROBE_STALL_WATCH", "1")
        if setting == "0" or not (self.stall_watch or setting == "all"):
            return
        from geventprobe.worker.stall_watch import StallWatch

        self._stalls = StallWatch(self.max_blocking_s).start()

    def stop(self) -> list[BlockedEvent]:
        """Switch it off again (the tracer too); return the events."""
        from gevent import config
        from zope.event import subscribers

        if self._thread is not None:
            self._thread.kill()
            if self._hub is not None and self._hub.periodic_monitoring_thread is self._thread:
                self._hub.periodic_monitoring_thread = None  # so a later phase can start one
            self._thread = None
        config.monitor_thread = False
        if self._on_event in subscribers:
            subscribers.remove(self._on_event)
        if self._stalls is not None:  # issue 20 hook: stalls the monitor could not see
            from geventprobe.worker.stall_watch import merge

            self.events = merge(self.events, self._stalls.stop())
            self.stall_watch_off = self._stalls.off
            self._stalls = None
        return self.events

    def _check(self, hub) -> None:
        """gevent's ``monitor_blocking``, less its text report (see ``start``)."""
        from gevent.events import EventLoopBlocked, notify

        thread = self._thread
        blocked = thread._greenlet_tracer.did_block_hub(hub) if thread is not None else None
        if blocked:
            notify(EventLoopBlocked(blocked[1], self.max_blocking_s, [], hub=hub))

    def _on_event(self, event) -> None:
        # Runs in the monitor thread while the hub's thread is still where it blocked.
        from gevent.events import EventLoopBlocked

        if not isinstance(event, EventLoopBlocked):
            return
        hub = getattr(event, "hub", None) or self._hub
        frame = sys._current_frames().get(getattr(hub, "thread_ident", None))
        if frame is None:
            return
        stack = traceback.extract_stack(frame)[-_MAX_FRAMES:]
        user = next((i for i in range(len(stack) - 1, -1, -1)
                     if is_user_code(stack[i].filename)), None)
        self.events.append(BlockedEvent(t=time.monotonic(), s=float(event.blocking_time),
                                        frames=[frame_text(fr) for fr in stack], user=user))
