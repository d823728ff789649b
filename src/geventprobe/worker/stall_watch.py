"""Who blocked, when the blocking call holds the GIL: a wall-clock alarm, re-armed by the hub.

gevent's monitor thread (``worker/monitor.py``) is a Python thread: to look at the hub it
needs the GIL. A C call that releases the GIL (``hashlib.pbkdf2_hmac``, a ``time.sleep``
bound before patching, libpq waiting in C) lets it look; one that keeps the GIL for its
whole duration (a backtracking regular expression in ``re``, a long ``sorted``, a C
extension that never releases it) does not: the monitor wakes after the call returned,
finds the hub running again, and "who blocked" stays empty.

A greenlet on the hub re-arms a wall-clock timer every ``period`` seconds. While the hub
runs, the timer never expires. Once the hub has not re-armed it for ``threshold`` seconds,
the kernel sends a signal (no GIL needed), and again every ``threshold`` while the stall
lasts. Python runs our handler in the main thread at its next chance: right after the C
call returns, in the frame that made it (``app.py:24 in validate``), or at once when the
stall is Python code. The handler keeps that stack, as an event of the monitor's shape
(``t``, ``s``, ``frames``, ``user``), so ``core/blocked.py`` counts both alike; ``s`` is
how long the hub had not re-armed the timer (or since the previous alarm of the same
stall).

**The timer and the signal are ours alone** (``worker/signal_timer.py``). The first
version re-armed the process's one ``ITIMER_REAL`` and handled ``SIGALRM``, which apps use
for request timeouts (the timeout-decorator pattern: ``signal.signal(SIGALRM, h);
setitimer(ITIMER_REAL, 2.0)`` per request): the watch's 50 ms re-arm replaced the app's
2 s timer, the app's handler fired during the stall, and the probe reported the 500s it
had caused. Now it is a POSIX timer on ``CLOCK_MONOTONIC`` that sends a free real-time
signal to a helper thread of ours (so it interrupts no system call of the app's); the
app's ``SIGALRM``, ``ITIMER_REAL`` and signal mask are never touched. Every re-arm checks
that the signal's handler is still ours; if the app took that signal meanwhile, the watch
deletes its timer, leaves the app's handler in place, and says why in ``off`` (the route
phase's record carries it). Why not ``ITIMER_PROF``, which apps rarely own either: it
counts CPU, so it never fires for a stall that holds the GIL without burning CPU, nor for
a chain of short stalls in C that release it (psycopg's ``wait_c`` running back-to-back
50 ms queries), which this watch names.

The same helper wakes every ``TICK_S`` and needs the GIL to go on: when it was starved of
it from half the threshold before an alarm until the handler ran, the stalled call kept
the GIL (``BlockedEvent.gil_held``). That, not "the monitor thread saw nothing", is the
evidence: the monitor also misses a chain of stalls just under its period, which release
the GIL.

Why not faulthandler's watchdog, a C thread that dumps stacks without the GIL? It was
tried first: it named the line, but reading the frames without the GIL while greenlets
switch (greenlet moves C stacks around) killed a gunicorn worker with SIGSEGV under the
regex burst (docs/causes.md). The alarm's handler runs with the GIL, like any handler.

Linux only (``timer_create``); elsewhere the watch stays off and ``off`` says why. Imports
gevent only inside functions (see ``worker/__init__.py``).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import replace

from geventprobe.worker.monitor import frame_text, is_user_code
from geventprobe.worker.record import BlockedEvent
from geventprobe.worker.signal_timer import TICK_S, SignalTimer, signal_name

DEFAULT_PERIOD_S = 0.02
"""How often the hub re-arms the timer."""
_MAX_STARVED = 2000
_MAX_EVENTS = 2000
_MAX_FRAMES = 40


def event(stack: list[traceback.FrameSummary], t: float, seconds: float) -> BlockedEvent:
    """One alarm as the monitor's event (``core/blocked.py`` counts both alike)."""
    user = next((i for i in range(len(stack) - 1, -1, -1) if is_user_code(stack[i].filename)),
                None)
    return BlockedEvent(t=t, s=round(seconds, 6), frames=[frame_text(fr) for fr in stack],
                        user=user, source="alarm")


