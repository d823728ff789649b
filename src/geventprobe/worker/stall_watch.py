"""Who blocked, when the blocking call holds the GIL: faulthandler's watchdog, armed by the hub.

gevent's monitor thread (``worker/monitor.py``) is a Python thread: to look at the hub it
needs the GIL. A C call that releases the GIL (``hashlib.pbkdf2_hmac``, a ``time.sleep``
bound before patching, libpq waiting in C) lets it look; one that keeps the GIL for its
whole duration (a backtracking regular expression in ``re``, a long ``sorted``, a C
extension that never releases it) does not: the monitor wakes only after the call
returned, finds the hub running again, and "who blocked" stays empty.

``faulthandler``'s watchdog is a C thread that dumps every thread's Python stack without
taking the GIL. A greenlet on the hub re-arms it every ``period`` seconds
(``faulthandler.dump_traceback_later(threshold, repeat=True)``): while the hub runs, the
watchdog never fires; once the hub has not re-armed it for ``threshold`` seconds, it
writes the stacks to a file, and again every ``threshold`` seconds while the stall lasts.
When the hub runs again, the greenlet reads what was written and keeps the hub thread's
stack as an event of the same shape as the monitor's (``t``, ``s``, ``frames``, ``user``),
so ``core/blocked.py`` counts both alike. The event's ``t`` is when the hub ran again;
``lag`` is how late the re-arming greenlet was.

Cost (docs/causes.md): each re-arm starts a fresh watchdog thread, ~55 µs of CPU on a
2-core VM: every 20 ms that is ~0.003 CPU-s per second. ``faulthandler``'s watchdog is one
per process: while this runs, an app's own ``dump_traceback_later`` is replaced (rare in a
web app; we cancel ours when we stop).

Imports gevent only inside functions (see ``worker/__init__.py``).
"""

from __future__ import annotations

import faulthandler
import linecache
import os
import re
import tempfile
import threading
import time

from geventprobe.worker.monitor import is_user_code, short

DEFAULT_PERIOD_S = 0.02
"""How often the hub re-arms the watchdog."""
_MAX_EVENTS = 2000
_THREAD = re.compile(r"^(?:Current thread|Thread) (0x[0-9a-fA-F]+) \(most recent call first\):$")
_FRAME = re.compile(r'^\s+File "(?P<path>[^"]+)", line (?P<line>\d+) in (?P<func>.+)$')


def _frame_text(path: str, line: int, func: str) -> str:
    """``app.py:23 in validate: return PATTERN.match(value) is not None``."""
    code = linecache.getline(path, line).strip() if not path.startswith("<") else ""
    return f"{short(path)}:{line} in {func}" + (f": {code}" if code else "")


def parse_dump(text: str, thread_ident: int) -> list[list[tuple[str, int, str]]]:
    """The stacks of thread ``thread_ident`` in faulthandler's output, one per dump, each
    as (path, line, function) innermost LAST (as ``traceback`` orders them)."""
    stacks: list[list[tuple[str, int, str]]] = []
    current: list[tuple[str, int, str]] | None = None
    for line in text.splitlines():
        thread = _THREAD.match(line)
        if thread:
            current = [] if int(thread[1], 16) == thread_ident else None
            if current is not None:
                stacks.append(current)
            continue
        frame = _FRAME.match(line) if current is not None else None
        if frame:
            current.append((frame["path"], int(frame["line"]), frame["func"].strip()))
        elif not line.startswith(" "):
            current = None  # "Timeout (…)!" or the end of this thread's frames
    return [list(reversed(s)) for s in stacks if s]


def event(stack: list[tuple[str, int, str]], t: float, seconds: float, lag: float) -> dict:
    """One dump as an event of the monitor's shape (``core/blocked.py`` reads both)."""
    user = next((i for i in range(len(stack) - 1, -1, -1) if is_user_code(stack[i][0])), None)
    return {"t": t, "s": seconds, "lag": round(lag, 6),
            "frames": [_frame_text(*fr) for fr in stack], "user": user,
            "source": "faulthandler"}


class StallWatch:
    """faulthandler's watchdog, re-armed by a greenlet of the hub; ``events`` are the hub
    thread's stacks while the hub was late by ``threshold`` seconds or more."""

    def __init__(self, threshold_s: float, period_s: float = DEFAULT_PERIOD_S,
                 directory: str | None = None):
        self.threshold_s = threshold_s
        self.period_s = period_s
        self.directory = directory
        self.events: list[dict] = []
        self.cost_s = 0.0
        """Seconds the re-arming took in the hub (its own cost)."""
        self._running = False
        self._greenlet = None
        self._file = None
        self._read = 0
        self._armed_at = 0.0
        self._thread_ident = threading.get_ident()

    def start(self) -> StallWatch:
        """Arm the watchdog and start re-arming it from a greenlet of this hub."""
        import gevent

        self._thread_ident = gevent.get_hub().thread_ident or threading.get_ident()
        # Open for the watch's whole life (the watchdog writes to its descriptor); closed
        # in stop().
        self._file = tempfile.TemporaryFile(dir=self.directory,  # noqa: SIM115
                                            prefix="gp-stalls-")
        self._running = True
        self._greenlet = gevent.spawn(self._run)
        return self

    def _arm(self) -> None:
        faulthandler.dump_traceback_later(self.threshold_s, repeat=True, file=self._file,
                                          exit=False)

    def _collect(self, now: float, lag: float) -> None:
        """Read what the watchdog wrote since the last look: one event per dump, timed
        when it fired (``threshold`` after the last re-arm, then every ``threshold``)."""
        size = os.fstat(self._file.fileno()).st_size
        if size <= self._read:
            return
        os.lseek(self._file.fileno(), self._read, os.SEEK_SET)
        text = os.read(self._file.fileno(), size - self._read).decode(errors="replace")
        self._read = size
        for k, stack in enumerate(parse_dump(text, self._thread_ident)):
            if len(self.events) >= _MAX_EVENTS:
                break
            t = min(now, self._armed_at + self.threshold_s * (k + 1))
            self.events.append(event(stack, t, self.threshold_s, lag))

    def _run(self) -> None:
        import gevent

        last = time.monotonic()
        while self._running:
            t = self._armed_at = time.monotonic()
            self._arm()
            self.cost_s += time.monotonic() - t
            gevent.sleep(self.period_s)
            now = time.monotonic()
            self._collect(now, now - last - self.period_s)
            last = now

    def stop(self) -> list[dict]:
        """Disarm, collect the last dumps, close the file; return the events."""
        self._running = False
        faulthandler.cancel_dump_traceback_later()
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=1)
            self._greenlet = None
        if self._file is not None:
            self._collect(time.monotonic(), 0.0)
            self._file.close()
            self._file = None
        return self.events


def unseen(stalls: list[dict], seen: list[dict]) -> list[dict]:
    """The watchdog's events the monitor thread did not see: a stack the monitor also
    took within two periods (the GIL was released, it could look) is counted once."""
    out = []
    for e in stalls:
        span = 2 * float(e.get("s") or DEFAULT_PERIOD_S)
        if not any(m.get("frames") == e["frames"] and abs(m.get("t", 0.0) - e["t"]) <= span
                   for m in seen):
            out.append(e)
    return out
