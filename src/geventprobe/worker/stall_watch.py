"""Who blocked, when the blocking call holds the GIL: a wall-clock alarm, re-armed by the hub.

gevent's monitor thread (``worker/monitor.py``) is a Python thread: to look at the hub it
needs the GIL. A C call that releases the GIL (``hashlib.pbkdf2_hmac``, a ``time.sleep``
bound before patching, libpq waiting in C) lets it look; one that keeps the GIL for its
whole duration (a backtracking regular expression in ``re``, a long ``sorted``, a C
extension that never releases it) does not: the monitor wakes after the call returned,
finds the hub running again, and "who blocked" stays empty.

A greenlet on the hub re-arms a wall-clock timer every ``period`` seconds
(``signal.setitimer(ITIMER_REAL, threshold, threshold)``). While the hub runs, the timer
never expires. Once the hub has not re-armed it for ``threshold`` seconds, the kernel
sends ``SIGALRM`` (no GIL needed), and again every ``threshold`` while the stall lasts.
Python runs our handler in the main thread at its next chance: right after the C call
returns, in the frame that made it (``app.py:24 in validate``), or at once when the
stall is Python code. The handler keeps that stack, as an event of the monitor's shape
(``t``, ``s``, ``frames``, ``user``), so ``core/blocked.py`` counts both alike; ``s`` is
how long the hub had not re-armed the timer (or since the previous alarm of the same
stall).

Why not faulthandler's watchdog, a C thread that dumps stacks without the GIL? It was
tried first: it named the line, but reading the frames without the GIL while greenlets
switch (greenlet moves C stacks around) killed a gunicorn worker with SIGSEGV under the
regex burst (docs/causes.md). The alarm's handler runs with the GIL, like any handler.

The timer is the process's only ``ITIMER_REAL``/``SIGALRM``: when the app has its own
SIGALRM handler, the watch stays off (``off`` says why) and the app's is left alone; ours
is removed when the watch stops. The signal is blocked in the main thread and delivered
to a sleeping helper thread (``_divert``): it interrupts no system call of the app's
(psycopg 3.1.12's ``wait_c`` failed with ``InterruptedError`` when it did), and Python
still runs the handler in the main thread. The same helper wakes every ``TICK_S`` and needs
the GIL to go on: when it was starved of it from half the threshold before an alarm until
the handler ran, the stalled call kept the GIL (``BlockedEvent.gil_held``). That, not "the
monitor thread saw nothing", is the evidence: the monitor also misses a chain of stalls
just under its period (psycopg's ``wait_c`` running back-to-back 50 ms queries, each ended
by a switch of the hub), which release the GIL.

Imports gevent only inside functions (see ``worker/__init__.py``).
"""

from __future__ import annotations

import signal
import time
import traceback
from dataclasses import replace

from geventprobe.worker.monitor import frame_text, is_user_code
from geventprobe.worker.record import BlockedEvent

DEFAULT_PERIOD_S = 0.02
"""How often the hub re-arms the timer."""
TICK_S = 0.01
"""How often the helper thread wakes. It needs the GIL to go on after each sleep: when it
got it ``threshold / 4`` late or more, the GIL was held meanwhile (``_starved``)."""
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
        """Why the watch did not start (another thread, the app's own SIGALRM handler)."""
        self.rearms = 0
        self._running = False
        self._greenlet = None
        self._previous = None
        self._armed_at = 0.0
        self._last = 0.0
        self._mask: set | None = None
        self._helper_running = False
        self._starved: list[tuple[float, float]] = []
        """(due, got the GIL) of each late wake-up of the helper thread."""

    def start(self) -> StallWatch:
        """Install the handler and start re-arming the timer from a greenlet of this hub."""
        import gevent

        previous = signal.getsignal(signal.SIGALRM)
        if previous not in (signal.SIG_DFL, signal.SIG_IGN, None):
            self.off = "the app handles SIGALRM itself"
            return self
        try:
            # Any greenlet of the main thread may install it (``threading.current_thread``
            # is the greenlet's under gevent: not a test of the real thread).
            signal.signal(signal.SIGALRM, self._on_alarm)
        except ValueError:
            self.off = "signals are handled in the main thread only"
            return self
        self._previous = previous
        self._divert()
        self._running = True
        self._greenlet = gevent.spawn(self._run)
        return self

    def _divert(self) -> None:
        """Let the kernel deliver SIGALRM to a thread of ours, never to the main thread.

        A signal delivered to the main thread interrupts the system call it is in: a C
        wait that does not retry then fails (psycopg 3.1.12's ``wait_c`` raised
        ``InterruptedError``, changing the very behaviour under test). Blocked in the main
        thread and open in a sleeping helper thread, the signal interrupts nothing of the
        app's, and Python still runs the handler in the main thread at its next chance.
        """
        from gevent.monkey import get_original

        start_thread = get_original("_thread", "start_new_thread")
        sleep = get_original("time", "sleep")
        self._helper_running = True

        late_s = self.threshold_s / 4

        def helper() -> None:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
            while self._helper_running:
                due = time.monotonic() + TICK_S
                sleep(TICK_S)
                got = time.monotonic()  # Python again: only once the GIL was free to take
                if got - due >= late_s and len(self._starved) < _MAX_STARVED:
                    self._starved.append((due, got))

        start_thread(helper, ())
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})

    def _run(self) -> None:
        import gevent

        while self._running:
            self._armed_at = time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, self.threshold_s, self.threshold_s)
            self.rearms += 1
            gevent.sleep(self.period_s)

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
        """Disarm, give SIGALRM back, and return the events."""
        self._running = False
        if self._greenlet is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._greenlet.kill(block=True, timeout=1)
            self._greenlet = None
            signal.signal(signal.SIGALRM, self._previous if self._previous is not None
                          else signal.SIG_DFL)
            if self._mask is not None and signal.SIGALRM not in self._mask:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
            self._helper_running = False
        return [replace(e, gil_held=self._held(e.t)) for e in self.events]

    def _held(self, t: float) -> bool:
        """Was the GIL held up to the alarm at ``t``? The helper thread, due at least half
        the threshold before it, got the GIL only just before the handler ran (the
        handler's first bytecode hands the GIL over to a waiting thread). A C call that
        releases the GIL, or a chain of short stalls, leaves the helper on time."""
        half, quarter = self.threshold_s / 2, self.threshold_s / 4
        return any(due <= t - half and t - quarter <= got <= t + quarter
                   for due, got in self._starved)


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
