"""Who was running on the hub's thread: the time each greenlet ran, from greenlet's switches.

A worker that burns CPU while it only waits (BUSY-WAIT) is either waiting in a loop that
never sleeps inside the driver (psycopg's wait function polling with a zero timeout) or
running some other greenlet that never sleeps: an app's background loop on
``gevent.sleep(0)``, which gives the hub a turn and comes straight back. The CPU figure
cannot tell them apart; which greenlet ran meanwhile, and where, can.

Two ways of looking failed on a spinning hub (measured on ``tests/apps/background_spin``):
a thread that looks now and then waits for the GIL, which the hub releases and retakes on
every turn of its loop (``epoll_wait`` with a zero timeout): the thread lost nearly every
race (0 to 57 looks in 0.5 s instead of 100). A signal's handler runs in the hub's
greenlet: gevent's loop checks for signals itself, so 40 of 40 looks landed in
``gevent/hub.py in run``. So the tracer counts instead of looking: ``greenlet.settrace``
calls it on every switch, in the greenlet switched to, so the time since the last switch
belongs to the greenlet switched from, and the frame it is called under is where the
greenlet switched to resumes.

Each greenlet is reduced to one **site**: the innermost frame of where it resumes that is
not gevent's, the standard library's or geventprobe's (the code that called into the hub),
and whether that stack passes through the driver (``psycopg``/``psycopg2``): a wait
function of the app's own, installed in psycopg, spins inside a query, so it is the
driver's wait loop however its file is named. The hub itself and geventprobe's greenlets
have no site; their time counts in the window only. A greenlet's site is looked up when it
is first switched to and every ``RELOOK`` switches after. Only sums per site are kept.

The tracer runs only while someone needs it (``worker/probe.py``: the idle window;
``worker/celery_probe.py``: while a probe task waits on the server), chained to any tracer
already set (gevent's monitor thread sets one). ``begin`` and ``end`` give what it saw in
between. Imports gevent and greenlet only inside functions (see ``worker/__init__.py``).
"""

from __future__ import annotations

import linecache
import os
import sys
import time
import traceback

from geventprobe.worker.monitor import frame_text, is_user_code
from geventprobe.worker.record import Running, RunningSite

RELOOK = 64
"""A greenlet's site is looked up again after this many switches to it (it may move)."""
_DRIVERS = tuple(f"{os.sep}{name}{os.sep}" for name in ("psycopg", "psycopg2", "psycopg_c",
                                                        "psycopg_binary"))
_NOT_LIBRARY = ("gevent/", "greenlet/", "geventprobe/")
_MAX_SITES = 200
_MAX_GREENLETS = 10000


def _kind(filename: str) -> str:
    """``driver``, ``code`` (the app's, or a library's) or ``skip`` (gevent, greenlet, the
    standard library, geventprobe)."""
    if any(d in filename for d in _DRIVERS):
        return "driver"
    if is_user_code(filename):
        return "code"
    for marker in ("site-packages/", "dist-packages/"):
        if marker in filename:
            library = filename.split(marker, 1)[1]
            return "skip" if library.startswith(_NOT_LIBRARY) else "code"
    return "skip"


class Tracer:
    """Sums, per site, how long the greenlets there ran and how often they were switched to,
    while at least one ``begin`` has no ``end`` yet."""

    def __init__(self):
        self._users = 0
        self._previous = None
        self._since = 0.0
        self._started = 0.0
        self._sites: dict = {}  # greenlet -> (site key, switches until its next look)
        self._sums: dict[tuple, list] = {}  # site key -> [seconds, switches]
        self._kinds: dict[object, str] = {}
        self._current_site: tuple | None = None

    def begin(self) -> tuple[float, dict]:
        """Start tracing (if not already); what ``end`` subtracts."""
        import greenlet

        if self._users == 0:
            self._previous = greenlet.settrace(self._trace)
            self._since = self._started = time.perf_counter()
            self._current_site = None  # the caller: geventprobe's own greenlet
        self._users += 1
        return self._snapshot()

    def end(self, before: tuple[float, dict]) -> Running:
        """What ran since ``before``; stop tracing when nobody else needs it."""
        import greenlet

        running = during(before, self._snapshot())
        self._users -= 1
        if self._users == 0:
            if greenlet.gettrace() == self._trace:
                greenlet.settrace(self._previous)
            self._previous = None
            self._sites.clear()
            self._sums.clear()
        return running

    def _snapshot(self) -> tuple[float, dict]:
        now = time.perf_counter()
        self._credit(now)
        return now - self._started, {k: tuple(v) for k, v in self._sums.items()}

    def _credit(self, now: float) -> None:
        site = self._current_site
        if site is not None:
            sums = self._sums.get(site)
            if sums is None and len(self._sums) < _MAX_SITES:
                sums = self._sums[site] = [0.0, 0]
            if sums is not None:
                sums[0] += now - self._since
        self._since = now

    def _trace(self, event, args) -> None:
        # Called by greenlet on every switch, in the greenlet switched to: the time since the
        # last switch was the greenlet switched from's; this frame's caller is where the
        # target resumes.
        if event in ("switch", "throw"):
            self._credit(time.perf_counter())
            target = args[1]
            known = self._sites.get(target)
            if known is None or known[1] <= 0:
                resumes = sys._getframe(0).f_back  # None: switched to for the first time
                site = self._site(resumes)
                if resumes is not None and (known is not None
                                            or len(self._sites) < _MAX_GREENLETS):
                    self._sites[target] = (site, RELOOK)
            else:
                site = known[0]
                self._sites[target] = (site, known[1] - 1)
            self._current_site = site
            if site is not None:
                sums = self._sums.get(site)
                if sums is None and len(self._sums) < _MAX_SITES:
                    sums = self._sums[site] = [0.0, 0]
                if sums is not None:
                    sums[1] += 1
        previous = self._previous
        if previous is not None:
            previous(event, args)

    def _site(self, frame) -> tuple | None:
        """(file, line, function, through the driver) of a stack, or None: gevent, the
        standard library and geventprobe all the way out."""
        site, driver = None, False
        while frame is not None:
            code = frame.f_code
            kind = self._kinds.get(code)
            if kind is None:
                kind = self._kinds[code] = _kind(code.co_filename)
            if kind == "driver":
                driver = True
            if site is None and kind != "skip":
                site = (code.co_filename, frame.f_lineno, code.co_name)
            frame = frame.f_back
        return (*site, driver) if site is not None else None


def during(before: tuple[float, dict], after: tuple[float, dict]) -> Running:
    """What ran between two snapshots, the site that ran longest first."""
    sites = []
    for key, (seconds, switches) in after[1].items():
        was = before[1].get(key, (0.0, 0))
        seconds, switches = seconds - was[0], switches - was[1]
        if switches > 0 or seconds > 0:
            filename, line, name, driver = key
            text = frame_text(traceback.FrameSummary(
                filename, line, name, line=linecache.getline(filename, line)))
            sites.append(RunningSite(frame=text, driver=driver, user=is_user_code(filename),
                                     seconds=round(seconds, 6), switches=switches))
    sites.sort(key=lambda s: -s.seconds)
    return Running(seconds=round(after[0] - before[0], 6), sites=sites)