class StallWatch:
    """The alarm, re-armed by a greenlet of the hub; ``events`` are the stacks the handler
    found while the hub was ``threshold`` seconds late or more."""

    def __init__(self, threshold_s: float, period_s: float = DEFAULT_PERIOD_S):
        self.threshold_s = threshold_s
        self.period_s = period_s
        self.events: list[BlockedEvent] = []
        self.off: str | None = None
        """Why the watch did not run, or stepped aside while it ran (the app took its
        signal); None while it watched the whole time."""
        self.rearms = 0
        self._running = False
        self._greenlet = None
        self._timer: SignalTimer | None = None
        self._armed_at = 0.0
        self._last = 0.0
        self._starved: list[tuple[float, float]] = []
        """(due, got the GIL) of each late wake-up of the helper thread."""
        self._due = 0.0

    @property
    def signo(self) -> int | None:
        """The real-time signal the timer sends (None: the watch did not start)."""
        return self._timer.signo if self._timer is not None else None

    def start(self) -> StallWatch:
        """Take a signal and a timer of our own, and start re-arming the timer from a
        greenlet of this hub."""
        import gevent

        timer = SignalTimer(self._on_alarm, on_tick=self._tick)
        self._due = time.monotonic() + TICK_S
        if timer.start().off is not None:
            self.off = f"the stall watch did not start: {timer.off}"
            return self
        self._timer = timer
        self._running = True
        self._greenlet = gevent.spawn(self._run)
        return self

    def _tick(self) -> None:
        """In the helper thread, every ``TICK_S``: it needs the GIL to get here. When it got
        it ``threshold / 4`` late or more, the GIL was held meanwhile."""
        got = time.monotonic()  # Python again: only once the GIL was free to take
        due, self._due = self._due, got + TICK_S
        if got - due >= self.threshold_s / 4 and len(self._starved) < _MAX_STARVED:
            self._starved.append((due, got))

    def _run(self) -> None:
        import gevent

        timer = self._timer
        while self._running:
            if not timer.owned():
                self._step_aside()
                return
            self._armed_at = time.monotonic()
            timer.arm(self.threshold_s, self.threshold_s)
            self.rearms += 1
            gevent.sleep(self.period_s)

    def _step_aside(self) -> None:
        """The app installed its own handler for our signal: the signal is the app's now.
        Delete our timer and leave the handler alone; the events so far stay."""
        self._running = False
        self._timer.delete()
        self.off = (f"the app took {signal_name(self._timer.signo)} while the stall watch "
                    "ran: it stepped aside and left the signal to the app")

    def _on_alarm(self, signum, frame) -> None:
        # Runs in the main thread with the GIL, at the first bytecode after the stall (or
        # during it, when the stall is Python code): ``frame`` is where the hub was held.
        now = time.monotonic()
        since = max(self._armed_at, self._last)
        self._last = now
        if frame is None or len(self.events) >= _MAX_EVENTS:
            return
        stack = traceback.extract_stack(frame)[-_MAX_FRAMES:]
        self.events.append(event(stack, now, now - since))

    def stop(self) -> list[BlockedEvent]:
        """Delete the timer, stop the helper, give the signal back, and return the events."""
        self._running = False
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=1)
            self._greenlet = None
        if self._timer is not None:
            self._timer.stop()
        return [replace(e, gil_held=self._held(e.t)) for e in self.events]

    def _held(self, t: float) -> bool:
        """Was the GIL held up to the alarm at ``t``? The helper thread, due at least half
        the threshold before it, got the GIL only just before the handler ran (the
        handler's first bytecode hands the GIL over to a waiting thread) or later. A C call
        that releases the GIL, or a chain of short stalls, leaves the helper on time.

        Later: the helper may get the GIL only at the next alarm, 35-62 ms after this one
        (measured: ``examples/regex_route``'s three 0.2 s matches, 20 runs, 12 of them under
        a CPU hog per core: 1 or 2 alarms of 4-14 a run, in 8 runs); its one late wake-up
        spans both, and both were held."""
        half, quarter = self.threshold_s / 2, self.threshold_s / 4
        return any(due <= t - half and got >= t - quarter for due, got in self._starved)


def _ours(e: BlockedEvent) -> bool:
    """A monitor event that caught our own handler running (it hands the GIL over)."""
    return any("geventprobe/worker/stall_watch.py" in f for f in e.frames)


def merge(seen: list[BlockedEvent], stalls: list[BlockedEvent]) -> list[BlockedEvent]:
    """The monitor thread's events and the alarm's, each stall counted once.

    A monitor event whose stack runs through our alarm handler is dropped: the handler,
    running Python, let the monitor thread take the GIL and look, and what it saw is
    the alarm's own work. An alarm event is dropped when the monitor took a stack within
    a period of it (the GIL was released: the monitor saw that stall).
    """
    kept = [m for m in seen if not _ours(m)]
    times = [m.t for m in kept]
    # The monitor looks once a period (the alarm's threshold): a stall it can see has a
    # monitor event within a period of each alarm, on either side.
    return kept + [e for e in stalls
                   if not any(e.t - 2 * e.s <= t <= e.t + e.s for t in times)]
